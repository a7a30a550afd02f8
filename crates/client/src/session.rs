//! The laptop side of a hybrid session, over real sockets and a radio: QR code → BLE scan →
//! tunnel → Noise handshake → one CTAP request → shutdown.
//!
//! Every protocol decision is made by [`hybridge_proto::session::LaptopQr`]; this module only
//! waits, with a timeout on every step, and reports progress as [`Event`]s.
//!
//! Two levels:
//! * [`register`] and [`sign_in`]: the WebAuthn client. RP options JSON and an origin in,
//!   [`Registration`](crate::webauthn::Registration) /
//!   [`Assertion`](crate::webauthn::Assertion) out (`to_json()` gives
//!   `RegistrationResponseJSON` / `AuthenticationResponseJSON`). The RP ID is checked against
//!   the origin before any QR code exists. Both are [`ceremony`], which also takes options
//!   parsed beforehand (any [`Ceremony`]).
//! * [`Laptop`] → [`Tunnel`]: the raw session, for one CTAP request of your own.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(options_json: &str) -> Result<(), hybridge_client::session::Error> {
//! use hybridge_ble::RadioSpec;
//! use hybridge_client::session::{self, Event, Events, LaptopConfig, RelayOverrides};
//!
//! let radio: RadioSpec = "bluez".parse().map_err(session::Error::Radio)?;
//! let scanner = radio.scanner().await.map_err(session::Error::Radio)?;
//! let config = LaptopConfig {
//!     // A self-hosted relay for every domain ID the phone may name:
//!     relays: RelayOverrides::all("wss://relay.example.net"),
//!     ..LaptopConfig::default()
//! };
//! let (events, mut progress) = Events::channel(32);
//! tokio::spawn(async move {
//!     while let Some(event) = progress.recv().await {
//!         match event {
//!             Event::QrReady(url) => eprintln!("scan this with your phone: {url}"),
//!             other => eprintln!("{other}"),
//!         }
//!     }
//! });
//! let registration =
//!     session::register(options_json, "https://example.com", &*scanner, &config, &events).await?;
//! println!("{}", registration.to_json());
//! # Ok(()) }
//! ```

mod ceremony;
mod error;
pub use hybridge_tunnel as ws;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hybridge_ble::{CABLE_UUIDS, Scanner};
use hybridge_ctap::GetInfoResponse;
use hybridge_proto::linking::LinkingInfo;
use hybridge_proto::qr::{QrKeys, RequestType};
use hybridge_proto::session::{LaptopChannel, LaptopEvent, LaptopQr};
use hybridge_proto::{domain, frame, keys, tunnel};
use rand_core::OsRng;
use tokio::time::Instant;

pub use ceremony::{Ceremony, ceremony, register, sign_in};
pub use error::{Error, Step, from_status};

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

/// Timeouts of the laptop's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// From showing the QR code to hearing the phone's advert (default 60 s).
    pub scan: Duration,
    /// Opening the tunnel WebSocket, TCP and TLS included (default 10 s).
    pub connect: Duration,
    /// Noise handshake and the phone's post-handshake message (default 10 s).
    pub handshake: Duration,
    /// From sending the request to the phone's answer, while the user decides (default
    /// 120 s).
    pub user: Duration,
    /// Sending the shutdown and closing the WebSocket (default 2 s).
    pub close: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            scan: Duration::from_secs(60),
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
            user: Duration::from_secs(120),
            close: Duration::from_secs(2),
        }
    }
}

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
    /// QR key 4: tell the phone we would store linking data. Off by default (this client
    /// does not store links yet); verified linking data is returned in [`SessionEnd`] anyway.
    pub supports_linking: bool,
}

/// Progress of a laptop session, for a UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Show this `FIDO:/` URL as a QR code.
    QrReady(String),
    /// Listening for the phone's advert.
    Scanning,
    /// The phone's advert was heard; it uses this tunnel-server domain.
    PhoneNearby {
        /// Domain ID from the advert.
        domain_id: u16,
    },
    /// Opening the tunnel on this relay (base URL only: the tunnel ID is a secret).
    Connecting(String),
    /// The handshake with the phone succeeded.
    HandshakeDone,
    /// The request was sent; the user is deciding on the phone.
    WaitingForUser,
    /// The phone answered and the tunnel was closed.
    Done,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::QrReady(_) => f.write_str("scan the QR code with your phone"),
            Event::Scanning => f.write_str("waiting for the phone (Bluetooth)"),
            Event::PhoneNearby { domain_id } => {
                write!(f, "phone nearby (tunnel-server domain {domain_id})")
            }
            Event::Connecting(url) => write!(f, "connecting to {url}"),
            Event::HandshakeDone => f.write_str("connected to the phone"),
            Event::WaitingForUser => f.write_str("confirm on your phone"),
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

/// A laptop session before the phone was found: fresh QR keys.
#[derive(Debug)]
pub struct Laptop {
    qr: LaptopQr,
    config: LaptopConfig,
}

impl Laptop {
    /// New QR keys for a request of `request_type` (QR key 5: `mc` to register, `ga` to sign
    /// in).
    pub fn new(request_type: RequestType, config: LaptopConfig) -> Self {
        let keys = QrKeys::generate(&mut OsRng);
        let qr = LaptopQr::new(keys, now_unix(), config.supports_linking, request_type);
        Self { qr, config }
    }

    /// The `FIDO:/` URL to show as a QR code.
    pub fn qr_url(&self) -> String {
        self.qr.qr_url()
    }

    /// Shows the QR code ([`Event::QrReady`]), scans until this QR code's advert is heard
    /// (everyone else's adverts are ignored), connects to the tunnel server the advert names,
    /// does the handshake and reads the phone's post-handshake message. The relay is contacted
    /// only after the advert matched.
    pub async fn connect(
        mut self,
        scanner: &dyn Scanner,
        events: &Events,
    ) -> Result<Tunnel, Error> {
        let t = self.config.timeouts;
        events.emit(Event::QrReady(self.qr.qr_url()));
        events.emit(Event::Scanning);
        let connect = {
            let mut scan = scanner.scan(&CABLE_UUIDS).await.map_err(Error::Radio)?;
            let deadline = ws::deadline(Instant::now(), t.scan);
            let mut unusable = None;
            let found = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break None;
                }
                match scan.next_timeout(left).await {
                    Ok(adv) => match self.qr.on_advert(&adv.service_data) {
                        Ok(Some(c)) => break Some(c),
                        Ok(None) => {}
                        // Made with our key but unusable: remember, keep listening.
                        Err(e) => unusable = Some(e),
                    },
                    Err(hybridge_ble::Error::ScanTimeout(_)) => break None,
                    Err(e) => {
                        let _ = scan.stop().await;
                        return Err(Error::Radio(e));
                    }
                }
            };
            let _ = scan.stop().await;
            match (found, unusable) {
                (Some(c), _) => c,
                (None, Some(e)) => return Err(Error::BadAdvert(e)),
                (None, None) => return Err(Error::ProximityTimeout(t.scan)),
            }
        };
        tracing::debug!(
            domain = connect.domain_id,
            routing_id = %connect.routing_id.to_hex(),
            "advert from the phone decrypted"
        );
        events.emit(Event::PhoneNearby {
            domain_id: connect.domain_id,
        });

        let base = self.config.relays.resolve(connect.domain_id)?;
        let url = connect.path().to_url(&base);
        tracing::debug!(relay = %base, tunnel = %connect.tunnel_id.log_tag(), "connecting");
        events.emit(Event::Connecting(base.clone()));
        let (mut socket, _) = within(Step::Connecting, t.connect, Instant::now(), async {
            ws::connect(&url, self.config.tls.clone())
                .await
                .map_err(|e| Error::RelayUnreachable {
                    url: base.clone(),
                    reason: e.to_string(),
                })
        })
        .await?;

        let ephemeral = keys::generate(&mut OsRng);
        let msg1 = self
            .qr
            .handshake_message(&ephemeral)
            .map_err(Error::Handshake)?;
        // The handshake and the post-handshake message share one limit.
        let started = Instant::now();
        let msg2 = within(Step::Handshake, t.handshake, started, async {
            ws::send(&mut socket, msg1.to_vec())
                .await
                .map_err(|reason| Error::Tunnel {
                    step: Step::Handshake,
                    reason,
                })?;
            recv(&mut socket, Step::Handshake).await
        })
        .await?;
        let mut channel = match self.qr.finish(&msg2) {
            Ok(c) => c,
            Err(e) => {
                ws::close(&mut socket, t.close).await;
                return Err(Error::Handshake(e));
            }
        };
        tracing::debug!("handshake done");
        events.emit(Event::HandshakeDone);

        let first = within(
            Step::PostHandshake,
            t.handshake,
            started,
            recv(&mut socket, Step::PostHandshake),
        )
        .await?;
        let evs = match channel.on_message(&first) {
            Ok(evs) => evs,
            Err(source) => {
                ws::close(&mut socket, t.close).await;
                return Err(match source {
                    hybridge_proto::Error::MissingGetInfo(why) => {
                        Error::InvalidGetInfo(why.to_owned())
                    }
                    source => Error::Protocol {
                        step: Step::PostHandshake,
                        source,
                    },
                });
            }
        };
        let mut ctap = true;
        let mut linking = None;
        for ev in evs {
            match ev {
                LaptopEvent::PostHandshake { message, revision } => {
                    tracing::debug!(
                        ?revision,
                        features = ?message.features,
                        get_info_len = message.get_info.as_ref().map_or(0, Vec::len),
                        "post-handshake message"
                    );
                    ctap = message.supports_ctap();
                }
                other => note(&mut linking, other),
            }
        }
        if !ctap {
            send_shutdown(&mut socket, &mut channel, t.close).await;
            ws::close(&mut socket, t.close).await;
            return Err(Error::NoCtap);
        }
        // Every request is built from what getInfo says (rk, uv, extensions): a phone whose
        // getInfo does not parse cannot be asked anything sensible.
        let parsed = match channel.get_info() {
            None => Err("key 1 is absent".to_owned()),
            Some(b) => GetInfoResponse::from_cbor(b)
                .map(|info| (b.to_vec(), info))
                .map_err(|e| format!("it does not parse: {e}")),
        };
        let (get_info, info) = match parsed {
            Ok(parsed) => parsed,
            Err(why) => {
                ws::close(&mut socket, t.close).await;
                return Err(Error::InvalidGetInfo(why));
            }
        };
        Ok(Tunnel {
            socket,
            channel: Some(Box::new(channel)),
            get_info,
            info,
            linking,
            timeouts: t,
        })
    }
}

/// Keeps what a phone message says about linking: verified linking data replaces any earlier.
fn note(linking: &mut Option<LinkingInfo>, event: LaptopEvent) {
    match event {
        LaptopEvent::Linked(l) => *linking = Some(l),
        LaptopEvent::LinkingRejected(why) => {
            tracing::debug!(%why, "linking data from the phone dropped");
        }
        _ => {}
    }
}

/// Sends the shutdown message, if the channel still has one to send, waiting at most `limit`.
async fn send_shutdown(socket: &mut ws::Ws, channel: &mut LaptopChannel, limit: Duration) {
    if let Ok(Some(ct)) = channel.shutdown() {
        let _ = tokio::time::timeout(limit, ws::send(socket, ct)).await;
    }
}

/// `f`, unless `limit` (counted from `since`) runs out first: then [`Error::Timeout`] naming
/// `step` and `limit`. Every step of the session waits through this.
async fn within<T>(
    step: Step,
    limit: Duration,
    since: Instant,
    f: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout_at(ws::deadline(since, limit), f)
        .await
        .unwrap_or(Err(Error::Timeout { step, after: limit }))
}

/// The next message, or the error naming `step`.
async fn recv(socket: &mut ws::Ws, step: Step) -> Result<Vec<u8>, Error> {
    match ws::recv(socket).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(Error::TunnelClosed(step)),
        Err(reason) => Err(Error::Tunnel { step, reason }),
    }
}

/// An open, encrypted tunnel to the phone, after its post-handshake message.
pub struct Tunnel {
    socket: ws::Ws,
    // Boxed: it holds the Noise and AEAD state, whose keys are wiped when it is dropped.
    // `None` once the tunnel closed (after a failure or `close`): nothing more is sent.
    channel: Option<Box<LaptopChannel>>,
    // The phone's getInfo as it sent it (answers a getInfo request), and its parse, made
    // once by `connect`. Both outlive the channel.
    get_info: Vec<u8>,
    info: GetInfoResponse,
    linking: Option<LinkingInfo>,
    timeouts: Timeouts,
}

/// What the session leaves behind.
#[derive(Debug, Default)]
pub struct SessionEnd {
    /// Verified linking data, if the phone offered it (store it keyed by the phone's public
    /// key to skip the QR code next time).
    pub linking: Option<LinkingInfo>,
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("open", &self.channel.is_some())
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
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
        const STEP: Step = Step::WaitingForUser;
        if let Some(reply) = frame::get_info_reply(request, &self.get_info) {
            return Ok(reply);
        }
        let channel = self.channel.as_mut().ok_or(Error::TunnelClosed(STEP))?;
        let ct = channel
            .send_ctap(request)
            .map_err(|source| Error::Protocol { step: STEP, source })?;
        tracing::debug!(
            command = request.first().copied().unwrap_or(0),
            len = request.len(),
            "request sent"
        );
        events.emit(Event::WaitingForUser);
        let result = within(STEP, self.timeouts.user, Instant::now(), async {
            ws::send(&mut self.socket, ct)
                .await
                .map_err(|reason| Error::Tunnel { step: STEP, reason })?;
            loop {
                let m = recv(&mut self.socket, STEP).await?;
                let channel = self.channel.as_mut().ok_or(Error::TunnelClosed(STEP))?;
                let evs = channel
                    .on_message(&m)
                    .map_err(|source| Error::Protocol { step: STEP, source })?;
                for ev in evs {
                    match ev {
                        LaptopEvent::CtapResponse(r) => return Ok(r),
                        LaptopEvent::PhoneShutdown => return Err(Error::TunnelClosed(STEP)),
                        other => note(&mut self.linking, other),
                    }
                }
            }
        })
        .await;
        match &result {
            Ok(r) => tracing::debug!(
                status = r.first().copied().unwrap_or(0),
                len = r.len(),
                "response received"
            ),
            Err(e) => {
                tracing::debug!(error = %e, "request failed; closing the tunnel");
                self.abort().await;
            }
        }
        result
    }

    /// Closes at once, without a shutdown message (after a failure); the traffic keys are
    /// wiped now rather than when the tunnel is dropped.
    async fn abort(&mut self) {
        if self.channel.take().is_some() {
            ws::close(&mut self.socket, self.timeouts.close).await;
        }
    }

    /// Sends the shutdown message and closes the tunnel; emits [`Event::Done`].
    pub async fn close(mut self, events: &Events) -> SessionEnd {
        if let Some(channel) = self.channel.as_mut() {
            send_shutdown(&mut self.socket, channel, self.timeouts.close).await;
        }
        self.abort().await;
        events.emit(Event::Done);
        SessionEnd {
            linking: self.linking.take(),
        }
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
        let e = Error::ProximityTimeout(Duration::from_secs(60));
        assert!(
            e.to_string().starts_with(
                "no phone advert seen within 60s: is Bluetooth on and the phone near?"
            )
        );
        assert_eq!(e.step(), Some(Step::Scanning));
    }
}
