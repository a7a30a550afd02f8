//! The tunnel WebSocket (docs/protocol.md §6): `ws://` for local relays, `wss://` with rustls and the
//! webpki roots otherwise; subprotocol `fido.cable`, which the server must echo; one binary
//! message per protocol message, up to 1 MiB.
//!
//! Both sides use it: the laptop session (`hybridge-client`) for `/cable/connect`, the phone
//! session (`hybridge-authenticator`) for `/cable/new`; and for linked phones ([`linked`]) the
//! laptop for `/cable/contact` and the phone for its wake-up subscription. Every protocol decision stays in
//! `hybridge-proto`; this crate only opens the socket and moves messages, and carries the
//! [`Events`] emitter both sessions report their progress through.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod events;
pub mod linked;

pub use events::Events;
pub use linked::{
    Contacted, PhoneJoinError, SubscribeError, Subscription, Timeouts, contact, subscribe,
};

use std::sync::{Arc, OnceLock};

use futures_util::{SinkExt, StreamExt};
use hybridge_proto::tunnel::SUBPROTOCOL;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// Largest WebSocket message accepted: the largest record, a 1 MiB plaintext padded and
/// sealed (the relay's default limit is the same).
pub const MAX_MESSAGE_LEN: usize = hybridge_proto::crypter::MAX_CIPHERTEXT_LEN;

/// Any byte stream a WebSocket can run over (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected tunnel WebSocket.
pub type Ws = WebSocketStream<Box<dyn Io>>;

/// The HTTP response that upgraded the connection (101).
pub type UpgradeResponse = tungstenite::handshake::client::Response;

/// The WebSocket library's own error, kept as the source of ours: its message and its chain
/// are there for a reader, its type is not part of this crate's API.
#[derive(Debug)]
pub struct WebSocketError(tungstenite::Error);

impl std::fmt::Display for WebSocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for WebSocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Why a tunnel connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Not a `ws://` or `wss://` URL with a host.
    #[error("invalid tunnel URL: {0}")]
    Url(&'static str),
    /// Not `ws` or `wss`.
    #[error("invalid tunnel URL: the scheme must be ws or wss, not {0:?}")]
    Scheme(String),
    /// The URL does not parse as a WebSocket request.
    #[error("invalid tunnel URL: {0}")]
    Request(#[source] WebSocketError),
    /// The host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// No TCP connection to the server.
    #[error("cannot connect to {host}:{port}: {source}")]
    Tcp {
        /// The server's host.
        host: String,
        /// Its port.
        port: u16,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// TLS with the server failed: it is not who it claims to be for the trusted roots, or it
    /// does not speak TLS.
    #[error("TLS with {host}:{port} failed: {source}")]
    Tls {
        /// The server's host.
        host: String,
        /// Its port.
        port: u16,
        /// rustls's reason, as an I/O error.
        source: std::io::Error,
    },
    /// The connection failed during the WebSocket upgrade.
    #[error("the connection failed during the WebSocket upgrade: {0}")]
    Io(#[source] std::io::Error),
    /// The server answered the upgrade with this HTTP status.
    #[error("the server answered HTTP {0} instead of 101")]
    Refused(u16),
    /// `/cable/contact` answered 410 Gone: no phone is subscribed to that contact ID, so the
    /// phone is unreachable through this relay (it is offline, or the link is dead).
    #[error(
        "the phone is unreachable: the relay has no phone subscribed to this contact ID (HTTP 410)"
    )]
    Gone,
    /// Opening the connection (TCP, TLS and the upgrade) took longer than allowed.
    #[error("the relay did not accept the connection within {} ms", .0.as_millis())]
    Timeout(std::time::Duration),
    /// The server did not echo the subprotocol (`fido.cable`, or `hybridge.wake` for a
    /// subscription).
    #[error(
        "the server did not accept the WebSocket subprotocol ({SUBPROTOCOL} or hybridge.wake): not a hybrid tunnel server, or one without wake-up subscriptions?"
    )]
    Subprotocol,
    /// Anything else in the WebSocket handshake.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[source] WebSocketError),
}

/// Why an open tunnel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The WebSocket failed (the connection broke, a frame was malformed or too large).
    #[error("{0}")]
    WebSocket(#[source] WebSocketError),
    /// More than [`MAX_CONTROL_FRAMES`] pings or pongs within [`CONTROL_WINDOW`] and no data.
    #[error(
        "the tunnel server sent more than {MAX_CONTROL_FRAMES} pings or pongs within {} ms and \
         no data: a ping flood, not a relay",
        CONTROL_WINDOW.as_millis()
    )]
    PingFlood,
    /// A text message: hybrid uses binary messages only.
    #[error("the tunnel carried a text message; hybrid uses binary only")]
    TextMessage,
    /// Nothing at all arrived, not even a ping, for this long.
    #[error("the tunnel server sent nothing for {} s", .0.as_secs())]
    Silent(std::time::Duration),
    /// The session ran over the CTAP 2.3 data channel (BLE L2CAP) and that failed.
    #[error("{0}")]
    DataChannel(#[source] hybridge_ble::Error),
}

/// Why the transport failed, as a driver keeps it for its error: the session engine is only
/// told *that* it failed and decides what that means for the session.
#[derive(Debug)]
pub enum Cause {
    /// The tunnel could not be opened.
    Connect(ConnectError),
    /// The open tunnel failed.
    Tunnel(TunnelError),
}

/// Why a CA file for a self-hosted relay is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaFileError {
    /// The file cannot be read or holds something that is not PEM.
    #[error("cannot read CA certificates from {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The reader's reason.
        source: rustls_pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("{} holds no PEM certificate", .0.display())]
    Empty(std::path::PathBuf),
    /// A certificate cannot be a trust anchor.
    #[error("a certificate in {path} is unusable as a trust anchor: {source}")]
    Unusable {
        /// The file.
        path: std::path::PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// A shared TLS client configuration, as the sessions' `tls` settings take it.
pub type ClientTls = Arc<rustls::ClientConfig>;

/// The default TLS client configuration: ring, webpki roots, TLS 1.2 and 1.3.
pub fn default_tls() -> Arc<rustls::ClientConfig> {
    static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Arc::new(tls_with_roots(roots))
    })
    .clone()
}

/// A TLS client configuration trusting exactly `roots` (for self-hosted relays with a private
/// CA, and tests).
pub fn tls_with_roots(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // Only fails for a provider without the default versions, which ring has.
        .unwrap_or_else(|_| rustls::ClientConfig::builder());
    builder.with_root_certificates(roots).with_no_client_auth()
}

/// A TLS client configuration trusting the webpki roots and, in addition, every certificate
/// in the PEM file at `pem` (a self-hosted relay's private CA). Fails with a message naming
/// the file when it cannot be read or holds no certificate.
pub fn tls_trusting(pem: &std::path::Path) -> Result<ClientTls, CaFileError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let read = |source| CaFileError::Read {
        path: pem.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(pem)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(CaFileError::Empty(pem.to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in certs {
        roots.add(cert).map_err(|source| CaFileError::Unusable {
            path: pem.to_owned(),
            source,
        })?;
    }
    Ok(Arc::new(tls_with_roots(roots)))
}

/// Most bytes the WebSocket may hold unsent: one largest message and its framing, plus room
/// for the control frames that answer the peer. Beyond it a send fails, and a pong the peer
/// does not read is replaced by the next one instead of queued, so a relay that pings without
/// reading cannot grow our memory (tungstenite's default is unbounded).
pub const MAX_WRITE_BUFFER: usize = MAX_MESSAGE_LEN + 64 * 1024;

/// Most control frames (pings, pongs) accepted within one [`CONTROL_WINDOW`] while waiting
/// for a message. Relays ping every few seconds to keep a tunnel alive; thousands a second is
/// a flood, answered with an error instead of a busy loop.
pub const MAX_CONTROL_FRAMES: u32 = 256;

/// The window [`MAX_CONTROL_FRAMES`] is counted over.
pub const CONTROL_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Counts control frames against [`MAX_CONTROL_FRAMES`] per [`CONTROL_WINDOW`].
#[derive(Debug, Default)]
pub(crate) struct ControlBudget {
    window: Option<tokio::time::Instant>,
    count: u32,
}

impl ControlBudget {
    /// One more control frame: an error once there were too many in the window.
    pub(crate) fn spend(&mut self) -> Result<(), TunnelError> {
        if self.window.is_none_or(|w| w.elapsed() >= CONTROL_WINDOW) {
            self.window = Some(tokio::time::Instant::now());
            self.count = 0;
        }
        self.count += 1;
        if self.count > MAX_CONTROL_FRAMES {
            return Err(TunnelError::PingFlood);
        }
        Ok(())
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_LEN))
        .max_frame_size(Some(MAX_MESSAGE_LEN))
        .max_write_buffer_size(MAX_WRITE_BUFFER)
}

/// The origin of a tunnel URL, as Chromium sends it (`url::Origin` of the URL itself):
/// `scheme://host`, with the port only when it is not the scheme's default. Tunnel servers
/// in production mode (webauthn-rs's `--origin`, hybridge-relay's `--origin`) refuse an
/// upgrade without one.
///
/// ```
/// # use hybridge_websocket::origin_of;
/// let uri = "wss://cable.example.com/cable/new/00".parse().unwrap();
/// assert_eq!(origin_of(&uri).unwrap(), "wss://cable.example.com");
/// let uri = "ws://127.0.0.1:8080/cable/new/00".parse().unwrap();
/// assert_eq!(origin_of(&uri).unwrap(), "ws://127.0.0.1:8080");
/// ```
pub fn origin_of(uri: &tungstenite::http::Uri) -> Result<String, ConnectError> {
    let scheme = uri.scheme_str().unwrap_or("");
    let default_port = match scheme {
        "wss" => 443,
        "ws" => 80,
        other => {
            return Err(ConnectError::Scheme(other.to_owned()));
        }
    };
    let host = uri
        .host()
        .ok_or(ConnectError::Url("the URL has no host"))?
        .to_ascii_lowercase();
    Ok(match uri.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Opens a tunnel WebSocket to `url` (`ws://` or `wss://`), offering `fido.cable` and
/// requiring the server to echo it. No timeout here: the caller wraps the whole connect in its
/// step timeout.
pub async fn connect(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Ws, UpgradeResponse), ConnectError> {
    open(url, SUBPROTOCOL, &[], tls).await
}

/// Opens a WebSocket to `url` offering `protocol`, which the server must echo, with extra
/// request headers. What [`connect`], [`contact`] and [`subscribe`] share.
async fn open(
    url: &str,
    protocol: &'static str,
    headers: &[(&'static str, String)],
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Ws, UpgradeResponse), ConnectError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ConnectError::Request(WebSocketError(e)))?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    for (name, value) in headers {
        let value = HeaderValue::from_str(value)
            .map_err(|_| ConnectError::Url("a request header is not a valid HTTP header value"))?;
        request.headers_mut().insert(*name, value);
    }
    let uri = request.uri().clone();
    let origin = origin_of(&uri)?;
    request.headers_mut().insert(
        header::ORIGIN,
        HeaderValue::from_str(&origin)
            .map_err(|_| ConnectError::Url("its origin is not a valid HTTP header value"))?,
    );
    // origin_of accepted the scheme: ws or wss.
    let secure = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .ok_or(ConnectError::Url("the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| ConnectError::Tcp {
            host: host.clone(),
            port,
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if secure {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|_| ConnectError::ServerName(host.clone()))?;
        let connector = tokio_rustls::TlsConnector::from(tls.unwrap_or_else(default_tls));
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                host: host.clone(),
                port,
                source,
            })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(r) if r.status().as_u16() == 410 => ConnectError::Gone,
                tungstenite::Error::Http(r) => ConnectError::Refused(r.status().as_u16()),
                tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_),
                ) => ConnectError::Subprotocol,
                tungstenite::Error::Io(e) => ConnectError::Io(e),
                other => ConnectError::Handshake(WebSocketError(other)),
            })?;
    let echoed = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if echoed != Some(protocol) {
        return Err(ConnectError::Subprotocol);
    }
    Ok((ws, response))
}

/// The next binary message. `Ok(None)`: the peer closed the tunnel. Pings and pongs are
/// skipped (tungstenite answers pings itself) up to [`MAX_CONTROL_FRAMES`] a
/// [`CONTROL_WINDOW`]; more is a flood and an error, as is a text message.
pub async fn recv(ws: &mut Ws) -> Result<Option<Vec<u8>>, TunnelError> {
    // The window starts at the first control frame: a data message costs no clock read.
    let mut budget = ControlBudget::default();
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Ok(Message::Binary(b))) => return Ok(Some(b.to_vec())),
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => budget.spend()?,
            Some(Ok(Message::Text(_))) => {
                return Err(TunnelError::TextMessage);
            }
            Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                return Ok(None);
            }
            Some(Err(e)) => return Err(TunnelError::WebSocket(WebSocketError(e))),
        }
    }
}

/// Sends one binary message.
pub async fn send(ws: &mut Ws, message: Vec<u8>) -> Result<(), TunnelError> {
    ws.send(Message::Binary(message.into()))
        .await
        .map_err(|e| TunnelError::WebSocket(WebSocketError(e)))
}

/// What the link said next, as a session engine takes it.
#[derive(Debug)]
pub enum Arrival {
    /// One binary message.
    Message(Vec<u8>),
    /// The peer closed the link.
    Closed,
    /// The link failed.
    Failed(TunnelError),
}

impl Arrival {
    /// What the session engine is told, and the failure's cause, which the driver keeps for
    /// its error (the engine only needs to know that the link failed).
    pub fn split(self) -> (hybridge_proto::engine::LinkEvent, Option<Cause>) {
        use hybridge_proto::engine::LinkEvent;
        match self {
            Arrival::Message(m) => (LinkEvent::Received(m), None),
            Arrival::Closed => (LinkEvent::Closed, None),
            Arrival::Failed(e) => (LinkEvent::Failed, Some(Cause::Tunnel(e))),
        }
    }
}

/// What a session runs over once the peer is reached: the relay's tunnel, or the CTAP 2.3
/// data channel straight to the peer. The session engine does not care which; its driver
/// moves the same messages either way.
pub enum Link {
    /// The tunnel WebSocket through the relay.
    Tunnel(Box<Ws>),
    /// The data channel (BLE L2CAP): the relay is not involved.
    DataChannel(hybridge_ble::DataChannel),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Tunnel(_) => "Link::Tunnel",
            Link::DataChannel(_) => "Link::DataChannel",
        })
    }
}

impl Link {
    /// Sends one message unless `deadline` comes first: `None` when it did (the engine's
    /// timer decides what that means), else the send's result.
    pub async fn send_by(
        &mut self,
        message: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Option<Result<(), TunnelError>> {
        let sent = async {
            match self {
                Link::Tunnel(ws) => send(ws, message).await,
                Link::DataChannel(c) => c.send(&message).await.map_err(TunnelError::DataChannel),
            }
        };
        tokio::time::timeout_at(deadline, sent).await.ok()
    }

    /// Closes the link politely; gives up silently after `limit`.
    pub async fn close(self, limit: std::time::Duration) {
        match self {
            Link::Tunnel(mut ws) => close(&mut ws, limit).await,
            Link::DataChannel(c) => c.close().await,
        }
    }
}

/// The next thing the link says; without a link, never (so a driver can wait on it in a
/// `select!` before the link is open).
pub async fn arrival(link: Option<&mut Link>) -> Arrival {
    let received = match link {
        None => return std::future::pending().await,
        Some(Link::Tunnel(ws)) => recv(ws).await,
        Some(Link::DataChannel(c)) => c.recv().await.map_err(TunnelError::DataChannel),
    };
    match received {
        Ok(Some(m)) => Arrival::Message(m),
        Ok(None) => Arrival::Closed,
        Err(e) => Arrival::Failed(e),
    }
}

/// The session engines' clock: tokio's, as a `std` instant, so that a test that pauses
/// tokio's time pauses the session too.
pub fn engine_now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// An engine's next deadline (`poll_timeout`) as a tokio instant; far away when it has none.
pub fn wake_at(t: Option<std::time::Instant>) -> tokio::time::Instant {
    match t {
        Some(t) => tokio::time::Instant::from_std(t),
        None => deadline(tokio::time::Instant::now(), std::time::Duration::MAX),
    }
}

/// Closes the WebSocket politely; gives up silently after `limit`.
pub async fn close(ws: &mut Ws, limit: std::time::Duration) {
    let _ = tokio::time::timeout(limit, async {
        let _ = ws.close(None).await;
        // Drain until the peer's close arrives.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// `since + limit`, or a deadline decades away when that does not fit in an `Instant`: a
/// caller may pass `Duration::MAX` to mean "no limit", which plain addition turns into a
/// panic.
pub fn deadline(since: tokio::time::Instant, limit: std::time::Duration) -> tokio::time::Instant {
    const FAR: std::time::Duration = std::time::Duration::from_secs(60 * 60 * 24 * 365 * 30);
    since
        .checked_add(limit)
        .or_else(|| since.checked_add(FAR))
        .unwrap_or(since)
}

#[cfg(test)]
mod deadline_tests {
    use std::time::Duration;

    #[test]
    fn no_limit_does_not_overflow() {
        let now = tokio::time::Instant::now();
        assert_eq!(
            super::deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(super::deadline(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    /// A fake tunnel server: reads one upgrade request, answers 101 with `fido.cable`, and
    /// returns the request's text and the raw socket, for the test to do as a hostile relay
    /// would.
    async fn fake_server() -> (String, tokio::sync::oneshot::Receiver<(String, TcpStream)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "ws://{}/cable/new/{}",
            listener.local_addr().unwrap(),
            "00".repeat(16)
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                tcp.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let key = request
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Sec-WebSocket-Key: ")
                        .or_else(|| l.strip_prefix("sec-websocket-key: "))
                })
                .unwrap()
                .trim()
                .to_owned();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            tcp.write_all(answer.as_bytes()).await.unwrap();
            let _ = tx.send((request, tcp));
        });
        (url, rx)
    }

    #[tokio::test]
    async fn the_upgrade_carries_the_tunnel_urls_origin() {
        let (url, server) = fake_server().await;
        let port = url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let (_ws, _) = connect(&url, None).await.unwrap();
        let (request, _tcp) = server.await.unwrap();
        let origin = request
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("origin: ")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no Origin header in\n{request}"));
        assert_eq!(origin.trim(), format!("ws://127.0.0.1:{port}"));
    }

    #[test]
    fn the_origin_drops_the_default_port_and_keeps_others() {
        let origin = |u: &str| origin_of(&u.parse().unwrap()).unwrap();
        assert_eq!(
            origin("wss://Cable.UA5V.com/cable/new/00"),
            "wss://cable.ua5v.com"
        );
        assert_eq!(origin("wss://relay.example:443/x"), "wss://relay.example");
        assert_eq!(
            origin("wss://relay.example:8443/x"),
            "wss://relay.example:8443"
        );
        assert_eq!(origin("ws://[::1]:80/x"), "ws://[::1]");
        let err = origin_of(&"https://x/".parse().unwrap()).unwrap_err();
        assert!(
            matches!(&err, ConnectError::Scheme(s) if s == "https"),
            "{err:?}"
        );
        assert!(err.to_string().contains("ws or wss"), "{err}");
    }

    /// A relay that sends pings as fast as it can and never reads: the pongs we owe it cannot
    /// be written, and a flood is not a tunnel. `recv` must end with a clear error soon
    /// instead of spinning (and, before the write buffer was bounded, growing ~55 MB/s).
    #[tokio::test]
    async fn a_ping_flood_that_never_reads_ends_recv_with_an_error() {
        let (url, server) = fake_server().await;
        let (mut ws, _) = connect(&url, None).await.unwrap();
        let (_, mut tcp) = server.await.unwrap();
        let flood = tokio::spawn(async move {
            // Unmasked server frames: FIN + ping, 125-byte payload.
            let mut frame = vec![0x89, 125];
            frame.extend_from_slice(&[0x55; 125]);
            let burst = frame.repeat(64);
            while tcp.write_all(&burst).await.is_ok() {}
        });
        let got = tokio::time::timeout(std::time::Duration::from_secs(20), recv(&mut ws))
            .await
            .expect("recv kept answering a ping flood instead of giving up");
        let err = got.expect_err("a flood is not a message");
        assert!(matches!(err, TunnelError::PingFlood), "{err}");
        assert!(err.to_string().contains("ping flood"), "{err}");
        flood.abort();
    }
}
