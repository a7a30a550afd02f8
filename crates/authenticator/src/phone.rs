//! The phone side of a hybrid session: read the laptop's QR code, open a tunnel on the
//! phone's relay, advertise over BLE until the laptop joins, answer the Noise handshake, send
//! the post-handshake message, serve one CTAP request with the authenticator, close.
//!
//! Every protocol decision is made by [`hybridge_proto::session::PhoneQr`] /
//! [`PhoneChannel`]; this module waits, with a timeout on every step, stops advertising on
//! every path out, and reports progress as [`PhoneProgress`] events.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo(qr_text: String) -> Result<(), hybridge_authenticator::phone::PhoneError> {
//! use std::sync::{Arc, Mutex};
//! use hybridge_authenticator::authenticator::{Authenticator, SystemClock};
//! use hybridge_authenticator::phone::{self, PhoneConfig, PhoneEvents, QrInput};
//! use hybridge_authenticator::store::MemoryStore;
//! use hybridge_authenticator::user::AutoApprove;
//! use hybridge_ble::RadioSpec;
//!
//! let authenticator = Arc::new(Mutex::new(Authenticator::new(
//!     MemoryStore::new(), AutoApprove, SystemClock, rand_core::OsRng,
//! )));
//! let radio: RadioSpec = "udp:127.0.0.1:47000".parse().map_err(phone::PhoneError::Radio)?;
//! let advertiser = radio.advertiser().await.map_err(phone::PhoneError::Radio)?;
//! let config = PhoneConfig {
//!     relay: Some("ws://127.0.0.1:8080".into()), // a local relay; default: domain 0's host
//!     ..PhoneConfig::default()
//! };
//! let (events, mut progress) = PhoneEvents::channel(32);
//! tokio::spawn(async move {
//!     while let Some(p) = progress.recv().await {
//!         eprintln!("{p}");
//!     }
//! });
//! let outcome =
//!     phone::serve(&QrInput::Text(qr_text), &*advertiser, authenticator, &config, &events).await?;
//! eprintln!("answered command {:#04x} with status {:#04x}", outcome.command, outcome.status);
//! # Ok(()) }
//! ```

use hybridge_tunnel as ws;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybridge_ble::{Advertiser, AdvertisingHandle, UUID_FIDO};
use hybridge_proto::advert::AdvertPlaintext;
use hybridge_proto::frame::{PostHandshake, ProtocolRevision};
use hybridge_proto::qr::RequestType;
use hybridge_proto::session::{PhoneChannel, PhoneEvent, PhoneQr};
use hybridge_proto::tunnel::{ROUTING_ID_HEADER, base_url, routing_id_from_headers};
use hybridge_proto::{domain, keys};
use rand_core::OsRng;
use tokio::time::timeout;

use hybridge_ctap::StatusCode;

use crate::authenticator::Authenticator;
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
    /// Answers `command ‖ CBOR` with `status ‖ CBOR`.
    fn handle(&mut self, request: &[u8]) -> Vec<u8>;
    /// A flag the session raises when it gives up on the request being handled (user timeout,
    /// the laptop left), so that a late approval writes nothing; the session lowers it before
    /// it hands over a request. `None`: the handler cannot be cancelled.
    fn cancel_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        None
    }
}

impl<S: CredentialStore, U: UserAgent> CtapHandler for Authenticator<S, U> {
    fn get_info(&self) -> Vec<u8> {
        Authenticator::get_info(self).to_cbor()
    }

    fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        Authenticator::handle(self, request)
    }

    fn cancel_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        Some(Authenticator::cancel_flag(self))
    }
}

/// The laptop's QR code, as text or as a photo. (`Debug` is redacted: the text carries the
/// QR secret.)
#[derive(Clone)]
pub enum QrInput {
    /// The `FIDO:/…` text.
    Text(String),
    /// A PNG or JPEG image of the QR code.
    Image(Vec<u8>),
}

impl std::fmt::Debug for QrInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QrInput::Text(t) => write!(f, "QrInput::Text({} characters)", t.len()),
            QrInput::Image(b) => write!(f, "QrInput::Image({} bytes)", b.len()),
        }
    }
}

impl QrInput {
    /// The `FIDO:/` text.
    pub fn text(&self) -> Result<String, PhoneError> {
        match self {
            QrInput::Text(t) => Ok(t.trim().to_owned()),
            QrInput::Image(bytes) => decode_qr_image(bytes).map_err(PhoneError::QrImage),
        }
    }

    /// The QR code read (an image is decoded) and parsed: what [`serve_qr`] answers. Parse it
    /// once, to refuse a bad QR code early and then answer it.
    pub fn parse(&self) -> Result<PhoneQr, PhoneError> {
        PhoneQr::from_qr_url(&self.text()?).map_err(PhoneError::InvalidQr)
    }
}

/// Timeouts of the phone's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhoneTimeouts {
    /// Opening the tunnel WebSocket (default 10 s).
    pub connect: Duration,
    /// Advertising until the laptop's first handshake message arrives (default 60 s).
    pub laptop: Duration,
    /// From the handshake to the laptop's request (default 60 s).
    pub request: Duration,
    /// Serving the request, while the user decides (default 60 s, as Chrome on Android).
    pub user: Duration,
    /// After the response, waiting for the laptop's shutdown (default 5 s).
    pub close: Duration,
}

impl Default for PhoneTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            laptop: Duration::from_secs(60),
            // Chromium's phone waits 60 s (kTimeoutSeconds, brief §9): a desktop may show its
            // own UI before it sends the request.
            request: Duration::from_secs(60),
            user: Duration::from_secs(60),
            close: Duration::from_secs(5),
        }
    }
}

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
            PhoneProgress::Advertising => {
                f.write_str("advertising over Bluetooth, waiting for the laptop")
            }
            PhoneProgress::LaptopConnected => f.write_str("the laptop connected"),
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
            PhoneProgress::Done => f.write_str("done"),
        }
    }
}

/// Where phone events go: a bounded channel ([`PhoneEvents::channel`]) or nowhere
/// ([`PhoneEvents::none`]); never blocks the protocol.
pub type PhoneEvents = ws::Events<PhoneProgress>;

/// A step of the phone session, as named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneStep {
    /// Opening the tunnel.
    Connecting,
    /// Advertising, waiting for the laptop's first message.
    WaitingForLaptop,
    /// The Noise handshake and post-handshake message.
    Handshake,
    /// Waiting for the laptop's request.
    WaitingForRequest,
    /// The authenticator is serving the request.
    Processing,
    /// Sending the response and closing.
    Closing,
}

impl fmt::Display for PhoneStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PhoneStep::Connecting => "opening the tunnel",
            PhoneStep::WaitingForLaptop => "advertising and waiting for the laptop",
            PhoneStep::Handshake => "doing the handshake with the laptop",
            PhoneStep::WaitingForRequest => "waiting for the laptop's request",
            PhoneStep::Processing => "waiting for the user to answer",
            PhoneStep::Closing => "sending the response",
        })
    }
}

/// Everything that can go wrong on the phone side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The QR text is not a valid hybrid QR code.
    #[error("not a valid hybrid QR code: {0}")]
    InvalidQr(#[source] hybridge_proto::Error),
    /// No QR code could be read from the image.
    #[error(transparent)]
    QrImage(QrImageError),
    /// No relay given and the domain ID has no hostname.
    #[error("tunnel-server domain {0} has no known hostname: give the relay URL")]
    UnknownDomain(u16),
    /// The relay could not be reached or refused the tunnel.
    #[error("cannot open the tunnel at {url}: {reason}")]
    RelayUnreachable {
        /// Relay base URL.
        url: String,
        /// Why.
        reason: String,
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
    /// (brief §9), and so does this one.
    #[error(
        "the laptop sent authenticatorSelection (CTAP 0x0B), which a hybrid phone does not \
         serve (scanning the QR code already chose it); the session was ended"
    )]
    AuthenticatorSelection,
    /// A WebSocket failure on the open tunnel.
    #[error("the tunnel failed while {step}: {reason}")]
    Tunnel {
        /// The step.
        step: PhoneStep,
        /// Why.
        reason: String,
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
}

/// How the session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhoneOutcome {
    /// The CTAP command served.
    pub command: u8,
    /// The CTAP status sent back (`0x00` on success).
    pub status: u8,
}

/// Runs the phone side of one QR-initiated session: see the [module docs](self).
///
/// `handler` is locked only while it builds getInfo and while it serves the request (on a
/// blocking thread, since its user agent may prompt).
pub async fn serve<H>(
    qr: &QrInput,
    advertiser: &dyn Advertiser,
    handler: Arc<Mutex<H>>,
    config: &PhoneConfig,
    events: &PhoneEvents,
) -> Result<PhoneOutcome, PhoneError>
where
    H: CtapHandler + ?Sized + 'static,
{
    serve_qr(qr.parse()?, advertiser, handler, config, events).await
}

/// [`serve`] for a QR code already parsed ([`QrInput::parse`]), e.g. one checked before the
/// user was asked for anything.
pub async fn serve_qr<H>(
    mut session: PhoneQr,
    advertiser: &dyn Advertiser,
    handler: Arc<Mutex<H>>,
    config: &PhoneConfig,
    events: &PhoneEvents,
) -> Result<PhoneOutcome, PhoneError>
where
    H: CtapHandler + ?Sized + 'static,
{
    let t = config.timeouts;
    events.emit(PhoneProgress::QrRead {
        request_type: session.qr_payload().request_type,
    });

    let base = config.relay_url()?;
    let url = session.new_tunnel_path().to_url(&base);
    tracing::debug!(relay = %base, tunnel = %session.tunnel_id().log_tag(), "opening tunnel");
    events.emit(PhoneProgress::Connecting(base.clone()));
    let (mut socket, response) = within(PhoneStep::Connecting, t.connect, async {
        ws::connect(&url, config.tls.clone())
            .await
            .map_err(|e| PhoneError::RelayUnreachable {
                url: base.clone(),
                reason: e.to_string(),
            })
    })
    .await?;
    let values = response.headers().get_all(ROUTING_ID_HEADER);
    let Some(routing_id) = routing_id_from_headers(values.iter().map(|v| v.as_bytes())) else {
        ws::close(&mut socket, t.close).await;
        return Err(PhoneError::NoRoutingId { url: base });
    };
    tracing::debug!(routing_id = %routing_id.to_hex(), "tunnel open");
    events.emit(PhoneProgress::TunnelOpen);

    let service_data = session.service_data(
        AdvertPlaintext::new(&mut OsRng, routing_id, config.domain_id),
        None,
    );
    let mut advertising = match advertiser.advertise(UUID_FIDO, &service_data).await {
        Ok(h) => Some(h),
        Err(e) => {
            ws::close(&mut socket, t.close).await;
            return Err(PhoneError::Radio(e));
        }
    };
    events.emit(PhoneProgress::Advertising);

    let result = run(session, &mut socket, &mut advertising, handler, t, events).await;
    // Every path out stops advertising and closes the tunnel.
    if let Some(h) = advertising.take() {
        let _ = h.stop().await;
    }
    ws::close(&mut socket, t.close).await;
    if result.is_ok() {
        events.emit(PhoneProgress::Done);
    }
    result
}

async fn recv(socket: &mut ws::Ws, step: PhoneStep) -> Result<Option<Vec<u8>>, PhoneError> {
    ws::recv(socket)
        .await
        .map_err(|reason| PhoneError::Tunnel { step, reason })
}

async fn send(socket: &mut ws::Ws, step: PhoneStep, m: Vec<u8>) -> Result<(), PhoneError> {
    ws::send(socket, m)
        .await
        .map_err(|reason| PhoneError::Tunnel { step, reason })
}

async fn run<H>(
    session: PhoneQr,
    socket: &mut ws::Ws,
    advertising: &mut Option<AdvertisingHandle>,
    handler: Arc<Mutex<H>>,
    t: PhoneTimeouts,
    events: &PhoneEvents,
) -> Result<PhoneOutcome, PhoneError>
where
    H: CtapHandler + ?Sized + 'static,
{
    // 1. Advertise until the laptop's Noise message 1 arrives.
    let step = PhoneStep::WaitingForLaptop;
    let msg1 = within(step, t.laptop, recv(socket, step))
        .await?
        .ok_or(PhoneError::TunnelClosed(step))?;
    if let Some(h) = advertising.take() {
        let _ = h.stop().await;
    }
    tracing::debug!("the laptop's handshake message arrived");
    events.emit(PhoneProgress::LaptopConnected);

    // 2. Handshake, post-handshake message (getInfo), and the padded update (revision 1).
    let step = PhoneStep::Handshake;
    let ephemeral = keys::generate(&mut OsRng);
    let (mut channel, msg2) = session
        .respond(&msg1, &ephemeral)
        .map_err(PhoneError::Handshake)?;
    // try_lock: never block the async task on a handler still busy with an abandoned prompt.
    let get_info = handler
        .try_lock()
        .map_err(|_| PhoneError::Authenticator("it is busy with an earlier request".into()))?
        .get_info();
    let post = channel
        .post_handshake(&PostHandshake::ctap(get_info))
        .map_err(|source| PhoneError::Protocol { step, source })?;
    let update = match channel.revision() {
        ProtocolRevision::V1 => Some(
            channel
                .update(None)
                .map_err(|source| PhoneError::Protocol { step, source })?,
        ),
        ProtocolRevision::V0 => None,
    };
    within(step, t.request, async {
        send(socket, step, msg2.to_vec()).await?;
        send(socket, step, post).await?;
        if let Some(u) = update {
            send(socket, step, u).await?;
        }
        Ok(())
    })
    .await?;
    tracing::debug!(revision = ?channel.revision(), "handshake done, getInfo sent");
    events.emit(PhoneProgress::HandshakeDone);

    // 3. The request.
    let step = PhoneStep::WaitingForRequest;
    let request = within(step, t.request, async {
        loop {
            let m = recv(socket, step).await?.ok_or(PhoneError::UnexpectedEof)?;
            match on_message(&mut channel, &m, step)? {
                PhoneEvent::CtapRequest(r) => return Ok(r),
                PhoneEvent::JsonRequest(_) => {
                    return Err(PhoneError::Unsupported(
                        "digital-credential (JSON) requests are not supported",
                    ));
                }
                PhoneEvent::Update => {
                    tracing::debug!("ignored an update message from the laptop");
                    continue;
                }
                PhoneEvent::Shutdown => return Err(PhoneError::UnexpectedEof),
                PhoneEvent::SelectionRefused => return Err(PhoneError::AuthenticatorSelection),
                PhoneEvent::Answered(reply) => {
                    tracing::debug!("answered a getInfo sent over the tunnel");
                    send(socket, step, reply).await?;
                    continue;
                }
            }
        }
    })
    .await?;
    let command = request.first().copied().unwrap_or(0);
    tracing::debug!(command, len = request.len(), "request from the laptop");
    events.emit(PhoneProgress::Request { command });

    // 4. The authenticator answers on a blocking thread (its user agent may prompt). The lock
    // is only tried here: a handler still busy with an abandoned prompt must not block this
    // async task.
    let cancel = match handler.try_lock() {
        Ok(h) => h.cancel_flag(),
        Err(std::sync::TryLockError::WouldBlock) => {
            return Err(PhoneError::Authenticator(
                "it is still busy with an earlier request".into(),
            ));
        }
        Err(std::sync::TryLockError::Poisoned(_)) => {
            return Err(PhoneError::Authenticator("its lock is poisoned".into()));
        }
    };
    // A fresh request starts uncancelled. (The flag is not lowered by the handler when it
    // starts, so that giving up before the blocking thread gets going still counts.)
    if let Some(c) = &cancel {
        c.store(false, Ordering::SeqCst);
    }
    // The prompt cannot be interrupted; giving up raises the flag so that a late approval
    // writes nothing the relying party will never see.
    let give_up = || {
        if let Some(c) = &cancel {
            c.store(true, Ordering::SeqCst);
        }
    };
    let h = handler.clone();
    let mut task = tokio::task::spawn_blocking(move || match h.lock() {
        Ok(mut h) => Ok(h.handle(&request)),
        Err(_) => Err(PhoneError::Authenticator("its lock is poisoned".into())),
    });
    // While the user decides, keep reading the tunnel: the laptop may leave (Chromium's
    // phone treats EOF while processing as the end of the transaction).
    let deadline = ws::deadline(tokio::time::Instant::now(), t.user);
    let (response, timed_out) = loop {
        tokio::select! {
            // A finished answer wins over a deadline or a laptop message that became ready
            // in the same poll: its credential may already be written, so reporting a
            // timeout instead would lose it.
            biased;
            r = &mut task => match r {
                Ok(r) => break (r?, false),
                Err(e) => return Err(PhoneError::Authenticator(e.to_string())),
            },
            // Tell the laptop the user did not answer.
            _ = tokio::time::sleep_until(deadline) => {
                give_up();
                // What the laptop gets when the user does not answer in time.
                break (vec![StatusCode::CTAP2_ERR_USER_ACTION_TIMEOUT.0], true);
            }
            m = recv(socket, PhoneStep::Processing) => {
                if let Err(e) = while_processing(&mut channel, m) {
                    give_up();
                    return Err(e);
                }
            }
        }
    };
    let status = response
        .first()
        .copied()
        .unwrap_or(StatusCode::CTAP1_ERR_OTHER.0);

    // 5. Respond, then wait (briefly) for the laptop's shutdown.
    let step = PhoneStep::Closing;
    let ct = channel
        .send_ctap(&response)
        .map_err(|source| PhoneError::Protocol { step, source })?;
    within(step, t.close, send(socket, step, ct)).await?;
    tracing::debug!(status, len = response.len(), "response sent");
    events.emit(PhoneProgress::Responded { status });
    if timed_out {
        return Err(PhoneError::Timeout {
            step: PhoneStep::Processing,
            after: t.user,
        });
    }
    let _ = timeout(t.close, async {
        while let Ok(Some(m)) = recv(socket, step).await {
            match channel.on_message(&m) {
                Ok(PhoneEvent::Shutdown) | Err(_) => break,
                Ok(PhoneEvent::Answered(reply)) => {
                    if send(socket, step, reply).await.is_err() {
                        break;
                    }
                }
                Ok(_) => continue,
            }
        }
    })
    .await;
    Ok(PhoneOutcome { command, status })
}

/// `f`, unless `limit` runs out first: then [`PhoneError::Timeout`] naming `step` and
/// `limit`. The session's network waits go through this.
async fn within<T>(
    step: PhoneStep,
    limit: Duration,
    f: impl Future<Output = Result<T, PhoneError>>,
) -> Result<T, PhoneError> {
    timeout(limit, f)
        .await
        .unwrap_or(Err(PhoneError::Timeout { step, after: limit }))
}

/// A message (or the end of the tunnel) from the laptop while the user decides. `Ok`: keep
/// waiting for the user; `Err`: give up on the request.
fn while_processing(
    channel: &mut PhoneChannel,
    m: Result<Option<Vec<u8>>, PhoneError>,
) -> Result<(), PhoneError> {
    let step = PhoneStep::Processing;
    let Some(m) = m? else {
        return Err(PhoneError::EofWhileProcessing);
    };
    match on_message(channel, &m, step)? {
        // Updates from a laptop carry nothing for the phone: Chromium's phone checks that
        // they are CBOR and ignores them (brief §8.4), pending request or not. (One that is
        // not CBOR at all fails in `on_message`, and ends the session as in Chromium.)
        PhoneEvent::Update => {
            tracing::debug!("ignored an update message from the laptop while the user decides");
            Ok(())
        }
        PhoneEvent::Shutdown => Err(PhoneError::EofWhileProcessing),
        // The channel refuses a second request while one is pending; not reached.
        PhoneEvent::CtapRequest(_)
        | PhoneEvent::JsonRequest(_)
        | PhoneEvent::Answered(_)
        | PhoneEvent::SelectionRefused => Err(PhoneError::Protocol {
            step,
            source: hybridge_proto::Error::State("a request is already being processed"),
        }),
    }
}

fn on_message(
    channel: &mut PhoneChannel,
    m: &[u8],
    step: PhoneStep,
) -> Result<PhoneEvent, PhoneError> {
    channel
        .on_message(m)
        .map_err(|source| PhoneError::Protocol { step, source })
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
