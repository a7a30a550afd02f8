//! `hybridge phone`: the phone side, with the software authenticator and a passkey store.

use std::path::PathBuf;
use std::time::Duration;

use crate::scripted::ScriptedAgent;
use crate::terminal::{StdioInput, Terminal, TerminalAgent};
use clap::Args;
use hybridge_authenticator::authenticator::{Authenticator, SystemClock};
use hybridge_authenticator::phone::{Phone, PhoneConfig, PhoneEvents, PhoneTimeouts, QrInput};
use hybridge_authenticator::store::CredentialStore;
use hybridge_authenticator::user::{AccountChoice, Approval, ApprovalRequest, UserAgent};
use serde_json::{Value as Json, json};

use crate::common::{PinSource, TransportArgs, open_store, parse_duration, read_input, store_path};
use crate::error::CliError;

/// `hybridge phone …`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("qr_source").required(true).args(["qr", "qr_file", "qr_image"])))]
pub struct PhoneArgs {
    /// The laptop's QR code as text (FIDO:/…), or `-` to read it from standard input. The
    /// text holds the session's secret: on the command line other users can read it
    /// (/proc/PID/cmdline), so prefer `-`, --qr-file or the environment variable.
    #[arg(
        long,
        env = "HYBRIDGE_QR",
        value_name = "TEXT|-",
        hide_env_values = true
    )]
    qr: Option<String>,
    /// A file holding the laptop's QR code as text (as `hybridge register --qr-out x.txt`
    /// writes it).
    #[arg(long, value_name = "FILE")]
    qr_file: Option<PathBuf>,
    /// A photo or screenshot of the laptop's QR code (PNG or JPEG).
    #[arg(long, value_name = "FILE")]
    qr_image: Option<PathBuf>,
    /// The phone's tunnel server (ws://… or wss://…). Default: domain ID's hostname.
    #[arg(long, env = "HYBRIDGE_PHONE_RELAY", value_name = "URL")]
    relay: Option<String>,
    /// The tunnel-server domain ID the advert names, so the laptop finds the relay.
    #[arg(
        long,
        env = "HYBRIDGE_DOMAIN_ID",
        default_value_t = 0,
        value_name = "N"
    )]
    domain_id: u16,
    /// The passkey store; created on first use (asking for a new PIN). Default:
    /// $XDG_DATA_HOME/hybridge/passkeys.hbk (~/.local/share/hybridge/passkeys.hbk).
    #[arg(long, env = "HYBRIDGE_STORE", value_name = "PATH")]
    store: Option<PathBuf>,
    /// Approve every request without asking (automation); verifies with the store PIN.
    #[arg(long, conflicts_with = "decline")]
    yes: bool,
    /// Decline every request without asking (automation and tests).
    #[arg(long)]
    decline: bool,
    /// Read the store PIN from this file instead of asking on the terminal.
    #[arg(long, env = "HYBRIDGE_PIN_FILE", value_name = "FILE")]
    pin_file: Option<PathBuf>,
    #[command(flatten)]
    transport: TransportArgs,
    /// How long to advertise, waiting for the laptop.
    #[arg(long, env = "HYBRIDGE_PHONE_WAIT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    wait: Duration,
    /// How long the user may take to answer.
    #[arg(long, env = "HYBRIDGE_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Offer the CTAP 2.3 data channel when the laptop's QR code asks for it: listen on a
    /// Bluetooth L2CAP PSM and name it in the advert, so the ceremony can skip the relay.
    #[arg(long, env = "HYBRIDGE_DATA_CHANNEL")]
    data_channel: bool,
}

/// The person holding the phone: a terminal, or a script.
enum Agent {
    Terminal(TerminalAgent<StdioInput, std::io::Stderr>),
    Scripted(ScriptedAgent),
}

impl UserAgent for Agent {
    fn approve(&mut self, request: &ApprovalRequest) -> Approval {
        let answer = match self {
            Agent::Terminal(t) => t.approve(request),
            Agent::Scripted(s) => s.approve(request),
        };
        if let Agent::Scripted(_) = self {
            let what = match answer {
                Approval::Approved { .. } => "approved (--yes)",
                Approval::Declined => "declined",
                Approval::Locked => "refused: the store is locked",
            };
            eprintln!("phone: request from {}: {what}", sanitize(&request.rp_id));
        }
        answer
    }

    fn choose_account(&mut self, rp_id: &str, accounts: &[AccountChoice]) -> Option<usize> {
        match self {
            Agent::Terminal(t) => t.choose_account(rp_id, accounts),
            Agent::Scripted(s) => s.choose_account(rp_id, accounts),
        }
    }
}

fn sanitize(s: &str) -> String {
    crate::terminal::sanitize(s)
}

/// CTAP command names for the summary.
pub fn command_name(command: u8) -> &'static str {
    hybridge_ctap::Command::from_byte(command).map_or("other", hybridge_ctap::Command::name)
}

/// Longest QR text accepted from standard input or a file: a real one is a few hundred
/// digits.
const MAX_QR_TEXT: u64 = 16 * 1024;

/// The QR code from whichever of --qr, --qr-file and --qr-image was given. Warns when the
/// text came on the command line, where other local users can read it.
fn qr_input(args: &PhoneArgs) -> Result<QrInput, CliError> {
    let text = |bytes: Vec<u8>, what: &str| {
        let text = String::from_utf8(bytes)
            .map_err(|_| CliError::Invalid(format!("the QR text from {what} is not UTF-8")))?;
        Ok(QrInput::Text(text.trim().to_owned()))
    };
    match (&args.qr, &args.qr_file, &args.qr_image) {
        (Some(dash), _, _) if dash == "-" => {
            let mut line = String::new();
            // One line, so that a terminal can paste it and still answer the prompts after.
            let mut input = std::io::Read::take(std::io::stdin().lock(), MAX_QR_TEXT);
            std::io::BufRead::read_line(&mut input, &mut line).map_err(|source| CliError::Io {
                what: "cannot read the QR text",
                path: "standard input".into(),
                source,
            })?;
            text(line.into_bytes(), "standard input")
        }
        (Some(given), _, _) => {
            let from_env = std::env::var("HYBRIDGE_QR").is_ok_and(|v| v == *given);
            if !from_env {
                eprintln!(
                    "phone: warning: the QR code on the command line can be read by other users \
                     of this machine while the session runs; use --qr - (standard input), \
                     --qr-file FILE or HYBRIDGE_QR"
                );
            }
            Ok(QrInput::Text(given.clone()))
        }
        (None, Some(path), _) => text(
            read_input("cannot read the QR text", path, MAX_QR_TEXT)?,
            &path.display().to_string(),
        ),
        (None, None, Some(path)) => Ok(QrInput::Image(read_input(
            "cannot read the QR image",
            path,
            // A camera's full-size photo of the code is several MiB.
            hybridge_authenticator::qr_image::MAX_IMAGE_BYTES as u64,
        )?)),
        (None, None, None) => Err(CliError::Invalid(
            "give --qr TEXT|-, --qr-file FILE or --qr-image FILE".into(),
        )),
    }
}

/// Runs `phone`; a JSON summary is returned for stdout.
pub async fn run(args: &PhoneArgs) -> Result<Json, CliError> {
    let qr = qr_input(args)?;
    // Reject a bad QR code before asking for a PIN; the session answers this parse of it.
    let session = qr.parse()?;
    // And a bad CA file before asking for a PIN.
    let tls = args.transport.tls()?;

    let pins = PinSource {
        file: args.pin_file.clone(),
    };
    let store_path = store_path(args.store.as_deref())?;
    let shown = store_path.display().to_string();
    let (store, pin, created) =
        tokio::task::spawn_blocking(move || open_store(&store_path, &pins, true))
            .await
            .map_err(|e| CliError::Invalid(format!("opening the store failed: {e}")))??;
    if created {
        eprintln!("phone: created the passkey store {shown}");
    }
    let verifier = store.pin_verifier();
    let agent = if args.yes {
        Agent::Scripted(ScriptedAgent::new(true).with_pin(pin, verifier))
    } else if args.decline {
        Agent::Scripted(ScriptedAgent::new(false))
    } else {
        drop(pin);
        Agent::Terminal(TerminalAgent::new(Terminal::stdio(), verifier))
    };
    let passkeys_before = store.list().map(|l| l.len()).unwrap_or(0);
    let phone = Phone::new(Authenticator::new(
        store,
        agent,
        SystemClock,
        rand_core::OsRng,
    ))
    .with_config(PhoneConfig {
        linking: None,
        relay: args.relay.clone(),
        domain_id: args.domain_id,
        timeouts: PhoneTimeouts {
            laptop: args.wait,
            user: args.timeout,
            ..PhoneTimeouts::default()
        },
        tls,
        data_channel: args.data_channel,
    });

    let advertiser = args.transport.ble.advertiser().await?;
    let (events, mut rx) = PhoneEvents::channel(64);
    let printer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            eprintln!("phone: {p}");
        }
    });
    let result = phone.serve_qr(session, &*advertiser, &events).await;
    drop(events);
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    let outcome = result?;
    let passkeys = phone
        .with_handler(|a| a.store().list().ok().map(|l| l.len()))
        .flatten();
    let summary = json!({
        "command": command_name(outcome.command),
        "status": outcome.status,
        "passkeys_before": passkeys_before,
        "passkeys": passkeys,
    });
    if outcome.status != 0 {
        let name = hybridge_ctap::StatusCode(outcome.status)
            .name()
            .unwrap_or("an error status");
        return Err(CliError::PhoneRefused(format!(
            "{} with {name} ({:#04x})",
            command_name(outcome.command),
            outcome.status
        )));
    }
    Ok(summary)
}
