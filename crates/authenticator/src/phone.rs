//! The phone side of a hybrid session: read the laptop's QR code, open a tunnel on the
//! phone's relay, advertise over BLE until the laptop joins, answer the Noise handshake, send
//! the post-handshake message, serve one CTAP request with the authenticator, close.
//!
//! Every rule of the session, and every timeout, is in [`PhoneEngine`]
//! (`hybridge_proto::engine`); this module is its driver: it moves bytes over the tunnel,
//! starts and stops the advert, runs the authenticator, stops advertising on every path out,
//! and reports progress as [`PhoneProgress`] events.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(qr_text: String) -> Result<(), hybridge_authenticator::phone::PhoneError> {
//! use hybridge_authenticator::authenticator::{Authenticator, SystemClock};
//! use hybridge_authenticator::phone::{Phone, PhoneError, PhoneEvents, QrInput};
//! use hybridge_authenticator::store::MemoryStore;
//! use hybridge_authenticator::user::AutoApprove;
//! use hybridge_ble::RadioSpec;
//!
//! let authenticator = Authenticator::new(MemoryStore::new(), AutoApprove, SystemClock, rand_core::OsRng);
//! // A local relay; by default the phone uses domain 0's host.
//! let phone = Phone::new(authenticator).relay("ws://127.0.0.1:8080");
//! let radio: RadioSpec = "udp:127.0.0.1:47000".parse().map_err(PhoneError::Radio)?;
//! let advertiser = radio.advertiser().await.map_err(PhoneError::Radio)?;
//! let (events, mut progress) = PhoneEvents::channel(32);
//! tokio::spawn(async move {
//!     while let Some(p) = progress.recv().await {
//!         eprintln!("{p}");
//!     }
//! });
//! let outcome = phone.serve(&QrInput::Text(qr_text), &*advertiser, &events).await?;
//! eprintln!("answered command {:#04x} with status {:#04x}", outcome.command, outcome.status);
//! # Ok(()) }
//! ```

use hybridge_websocket as ws;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybridge_ble::{Advertiser, AdvertisingHandle, UUID_FIDO};
use hybridge_proto::engine::{
    Failure, LinkedWake, LinkingOffer, PhoneEngine, PhoneInput, PhoneOutput,
};
use hybridge_proto::qr::RequestType;
use hybridge_proto::session::PhoneQr;
use hybridge_proto::tunnel::{ROUTING_ID_HEADER, base_url, routing_id_from_headers};
use hybridge_proto::{domain, keys};
use rand_core::{OsRng, RngCore};
use ws::{engine_now as now, wake_at};

use crate::authenticator::{Authenticator, Cancel};
#[cfg(feature = "qr-image")]
use crate::qr_image::{QrImageError, decode_qr_image};
use crate::store::CredentialStore;
use crate::user::UserAgent;

pub use ws::{default_tls, tls_with_roots};

/// What answers CTAP requests on the phone: the software [`Authenticator`], or a test double.
/// Calls may block (a terminal prompt); the session runs them on a blocking thread.
pub trait CtapHandler: Send {
    /// The authenticatorGetInfo response map, CBOR (no status byte): key 1 of the
    /// post-handshake message.
    fn get_info(&self) -> Vec<u8>;
    /// Answers `command ‖ CBOR` with `status ‖ CBOR`. `cancel` is this request's own token:
    /// the session cancels it when it gives up on the request (user timeout, the laptop
    /// left), and a handler that can should then end with `CTAP2_ERR_KEEPALIVE_CANCEL` and
    /// write nothing, even if its user approves afterwards.
    fn handle(&mut self, request: &[u8], cancel: &Cancel) -> Vec<u8>;
}

impl<S: CredentialStore, U: UserAgent> CtapHandler for Authenticator<S, U> {
    fn get_info(&self) -> Vec<u8> {
        Authenticator::get_info(self).to_cbor()
    }

    fn handle(&mut self, request: &[u8], cancel: &Cancel) -> Vec<u8> {
        Authenticator::handle_cancellable(self, request, cancel)
    }
}

/// The laptop's QR code, as text or as a photo. (`Debug` is redacted: the text carries the
/// QR secret.)
#[derive(Clone)]
pub enum QrInput {
    /// The `FIDO:/…` text.
    Text(String),
    /// A PNG or JPEG image of the QR code (feature `qr-image`).
    #[cfg(feature = "qr-image")]
    Image(Vec<u8>),
}

impl std::fmt::Debug for QrInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QrInput::Text(t) => write!(f, "QrInput::Text({} characters)", t.len()),
            #[cfg(feature = "qr-image")]
            QrInput::Image(b) => write!(f, "QrInput::Image({} bytes)", b.len()),
        }
    }
}

impl QrInput {
    /// The `FIDO:/` text.
    pub fn text(&self) -> Result<String, PhoneError> {
        match self {
            QrInput::Text(t) => Ok(t.trim().to_owned()),
            #[cfg(feature = "qr-image")]
            QrInput::Image(bytes) => decode_qr_image(bytes).map_err(PhoneError::QrImage),
        }
    }

    /// The QR code read (an image is decoded) and parsed: what [`Phone::serve_qr`] answers. Parse it
    /// once, to refuse a bad QR code early and then answer it.
    pub fn parse(&self) -> Result<PhoneQr, PhoneError> {
        PhoneQr::from_qr_url(&self.text()?).map_err(PhoneError::InvalidQr)
    }
}

/// Limits of the phone's steps; the session engine owns them.
pub use hybridge_proto::engine::PhoneTimeouts;

/// Configuration of the phone side.
#[derive(Clone, Debug, Default)]
pub struct PhoneConfig {
    /// The phone's tunnel server: a base URL (`wss://relay.example.net`,
    /// `ws://127.0.0.1:8080`) or bare host. `None`: the hostname of [`PhoneConfig::domain_id`].
    pub relay: Option<String>,
    /// The tunnel-server domain ID put in the advert, so the laptop knows where to connect
    /// (default 0, as Chrome on Android).
    pub domain_id: u16,
    /// Step timeouts.
    pub timeouts: PhoneTimeouts,
    /// TLS for `wss://`; `None`: the webpki roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The phone's linking identity: links are offered to laptops whose QR code says they
    /// store them, and linked laptops can be served ([`Phone::serve_linked`]).
    pub linking: Option<LinkIdentity>,
    /// Offer the CTAP 2.3 data channel (BLE L2CAP) when the laptop's QR code asks for it:
    /// the advert then names a PSM the phone listens on, and a laptop that connects there
    /// runs the ceremony without the relay. Needs a radio that listens for data channels;
    /// without one the phone advertises as before.
    pub data_channel: bool,
}

impl PhoneConfig {
    /// The relay base URL.
    pub fn relay_url(&self) -> Result<String, PhoneError> {
        match &self.relay {
            Some(r) => Ok(base_url(r)),
            None => domain::hostname(self.domain_id)
                .map(|host| base_url(&host))
                .ok_or(PhoneError::UnknownDomain(self.domain_id)),
        }
    }
}

/// What a phone needs to be reached again without a QR code (docs/protocol.md §8.5): one
/// identity for every laptop it links to. The passkey store keeps it
/// ([`FileStore::ensure_linking`](crate::store::FileStore::ensure_linking)).
#[derive(Clone)]
pub struct LinkIdentity {
    root_secret: zeroize::Zeroizing<[u8; 32]>,
    identity: p256::SecretKey,
    wake_key: p256::SecretKey,
    name: String,
}

impl fmt::Debug for LinkIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LinkIdentity {
    /// From the store's linking state; `name` is what laptops show for this phone.
    ///
    /// # Errors
    /// [`PhoneError::NoLinkingIdentity`] if a stored key is not a P-256 scalar.
    pub fn from_state(
        state: &crate::store::LinkingState,
        name: impl Into<String>,
    ) -> Result<Self, PhoneError> {
        let key = |b: &[u8; 32]| {
            p256::SecretKey::from_slice(b).map_err(|_| PhoneError::NoLinkingIdentity)
        };
        Ok(Self {
            root_secret: state.root_secret.clone(),
            identity: key(&state.identity_key)?,
            wake_key: key(&state.wake_key)?,
            name: name.into(),
        })
    }

    /// The key that proves the contact ID to the relay (`hybridge_websocket::subscribe`).
    pub fn wake_key(&self) -> &p256::SecretKey {
        &self.wake_key
    }

    /// Where laptops reach this phone: linking map key 1.
    pub fn contact_id(&self) -> hybridge_proto::contact::ContactId {
        hybridge_proto::contact::ContactId::of(&self.wake_key.public_key())
    }

    /// The link secret of the laptop with `link_id`.
    fn link_secret(&self, link_id: &[u8]) -> hybridge_proto::secret::LinkSecret {
        hybridge_proto::kdf::phone_link_secret(
            &*self.root_secret,
            Some(&self.contact_id().0),
            link_id,
        )
    }

    /// A link for a new laptop, with a fresh link ID.
    fn offer(&self) -> LinkingOffer {
        let mut link_id = [0u8; 8];
        OsRng.fill_bytes(&mut link_id);
        LinkingOffer {
            identity: self.identity.clone(),
            contact_id: self.contact_id().0.to_vec(),
            link_id: link_id.to_vec(),
            link_secret: self.link_secret(&link_id),
            name: self.name.clone(),
        }
    }
}

/// Progress of the phone session, for a UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhoneProgress {
    /// The QR code was read; the laptop wants to register (`mc`) or sign in (`ga`).
    QrRead {
        /// QR key 5.
        request_type: RequestType,
    },
    /// Opening the tunnel on this relay (base URL only).
    Connecting(String),
    /// The tunnel is open; the relay gave a routing ID.
    TunnelOpen,
    /// Advertising over BLE, waiting for the laptop.
    Advertising,
    /// The laptop joined the tunnel; advertising stopped.
    LaptopConnected,
    /// The laptop came over the data channel (BLE L2CAP): the relay's tunnel was
    /// closed and the ceremony continues without it.
    DataChannel,
    /// The handshake succeeded and the post-handshake message was sent.
    HandshakeDone,
    /// A CTAP request arrived (command byte); the user is being asked.
    Request {
        /// `0x01` makeCredential, `0x02` getAssertion, …
        command: u8,
    },
    /// The response was sent (CTAP status byte).
    Responded {
        /// `0x00` on success.
        status: u8,
    },
    /// The laptop stores links, and was given one with this link ID: remember the laptop
    /// (so it can be listed and revoked).
    Linked {
        /// The link (pairing) ID the laptop will send back.
        link_id: [u8; 8],
    },
    /// Woken by the relay for a linked laptop that wants to register (`mc`) or sign in (`ga`).
    Woken {
        /// From the laptop's client payload.
        request_type: RequestType,
    },
    /// The tunnel was closed.
    Done,
}

impl fmt::Display for PhoneProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhoneProgress::QrRead { request_type } => match request_type {
                RequestType::MakeCredential => {
                    f.write_str("QR code read: the laptop wants to register a passkey")
                }
                _ => f.write_str("QR code read: the laptop wants to sign in"),
            },
            PhoneProgress::Connecting(url) => write!(f, "opening a tunnel on {url}"),
            PhoneProgress::TunnelOpen => f.write_str("tunnel open"),
            PhoneProgress::Advertising => f.write_str("advertising, waiting for the laptop"),
            PhoneProgress::LaptopConnected => f.write_str("the laptop connected"),
            PhoneProgress::DataChannel => f.write_str(
                "the laptop connected over the data channel; the relay is no longer used",
            ),
            PhoneProgress::HandshakeDone => f.write_str("handshake done"),
            PhoneProgress::Request { command } => {
                match hybridge_ctap::Command::from_byte(*command) {
                    Some(c) => write!(f, "{} request ({command:#04x}) from the laptop", c.name()),
                    None => write!(f, "request {command:#04x} from the laptop"),
                }
            }
            PhoneProgress::Responded { status } => {
                match hybridge_ctap::StatusCode(*status).name() {
                    Some(n) => write!(f, "answered with status {status:#04x} ({n})"),
                    None => write!(f, "answered with status {status:#04x}"),
                }
            }
            PhoneProgress::Linked { .. } => {
                f.write_str("linked: the laptop can reach this phone without a QR code")
            }
            PhoneProgress::Woken { request_type } => match request_type {
                RequestType::MakeCredential => {
                    f.write_str("woken by the relay: a linked laptop wants to register a passkey")
                }
                _ => f.write_str("woken by the relay: a linked laptop wants to sign in"),
            },
            PhoneProgress::Done => f.write_str("done"),
        }
    }
}

/// Where phone events go: a bounded channel ([`PhoneEvents::channel`]) or nowhere
/// ([`PhoneEvents::none`]); never blocks the protocol.
pub type PhoneEvents = ws::Events<PhoneProgress>;

/// A step of the session, as named in errors: one set for both sides, in the engine.
pub use hybridge_proto::engine::Step as PhoneStep;

/// Everything that can go wrong on the phone side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The QR text is not a valid hybrid QR code.
    #[error("not a valid hybrid QR code: {0}")]
    InvalidQr(#[source] hybridge_proto::Error),
    /// No QR code could be read from the image.
    #[cfg(feature = "qr-image")]
    #[error(transparent)]
    QrImage(QrImageError),
    /// No relay given and the domain ID has no hostname.
    #[error("tunnel-server domain {0} has no known hostname: give the relay URL")]
    UnknownDomain(u16),
    /// The relay could not be reached or refused the tunnel.
    #[error("cannot open the tunnel at {url}: {source}")]
    RelayUnreachable {
        /// Relay base URL.
        url: String,
        /// Why.
        source: ws::ConnectError,
    },
    /// The relay's 101 lacked a valid `X-caBLE-Routing-ID` header.
    #[error(
        "the tunnel server at {url} sent no valid X-caBLE-Routing-ID header (not a hybrid tunnel server?)"
    )]
    NoRoutingId {
        /// Relay base URL.
        url: String,
    },
    /// The radio failed.
    #[error("cannot advertise over Bluetooth: {0}")]
    Radio(#[source] hybridge_ble::Error),
    /// A step did not finish in time.
    #[error("timed out after {}s while {step}", .after.as_secs_f32())]
    Timeout {
        /// The step.
        step: PhoneStep,
        /// Its timeout.
        after: Duration,
    },
    /// The tunnel closed early.
    #[error("the tunnel closed while {0}")]
    TunnelClosed(PhoneStep),
    /// The laptop closed the tunnel before sending a request (Chromium's `UNEXPECTED_EOF`).
    #[error("the laptop ended the session before sending a request")]
    UnexpectedEof,
    /// The laptop closed the tunnel, or sent its shutdown, while the user was deciding
    /// (Chromium's `EOF_WHILE_PROCESSING`). The request was cancelled: an approval given after
    /// this saves nothing.
    #[error(
        "the laptop ended the session while the user was deciding; the request was cancelled \
         and nothing was saved"
    )]
    EofWhileProcessing,
    /// The laptop sent authenticatorSelection (CTAP 0x0B). A hybrid phone was already chosen
    /// by scanning the QR code; Chrome's phone ends the session on it without an answer
    /// (docs/protocol.md §9), and so does this one.
    #[error(
        "the laptop sent authenticatorSelection (CTAP 0x0B), which a hybrid phone does not \
         serve (scanning the QR code already chose it); the session was ended"
    )]
    AuthenticatorSelection,
    /// A WebSocket failure on the open tunnel.
    #[error("the tunnel failed while {step}: {source}")]
    Tunnel {
        /// The step.
        step: PhoneStep,
        /// Why.
        source: ws::TunnelError,
    },
    /// The Noise handshake failed (the laptop does not hold this QR code's keys).
    #[error("the handshake with the laptop failed: {0}")]
    Handshake(#[source] hybridge_proto::Error),
    /// A message from the laptop failed to decrypt or parse; the session was aborted.
    #[error(
        "a message from the laptop was rejected while {step} ({source}); the session was aborted"
    )]
    Protocol {
        /// The step.
        step: PhoneStep,
        /// The protocol error.
        source: hybridge_proto::Error,
    },
    /// The laptop asked for something this phone does not do.
    #[error("unsupported request: {0}")]
    Unsupported(&'static str),
    /// The authenticator failed (it panicked, or its lock is poisoned).
    #[error("the authenticator failed: {0}")]
    Authenticator(String),
    /// Any other way the session engine ended (none is expected on the phone side).
    #[error("the session failed: {0}")]
    Session(Failure),
    /// A wake-up whose client payload does not parse.
    #[error("a wake-up from the relay carried an invalid client payload: {0}")]
    BadWake(#[source] hybridge_proto::contact::ContactError),
    /// A wake-up for a link this phone never gave, or revoked.
    #[error("a laptop asked with a link this phone does not have (revoked or never given)")]
    NotLinked,
    /// A wake-up whose client payload this phone served already: a replayed contact request.
    #[error("refused a replayed wake-up (its client nonce was used before)")]
    ReplayedWake,
    /// A linked session without the phone's linking identity.
    #[error("this phone has no linking identity: give it one with Phone::linking")]
    NoLinkingIdentity,
}

impl PhoneError {
    /// The engine's failure, with the relay's base URL and the transport's reason (which the
    /// driver kept) where the message needs them.
    fn from_failure(failure: Failure, url: &str, cause: Option<ws::Cause>) -> Self {
        match (failure, cause) {
            (Failure::ConnectFailed, Some(ws::Cause::Connect(source))) => {
                PhoneError::RelayUnreachable {
                    url: url.to_owned(),
                    source,
                }
            }
            (Failure::Transport { step }, Some(ws::Cause::Tunnel(source))) => {
                PhoneError::Tunnel { step, source }
            }
            (failure, _) => Self::from_engine(failure, url),
        }
    }

    fn from_engine(failure: Failure, url: &str) -> Self {
        match failure {
            Failure::NoRoutingId => PhoneError::NoRoutingId {
                url: url.to_owned(),
            },
            Failure::Timeout { step, after } => PhoneError::Timeout { step, after },
            Failure::TunnelClosed(step) => PhoneError::TunnelClosed(step),
            Failure::Handshake(e) => PhoneError::Handshake(e),
            Failure::Protocol { step, source } => PhoneError::Protocol { step, source },
            Failure::UnexpectedEof => PhoneError::UnexpectedEof,
            Failure::EofWhileProcessing => PhoneError::EofWhileProcessing,
            Failure::AuthenticatorSelection => PhoneError::AuthenticatorSelection,
            Failure::Unsupported(what) => PhoneError::Unsupported(what),
            other => PhoneError::Session(other),
        }
    }
}

/// How a session that served a request ended.
pub use hybridge_proto::engine::PhoneOutcome;

/// The phone side: an authenticator, and how it reaches its relay. Each [`serve`](Self::serve)
/// is one QR-initiated session (see the [module docs](self)); the authenticator is kept between
/// sessions. Cloning shares the authenticator.
pub struct Phone<H: ?Sized> {
    config: PhoneConfig,
    /// Client nonces of the wake-ups served lately: a replayed contact request is refused.
    recent_wakes: Arc<Mutex<std::collections::VecDeque<[u8; 16]>>>,
    handler: Arc<Mutex<H>>,
}

/// How many recent wake-ups' client nonces a phone remembers (16 bytes each).
const RECENT_WAKES: usize = 4096;

impl<H: ?Sized> Clone for Phone<H> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            recent_wakes: self.recent_wakes.clone(),
            handler: self.handler.clone(),
        }
    }
}

impl<H: ?Sized> fmt::Debug for Phone<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phone")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H: CtapHandler + 'static> Phone<H> {
    /// A phone answering with `handler`, with the default [`PhoneConfig`] (domain 0's relay,
    /// the default timeouts, the webpki roots).
    pub fn new(handler: H) -> Self {
        Self {
            config: PhoneConfig::default(),
            recent_wakes: Default::default(),
            handler: Arc::new(Mutex::new(handler)),
        }
    }
}

impl<H: CtapHandler + ?Sized + 'static> Phone<H> {
    /// The phone's tunnel server: a base URL (`wss://relay.example.net`,
    /// `ws://127.0.0.1:8080`) or bare host, instead of the hostname of its domain ID.
    pub fn relay(mut self, relay: impl Into<String>) -> Self {
        self.config.relay = Some(relay.into());
        self
    }

    /// The tunnel-server domain ID put in the advert (default 0, as Chrome on Android).
    pub fn domain_id(mut self, domain_id: u16) -> Self {
        self.config.domain_id = domain_id;
        self
    }

    /// The limits of the session's steps.
    pub fn timeouts(mut self, timeouts: PhoneTimeouts) -> Self {
        self.config.timeouts = timeouts;
        self
    }

    /// Offers the CTAP 2.3 data channel ([`PhoneConfig::data_channel`]).
    pub fn data_channel(mut self, on: bool) -> Self {
        self.config.data_channel = on;
        self
    }

    /// TLS for `wss://` relays (e.g. [`tls_with_roots`] for a private CA).
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// The phone's linking identity ([`PhoneConfig::linking`]).
    pub fn linking(mut self, identity: LinkIdentity) -> Self {
        self.config.linking = Some(identity);
        self
    }

    /// Every setting at once.
    pub fn with_config(mut self, config: PhoneConfig) -> Self {
        self.config = config;
        self
    }

    /// The settings.
    pub fn config(&self) -> &PhoneConfig {
        &self.config
    }

    /// Runs `f` on the authenticator, between sessions (e.g. to count passkeys); `None` while
    /// it is busy with a prompt or its lock is poisoned.
    pub fn with_handler<R>(&self, f: impl FnOnce(&mut H) -> R) -> Option<R> {
        self.handler.try_lock().ok().map(|mut h| f(&mut h))
    }

    /// Runs one session for the laptop whose QR code this is: reads it (an image is decoded),
    /// opens the tunnel, advertises, answers the handshake and one request, closes.
    pub async fn serve(
        &self,
        qr: &QrInput,
        advertiser: &dyn Advertiser,
        events: &PhoneEvents,
    ) -> Result<PhoneOutcome, PhoneError> {
        self.serve_qr(qr.parse()?, advertiser, events).await
    }

    /// [`serve`](Self::serve) for a QR code already parsed ([`QrInput::parse`]), e.g. one
    /// checked before the user was asked for anything.
    ///
    /// This is the driver of [`PhoneEngine`], which makes every decision: it opens the tunnel,
    /// advertises, moves bytes, runs the authenticator on a blocking thread, and waits for the
    /// earliest of the tunnel, the authenticator and the engine's timer.
    pub async fn serve_qr(
        &self,
        session: PhoneQr,
        advertiser: &dyn Advertiser,
        events: &PhoneEvents,
    ) -> Result<PhoneOutcome, PhoneError> {
        let config = &self.config;
        let handler = &self.handler;
        events.emit(PhoneProgress::QrRead {
            request_type: session.qr_payload().request_type,
        });
        let base = config.relay_url()?;
        // A radio that cannot advertise fails here, before the relay is contacted.
        advertiser.check_ready().await.map_err(PhoneError::Radio)?;
        tracing::debug!(relay = %base, tunnel = %session.tunnel_id().log_tag(), "opening tunnel");
        // try_lock: never block the async task on a handler still busy with an abandoned
        // prompt.
        let get_info = handler
            .try_lock()
            .map_err(|_| PhoneError::Authenticator("it is busy with an earlier request".into()))?
            .get_info();
        let mut nonce = [0u8; 10];
        OsRng.fill_bytes(&mut nonce);
        let offers_l2cap = session.qr_payload().offers_l2cap();
        let mut engine = PhoneEngine::new(
            session,
            get_info,
            keys::generate(&mut OsRng),
            nonce,
            config.domain_id,
            config.timeouts,
            now(),
        );
        // A listener only when the laptop asked for a data channel and this phone offers one.
        let mut listener = None;
        if let Some(identity) = &config.linking {
            // Sent only if the laptop's QR code says it stores links.
            engine = engine.with_linking(identity.offer());
        }
        if config.data_channel && offers_l2cap {
            match advertiser.listen_data_channel().await {
                Ok(l) => {
                    tracing::debug!(psm = l.psm(), "listening for the laptop's data channel");
                    engine = engine.with_data_channel(l.psm());
                    listener = Some(l);
                }
                Err(e) => tracing::debug!(error = %e, "no data channel: the relay only"),
            }
        }
        self.run(engine, listener, &base, advertiser, events).await
    }

    /// Serves a laptop that reached this phone through a link: `wake` is what the relay's
    /// wake-up subscription delivered. `is_linked` says whether a link ID is one this phone
    /// gave and did not revoke; any other is refused before anything is sent. Then, as for a
    /// QR code: join the tunnel the wake-up names (on this phone's relay), advertise (with the
    /// link's key), answer the handshake (NKpsk0, with the identity key) and one request.
    pub async fn serve_linked(
        &self,
        wake: &hybridge_proto::contact::Wake,
        is_linked: &(dyn Fn(&[u8]) -> bool + Sync),
        advertiser: &dyn Advertiser,
        events: &PhoneEvents,
    ) -> Result<PhoneOutcome, PhoneError> {
        let config = &self.config;
        let identity = config
            .linking
            .as_ref()
            .ok_or(PhoneError::NoLinkingIdentity)?;
        let payload = wake.client_payload().map_err(PhoneError::BadWake)?;
        if !is_linked(&payload.link_id) {
            return Err(PhoneError::NotLinked);
        }
        {
            // A laptop makes a fresh nonce for every contact: the same one again is someone
            // replaying a request they saw. It could not finish the handshake without the
            // link secret, but it would still make the phone advertise and wait.
            let mut recent = self
                .recent_wakes
                .lock()
                .map_err(|_| PhoneError::Authenticator("the wake-up record is poisoned".into()))?;
            if recent.contains(&payload.client_nonce) {
                return Err(PhoneError::ReplayedWake);
            }
            if recent.len() == RECENT_WAKES {
                recent.pop_front();
            }
            recent.push_back(payload.client_nonce);
        }
        events.emit(PhoneProgress::Woken {
            request_type: payload.request_type,
        });
        let base = config.relay_url()?;
        advertiser.check_ready().await.map_err(PhoneError::Radio)?;
        let get_info = self
            .handler
            .try_lock()
            .map_err(|_| PhoneError::Authenticator("it is busy with an earlier request".into()))?
            .get_info();
        let linked = hybridge_proto::session::PhoneLinked::new(
            identity.link_secret(&payload.link_id),
            &payload,
        );
        let engine = PhoneEngine::linked(
            LinkedWake {
                linked,
                identity: identity.identity.clone(),
                tunnel: wake.tunnel_path(),
                advert: hybridge_proto::advert::AdvertPlaintext::linked(&mut OsRng),
            },
            get_info,
            keys::generate(&mut OsRng),
            config.timeouts,
            now(),
        );
        self.run(engine, None, &base, advertiser, events).await
    }

    /// Drives `engine` to its end, then stops advertising and closes the tunnel.
    async fn run(
        &self,
        mut engine: PhoneEngine,
        listener: Option<hybridge_ble::DataChannelListener>,
        base: &str,
        advertiser: &dyn Advertiser,
        events: &PhoneEvents,
    ) -> Result<PhoneOutcome, PhoneError> {
        let config = &self.config;
        let handler = &self.handler;
        let mut io = PhoneIo {
            link: None,
            listener,
            accepting: false,
            accepted: None,
            advertising: None,
            serving: None,
            cancel: None,
            cause: None,
        };
        let result = drive(
            &mut engine,
            &mut io,
            base,
            advertiser,
            handler,
            config,
            events,
        )
        .await;
        // Every path out stops advertising and closes the tunnel.
        if let Some(h) = io.advertising.take() {
            let _ = h.stop().await;
        }
        if let Some(link) = io.link.take() {
            link.close(config.timeouts.close).await;
        }
        if result.is_ok() {
            events.emit(PhoneProgress::Done);
        }
        result
    }
}

/// What the phone driver holds: the tunnel, the advert, the request being served.
struct PhoneIo {
    /// The relay's tunnel, or the data channel once the laptop came that way.
    link: Option<ws::Link>,
    /// Where a laptop may open the data channel, and whether the engine wants it accepted.
    listener: Option<hybridge_ble::DataChannelListener>,
    accepting: bool,
    /// The laptop's data channel, until the engine switches to it.
    accepted: Option<hybridge_ble::DataChannel>,
    advertising: Option<AdvertisingHandle>,
    serving: Option<tokio::task::JoinHandle<Result<Vec<u8>, PhoneError>>>,
    /// The token of the request being served.
    cancel: Option<Cancel>,
    /// Why the transport failed, for the error (the engine is only told that it did).
    cause: Option<ws::Cause>,
}

async fn drive<H>(
    engine: &mut PhoneEngine,
    io: &mut PhoneIo,
    base: &str,
    advertiser: &dyn Advertiser,
    handler: &Arc<Mutex<H>>,
    config: &PhoneConfig,
    events: &PhoneEvents,
) -> Result<PhoneOutcome, PhoneError>
where
    H: CtapHandler + ?Sized + 'static,
{
    loop {
        while let Some(output) = engine.poll_output() {
            let deadline = wake_at(engine.poll_timeout());
            match output {
                PhoneOutput::OpenTunnel(path) => {
                    events.emit(PhoneProgress::Connecting(base.to_owned()));
                    let url = path.to_url(base);
                    let connect = ws::connect(&url, config.tls.clone());
                    match tokio::time::timeout_at(deadline, connect).await {
                        Err(_) => engine.handle_timeout(now()),
                        Ok(Err(e)) => {
                            io.cause = Some(ws::Cause::Connect(e));
                            engine.handle(now(), PhoneInput::ConnectFailed)
                        }
                        Ok(Ok((socket, response))) => {
                            let values = response.headers().get_all(ROUTING_ID_HEADER);
                            let id = routing_id_from_headers(values.iter().map(|v| v.as_bytes()));
                            io.link = Some(ws::Link::Tunnel(Box::new(socket)));
                            if let Some(id) = &id {
                                tracing::debug!(routing_id = %id.to_hex(), "tunnel open");
                                events.emit(PhoneProgress::TunnelOpen);
                            }
                            engine.handle(now(), PhoneInput::TunnelOpened(id));
                        }
                    }
                }
                PhoneOutput::Advertise(data) => {
                    let handle = advertiser.advertise(UUID_FIDO, &data).await;
                    io.advertising = Some(handle.map_err(PhoneError::Radio)?);
                    events.emit(PhoneProgress::Advertising);
                }
                // Only after `PhoneEngine::with_data_channel`, which this driver does not call
                // yet (it has no L2CAP listener): nothing to accept, nothing to switch to.
                PhoneOutput::AcceptDataChannel => io.accepting = io.listener.is_some(),
                PhoneOutput::UseDataChannel => {
                    // The relay's part is over: close its tunnel, carry on over Bluetooth.
                    if let Some(tunnel) = io.link.take() {
                        tunnel.close(config.timeouts.close).await;
                    }
                    io.link = io.accepted.take().map(ws::Link::DataChannel);
                    events.emit(PhoneProgress::DataChannel);
                }
                PhoneOutput::StopAdvertising => {
                    if let Some(h) = io.advertising.take() {
                        let _ = h.stop().await;
                    }
                    io.listener = None;
                    io.accepting = false;
                    tracing::debug!("the laptop's handshake message arrived");
                    events.emit(PhoneProgress::LaptopConnected);
                }
                PhoneOutput::Send(m) => {
                    if let Some(link) = io.link.as_mut() {
                        match link.send_by(m, deadline).await {
                            None => engine.handle_timeout(now()),
                            Some(Err(e)) => {
                                io.cause = Some(ws::Cause::Tunnel(e));
                                engine.handle(now(), PhoneInput::TransportFailed)
                            }
                            Some(Ok(())) => {}
                        }
                    }
                }
                PhoneOutput::HandshakeDone => {
                    tracing::debug!("handshake done, getInfo sent");
                    events.emit(PhoneProgress::HandshakeDone);
                }
                PhoneOutput::Serve(request) => {
                    let command = request.first().copied().unwrap_or(0);
                    tracing::debug!(command, len = request.len(), "request from the laptop");
                    events.emit(PhoneProgress::Request { command });
                    let cancel = Cancel::new();
                    io.serving = Some(serve_request(handler, request, cancel.clone())?);
                    io.cancel = Some(cancel);
                }
                PhoneOutput::Cancel => {
                    // The prompt cannot be interrupted; the token makes a late approval write
                    // nothing the relying party will never see.
                    if let Some(c) = &io.cancel {
                        c.cancel();
                    }
                }
                PhoneOutput::Responded(status) => {
                    tracing::debug!(status, "response sent");
                    events.emit(PhoneProgress::Responded { status });
                }
                PhoneOutput::LinkSent(id) => {
                    if let Ok(link_id) = <[u8; 8]>::try_from(id.as_slice()) {
                        tracing::debug!("linking data sent");
                        events.emit(PhoneProgress::Linked { link_id });
                    }
                }
                PhoneOutput::CloseTunnel => {
                    if let Some(link) = io.link.take() {
                        link.close(config.timeouts.close).await;
                    }
                }
                PhoneOutput::Finished(result) => {
                    return result.map_err(|f| PhoneError::from_failure(f, base, io.cause.take()));
                }
            }
        }
        let deadline = wake_at(engine.poll_timeout());
        let link = io.link.as_mut();
        let listener = io.listener.as_mut().filter(|_| io.accepting);
        tokio::select! {
            // A finished answer wins over a deadline or a laptop message that became ready in
            // the same poll: its credential may already be written.
            biased;
            r = async { io.serving.as_mut().expect("guarded").await }, if io.serving.is_some() => {
                io.serving = None;
                let answer = r.map_err(|e| PhoneError::Authenticator(e.to_string()))??;
                engine.handle(now(), PhoneInput::Answer(answer));
            }
            _ = tokio::time::sleep_until(deadline) => engine.handle_timeout(now()),
            accepted = accept(listener) => match accepted {
                Ok(channel) => {
                    tracing::debug!("the laptop opened the data channel");
                    io.accepted = Some(channel);
                    io.accepting = false;
                    engine.handle(now(), PhoneInput::DataChannelOpened);
                }
                Err(e) => {
                    // The relay's tunnel still serves the laptop.
                    tracing::debug!(error = %e, "the data channel listener failed");
                    io.listener = None;
                    io.accepting = false;
                }
            },
            arrival = ws::arrival(link) => {
                let (event, cause) = arrival.split();
                if cause.is_some() {
                    io.cause = cause;
                }
                engine.handle(now(), event.into())
            }
        }
    }
}

/// The next laptop on the data channel; never, without a listener.
async fn accept(
    listener: Option<&mut hybridge_ble::DataChannelListener>,
) -> Result<hybridge_ble::DataChannel, hybridge_ble::Error> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Starts the authenticator on `request` on a blocking thread (its user agent may prompt),
/// with this request's own cancel token. The lock is only tried here: a handler still busy
/// with an abandoned prompt must not block the async task.
fn serve_request<H>(
    handler: &Arc<Mutex<H>>,
    request: Vec<u8>,
    cancel: Cancel,
) -> Result<tokio::task::JoinHandle<Result<Vec<u8>, PhoneError>>, PhoneError>
where
    H: CtapHandler + ?Sized + 'static,
{
    match handler.try_lock() {
        Ok(_) => {}
        Err(std::sync::TryLockError::WouldBlock) => {
            return Err(PhoneError::Authenticator(
                "it is still busy with an earlier request".into(),
            ));
        }
        Err(std::sync::TryLockError::Poisoned(_)) => {
            return Err(PhoneError::Authenticator("its lock is poisoned".into()));
        }
    }
    let h = handler.clone();
    Ok(tokio::task::spawn_blocking(move || match h.lock() {
        Ok(mut h) => Ok(h.handle(&request, &cancel)),
        Err(_) => Err(PhoneError::Authenticator("its lock is poisoned".into())),
    }))
}

#[cfg(test)]
mod tests {
    use super::PhoneProgress;

    #[test]
    fn progress_names_known_commands_and_statuses() {
        let line = |p: PhoneProgress| p.to_string();
        assert_eq!(
            line(PhoneProgress::Request { command: 0x02 }),
            "getAssertion request (0x02) from the laptop"
        );
        assert_eq!(
            line(PhoneProgress::Request { command: 0x42 }),
            "request 0x42 from the laptop"
        );
        assert_eq!(
            line(PhoneProgress::Responded { status: 0x27 }),
            "answered with status 0x27 (CTAP2_ERR_OPERATION_DENIED)"
        );
        assert_eq!(
            line(PhoneProgress::Responded { status: 0xf3 }),
            "answered with status 0xf3"
        );
    }
}
