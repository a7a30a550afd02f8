//! The laptop side of a hybrid session, over real sockets and a radio: QR code → BLE scan →
//! tunnel → Noise handshake → one CTAP request → shutdown.
//!
//! Every rule of the session, and every timeout, is in [`LaptopEngine`]
//! (`hybridge_proto::engine`); this module is its driver: it scans, opens the tunnel, moves
//! bytes, waits, and reports progress as [`Event`]s.
//!
//! Two levels:
//! * [`register`] and [`sign_in`]: the WebAuthn client. RP options JSON and an origin in: the
//!   options are parsed and their RP ID checked against the origin, and a [`Prepared`]
//!   ceremony comes back, whose QR code the caller shows before it
//!   [`run`](Prepared::run)s it; [`Registration`](crate::webauthn::Registration) /
//!   [`Assertion`](crate::webauthn::Assertion) out (`to_json()` gives
//!   `RegistrationResponseJSON` / `AuthenticationResponseJSON`).
//! * [`Laptop`] → [`PhoneConnection`]: the raw session, for one CTAP request of your own.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(options_json: &str) -> Result<(), hybridge_client::session::Error> {
//! use hybridge_ble::RadioSpec;
//! use hybridge_client::session::{self, Events, LaptopConfig, RelayOverrides};
//!
//! let radio: RadioSpec = "bluez".parse().map_err(session::Error::Radio)?;
//! let scanner = radio.scanner().await.map_err(session::Error::Radio)?;
//! let config = LaptopConfig {
//!     // A self-hosted relay for every domain ID the phone may name:
//!     relays: RelayOverrides::all("wss://relay.example.net"),
//!     ..LaptopConfig::default()
//! };
//! // Nothing reaches a phone unless the options are valid for this origin.
//! let ceremony = session::register(options_json, "https://example.com", &config)?;
//! if let Some(url) = ceremony.qr_url() {
//!     eprintln!("scan this with your phone: {url}");
//! }
//! let (events, mut progress) = Events::channel(32);
//! tokio::spawn(async move {
//!     while let Some(event) = progress.recv().await {
//!         eprintln!("{event}");
//!     }
//! });
//! let registration = ceremony.run(&*scanner, &events).await?;
//! println!("{}", registration.to_json());
//! # Ok(()) }
//! ```

mod ceremony;
mod error;
pub use hybridge_websocket as ws;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hybridge_ble::{CABLE_UUIDS, Scanner};
use hybridge_ctap::GetInfoResponse;
use hybridge_proto::engine::{LaptopEngine, LaptopInput, LaptopOutput};
use hybridge_proto::linking::LinkingInfo;
use hybridge_proto::qr::{QrKeys, RequestType};
use hybridge_proto::session::{LaptopLinked, LaptopQr, LinkedPhone};
use hybridge_proto::{domain, keys, tunnel};
use rand_core::OsRng;
use ws::{engine_now as now, wake_at};

pub use ceremony::{Ceremony, Closing, Prepared, register, sign_in};
pub use error::{BadResponse, Error, Step, from_status};

/// Where to find tunnel servers. By default a domain ID resolves to its assigned (0, 1) or
/// hashed (≥ 256) hostname, as `wss://`; overrides send IDs to self-hosted or local relays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayOverrides {
    /// Domain ID → base URL (`wss://relay.example.net`, `ws://127.0.0.1:8080`) or bare host.
    pub by_domain: BTreeMap<u16, String>,
    /// A base URL for every domain ID without its own entry.
    pub all: Option<String>,
}

impl RelayOverrides {
    /// Every domain ID to one relay.
    pub fn all(url: impl Into<String>) -> Self {
        Self {
            by_domain: BTreeMap::new(),
            all: Some(url.into()),
        }
    }

    /// The base URL for `domain_id`: an override, else its hostname (`wss://`).
    pub fn resolve(&self, domain_id: u16) -> Result<String, Error> {
        match (self.by_domain.get(&domain_id), &self.all) {
            (Some(u), _) | (None, Some(u)) => Ok(tunnel::base_url(u)),
            (None, None) => domain::hostname(domain_id)
                .map(|host| tunnel::base_url(&host))
                .ok_or(Error::UnknownDomain(domain_id)),
        }
    }
}

/// Limits of the laptop's steps; the session engine owns them.
pub use hybridge_proto::engine::LaptopTimeouts as Timeouts;

/// Configuration of a laptop session.
#[derive(Clone, Debug, Default)]
pub struct LaptopConfig {
    /// Tunnel-server resolution.
    pub relays: RelayOverrides,
    /// Step timeouts.
    pub timeouts: Timeouts,
    /// TLS for `wss://` relays; `None`: the webpki roots ([`ws::tls_with_roots`] builds one
    /// for a private CA).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// QR key 4: tell the phone we would store linking data. Off by default: turn it on only
    /// where the caller keeps the link it gets back in [`SessionEnd`] (`hybridge register`
    /// and `sign-in` keep it in their phones file).
    pub supports_linking: bool,
    /// Offer the CTAP 2.3 data channel in the QR code (key 6 = `[0, 1]`): a phone that
    /// supports it is then reached over Bluetooth (L2CAP) and the relay is left out, with the
    /// relay's tunnel as the fallback. Off by default: phones that predate CTAP 2.3 may
    /// refuse a QR code with a list in key 6. Needs a radio that opens data channels.
    pub data_channel: bool,
}

/// Progress of a laptop session, for a UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Listening for the phone's advert.
    Scanning,
    /// The phone's advert was heard; it uses this tunnel-server domain.
    PhoneNearby {
        /// Domain ID from the advert.
        domain_id: u16,
    },
    /// Opening the tunnel on this relay (base URL only: the tunnel ID is a secret).
    Connecting(String),
    /// Opening the CTAP 2.3 data channel to the phone on this L2CAP PSM (no relay).
    OpeningDataChannel {
        /// The phone's PSM, from its advert.
        psm: u16,
    },
    /// The handshake with the phone succeeded.
    HandshakeDone,
    /// The request was sent; the user is deciding on the phone.
    WaitingForUser,
    /// The answer is in, but the QR code offered linking and none came yet: the tunnel
    /// stays open at most this long for linking data the phone sends late.
    AwaitingLinking(std::time::Duration),
    /// The phone answered and the tunnel was closed.
    Done,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Scanning => f.write_str("waiting for the phone's advert"),
            Event::PhoneNearby { domain_id } => {
                write!(
                    f,
                    "the phone's advert arrived (tunnel-server domain {domain_id})"
                )
            }
            Event::Connecting(url) => write!(f, "connecting to {url}"),
            Event::OpeningDataChannel { psm } => {
                write!(
                    f,
                    "connecting to the phone over the data channel (L2CAP PSM {psm:#06x}), no relay"
                )
            }
            Event::HandshakeDone => f.write_str("connected to the phone"),
            Event::WaitingForUser => f.write_str("confirm on your phone"),
            Event::AwaitingLinking(d) if d.as_secs() == 0 => write!(
                f,
                "waiting up to {} ms for the phone to send its link",
                d.as_millis()
            ),
            Event::AwaitingLinking(d) => write!(
                f,
                "waiting up to {} s for the phone to send its link",
                d.as_secs()
            ),
            Event::Done => f.write_str("done"),
        }
    }
}

/// Where events go: a bounded channel ([`Events::channel`]), or nowhere ([`Events::none`]).
/// A UI that does not keep up loses events; it never slows the protocol down.
pub type Events = ws::Events<Event>;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A laptop session before the phone was found: fresh QR keys, or a linked phone to wake.
#[derive(Debug)]
pub struct Laptop {
    start: Start,
    config: LaptopConfig,
}

/// How the session finds its phone.
#[derive(Debug)]
enum Start {
    Qr(Box<LaptopQr>),
    Linked(Box<LaptopLinked>),
}

impl Laptop {
    /// New QR keys for a request of `request_type` (QR key 5: `mc` to register, `ga` to sign
    /// in).
    pub fn new(request_type: RequestType, config: LaptopConfig) -> Self {
        let keys = QrKeys::generate(&mut OsRng);
        let mut qr = LaptopQr::new(keys, now_unix(), config.supports_linking, request_type);
        if config.data_channel {
            qr = qr.with_data_channel();
        }
        Self {
            start: Start::Qr(Box::new(qr)),
            config,
        }
    }

    /// A session with a phone linked earlier (`phone`, as stored from its linking data): no
    /// QR code. [`connect`](Self::connect) asks the phone's tunnel server to wake it, waits
    /// for its advert (made with the link's key; proximity is still proven) and
    /// authenticates it by its identity key.
    pub fn linked(request_type: RequestType, phone: LinkedPhone, config: LaptopConfig) -> Self {
        Self {
            start: Start::Linked(Box::new(LaptopLinked::new(&mut OsRng, phone, request_type))),
            config,
        }
    }

    /// The `FIDO:/` URL to show as a QR code; `None` for a [linked](Self::linked) session.
    pub fn qr_url(&self) -> Option<String> {
        match &self.start {
            Start::Qr(qr) => Some(qr.qr_url()),
            Start::Linked(_) => None,
        }
    }

    /// Scans (after the caller showed [`qr_url`](Self::qr_url)) until this QR code's advert is heard
    /// (everyone else's adverts are ignored), connects to the tunnel server the advert names,
    /// does the handshake and reads the phone's post-handshake message. The relay is contacted
    /// only after the advert matched.
    ///
    /// This is the driver of [`LaptopEngine`], which makes every decision and owns every
    /// timeout; here bytes are moved and the radio, the tunnel and the engine's timer are
    /// waited on.
    pub async fn connect(
        self,
        scanner: &dyn Scanner,
        events: &Events,
    ) -> Result<PhoneConnection, Error> {
        let ephemeral = keys::generate(&mut OsRng);
        let engine = match self.start {
            Start::Qr(qr) => {
                events.emit(Event::Scanning);
                LaptopEngine::new(*qr, ephemeral, self.config.timeouts, check_get_info, now())
            }
            Start::Linked(linked) => LaptopEngine::linked(
                *linked,
                ephemeral,
                self.config.timeouts,
                check_get_info,
                now(),
            ),
        };
        let mut driver = Driver {
            engine,
            io: LaptopIo {
                scan: None,
                link: None,
                advert_from: None,
                base: None,
                cause: None,
                config: self.config,
            },
        };
        let get_info = match driver.drive(Some(scanner), events).await {
            Ok(Reached::Ready(get_info)) => get_info,
            Ok(_) => return Err(Error::TunnelClosed(Step::PostHandshake)),
            Err(e) => {
                driver.io.teardown().await;
                return Err(e);
            }
        };
        // The engine checked that it parses.
        let info = GetInfoResponse::from_cbor(&get_info)
            .map_err(|e| Error::InvalidGetInfo(e.to_string()))?;
        Ok(PhoneConnection {
            driver,
            get_info,
            info,
        })
    }
}

/// The engine's getInfo rule: it must parse as the CTAP structure every request is built from.
fn check_get_info(bytes: &[u8]) -> Result<(), String> {
    GetInfoResponse::from_cbor(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What the laptop driver holds: the scan, the tunnel, and how to reach relays.
struct LaptopIo {
    scan: Option<hybridge_ble::Scan>,
    /// The tunnel or the data channel, once open.
    link: Option<ws::Link>,
    /// Who sent the last advert fed to the engine (where a data channel goes).
    advert_from: Option<String>,
    /// The relay's base URL, once the advert named it (for error messages).
    base: Option<String>,
    /// Why the transport failed, for the error (the engine is only told that it did).
    cause: Option<ws::Cause>,
    config: LaptopConfig,
}

impl LaptopIo {
    /// Stops the scan and closes the tunnel, whatever is left of them.
    async fn teardown(&mut self) {
        if let Some(scan) = self.scan.take() {
            let _ = scan.stop().await;
        }
        if let Some(link) = self.link.take() {
            link.close(self.config.timeouts.close).await;
        }
    }
}

/// Where a run of the engine stopped.
enum Reached {
    /// The phone's first message came: requests may be made (its getInfo).
    Ready(Vec<u8>),
    /// The answer to the request.
    Response(Vec<u8>),
    /// Closed as asked, with the newest verified linking data.
    Closed(Option<LinkingInfo>),
}

/// The engine and what it drives.
struct Driver {
    engine: LaptopEngine,
    io: LaptopIo,
}

/// An open, encrypted connection to the phone (through a relay's tunnel), after its
/// post-handshake message.
pub struct PhoneConnection {
    driver: Driver,
    // The phone's getInfo as it sent it, and its parse, made once by `connect`.
    get_info: Vec<u8>,
    info: GetInfoResponse,
}

/// What the session leaves behind.
#[derive(Debug, Default)]
pub struct SessionEnd {
    /// Verified linking data, if the phone offered it (store it keyed by the phone's public
    /// key to skip the QR code next time).
    pub linking: Option<LinkingInfo>,
}

impl fmt::Debug for PhoneConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneConnection")
            .field("open", &!self.driver.engine.is_finished())
            .field("timeouts", &self.driver.io.config.timeouts)
            .finish_non_exhaustive()
    }
}

impl PhoneConnection {
    /// The phone's getInfo response, CBOR (no status byte), as the phone sent it.
    pub fn get_info(&self) -> &[u8] {
        &self.get_info
    }

    /// The phone's getInfo response, parsed. (`connect` fails with
    /// [`Error::InvalidGetInfo`] when it is missing or does not parse, so there always is one.)
    pub fn get_info_response(&self) -> &GetInfoResponse {
        &self.info
    }

    /// Sends one CTAP request (`command ‖ CBOR`) and returns the phone's answer
    /// (`status ‖ CBOR`). getInfo (`0x04`) is answered from the post-handshake message, as
    /// Chromium does. Hybrid phones accept one request per session.
    ///
    /// Any message that fails to decrypt aborts the session: the tunnel is closed and nothing
    /// is returned.
    pub async fn transact(&mut self, request: &[u8], events: &Events) -> Result<Vec<u8>, Error> {
        let driver = &mut self.driver;
        if driver.engine.is_finished() {
            return Err(Error::TunnelClosed(Step::WaitingForUser));
        }
        tracing::debug!(
            command = request.first().copied().unwrap_or(0),
            len = request.len(),
            "request"
        );
        driver
            .engine
            .handle(now(), LaptopInput::Request(request.to_vec()));
        match driver.drive(None, events).await {
            Ok(Reached::Response(r)) => {
                tracing::debug!(
                    status = r.first().copied().unwrap_or(0),
                    len = r.len(),
                    "response received"
                );
                Ok(r)
            }
            Ok(_) => Err(Error::TunnelClosed(Step::WaitingForUser)),
            Err(e) => {
                tracing::debug!(error = %e, "request failed; the tunnel is closed");
                driver.io.teardown().await;
                Err(e)
            }
        }
    }

    /// Sends the shutdown message and closes the tunnel; emits [`Event::Done`]. When the QR
    /// code offered linking and no linking data came yet, the tunnel is kept open for it
    /// first, at most [`Timeouts::late_linking`]
    /// ([`Event::AwaitingLinking`]): call this once whatever the answer was for is done.
    pub async fn close(self, events: &Events) -> SessionEnd {
        self.close_waiting(events, true).await
    }

    /// [`close`](Self::close) without waiting for late linking data.
    pub async fn close_now(self, events: &Events) -> SessionEnd {
        self.close_waiting(events, false).await
    }

    async fn close_waiting(self, events: &Events, wait_for_link: bool) -> SessionEnd {
        let mut driver = self.driver;
        let linking = if driver.engine.is_finished() {
            driver.engine.take_linking()
        } else {
            if !wait_for_link {
                driver.engine.skip_late_linking();
            }
            driver.engine.handle(now(), LaptopInput::Close);
            match driver.drive(None, events).await {
                Ok(Reached::Closed(linking)) => linking,
                _ => driver.engine.take_linking(),
            }
        };
        driver.io.teardown().await;
        events.emit(Event::Done);
        SessionEnd { linking }
    }
}

impl Driver {
    /// Runs the engine: carries out its outputs and feeds it what the radio, the tunnel and
    /// the clock say, until it is ready, answers, closes or fails.
    async fn drive(
        &mut self,
        scanner: Option<&dyn Scanner>,
        events: &Events,
    ) -> Result<Reached, Error> {
        let (engine, io) = (&mut self.engine, &mut self.io);
        loop {
            while let Some(output) = engine.poll_output() {
                let deadline = wake_at(engine.poll_timeout());
                match output {
                    LaptopOutput::StartScan => {
                        let scanner = scanner.ok_or(Error::TunnelClosed(Step::Scanning))?;
                        io.scan = Some(scanner.scan(&CABLE_UUIDS).await.map_err(Error::Radio)?);
                    }
                    LaptopOutput::StopScan => {
                        if let Some(scan) = io.scan.take() {
                            let _ = scan.stop().await;
                        }
                    }
                    LaptopOutput::Contact(c) => {
                        let base = io.config.relays.resolve(c.domain_id)?;
                        tracing::debug!(relay = %base, "asking the relay to wake the phone");
                        events.emit(Event::Connecting(base.clone()));
                        // No connect signal: the scan starts as soon as the relay accepted,
                        // and the relay holds Noise message 1 until the phone joins.
                        let contact = ws::contact(
                            &base,
                            &c.contact_id,
                            &c.client_payload,
                            false,
                            io.config.tls.clone(),
                            ws::linked::Timeouts::default(),
                        );
                        io.base = Some(base.clone());
                        match tokio::time::timeout_at(deadline, contact).await {
                            Err(_) => engine.handle_timeout(now()),
                            Ok(Err(e)) => {
                                io.cause = Some(ws::Cause::Connect(e));
                                engine.handle(now(), LaptopInput::ConnectFailed)
                            }
                            Ok(Ok(contacted)) => {
                                io.link = Some(ws::Link::Tunnel(Box::new(contacted.ws)));
                                events.emit(Event::Scanning);
                                engine.handle(now(), LaptopInput::Connected);
                            }
                        }
                    }
                    LaptopOutput::Connect(c) => {
                        tracing::debug!(
                            domain = c.domain_id,
                            routing_id = %c.routing_id.to_hex(),
                            "advert from the phone decrypted"
                        );
                        events.emit(Event::PhoneNearby {
                            domain_id: c.domain_id,
                        });
                        let base = io.config.relays.resolve(c.domain_id)?;
                        tracing::debug!(relay = %base, tunnel = %c.tunnel_id.log_tag(), "connecting");
                        events.emit(Event::Connecting(base.clone()));
                        let url = c.path().to_url(&base);
                        io.base = Some(base);
                        let connect = ws::connect(&url, io.config.tls.clone());
                        match tokio::time::timeout_at(deadline, connect).await {
                            Err(_) => engine.handle_timeout(now()),
                            Ok(Err(e)) => {
                                io.cause = Some(ws::Cause::Connect(e));
                                engine.handle(now(), LaptopInput::ConnectFailed)
                            }
                            Ok(Ok((socket, _))) => {
                                io.link = Some(ws::Link::Tunnel(Box::new(socket)));
                                engine.handle(now(), LaptopInput::Connected);
                            }
                        }
                    }
                    LaptopOutput::OpenDataChannel { psm } => {
                        events.emit(Event::OpeningDataChannel { psm });
                        let (Some(scanner), Some(address)) = (scanner, io.advert_from.clone())
                        else {
                            engine.handle(now(), LaptopInput::ConnectFailed);
                            continue;
                        };
                        let open = scanner.open_data_channel(&address, psm);
                        match tokio::time::timeout_at(deadline, open).await {
                            // The engine falls back to the tunnel either way.
                            Err(_) => engine.handle_timeout(now()),
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "no data channel: using the tunnel");
                                engine.handle(now(), LaptopInput::ConnectFailed);
                            }
                            Ok(Ok(channel)) => {
                                tracing::debug!(psm, "data channel open");
                                io.link = Some(ws::Link::DataChannel(channel));
                                engine.handle(now(), LaptopInput::Connected);
                            }
                        }
                    }
                    LaptopOutput::Send(m) => {
                        if let Some(link) = io.link.as_mut() {
                            match link.send_by(m, deadline).await {
                                None => engine.handle_timeout(now()),
                                Some(Err(e)) => {
                                    io.cause = Some(ws::Cause::Tunnel(e));
                                    engine.handle(now(), LaptopInput::TransportFailed)
                                }
                                Some(Ok(())) => {}
                            }
                        }
                    }
                    LaptopOutput::HandshakeDone => {
                        tracing::debug!("handshake done");
                        events.emit(Event::HandshakeDone);
                    }
                    LaptopOutput::Ready(get_info) => return Ok(Reached::Ready(get_info)),
                    LaptopOutput::WaitingForUser => events.emit(Event::WaitingForUser),
                    LaptopOutput::AwaitingLinking(d) => {
                        tracing::debug!(?d, "waiting for late linking data");
                        events.emit(Event::AwaitingLinking(d));
                    }
                    LaptopOutput::Response(r) => return Ok(Reached::Response(r)),
                    LaptopOutput::CloseTunnel => {
                        if let Some(link) = io.link.take() {
                            link.close(io.config.timeouts.close).await;
                        }
                    }
                    LaptopOutput::Finished(Ok(linking)) => return Ok(Reached::Closed(linking)),
                    LaptopOutput::Finished(Err(f)) => {
                        let cause = io.cause.take();
                        return Err(Error::from_failure(f, io.base.as_deref(), cause));
                    }
                }
            }
            if engine.is_finished() {
                return Err(Error::TunnelClosed(Step::Closing));
            }
            let deadline = wake_at(engine.poll_timeout());
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => engine.handle_timeout(now()),
                advert = next_advert(io.scan.as_mut()) => match advert {
                    Ok(a) => {
                        io.advert_from = a.address;
                        engine.handle(now(), LaptopInput::Advert(a.service_data))
                    }
                    Err(e) => return Err(Error::Radio(e)),
                },
                arrival = ws::arrival(io.link.as_mut()) => {
                    let (event, cause) = arrival.split();
                    if cause.is_some() {
                        io.cause = cause;
                    }
                    engine.handle(now(), event.into())
                }
            }
        }
    }
}

/// The next advert; never, without a scan.
async fn next_advert(
    scan: Option<&mut hybridge_ble::Scan>,
) -> Result<hybridge_ble::Advertisement, hybridge_ble::Error> {
    let Some(scan) = scan else {
        return std::future::pending().await;
    };
    match scan.next().await {
        Some(adv) => Ok(adv),
        None => Err(hybridge_ble::Error::ScanEnded(
            scan.failure()
                .unwrap_or_else(|| format!("the {} scan was stopped", scan.radio())),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_resolution() {
        let none = RelayOverrides::default();
        assert_eq!(none.resolve(0).unwrap(), "wss://cable.ua5v.com");
        assert_eq!(none.resolve(1).unwrap(), "wss://cable.auth.com");
        assert_eq!(none.resolve(266).unwrap(), "wss://cable.wufkweyy3uaxb.com");
        assert!(matches!(none.resolve(7), Err(Error::UnknownDomain(7))));

        let mut o = RelayOverrides::all("ws://127.0.0.1:8080/");
        o.by_domain.insert(266, "relay.example.net".into());
        assert_eq!(o.resolve(0).unwrap(), "ws://127.0.0.1:8080");
        assert_eq!(o.resolve(7).unwrap(), "ws://127.0.0.1:8080");
        assert_eq!(o.resolve(266).unwrap(), "wss://relay.example.net");
    }

    #[test]
    fn status_mapping() {
        use hybridge_ctap::StatusCode as S;
        let name = |s| from_status(s).dom_exception();
        assert_eq!(name(S::CTAP2_ERR_OPERATION_DENIED), "NotAllowedError");
        assert_eq!(name(S::CTAP2_ERR_NO_CREDENTIALS), "NotAllowedError");
        assert_eq!(name(S::CTAP2_ERR_USER_ACTION_TIMEOUT), "NotAllowedError");
        assert_eq!(name(S::CTAP2_ERR_CREDENTIAL_EXCLUDED), "InvalidStateError");
        assert_eq!(
            name(S::CTAP2_ERR_UNSUPPORTED_ALGORITHM),
            "NotSupportedError"
        );
        assert_eq!(name(S::CTAP1_ERR_OTHER), "UnknownError");
    }

    #[test]
    fn proximity_error_names_the_fix() {
        let e = Error::ProximityTimeout(std::time::Duration::from_secs(60));
        assert!(
            e.to_string().starts_with(
                "no phone advert seen within 60s: is Bluetooth on and the phone near?"
            )
        );
        assert_eq!(e.step(), Some(Step::Scanning));
    }
}
