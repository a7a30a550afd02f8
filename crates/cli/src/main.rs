//! `hybridge`: FIDO hybrid (caBLE v2) from the command line.
//!
//! Data goes to stdout (JSON where a program will read it); progress, prompts and the QR code
//! go to stderr; an error is one line on stderr. Exit codes: see [`error`].
//!
//! Each subcommand lives in its own module with an `Args` struct and a `run` function, so new
//! ones (register, sign-in, phone, passkeys, demo) slot in as one enum variant and one module.
#![forbid(unsafe_code)]

mod common;
mod demo;
mod error;
mod inspect;
mod key;
mod keyring;
mod laptop;
mod notify;
mod passkeys;
mod phone;
mod phones;
mod scripted;
mod terminal;
#[cfg(test)]
mod test_bus;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use clap::{Parser, Subcommand};

use crate::error::{EXIT_OK, EXIT_USAGE};

/// FIDO hybrid transport ("use a phone to sign in") tools.
#[derive(Debug, Parser)]
#[command(name = "hybridge", version, about, propagate_version = true)]
#[command(after_help = MAIN_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Diagnostics on stderr, as a tracing filter: off, warn, info, debug, trace, or per
    /// crate (hybridge_client=debug,hybridge_authenticator=trace). They never contain QR
    /// secrets, full tunnel IDs, keys, PINs or message contents.
    #[arg(
        long,
        global = true,
        env = "HYBRIDGE_LOG",
        default_value = "warn",
        value_name = "FILTER"
    )]
    log: String,
    /// Format of the diagnostics: text, or json (one object per line).
    #[arg(long, global = true, env = "HYBRIDGE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

const MAIN_HELP: &str = concat!(
    "Examples:
  hybridge demo                      # the whole flow on this machine, no Bluetooth
  hybridge register --options create.json --origin https://example.com > response.json
  hybridge sign-in --options get.json --origin https://example.com --relay ws://127.0.0.1:8080
  hybridge phone --qr-file qr.txt --relay ws://127.0.0.1:8080
  hybridge passkeys list
  hybridge inspect qr 'FIDO:/…'
  hybridge key                       # your phone as a USB security key for every app

Every flag can also be set from the environment variable shown in each command's --help.

",
    "Exit codes:
  0 success              1 invalid input        2 usage error
  3 no phone nearby / a step timed out          4 declined / not allowed on the phone
  5 relay unreachable / tunnel broke            6 RP ID does not match the origin
  7 handshake failed / message tampered with    8 Bluetooth / radio unavailable
  9 passkey store (wrong PIN, locked, damaged)  10 demo: relying party rejected a response
  11 key: no /dev/uhid or no permission
  130 interrupted (Ctrl-C)   143 terminated (SIGTERM)"
);

const CEREMONY_HELP: &str = "Examples:
  hybridge register --options create.json --origin https://example.com --qr-out qr.png
  hybridge sign-in --options get.json --origin https://example.com \\
      --ble udp:127.0.0.1:47000 --relay ws://127.0.0.1:8080 --scan-timeout 30s

The QR code and progress go to stderr; the response JSON (RegistrationResponseJSON or
AuthenticationResponseJSON) goes to stdout, ready to POST to the relying party.
Exit codes: 0 ok, 1 invalid input, 2 usage, 3 no phone nearby / timeout, 4 NotAllowed
(declined), 5 relay unreachable, 6 RP ID does not match the origin, 7 handshake failed or
tampering, 8 radio unavailable.";

const KEY_HELP: &str = "Examples:
  hybridge key                                  # QR codes on this terminal
  hybridge key --qr-out /tmp/qr.txt --relay ws://127.0.0.1:8080 --ble bluez:hci0
  hybridge key --phone Pixel                    # a linked phone (hybridge phones list), no QR

Applications (Firefox, Chromium, ssh-keygen -t ecdsa-sk, fido2-token, pam_u2f) see a USB
security key named \"hybridge key\". When one registers or signs in, a QR code appears here:
scan it with your phone, which does the rest over Bluetooth and the relay. With --phone NAME
there is no QR code: the linked phone (running `hybridge phone serve`) is woken through its
relay. getInfo is answered at once; silent probes (up=false) without a phone. A request the
phone never answers gets CTAP2_ERR_USER_ACTION_TIMEOUT (no advert in time) or CTAP1_ERR_OTHER
(phone unreachable, relay down, link failed), with one line here saying why. Runs in the
foreground until Ctrl-C or SIGTERM, which remove the device. Needs write access to /dev/uhid
(modprobe uhid; the udev rule in deploy/udev/). Exit codes: 1 --phone NAME is not linked (or
the phones file cannot be read), 11 the device cannot be made or failed, 8 radio, 2 usage.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole flow on this machine: relay, phone, laptop and a relying party.
    #[command(
        after_help = "Example:\n  hybridge demo\n\nNo Bluetooth or network needed: an in-process relay, the in-memory radio, a\nsoftware phone that approves automatically and an embedded relying party\n(webauthn-rs-core) that verifies the registration and the sign-in.\nExit codes: 0 both verified, 10 the relying party rejected a response, others as for register."
    )]
    Demo(demo::DemoArgs),
    /// Register a passkey on a phone (the laptop side): QR code, Bluetooth, tunnel.
    #[command(after_help = CEREMONY_HELP)]
    Register(laptop::CeremonyArgs),
    /// Sign in with a passkey on a phone (the laptop side).
    #[command(after_help = CEREMONY_HELP)]
    SignIn(laptop::CeremonyArgs),
    /// Be the phone: read the laptop's QR code and answer with the software authenticator.
    #[command(
        after_help = "Examples:\n  echo 'FIDO:/…' | hybridge phone --qr -\n  hybridge phone --qr-file qr.txt --store ~/passkeys.hbk\n  hybridge phone --qr-image qr.png --store passkeys.hbk --relay ws://127.0.0.1:8080 \\\n      --ble udp:127.0.0.1:47000 --yes --pin-file pin.txt\n\nA JSON summary goes to stdout. Exit codes: 0 served, 1 invalid QR code or input,\n3 the laptop never connected, 4 the request was declined, 5 relay unreachable,\n7 handshake failed, 8 radio unavailable, 9 wrong PIN or locked store."
    )]
    Phone(Box<phone::PhoneArgs>),
    /// List, rename or delete the passkeys in a phone's store (JSON on stdout).
    Passkeys(passkeys::PasskeysArgs),
    /// List, rename or forget the phones this laptop is linked to (no QR code needed).
    Phones(phones::PhonesArgs),
    /// Decode QR codes, adverts and tunnel domains (JSON on stdout).
    Inspect(inspect::InspectArgs),
    /// Be a FIDO2 security key (USB HID, through /dev/uhid) whose authenticator is your phone.
    #[command(after_help = KEY_HELP)]
    Key(key::KeyArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::from(EXIT_OK as u8);
            }
            // One line: clap's first line, without the usage block.
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("hybridge: {first} (see --help)");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    if let Err(e) = init_log(&cli.log, &cli.log_format) {
        eprintln!("hybridge: {e} (see --help)");
        return ExitCode::from(EXIT_USAGE as u8);
    }
    if let Err(e) = watch_signals() {
        eprintln!("hybridge: cannot watch for Ctrl-C and SIGTERM: {e}");
        return ExitCode::from(error::EXIT_INVALID_INPUT as u8);
    }
    let result = match &cli.command {
        Command::Inspect(args) if args.listens() => run_async(inspect::adverts(args)),
        Command::Inspect(args) => inspect::run(args).map(Some),
        Command::Passkeys(args) => passkeys::run(args).map(Some),
        Command::Phones(args) => phones::run(args),
        Command::Demo(args) => run_async(demo::run(args)).map(Some),
        Command::Register(args) => run_async(laptop::run(laptop::Kind::Register, args)),
        Command::SignIn(args) => run_async(laptop::run(laptop::Kind::SignIn, args)),
        Command::Phone(args) => run_async(phone::run(args)).map(Some),
        Command::Key(args) => run_async(key::run(args)).map(Some),
    };
    // A signal that came while the command ran (a PIN check let finish) ends it here, before
    // anything is printed as if it had completed.
    if let Some(code) = interrupted() {
        signal_exit(code);
    }
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(json)) => {
            let mut out = std::io::stdout().lock();
            let text = serde_json::to_string_pretty(&json).unwrap_or_else(|_| "null".into());
            if writeln!(out, "{text}").is_err() {
                return ExitCode::from(error::EXIT_INVALID_INPUT as u8);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("hybridge: {msg}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Sends the libraries' tracing events to stderr, filtered by `filter`. The WebSocket
/// library logs request lines, whose paths hold the full tunnel ID (a secret for the length
/// of a ceremony): it is capped at info.
fn init_log(filter: &str, format: &str) -> Result<(), String> {
    hybridge_relay::init_log(
        filter,
        format == "json",
        &["tungstenite", "tokio_tungstenite"],
    )
    .map_err(|e| e.to_string())
}

/// Ends the process on Ctrl-C (exit 130) or SIGTERM (exit 143), whatever command runs, but
/// only once a PIN attempt under way has recorded its outcome: the attempt is counted on disk
/// before the key derivation, and a right PIN cut short there would count as a failure (eight
/// such interruptions would lock the store). The terminal's echo is restored too, in case a
/// PIN prompt had turned it off.
fn watch_signals() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Registered now, before the command starts, so no signal falls between.
    let (mut int, mut term) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let code = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => error::EXIT_INTERRUPTED,
                    _ = term.recv() => error::EXIT_TERMINATED,
                }
            });
            SIGNALLED.store(code, Ordering::SeqCst);
            if !hybridge_authenticator::store::wait_for_pin_attempts(PIN_ATTEMPT_GRACE) {
                eprintln!(
                    "hybridge: a PIN check did not finish in time; it counts as a failed attempt"
                );
            }
            signal_exit(code);
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The exit code of the signal that came, or 0.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

/// The exit code of a signal that came, if one did.
fn interrupted() -> Option<i32> {
    Some(SIGNALLED.load(Ordering::SeqCst)).filter(|&c| c != 0)
}

/// Ends the process for a signal: the terminal restored, one line said.
fn signal_exit(code: i32) -> ! {
    crate::terminal::restore_terminal();
    // `hybridge key`: the virtual device goes first, so no application keeps talking to it.
    crate::key::destroy_on_exit();
    if crate::common::response_given() {
        // Only a wait for a late link was cut short: the command did what it was for.
        eprintln!("hybridge: stopped waiting for the phone's link (the response was printed)");
        std::process::exit(0)
    }
    let what = if code == error::EXIT_TERMINATED {
        "terminated"
    } else {
        "interrupted"
    };
    eprintln!("hybridge: {what}");
    std::process::exit(code)
}

/// How long Ctrl-C or SIGTERM waits for a PIN check under way (the key derivation takes about
/// 0.2 s; a store made with heavier settings may take longer).
const PIN_ATTEMPT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs an async command on a fresh runtime. The runtime is shut down without waiting for
/// blocking threads (BlueZ's D-Bus threads, a PIN prompt) to finish. Ctrl-C and SIGTERM are
/// handled by [`watch_signals`].
fn run_async<T>(
    f: impl std::future::Future<Output = Result<T, error::CliError>>,
) -> Result<T, error::CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| error::CliError::Invalid(format!("cannot start the async runtime: {e}")))?;
    let result = rt.block_on(f);
    rt.shutdown_background();
    // A PIN prompt may still be waiting on its (abandoned) blocking thread with echo off.
    crate::terminal::restore_terminal();
    result
}
