//! Linked phones: the wake-up subscriptions of `/cable/subscribe` and the wake-ups that
//! `/cable/contact` sends through them (`hybridge_proto::contact` has the wire format).
//!
//! A phone keeps a WebSocket open on `/cable/subscribe` and proves its wake key there; from
//! then on the relay holds it under its contact ID ([`Subscriptions`]). A laptop's
//! `/cable/contact/<contact ID>` becomes a wake-up, `{tunnel ID, routing ID, client
//! payload}`, queued to that phone (or, in a cluster, to the instance that holds it); the
//! laptop then waits like a phone on `/cable/new` until the woken phone joins through
//! `/cable/connect` (see `pairing.rs`).
//!
//! The relay keeps nothing secret: a subscription is only as good as its proof, and a
//! restarted relay simply waits for its phones to subscribe again. Logs name a contact by
//! [`ContactId::log_tag`] at most.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybridge_proto::contact::{
    Ack, Challenge, ContactId, MAX_PROOF_LEN, Proof, WAKE_SUBPROTOCOL, Wake,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};

use crate::cluster::{Delivery, WakeRefused};
use crate::conn::Conn;
use crate::http;
use crate::metrics::{Reject, SubscriptionEnd, WakeResult};
use crate::ratelimit::Ticket;
use crate::shared::{ConnGuard, Phase, Shared};
use crate::ws::{self, Decoder, HEADROOM, Stop, Tally, close, op};

/// Wake-ups queued for one phone that has not taken them yet; a `/cable/contact` beyond
/// them gets 503.
pub(crate) const MAX_QUEUED_WAKES: usize = 8;
/// Close code for a subscription a newer proven one for the same contact ID replaced (a
/// private-use code: the phone should not reconnect at once, another of its copies did).
pub(crate) const CLOSE_REPLACED: u16 = 4001;
const REPLACED: &str = "replaced by a newer subscription for this contact ID";
const BAD_PROOF: &str = "subscription proof does not verify";
/// Longest wait to hand one message (a wake-up, a ping) to a subscribed phone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

struct Entry {
    generation: u64,
    tx: mpsc::Sender<Wake>,
    /// Fired (or dropped) to close the subscription: a newer one replaced it.
    kill: oneshot::Sender<()>,
}

/// The phones subscribed here, by contact ID, and the counts that bound them.
#[derive(Default)]
pub(crate) struct Subscriptions {
    map: Mutex<HashMap<ContactId, Entry>>,
    per_ip: Mutex<HashMap<u128, u32>>,
    /// Subscriptions proven or proving ([`Place`]s held).
    total: AtomicUsize,
    next: AtomicU64,
}

/// A subscription's place among `max_subscriptions` and its address's
/// `max_subscriptions_per_ip`; given back on drop.
pub(crate) struct Place {
    shared: Arc<Shared>,
    ip: Option<u128>,
}

impl Place {
    /// A place for a subscription from `ip`, if the limits leave one.
    pub(crate) fn take(shared: &Arc<Shared>, ip: IpAddr) -> Result<Place, Reject> {
        let subs = &shared.subs;
        let limits = &shared.limits;
        if subs.total.fetch_add(1, Relaxed) >= limits.max_subscriptions {
            subs.total.fetch_sub(1, Relaxed);
            return Err(Reject::Capacity);
        }
        let mut place = Place {
            shared: shared.clone(),
            ip: None,
        };
        if limits.max_subscriptions_per_ip > 0 {
            let k = crate::ratelimit::key(ip);
            let Ok(mut per_ip) = subs.per_ip.lock() else {
                return Ok(place);
            };
            let n = per_ip.entry(k).or_insert(0);
            if *n as usize >= limits.max_subscriptions_per_ip {
                return Err(Reject::SubscriptionsPerIp);
            }
            *n += 1;
            place.ip = Some(k);
        }
        Ok(place)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let subs = &self.shared.subs;
        subs.total.fetch_sub(1, Relaxed);
        if let Some(k) = self.ip
            && let Ok(mut per_ip) = subs.per_ip.lock()
            && let Some(n) = per_ip.get_mut(&k)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&k);
            }
        }
    }
}

impl Subscriptions {
    /// Registers a proven subscription; an older one for the same ID is told to close.
    fn insert(&self, id: ContactId) -> Option<(u64, mpsc::Receiver<Wake>, oneshot::Receiver<()>)> {
        let generation = self.next.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::channel(MAX_QUEUED_WAKES);
        let (kill, killed) = oneshot::channel();
        let old = self.map.lock().ok()?.insert(
            id,
            Entry {
                generation,
                tx,
                kill,
            },
        );
        if let Some(old) = old {
            let _ = old.kill.send(());
        }
        Some((generation, rx, killed))
    }

    /// The subscription ended; a newer one for the same ID is left alone.
    fn remove(&self, id: &ContactId, generation: u64) {
        if let Ok(mut map) = self.map.lock()
            && map.get(id).is_some_and(|e| e.generation == generation)
        {
            map.remove(id);
        }
    }

    /// Queues a wake-up for the phone subscribed here under `id`.
    pub(crate) fn deliver(&self, id: &ContactId, wake: Wake) -> Delivery {
        let Ok(map) = self.map.lock() else {
            return Delivery::Gone;
        };
        match map.get(id).map(|e| e.tx.try_send(wake)) {
            Some(Ok(())) => Delivery::Queued,
            Some(Err(mpsc::error::TrySendError::Full(_))) => Delivery::Busy,
            Some(Err(mpsc::error::TrySendError::Closed(_))) | None => Delivery::Gone,
        }
    }

    /// Another instance holds a newer subscription for `id`: close ours.
    pub(crate) fn evict(&self, id: &ContactId) {
        let old = self.map.lock().ok().and_then(|mut m| m.remove(id));
        if let Some(old) = old {
            let _ = old.kill.send(());
        }
    }
}

/// Sends a laptop's wake-up to the phone subscribed under `id`: here, or through the
/// cluster. `None` for a contact ID no phone can have.
pub(crate) async fn wake(shared: &Shared, id: Option<ContactId>, wake: Wake) -> WakeResult {
    let Some(id) = id else {
        shared.metrics.wake(WakeResult::Gone);
        return WakeResult::Gone;
    };
    let result = match shared.subs.deliver(&id, wake.clone()) {
        Delivery::Queued => WakeResult::Local,
        Delivery::Busy => WakeResult::Busy,
        Delivery::Gone => match shared.cluster() {
            None => WakeResult::Gone,
            Some(c) => match Box::pin(c.wake(&id, &wake)).await {
                Ok(()) => WakeResult::Remote,
                Err(WakeRefused::Gone) => WakeResult::Gone,
                Err(WakeRefused::Busy) => WakeResult::Busy,
                Err(WakeRefused::Unavailable) => WakeResult::Unavailable,
            },
        },
    };
    shared.metrics.wake(result);
    tracing::debug!(contact = %id.log_tag(), result = result.label(), "wake-up");
    result
}

/// What a subscribed phone said, decoded from its (masked) frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Message(Vec<u8>),
    Ping(Vec<u8>),
    /// Its close frame's code (1005: none given).
    Close(u16),
    /// It broke a WebSocket rule: close with this code and reason.
    Violation(u16, &'static str),
}

/// Reads a client's WebSocket frames into whole messages, with [`Decoder`]'s checks and
/// limits: the relay's one frame parser, here used to read rather than to forward.
pub(crate) struct Reader {
    dec: Decoder,
    tally: Tally,
    /// Server-form frames the decoder wrote that are not complete yet.
    frames: Vec<u8>,
    message: Vec<u8>,
    pub(crate) events: std::collections::VecDeque<Event>,
    done: bool,
}

impl Reader {
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            dec: Decoder::new(),
            tally: Tally {
                max_message: max_message as u64,
                ..Default::default()
            },
            frames: Vec::new(),
            message: Vec::new(),
            events: Default::default(),
            done: false,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        let mut buf = vec![0u8; HEADROOM + data.len()];
        buf[HEADROOM..].copy_from_slice(data);
        let end = buf.len();
        let (w, stop) = self.dec.process(&mut buf, HEADROOM, end, &mut self.tally);
        self.frames.extend_from_slice(&buf[..w]);
        // Complete frames, unmasked, in order: a header of 2, 4 or 10 bytes, then the payload.
        loop {
            let f = &self.frames;
            if f.len() < 2 {
                break;
            }
            let (len, at) = match f[1] & 0x7f {
                126 if f.len() >= 4 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
                127 if f.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&f[2..10]);
                    // The decoder refused anything over the message limit already.
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if f.len() < at + len {
                break;
            }
            let fin = f[0] & 0x80 != 0;
            self.message.extend_from_slice(&f[at..at + len]);
            self.frames.drain(..at + len);
            if fin {
                self.events
                    .push_back(Event::Message(std::mem::take(&mut self.message)));
            }
        }
        if let Some((p, n)) = self.dec.ping.take() {
            self.events.push_back(Event::Ping(p[..n as usize].to_vec()));
        }
        match stop {
            Some(Stop::PeerClose(code)) => self.events.push_back(Event::Close(code)),
            Some(Stop::Violation { code, reason }) => {
                self.events.push_back(Event::Violation(code, reason))
            }
            None => return,
        }
        self.done = true;
    }

    /// The next event, reading from `conn` as needed; `None` at the end of the stream.
    async fn next(&mut self, conn: &mut Conn) -> io::Result<Option<Event>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            let mut buf = [0u8; 1024];
            match conn.read(&mut buf).await? {
                0 => return Ok(None),
                n => self.feed(&buf[..n]),
            }
        }
    }
}

/// Until the relay starts draining (a future that holds no lock guard across awaits).
async fn draining(phase: &mut tokio::sync::watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p >= Phase::Draining).await;
}

async fn send(conn: &mut Conn, bytes: &[u8]) -> bool {
    timeout(WRITE_TIMEOUT, async {
        conn.write_all(bytes).await?;
        conn.flush().await
    })
    .await
    .is_ok_and(|r| r.is_ok())
}

async fn send_frame(conn: &mut Conn, opcode: u8, payload: &[u8]) -> bool {
    let mut out = Vec::with_capacity(payload.len() + 10);
    ws::push_frame(&mut out, opcode, payload);
    send(conn, &out).await
}

/// Closes with `code` and `reason`, as the last this side gets.
async fn close_with(conn: &mut Conn, code: u16, reason: &str, limit: Duration) {
    let mut out = Vec::new();
    ws::push_close(&mut out, code, reason);
    let _ = timeout(limit, conn.write_last(&out)).await;
}

/// Serves a phone from its `/cable/subscribe` upgrade to the end of its subscription:
/// challenge, proof, registration, then wake-ups and pings until one side leaves.
pub(crate) async fn serve_subscriber(
    place: Place,
    _task: ConnGuard,
    mut conn: Conn,
    early: Vec<u8>,
    key: String,
    host: String,
    mut ticket: Ticket,
) {
    let shared = place.shared.clone();
    let limits = &shared.limits;
    let m = &shared.metrics;
    let challenge = Challenge::generate(&mut rand::rngs::OsRng);
    let mut out = Vec::with_capacity(256);
    http::push_upgrade(&mut out, &key, WAKE_SUBPROTOCOL, false);
    ws::push_frame(&mut out, op::BINARY, &challenge.encode());
    let mut reader = Reader::new(MAX_PROOF_LEN);
    reader.feed(&early);

    // The proof comes within the header timeout, counted from now.
    let deadline = Instant::now() + limits.header_timeout;
    let proved = timeout_at(deadline, async {
        if !send(&mut conn, &out).await {
            return Err(None);
        }
        loop {
            match reader.next(&mut conn).await {
                Ok(Some(Event::Message(m))) => return Ok(m),
                Ok(Some(Event::Ping(p))) => {
                    if !send_frame(&mut conn, op::PONG, &p).await {
                        return Err(None);
                    }
                }
                Ok(Some(Event::Violation(code, reason))) => return Err(Some((code, reason))),
                Ok(Some(Event::Close(_)) | None) | Err(_) => return Err(None),
            }
        }
    })
    .await;
    let verified = match proved {
        Ok(Ok(message)) => Proof::decode(&message)
            .and_then(|p| p.verify(&challenge, &host))
            .map_err(|_| (close::POLICY, BAD_PROOF)),
        Ok(Err(Some(violation))) => Err(violation),
        Ok(Err(None)) => {
            // It left (or could not be written to) before proving anything.
            m.subscription_ended(SubscriptionEnd::PhoneLeft);
            ticket.charge();
            return;
        }
        Err(_) => {
            m.subscription_ended(SubscriptionEnd::ProofTimeout);
            ticket.charge();
            close_with(
                &mut conn,
                close::POLICY,
                "no subscription proof in time",
                limits.close_timeout,
            )
            .await;
            return;
        }
    };
    let id = match verified {
        Ok(id) => id,
        Err((code, reason)) => {
            m.subscription_ended(SubscriptionEnd::BadProof);
            ticket.charge();
            tracing::debug!(reason, "subscription refused");
            close_with(&mut conn, code, reason, limits.close_timeout).await;
            return;
        }
    };
    // Proven: the subscription is held under its own limits, not among the address's
    // unpaired connections.
    ticket.paired();
    let Some((generation, mut wakes, mut killed)) = shared.subs.insert(id) else {
        m.subscription_ended(SubscriptionEnd::Capacity);
        close_with(&mut conn, close::INTERNAL, "", limits.close_timeout).await;
        return;
    };
    // In a cluster, wake-ups for `id` that reach another instance come here, and an older
    // subscription on another instance is closed.
    // Held until the subscription ends (the watch stops listening when dropped).
    let _watch = match shared.cluster() {
        Some(c) => {
            let w = Box::pin(c.watch_contact(id)).await;
            Box::pin(c.announce_taken(&id)).await;
            Some(w)
        }
        None => None,
    };
    m.subscriptions.fetch_add(1, Relaxed);
    m.subscriptions_proven.fetch_add(1, Relaxed);
    tracing::debug!(contact = %id.log_tag(), "phone subscribed");

    let interval = limits.subscription_ping_interval;
    let mut phase = shared.phase.subscribe();
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let mut reader = Reader::new(64);
    let end = if !send_frame(&mut conn, op::BINARY, &Ack { contact_id: id }.encode()).await {
        SubscriptionEnd::PhoneLeft
    } else {
        'serve: loop {
            let mut buf = [0u8; 512];
            tokio::select! {
                r = conn.read(&mut buf) => {
                    let n = match r {
                        Ok(0) | Err(_) => break SubscriptionEnd::PhoneLeft,
                        Ok(n) => n,
                    };
                    heard = Instant::now();
                    reader.feed(&buf[..n]);
                    while let Some(e) = reader.events.pop_front() {
                        match e {
                            Event::Ping(p) => {
                                if !send_frame(&mut conn, op::PONG, &p).await {
                                    break 'serve SubscriptionEnd::PhoneLeft;
                                }
                            }
                            Event::Message(_) => {
                                close_with(&mut conn, close::POLICY, "nothing is expected after the proof", limits.close_timeout).await;
                                break 'serve SubscriptionEnd::Violation;
                            }
                            Event::Violation(code, reason) => {
                                close_with(&mut conn, code, reason, limits.close_timeout).await;
                                break 'serve SubscriptionEnd::Violation;
                            }
                            Event::Close(code) => {
                                let echo = if code == 1005 { close::NORMAL } else { code };
                                close_with(&mut conn, echo, "", limits.close_timeout).await;
                                break 'serve SubscriptionEnd::PhoneLeft;
                            }
                        }
                    }
                }
                w = wakes.recv() => match w {
                    Some(w) => {
                        if !send_frame(&mut conn, op::BINARY, &w.encode()).await {
                            break SubscriptionEnd::PhoneLeft;
                        }
                    }
                    // The entry is gone: replaced, like the kill below says.
                    None => {
                        close_with(&mut conn, CLOSE_REPLACED, REPLACED, limits.close_timeout).await;
                        break SubscriptionEnd::Replaced;
                    }
                },
                _ = &mut killed => {
                    close_with(&mut conn, CLOSE_REPLACED, REPLACED, limits.close_timeout).await;
                    break SubscriptionEnd::Replaced;
                }
                _ = ping.tick() => {
                    if heard.elapsed() >= interval * 2 {
                        break SubscriptionEnd::Dead; // dropped without a word: it cannot hear one
                    }
                    if !send_frame(&mut conn, op::PING, b"").await {
                        break SubscriptionEnd::PhoneLeft;
                    }
                }
                _ = draining(&mut phase) => {
                    close_with(&mut conn, close::GOING_AWAY, "server shutting down", limits.close_timeout).await;
                    break SubscriptionEnd::Shutdown;
                }
            }
        }
    };
    shared.subs.remove(&id, generation);
    m.subscriptions.fetch_sub(1, Relaxed);
    m.subscription_ended(end);
    tracing::debug!(contact = %id.log_tag(), reason = end.label(), "subscription ended");
    drop(place);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = Vec::new();
        let mut h = [0u8; 10];
        let n = ws::write_header(&mut h, b0, payload.len() as u64);
        h[1] |= 0x80;
        out.extend_from_slice(&h[..n]);
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn reader_makes_messages_of_fragments_pings_and_closes() {
        let mut input = client_frame(0x02, b"hel");
        input.extend(client_frame(0x89, b"p"));
        input.extend(client_frame(0x80, b"lo"));
        input.extend(client_frame(0x82, &[7; 200]));
        input.extend(client_frame(0x88, &1000u16.to_be_bytes()));
        for chunk in [1, 2, 5, 1000] {
            let mut r = Reader::new(256);
            for piece in input.chunks(chunk) {
                r.feed(piece);
            }
            let events: Vec<_> = r.events.drain(..).collect();
            assert!(events.contains(&Event::Ping(b"p".to_vec())), "{chunk}");
            let rest: Vec<_> = events
                .into_iter()
                .filter(|e| !matches!(e, Event::Ping(_)))
                .collect();
            assert_eq!(
                rest,
                [
                    Event::Message(b"hello".to_vec()),
                    Event::Message(vec![7; 200]),
                    Event::Close(1000)
                ],
                "chunk size {chunk}"
            );
        }
    }

    fn a_wake(n: u8) -> Wake {
        Wake {
            tunnel_id: hybridge_proto::tunnel::TunnelId([n; 16]),
            routing_id: hybridge_proto::tunnel::RoutingId([1, 2, 3]),
            client_payload: vec![0xa0],
        }
    }

    #[test]
    fn wakes_queue_up_to_the_bound_and_a_newer_subscription_replaces() {
        let subs = Subscriptions::default();
        let id = ContactId([1; 32]);
        assert_eq!(subs.deliver(&id, a_wake(0)), Delivery::Gone);
        let (first, mut rx, mut killed) = subs.insert(id).unwrap();
        for n in 0..MAX_QUEUED_WAKES as u8 {
            assert_eq!(subs.deliver(&id, a_wake(n)), Delivery::Queued);
        }
        assert_eq!(subs.deliver(&id, a_wake(99)), Delivery::Busy, "bounded");
        assert_eq!(rx.try_recv().unwrap().tunnel_id.0, [0; 16], "in order");
        assert_eq!(subs.deliver(&id, a_wake(8)), Delivery::Queued, "room again");
        // A newer subscription: the older one is told, and its late removal is ignored.
        let (second, mut rx2, _killed2) = subs.insert(id).unwrap();
        assert!(killed.try_recv().is_ok());
        subs.remove(&id, first);
        assert_eq!(subs.deliver(&id, a_wake(7)), Delivery::Queued);
        assert_eq!(rx2.try_recv().unwrap().tunnel_id.0, [7; 16]);
        // Taken by another instance: closed here, and gone.
        subs.evict(&id);
        assert_eq!(subs.deliver(&id, a_wake(6)), Delivery::Gone);
        subs.remove(&id, second);
        assert_eq!(subs.deliver(&ContactId([2; 32]), a_wake(6)), Delivery::Gone);
    }

    #[test]
    fn reader_bounds_messages() {
        let mut r = Reader::new(256);
        // A header claiming 2^40 bytes: refused before anything is kept.
        let mut frame = vec![0x82, 0xff];
        frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        r.feed(&frame);
        assert_eq!(
            r.events.pop_front(),
            Some(Event::Violation(close::TOO_BIG, "message too big"))
        );
        assert!(r.frames.len() < 16 && r.message.is_empty());
        let mut r = Reader::new(256);
        r.feed(&client_frame(0x81, b"text"));
        assert!(matches!(
            r.events.pop_front(),
            Some(Event::Violation(1003, _))
        ));
    }
}
