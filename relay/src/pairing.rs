//! A pairing: the relay's task for one tunnel (docs/protocol.md §6). It holds the phone's
//! `/cable/new` connection, waits for the laptop's `/cable/connect` to be handed to it
//! through the registry, and moves the bytes between the two until the tunnel ends.
//! ("Tunnel" stays the protocol's word: the tunnel ID, a tunnel's lifetime and close codes.)
//!
//! A pairing is a single task. Its I/O is one hand-written poll function ([`Pipes::poll_io`])
//! that moves bytes both ways: read into a per-thread scratch buffer, rewrite the frames in
//! place ([`crate::ws::Decoder`]), and write them straight to the other socket. Only bytes
//! the other socket cannot take right now are copied into that side's bounded `out` queue,
//! and while a queue is full the relay stops reading from the sender (backpressure). An
//! idle pairing therefore holds no buffers at all: that is what keeps it to a few KiB.
//!
//! Before the laptop joins, the phone's frames go to the laptop's `out` queue, which is
//! what "buffered before the peer joins, delivered in order" (docs/protocol.md §6.4) means here; the
//! laptop's 101 response is put in front of them when it arrives.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, sleep_until, timeout};

use hybridge_proto::contact::CONNECT_SIGNAL;
use hybridge_proto::tunnel::SUBPROTOCOL;

use crate::conn::Conn;
use crate::http;
use crate::metrics::{CloseReason, Metrics};
use crate::ratelimit::Ticket;
use crate::registry::{Handoff, Waiter};
use crate::shared::{ConnGuard, PairingSlot, Phase};
use crate::ws::{self, Decoder, HEADROOM, Stop, Tally, close, op};

/// Largest single read. Reads are also capped by the room left in the destination queue.
const READ_MAX: usize = 32 * 1024;
/// Rounds of the I/O loop per poll before yielding to other tasks.
const ROUNDS: usize = 32;
/// Bytes a phone may send (frames, pings and all, as they come off the wire) before its
/// laptop joins; beyond them it is closed with 1008. A real phone sends nothing until the
/// laptop's first handshake message has come through the tunnel, so this is only room for
/// a keep-alive or a client that starts early. Within it the relay keeps reading the
/// waiting phone whatever its queue holds, which is how it sees the phone hang up.
pub(crate) const MAX_EARLY_BYTES: usize = 4 * 1024;
/// Why a phone over [`MAX_EARLY_BYTES`] is closed.
const TOO_EARLY: &str = "too much data before the peer joined";

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; HEADROOM + READ_MAX]);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    Phone,
    Laptop,
}

/// One end of the pairing: the phone's or the laptop's connection.
#[derive(Default)]
pub(crate) struct Side {
    pub conn: Option<Conn>,
    /// Decodes what this side sends.
    pub dec: Decoder,
    /// Bytes waiting to be written to this side.
    pub out: Vec<u8>,
    needs_flush: bool,
}

/// Why the I/O loop stopped.
#[derive(Debug)]
pub(crate) enum End {
    Stop(Who, Stop),
    Eof(Who),
    Error(Who),
    /// A side bridged from another cluster instance lost its link.
    LinkLost(Who),
}

/// Both sides of a pairing and the I/O loop between them.
pub(crate) struct Pipes {
    pub phone: Side,
    pub laptop: Side,
    pub tally: Tally,
    queue_bytes: usize,
    /// While the phone waits for its laptop: how many more bytes it may send
    /// ([`MAX_EARLY_BYTES`]). `None` once paired.
    early_left: Option<usize>,
    reported: (u64, u64),
}

impl Pipes {
    pub(crate) fn new(tally: Tally, queue_bytes: usize) -> Self {
        Self {
            phone: Side::default(),
            laptop: Side::default(),
            tally,
            queue_bytes,
            early_left: Some(MAX_EARLY_BYTES),
            reported: (0, 0),
        }
    }

    /// Moves bytes until both directions would block; `Ready` when the pairing must end.
    pub(crate) fn poll_io(&mut self, cx: &mut Context<'_>, m: &Metrics) -> Poll<End> {
        let r = self.poll_rounds(cx);
        self.report(m);
        r
    }

    /// The laptop has joined: the phone's early allowance no longer applies.
    pub(crate) fn paired(&mut self) {
        self.early_left = None;
    }

    fn report(&mut self, m: &Metrics) {
        let (msgs, bytes) = (self.tally.messages, self.tally.bytes);
        if msgs != self.reported.0 {
            m.messages.fetch_add(msgs - self.reported.0, Relaxed);
        }
        if bytes != self.reported.1 {
            m.bytes.fetch_add(bytes - self.reported.1, Relaxed);
        }
        self.reported = (msgs, bytes);
    }

    fn poll_rounds(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let q = self.queue_bytes;
        for _ in 0..ROUNDS {
            let mut progress = false;
            if let Some(e) = flush(Who::Phone, &mut self.phone, cx, &mut progress) {
                return Poll::Ready(e);
            }
            if let Some(e) = flush(Who::Laptop, &mut self.laptop, cx, &mut progress) {
                return Poll::Ready(e);
            }
            let (p, l, t) = (&mut self.phone, &mut self.laptop, &mut self.tally);
            let early = self.early_left.as_mut();
            if let Some(e) = pump(Who::Phone, p, l, t, q, early, cx, &mut progress) {
                return Poll::Ready(e);
            }
            if let Some(e) = pump(Who::Laptop, l, p, t, q, None, cx, &mut progress) {
                return Poll::Ready(e);
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Feeds bytes that arrived together with a request head (early frames).
    pub(crate) fn feed(&mut self, who: Who, bytes: &[u8]) -> Option<End> {
        let q = self.queue_bytes;
        let (src, dst) = match who {
            Who::Phone => (&mut self.phone, &mut self.laptop),
            Who::Laptop => (&mut self.laptop, &mut self.phone),
        };
        if let (Who::Phone, Some(left)) = (who, self.early_left.as_mut()) {
            *left = match left.checked_sub(bytes.len()) {
                Some(l) => l,
                None => return Some(too_early()),
            };
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = rest.len().min(READ_MAX);
            let end = SCRATCH.with_borrow_mut(|buf| {
                buf[HEADROOM..HEADROOM + n].copy_from_slice(&rest[..n]);
                after_read(who, src, dst, &mut self.tally, q, buf, n, None)
            });
            if end.is_some() {
                return end;
            }
            rest = &rest[n..];
        }
        None
    }
}

fn flush(who: Who, side: &mut Side, cx: &mut Context<'_>, progress: &mut bool) -> Option<End> {
    let conn = side.conn.as_mut()?;
    while !side.out.is_empty() {
        match Pin::new(&mut *conn).poll_write(cx, &side.out) {
            Poll::Ready(Ok(0)) => return Some(End::Error(who)),
            Poll::Ready(Err(e)) => return Some(end_for(who, &e)),
            Poll::Ready(Ok(n)) => {
                side.out.drain(..n);
                side.needs_flush |= conn.buffered();
                *progress = true;
            }
            Poll::Pending => break,
        }
    }
    if side.out.is_empty() && side.out.capacity() > 0 {
        side.out = Vec::new(); // an idle pairing holds no buffers
    }
    if side.needs_flush {
        match Pin::new(conn).poll_flush(cx) {
            Poll::Ready(Ok(())) => side.needs_flush = false,
            Poll::Ready(Err(e)) => return Some(end_for(who, &e)),
            Poll::Pending => {}
        }
    }
    None
}

/// Reads what `src` sent and forwards it to `dst`. `early` is the waiting phone's
/// allowance: while it is given, reading is bounded by it instead of by `dst`'s queue (there
/// is no laptop to drain that queue), so the phone is always read and its hang-up seen.
#[allow(clippy::too_many_arguments)]
fn pump(
    who: Who,
    src: &mut Side,
    dst: &mut Side,
    tally: &mut Tally,
    queue_bytes: usize,
    early: Option<&mut usize>,
    cx: &mut Context<'_>,
    progress: &mut bool,
) -> Option<End> {
    let room = match &early {
        // One byte past the allowance is enough to know it was exceeded.
        Some(left) => **left + 1,
        None if dst.out.len() >= queue_bytes => {
            return None; // backpressure: dst's writable wake-up brings us back
        }
        None => queue_bytes - dst.out.len(),
    };
    src.conn.as_ref()?;
    SCRATCH.with_borrow_mut(|buf| {
        let room = room.min(READ_MAX);
        let mut rb = ReadBuf::new(&mut buf[HEADROOM..HEADROOM + room]);
        let conn = src.conn.as_mut()?;
        let n = match Pin::new(conn).poll_read(cx, &mut rb) {
            Poll::Pending => return None,
            Poll::Ready(Err(e)) => return Some(end_for(who, &e)),
            Poll::Ready(Ok(())) => rb.filled().len(),
        };
        if n == 0 {
            return Some(End::Eof(who));
        }
        *progress = true;
        if let Some(left) = early {
            *left = match left.checked_sub(n) {
                Some(l) => l,
                None => return Some(too_early()),
            };
        }
        after_read(who, src, dst, tally, queue_bytes, buf, n, Some(cx))
    })
}

#[allow(clippy::too_many_arguments)]
fn after_read(
    who: Who,
    src: &mut Side,
    dst: &mut Side,
    tally: &mut Tally,
    queue_bytes: usize,
    buf: &mut [u8],
    n: usize,
    cx: Option<&mut Context<'_>>,
) -> Option<End> {
    let (w, stop) = src.dec.process(buf, HEADROOM, HEADROOM + n, tally);
    if w > 0
        && let Some(e) = forward(&buf[..w], dst, other(who), cx)
    {
        return Some(e);
    }
    // Answer a ping when the stream back to the sender is between frames; otherwise the
    // pong is skipped (clients ignore keep-alives anyway, docs/protocol.md §6.4).
    if let Some((p, len)) = src.dec.ping.take()
        && dst.dec.at_frame_boundary()
        && src.out.len() < queue_bytes
    {
        ws::push_frame(&mut src.out, op::PONG, &p[..len as usize]);
    }
    stop.map(|s| End::Stop(who, s))
}

fn forward(data: &[u8], dst: &mut Side, who: Who, cx: Option<&mut Context<'_>>) -> Option<End> {
    if let (true, Some(conn), Some(cx)) = (dst.out.is_empty(), dst.conn.as_mut(), cx) {
        match Pin::new(&mut *conn).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                dst.needs_flush |= conn.buffered();
                if n < data.len() {
                    dst.out.extend_from_slice(&data[n..]);
                }
            }
            Poll::Ready(Err(e)) => return Some(end_for(who, &e)),
            Poll::Pending => dst.out.extend_from_slice(data),
        }
    } else {
        dst.out.extend_from_slice(data);
    }
    None
}

/// The waiting phone went over [`MAX_EARLY_BYTES`].
fn too_early() -> End {
    End::Stop(
        Who::Phone,
        Stop::Violation {
            code: close::POLICY,
            reason: TOO_EARLY,
        },
    )
}

/// A read or write error; a bridged side whose cluster link failed is told apart so the
/// other side learns why.
fn end_for(who: Who, e: &io::Error) -> End {
    if crate::cluster::is_link_lost(e) {
        End::LinkLost(who)
    } else {
        End::Error(who)
    }
}

fn other(who: Who) -> Who {
    match who {
        Who::Phone => Who::Laptop,
        Who::Laptop => Who::Phone,
    }
}

/// Close frame (code, reason) for each side, and the metric reason, for an ended loop.
type Plan = (
    Option<(u16, &'static str)>,
    Option<(u16, &'static str)>,
    CloseReason,
);

fn plan_for(end: &End) -> Plan {
    const GONE: (u16, &str) = (close::GOING_AWAY, "remote peer disconnected");
    const CLEAN: (u16, &str) = (close::NORMAL, "remote peer cleanly disconnected");
    let (culprit, to_culprit, to_other, reason) = match *end {
        End::Stop(w, Stop::PeerClose(code)) => {
            let echo = if code == 1005 { close::NORMAL } else { code };
            (w, Some((echo, "")), Some(CLEAN), CloseReason::PeerClosed)
        }
        End::Stop(w, Stop::Violation { code, reason }) => {
            (w, Some((code, reason)), Some(GONE), CloseReason::Violation)
        }
        End::Eof(w) | End::Error(w) => (w, None, Some(GONE), CloseReason::PeerGone),
        End::LinkLost(w) => (
            w,
            None,
            Some((crate::cluster::CLOSE_LINK_LOST, crate::cluster::LINK_LOST)),
            CloseReason::PeerGone,
        ),
    };
    match culprit {
        Who::Phone => (to_culprit, to_other, reason),
        Who::Laptop => (to_other, to_culprit, reason),
    }
}

/// Writes what is queued (and a close frame, if the stream is between frames), shuts the
/// socket down and waits for the peer's end of the stream, all within `limit`.
async fn finish(
    side: &mut Side,
    close: Option<(u16, &'static str)>,
    boundary: bool,
    limit: Duration,
) {
    let Some(mut conn) = side.conn.take() else {
        return;
    };
    if let Some((code, reason)) = close
        && boundary
    {
        ws::push_close(&mut side.out, code, reason);
    }
    let _ = timeout(limit, async {
        conn.write_last(&side.out).await?;
        drop(std::mem::take(&mut side.out));
        let mut sink = [0u8; 64];
        while conn.read(&mut sink).await? != 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

async fn finish_both(p: &mut Pipes, plan: Plan, limit: Duration) {
    let (to_phone, to_laptop, _) = plan;
    let Pipes { phone, laptop, .. } = p;
    // A side that went away is dropped at once.
    let phone_boundary = laptop.dec.at_frame_boundary();
    let laptop_boundary = phone.dec.at_frame_boundary();
    if to_phone.is_none() {
        phone.conn = None;
    }
    if to_laptop.is_none() {
        laptop.conn = None;
    }
    tokio::join!(
        finish(phone, to_phone, phone_boundary, limit),
        finish(laptop, to_laptop, laptop_boundary, limit)
    );
}

/// What the waiting side opened: the tunnel is the same either way, its start is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opener {
    /// A phone on `/cable/new` (the QR flow): its 101 names the routing ID, and it waits up
    /// to the pairing timeout for the laptop.
    New,
    /// A laptop on `/cable/contact` (a linked phone, woken): it waits up to the contact
    /// timeout for the phone, and with `signal` is sent `[0x00]` when the phone joins
    /// (`X-caBLE-Signal-Connection`, docs/protocol.md §6.2).
    Contact {
        /// The laptop asked for the connect signal.
        signal: bool,
    },
}

impl Opener {
    /// How long the opener waits for its peer.
    fn wait(self, limits: &crate::config::Limits) -> Duration {
        match self {
            Opener::New => limits.pairing_timeout,
            Opener::Contact { .. } => limits.contact_timeout,
        }
    }

    /// The close reason when the peer did not come in time.
    fn timeout_reason(self) -> &'static str {
        match self {
            Opener::New => "timed out waiting for the peer",
            Opener::Contact { .. } => "the phone did not answer the wake-up in time",
        }
    }
}

enum Waited {
    End(End),
    Paired(Handoff),
    Timeout,
    Shutdown,
}

enum Ran {
    End(End),
    Timer(CloseReason),
}

/// Serves a phone from its `/cable/new` upgrade (or a laptop from its `/cable/contact`
/// upgrade: see [`Opener`]) to the end of its tunnel: waits for the peer, pairs the two,
/// relays, and closes both. The waiting side is called the phone here, the joining side
/// the laptop, whichever they are.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    slot: PairingSlot,
    _task: ConnGuard,
    conn: Conn,
    early: Vec<u8>,
    key: String,
    waiter: Waiter,
    mut ticket: Ticket,
    opener: Opener,
) {
    let shared = slot.0.clone();
    let limits = &shared.limits;
    let m = &shared.metrics;
    let tag = waiter.id.log_tag();
    let Waiter {
        id,
        generation,
        mut rx,
        since,
    } = waiter;
    let waiter_ref = (id, generation);
    let created = Instant::from_std(since);
    let ttl = created + limits.tunnel_ttl;
    let tally = Tally {
        max_message: limits.max_message_size,
        max_messages: limits.max_messages,
        ..Default::default()
    };
    // Boxed so the task's future stays small: only the I/O state is large.
    let mut p = Box::new(Pipes::new(tally, limits.queue_bytes));
    match opener {
        Opener::New => http::push_switching(&mut p.phone.out, &key, Some(&shared.routing_hex)),
        Opener::Contact { signal } => {
            http::push_upgrade(&mut p.phone.out, &key, SUBPROTOCOL, signal);
        }
    }
    p.phone.conn = Some(conn);
    tracing::debug!(tunnel = %tag, opener = ?opener, "waiting for the peer");

    let mut phase = shared.phase.subscribe();
    m.waiting.fetch_add(1, Relaxed);
    let waited = match p.feed(Who::Phone, &early) {
        Some(end) => Waited::End(end),
        None => tokio::select! {
            end = poll_fn(|cx| {
                shared.touch();
                p.poll_io(cx, m)
            }) => Waited::End(end),
            h = &mut rx => match h {
                Ok(h) => Waited::Paired(h),
                Err(_) => Waited::Shutdown,
            },
            _ = sleep_until(ttl.min(created + opener.wait(limits))) => Waited::Timeout,
            _ = phase.wait_for(|p| *p >= Phase::Draining) => Waited::Shutdown,
        },
    };
    m.waiting.fetch_sub(1, Relaxed);

    let h = match waited {
        Waited::Paired(h) => h,
        other => {
            shared.registry.withdraw(&waiter_ref.0, waiter_ref.1);
            rx.close();
            if let Ok(h) = rx.try_recv() {
                // A laptop claimed us as we were leaving: it never got its 101.
                let refusal = http::response(404, "", "text/plain", "");
                tokio::spawn(h.conn.respond(refusal, limits.close_timeout));
            }
            let plan: Plan = match other {
                Waited::End(end) => plan_for(&end),
                Waited::Timeout => (
                    Some((close::POLICY, opener.timeout_reason())),
                    None,
                    CloseReason::PairingTimeout,
                ),
                _ => (
                    Some((close::GOING_AWAY, "server shutting down")),
                    None,
                    CloseReason::Shutdown,
                ),
            };
            // A phone no laptop came for is charged to its address, unless the relay
            // itself sent it away. A laptop whose woken phone did not come is not: the
            // wake-up was delivered, the phone's part is not the laptop's doing.
            let contact_timeout =
                matches!(opener, Opener::Contact { .. }) && plan.2 == CloseReason::PairingTimeout;
            if plan.2 != CloseReason::Shutdown && !contact_timeout {
                ticket.charge();
            }
            tracing::debug!(tunnel = %tag, reason = plan.2.label(), "phone left before pairing");
            m.closed(plan.2);
            finish_both(&mut p, plan, limits.close_timeout).await;
            return;
        }
    };

    // Paired: the laptop's 101 goes in front of whatever the phone already sent. A contact
    // laptop that asked for it hears that the phone joined first (it is between frames: only
    // its 101 and pongs were written to it).
    if opener == (Opener::Contact { signal: true }) {
        ws::push_frame(&mut p.phone.out, op::BINARY, &CONNECT_SIGNAL);
    }
    p.paired();
    ticket.paired();
    let paired_at = Instant::now();
    m.paired_after(paired_at - created);
    let mut laptop_out = Vec::with_capacity(200 + p.laptop.out.len());
    http::push_switching(&mut laptop_out, &h.key, None);
    laptop_out.extend_from_slice(&p.laptop.out);
    p.laptop.out = laptop_out;
    p.laptop.conn = Some(h.conn);
    tracing::debug!(tunnel = %tag, wait_ms = (paired_at - created).as_millis() as u64, "paired");
    m.active.fetch_add(1, Relaxed);
    let first_deadline = paired_at + limits.first_message_timeout;
    let ran = match p.feed(Who::Laptop, &h.early) {
        Some(end) => Ran::End(end),
        None => loop {
            let deadline = if p.tally.messages == 0 {
                ttl.min(first_deadline)
            } else {
                ttl
            };
            let r = tokio::select! {
                end = poll_fn(|cx| {
                shared.touch();
                p.poll_io(cx, m)
            }) => Some(Ran::End(end)),
                _ = sleep_until(deadline) => None,
                _ = phase.wait_for(|p| *p >= Phase::Closing) => Some(Ran::Timer(CloseReason::Shutdown)),
            };
            match r {
                Some(r) => break r,
                None if Instant::now() >= ttl => break Ran::Timer(CloseReason::Ttl),
                None if p.tally.messages == 0 => {
                    break Ran::Timer(CloseReason::FirstMessageTimeout);
                }
                None => continue,
            }
        },
    };
    m.active.fetch_sub(1, Relaxed);
    let plan: Plan = match ran {
        Ran::End(end) => plan_for(&end),
        Ran::Timer(CloseReason::Ttl) => {
            let c = Some((close::POLICY, "tunnel lifetime exceeded"));
            (c, c, CloseReason::Ttl)
        }
        Ran::Timer(CloseReason::FirstMessageTimeout) => {
            let c = Some((close::POLICY, "no message in time"));
            (c, c, CloseReason::FirstMessageTimeout)
        }
        Ran::Timer(r) => {
            let c = Some((close::GOING_AWAY, "server shutting down"));
            (c, c, r)
        }
    };
    tracing::debug!(tunnel = %tag, reason = plan.2.label(), messages = p.tally.messages, "tunnel closed");
    m.closed(plan.2);
    finish_both(&mut p, plan, limits.close_timeout).await;
    drop(slot);
}
