//! Listeners, reading and routing each request before the upgrade, and the relay's lifecycle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hybridge_proto::contact::Wake;
use hybridge_proto::tunnel::{RoutingId, TunnelId, TunnelPath};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout_at};

use crate::busy::BusyPoll;
use crate::cluster::Claim;
use crate::config::Config;
use crate::conn::Conn;
use crate::error::Error;
use crate::http::{self, Parsed, Request};
use crate::metrics::{Metrics, Reject, WakeResult};
use crate::pairing;
use crate::ratelimit::{RateLimiter, Ticket};
use crate::registry::{Handoff, Registry};
use crate::route::{self, Endpoint};
use crate::shared::{ConnGuard, PairingSlot, Phase, Shared, advance};
use crate::tls::TlsState;
use crate::wake;

/// A running relay. Dropping it closes everything at once; [`Relay::shutdown`] drains.
///
/// ```no_run
/// # async fn demo() -> Result<(), hybridge_relay::Error> {
/// let relay = hybridge_relay::Relay::bind(hybridge_relay::Config::default()).await?;
/// let base = relay.url(); // "ws://127.0.0.1:PORT", for TunnelPath::to_url
/// // ... run phones and laptops against `base` ...
/// relay.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(()) }
/// ```
pub struct Relay {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

fn listen(addr: SocketAddr) -> Result<TcpListener, Error> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    let sock = sock.map_err(|e| Error::Bind(addr, e))?;
    sock.set_reuseaddr(true).map_err(|e| Error::Bind(addr, e))?;
    // Accepted sockets inherit TCP_NODELAY on Linux: one syscall per connection saved.
    // Without it a forwarded message could wait for a delayed ACK (Nagle).
    sock.set_nodelay(true).map_err(|e| Error::Bind(addr, e))?;
    sock.bind(addr).map_err(|e| Error::Bind(addr, e))?;
    // A deep backlog: pairings arrive in bursts of two connections.
    sock.listen(4096).map_err(|e| Error::Bind(addr, e))
}

impl Relay {
    /// Binds the listeners and starts serving on the current tokio runtime.
    pub async fn bind(config: Config) -> Result<Relay, Error> {
        let tls = config.tls.as_ref().map(TlsState::new).transpose()?;
        let listener = listen(config.listen)?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Bind(config.listen, e))?;
        let metrics_listener = match config.metrics_listen {
            Some(a) => Some(listen(a)?),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let (phase, _) = watch::channel(Phase::Running);
        let shared = Arc::new(Shared {
            rate: RateLimiter::new(
                config.limits.rate_per_ip,
                config.limits.rate_burst,
                config.limits.max_unpaired_per_ip,
            ),
            limits: config.limits,
            routing_id: config.routing_id,
            routing_hex: config.routing_id.to_hex(),
            registry: Registry::default(),
            subs: Default::default(),
            metrics: Metrics::default(),
            tls,
            phase,
            tunnels: AtomicUsize::new(0),
            conns: AtomicUsize::new(0),
            client_ip_header: config.client_ip_header.clone(),
            origin: config.origin.as_ref().map(|o| o.as_str().to_owned()),
            metrics_on_main: metrics_listener.is_none(),
            busy: (!config.busy_poll.is_zero()).then(|| BusyPoll::new(config.busy_poll)),
        });
        if let Some(cc) = config.cluster {
            let cluster = crate::cluster::Cluster::start(
                cc,
                config.routing_id,
                cluster_acceptor(Arc::downgrade(&shared)),
                cluster_waker(Arc::downgrade(&shared)),
            )
            .await?;
            let _ = shared.registry.cluster.set(cluster);
        }
        let mut tasks = vec![tokio::spawn(accept_loop(shared.clone(), listener, false))];
        if let Some(l) = metrics_listener {
            tasks.push(tokio::spawn(accept_loop(shared.clone(), l, true)));
        }
        if shared.busy.is_some() {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                if let Some(b) = &s.busy {
                    b.run(s.phase.subscribe()).await;
                }
            }));
        }
        // Housekeeping: sweep per-IP entries that carry no information.
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut phase = s.phase.subscribe();
            loop {
                tokio::select! {
                    _ = sleep(Duration::from_secs(10)) => s.rate.sweep(std::time::Instant::now()),
                    _ = phase.wait_for(|p| *p >= Phase::Stopped) => break,
                }
            }
        }));
        Ok(Relay {
            shared,
            local_addr,
            metrics_addr,
            tasks,
        })
    }

    /// The tunnel listener's address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics listener's address, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Base URL of the relay (`ws://ip:port` or `wss://ip:port`), as taken by
    /// `hybridge_proto::tunnel::TunnelPath::to_url`.
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}", self.local_addr)
    }

    /// This instance's routing ID, as sent in `X-caBLE-Routing-ID`.
    pub fn routing_id(&self) -> RoutingId {
        self.shared.routing_id
    }

    /// The Prometheus text exposition, as served on `/metrics`.
    pub fn metrics_text(&self) -> String {
        self.shared.render_metrics()
    }

    /// Re-reads the PEM certificate and key. New connections use them; live tunnels are
    /// untouched. On error the old certificate stays in use.
    pub fn reload_tls(&self) -> Result<(), Error> {
        let tls = self.shared.tls.as_ref().ok_or(Error::NoTls)?;
        match tls.reload() {
            Ok(()) => {
                self.shared.metrics.tls_reloads.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => {
                self.shared.metrics.tls_reload_errors.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// Tunnels currently open (waiting or paired).
    pub fn tunnels(&self) -> usize {
        self.shared.tunnels.load(Relaxed)
    }

    /// Graceful shutdown: stop accepting, close waiting phones, let paired tunnels run for
    /// up to `drain`, then close the rest with 1001 and wait for them to go.
    pub async fn shutdown(self, drain: Duration) {
        self.handle().shutdown(drain).await;
        // Drop runs next and marks Stopped.
    }

    /// A cloneable handle that can shut the relay down from another task.
    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            shared: self.shared.clone(),
        }
    }
}

/// Shuts a [`Relay`] down from anywhere (a signal handler, a test's other task).
#[derive(Clone)]
pub struct RelayHandle {
    shared: Arc<Shared>,
}

impl RelayHandle {
    /// Same as [`Relay::shutdown`]; the `Relay` itself stays to be dropped by its owner.
    pub async fn shutdown(&self, drain: Duration) {
        let s = &self.shared;
        advance(&s.phase, Phase::Draining);
        let deadline = Instant::now() + drain;
        while s.tunnels.load(Relaxed) > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
        }
        self.close_now().await;
    }

    /// Ends the drain (or skips it): stops accepting, closes every tunnel with 1001 now and
    /// waits, at most the close timeout, for the connections to go. Also ends a
    /// [`RelayHandle::shutdown`] that another task is waiting on, at its next check.
    pub async fn close_now(&self) {
        let s = &self.shared;
        advance(&s.phase, Phase::Closing);
        let deadline = Instant::now() + s.limits.close_timeout + Duration::from_millis(500);
        while s.conns.load(Relaxed) > 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Tunnels currently open (waiting or paired).
    pub fn tunnels(&self) -> usize {
        self.shared.tunnels.load(Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        advance(&self.shared.phase, Phase::Stopped);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(c) = self.shared.cluster() {
            c.stop();
        }
    }
}

/// Hands a laptop bridged from another instance to the phone waiting here.
fn cluster_acceptor(shared: std::sync::Weak<Shared>) -> crate::cluster::Acceptor {
    Arc::new(move |tunnel_id, inc: crate::cluster::Incoming| {
        let Some(s) = shared.upgrade() else {
            return false;
        };
        let Some(tx) = s.registry.claim(&tunnel_id) else {
            return false;
        };
        // A phone that left since the claim drops the handoff, and the bridge with it.
        tx.send(Handoff {
            conn: Conn::Remote(Box::new(inc.stream)),
            early: inc.early,
            key: inc.key,
        })
        .is_ok()
    })
}

/// Hands wake-ups and takeovers from other instances to the phones subscribed here.
fn cluster_waker(shared: std::sync::Weak<Shared>) -> crate::cluster::WakeHandler {
    use crate::cluster::{Delivery, RemoteWake};
    Arc::new(move |id, w| {
        let Some(s) = shared.upgrade() else {
            return Delivery::Gone;
        };
        match w {
            RemoteWake::Wake(w) => s.subs.deliver(&id, w),
            RemoteWake::Taken => {
                s.subs.evict(&id);
                Delivery::Gone
            }
        }
    })
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, metrics_only: bool) {
    let mut phase = shared.phase.subscribe();
    let stop_at = if metrics_only {
        Phase::Stopped
    } else {
        Phase::Draining
    };
    let mut last_warn: Option<Instant> = None;
    loop {
        let r = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p >= stop_at) => break,
        };
        match r {
            Ok((tcp, peer)) => {
                shared.touch();
                #[cfg(not(target_os = "linux"))]
                let _ = tcp.set_nodelay(true);
                tokio::spawn(handle(shared.clone(), tcp, peer, metrics_only));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(error = %e, "accept failed");
                    last_warn = Some(Instant::now());
                }
                sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

enum HeadError {
    Io,
    TooLarge,
    Invalid,
}

async fn read_head(
    conn: &mut Conn,
    max: usize,
    client_ip_header: Option<&str>,
    origin_host: Option<&str>,
) -> Result<(Request, Vec<u8>), HeadError> {
    // Real request heads fit the first 1 KiB: one allocation and, usually, one read.
    let mut buf = Vec::with_capacity(1024.min(max));
    loop {
        if buf.len() >= max {
            return Err(HeadError::TooLarge);
        }
        if buf.len() == buf.capacity() {
            buf.reserve(1024.min(max - buf.len()));
        }
        match conn.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Io),
            Ok(_) => {}
        }
        match http::parse(&buf, client_ip_header, origin_host) {
            Parsed::Complete(req, len) => return Ok((req, buf[len..].to_vec())),
            Parsed::Partial => continue,
            Parsed::Invalid => return Err(HeadError::Invalid),
        }
    }
}

/// Sends a complete HTTP response and closes the connection.
async fn refuse(shared: Arc<Shared>, conn: Conn, status: u16, body: Option<(&str, String)>) {
    let (ctype, body) = body.unwrap_or(("text/plain", String::new()));
    let bytes = http::response(status, "", ctype, &body);
    conn.respond(bytes, shared.limits.close_timeout).await;
}

/// Refuses a request with the status for `r`. Boxed: refusals are rare, and their
/// futures would otherwise widen every connection's task.
async fn reject(shared: Arc<Shared>, conn: Conn, r: Reject, ticket: Ticket) {
    shared.metrics.reject(r);
    if r.charged() {
        ticket.charge();
    }
    tracing::debug!(reason = r.label(), "request refused");
    let bytes = http::response(r.status(), r.headers(), "text/plain", "");
    Box::pin(conn.respond(bytes, shared.limits.close_timeout)).await;
}

/// A connection that ended before its request was read: counted under `r`, if given, and
/// charged to its address.
fn ended_early(shared: &Shared, admission: Result<Ticket, Reject>, r: Option<Reject>) {
    if let Some(r) = r {
        shared.metrics.reject(r);
    }
    if let Ok(ticket) = admission {
        ticket.charge();
    }
}

async fn handle(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, metrics_only: bool) {
    let guard = ConnGuard::new(shared.clone());
    let limits = &shared.limits;
    let deadline = Instant::now() + limits.header_timeout;
    // The client's address is admitted (or not) at once; behind a proxy it is only known
    // from the request head. Admission costs nothing: the ticket is charged if the
    // connection ends badly (see ratelimit.rs). Health and metrics requests are answered
    // whatever the verdict.
    let mut admission = if metrics_only {
        Ok(Ticket::none())
    } else {
        shared.metrics.connections.fetch_add(1, Relaxed);
        match shared.client_ip_header {
            Some(_) => Ok(Ticket::none()),
            None => shared
                .rate
                .admit(peer.ip(), std::time::Instant::now())
                .map_err(Reject::from),
        }
    };
    let mut conn = match (&shared.tls, metrics_only) {
        (Some(tls), false) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            // Boxed: the handshake state is large and would otherwise stay in every
            // long-lived pairing task.
            match Box::pin(timeout_at(deadline, acceptor.accept(tcp))).await {
                Ok(Ok(s)) => Conn::Tls(Box::new(s)),
                Ok(Err(_)) => return ended_early(&shared, admission, Some(Reject::TlsHandshake)),
                Err(_) => return ended_early(&shared, admission, Some(Reject::HeaderTimeout)),
            }
        }
        _ => Conn::Plain(tcp),
    };
    let (req, early) = match timeout_at(
        deadline,
        read_head(
            &mut conn,
            limits.max_header_bytes,
            shared.client_ip_header.as_deref(),
            shared.origin.as_deref(),
        ),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(HeadError::Io)) => return ended_early(&shared, admission, None),
        Ok(Err(HeadError::TooLarge | HeadError::Invalid)) => {
            return match admission {
                Ok(ticket) => reject(shared, conn, Reject::BadRequest, ticket).await,
                // Over its limit, an address hears that first.
                Err(r) => reject(shared, conn, r, Ticket::none()).await,
            };
        }
        Err(_) => return ended_early(&shared, admission, Some(Reject::HeaderTimeout)),
    };

    // What the head asks for: route.rs decides, this function carries it out.
    let state = route::State {
        running: *shared.phase.borrow() == Phase::Running,
        cluster_ready: shared.cluster().map(|c| c.ready()),
        metrics_listener: metrics_only,
        metrics_on_main: shared.metrics_on_main,
        origin_required: shared.origin.is_some(),
    };
    if let Some(answer) = route::operational(&req, state) {
        let (code, body) = match answer {
            route::Operational::Text(code, body) => (code, Some(("text/plain", body.to_owned()))),
            route::Operational::Metrics => (
                200,
                Some(("text/plain; version=0.0.4", shared.render_metrics())),
            ),
            route::Operational::NotFound => (404, None),
        };
        return Box::pin(refuse(shared, conn, code, body)).await;
    }

    // Tunnel endpoints (docs/protocol.md §6.1, §6.2). Never log the path: it holds the tunnel ID.
    let client_ip = match shared.client_ip_header {
        Some(_) => req.client_ip.unwrap_or(peer.ip()),
        None => peer.ip(),
    };
    if shared.client_ip_header.is_some() {
        admission = shared
            .rate
            .admit(client_ip, std::time::Instant::now())
            .map_err(Reject::from);
    }
    let ticket = match admission {
        Ok(t) => t,
        Err(r) => return reject(shared, conn, r, Ticket::none()).await,
    };
    let (endpoint, key) = match route::tunnel(&req, state) {
        Ok(routed) => routed,
        Err(r) => return reject(shared, conn, r, ticket).await,
    };
    let path = match endpoint {
        Endpoint::Tunnel(path) => path,
        Endpoint::Subscribe { host } => {
            let place = match wake::Place::take(&shared, client_ip) {
                Ok(p) => p,
                Err(r) => return reject(shared, conn, r, ticket).await,
            };
            tokio::spawn(wake::serve_subscriber(
                place, guard, conn, early, key, host, ticket,
            ));
            return;
        }
        Endpoint::Contact {
            contact_id,
            client_payload,
            signal,
        } => {
            // The laptop waits here like a phone on /cable/new, on a tunnel ID the relay
            // picks; the woken phone joins with it and this instance's routing ID.
            let Some(slot) = PairingSlot::take(&shared) else {
                return reject(shared, conn, Reject::Capacity, ticket).await;
            };
            let tunnel_id = TunnelId(rand::random());
            let Ok(waiter) = shared.registry.register(tunnel_id, Claim::Local) else {
                drop(slot);
                return reject(shared, conn, Reject::Capacity, ticket).await;
            };
            let wake = Wake {
                tunnel_id,
                routing_id: shared.routing_id,
                client_payload,
            };
            let refusal = match Box::pin(wake::wake(&shared, contact_id, wake)).await {
                WakeResult::Local | WakeResult::Remote => None,
                WakeResult::Gone => Some(Reject::Gone),
                WakeResult::Busy => Some(Reject::WakeBusy),
                WakeResult::Unavailable => Some(Reject::ClusterUnavailable),
            };
            if let Some(r) = refusal {
                shared.registry.withdraw(&tunnel_id, waiter.generation);
                drop(slot);
                return reject(shared, conn, r, ticket).await;
            }
            let opener = pairing::Opener::Contact { signal };
            tokio::spawn(pairing::run(
                slot, guard, conn, early, key, waiter, ticket, opener,
            ));
            return;
        }
    };
    match path {
        TunnelPath::New { tunnel_id } => {
            let Some(slot) = PairingSlot::take(&shared) else {
                return reject(shared, conn, Reject::Capacity, ticket).await;
            };
            // In a cluster the ID is claimed cluster-wide first (409 on every instance).
            let claim = match shared.cluster() {
                Some(c) => match Box::pin(c.claim(&tunnel_id)).await {
                    Ok(claim) => claim,
                    Err(crate::cluster::Conflict) => {
                        drop(slot);
                        return reject(shared, conn, Reject::Conflict, ticket).await;
                    }
                },
                None => Claim::Local,
            };
            let Ok(waiter) = shared.registry.register(tunnel_id, claim) else {
                drop(slot);
                return reject(shared, conn, Reject::Conflict, ticket).await;
            };
            // The pairing gets a task of its own, and this one ends: what it needed to read
            // and route the request is freed instead of being kept for the tunnel's life.
            let opener = pairing::Opener::New;
            tokio::spawn(pairing::run(
                slot, guard, conn, early, key, waiter, ticket, opener,
            ));
        }
        TunnelPath::Connect {
            routing_id,
            tunnel_id,
        } => {
            // Another routing ID belongs to another instance: a cluster bridges
            // the laptop to it over NATS; a single relay knows no such tunnel.
            if routing_id != shared.routing_id
                && let Some(c) = shared.cluster().cloned()
            {
                // The bridge lasts as long as the tunnel: a paired laptop holds no place
                // among its address's unpaired connections (a refusal is still charged).
                let mut ticket = ticket;
                ticket.paired();
                if let Err((r, conn)) =
                    Box::pin(c.bridge_laptop(routing_id, tunnel_id, conn, early, key)).await
                {
                    let why = match r {
                        crate::cluster::Refused::NotFound => Reject::NotFound,
                        crate::cluster::Refused::Unavailable => Reject::ClusterUnavailable,
                    };
                    reject(shared, conn, why, ticket).await;
                }
                return;
            }
            let tx = (routing_id == shared.routing_id)
                .then(|| shared.registry.claim(&tunnel_id))
                .flatten();
            let Some(tx) = tx else {
                return reject(shared, conn, Reject::NotFound, ticket).await;
            };
            // Handed over, the laptop is paired and its ticket goes with this task.
            if let Err(h) = tx.send(Handoff { conn, early, key }) {
                reject(shared, h.conn, Reject::NotFound, ticket).await;
            }
        }
        // route::tunnel makes every contact path an Endpoint::Contact.
        TunnelPath::Contact { .. } => reject(shared, conn, Reject::NotFound, ticket).await,
    }
}
