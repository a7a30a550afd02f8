//! Relay configuration: where to listen, who we are, and every limit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hybridge_proto::tunnel::RoutingId;

/// Everything [`crate::Relay::bind`] needs. `Config::default()` listens on an ephemeral
/// loopback port with the public defaults for every limit, which is what tests want.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address of the tunnel listener (`ws://` or, with `tls`, `wss://`).
    pub listen: SocketAddr,
    /// Separate listener for `/metrics`, `/healthz` and `/readyz`. When `None`, `/metrics`
    /// is served on the tunnel listener instead (health endpoints are always served there).
    pub metrics_listen: Option<SocketAddr>,
    /// This instance's routing ID, sent in `X-caBLE-Routing-ID`; `/cable/connect` must
    /// name it. In a cluster each node has its own.
    pub routing_id: RoutingId,
    /// PEM certificate chain and private key for built-in TLS; `None` for plain ws behind a
    /// TLS-terminating proxy.
    pub tls: Option<TlsFiles>,
    /// Behind a proxy: the request header carrying the client's address
    /// (`X-Forwarded-For`, rightmost entry, or `X-Real-IP`), used for the per-IP rate
    /// limit. Without it every client looks like the proxy. Only set this when a proxy
    /// you control always sets the header.
    pub client_ip_header: Option<String>,
    /// The relay's host as clients reach it (`cable.example.org`, or `host:port`). When set,
    /// `/cable/new`, `/cable/connect` and `/cable/contact` refuse (403) a request whose
    /// `Origin` is missing or names another host ([`OriginHost`] says what matches). `None`:
    /// `Origin` is not looked at.
    pub origin: Option<OriginHost>,
    /// Timeouts, sizes and counts, each with a default a public deployment can live with.
    pub limits: Limits,
    /// Cluster mode over NATS; `None` runs alone, with no external dependency.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Keep polling for I/O this long after the last activity before the thread sleeps
    /// (zero: off). A sleeping thread has to be woken for the next message, which on a VM
    /// costs an inter-processor interrupt and tens of microseconds per hop; polling trades
    /// some idle CPU for that latency. Meant for the single-threaded runtime.
    pub busy_poll: Duration,
}

/// PEM files for built-in TLS, re-read on [`crate::Relay::reload_tls`] (SIGHUP).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`fullchain.pem`).
    pub cert: PathBuf,
    /// The private key of the leaf certificate.
    pub key: PathBuf,
}

/// The host an `Origin` header must name ([`Config::origin`], `--origin`): a host name or
/// address with an optional port (`cable.example.org`, `127.0.0.1:8080`, `[::1]:8443`), kept
/// in lower case. Made with [`str::parse`].
///
/// An `Origin` matches when it is `scheme://authority` (RFC 6454 §6.2) and its authority,
/// with or without its port, is this host, ignoring case; the scheme is not compared
/// (phones send `wss://`, browsers `https://`). So `cable.example.org` accepts
/// `wss://cable.example.org` and `wss://cable.example.org:443`, while `127.0.0.1:8080`
/// accepts only `…://127.0.0.1:8080`.
///
/// ```
/// let host: hybridge_relay::OriginHost = "Cable.Example.org".parse()?;
/// assert_eq!(host.as_str(), "cable.example.org");
/// assert!("https://cable.example.org/".parse::<hybridge_relay::OriginHost>().is_err());
/// # Ok::<(), hybridge_relay::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginHost(String);

impl OriginHost {
    /// The host, in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for OriginHost {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::http::origin_host(s)
            .map(OriginHost)
            .ok_or_else(|| crate::Error::OriginHost(s.to_owned()))
    }
}

/// Default largest message: the largest record a hybrid peer may send, a 1 MiB plaintext
/// padded and sealed (`crypter::MAX_CIPHERTEXT_LEN`), so no valid record is ever cut off.
const DEFAULT_MAX_MESSAGE_SIZE: u64 = hybridge_proto::crypter::MAX_CIPHERTEXT_LEN as u64;

/// Every limit, with defaults a public deployment can live with.
#[derive(Clone, Debug)]
pub struct Limits {
    /// How long a phone on `/cable/new` waits for the laptop before it is closed (1008).
    pub pairing_timeout: Duration,
    /// Lifetime of a tunnel, counted from the phone's `/cable/new` (1008 when exceeded).
    pub tunnel_ttl: Duration,
    /// After pairing, the first message must flow within this time (1008), so a pair of
    /// silent sockets cannot sit on a slot for the whole lifetime.
    pub first_message_timeout: Duration,
    /// Time allowed from TCP accept to a complete request head (including the TLS
    /// handshake): a client that connects and sends nothing is dropped after this.
    pub header_timeout: Duration,
    /// Longest request head, in bytes.
    pub max_header_bytes: usize,
    /// Time allowed to deliver a close frame and see the peer's end of the stream.
    pub close_timeout: Duration,
    /// Largest message in bytes (1009 when exceeded). Messages are streamed through frame
    /// by frame, so this does not cost memory.
    pub max_message_size: u64,
    /// Most messages per tunnel, both directions together (1008 when exceeded); 0 = no limit.
    pub max_messages: u64,
    /// Most concurrent tunnels (waiting phones and paired), 503 beyond.
    pub max_tunnels: usize,
    /// Failures per second a client IP (IPv6: /64) earns back; 0 disables the failure
    /// budget. A failure is a connection that ends badly: no complete request in time,
    /// garbage, a refusal (400, 403, 404, 405, 409), a phone no laptop came for. Tunnels
    /// that pair cost nothing. See `ratelimit.rs`.
    pub rate_per_ip: f64,
    /// Failures a client IP may have in a burst before it gets 429.
    pub rate_burst: u32,
    /// Most connections of one client IP that are not part of a paired tunnel (requests
    /// being read, phones waiting), 429 beyond; 0 for no limit. Sized for carrier-grade
    /// NAT, where many phones share an address.
    pub max_unpaired_per_ip: usize,
    /// Bytes queued per direction (and before the peer joins) before the relay stops
    /// reading from the sender: backpressure instead of unbounded buffering.
    pub queue_bytes: usize,
    /// How long a laptop on `/cable/contact` waits for the woken phone to join before it is
    /// closed (1008, "the phone did not answer the wake-up in time").
    pub contact_timeout: Duration,
    /// How often the relay pings a subscribed phone; one silent for two intervals is
    /// dropped, and the phone reconnects.
    pub subscription_ping_interval: Duration,
    /// Most wake-up subscriptions (proven or proving) at once, 503 beyond.
    pub max_subscriptions: usize,
    /// Most wake-up subscriptions one client IP (IPv6: /64) may hold, 429 beyond; 0 for no
    /// limit. They are not counted among its unpaired connections once proven.
    pub max_subscriptions_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pairing_timeout: Duration::from_secs(60),
            tunnel_ttl: Duration::from_secs(300),
            first_message_timeout: Duration::from_secs(15),
            header_timeout: Duration::from_secs(5),
            max_header_bytes: 8 * 1024,
            close_timeout: Duration::from_secs(2),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_messages: 256,
            max_tunnels: 10_000,
            rate_per_ip: 20.0,
            rate_burst: 100,
            max_unpaired_per_ip: 1000,
            queue_bytes: 64 * 1024,
            contact_timeout: Duration::from_secs(30),
            subscription_ping_interval: Duration::from_secs(30),
            max_subscriptions: 10_000,
            max_subscriptions_per_ip: 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            routing_id: random_routing_id(),
            tls: None,
            client_ip_header: None,
            origin: None,
            limits: Limits::default(),
            cluster: None,
            busy_poll: Duration::ZERO,
        }
    }
}

/// A random routing ID (the default when none is configured).
fn random_routing_id() -> RoutingId {
    RoutingId(rand::random())
}
