//! `hybridge register` and `hybridge sign-in`: the laptop side, as a WebAuthn client.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hybridge_client::session::{
    self, Ceremony, Events, LaptopConfig, Prepared, RelayOverrides, Timeouts,
};
use hybridge_client::webauthn::{Assertion, CreationOptions, Origin, Registration, RequestOptions};
use serde_json::Value as Json;

use crate::common::{
    Progress, SCAN_HINT, TransportArgs, check_qr_out, parse_duration, read_input, show_qr,
};
use crate::error::CliError;

/// Flags shared by `register` and `sign-in`.
#[derive(Debug, Args)]
pub struct CeremonyArgs {
    /// The relying party's options as JSON: PublicKeyCredentialCreationOptionsJSON for
    /// register, PublicKeyCredentialRequestOptionsJSON for sign-in (bare or under
    /// "publicKey"). `-` reads stdin.
    #[arg(long, env = "HYBRIDGE_OPTIONS", value_name = "FILE")]
    options: PathBuf,
    /// The web origin the ceremony is for (https://…); the RP ID must match it.
    #[arg(long, env = "HYBRIDGE_ORIGIN", value_name = "URL")]
    origin: String,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// The laptop session's flags, shared by `register`, `sign-in` and `key`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Also write the QR code to FILE: .png, .svg or .txt (the FIDO:/ text).
    #[arg(long, env = "HYBRIDGE_QR_OUT", value_name = "FILE")]
    pub qr_out: Option<PathBuf>,
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Send every tunnel-server domain ID to this relay (ws://… or wss://…).
    #[arg(long, env = "HYBRIDGE_RELAY", value_name = "URL")]
    relay: Option<String>,
    /// Send one domain ID to a relay: ID=URL. Repeatable; the env var takes a comma list.
    #[arg(
        long = "relay-for",
        env = "HYBRIDGE_RELAY_FOR",
        value_name = "ID=URL",
        value_delimiter = ',',
        value_parser = parse_relay_for
    )]
    relay_for: Vec<(u16, String)>,
    /// How long to wait for the phone's advert after showing the QR code.
    #[arg(long, env = "HYBRIDGE_SCAN_TIMEOUT", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    scan_timeout: Duration,
    /// Limit on opening the tunnel.
    #[arg(long, env = "HYBRIDGE_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    connect_timeout: Duration,
    /// Limit on the handshake with the phone.
    #[arg(long, env = "HYBRIDGE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    handshake_timeout: Duration,
    /// How long the user may take to answer on the phone.
    #[arg(long, env = "HYBRIDGE_TIMEOUT", default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Offer the CTAP 2.3 data channel: a phone that supports it is reached over Bluetooth
    /// (L2CAP) without the relay, which stays the fallback. Off by default: phones older
    /// than CTAP 2.3 may refuse the QR code it needs.
    #[arg(long, env = "HYBRIDGE_DATA_CHANNEL")]
    data_channel: bool,
}

fn parse_relay_for(s: &str) -> Result<(u16, String), String> {
    let (id, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=URL"))?;
    let id: u16 = id
        .trim()
        .parse()
        .map_err(|_| format!("{id:?} is not a domain ID (0-65535)"))?;
    let url = url.trim();
    if url.is_empty() {
        return Err(format!("{s:?} has no URL"));
    }
    Ok((id, url.to_owned()))
}

impl SessionArgs {
    /// The laptop session's configuration from these flags.
    pub fn config(&self) -> Result<LaptopConfig, CliError> {
        let tls = self.transport.tls()?;
        let mut relays = RelayOverrides {
            all: self.relay.clone(),
            ..RelayOverrides::default()
        };
        for (id, url) in &self.relay_for {
            relays.by_domain.insert(*id, url.clone());
        }
        Ok(LaptopConfig {
            relays,
            timeouts: Timeouts {
                scan: self.scan_timeout,
                connect: self.connect_timeout,
                handshake: self.handshake_timeout,
                user: self.timeout,
                ..Timeouts::default()
            },
            tls,
            data_channel: self.data_channel,
            ..LaptopConfig::default()
        })
    }
}

/// Which ceremony.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `register`
    Register,
    /// `sign-in`
    SignIn,
}

/// Shows laptop events on stderr.
pub fn spawn_event_printer(progress: Progress) -> (Events, tokio::task::JoinHandle<()>) {
    let (events, mut rx) = Events::channel(64);
    let task = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            progress.step(event.to_string());
        }
    });
    (events, task)
}

/// Runs `register` or `sign-in`; the response JSON is returned for stdout.
pub async fn run(kind: Kind, args: &CeremonyArgs) -> Result<Json, CliError> {
    check_qr_out(args.session.qr_out.as_deref())?;
    let options = read_input("cannot read the options file", &args.options, 1 << 20)?;
    let options = String::from_utf8(options)
        .map_err(|_| CliError::Invalid("the options file is not UTF-8 text".into()))?;
    // Everything about the request is checked before the radio is opened or a QR code exists:
    // a wrong RP ID never reaches a phone. The session runs these parsed options.
    let origin = Origin::parse(&args.origin).map_err(session::Error::from)?;
    match kind {
        Kind::Register => {
            let options =
                CreationOptions::from_json(&options, &origin).map_err(session::Error::from)?;
            ceremony(args, options, Registration::to_json).await
        }
        Kind::SignIn => {
            let options =
                RequestOptions::from_json(&options, &origin).map_err(session::Error::from)?;
            ceremony(args, options, Assertion::to_json).await
        }
    }
}

/// The part of `register` and `sign-in` after the options were checked: the session, with
/// progress on stderr; `to_json` gives the response JSON for stdout.
async fn ceremony<C: Ceremony>(
    args: &CeremonyArgs,
    options: C,
    to_json: fn(&C::Response) -> Json,
) -> Result<Json, CliError> {
    let config = args.session.config()?;
    let scanner = args.session.transport.ble.scanner().await?;
    let prepared = Prepared::new(options, &config);
    let progress = Progress::new("");
    progress.aside(|| {
        show_qr(
            &prepared.qr_url(),
            args.session.qr_out.as_deref(),
            SCAN_HINT,
        )
    });
    let (events, printer) = spawn_event_printer(progress.clone());
    let result = prepared.run(&*scanner, &events).await.map(|r| to_json(&r));
    drop(events);
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    progress.finish(result.is_ok());
    Ok(result?)
}
