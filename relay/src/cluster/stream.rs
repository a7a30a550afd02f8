//! A byte stream between two relay instances over NATS: one side of a bridged tunnel.
//!
//! When a laptop's `/cable/connect` lands on instance C but the phone waits on A, C does not
//! interpret the laptop's WebSocket at all: it forwards the raw bytes of the connection to A,
//! and A hands a [`RemoteStream`] to the phone's pairing task as if the laptop had connected
//! there. Every limit, close code and the 101 response therefore come from one place (A's
//! pairing), exactly as for a local one.
//!
//! On the wire each NATS message on `…br.<bridge id>.<side>` is one of
//! `[DATA] bytes`, `[CREDIT] u32 BE`, `[EOF]` or `[ABORT]`. Messages of one publisher on one
//! subject arrive in order. Flow control is by credit: a side may have at most [`WINDOW`]
//! bytes unacknowledged, and the reader grants credit as it consumes, so the receiving
//! queues stay bounded although NATS itself has no backpressure.

use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, interval};

use super::nats::{Link, Peers, Stats};

/// Bytes a sender may have in flight before the receiver grants more credit.
pub(crate) const WINDOW: i64 = 256 * 1024;
/// The receiver grants credit after consuming this much.
const CREDIT_BATCH: usize = 32 * 1024;
/// Largest DATA message.
const CHUNK: usize = 32 * 1024;

const DATA: u8 = 0;
const CREDIT: u8 = 1;
const EOF: u8 = 2;
const ABORT: u8 = 3;

use super::LINK_LOST;

/// Why a bridge ended abnormally: the `reason` label of
/// `hybridge_relay_cluster_bridge_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BridgeFailure {
    /// This side's stream was dropped without a clean end.
    ClosedLocally,
    /// The NATS connection went down (or came back as a new epoch).
    NatsLinkLost,
    /// The other side sent ABORT (or a message this side does not know).
    PeerAborted,
    /// The other instance sent no heartbeat within the peer timeout.
    PeerSilent,
    /// Publishing to the other side failed.
    PublishFailed,
    /// NATS ended this side's subscription.
    SubscriptionClosed,
}

impl BridgeFailure {
    /// Every reason, in the order of its discriminant and of its label (as `/metrics`
    /// lists them).
    pub(crate) const ALL: [BridgeFailure; 6] = [
        BridgeFailure::ClosedLocally,
        BridgeFailure::NatsLinkLost,
        BridgeFailure::PeerAborted,
        BridgeFailure::PeerSilent,
        BridgeFailure::PublishFailed,
        BridgeFailure::SubscriptionClosed,
    ];

    /// The metric label; dashboards and alerts match on these, so they never change.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BridgeFailure::ClosedLocally => "closed locally",
            BridgeFailure::NatsLinkLost => "nats link lost",
            BridgeFailure::PeerAborted => "peer aborted",
            BridgeFailure::PeerSilent => "peer instance silent",
            BridgeFailure::PublishFailed => "publish failed",
            BridgeFailure::SubscriptionClosed => "subscription closed",
        }
    }

    /// Whether the other side still has to be told with an ABORT: not when it aborted
    /// itself, was told already, or cannot be reached by publishing.
    fn tell_peer(self) -> bool {
        !matches!(
            self,
            BridgeFailure::ClosedLocally
                | BridgeFailure::PeerAborted
                | BridgeFailure::PublishFailed
        )
    }
}

enum Inbound {
    Data(Bytes),
    Eof,
}

enum Out {
    /// A whole `[DATA] bytes` message, built once by the writer and published as is.
    Data(Bytes),
    Credit(u32),
    Eof,
}

struct CreditState {
    avail: AtomicI64,
    waker: Mutex<Option<Waker>>,
}

/// One side of a bridge: `AsyncRead` yields what the other instance sent, `AsyncWrite`
/// sends to it. Dropping it without a shutdown aborts the other side.
pub(crate) struct RemoteStream {
    inbound: mpsc::UnboundedReceiver<Inbound>,
    pending: Bytes,
    out: mpsc::UnboundedSender<Out>,
    credit: Arc<CreditState>,
    consumed: usize,
    eof: bool,
    shut: bool,
}

/// What a bridge task needs to run.
pub(crate) struct BridgeIo {
    pub client: async_nats::Client,
    pub subscriber: async_nats::Subscriber,
    /// Subject the other side reads.
    pub to_peer: String,
    /// Routing ID (hex) of the other instance, for liveness.
    pub peer: String,
    pub link: watch::Receiver<Link>,
    pub peers: Arc<Peers>,
    pub stats: Arc<Stats>,
}

impl RemoteStream {
    /// Creates the stream and spawns the task that moves its messages.
    pub(crate) fn spawn(io: BridgeIo) -> RemoteStream {
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let credit = Arc::new(CreditState {
            avail: AtomicI64::new(WINDOW),
            waker: Mutex::new(None),
        });
        tokio::spawn(bridge_task(io, in_tx, out_rx, credit.clone()));
        RemoteStream {
            inbound: in_rx,
            pending: Bytes::new(),
            out: out_tx,
            credit,
            consumed: 0,
            eof: false,
            shut: false,
        }
    }

    fn lost() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, LinkLost)
    }
}

/// The error inside the `io::Error` of a bridged stream whose cluster link failed.
#[derive(Debug)]
struct LinkLost;

impl std::fmt::Display for LinkLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(LINK_LOST)
    }
}

impl std::error::Error for LinkLost {}

/// Whether an I/O error is a lost cluster link (rather than a peer that went away).
pub(crate) fn is_link_lost(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LinkLost>())
}

impl AsyncRead for RemoteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match this.inbound.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Inbound::Data(b))) => this.pending = b,
                Poll::Ready(Some(Inbound::Eof)) => {
                    this.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(None) => return Poll::Ready(Err(RemoteStream::lost())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        this.consumed += n;
        if this.consumed >= CREDIT_BATCH {
            let _ = this.out.send(Out::Credit(this.consumed as u32));
            this.consumed = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RemoteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.shut || this.out.is_closed() {
            return Poll::Ready(Err(RemoteStream::lost()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut avail = this.credit.avail.load(Acquire);
        if avail <= 0 {
            // Register, then look again: credit may have arrived in between.
            if let Ok(mut w) = this.credit.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            avail = this.credit.avail.load(Acquire);
            if avail <= 0 {
                return Poll::Pending;
            }
        }
        let n = buf.len().min(avail as usize).min(CHUNK);
        this.credit.avail.fetch_sub(n as i64, AcqRel);
        // The only copy of the payload on its way to NATS: straight into the message.
        if this.out.send(Out::Data(message(DATA, &buf[..n]))).is_err() {
            return Poll::Ready(Err(RemoteStream::lost()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.shut {
            this.shut = true;
            let _ = this.out.send(Out::Eof);
        }
        Poll::Ready(Ok(()))
    }
}

fn message(kind: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + body.len());
    b.put_u8(kind);
    b.put_slice(body);
    b.freeze()
}

/// Moves one bridge's messages until it ends. Ends the stream with an error (the reader
/// sees [`LINK_LOST`]) when NATS goes away, the peer instance stops sending heartbeats, or
/// the other side aborts.
async fn bridge_task(
    io: BridgeIo,
    in_tx: mpsc::UnboundedSender<Inbound>,
    mut out_rx: mpsc::UnboundedReceiver<Out>,
    credit: Arc<CreditState>,
) {
    let BridgeIo {
        client,
        mut subscriber,
        to_peer,
        peer,
        mut link,
        peers,
        stats,
    } = io;
    stats.bridge_opened();
    let epoch = link.borrow().epoch;
    let started = Instant::now();
    let mut tick = interval(Duration::from_millis(500));
    let mut sent_eof = false;
    let mut got_eof = false;
    // A stream dropped before anything moved (a refused bridge) ends quietly.
    let mut used = false;
    let wake_writer = || {
        if let Ok(mut w) = credit.waker.lock()
            && let Some(w) = w.take()
        {
            w.wake();
        }
    };
    let failure: Option<BridgeFailure> = loop {
        tokio::select! {
            biased;
            m = subscriber.next() => {
                let Some(m) = m else { break Some(BridgeFailure::SubscriptionClosed) };
                used = true;
                let p = &m.payload;
                match p.first() {
                    Some(&DATA) => {
                        let _ = in_tx.send(Inbound::Data(p.slice(1..)));
                    }
                    Some(&CREDIT) if p.len() == 5 => {
                        let n = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
                        credit.avail.fetch_add(n as i64, AcqRel);
                        wake_writer();
                    }
                    Some(&EOF) => {
                        got_eof = true;
                        let _ = in_tx.send(Inbound::Eof);
                        if sent_eof {
                            break None;
                        }
                    }
                    _ => break Some(BridgeFailure::PeerAborted),
                }
            }
            o = out_rx.recv() => {
                let msg = match o {
                    Some(Out::Data(m)) => m,
                    Some(Out::Credit(n)) => message(CREDIT, &n.to_be_bytes()),
                    Some(Out::Eof) => {
                        sent_eof = true;
                        message(EOF, &[])
                    }
                    None if (sent_eof && got_eof) || !used => break None,
                    None => {
                        // Dropped without a clean end: tell the other side.
                        let _ = client.publish(to_peer.clone(), message(ABORT, &[])).await;
                        break if sent_eof { None } else { Some(BridgeFailure::ClosedLocally) };
                    }
                };
                used = true;
                if client.publish(to_peer.clone(), msg).await.is_err() {
                    break Some(BridgeFailure::PublishFailed);
                }
            }
            r = link.changed() => {
                if r.is_err() || link.borrow().epoch != epoch || !link.borrow().up {
                    break Some(BridgeFailure::NatsLinkLost);
                }
            }
            _ = tick.tick() => {
                if !peers.alive(&peer, started) {
                    break Some(BridgeFailure::PeerSilent);
                }
            }
        }
    };
    if let Some(reason) = failure {
        stats.bridge_failed(reason);
        if reason.tell_peer() {
            let _ = client.publish(to_peer.clone(), message(ABORT, &[])).await;
        }
        tracing::debug!(reason = reason.as_str(), "cluster bridge ended");
    }
    stats.bridge_closed();
    // Waking a writer that waits for credit lets it see the closed channel.
    drop(in_tx);
    out_rx.close();
    wake_writer();
    let _ = subscriber.unsubscribe().await;
}

/// Follows a server-to-client WebSocket byte stream (an HTTP response head, then unmasked
/// frames) to know when a close frame can be injected without corrupting it.
#[derive(Default)]
pub(crate) struct FrameTracker {
    head_done: bool,
    /// Trailing bytes of the head seen so far, to spot `\r\n\r\n` across reads.
    tail: u32,
    /// Header bytes of the frame being read.
    hdr: [u8; 14],
    hdr_len: usize,
    /// Payload bytes still to come in the current frame.
    left: u64,
    /// The head was a 101: frames follow.
    upgraded: bool,
    first_line: Vec<u8>,
    line_done: bool,
}

impl FrameTracker {
    /// Whether the stream is between frames after a 101 (a close frame may go in).
    pub(crate) fn at_boundary(&self) -> bool {
        self.head_done && self.upgraded && self.hdr_len == 0 && self.left == 0
    }

    pub(crate) fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if !self.head_done {
                let c = b[0];
                b = &b[1..];
                if !self.line_done {
                    self.line_done = c == b'\n';
                    if self.first_line.len() < 16 {
                        self.first_line.push(c);
                    }
                }
                self.tail = (self.tail << 8) | u32::from(c);
                if self.tail == u32::from_be_bytes(*b"\r\n\r\n") {
                    self.head_done = true;
                    self.upgraded = self.first_line.starts_with(b"HTTP/1.1 101");
                }
                continue;
            }
            if self.left > 0 {
                let n = (b.len() as u64).min(self.left);
                self.left -= n;
                b = &b[n as usize..];
                continue;
            }
            self.hdr[self.hdr_len] = b[0];
            self.hdr_len += 1;
            b = &b[1..];
            if self.hdr_len < 2 {
                continue;
            }
            let len7 = self.hdr[1] & 0x7f;
            let mask = if self.hdr[1] & 0x80 != 0 { 4 } else { 0 };
            let need = 2
                + mask
                + match len7 {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
            if self.hdr_len < need {
                continue;
            }
            self.left = match len7 {
                126 => u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])),
                127 => u64::from_be_bytes([
                    self.hdr[2],
                    self.hdr[3],
                    self.hdr[4],
                    self.hdr[5],
                    self.hdr[6],
                    self.hdr[7],
                    self.hdr[8],
                    self.hdr[9],
                ]),
                n => u64::from(n),
            };
            self.hdr_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_follows_head_and_frames() {
        let mut t = FrameTracker::default();
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        t.feed(&head[..10]);
        assert!(!t.at_boundary());
        t.feed(&head[10..]);
        assert!(t.at_boundary());
        // A 300-byte binary frame, fed in pieces.
        let mut f = vec![0x82, 126, 0x01, 0x2c];
        f.extend(std::iter::repeat_n(7u8, 300));
        t.feed(&f[..1]);
        assert!(!t.at_boundary());
        t.feed(&f[1..100]);
        assert!(!t.at_boundary());
        t.feed(&f[100..]);
        assert!(t.at_boundary());
        t.feed(&[0x82, 0x00]); // empty frame
        assert!(t.at_boundary());
    }

    #[test]
    fn tracker_never_injects_into_a_refusal() {
        let mut t = FrameTracker::default();
        t.feed(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        assert!(!t.at_boundary());
    }

    #[test]
    fn failure_reasons_are_listed_in_label_order() {
        for (i, r) in BridgeFailure::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let labels: Vec<_> = BridgeFailure::ALL.iter().map(|r| r.as_str()).collect();
        assert!(labels.is_sorted(), "{labels:?}");
    }

    #[test]
    fn data_message_is_tag_then_payload() {
        assert_eq!(&message(DATA, b"abc")[..], &[DATA, b'a', b'b', b'c']);
        assert_eq!(&message(EOF, &[])[..], &[EOF]);
    }

    #[test]
    fn close_frame_layout() {
        let mut f = Vec::new();
        crate::ws::push_close(&mut f, crate::ws::close::INTERNAL, "x");
        assert_eq!(f, vec![0x88, 3, 0x03, 0xf3, b'x']);
    }
}
