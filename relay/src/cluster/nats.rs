//! The cluster over NATS: claims in a JetStream key-value bucket, connect requests and
//! heartbeats on core subjects, bridged bytes through [`super::stream`].

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use hybridge_proto::contact::{CONTACT_ID_LEN, ContactId, Wake};
use hybridge_proto::tunnel::{ROUTING_ID_LEN, RoutingId, TunnelId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use super::stream::{BridgeFailure, BridgeIo, FrameTracker, RemoteStream};
use super::url::{UrlAuth, redact_url, strip_credentials, url_auth};
use super::{
    Acceptor, Claim, ClusterConfig, Conflict, Delivery, Incoming, Refused, RemoteWake, WakeHandler,
    WakeRefused,
};

/// Heartbeats per peer timeout: a peer is given up after missing this many in a row.
const HEARTBEATS_PER_TIMEOUT: u32 = 5;
/// Time for NATS round trips on the request path (claims, connect requests, wake-ups).
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

// Wake-up subject messages: `W` | contact ID (32) | wake message (a request, replied to with
// one byte: WAKE_QUEUED, WAKE_GONE or WAKE_BUSY); `T` | routing ID (3): a phone subscribed
// for this contact ID on that instance (a plain publish).
const WAKE_REQUEST: u8 = b'W';
const WAKE_TAKEN: u8 = b'T';
const WAKE_QUEUED: u8 = 0;
const WAKE_GONE: u8 = 1;
const WAKE_BUSY: u8 = 2;

/// The NATS link's state, watched by every bridge.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Link {
    /// Connected and the claims bucket is in place.
    pub up: bool,
    /// Incremented on every loss: a bridge from an earlier epoch is dead.
    pub epoch: u64,
}

/// Last heartbeat seen from each peer instance.
pub(crate) struct Peers {
    last: Mutex<HashMap<String, Instant>>,
    timeout: Duration,
}

impl Peers {
    fn new(timeout: Duration) -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// How often this instance announces itself.
    fn heartbeat(&self) -> Duration {
        (self.timeout / HEARTBEATS_PER_TIMEOUT).max(Duration::from_millis(50))
    }

    fn saw(&self, rid: &str) {
        if let Ok(mut m) = self.last.lock() {
            m.insert(rid.to_owned(), Instant::now());
        }
    }

    /// Whether `rid` was heard from recently (or the bridge is younger than the timeout).
    pub(crate) fn alive(&self, rid: &str, since: Instant) -> bool {
        let last = self
            .last
            .lock()
            .ok()
            .and_then(|m| m.get(rid).copied())
            .map_or(since, |t| t.max(since));
        last.elapsed() < self.timeout
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub(crate) struct Stats {
    bridges_active: AtomicU64,
    bridges_total: AtomicU64,
    /// Indexed by [`BridgeFailure`].
    failures: [AtomicU64; BridgeFailure::ALL.len()],
    claims: AtomicU64,
    claim_conflicts: AtomicU64,
    claims_local_only: AtomicU64,
    connects_forwarded: AtomicU64,
    connects_refused: AtomicU64,
    link_losses: AtomicU64,
    wakes_forwarded: AtomicU64,
}

impl Stats {
    pub(crate) fn bridge_opened(&self) {
        self.bridges_active.fetch_add(1, Relaxed);
        self.bridges_total.fetch_add(1, Relaxed);
    }

    pub(crate) fn bridge_closed(&self) {
        self.bridges_active.fetch_sub(1, Relaxed);
    }

    pub(crate) fn bridge_failed(&self, reason: BridgeFailure) {
        self.failures[reason as usize].fetch_add(1, Relaxed);
    }
}

// Connect request: tunnel ID (16) | bridge ID (16) | sender routing ID (3) |
// key length (u16 BE) | key | early bytes. Reply: one status byte.
const REPLY_OK: u8 = 0;
const REPLY_UNKNOWN: u8 = 1;

/// A relay's membership in a cluster.
pub(crate) struct Cluster {
    client: async_nats::Client,
    routing_id: RoutingId,
    /// `routing_id` in lower-case hex, as it appears in subjects and claims.
    routing_hex: String,
    prefix: String,
    link: watch::Sender<Link>,
    kv: Mutex<Option<async_nats::jetstream::kv::Store>>,
    peers: Arc<Peers>,
    stats: Arc<Stats>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    waker: WakeHandler,
}

/// This instance listens for wake-ups of one subscribed phone; dropping it stops (and
/// unsubscribes, as the subscriber goes with the task).
pub(crate) struct ContactWatch(JoinHandle<()>);

impl Drop for ContactWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Cluster {
    /// Connects to NATS in the background (the relay starts whether or not NATS is there)
    /// and serves this instance's `/connect` requests through `acceptor`. Must be called
    /// inside a tokio runtime.
    pub(crate) async fn start(
        config: ClusterConfig,
        routing_id: RoutingId,
        acceptor: Acceptor,
        waker: WakeHandler,
    ) -> Result<Arc<Cluster>, crate::Error> {
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let mut options = match url_auth(&config.nats_url) {
            UrlAuth::None => async_nats::ConnectOptions::new(),
            UrlAuth::UserPassword(u, p) => async_nats::ConnectOptions::with_user_and_password(u, p),
            UrlAuth::Token(t) => async_nats::ConnectOptions::with_token(t),
        };
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &config.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let client = options
            .name(format!("hybridge-relay {}", routing_id.to_hex()))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(RPC_TIMEOUT))
            .ping_interval(Duration::from_secs(5))
            .reconnect_delay_callback(|n| Duration::from_millis((n as u64 * 200).min(2000)))
            .event_callback(move |ev| {
                let tx = ev_tx.clone();
                async move {
                    let _ = tx.send(ev);
                }
            })
            .connect(strip_credentials(&config.nats_url).as_str())
            .await
            .map_err(|source| crate::Error::Nats {
                url: redact_url(&config.nats_url),
                source,
            })?;
        let (link, _) = watch::channel(Link::default());
        let cluster = Arc::new(Cluster {
            client,
            routing_id,
            routing_hex: hex::encode(routing_id.0),
            prefix: config.prefix.clone(),
            link,
            kv: Mutex::new(None),
            peers: Arc::new(Peers::new(config.peer_timeout)),
            stats: Arc::new(Stats::default()),
            tasks: Mutex::new(Vec::new()),
            waker,
        });
        let tasks = vec![
            tokio::spawn(link_task(cluster.clone(), config.claim_ttl, ev_rx)),
            tokio::spawn(serve_connects(cluster.clone(), acceptor)),
            tokio::spawn(heartbeats(cluster.clone())),
        ];
        if let Ok(mut t) = cluster.tasks.lock() {
            *t = tasks;
        }
        Ok(cluster)
    }

    /// Connected to NATS with the claims bucket in place: cross-instance work is possible.
    pub(crate) fn ready(&self) -> bool {
        self.link.borrow().up
    }

    /// Stops the cluster's background tasks (bridges end when the link goes with them).
    pub(crate) fn stop(&self) {
        if let Ok(t) = self.tasks.lock() {
            for t in t.iter() {
                t.abort();
            }
        }
        self.link.send_modify(|l| {
            l.up = false;
            l.epoch += 1;
        });
    }

    fn kv(&self) -> Option<async_nats::jetstream::kv::Store> {
        self.kv.lock().ok().and_then(|k| k.clone())
    }

    fn claim_key(id: &TunnelId) -> String {
        format!("t.{}", hex::encode(id.0))
    }

    /// Claims `id` cluster-wide for a phone on this instance. When the link is down the
    /// claim is local only (the local registry still refuses duplicates here). The claim
    /// goes to [`crate::registry::Registry::register`], which releases it.
    pub(crate) async fn claim(&self, id: &TunnelId) -> Result<Claim, Conflict> {
        let Some(kv) = self.kv().filter(|_| self.ready()) else {
            self.stats.claims_local_only.fetch_add(1, Relaxed);
            return Ok(Claim::Local);
        };
        let value = Bytes::copy_from_slice(self.routing_hex.as_bytes());
        match timeout(RPC_TIMEOUT, kv.create(Self::claim_key(id), value)).await {
            Ok(Ok(revision)) => {
                self.stats.claims.fetch_add(1, Relaxed);
                Ok(Claim::Cluster { revision })
            }
            Ok(Err(e)) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                self.stats.claim_conflicts.fetch_add(1, Relaxed);
                Err(Conflict)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster claim failed; claiming locally only");
                self.stats.claims_local_only.fetch_add(1, Relaxed);
                Ok(Claim::Local)
            }
            Err(_) => {
                tracing::warn!("cluster claim timed out; claiming locally only");
                self.stats.claims_local_only.fetch_add(1, Relaxed);
                Ok(Claim::Local)
            }
        }
    }

    /// Drops this instance's [`Claim::Cluster`] on `id`: its phone stopped waiting (paired,
    /// left or timed out) or never started. Called by the registry, which knows the claim.
    pub(crate) fn release(&self, id: &TunnelId, revision: u64) {
        let Some(kv) = self.kv().filter(|_| self.ready()) else {
            return;
        };
        let key = Self::claim_key(id);
        tokio::spawn(async move {
            // A revision mismatch means the claim is no longer ours: leave it.
            let _ = timeout(RPC_TIMEOUT, kv.purge_expect_revision(key, Some(revision))).await;
        });
    }

    /// The subject of wake-ups for `id`: a hash of it (domain-separated), never the ID, so
    /// NATS and its monitoring see no contact ID.
    fn wake_subject(&self, id: &ContactId) -> String {
        use sha2::Digest as _;
        let h = sha2::Sha256::new()
            .chain_update(b"hybridge wake subject v1")
            .chain_update(id.0)
            .finalize();
        format!("{}.wake.{}", self.prefix, hex::encode(h))
    }

    /// Asks the instance holding the phone subscribed under `id` to wake it.
    pub(crate) async fn wake(&self, id: &ContactId, wake: &Wake) -> Result<(), WakeRefused> {
        if !self.ready() {
            return Err(WakeRefused::Unavailable);
        }
        let mut payload = Vec::with_capacity(1 + CONTACT_ID_LEN + 200);
        payload.push(WAKE_REQUEST);
        payload.extend_from_slice(&id.0);
        payload.extend_from_slice(&wake.encode());
        let asked = self.client.request(self.wake_subject(id), payload.into());
        match timeout(RPC_TIMEOUT, asked).await {
            Ok(Ok(reply)) => match reply.payload.first() {
                Some(&WAKE_QUEUED) => {
                    self.stats.wakes_forwarded.fetch_add(1, Relaxed);
                    Ok(())
                }
                Some(&WAKE_BUSY) => Err(WakeRefused::Busy),
                _ => Err(WakeRefused::Gone),
            },
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                Err(WakeRefused::Gone)
            }
            Ok(Err(_)) | Err(_) => Err(WakeRefused::Unavailable),
        }
    }

    /// Listens for wake-ups of the phone subscribed here under `id`, until the watch is
    /// dropped. With the link up, returns once NATS has the subscription (so a wake-up right
    /// after the phone is acknowledged finds it); with the link down, the phone is reachable
    /// through this instance only until the link comes up, when the watch subscribes (and
    /// announces the phone) by itself.
    pub(crate) async fn watch_contact(self: &Arc<Self>, id: ContactId) -> ContactWatch {
        let subject = self.wake_subject(&id);
        let mut first = None;
        if self.ready()
            && let Ok(Ok(sub)) = timeout(RPC_TIMEOUT, self.client.subscribe(subject.clone())).await
        {
            let _ = timeout(RPC_TIMEOUT, self.client.flush()).await;
            first = Some(sub);
        }
        let cluster = self.clone();
        ContactWatch(tokio::spawn(async move {
            let mut sub = match first {
                Some(s) => s,
                None => loop {
                    let mut link = cluster.link.subscribe();
                    if link.wait_for(|l| l.up).await.is_err() {
                        return;
                    }
                    let subscribed =
                        timeout(RPC_TIMEOUT, cluster.client.subscribe(subject.clone())).await;
                    if let Ok(Ok(s)) = subscribed {
                        cluster.announce_taken(&id).await;
                        break s;
                    }
                    sleep(Duration::from_millis(500)).await;
                },
            };
            while let Some(m) = sub.next().await {
                let p = &m.payload;
                match (p.first(), m.reply.clone()) {
                    (Some(&WAKE_REQUEST), Some(reply)) => {
                        let status = match p
                            .get(1..1 + CONTACT_ID_LEN)
                            .filter(|got| *got == id.0)
                            .and_then(|_| Wake::decode(&p[1 + CONTACT_ID_LEN..]).ok())
                        {
                            Some(w) => match (cluster.waker)(id, RemoteWake::Wake(w)) {
                                Delivery::Queued => WAKE_QUEUED,
                                Delivery::Busy => WAKE_BUSY,
                                Delivery::Gone => WAKE_GONE,
                            },
                            None => WAKE_GONE,
                        };
                        let _ = cluster
                            .client
                            .publish(reply, Bytes::copy_from_slice(&[status]))
                            .await;
                    }
                    (Some(&WAKE_TAKEN), None) => {
                        let by = p.get(1..1 + ROUTING_ID_LEN);
                        if by.is_some_and(|b| b != cluster.routing_id.0) {
                            (cluster.waker)(id, RemoteWake::Taken);
                            return;
                        }
                    }
                    _ => {}
                }
            }
        }))
    }

    /// Tells the other instances that a phone subscribed here under `id`, so an older
    /// subscription of it elsewhere closes.
    pub(crate) async fn announce_taken(&self, id: &ContactId) {
        if !self.ready() {
            return;
        }
        let mut payload = vec![WAKE_TAKEN];
        payload.extend_from_slice(&self.routing_id.0);
        let _ = timeout(
            RPC_TIMEOUT,
            self.client.publish(self.wake_subject(id), payload.into()),
        )
        .await;
    }

    fn bridge_io(&self, sub: async_nats::Subscriber, to_peer: String, peer: String) -> BridgeIo {
        BridgeIo {
            client: self.client.clone(),
            subscriber: sub,
            to_peer,
            peer,
            link: self.link.subscribe(),
            peers: self.peers.clone(),
            stats: self.stats.clone(),
        }
    }

    /// Serves a laptop whose `/connect` names another instance's routing ID: asks that
    /// instance for the tunnel, then moves the connection's bytes both ways until the
    /// tunnel ends. Refusals come back with the connection, before anything was written.
    pub(crate) async fn bridge_laptop<S>(
        &self,
        routing_id: RoutingId,
        tunnel_id: TunnelId,
        conn: S,
        early: Vec<u8>,
        key: String,
    ) -> Result<(), (Refused, S)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.ready() {
            self.stats.connects_refused.fetch_add(1, Relaxed);
            return Err((Refused::Unavailable, conn));
        }
        let owner = hex::encode(routing_id.0);
        let bridge: [u8; 16] = rand::random();
        let bid = hex::encode(bridge);
        let inbox = format!("{}.br.{bid}.l", self.prefix);
        let to_owner = format!("{}.br.{bid}.p", self.prefix);
        // Subscribe before asking: the owner may send its 101 before we see the reply.
        let Ok(sub) = self.client.subscribe(inbox).await else {
            return Err((Refused::Unavailable, conn));
        };
        let mut req = BytesMut::with_capacity(40 + key.len() + early.len());
        req.put_slice(&tunnel_id.0);
        req.put_slice(&bridge);
        req.put_slice(&self.routing_id.0);
        req.put_u16(key.len() as u16);
        req.put_slice(key.as_bytes());
        req.put_slice(&early);
        let subject = format!("{}.{owner}.connect", self.prefix);
        let reply = self.client.request(subject, req.freeze()).await;
        let refused = match reply {
            Ok(m) if m.payload.first() == Some(&REPLY_OK) => None,
            Ok(_) => Some(Refused::NotFound),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                Some(Refused::NotFound)
            }
            Err(_) => Some(Refused::Unavailable),
        };
        if let Some(r) = refused {
            self.stats.connects_refused.fetch_add(1, Relaxed);
            let mut sub = sub;
            let _ = sub.unsubscribe().await;
            return Err((r, conn));
        }
        self.stats.connects_forwarded.fetch_add(1, Relaxed);
        let remote = RemoteStream::spawn(self.bridge_io(sub, to_owner, owner));
        pipe_laptop(conn, remote).await;
        Ok(())
    }
}

/// Moves bytes between the laptop's socket and the bridge until the owner ends the
/// tunnel. If the bridge fails between frames, the laptop gets close 1011.
async fn pipe_laptop<S>(conn: S, remote: RemoteStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut lr, mut lw) = tokio::io::split(conn);
    let (mut rr, mut rw) = tokio::io::split(remote);
    let mut up_ended = false;
    {
        // Laptop -> owner. Ends at the laptop's end of stream (passed on as EOF) or error.
        let up = async {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = lr.read(&mut buf).await {
                if n == 0 || rw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = rw.shutdown().await;
        };
        // Owner -> laptop, until the owner ends the tunnel or the bridge fails.
        let down = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut tracker = FrameTracker::default();
            loop {
                match rr.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if lw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        tracker.feed(&buf[..n]);
                    }
                    Err(_) => {
                        if tracker.at_boundary() {
                            let mut f = Vec::new();
                            crate::ws::push_close(&mut f, super::CLOSE_LINK_LOST, super::LINK_LOST);
                            let _ = timeout(Duration::from_secs(2), lw.write_all(&f)).await;
                        }
                        break;
                    }
                }
            }
            let _ = timeout(Duration::from_secs(2), async {
                let _ = lw.flush().await;
                let _ = lw.shutdown().await;
            })
            .await;
        };
        tokio::pin!(up, down);
        loop {
            tokio::select! {
                _ = &mut up, if !up_ended => up_ended = true,
                _ = &mut down => break,
            }
        }
    }
    if !up_ended {
        // The owner finished first: end our direction cleanly too.
        let _ = rw.shutdown().await;
    }
}

/// Keeps the NATS link state: ready once connected and the claims bucket exists (it is
/// re-created after a NATS restart, since it lives in memory), not ready on disconnect.
async fn link_task(
    cluster: Arc<Cluster>,
    claim_ttl: Duration,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
) {
    use async_nats::connection::State;
    let js = async_nats::jetstream::new(cluster.client.clone());
    let bucket = format!("{}_tunnels", cluster.prefix);
    loop {
        // Set up whenever connected and not yet up.
        if cluster.client.connection_state() == State::Connected && !cluster.ready() {
            // The bucket's stream is created directly, with the key-value conventions
            // (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one value per key, rollups for
            // purge): the client's create_key_value first queries account info, whose
            // reply from nats-server 2.9 it cannot parse.
            let created = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_age: claim_ttl,
                    storage: async_nats::jetstream::stream::StorageType::Memory,
                    discard: async_nats::jetstream::stream::DiscardPolicy::New,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await;
            let store = match created {
                Ok(_) => js
                    .get_key_value(bucket.clone())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match store {
                Ok(s) => {
                    if let Ok(mut k) = cluster.kv.lock() {
                        *k = Some(s);
                    }
                    cluster.link.send_modify(|l| l.up = true);
                    tracing::info!("cluster link up");
                }
                Err(e) => tracing::warn!(error = %e, "cluster: cannot set up the claims bucket"),
            }
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Some(async_nats::Event::Disconnected) => {
                    if cluster.ready() {
                        cluster.stats.link_losses.fetch_add(1, Relaxed);
                        tracing::warn!("cluster link lost: bridged tunnels fail, local ones go on");
                    }
                    cluster.link.send_modify(|l| {
                        l.up = false;
                        l.epoch += 1;
                    });
                }
                Some(_) => {}
                None => return,
            },
            _ = sleep(Duration::from_millis(500)) => {}
        }
        // A link that dropped without an event (closed client) is down too.
        if cluster.ready() && cluster.client.connection_state() != State::Connected {
            cluster.link.send_modify(|l| {
                l.up = false;
                l.epoch += 1;
            });
        }
    }
}

/// Answers `<prefix>.<our routing id>.connect`: hands a bridged laptop to the waiting phone.
async fn serve_connects(cluster: Arc<Cluster>, acceptor: Acceptor) {
    let subject = format!("{}.{}.connect", cluster.prefix, cluster.routing_hex);
    let mut sub = loop {
        match cluster.client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(_) => sleep(Duration::from_millis(200)).await,
        }
    };
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply.clone() else {
            continue;
        };
        let status = match parse_connect(&m.payload) {
            Some((tunnel_id, bid, from, key, early)) => {
                let prefix = &cluster.prefix;
                match cluster
                    .client
                    .subscribe(format!("{prefix}.br.{bid}.p"))
                    .await
                {
                    Ok(sub) => {
                        let to_laptop = format!("{prefix}.br.{bid}.l");
                        let stream = RemoteStream::spawn(cluster.bridge_io(sub, to_laptop, from));
                        if acceptor(tunnel_id, Incoming { stream, key, early }) {
                            REPLY_OK
                        } else {
                            REPLY_UNKNOWN
                        }
                    }
                    Err(_) => REPLY_UNKNOWN,
                }
            }
            None => REPLY_UNKNOWN,
        };
        let _ = cluster
            .client
            .publish(reply, Bytes::copy_from_slice(&[status]))
            .await;
    }
}

type ConnectRequest = (TunnelId, String, String, String, Vec<u8>);

fn parse_connect(p: &[u8]) -> Option<ConnectRequest> {
    if p.len() < 37 {
        return None;
    }
    let tunnel_id = TunnelId(p[..16].try_into().ok()?);
    let bid = hex::encode(&p[16..32]);
    let from = hex::encode(&p[32..35]);
    let klen = u16::from_be_bytes([p[35], p[36]]) as usize;
    let key = std::str::from_utf8(p.get(37..37 + klen)?).ok()?.to_owned();
    let early = p[37 + klen..].to_vec();
    Some((tunnel_id, bid, from, key, early))
}

/// Publishes this instance's heartbeat and records the others'.
async fn heartbeats(cluster: Arc<Cluster>) {
    let all = format!("{}.hb.*", cluster.prefix);
    let mine = format!("{}.hb.{}", cluster.prefix, cluster.routing_hex);
    let mut sub = loop {
        match cluster.client.subscribe(all.clone()).await {
            Ok(s) => break s,
            Err(_) => sleep(Duration::from_millis(200)).await,
        }
    };
    let mut tick = tokio::time::interval(cluster.peers.heartbeat());
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = cluster.client.publish(mine.clone(), Bytes::new()).await;
            }
            m = sub.next() => match m {
                Some(m) => {
                    if let Some(rid) = m.subject.as_str().rsplit('.').next() {
                        cluster.peers.saw(rid);
                    }
                }
                None => return,
            },
        }
    }
}

impl Cluster {
    /// Prometheus lines for the cluster (appended to `/metrics`).
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let g = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP hybridge_relay_cluster_{name} {help}\n# TYPE hybridge_relay_cluster_{name} {kind}\nhybridge_relay_cluster_{name} {v}"
            );
        };
        g(
            out,
            "ready",
            "1 when connected to NATS with the claims bucket in place (cross-instance tunnels work).",
            "gauge",
            self.ready() as u64,
        );
        g(
            out,
            "bridges_active",
            "Tunnel sides bridged over NATS right now.",
            "gauge",
            s.bridges_active.load(Relaxed),
        );
        g(
            out,
            "bridges_total",
            "Tunnel sides bridged over NATS.",
            "counter",
            s.bridges_total.load(Relaxed),
        );
        g(
            out,
            "claims_total",
            "Tunnel IDs claimed cluster-wide.",
            "counter",
            s.claims.load(Relaxed),
        );
        g(
            out,
            "claim_conflicts_total",
            "Tunnel IDs refused because another instance holds them.",
            "counter",
            s.claim_conflicts.load(Relaxed),
        );
        g(
            out,
            "claims_local_only_total",
            "Tunnel IDs claimed on this instance only (cluster link down).",
            "counter",
            s.claims_local_only.load(Relaxed),
        );
        g(
            out,
            "connects_forwarded_total",
            "/cable/connect requests bridged to another instance.",
            "counter",
            s.connects_forwarded.load(Relaxed),
        );
        g(
            out,
            "connects_refused_total",
            "/cable/connect requests for another instance that were refused.",
            "counter",
            s.connects_refused.load(Relaxed),
        );
        g(
            out,
            "wakes_forwarded_total",
            "/cable/contact wake-ups queued by another instance's subscribed phone.",
            "counter",
            s.wakes_forwarded.load(Relaxed),
        );
        g(
            out,
            "link_losses_total",
            "Times the NATS link was lost.",
            "counter",
            s.link_losses.load(Relaxed),
        );
        s.render_failures(out);
    }
}

impl Stats {
    /// `hybridge_relay_cluster_bridge_failures_total`: only reasons that happened, in label
    /// order.
    fn render_failures(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP hybridge_relay_cluster_bridge_failures_total Bridged tunnel sides that ended abnormally, by reason.\n# TYPE hybridge_relay_cluster_bridge_failures_total counter"
        );
        for reason in BridgeFailure::ALL {
            let n = self.failures[reason as usize].load(Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "hybridge_relay_cluster_bridge_failures_total{{reason=\"{}\"}} {n}",
                    reason.as_str()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_round_trip() {
        let mut req = Vec::new();
        req.extend_from_slice(&[7u8; 16]);
        req.extend_from_slice(&[9u8; 16]);
        req.extend_from_slice(&[0xa0, 0x00, 0x01]);
        req.extend_from_slice(&3u16.to_be_bytes());
        req.extend_from_slice(b"abc");
        req.extend_from_slice(b"early");
        let (t, bid, from, key, early) = parse_connect(&req).expect("parses");
        assert_eq!(t.0, [7u8; 16]);
        assert_eq!(bid, "09".repeat(16));
        assert_eq!(from, "a00001");
        assert_eq!(key, "abc");
        assert_eq!(early, b"early");
        assert!(parse_connect(&req[..36]).is_none());
        let mut bad = req.clone();
        bad[35..37].copy_from_slice(&999u16.to_be_bytes());
        assert!(parse_connect(&bad).is_none());
    }

    #[test]
    fn claim_keys_are_lower_case_hex() {
        // Every instance must spell a key the same way: changing it splits the cluster.
        let key = Cluster::claim_key(&TunnelId([0xab; 16]));
        assert_eq!(key, format!("t.{}", "ab".repeat(16)));
    }

    #[test]
    fn bridge_failures_are_counted_by_reason_label() {
        let s = Stats::default();
        s.bridge_failed(BridgeFailure::PeerSilent);
        s.bridge_failed(BridgeFailure::NatsLinkLost);
        s.bridge_failed(BridgeFailure::PeerSilent);
        let mut out = String::new();
        s.render_failures(&mut out);
        let samples: Vec<_> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "hybridge_relay_cluster_bridge_failures_total{reason=\"nats link lost\"} 1",
                "hybridge_relay_cluster_bridge_failures_total{reason=\"peer instance silent\"} 2",
            ]
        );
    }

    #[test]
    fn peers_time_out() {
        let p = Peers::new(crate::cluster::DEFAULT_PEER_TIMEOUT);
        let long_ago = Instant::now() - Duration::from_secs(10);
        assert!(!p.alive("a00001", long_ago));
        p.saw("a00001");
        assert!(p.alive("a00001", long_ago));
        assert!(p.alive("b00002", Instant::now()));
        assert_eq!(p.heartbeat(), Duration::from_secs(1));
        // A shorter timeout gives up sooner and beats faster.
        let quick = Peers::new(Duration::from_millis(500));
        assert_eq!(quick.heartbeat(), Duration::from_millis(100));
        assert!(!quick.alive("a00001", Instant::now() - Duration::from_secs(1)));
    }
}
