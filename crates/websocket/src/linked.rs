//! Linked phones through a hybridge relay (`hybridge_proto::contact` has the wire format):
//! the laptop's [`contact`] (`/cable/contact`), which asks the relay to wake the phone, and
//! the phone's [`subscribe`] (`/cable/subscribe`), the subscription that the wake-ups come
//! through.
//!
//! ```no_run
//! # async fn demo(key: p256::SecretKey, payload: hybridge_proto::linking::ClientPayload)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use hybridge_websocket::{Timeouts, contact, subscribe};
//! // The phone: subscribe, then wait for wake-ups.
//! let mut sub = subscribe("wss://relay.example", &key, None, Timeouts::default()).await?;
//! let contact_id = sub.contact_id(); // goes into linking-map key 1
//! // The laptop: contact the phone (410 is `ConnectError::Gone`: unreachable).
//! let mut laptop = contact("wss://relay.example", &contact_id.0, &payload, true, None,
//!     Timeouts::default()).await?;
//! // The phone: the wake-up names the tunnel to join.
//! let wake = sub.next_wake().await?;
//! let url = wake.tunnel_path().to_url("wss://relay.example");
//! let (phone, _) = hybridge_websocket::connect(&url, None).await?;
//! // The laptop: the relay says the phone joined; the handshake can go.
//! laptop.phone_joined(std::time::Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hybridge_proto::contact::{
    Ack, Challenge, ContactError, ContactId, Proof, SIGNAL_CONNECTION_HEADER, SUBSCRIBE_PATH,
    WAKE_SUBPROTOCOL, Wake,
};
use hybridge_proto::linking::ClientPayload;
use hybridge_proto::tunnel::{CLIENT_PAYLOAD_HEADER, SUBPROTOCOL, TunnelPath, base_url};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::{ConnectError, TunnelError, WebSocketError, Ws, open};

/// How long each step of [`contact`] and [`subscribe`] may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP, TLS and the WebSocket upgrade together.
    pub open: Duration,
    /// Each wait on the relay after the upgrade: the challenge, the acknowledgement.
    pub step: Duration,
    /// Longest silence on a subscription (the relay pings every 30 s by default) before the
    /// phone takes the connection for dead ([`SubscribeError::Silent`]) and reconnects.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// 10 s to open, 10 s a step, 75 s of silence (two and a half of the relay's default
    /// ping intervals).
    fn default() -> Self {
        Self {
            open: Duration::from_secs(10),
            step: Duration::from_secs(10),
            idle: Duration::from_secs(75),
        }
    }
}

/// The laptop's tunnel after [`contact`]: the same WebSocket `/cable/connect` gives, once the
/// woken phone has joined.
pub struct Contacted {
    /// The tunnel. With the connect signal, call [`Contacted::phone_joined`] before reading
    /// from it yourself.
    pub ws: Ws,
    /// The relay echoed `X-caBLE-Signal-Connection`: it sends `[0x00]` when the phone joins.
    pub signal: bool,
}

impl std::fmt::Debug for Contacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contacted")
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

/// Why waiting for the connect signal failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneJoinError {
    /// The relay did not echo `X-caBLE-Signal-Connection`, so it sends no signal: start the
    /// handshake when the phone's advert is seen instead.
    #[error(
        "the relay does not signal when the phone joins (it did not echo {SIGNAL_CONNECTION_HEADER})"
    )]
    NoSignal,
    /// No signal within the time given.
    #[error("the phone did not join the tunnel within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The relay closed the tunnel first (typically: "the phone did not answer the wake-up
    /// in time").
    #[error("the relay closed the tunnel before the phone joined: {reason:?} (code {code:?})")]
    Closed {
        /// The close code, if the relay sent one.
        code: Option<u16>,
        /// Its reason.
        reason: String,
    },
    /// The first message was not exactly `[0x00]` (docs/protocol.md §6.2).
    #[error("the relay's connect signal must be exactly [0x00]")]
    BadSignal,
    /// The tunnel failed.
    #[error("{0}")]
    Tunnel(#[source] TunnelError),
}

impl Contacted {
    /// Waits up to `within` for the relay's connect signal, `[0x00]`, which says that the
    /// phone joined; it is consumed, so the tunnel's next message is the phone's.
    pub async fn phone_joined(&mut self, within: Duration) -> Result<(), PhoneJoinError> {
        if !self.signal {
            return Err(PhoneJoinError::NoSignal);
        }
        let first = timeout(within, next_data(&mut self.ws, None))
            .await
            .map_err(|_| PhoneJoinError::Timeout(within))?;
        match first {
            Ok(Data::Binary(m)) => hybridge_proto::session::check_connect_signal(&m)
                .map_err(|_| PhoneJoinError::BadSignal),
            Ok(Data::Closed(code, reason)) => Err(PhoneJoinError::Closed { code, reason }),
            Err(e) => Err(PhoneJoinError::Tunnel(e)),
        }
    }
}

/// The laptop asks the relay at `relay_url` (a host name, or a `ws://`/`wss://` base URL) to
/// wake the phone with `contact_id` (linking-map key 1) and hand it `client_payload`; with
/// `signal`, it asks for `[0x00]` when the phone joins. Returns once the relay accepted: the
/// phone has been woken and the tunnel waits for it. A relay with no phone subscribed answers
/// 410: [`ConnectError::Gone`].
pub async fn contact(
    relay_url: &str,
    contact_id: &[u8],
    client_payload: &ClientPayload,
    signal: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeouts: Timeouts,
) -> Result<Contacted, ConnectError> {
    let url = TunnelPath::Contact {
        contact_id: contact_id.to_vec(),
    }
    .to_url(relay_url);
    let mut headers = vec![(CLIENT_PAYLOAD_HEADER, client_payload.to_header_value())];
    if signal {
        headers.push((SIGNAL_CONNECTION_HEADER, "true".to_owned()));
    }
    let (ws, response) = timeout(timeouts.open, open(&url, SUBPROTOCOL, &headers, tls))
        .await
        .map_err(|_| ConnectError::Timeout(timeouts.open))??;
    let echoed = response
        .headers()
        .get(SIGNAL_CONNECTION_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    Ok(Contacted {
        ws,
        signal: signal && echoed,
    })
}

/// Why a wake-up subscription could not be made or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The WebSocket could not be opened (410 is not expected here; 429 and 503 mean the
    /// relay's subscription limits: try again later).
    #[error("cannot open the wake-up subscription: {0}")]
    Connect(#[source] ConnectError),
    /// The relay did not send the next message of the subscription in time.
    #[error("the relay did not send the {0} in time")]
    Timeout(&'static str),
    /// The relay closed the connection while the phone proved its wake key (1008
    /// "subscription proof does not verify" is a wrong key or a host the relay does not
    /// see as its own, such as a proxy that rewrites `Host`).
    #[error("the relay refused the subscription: {reason:?} (code {code:?})")]
    Refused {
        /// The close code, if any.
        code: Option<u16>,
        /// Its reason.
        reason: String,
    },
    /// A newer subscription with the same wake key replaced this one (close 4001): another
    /// copy of this phone is subscribed. Do not fight it with an immediate reconnect.
    #[error("a newer subscription for this phone's contact ID replaced this one")]
    Replaced,
    /// The relay closed the subscription (1001: it is shutting down): reconnect with
    /// backoff.
    #[error("the relay closed the subscription: {reason:?} (code {code:?})")]
    Closed {
        /// The close code, if any.
        code: Option<u16>,
        /// Its reason.
        reason: String,
    },
    /// Nothing from the relay, not even a ping, for this long: the connection is taken
    /// for dead. Reconnect.
    #[error("the relay was silent for {} s; the subscription is taken for dead", .0.as_secs())]
    Silent(Duration),
    /// The relay sent something that is not a challenge, acknowledgement or wake-up.
    #[error("the relay broke the wake-up protocol: {0}")]
    Protocol(#[source] ContactError),
    /// The relay acknowledged another contact ID than this key's.
    #[error("the relay acknowledged another contact ID than this phone's")]
    WrongContactId,
    /// The relay URL has no host to sign for.
    #[error("the relay URL has no host the subscription proof can name")]
    Host,
    /// The WebSocket failed.
    #[error("{0}")]
    Tunnel(#[source] TunnelError),
}

impl From<ConnectError> for SubscribeError {
    fn from(e: ConnectError) -> Self {
        SubscribeError::Connect(e)
    }
}

/// A proven wake-up subscription: [`Subscription::next_wake`] yields the wake-ups.
pub struct Subscription {
    ws: Ws,
    contact_id: ContactId,
    idle: Duration,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("contact_id", &self.contact_id)
            .finish_non_exhaustive()
    }
}

/// The phone subscribes for wake-ups at the relay at `relay_url` (a host name, or a
/// `ws://`/`wss://` base URL): it opens `/cable/subscribe`, proves `wake_key` by signing the
/// relay's challenge for the relay's host, and returns once the relay acknowledged. The
/// contact ID is [`Subscription::contact_id`].
pub async fn subscribe(
    relay_url: &str,
    wake_key: &p256::SecretKey,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeouts: Timeouts,
) -> Result<Subscription, SubscribeError> {
    let url = format!("{}{SUBSCRIBE_PATH}", base_url(relay_url));
    // The host the relay sees in `Host`: the URL's authority (tungstenite writes it so).
    let host = url
        .as_str()
        .into_client_request()
        .ok()
        .and_then(|r| r.uri().authority().map(|a| a.as_str().to_owned()))
        .ok_or(SubscribeError::Host)?;
    let (mut ws, _) = timeout(timeouts.open, open(&url, WAKE_SUBPROTOCOL, &[], tls))
        .await
        .map_err(|_| ConnectError::Timeout(timeouts.open))??;
    let refused = |code, reason| SubscribeError::Refused { code, reason };
    let challenge = match step(&mut ws, timeouts.step, "challenge").await? {
        Data::Binary(m) => Challenge::decode(&m).map_err(SubscribeError::Protocol)?,
        Data::Closed(code, reason) => return Err(refused(code, reason)),
    };
    let proof = Proof::sign(wake_key, &challenge, &host).map_err(|_| SubscribeError::Host)?;
    ws.send(Message::Binary(proof.encode().into()))
        .await
        .map_err(|e| SubscribeError::Tunnel(TunnelError::WebSocket(WebSocketError(e))))?;
    let ack = match step(&mut ws, timeouts.step, "acknowledgement").await? {
        Data::Binary(m) => Ack::decode(&m).map_err(SubscribeError::Protocol)?,
        Data::Closed(code, reason) => return Err(refused(code, reason)),
    };
    let contact_id = ContactId::of(&wake_key.public_key());
    if ack.contact_id != contact_id {
        return Err(SubscribeError::WrongContactId);
    }
    Ok(Subscription {
        ws,
        contact_id,
        idle: timeouts.idle,
    })
}

impl Subscription {
    /// The contact ID the relay wakes this phone for (linking-map key 1).
    pub fn contact_id(&self) -> ContactId {
        self.contact_id
    }

    /// The next wake-up. Waits as long as the relay keeps the connection alive (its pings
    /// count); ends with an error when the relay closes it, replaces it, goes silent for
    /// [`Timeouts::idle`], or sends something that is not a wake-up. Reconnect with backoff
    /// after any of them except [`SubscribeError::Replaced`].
    pub async fn next_wake(&mut self) -> Result<Wake, SubscribeError> {
        match next_data(&mut self.ws, Some(self.idle)).await {
            Ok(Data::Binary(m)) => Wake::decode(&m).map_err(SubscribeError::Protocol),
            Ok(Data::Closed(Some(crate_close::REPLACED), _)) => Err(SubscribeError::Replaced),
            Ok(Data::Closed(code, reason)) => Err(SubscribeError::Closed { code, reason }),
            Err(TunnelError::Silent(d)) => Err(SubscribeError::Silent(d)),
            Err(e) => Err(SubscribeError::Tunnel(e)),
        }
    }

    /// The wake-ups as a stream, ending after the first error.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Wake, SubscribeError>> {
        futures_util::stream::unfold(Some(self), |sub| async move {
            let mut sub = sub?;
            match sub.next_wake().await {
                Ok(w) => Some((Ok(w), Some(sub))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// Ends the subscription politely; gives up silently after `limit`.
    pub async fn close(mut self, limit: Duration) {
        crate::close(&mut self.ws, limit).await;
    }
}

/// Close codes of the subscription protocol.
mod crate_close {
    /// A newer subscription replaced this one (the relay's `wake::CLOSE_REPLACED`).
    pub(super) const REPLACED: u16 = 4001;
}

enum Data {
    Binary(Vec<u8>),
    /// The peer closed: its code and reason, if it sent a close frame.
    Closed(Option<u16>, String),
}

async fn step(ws: &mut Ws, within: Duration, what: &'static str) -> Result<Data, SubscribeError> {
    match timeout(within, next_data(ws, None)).await {
        Err(_) => Err(SubscribeError::Timeout(what)),
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(SubscribeError::Tunnel(e)),
    }
}

/// The next binary message or the close, keeping the close frame's code and reason (which
/// [`crate::recv`] drops); pings and pongs are skipped within the flood bound, and with
/// `idle`, a silence that long is [`TunnelError::Silent`].
async fn next_data(ws: &mut Ws, idle: Option<Duration>) -> Result<Data, TunnelError> {
    let mut budget = crate::ControlBudget::default();
    loop {
        let next = match idle {
            Some(d) => timeout(d, ws.next())
                .await
                .map_err(|_| TunnelError::Silent(d))?,
            None => ws.next().await,
        };
        match next {
            None => return Ok(Data::Closed(None, String::new())),
            Some(Ok(Message::Binary(b))) => return Ok(Data::Binary(b.to_vec())),
            Some(Ok(Message::Close(f))) => {
                let (code, reason) = f
                    .map_or((None, String::new()), |CloseFrame { code, reason }| {
                        (Some(u16::from(code)), reason.to_string())
                    });
                return Ok(Data::Closed(code, reason));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => budget.spend()?,
            Some(Ok(Message::Text(_))) => return Err(TunnelError::TextMessage),
            Some(Err(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::AlreadyClosed,
            )) => return Ok(Data::Closed(None, String::new())),
            Some(Err(e)) => return Err(TunnelError::WebSocket(WebSocketError(e))),
        }
    }
}
