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
use crate::phones::{PhonesFile, PhonesFileArg};

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
    /// Use the linked phone called NAME (`hybridge phones list`): no QR code; the relay wakes
    /// the phone, which then advertises over Bluetooth as usual. Exit codes with --phone:
    /// 1 no linked phone by that name (the known ones are listed), a damaged phones file or
    /// a missing / mismatched key; 3 the phone was contacted but no advert came in time (not
    /// nearby, Bluetooth off, the phone revoked this laptop, or the stored link secret is not
    /// the phone's); 5 the phone is unreachable (no phone subscribed at the relay: HTTP 410)
    /// or the relay is down; 7 the phone refused the stored link's handshake (stale or
    /// altered: forget it and link again with a QR code); others as without --phone.
    #[arg(
        long,
        env = "HYBRIDGE_PHONE",
        value_name = "NAME",
        conflicts_with = "qr_out"
    )]
    phone: Option<String>,
    /// Do not offer to link the phone in the QR code (by default the QR code says this laptop
    /// stores linking data, and a phone that sends it is added to the phones file).
    #[arg(long, env = "HYBRIDGE_NO_LINK")]
    no_link: bool,
    /// After the response is printed, how long to keep the tunnel open for a phone that sends
    /// its link late (when the QR code offered linking and none came yet; the wait ends as
    /// soon as the link comes or the phone closes). `0` does not wait. Ctrl-C during this
    /// wait exits 0: the response was printed already.
    #[arg(long, env = "HYBRIDGE_LINK_WAIT", default_value = "3m", value_parser = parse_wait, value_name = "DURATION")]
    link_wait: Duration,
    #[command(flatten)]
    phones: PhonesFileArg,
}

/// A duration, or zero (`0`, `0s`, `0m`, `0ms`) for none.
fn parse_wait(s: &str) -> Result<Duration, String> {
    let digits = s.trim().trim_end_matches(['m', 's']);
    if !digits.is_empty() && digits.bytes().all(|b| b == b'0') {
        Ok(Duration::ZERO)
    } else {
        parse_duration(s)
    }
}

/// How a laptop session reaches a phone: the flags `register`, `sign-in` and `key` share.
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

/// Where the response JSON goes the moment it is there (before a wait for a late link).
pub type Emit<'a> = &'a mut dyn FnMut(&Json) -> Result<(), CliError>;

/// Runs `register` or `sign-in`; the response JSON is printed on stdout as soon as it is
/// there (a QR ceremony then may wait for a late link), so nothing is left to print.
pub async fn run(kind: Kind, args: &CeremonyArgs) -> Result<Option<Json>, CliError> {
    run_to(kind, args, &mut print_response).await.map(|()| None)
}

/// [`run`], the response JSON returned instead of printed (tests).
#[cfg(test)]
pub async fn run_json(kind: Kind, args: &CeremonyArgs) -> Result<Json, CliError> {
    let mut got = None;
    run_to(kind, args, &mut |json: &Json| {
        got = Some(json.clone());
        Ok(())
    })
    .await?;
    got.ok_or_else(|| CliError::Invalid("no response was given".into()))
}

/// [`run`], the response JSON given to `emit`.
pub async fn run_to(kind: Kind, args: &CeremonyArgs, emit: Emit<'_>) -> Result<(), CliError> {
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
            ceremony(args, options, Registration::to_json, emit).await
        }
        Kind::SignIn => {
            let options =
                RequestOptions::from_json(&options, &origin).map_err(session::Error::from)?;
            ceremony(args, options, Assertion::to_json, emit).await
        }
    }
}

/// The part of `register` and `sign-in` after the options were checked: the session, with
/// progress on stderr; `to_json` gives the response JSON for `emit`.
async fn ceremony<C: Ceremony>(
    args: &CeremonyArgs,
    options: C,
    to_json: fn(&C::Response) -> Json,
    emit: Emit<'_>,
) -> Result<(), CliError> {
    let mut config = args.session.config()?;
    if let Some(name) = &args.phone {
        let json = linked_ceremony(args, name, options, &config, to_json).await?;
        return emit(&json);
    }
    config.timeouts.late_linking = args.link_wait;
    let phones = if args.no_link {
        None
    } else {
        linking_file(&args.phones)
    };
    config.supports_linking = phones.is_some();
    let scanner = args.session.transport.ble.scanner().await?;
    let prepared = Prepared::new(options, &config);
    let progress = Progress::new("");
    if let Some(url) = prepared.qr_url() {
        progress.aside(|| show_qr(&url, args.session.qr_out.as_deref(), SCAN_HINT));
    }
    let (events, printer, domain) = spawn_recording_printer(progress.clone());
    let (response, closing) = match prepared.run_linking(&*scanner, &events).await {
        Ok(done) => done,
        Err(e) => {
            drop(events);
            let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
            progress.finish(false);
            return Err(e.into());
        }
    };
    // The response goes out now; a link the phone sends late must not hold it up.
    let mut printed = Ok(());
    progress.aside(|| printed = emit(&to_json(&response)));
    printed?;
    let end = closing.finish(&events).await;
    drop(events);
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    progress.finish(true);
    if let (Some(path), Some(linking)) = (phones, end.linking) {
        // The session's domain, as the phone's advert named it; 0 (Google's) if none came.
        let domain_id = domain.lock().ok().and_then(|d| *d).unwrap_or(0);
        let stored = PhonesFile::load(&path).and_then(|mut file| {
            let name = file.add(&linking, domain_id)?;
            file.save().map(|()| name)
        });
        // The response stands whatever happens to the link: a warning, not a failure.
        progress.aside(|| match stored {
            Ok(name) => eprintln!("linked phone {name:?}"),
            Err(e) => eprintln!("hybridge: the phone offered a link that was not stored: {e}"),
        });
    }
    Ok(())
}

/// Prints the response JSON on stdout, flushed, and marks it given: from here a signal ends
/// the process with success ([`crate::common::response_given`]).
fn print_response(json: &Json) -> Result<(), CliError> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(json).unwrap_or_else(|_| "null".into());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Invalid(format!("cannot write the response: {e}")))?;
    crate::common::mark_response_given();
    Ok(())
}

/// The phones file to store a link in, if it can be used (it reads, and its key is there or
/// was just made); otherwise a warning and `None`: the QR code then does not offer linking.
fn linking_file(arg: &PhonesFileArg) -> Option<std::path::PathBuf> {
    let usable = arg.path().and_then(|path| {
        let mut file = PhonesFile::load(&path)?;
        file.check_writable()?;
        Ok(path)
    });
    match usable {
        Ok(path) => Some(path),
        Err(e) => {
            eprintln!("hybridge: the QR code does not offer linking: {e}");
            None
        }
    }
}

/// A ceremony with a linked phone: no QR code.
async fn linked_ceremony<C: Ceremony>(
    args: &CeremonyArgs,
    name: &str,
    options: C,
    config: &LaptopConfig,
    to_json: fn(&C::Response) -> Json,
) -> Result<Json, CliError> {
    let path = args.phones.path()?;
    let phone = PhonesFile::load(&path)?.linked(name)?;
    let scanner = args.session.transport.ble.scanner().await?;
    let prepared = Prepared::linked(options, config, phone);
    let progress = Progress::new("");
    progress.step(format!("contacting phone {name:?}"));
    let (events, printer) = spawn_event_printer(progress.clone());
    let result = prepared.run(&*scanner, &events).await;
    drop(events);
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    progress.finish(result.is_ok());
    let response = result.map_err(|e| linked_error(name, e))?;
    // Read again: another command may have changed the file while the phone was asked.
    let touched = PhonesFile::load(&path).and_then(|mut file| {
        file.touch(name)?;
        file.save()
    });
    if let Err(e) = touched {
        progress.aside(|| eprintln!("hybridge: cannot record the phone's use: {e}"));
    }
    Ok(to_json(&response))
}

/// A linked session's error, naming the phone, with the exit code it would have had.
pub(crate) fn linked_error(name: &str, e: session::Error) -> CliError {
    match e {
        session::Error::RelayUnreachable { .. } => {
            CliError::Network(format!("phone {name:?}: {e}"))
        }
        session::Error::ProximityTimeout(_) => CliError::Timeout(format!(
            "phone {name:?} was contacted but no advert made with its link came: is it \
             nearby, with Bluetooth on, and does it still have this laptop linked? (A stored \
             link whose secret is not the phone's looks the same: forget the phone and link it \
             again with a QR code.) ({e})"
        )),
        // The advert matched (so the link secret is right) and the tunnel closed on our
        // handshake message: most likely the phone does not hold the identity key stored for
        // it, but a phone or relay going away at that moment looks the same.
        session::Error::TunnelClosed(session::Step::Handshake) => CliError::Protocol(format!(
            "phone {name:?} refused or dropped the handshake of its stored link ({e}): try \
             again; if it keeps happening, the entry was altered or the phone's identity \
             changed, so forget it (`hybridge phones forget {name:?}`) and link the phone \
             again with a QR code"
        )),
        e => CliError::Session(e),
    }
}

/// [`spawn_event_printer`], also recording the tunnel-server domain of the phone's advert.
fn spawn_recording_printer(
    progress: Progress,
) -> (
    Events,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Option<u16>>>,
) {
    let domain = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = domain.clone();
    let (events, mut rx) = Events::channel(64);
    let task = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if let session::Event::PhoneNearby { domain_id } = &event {
                if let Ok(mut d) = seen.lock() {
                    *d = Some(*domain_id);
                }
            }
            progress.step(event.to_string());
        }
    });
    (events, task, domain)
}

/// An in-process rig for the linked flow through this module: a relay, a software phone that
/// links (its linking identity from a real store), a UDP radio, and the phones file the
/// laptop keeps; used by this module's tests and the key's.
#[cfg(test)]
pub mod linked_rig {
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::Parser;
    use hybridge_authenticator::authenticator::{Authenticator, SystemClock};
    use hybridge_authenticator::phone::{LinkIdentity, Phone, PhoneConfig, PhoneEvents, QrInput};
    use hybridge_authenticator::store::{FileStore, KdfParams, MemoryStore};
    use hybridge_relay::{Config as RelayConfig, Relay};
    use serde_json::Value as Json;

    use super::{CeremonyArgs, Kind, run_json};
    use crate::scripted::ScriptedAgent;

    /// The phone of the rig.
    pub type RigPhone = Phone<Authenticator<MemoryStore, ScriptedAgent>>;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: CeremonyArgs,
    }

    /// See the [module](self).
    pub struct LinkedRig {
        pub relay: Relay,
        pub url: String,
        pub dir: PathBuf,
        pub identity: LinkIdentity,
        pub phone: RigPhone,
        /// The radio, as `--ble` takes it.
        pub ble: String,
        /// The phone's radio (taken while a ceremony's task holds it).
        pub advertiser: Option<Box<dyn hybridge_ble::Advertiser>>,
        pub phones: PathBuf,
    }

    impl LinkedRig {
        /// A rig whose phone is called `phone_name` and approves, PIN-verified as the
        /// store `1234` is.
        pub async fn new(tag: &str, phone_name: &str) -> Self {
            let relay = Relay::bind(RelayConfig::default()).await.unwrap();
            let url = relay.url();
            let dir = std::env::temp_dir().join(format!(
                "hybridge-{tag}-{}-{}",
                std::process::id(),
                rand_core::RngCore::next_u32(&mut rand_core::OsRng)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut store =
                FileStore::create(dir.join("store"), "1234", KdfParams::insecure_for_tests())
                    .unwrap();
            let identity =
                LinkIdentity::from_state(&store.ensure_linking().unwrap(), phone_name).unwrap();
            let agent = ScriptedAgent::new(true)
                .with_pin(zeroize::Zeroizing::new("1234".into()), store.pin_verifier());
            let phone = Phone::new(Authenticator::new(
                MemoryStore::new(),
                agent,
                SystemClock,
                rand_core::OsRng,
            ))
            .with_config(PhoneConfig {
                relay: Some(url.clone()),
                linking: Some(identity.clone()),
                ..PhoneConfig::default()
            });
            let port = {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.local_addr().unwrap().port()
            };
            let ble = format!("udp:127.0.0.1:{port}");
            let spec: hybridge_ble::RadioSpec = format!("{ble},interval=20ms").parse().unwrap();
            let advertiser = Some(spec.advertiser().await.unwrap());
            let phones = dir.join("phones.json");
            Self {
                relay,
                url,
                dir,
                identity,
                phone,
                ble,
                advertiser,
                phones,
            }
        }

        /// `register`/`sign-in` arguments on this rig (origin https://example.com, its radio,
        /// relay and phones file), then `extra`.
        pub fn args(&self, extra: &[&str]) -> CeremonyArgs {
            let mut argv = vec![
                "hybridge",
                "--origin",
                "https://example.com",
                "--ble",
                &self.ble,
                "--relay",
                &self.url,
                "--scan-timeout",
                "20s",
                "--phones",
                self.phones.to_str().unwrap(),
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().args
        }

        /// `hybridge register` with these creation options (JSON), the phone reading the QR
        /// code and linking: the response JSON.
        pub async fn register_and_link(&mut self, options: &str) -> Json {
            let create = self.dir.join("create.json");
            std::fs::write(&create, options).unwrap();
            let qr_txt = self.dir.join("qr.txt");
            let reg = self.args(&[
                "--options",
                create.to_str().unwrap(),
                "--qr-out",
                qr_txt.to_str().unwrap(),
            ]);
            let phone = self.phone.clone();
            let advertiser = self.advertiser.take().expect("the phone's radio");
            let phone_task = tokio::spawn(async move {
                let url = loop {
                    match std::fs::read_to_string(&qr_txt) {
                        Ok(t) if t.trim().starts_with("FIDO:/") => break t.trim().to_owned(),
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                let r = phone
                    .serve(&QrInput::Text(url), &*advertiser, &PhoneEvents::none())
                    .await;
                (r, advertiser)
            });
            let json = run_json(Kind::Register, &reg)
                .await
                .expect("the registration");
            let (served, advertiser) = phone_task.await.unwrap();
            served.expect("the phone served the registration");
            self.advertiser = Some(advertiser);
            json
        }

        /// The phone subscribes at the relay (as `hybridge phone serve` does) and answers the
        /// next wake-up: the task serving it.
        pub async fn serve_next_wake(
            self,
        ) -> (
            tokio::task::JoinHandle<
                Result<
                    hybridge_authenticator::phone::PhoneOutcome,
                    hybridge_authenticator::phone::PhoneError,
                >,
            >,
            Relay,
            PathBuf,
        ) {
            let mut sub = hybridge_websocket::subscribe(
                &self.url,
                self.identity.wake_key(),
                None,
                hybridge_websocket::linked::Timeouts::default(),
            )
            .await
            .unwrap();
            let (phone, advertiser) = (self.phone, self.advertiser.expect("the phone's radio"));
            let task = tokio::spawn(async move {
                let wake = sub.next_wake().await.unwrap();
                phone
                    .serve_linked(&wake, &|_| true, &*advertiser, &PhoneEvents::none())
                    .await
            });
            (task, self.relay, self.dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::linked_rig::LinkedRig;
    use super::*;

    #[test]
    fn the_link_wait_takes_any_zero_as_none() {
        for zero in ["0", "0s", "0m", "0ms", " 00s "] {
            assert_eq!(parse_wait(zero).unwrap(), Duration::ZERO, "{zero}");
        }
        assert_eq!(parse_wait("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_wait("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "s", "-1s", "soon", "25h"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }

    /// The whole loop through this module: a QR registration whose phone links, stored in
    /// the phones file, then a sign-in with `--phone` and no QR code.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_qr_ceremony_stores_the_link_and_phone_name_reaches_the_phone_again() {
        let mut rig = LinkedRig::new("laptop-link", "Test phone").await;
        // 1. Register by QR code; the phone links and the laptop stores it.
        let json = rig
            .register_and_link(
                r#"{"challenge":"AAECAwQFBgcICQoLDA0ODw","rp":{"id":"example.com","name":"Example"},
                   "user":{"id":"AQID","name":"linda","displayName":"Linda"},
                   "pubKeyCredParams":[{"type":"public-key","alg":-7}],
                   "authenticatorSelection":{"residentKey":"required","userVerification":"discouraged"}}"#,
            )
            .await;
        assert_eq!(json["type"], "public-key");
        let phones = rig.phones.clone();
        let mut file = PhonesFile::load(&phones).unwrap();
        assert_eq!(file.entries.len(), 1);
        assert_eq!(file.entries[0].name, "Test phone");
        assert_eq!(file.entries[0].contact_id, rig.identity.contact_id().0);
        let stored = file.linked("Test phone").unwrap();
        assert_eq!(stored.domain_id, 0);

        // 2. Sign in with --phone: the relay wakes the subscribed phone; no QR code.
        let get = rig.dir.join("get.json");
        std::fs::write(
            &get,
            r#"{"challenge":"EBESExQVFhcYGRobHB0eHw","rpId":"example.com",
               "userVerification":"discouraged"}"#,
        )
        .unwrap();
        let sign = rig.args(&["--options", get.to_str().unwrap(), "--phone", "Test phone"]);
        let (phone_task, relay, dir) = rig.serve_next_wake().await;
        let json = run_json(Kind::SignIn, &sign)
            .await
            .expect("the linked sign-in");
        assert_eq!(json["type"], "public-key");
        phone_task.await.unwrap().expect("the phone served");
        let file = PhonesFile::load(&phones).unwrap();
        assert!(file.entries[0].last_used.is_some());
        relay.shutdown(Duration::from_secs(1)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
