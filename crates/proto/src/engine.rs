//! Session engines: one object per side for the life of a ceremony, after the QR code, with
//! no I/O (the shape of quinn-proto's `Connection`).
//!
//! An engine is fed what happened and asked what to do:
//! - `handle(now, input)`: the tunnel opened, bytes arrived, the peer closed, the user or the
//!   application answered;
//! - `handle_timeout(now)`: the time [`poll_timeout`](PhoneEngine::poll_timeout) asked for
//!   has come;
//! - `poll_output()`: the next thing to do — advertise, send these bytes, serve this request,
//!   close the tunnel, finished with a result.
//!
//! It owns every rule of a session and every timer; the transport under it (a relay tunnel
//! today, a BLE L2CAP channel tomorrow) is the driver's business, and so is the clock: `now`
//! is whatever monotonic time the driver uses. A driver is one loop: wait for the earliest of
//! the socket, the user and [`poll_timeout`](PhoneEngine::poll_timeout); feed the engine;
//! carry out its outputs in order. Because nothing here waits, every timeout and every early
//! end can be tested deterministically, with two engines wired back to back and a simulated
//! clock (see this module's tests).
//!
//! | laptop ([`LaptopEngine`]) | | phone ([`PhoneEngine`]) |
//! |---|---|---|
//! | [`LaptopOutput::StartScan`] | | [`PhoneOutput::OpenTunnel`] → [`PhoneInput::TunnelOpened`] |
//! | [`LaptopInput::Advert`] | ← advert ← | [`PhoneOutput::Advertise`] |
//! | [`LaptopOutput::Connect`] → [`LaptopInput::Connected`] | | |
//! | [`LaptopOutput::Send`] (Noise 1) | → | [`PhoneInput::Received`], [`PhoneOutput::StopAdvertising`] |
//! | [`LaptopInput::Received`] | ← | Noise 2, post-handshake, update |
//! | [`LaptopOutput::Ready`]; [`LaptopInput::Request`] | → request → | [`PhoneOutput::Serve`] |
//! | [`LaptopOutput::Response`] | ← response ← | [`PhoneInput::Answer`] |
//! | [`LaptopInput::Close`] → shutdown | → | [`PhoneOutput::Finished`] |
//!
//! A linked session ([`LaptopEngine::linked`], [`PhoneEngine::linked`]) starts the other way
//! round: the laptop's [`LaptopOutput::Contact`] asks the tunnel server to wake the phone and
//! opens its end of the tunnel; the woken phone joins it and advertises with the link's key;
//! the laptop scans only then, and the handshake is NKpsk0 against the phone's identity key.
//! From the handshake on both flows are the same. A phone given a [`LinkingOffer`] sends its
//! link in a QR session to a laptop whose QR code says it can store one.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use p256::SecretKey;

use crate::advert::AdvertPlaintext;
use crate::frame::{self, PostHandshake, ProtocolRevision};
use crate::linking::LinkingInfo;
use crate::session::{
    Connect, ContactRequest, LaptopChannel, LaptopEvent, LaptopLinked, LaptopQr, PhoneChannel,
    PhoneEvent, PhoneLinked, PhoneQr,
};
use crate::tunnel::{RoutingId, TunnelPath};

/// `CTAP2_ERR_USER_ACTION_TIMEOUT`: what the phone answers when its user did not decide in
/// time (CTAP 2.2 §8.2; Chrome on Android does the same).
pub const STATUS_USER_ACTION_TIMEOUT: u8 = 0x2f;

/// A step of a session, as named in errors and timeouts, on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Laptop: listening for the phone's advert.
    Scanning,
    /// Opening the tunnel (the WebSocket to the tunnel server).
    Connecting,
    /// Phone: advertising, waiting for the laptop's first handshake message.
    WaitingForLaptop,
    /// The Noise handshake.
    Handshake,
    /// Laptop: waiting for the phone's post-handshake message (its getInfo).
    PostHandshake,
    /// Phone: waiting for the laptop's request.
    WaitingForRequest,
    /// Laptop: the request was sent and the person holding the phone decides.
    WaitingForUser,
    /// Phone: the authenticator serves the request while its user decides.
    Processing,
    /// Sending the last messages and closing the tunnel.
    Closing,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Scanning => "scanning for the phone",
            Step::Connecting => "connecting to the tunnel server",
            Step::WaitingForLaptop => "advertising and waiting for the laptop",
            Step::Handshake => "doing the handshake",
            Step::PostHandshake => "waiting for the phone's first message",
            Step::WaitingForRequest => "waiting for the laptop's request",
            Step::WaitingForUser => "waiting for the user to answer on the phone",
            Step::Processing => "waiting for the user to answer",
            Step::Closing => "closing the tunnel",
        })
    }
}

/// Why a session ended without its result. Both sides share the set; each names only the
/// variants that can happen to it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// Laptop: no advert for this QR code was heard in time. The relay was never contacted.
    #[error("no advert from the phone within {}s", .0.as_secs())]
    ProximityTimeout(Duration),
    /// Laptop: an advert made with this session's key was unusable (an unknown domain, for
    /// example), and no usable one followed.
    #[error("the phone's advert was unusable: {0}")]
    BadAdvert(crate::Error),
    /// The tunnel could not be opened (the driver holds the transport's reason).
    #[error("cannot open the tunnel")]
    ConnectFailed,
    /// Phone: the tunnel server's answer carried no valid routing ID.
    #[error("the tunnel server sent no valid routing ID")]
    NoRoutingId,
    /// A step did not finish in time.
    #[error("timed out after {}s while {step}", .after.as_secs_f32())]
    Timeout {
        /// The step.
        step: Step,
        /// Its limit.
        after: Duration,
    },
    /// The tunnel closed before the session was over.
    #[error("the tunnel closed while {0}")]
    TunnelClosed(Step),
    /// The transport failed under an open tunnel (the driver holds the transport's reason).
    #[error("the tunnel failed while {step}")]
    Transport {
        /// The step.
        step: Step,
    },
    /// The Noise handshake failed: the peer does not hold this session's keys.
    #[error("the handshake failed: {0}")]
    Handshake(crate::Error),
    /// A message failed to decrypt or parse; the session was aborted.
    #[error("a message was rejected while {step}: {source}")]
    Protocol {
        /// The step.
        step: Step,
        /// Why.
        source: crate::Error,
    },
    /// Laptop: the phone does not offer CTAP over this tunnel.
    #[error("the phone does not offer CTAP over hybrid")]
    NoCtap,
    /// Laptop: the phone's getInfo (key 1 of its first message) is missing or does not parse.
    #[error("the phone's getInfo response is missing or invalid: {0}")]
    InvalidGetInfo(String),
    /// Phone: the laptop ended the session before sending a request (Chromium's
    /// `UNEXPECTED_EOF`).
    #[error("the laptop ended the session before sending a request")]
    UnexpectedEof,
    /// Phone: the laptop closed the tunnel, or sent its shutdown, while the user decided
    /// (Chromium's `EOF_WHILE_PROCESSING`); the request was cancelled.
    #[error("the laptop ended the session while the user was deciding")]
    EofWhileProcessing,
    /// Phone: the laptop sent authenticatorSelection (0x0B), which a phone reached through a
    /// QR code does not serve (Chrome's phone ends the session without an answer too).
    #[error("the laptop sent authenticatorSelection (CTAP 0x0B)")]
    AuthenticatorSelection,
    /// Phone: a request this phone does not serve.
    #[error("unsupported request: {0}")]
    Unsupported(&'static str),
}

fn deadline(now: Instant, limit: Duration) -> Instant {
    // Duration::MAX means "no limit": a deadline decades away instead of an overflow.
    const FAR: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);
    now.checked_add(limit)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

// ---------------------------------------------------------------------------------------------
// Laptop

/// Limits of the laptop's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaptopTimeouts {
    /// From showing the QR code to hearing the phone's advert (default 60 s).
    pub scan: Duration,
    /// Opening the tunnel WebSocket, TCP and TLS included (default 10 s).
    pub connect: Duration,
    /// Opening the CTAP 2.3 data channel (BLE L2CAP) to the phone before falling back to the
    /// tunnel (default 5 s).
    pub data_channel: Duration,
    /// Noise handshake and the phone's post-handshake message, together (default 10 s).
    pub handshake: Duration,
    /// From sending the request to the phone's answer, while the user decides (default
    /// 120 s).
    pub user: Duration,
    /// Sending the shutdown and closing the tunnel (default 2 s).
    pub close: Duration,
    /// After the shutdown, how long a QR session whose code offered linking (key 4) keeps
    /// reading for linking data a phone sends late, when none came before (default 3
    /// minutes, as Chromium; zero closes at once). Ends early when the link arrives or the
    /// phone closes.
    pub late_linking: Duration,
}

impl Default for LaptopTimeouts {
    fn default() -> Self {
        Self {
            scan: Duration::from_secs(60),
            connect: Duration::from_secs(10),
            data_channel: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            user: Duration::from_secs(120),
            close: Duration::from_secs(2),
            late_linking: Duration::from_secs(180),
        }
    }
}

/// What the link to the peer (the relay's tunnel or the data channel) did: the part of both
/// engines' inputs a driver reads off its link, whichever side it drives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// One message from the peer.
    Received(Vec<u8>),
    /// The peer (or the relay) closed the link.
    Closed,
    /// The link failed (the driver keeps the reason).
    Failed,
}

impl From<LinkEvent> for LaptopInput {
    fn from(event: LinkEvent) -> Self {
        match event {
            LinkEvent::Received(m) => LaptopInput::Received(m),
            LinkEvent::Closed => LaptopInput::Closed,
            LinkEvent::Failed => LaptopInput::TransportFailed,
        }
    }
}

impl From<LinkEvent> for PhoneInput {
    fn from(event: LinkEvent) -> Self {
        match event {
            LinkEvent::Received(m) => PhoneInput::Received(m),
            LinkEvent::Closed => PhoneInput::Closed,
            LinkEvent::Failed => PhoneInput::TransportFailed,
        }
    }
}

/// What happened, for the laptop engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaptopInput {
    /// One received advertisement's service data (anyone's: the engine keeps its own).
    Advert(Vec<u8>),
    /// The tunnel asked for with [`LaptopOutput::Connect`], or the data channel asked for with
    /// [`LaptopOutput::OpenDataChannel`], is open.
    Connected,
    /// It could not be opened (why is the driver's business: the engine only decides what
    /// it means for the session).
    ConnectFailed,
    /// One message from the phone.
    Received(Vec<u8>),
    /// The phone (or the relay) closed the tunnel.
    Closed,
    /// The transport failed under the open tunnel (the driver keeps the reason).
    TransportFailed,
    /// The application's CTAP request `command ‖ CBOR`, once [`LaptopOutput::Ready`] came.
    Request(Vec<u8>),
    /// The application is done: send the shutdown and close.
    Close,
}

/// What the laptop driver does next.
#[derive(Clone, Debug, PartialEq)]
pub enum LaptopOutput {
    /// Listen for adverts and feed them in as [`LaptopInput::Advert`].
    StartScan,
    /// Stop listening.
    StopScan,
    /// Our advert arrived: open the tunnel it names, then [`LaptopInput::Connected`].
    Connect(Connect),
    /// A linked session starts here: ask the tunnel server to wake the phone
    /// (`/cable/contact`), then [`LaptopInput::Connected`] once the server accepted; the
    /// phone's advert is awaited after that, over the open tunnel.
    Contact(ContactRequest),
    /// Our advert arrived with a CTAP 2.3 suffix naming this L2CAP PSM, and the QR code
    /// offered the data channel: open an LE connection-oriented channel to the advert's
    /// sender on it, then [`LaptopInput::Connected`]; [`LaptopInput::ConnectFailed`] (or the
    /// timer) falls back to the tunnel. Everything after runs over that channel and the relay
    /// is never contacted.
    OpenDataChannel {
        /// The phone's L2CAP PSM.
        psm: u16,
    },
    /// Send these bytes to the phone.
    Send(Vec<u8>),
    /// The handshake succeeded.
    HandshakeDone,
    /// The phone's first message arrived and is usable: requests may be made. Carries the
    /// phone's getInfo (CBOR, no status byte).
    Ready(Vec<u8>),
    /// The request was sent; the user decides on the phone.
    WaitingForUser,
    /// The phone's answer to the request (`status ‖ CBOR`).
    Response(Vec<u8>),
    /// Close the connection to the phone, tunnel or data channel (after any `Send` before it).
    CloseTunnel,
    /// The shutdown went out, but the QR code offered linking and no linking data came yet:
    /// the tunnel stays open, for at most this long, for a phone that sends it late. Nothing
    /// the application waits for depends on it (its response came before).
    AwaitingLinking(Duration),
    /// The session is over: `Ok` after [`LaptopInput::Close`], with the newest verified
    /// linking data the phone sent, or the failure. No output follows.
    Finished(Result<Option<LinkingInfo>, Failure>),
}

/// Checks the phone's getInfo bytes; the laptop aborts on an error (a request is built from
/// what getInfo says, so a phone whose getInfo does not parse cannot be asked anything).
pub type GetInfoCheck = fn(&[u8]) -> Result<(), String>;

enum LaptopState {
    Scanning {
        qr: Box<LaptopQr>,
        unusable: Option<crate::Error>,
    },
    /// Opening the data channel; the tunnel to fall back to.
    OpeningDataChannel {
        qr: Box<LaptopQr>,
        fallback: Connect,
    },
    Connecting(Box<LaptopQr>),
    /// Linked: waiting for the tunnel server to accept the contact request.
    Contacting(Box<LaptopLinked>),
    /// Linked: the tunnel is open; the phone's advert (with the link's key) is next.
    LinkedScanning {
        linked: Box<LaptopLinked>,
        unusable: Option<crate::Error>,
    },
    Handshake(Initiating),
    PostHandshake(Box<LaptopChannel>),
    Ready(Box<LaptopChannel>),
    WaitingForUser(Box<LaptopChannel>),
    /// Shut down, reading only for linking data that comes late.
    Lingering(Box<LaptopChannel>),
    /// The tunnel is open and nothing else is left to undo (an end inside the handshake).
    Open,
    Done,
}

/// What the laptop starts the handshake with: the QR code it showed, or the link it stored.
enum Initiating {
    Qr(Box<LaptopQr>),
    Linked(Box<LaptopLinked>),
}

impl Initiating {
    fn handshake_message(
        &mut self,
        ephemeral: &SecretKey,
    ) -> Result<[u8; crate::handshake::MESSAGE_LEN], crate::Error> {
        match self {
            Initiating::Qr(qr) => qr.handshake_message(ephemeral),
            Initiating::Linked(linked) => linked.handshake_message(ephemeral),
        }
    }

    fn finish(self, msg2: &[u8]) -> Result<LaptopChannel, crate::Error> {
        match self {
            Initiating::Qr(qr) => qr.finish(msg2),
            Initiating::Linked(linked) => linked.finish(msg2),
        }
    }
}

/// The laptop side of one session, QR-initiated or linked: see the [module docs](self).
pub struct LaptopEngine {
    qr_url: String,
    state: LaptopState,
    ephemeral: Option<SecretKey>,
    timeouts: LaptopTimeouts,
    check_get_info: GetInfoCheck,
    timer: Option<Instant>,
    linking: Option<LinkingInfo>,
    /// The QR code said we store linking data (key 4): worth waiting for after the shutdown.
    wants_linking: bool,
    out: VecDeque<LaptopOutput>,
}

impl fmt::Debug for LaptopEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaptopEngine")
            .field("step", &self.step())
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl LaptopEngine {
    /// Starts at `now`, after the QR code of `qr` is shown. `ephemeral` is the fresh Noise
    /// ephemeral key (`keys::generate`); `check_get_info` parses the phone's getInfo.
    pub fn new(
        qr: LaptopQr,
        ephemeral: SecretKey,
        timeouts: LaptopTimeouts,
        check_get_info: GetInfoCheck,
        now: Instant,
    ) -> Self {
        Self {
            qr_url: qr.qr_url(),
            wants_linking: qr.qr_payload().supports_linking == Some(true),
            state: LaptopState::Scanning {
                qr: Box::new(qr),
                unusable: None,
            },
            ephemeral: Some(ephemeral),
            timeouts,
            check_get_info,
            timer: Some(deadline(now, timeouts.scan)),
            linking: None,
            out: VecDeque::from([LaptopOutput::StartScan]),
        }
    }

    /// Starts a linked session at `now`: no QR code; the phone is woken through the tunnel
    /// server with `linked`'s contact request, then proves it is near with an advert made
    /// with the link's key, and the handshake (NKpsk0) authenticates it by its identity key.
    pub fn linked(
        linked: LaptopLinked,
        ephemeral: SecretKey,
        timeouts: LaptopTimeouts,
        check_get_info: GetInfoCheck,
        now: Instant,
    ) -> Self {
        let contact = linked.contact_request();
        Self {
            qr_url: String::new(),
            // A linked connection carries no verifiable linking data (§8.5).
            wants_linking: false,
            state: LaptopState::Contacting(Box::new(linked)),
            ephemeral: Some(ephemeral),
            timeouts,
            check_get_info,
            timer: Some(deadline(now, timeouts.connect)),
            linking: None,
            out: VecDeque::from([LaptopOutput::Contact(contact)]),
        }
    }

    /// The `FIDO:/` URL to show as a QR code (empty for a [linked](Self::linked) session).
    pub fn qr_url(&self) -> &str {
        &self.qr_url
    }

    /// The step the session is in (`None` once finished).
    pub fn step(&self) -> Option<Step> {
        Some(match self.state {
            LaptopState::Scanning { .. } | LaptopState::LinkedScanning { .. } => Step::Scanning,
            LaptopState::Connecting(_)
            | LaptopState::OpeningDataChannel { .. }
            | LaptopState::Contacting(_) => Step::Connecting,
            LaptopState::Handshake(_) => Step::Handshake,
            LaptopState::PostHandshake(_) => Step::PostHandshake,
            LaptopState::WaitingForUser(_) => Step::WaitingForUser,
            // Between requests: the next step is asking the user.
            LaptopState::Ready(_) => Step::WaitingForUser,
            LaptopState::Lingering(_) => Step::Closing,
            LaptopState::Open => Step::Handshake,
            LaptopState::Done => return None,
        })
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<LaptopOutput> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) if nothing else happens.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Whether the session is over (its `Finished` was output).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, LaptopState::Done)
    }

    /// Do not wait for late linking data after the shutdown ([`LaptopTimeouts::late_linking`]
    /// as zero): for an application that would not take it.
    pub fn skip_late_linking(&mut self) {
        self.wants_linking = false;
    }

    /// The newest verified linking data the phone sent, taken (after a failure too: a link
    /// verified before the session broke is as good as any).
    pub fn take_linking(&mut self) -> Option<LinkingInfo> {
        self.linking.take()
    }

    /// Ends the session from the state it is in: a scan is stopped, an open tunnel closed.
    fn finish(&mut self, result: Result<Option<LinkingInfo>, Failure>) {
        match self.state {
            LaptopState::Scanning { .. } => self.out.push_back(LaptopOutput::StopScan),
            LaptopState::LinkedScanning { .. } => {
                self.out.push_back(LaptopOutput::StopScan);
                self.out.push_back(LaptopOutput::CloseTunnel);
            }
            LaptopState::Connecting(_)
            | LaptopState::OpeningDataChannel { .. }
            | LaptopState::Contacting(_)
            | LaptopState::Done => {}
            _ => self.out.push_back(LaptopOutput::CloseTunnel),
        }
        // Dropping the channel wipes the traffic keys now.
        self.state = LaptopState::Done;
        self.timer = None;
        self.ephemeral = None;
        self.out.push_back(LaptopOutput::Finished(result));
    }

    fn fail(&mut self, failure: Failure) {
        self.finish(Err(failure));
    }

    /// The time asked for by [`poll_timeout`](Self::poll_timeout) has come (earlier calls
    /// are ignored).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer.is_none_or(|t| now < t) {
            return;
        }
        let t = self.timeouts;
        if matches!(self.state, LaptopState::OpeningDataChannel { .. }) {
            self.fall_back_to_tunnel(now);
            return;
        }
        let failure = match &mut self.state {
            LaptopState::Scanning { unusable, .. }
            | LaptopState::LinkedScanning { unusable, .. } => match unusable.take() {
                Some(e) => Failure::BadAdvert(e),
                None => Failure::ProximityTimeout(t.scan),
            },
            LaptopState::Connecting(_) | LaptopState::Contacting(_) => Failure::Timeout {
                step: Step::Connecting,
                after: t.connect,
            },
            LaptopState::Handshake(_) => Failure::Timeout {
                step: Step::Handshake,
                after: t.handshake,
            },
            LaptopState::PostHandshake(_) => Failure::Timeout {
                step: Step::PostHandshake,
                after: t.handshake,
            },
            LaptopState::WaitingForUser(_) => Failure::Timeout {
                step: Step::WaitingForUser,
                after: t.user,
            },
            LaptopState::Lingering(_) => {
                // No late linking data came: the session ended well all the same.
                let linking = self.linking.take();
                self.finish(Ok(linking));
                return;
            }
            LaptopState::Ready(_)
            | LaptopState::OpeningDataChannel { .. }
            | LaptopState::Open
            | LaptopState::Done => return,
        };
        self.fail(failure);
    }

    /// The data channel did not open (in time): the tunnel the advert names instead.
    fn fall_back_to_tunnel(&mut self, now: Instant) {
        let state = std::mem::replace(&mut self.state, LaptopState::Done);
        self.state = match state {
            LaptopState::OpeningDataChannel { qr, fallback } => {
                self.out.push_back(LaptopOutput::Connect(fallback));
                self.timer = Some(deadline(now, self.timeouts.connect));
                LaptopState::Connecting(qr)
            }
            other => other,
        };
    }

    /// The connection to the phone is open (and, linked, its advert heard): Noise message 1
    /// goes out.
    fn start_handshake(&mut self, now: Instant, mut qr: Initiating) {
        let Some(ephemeral) = self.ephemeral.take() else {
            self.state = LaptopState::Open;
            self.fail(Failure::Handshake(crate::Error::ApiMisuse(
                crate::ApiMisuse::EphemeralUsed,
            )));
            return;
        };
        match qr.handshake_message(&ephemeral) {
            Ok(msg1) => {
                self.out.push_back(LaptopOutput::Send(msg1.to_vec()));
                // The handshake and the post-handshake message share one limit.
                self.timer = Some(deadline(now, self.timeouts.handshake));
                self.state = LaptopState::Handshake(qr);
            }
            Err(e) => {
                self.state = LaptopState::Handshake(qr);
                self.fail(Failure::Handshake(e));
            }
        }
    }

    /// Something happened at `now`.
    pub fn handle(&mut self, now: Instant, input: LaptopInput) {
        let state = std::mem::replace(&mut self.state, LaptopState::Done);
        self.state = match (state, input) {
            (LaptopState::Done, _) => LaptopState::Done,
            (LaptopState::Scanning { mut qr, unusable }, LaptopInput::Advert(data)) => {
                match qr.on_advert(&data) {
                    Ok(Some(connect)) => {
                        self.out.push_back(LaptopOutput::StopScan);
                        // A data channel only if our QR code offered one and the phone's
                        // advert names its PSM (the suffix is not authenticated: a forged
                        // one costs at most the fallback's delay, since the Noise handshake
                        // runs over whatever opens).
                        let psm = qr
                            .advert()
                            .and_then(|a| a.suffix.as_ref())
                            .and_then(|s| s.l2cap_psm)
                            .filter(|_| qr.qr_payload().offers_l2cap());
                        match psm {
                            Some(psm) => {
                                self.out.push_back(LaptopOutput::OpenDataChannel { psm });
                                self.timer = Some(deadline(now, self.timeouts.data_channel));
                                LaptopState::OpeningDataChannel {
                                    qr,
                                    fallback: connect,
                                }
                            }
                            None => {
                                self.out.push_back(LaptopOutput::Connect(connect));
                                self.timer = Some(deadline(now, self.timeouts.connect));
                                LaptopState::Connecting(qr)
                            }
                        }
                    }
                    // Someone else's advert.
                    Ok(None) => LaptopState::Scanning { qr, unusable },
                    // Made with our key but unusable: remember it, keep listening.
                    Err(e) => LaptopState::Scanning {
                        qr,
                        unusable: Some(e),
                    },
                }
            }
            (LaptopState::Connecting(qr), LaptopInput::Connected)
            | (LaptopState::OpeningDataChannel { qr, .. }, LaptopInput::Connected) => {
                self.start_handshake(now, Initiating::Qr(qr));
                return;
            }
            (LaptopState::Contacting(linked), LaptopInput::Connected) => {
                // The server accepted and is waking the phone: its advert proves it is near.
                self.out.push_back(LaptopOutput::StartScan);
                self.timer = Some(deadline(now, self.timeouts.scan));
                LaptopState::LinkedScanning {
                    linked,
                    unusable: None,
                }
            }
            (LaptopState::Contacting(linked), LaptopInput::ConnectFailed) => {
                self.state = LaptopState::Contacting(linked);
                self.fail(Failure::ConnectFailed);
                return;
            }
            (
                LaptopState::LinkedScanning {
                    mut linked,
                    unusable,
                },
                LaptopInput::Advert(data),
            ) => match linked.on_advert(&data) {
                Ok(true) => {
                    self.out.push_back(LaptopOutput::StopScan);
                    self.start_handshake(now, Initiating::Linked(linked));
                    return;
                }
                // Someone else's advert (or another laptop's session with this phone).
                Ok(false) => LaptopState::LinkedScanning { linked, unusable },
                Err(e) => LaptopState::LinkedScanning {
                    linked,
                    unusable: Some(e),
                },
            },
            (state @ LaptopState::OpeningDataChannel { .. }, LaptopInput::ConnectFailed) => {
                self.state = state;
                self.fall_back_to_tunnel(now);
                return;
            }
            (LaptopState::Connecting(qr), LaptopInput::ConnectFailed) => {
                self.state = LaptopState::Connecting(qr);
                self.fail(Failure::ConnectFailed);
                return;
            }
            (LaptopState::Handshake(initiating), LaptopInput::Received(msg2)) => {
                match initiating.finish(&msg2) {
                    Ok(channel) => {
                        self.out.push_back(LaptopOutput::HandshakeDone);
                        LaptopState::PostHandshake(Box::new(channel))
                    }
                    Err(e) => {
                        self.state = LaptopState::Open;
                        self.fail(Failure::Handshake(e));
                        return;
                    }
                }
            }
            (LaptopState::PostHandshake(mut channel), LaptopInput::Received(m)) => {
                match self.on_post_handshake(&mut channel, &m) {
                    Ok(get_info) => {
                        self.timer = None;
                        self.out.push_back(LaptopOutput::Ready(get_info));
                        LaptopState::Ready(channel)
                    }
                    Err((failure, shutdown)) => {
                        if shutdown && let Ok(Some(ct)) = channel.shutdown() {
                            self.out.push_back(LaptopOutput::Send(ct));
                        }
                        self.state = LaptopState::Ready(channel);
                        self.fail(failure);
                        return;
                    }
                }
            }
            (LaptopState::Ready(mut channel), LaptopInput::Request(request)) => {
                // getInfo is answered from the post-handshake message, as Chromium does.
                let info = channel.get_info().map(<[u8]>::to_vec).unwrap_or_default();
                if let Some(reply) = frame::get_info_reply(&request, &info) {
                    self.out.push_back(LaptopOutput::Response(reply));
                    LaptopState::Ready(channel)
                } else {
                    match channel.send_ctap(&request) {
                        Ok(ct) => {
                            self.out.push_back(LaptopOutput::Send(ct));
                            self.out.push_back(LaptopOutput::WaitingForUser);
                            self.timer = Some(deadline(now, self.timeouts.user));
                            LaptopState::WaitingForUser(channel)
                        }
                        Err(source) => {
                            self.state = LaptopState::Ready(channel);
                            self.fail(Failure::Protocol {
                                step: Step::WaitingForUser,
                                source,
                            });
                            return;
                        }
                    }
                }
            }
            (LaptopState::WaitingForUser(mut channel), LaptopInput::Received(m)) => {
                match channel.on_message(&m) {
                    Ok(events) => {
                        let mut response = None;
                        let mut shutdown = false;
                        for event in events {
                            match event {
                                LaptopEvent::CtapResponse(r) => response = Some(r),
                                LaptopEvent::PhoneShutdown => shutdown = true,
                                other => self.note(other),
                            }
                        }
                        if let Some(r) = response {
                            self.timer = None;
                            self.out.push_back(LaptopOutput::Response(r));
                            LaptopState::Ready(channel)
                        } else if shutdown {
                            // A phone's shutdown before its answer is a closed tunnel.
                            self.state = LaptopState::WaitingForUser(channel);
                            self.fail(Failure::TunnelClosed(Step::WaitingForUser));
                            return;
                        } else {
                            LaptopState::WaitingForUser(channel)
                        }
                    }
                    Err(source) => {
                        self.state = LaptopState::WaitingForUser(channel);
                        self.fail(Failure::Protocol {
                            step: Step::WaitingForUser,
                            source,
                        });
                        return;
                    }
                }
            }
            (LaptopState::Ready(mut channel), LaptopInput::Received(m)) => {
                // Between requests only late updates are expected; anything else is dropped.
                if let Ok(events) = channel.on_message(&m) {
                    for e in events {
                        self.note(e);
                    }
                }
                LaptopState::Ready(channel)
            }
            (LaptopState::Ready(mut channel), LaptopInput::Close) => {
                let shutdown = channel.shutdown();
                let sent = matches!(shutdown, Ok(Some(_)));
                if let Ok(Some(ct)) = shutdown {
                    self.out.push_back(LaptopOutput::Send(ct));
                }
                // Updates exist from revision 1 on, so only then can a link still come.
                let linger = self.timeouts.late_linking;
                if sent && self.wants_linking && self.linking.is_none() && !linger.is_zero() {
                    self.timer = Some(deadline(now, linger));
                    self.out.push_back(LaptopOutput::AwaitingLinking(linger));
                    self.state = LaptopState::Lingering(channel);
                    return;
                }
                let linking = self.linking.take();
                self.state = LaptopState::Ready(channel);
                self.finish(Ok(linking));
                return;
            }
            (LaptopState::Lingering(mut channel), LaptopInput::Received(m)) => {
                // Only linking data is of use now. A message that does not decrypt ends the
                // wait: nothing after it could be read (the session itself succeeded).
                // A link that fails verification ends it too: that phone sends no other.
                let waiting = match channel.on_message(&m) {
                    Ok(events) => events.into_iter().all(|e| {
                        let rejected = matches!(e, LaptopEvent::LinkingRejected(_));
                        self.note(e);
                        !rejected
                    }),
                    Err(_) => false,
                };
                if waiting && self.linking.is_none() {
                    LaptopState::Lingering(channel)
                } else {
                    self.state = LaptopState::Lingering(channel);
                    let linking = self.linking.take();
                    self.finish(Ok(linking));
                    return;
                }
            }
            (
                state @ LaptopState::Lingering(_),
                LaptopInput::Close | LaptopInput::Closed | LaptopInput::TransportFailed,
            ) => {
                // The phone (or the relay) closed, or the application gave up waiting.
                self.state = state;
                let linking = self.linking.take();
                self.finish(Ok(linking));
                return;
            }
            // Closing mid-step (the caller's Close: abort without a shutdown message), or the
            // tunnel closing under us.
            (state, LaptopInput::Close | LaptopInput::Closed) => {
                self.state = state;
                let step = self.step().unwrap_or(Step::Closing);
                self.fail(Failure::TunnelClosed(step));
                return;
            }
            (state, LaptopInput::TransportFailed) => {
                self.state = state;
                let step = self.step().unwrap_or(Step::Closing);
                self.fail(Failure::Transport { step });
                return;
            }
            // Inputs that do not belong to this step (a late advert, a request while one is
            // pending) change nothing.
            (state, _) => state,
        };
    }

    /// The phone's first message: the post-handshake message. `Ok`: its getInfo;
    /// `Err((failure, send_shutdown))`.
    fn on_post_handshake(
        &mut self,
        channel: &mut LaptopChannel,
        m: &[u8],
    ) -> Result<Vec<u8>, (Failure, bool)> {
        let events = channel.on_message(m).map_err(|source| {
            (
                match source {
                    crate::Error::MissingGetInfo(why) => Failure::InvalidGetInfo(why.to_owned()),
                    source => Failure::Protocol {
                        step: Step::PostHandshake,
                        source,
                    },
                },
                false,
            )
        })?;
        let mut ctap = true;
        for event in events {
            match event {
                LaptopEvent::PostHandshake { message, .. } => ctap = message.supports_ctap(),
                other => self.note(other),
            }
        }
        if !ctap {
            return Err((Failure::NoCtap, true));
        }
        let info = channel
            .get_info()
            .ok_or_else(|| (Failure::InvalidGetInfo("key 1 is absent".into()), false))?;
        (self.check_get_info)(info).map_err(|e| {
            (
                Failure::InvalidGetInfo(format!("it does not parse: {e}")),
                false,
            )
        })?;
        Ok(info.to_vec())
    }

    /// Linking data: the newest verified one wins; a rejected one keeps what we had.
    fn note(&mut self, event: LaptopEvent) {
        if let LaptopEvent::Linked(l) = event {
            self.linking = Some(l);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phone

/// Limits of the phone's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhoneTimeouts {
    /// Opening the tunnel WebSocket (default 10 s).
    pub connect: Duration,
    /// Advertising until the laptop's first handshake message arrives (default 60 s).
    pub laptop: Duration,
    /// From the handshake to the laptop's request (default 60 s: Chromium's phone waits as
    /// long, since a desktop may show its own UI before it sends the request).
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
            request: Duration::from_secs(60),
            user: Duration::from_secs(60),
            close: Duration::from_secs(5),
        }
    }
}

/// What happened, for the phone engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhoneInput {
    /// The tunnel asked for with [`PhoneOutput::OpenTunnel`] is open; the routing ID the
    /// tunnel server gave (`None`: it gave none that parses).
    TunnelOpened(Option<RoutingId>),
    /// It could not be opened (why is the driver's business: the engine only decides what
    /// it means for the session).
    ConnectFailed,
    /// One message from the laptop.
    Received(Vec<u8>),
    /// The laptop (or the relay) closed the tunnel.
    Closed,
    /// The transport failed under the open tunnel (the driver keeps the reason).
    TransportFailed,
    /// The authenticator's answer to [`PhoneOutput::Serve`] (`status ‖ CBOR`).
    Answer(Vec<u8>),
    /// The laptop connected over the data channel offered by
    /// [`PhoneOutput::AcceptDataChannel`].
    DataChannelOpened,
}

/// What the phone driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhoneOutput {
    /// Open `/cable/new/<tunnel ID>` on the phone's tunnel server, then
    /// [`PhoneInput::TunnelOpened`].
    OpenTunnel(TunnelPath),
    /// Broadcast this service data (UUID 0xFFF9) until told to stop.
    Advertise(Vec<u8>),
    /// The advert offers the data channel (BLE L2CAP on the PSM given to
    /// [`PhoneEngine::with_data_channel`]): accept one laptop connection on it while
    /// advertising, and feed it in as [`PhoneInput::DataChannelOpened`].
    AcceptDataChannel,
    /// The laptop came over the data channel: close the relay tunnel now (no ceremony byte
    /// crosses the relay); every later `Send` and `CloseTunnel` is for the data channel.
    UseDataChannel,
    /// Stop advertising (and accepting on the data channel): the laptop found us.
    StopAdvertising,
    /// Send these bytes to the laptop.
    Send(Vec<u8>),
    /// The handshake succeeded and the phone's first message is out.
    HandshakeDone,
    /// Ask the authenticator (and its user) to answer this request `command ‖ CBOR`; feed the
    /// answer back as [`PhoneInput::Answer`].
    Serve(Vec<u8>),
    /// Give up on the request being served: a late approval must write nothing.
    Cancel,
    /// The response with this status was sent.
    Responded(u8),
    /// Linking data with this link (pairing) ID went to the laptop ([`PhoneEngine::with_linking`]):
    /// remember the laptop, so it can be listed and revoked.
    LinkSent(Vec<u8>),
    /// Close the connection to the laptop, tunnel or data channel (after any `Send` before
    /// it).
    CloseTunnel,
    /// The session is over. No output follows.
    Finished(Result<PhoneOutcome, Failure>),
}

/// How a phone session that served a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhoneOutcome {
    /// The CTAP command served.
    pub command: u8,
    /// The CTAP status sent back (`0x00` on success).
    pub status: u8,
}

/// What the phone answers the handshake with.
enum Responding {
    Qr(Box<PhoneQr>),
    Linked(Box<LinkedWake>),
}

/// A linked session the tunnel server woke the phone for: what [`PhoneEngine::linked`] needs.
pub struct LinkedWake {
    /// The link's handshake state, made from the client payload.
    pub linked: PhoneLinked,
    /// The phone's identity key (the `s` of NKpsk0), the one its linking data named.
    pub identity: SecretKey,
    /// `/cable/connect/<routing ID>/<tunnel ID>`, as the wake-up named it.
    pub tunnel: TunnelPath,
    /// The advert's plaintext ([`AdvertPlaintext::linked`]: a fresh nonce; the laptop does
    /// not use its routing and domain fields).
    pub advert: AdvertPlaintext,
}

impl fmt::Debug for LinkedWake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkedWake").finish_non_exhaustive()
    }
}

/// What a phone gives a laptop that can store it (QR key 4): its link, signed in the handshake.
pub struct LinkingOffer {
    /// The phone's identity key.
    pub identity: SecretKey,
    /// Where the laptop reaches the phone later (`/cable/contact/<contact ID>`).
    pub contact_id: Vec<u8>,
    /// A fresh link (pairing) ID for this laptop.
    pub link_id: Vec<u8>,
    /// The link secret for this laptop (`kdf::phone_link_secret`).
    pub link_secret: crate::secret::LinkSecret,
    /// The name the laptop shows for the phone.
    pub name: String,
}

impl LinkingOffer {
    /// This offer as linking data signed over `channel`'s handshake (`None` on a linked
    /// channel, whose laptop could not verify it).
    pub fn sign(&self, channel: &PhoneChannel) -> Option<LinkingInfo> {
        channel.linking_info(
            &self.identity,
            self.contact_id.clone(),
            self.link_id.clone(),
            self.link_secret.clone(),
            self.name.clone(),
        )
    }
}

impl fmt::Debug for LinkingOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkingOffer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

enum PhoneState {
    Opening(Box<PhoneQr>),
    /// Linked: joining the tunnel the wake-up named.
    LinkedOpening(Box<LinkedWake>),
    /// Linked: advertising with the link's key, waiting for Noise message 1.
    LinkedAdvertising(Box<LinkedWake>),
    /// The tunnel is open and nothing else is left to undo (an end before the handshake).
    Open,
    Advertising(Box<PhoneQr>),
    /// The laptop connected over the data channel; its handshake message is next.
    Joined(Box<PhoneQr>),
    WaitingForRequest(Box<PhoneChannel>),
    Processing {
        channel: Box<PhoneChannel>,
        command: u8,
    },
    Closing(PhoneOutcome),
    Done,
}

/// The phone side of one QR-initiated session: see the [module docs](self).
pub struct PhoneEngine {
    state: PhoneState,
    get_info: Vec<u8>,
    ephemeral: Option<SecretKey>,
    nonce: [u8; 10],
    domain_id: u16,
    /// The L2CAP PSM the driver listens on, if it offers the data channel.
    data_channel: Option<u16>,
    /// Linking data to give a laptop whose QR code says it can store it.
    linking: Option<LinkingOffer>,
    timeouts: PhoneTimeouts,
    timer: Option<Instant>,
    out: VecDeque<PhoneOutput>,
}

impl fmt::Debug for PhoneEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneEngine")
            .field("step", &self.step())
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl PhoneEngine {
    /// Starts at `now` for the scanned QR code `qr`. `get_info` is the authenticator's getInfo
    /// (CBOR), sent in the post-handshake message; `ephemeral` (`keys::generate`) and `nonce`
    /// (10 random bytes) must be fresh; `domain_id` names the tunnel server in the advert.
    pub fn new(
        qr: PhoneQr,
        get_info: Vec<u8>,
        ephemeral: SecretKey,
        nonce: [u8; 10],
        domain_id: u16,
        timeouts: PhoneTimeouts,
        now: Instant,
    ) -> Self {
        let path = qr.new_tunnel_path();
        Self {
            state: PhoneState::Opening(Box::new(qr)),
            get_info,
            ephemeral: Some(ephemeral),
            nonce,
            domain_id,
            data_channel: None,
            linking: None,
            timeouts,
            timer: Some(deadline(now, timeouts.connect)),
            out: VecDeque::from([PhoneOutput::OpenTunnel(path)]),
        }
    }

    /// Starts at `now` a linked session the tunnel server woke the phone for: join the
    /// tunnel it named, advertise with the link's key, answer NKpsk0 with the identity key.
    /// `get_info` and `ephemeral` as for [`new`](Self::new).
    pub fn linked(
        wake: LinkedWake,
        get_info: Vec<u8>,
        ephemeral: SecretKey,
        timeouts: PhoneTimeouts,
        now: Instant,
    ) -> Self {
        let path = wake.tunnel.clone();
        Self {
            state: PhoneState::LinkedOpening(Box::new(wake)),
            get_info,
            ephemeral: Some(ephemeral),
            nonce: [0; 10],
            domain_id: 0,
            data_channel: None,
            linking: None,
            timeouts,
            timer: Some(deadline(now, timeouts.connect)),
            out: VecDeque::from([PhoneOutput::OpenTunnel(path)]),
        }
    }

    /// Offers linking data to a laptop whose QR code says it can store it (QR key 4; never on
    /// a linked session, whose laptop could not verify it). Sent in the padded update, which
    /// is the same size with or without it; [`PhoneOutput::LinkSent`] says when it went.
    pub fn with_linking(mut self, offer: LinkingOffer) -> Self {
        self.linking = Some(offer);
        self
    }

    /// Offers the CTAP 2.3 data channel on this L2CAP PSM (the driver listens on it) when the
    /// QR code asks for one: the advert then carries the PSM in its suffix. A QR code without
    /// key 6 gets exactly what it got before (a 20-byte advert, the relay tunnel only).
    pub fn with_data_channel(mut self, psm: u16) -> Self {
        self.data_channel = Some(psm);
        self
    }

    /// The step the session is in (`None` once finished).
    pub fn step(&self) -> Option<Step> {
        Some(match self.state {
            PhoneState::Opening(_) | PhoneState::LinkedOpening(_) => Step::Connecting,
            PhoneState::Open => Step::Handshake,
            PhoneState::Advertising(_)
            | PhoneState::Joined(_)
            | PhoneState::LinkedAdvertising(_) => Step::WaitingForLaptop,
            PhoneState::WaitingForRequest(_) => Step::WaitingForRequest,
            PhoneState::Processing { .. } => Step::Processing,
            PhoneState::Closing(_) => Step::Closing,
            PhoneState::Done => return None,
        })
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<PhoneOutput> {
        self.out.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) if nothing else happens.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// Whether the session is over (its `Finished` was output).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, PhoneState::Done)
    }

    fn finish(&mut self, result: Result<PhoneOutcome, Failure>) {
        match self.state {
            PhoneState::Opening(_) | PhoneState::LinkedOpening(_) | PhoneState::Done => {}
            PhoneState::Advertising(_) | PhoneState::LinkedAdvertising(_) => {
                self.out.push_back(PhoneOutput::StopAdvertising);
                self.out.push_back(PhoneOutput::CloseTunnel);
            }
            PhoneState::Processing { .. } => {
                self.out.push_back(PhoneOutput::Cancel);
                self.out.push_back(PhoneOutput::CloseTunnel);
            }
            _ => self.out.push_back(PhoneOutput::CloseTunnel),
        }
        // Dropping the channel wipes the traffic keys now.
        self.state = PhoneState::Done;
        self.timer = None;
        self.ephemeral = None;
        self.out.push_back(PhoneOutput::Finished(result));
    }

    /// The time asked for by [`poll_timeout`](Self::poll_timeout) has come (earlier calls
    /// are ignored).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer.is_none_or(|t| now < t) {
            return;
        }
        let t = self.timeouts;
        let state = std::mem::replace(&mut self.state, PhoneState::Done);
        let (step, after) = match state {
            PhoneState::Opening(_) | PhoneState::LinkedOpening(_) => (Step::Connecting, t.connect),
            PhoneState::Open => (Step::Handshake, t.laptop),
            PhoneState::Advertising(_)
            | PhoneState::Joined(_)
            | PhoneState::LinkedAdvertising(_) => (Step::WaitingForLaptop, t.laptop),
            PhoneState::WaitingForRequest(_) => (Step::WaitingForRequest, t.request),
            PhoneState::Processing {
                mut channel,
                command,
            } => {
                // The user did not answer in time: give up on the request and tell the laptop.
                self.out.push_back(PhoneOutput::Cancel);
                let status = STATUS_USER_ACTION_TIMEOUT;
                if let Ok(ct) = channel.send_ctap(&[status]) {
                    self.out.push_back(PhoneOutput::Send(ct));
                    self.out.push_back(PhoneOutput::Responded(status));
                }
                self.state = PhoneState::Closing(PhoneOutcome { command, status });
                self.finish(Err(Failure::Timeout {
                    step: Step::Processing,
                    after: t.user,
                }));
                return;
            }
            PhoneState::Closing(outcome) => {
                // No shutdown from the laptop: the response went out, which is what counts.
                self.state = PhoneState::Closing(outcome);
                self.finish(Ok(outcome));
                return;
            }
            PhoneState::Done => return,
        };
        self.state = state;
        self.finish(Err(Failure::Timeout { step, after }));
    }

    /// The laptop's Noise message 1: answered, and the post-handshake message sent; or the
    /// session ends.
    fn handshake(&mut self, now: Instant, responding: Responding, msg1: &[u8]) -> PhoneState {
        match self.respond(responding, msg1) {
            Ok(channel) => {
                self.out.push_back(PhoneOutput::HandshakeDone);
                self.timer = Some(deadline(now, self.timeouts.request));
                PhoneState::WaitingForRequest(Box::new(channel))
            }
            Err(failure) => {
                self.state = PhoneState::Open;
                self.finish(Err(failure));
                PhoneState::Done
            }
        }
    }

    /// Something happened at `now`.
    pub fn handle(&mut self, now: Instant, input: PhoneInput) {
        let state = std::mem::replace(&mut self.state, PhoneState::Done);
        self.state = match (state, input) {
            (PhoneState::Done, _) => PhoneState::Done,
            (PhoneState::Opening(mut qr), PhoneInput::TunnelOpened(routing_id)) => {
                let Some(routing_id) = routing_id else {
                    self.state = PhoneState::Open;
                    self.finish(Err(Failure::NoRoutingId));
                    return;
                };
                let plaintext = AdvertPlaintext {
                    nonce: self.nonce,
                    routing_id,
                    domain_id: self.domain_id,
                };
                // A CTAP 2.3 suffix only when the QR code asked for the data channel and the
                // driver offers one (Chrome on Linux takes exactly 20 bytes).
                let psm = self.data_channel.filter(|_| qr.qr_payload().offers_l2cap());
                let advert = qr.service_data(plaintext, psm);
                self.out.push_back(PhoneOutput::Advertise(advert));
                if psm.is_some() {
                    self.out.push_back(PhoneOutput::AcceptDataChannel);
                }
                self.timer = Some(deadline(now, self.timeouts.laptop));
                PhoneState::Advertising(qr)
            }
            (PhoneState::Opening(qr), PhoneInput::ConnectFailed) => {
                self.state = PhoneState::Opening(qr);
                self.finish(Err(Failure::ConnectFailed));
                return;
            }
            (PhoneState::Advertising(qr), PhoneInput::DataChannelOpened) => {
                // The laptop is here, over Bluetooth: the relay is no longer needed. Its
                // handshake message follows on the channel, within the laptop limit.
                self.out.push_back(PhoneOutput::StopAdvertising);
                self.out.push_back(PhoneOutput::UseDataChannel);
                PhoneState::Joined(qr)
            }
            (PhoneState::Advertising(qr), PhoneInput::Received(msg1)) => {
                // The laptop found us through the relay: stop advertising whatever follows.
                self.out.push_back(PhoneOutput::StopAdvertising);
                self.state = self.handshake(now, Responding::Qr(qr), &msg1);
                return;
            }
            (PhoneState::Joined(qr), PhoneInput::Received(msg1)) => {
                self.state = self.handshake(now, Responding::Qr(qr), &msg1);
                return;
            }
            (PhoneState::LinkedOpening(mut wake), PhoneInput::TunnelOpened(_)) => {
                // The laptop is already on the tunnel: the advert proves the phone is near.
                let advert = wake.advert;
                let data = wake.linked.service_data(advert);
                self.out.push_back(PhoneOutput::Advertise(data));
                self.timer = Some(deadline(now, self.timeouts.laptop));
                PhoneState::LinkedAdvertising(wake)
            }
            (PhoneState::LinkedOpening(wake), PhoneInput::ConnectFailed) => {
                self.state = PhoneState::LinkedOpening(wake);
                self.finish(Err(Failure::ConnectFailed));
                return;
            }
            (PhoneState::LinkedAdvertising(wake), PhoneInput::Received(msg1)) => {
                self.out.push_back(PhoneOutput::StopAdvertising);
                self.state = self.handshake(now, Responding::Linked(wake), &msg1);
                return;
            }
            (PhoneState::WaitingForRequest(mut channel), PhoneInput::Received(m)) => {
                let step = Step::WaitingForRequest;
                match channel.on_message(&m) {
                    Ok(PhoneEvent::CtapRequest(request)) => {
                        let command = request.first().copied().unwrap_or(0);
                        self.out.push_back(PhoneOutput::Serve(request));
                        self.timer = Some(deadline(now, self.timeouts.user));
                        PhoneState::Processing { channel, command }
                    }
                    Ok(PhoneEvent::Answered(reply)) => {
                        self.out.push_back(PhoneOutput::Send(reply));
                        PhoneState::WaitingForRequest(channel)
                    }
                    Ok(PhoneEvent::Update) => PhoneState::WaitingForRequest(channel),
                    Ok(other) => {
                        self.state = PhoneState::WaitingForRequest(channel);
                        self.finish(Err(match other {
                            PhoneEvent::Shutdown => Failure::UnexpectedEof,
                            PhoneEvent::SelectionRefused => Failure::AuthenticatorSelection,
                            _ => Failure::Unsupported(
                                "digital-credential (JSON) requests are not supported",
                            ),
                        }));
                        return;
                    }
                    Err(source) => {
                        self.state = PhoneState::WaitingForRequest(channel);
                        self.finish(Err(Failure::Protocol { step, source }));
                        return;
                    }
                }
            }
            (
                PhoneState::Processing {
                    mut channel,
                    command,
                },
                PhoneInput::Answer(response),
            ) => {
                let status = response.first().copied().unwrap_or(0x7f);
                match channel.send_ctap(&response) {
                    Ok(ct) => {
                        self.out.push_back(PhoneOutput::Send(ct));
                        self.out.push_back(PhoneOutput::Responded(status));
                        self.timer = Some(deadline(now, self.timeouts.close));
                        PhoneState::Closing(PhoneOutcome { command, status })
                    }
                    Err(source) => {
                        self.state = PhoneState::Closing(PhoneOutcome { command, status });
                        self.finish(Err(Failure::Protocol {
                            step: Step::Closing,
                            source,
                        }));
                        return;
                    }
                }
            }
            (
                PhoneState::Processing {
                    mut channel,
                    command,
                },
                PhoneInput::Received(m),
            ) => {
                match channel.on_message(&m) {
                    // Updates carry nothing for the phone: Chromium's phone checks that they
                    // are CBOR and ignores them, pending request or not.
                    Ok(PhoneEvent::Update) => PhoneState::Processing { channel, command },
                    Ok(PhoneEvent::Shutdown) => {
                        self.state = PhoneState::Processing { channel, command };
                        self.finish(Err(Failure::EofWhileProcessing));
                        return;
                    }
                    // The channel refuses a second request while one is pending.
                    Ok(_) => {
                        self.state = PhoneState::Processing { channel, command };
                        self.finish(Err(Failure::Protocol {
                            step: Step::Processing,
                            source: crate::PeerMisbehaved::SecondRequest.into(),
                        }));
                        return;
                    }
                    Err(source) => {
                        self.state = PhoneState::Processing { channel, command };
                        self.finish(Err(Failure::Protocol {
                            step: Step::Processing,
                            source,
                        }));
                        return;
                    }
                }
            }
            (PhoneState::Processing { channel, command }, PhoneInput::Closed) => {
                self.state = PhoneState::Processing { channel, command };
                self.finish(Err(Failure::EofWhileProcessing));
                return;
            }
            (PhoneState::Closing(outcome), PhoneInput::Received(_))
            | (PhoneState::Closing(outcome), PhoneInput::Closed)
            | (PhoneState::Closing(outcome), PhoneInput::TransportFailed) => {
                // Whatever the laptop says after the response (its shutdown, normally), the
                // session is over: the response went out.
                self.state = PhoneState::Closing(outcome);
                self.finish(Ok(outcome));
                return;
            }
            (PhoneState::WaitingForRequest(channel), PhoneInput::Closed) => {
                self.state = PhoneState::WaitingForRequest(channel);
                self.finish(Err(Failure::UnexpectedEof));
                return;
            }
            (state, PhoneInput::Closed) => {
                self.state = state;
                let step = self.step().unwrap_or(Step::Closing);
                self.finish(Err(Failure::TunnelClosed(step)));
                return;
            }
            (state, PhoneInput::TransportFailed) => {
                self.state = state;
                let step = self.step().unwrap_or(Step::Closing);
                self.finish(Err(Failure::Transport { step }));
                return;
            }
            // Inputs that do not belong to this step change nothing.
            (state, _) => state,
        };
    }

    /// Noise message 2, the post-handshake message with getInfo and, in revision 1, the
    /// padded update: all queued to send.
    fn respond(&mut self, responding: Responding, msg1: &[u8]) -> Result<PhoneChannel, Failure> {
        let ephemeral =
            self.ephemeral
                .take()
                .ok_or(Failure::Handshake(crate::Error::ApiMisuse(
                    crate::ApiMisuse::EphemeralUsed,
                )))?;
        let (mut channel, msg2, laptop_stores_links) = match responding {
            Responding::Qr(qr) => {
                let stores = qr.qr_payload().supports_linking == Some(true);
                let (channel, msg2) = qr.respond(msg1, &ephemeral).map_err(Failure::Handshake)?;
                (channel, msg2, stores)
            }
            Responding::Linked(wake) => {
                let LinkedWake {
                    linked, identity, ..
                } = *wake;
                let (channel, msg2) = linked
                    .respond(&identity, msg1, &ephemeral)
                    .map_err(Failure::Handshake)?;
                (channel, msg2, false)
            }
        };
        let protocol = |source| Failure::Protocol {
            step: Step::Handshake,
            source,
        };
        let post = channel
            .post_handshake(&PostHandshake::ctap(self.get_info.clone()))
            .map_err(protocol)?;
        self.out.push_back(PhoneOutput::Send(msg2.to_vec()));
        self.out.push_back(PhoneOutput::Send(post));
        if channel.revision() == ProtocolRevision::V1 {
            let linking = match &self.linking {
                Some(o) if laptop_stores_links => o.sign(&channel),
                _ => None,
            };
            let update = channel.update(linking.as_ref()).map_err(protocol)?;
            self.out.push_back(PhoneOutput::Send(update));
            if let Some(l) = linking {
                self.out.push_back(PhoneOutput::LinkSent(l.link_id));
            }
        }
        Ok(channel)
    }
}

#[cfg(test)]
mod tests;
