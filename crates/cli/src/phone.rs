//! `hybridge phone`: the phone side, with the software authenticator and a passkey store.

use std::path::PathBuf;
use std::time::Duration;

use crate::scripted::ScriptedAgent;
use crate::terminal::{StdioInput, Terminal, TerminalAgent};
use clap::Args;
use hybridge_authenticator::authenticator::{Authenticator, SystemClock};
use hybridge_authenticator::phone::{
    LinkIdentity, Phone, PhoneConfig, PhoneEvents, PhoneProgress, PhoneTimeouts, QrInput,
};
use hybridge_authenticator::store::{CredentialStore, FileStore, LinkedLaptop};
use hybridge_authenticator::user::{AccountChoice, Approval, ApprovalRequest, UserAgent};
use serde_json::{Value as Json, json};

use crate::common::{PinSource, TransportArgs, open_store, parse_duration, read_input, store_path};
use crate::error::CliError;

/// `hybridge phone …`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("qr_source").required(true).args(["qr", "qr_file", "qr_image"])))]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct PhoneArgs {
    #[command(subcommand)]
    action: Option<PhoneAction>,
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
    /// Do not offer a link to a laptop that can store one (it will need a QR code next time).
    /// Without --link or --no-link, the terminal asks when the QR code offers linking (with
    /// --yes or --decline, the phone links without asking).
    #[arg(long, conflicts_with = "link")]
    no_link: bool,
    /// Link to a laptop that can store one without asking.
    #[arg(long)]
    link: bool,
    #[command(flatten)]
    common: PhoneCommon,
}

/// `hybridge phone serve|links`
#[derive(Debug, clap::Subcommand)]
enum PhoneAction {
    /// Stay reachable for linked laptops: hold a wake-up subscription on the relay and answer
    /// each laptop that contacts this phone, with the same approval and PIN rules as a QR
    /// code. Reconnects when the relay restarts; Ctrl-C or SIGTERM ends it.
    #[command(
        after_help = "Example:\n  hybridge phone serve --store passkeys.hbk --relay wss://relay.example.net --ble bluez:hci1\n\nExit codes: 1 invalid input, 5 the relay refused the subscription for good\n(another process serves this phone), 8 radio unavailable, 9 wrong PIN or locked\nstore, 130/143 interrupted."
    )]
    Serve(PhoneCommon),
    /// List or revoke the laptops this phone is linked to (JSON on stdout).
    Links(LinksArgs),
}

/// `hybridge phone links …`
#[derive(Debug, Args)]
struct LinksArgs {
    #[command(subcommand)]
    action: LinksAction,
    /// The passkey store (see `hybridge phone --help`).
    #[arg(long, env = "HYBRIDGE_STORE", value_name = "PATH", global = true)]
    store: Option<PathBuf>,
    /// Read the store PIN from this file instead of asking on the terminal.
    #[arg(long, env = "HYBRIDGE_PIN_FILE", value_name = "FILE", global = true)]
    pin_file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum LinksAction {
    /// One object per linked laptop: its link ID, label, when it was linked and last used.
    List,
    /// Revoke a laptop's link (by link ID, as `list` shows it): its next contact is refused.
    Revoke {
        /// The link ID (16 hex characters).
        link_id: String,
    },
}

/// What every phone command shares: the relay, the store, the radio, the approval rules.
#[derive(Debug, Args)]
pub struct PhoneCommon {
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
    /// The name linked laptops show for this phone.
    #[arg(long, env = "HYBRIDGE_PHONE_NAME", value_name = "NAME")]
    name: Option<String>,
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

/// The software phone the commands run: the store opened (asking for its PIN), the person
/// holding the phone (terminal or script), and its linking identity unless `link` is off.
type CliPhone = Phone<Authenticator<FileStore, Agent>>;

async fn open_phone(
    args: &PhoneCommon,
    tls: Option<hybridge_websocket::ClientTls>,
    link: bool,
) -> Result<(CliPhone, usize), CliError> {
    let pins = PinSource {
        file: args.pin_file.clone(),
    };
    let store_path = store_path(args.store.as_deref())?;
    let shown = store_path.display().to_string();
    let (mut store, pin, created) =
        tokio::task::spawn_blocking(move || open_store(&store_path, &pins, true))
            .await
            .map_err(|e| CliError::Invalid(format!("opening the store failed: {e}")))??;
    if created {
        eprintln!("phone: created the passkey store {shown}");
    }
    let linking = if link {
        let state = store.ensure_linking()?;
        let name = args.name.clone().unwrap_or_else(default_name);
        Some(LinkIdentity::from_state(&state, name)?)
    } else {
        None
    };
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
        linking,
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
    Ok((phone, passkeys_before))
}

/// What linked laptops call this phone unless `--name` says otherwise.
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    match host {
        Some(h) => format!("hybridge on {h}"),
        None => "hybridge phone".into(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs `phone`; a JSON summary is returned for stdout.
pub async fn run(args: &PhoneArgs) -> Result<Json, CliError> {
    match &args.action {
        Some(PhoneAction::Serve(common)) => return serve(common).await,
        Some(PhoneAction::Links(links)) => return run_links(links).await,
        None => {}
    }
    let qr = qr_input(args)?;
    // Reject a bad QR code before asking for a PIN; the session answers this parse of it.
    let session = qr.parse()?;
    let args_common = &args.common;
    // And a bad CA file before asking for a PIN.
    let tls = args_common.transport.tls()?;
    // A link is offered only when the laptop's QR code says it stores one, and the person
    // holding the phone is asked first, before the PIN (a flag answers for automation).
    let laptop_stores_links = session.qr_payload().supports_linking == Some(true);
    let link = match (args.link, args.no_link) {
        (true, _) => true,
        (_, true) => false,
        _ if args_common.yes || args_common.decline => true,
        _ if laptop_stores_links => {
            tokio::task::spawn_blocking(|| crate::terminal::ask_link(&mut Terminal::stdio()))
                .await
                .unwrap_or(false)
        }
        // Nothing to ask about: the laptop would not store a link.
        _ => false,
    };
    let (phone, passkeys_before) = open_phone(args_common, tls, link).await?;
    let args = args_common;
    let advertiser = args.transport.ble.advertiser().await?;
    let (events, mut rx) = PhoneEvents::channel(64);
    let printer = tokio::spawn(async move {
        let mut linked = None;
        while let Some(p) = rx.recv().await {
            if let PhoneProgress::Linked { link_id } = p {
                linked = Some(link_id);
            }
            eprintln!("phone: {p}");
        }
        linked
    });
    let result = phone.serve_qr(session, &*advertiser, &events).await;
    drop(events);
    let linked = tokio::time::timeout(Duration::from_secs(1), printer)
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    if let Some(link_id) = linked {
        // The laptop got a link: remember it, so it can be listed and revoked.
        let laptop = LinkedLaptop {
            link_id,
            label: String::new(),
            created: unix_now(),
            last_used: None,
        };
        match phone.with_handler(|a| a.store_mut().add_linked_laptop(laptop)) {
            Some(Ok(())) => eprintln!(
                "phone: linked to the laptop (link {}); `hybridge phone links` lists it",
                hex::encode(link_id)
            ),
            other => eprintln!("phone: could not record the laptop's link: {other:?}"),
        }
    }
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

/// `hybridge phone serve`: waits for wake-ups from linked laptops and serves each, until
/// interrupted. Returns only on an error that retrying cannot fix.
async fn serve(args: &PhoneCommon) -> Result<Json, CliError> {
    use hybridge_authenticator::phone::PhoneError;
    use hybridge_client::session::ws::{self, SubscribeError};
    let tls = args.transport.tls()?;
    let (phone, _) = open_phone(args, tls.clone(), true).await?;
    let identity = phone
        .config()
        .linking
        .clone()
        .ok_or(PhoneError::NoLinkingIdentity)?;
    let relay = phone.config().relay_url()?;
    let advertiser = args.transport.ble.advertiser().await?;
    let (events, mut rx) = PhoneEvents::channel(64);
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            eprintln!("phone: {p}");
        }
    });
    const FIRST_RETRY: Duration = Duration::from_secs(1);
    const MAX_RETRY: Duration = Duration::from_secs(30);
    let mut retry = FIRST_RETRY;
    loop {
        let sub = ws::subscribe(
            &relay,
            identity.wake_key(),
            tls.clone(),
            ws::linked::Timeouts::default(),
        )
        .await;
        let mut sub = match sub {
            Ok(s) => s,
            Err(e) => {
                eprintln!("phone: cannot subscribe at {relay}: {e}; retrying in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        retry = FIRST_RETRY;
        eprintln!("phone: reachable for linked laptops through {relay}");
        loop {
            let wake = match sub.next_wake().await {
                Ok(w) => w,
                Err(SubscribeError::Replaced) => {
                    return Err(CliError::Network(format!(
                        "another process subscribed for this phone at {relay}; this one stops"
                    )));
                }
                Err(e) => {
                    eprintln!("phone: the subscription ended ({e}); reconnecting");
                    break;
                }
            };
            let allowed: Vec<[u8; 8]> = phone
                .with_handler(|a| a.store().linking().ok().flatten())
                .flatten()
                .map(|l| l.laptops.iter().map(|x| x.link_id).collect())
                .unwrap_or_default();
            let is_linked = move |id: &[u8]| allowed.iter().any(|a| a == id);
            match phone
                .serve_linked(&wake, &is_linked, &*advertiser, &events)
                .await
            {
                Ok(outcome) => {
                    if let Ok(payload) = wake.client_payload() {
                        let _ = phone.with_handler(|a| {
                            a.store_mut()
                                .touch_linked_laptop(&payload.link_id, unix_now())
                        });
                    }
                    eprintln!(
                        "phone: served a linked {} (status {:#04x})",
                        command_name(outcome.command),
                        outcome.status
                    );
                }
                Err(e) => eprintln!("phone: a linked request failed: {e}"),
            }
        }
    }
}

/// `hybridge phone links list|revoke`.
async fn run_links(args: &LinksArgs) -> Result<Json, CliError> {
    let pins = PinSource {
        file: args.pin_file.clone(),
    };
    let path = store_path(args.store.as_deref())?;
    let (mut store, _pin, _) = tokio::task::spawn_blocking(move || open_store(&path, &pins, false))
        .await
        .map_err(|e| CliError::Invalid(format!("opening the store failed: {e}")))??;
    match &args.action {
        LinksAction::List => {
            let laptops = store.linking()?.map(|l| l.laptops).unwrap_or_default();
            Ok(Json::Array(
                laptops
                    .iter()
                    .map(|l| {
                        json!({
                            "link_id": hex::encode(l.link_id),
                            "label": l.label,
                            "linked": l.created,
                            "last_used": l.last_used,
                        })
                    })
                    .collect(),
            ))
        }
        LinksAction::Revoke { link_id } => {
            let id = crate::error::parse_hex("link ID", link_id)?;
            store.revoke_linked_laptop(&id)?;
            Ok(json!({ "revoked": link_id.to_ascii_lowercase() }))
        }
    }
}
