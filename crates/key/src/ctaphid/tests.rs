//! The engine against a small CTAPHID client written from the spec (CTAP 2.2 §11.2.4), not
//! from the engine's own `fragment`: packets are built and messages reassembled here.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The client's packets for one message: the initialisation packet carries up to 57 bytes,
/// each continuation packet up to 59, SEQ counting from 0.
fn packets(cid: u32, command: u8, payload: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut p = vec![0u8; 64];
    p[0..4].copy_from_slice(&cid.to_be_bytes());
    p[4] = 0x80 | command;
    p[5] = (payload.len() >> 8) as u8;
    p[6] = payload.len() as u8;
    let n = payload.len().min(57);
    p[7..7 + n].copy_from_slice(&payload[..n]);
    out.push(p);
    let mut off = n;
    let mut seq = 0u8;
    while off < payload.len() {
        let mut p = vec![0u8; 64];
        p[0..4].copy_from_slice(&cid.to_be_bytes());
        p[4] = seq;
        let n = (payload.len() - off).min(59);
        p[5..5 + n].copy_from_slice(&payload[off..off + n]);
        out.push(p);
        off += n;
        seq += 1;
    }
    out
}

/// A message the device sent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Msg {
    cid: u32,
    cmd: u8,
    payload: Vec<u8>,
}

/// Reassembles the device's reports per channel, checking the framing as a client would.
#[derive(Default)]
struct Reader {
    partial: BTreeMap<u32, (u8, usize, Vec<u8>, u8)>,
}

impl Reader {
    fn feed(&mut self, r: &[u8; 64]) -> Option<Msg> {
        let cid = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
        if r[4] & 0x80 != 0 {
            assert!(
                !self.partial.contains_key(&cid),
                "device started a message on {cid:#x} before finishing the last"
            );
            let len = (usize::from(r[5]) << 8) | usize::from(r[6]);
            assert!(len <= 7609, "device message too long");
            let n = len.min(57);
            let data = r[7..7 + n].to_vec();
            if data.len() == len {
                return Some(Msg {
                    cid,
                    cmd: r[4] & 0x7f,
                    payload: data,
                });
            }
            self.partial.insert(cid, (r[4] & 0x7f, len, data, 0));
            None
        } else {
            let (cmd, len, mut data, seq) = self
                .partial
                .remove(&cid)
                .expect("continuation without initialisation");
            assert_eq!(r[4], seq, "device sequence numbers must count up");
            let n = (len - data.len()).min(59);
            data.extend_from_slice(&r[5..5 + n]);
            if data.len() == len {
                Some(Msg {
                    cid,
                    cmd,
                    payload: data,
                })
            } else {
                self.partial.insert(cid, (cmd, len, data, seq + 1));
                None
            }
        }
    }
}

/// Engine, clock and client.
struct Harness {
    e: Engine,
    now: Instant,
    reader: Reader,
}

impl Harness {
    fn new() -> Self {
        Self::with(Limits::default())
    }

    fn with(limits: Limits) -> Self {
        Harness {
            e: Engine::new(limits),
            now: Instant::now(),
            reader: Reader::default(),
        }
    }

    fn raw(&mut self, report: &[u8]) {
        self.e.handle_report(self.now, report);
    }

    fn send(&mut self, cid: u32, command: u8, payload: &[u8]) {
        for p in packets(cid, command, payload) {
            self.raw(&p);
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.e.handle_timeout(self.now);
    }

    /// Every complete message and every other output, in order.
    fn drain(&mut self) -> (Vec<Msg>, Vec<Output>) {
        let (mut msgs, mut other) = (Vec::new(), Vec::new());
        while let Some(o) = self.e.poll_output() {
            match o {
                Output::Report(r) => msgs.extend(self.reader.feed(&r)),
                o => other.push(o),
            }
        }
        (msgs, other)
    }

    fn msgs(&mut self) -> Vec<Msg> {
        let (m, o) = self.drain();
        assert!(o.is_empty(), "unexpected outputs {o:?}");
        m
    }

    fn one(&mut self) -> Msg {
        let m = self.msgs();
        assert_eq!(m.len(), 1, "{m:?}");
        m.into_iter().next().unwrap()
    }

    /// Allocates a channel through broadcast INIT; checks the response.
    fn channel(&mut self) -> u32 {
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
        self.send(BROADCAST_CID, cmd::INIT, &nonce);
        let m = self.one();
        assert_eq!((m.cid, m.cmd), (BROADCAST_CID, cmd::INIT));
        assert_eq!(m.payload.len(), 17);
        assert_eq!(&m.payload[..8], &nonce);
        u32::from_be_bytes(m.payload[8..12].try_into().unwrap())
    }

    fn request(&mut self, cid: u32, payload: &[u8]) -> Request {
        self.send(cid, cmd::CBOR, payload);
        let (m, o) = self.drain();
        assert!(m.is_empty(), "{m:?}");
        match &o[..] {
            [Output::Request(r)] => r.clone(),
            o => panic!("expected one request, got {o:?}"),
        }
    }
}

fn error(cid: u32, code: u8) -> Msg {
    Msg {
        cid,
        cmd: cmd::ERROR,
        payload: vec![code],
    }
}

#[test]
fn init_allocates_a_channel_and_says_what_the_device_does() {
    let mut h = Harness::new();
    let nonce = [9, 8, 7, 6, 5, 4, 3, 2];
    h.send(BROADCAST_CID, cmd::INIT, &nonce);
    let m = h.one();
    assert_eq!(m.cid, BROADCAST_CID, "answered on the broadcast channel");
    assert_eq!(&m.payload[..8], &nonce, "nonce echoed");
    let cid = u32::from_be_bytes(m.payload[8..12].try_into().unwrap());
    assert!(cid != 0 && cid != BROADCAST_CID);
    assert_eq!(m.payload[12], 2, "CTAPHID protocol version 2");
    // CBOR and WINK, and NMSG: no U2F.
    assert_eq!(m.payload[16], 0x01 | 0x04 | 0x08);
    let other = h.channel();
    assert_ne!(cid, other, "every INIT gets its own channel");
    assert_eq!(h.e.channel_count(), 2);
}

#[test]
fn init_on_an_allocated_channel_resynchronises_it_and_cancels_what_was_pending() {
    let mut h = Harness::new();
    let cid = h.channel();
    let r = h.request(cid, &[0x01, 0xa0]);
    h.send(cid, cmd::INIT, &[7; 8]);
    let (m, o) = h.drain();
    assert_eq!(o, vec![Output::Cancel(r.id)]);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].cid, cid);
    assert_eq!(&m[0].payload[8..12], &cid.to_be_bytes(), "the same channel");
    assert!(!h.e.respond(h.now, r.id, &[0]), "the old request is gone");
    assert!(h.msgs().is_empty());
}

#[test]
fn init_with_a_wrong_length_and_bad_channels_get_errors() {
    let mut h = Harness::new();
    h.send(BROADCAST_CID, cmd::INIT, &[1; 7]);
    assert_eq!(h.one(), error(BROADCAST_CID, err::INVALID_LEN));
    h.send(BROADCAST_CID, cmd::PING, b"hi");
    assert_eq!(h.one(), error(BROADCAST_CID, err::INVALID_CHANNEL));
    h.send(0, cmd::INIT, &[1; 8]);
    assert_eq!(h.one(), error(0, err::INVALID_CHANNEL));
    h.send(0x1234_5678, cmd::PING, b"hi");
    assert_eq!(h.one(), error(0x1234_5678, err::INVALID_CHANNEL));
    assert_eq!(h.e.channel_count(), 0);
}

#[test]
fn ping_echoes_up_to_the_largest_message_and_refuses_beyond() {
    let mut h = Harness::new();
    let cid = h.channel();
    for len in [0, 1, 57, 58, 116, 117, 1000, MAX_MESSAGE] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        h.send(cid, cmd::PING, &payload);
        let m = h.one();
        assert_eq!((m.cid, m.cmd), (cid, cmd::PING));
        assert_eq!(m.payload, payload, "echo of {len} bytes");
    }
    assert_eq!(MAX_MESSAGE, 7609);
    // 7610 bytes: the length alone is refused, before any continuation packet.
    let big = vec![0u8; MAX_MESSAGE + 1];
    let p = packets(cid, cmd::PING, &big);
    h.raw(&p[0]);
    assert_eq!(h.one(), error(cid, err::INVALID_LEN));
    // (Only the 128 continuation packets a sequence number can name.)
    for c in &p[1..=128] {
        h.raw(c);
    }
    assert!(h.msgs().is_empty(), "its continuation packets are ignored");
}

#[test]
fn cbor_requests_and_answers_span_many_reports() {
    let mut h = Harness::new();
    let cid = h.channel();
    let request: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let r = h.request(cid, &request);
    assert_eq!(r.cid, cid);
    assert_eq!(r.command, Command::Cbor);
    assert_eq!(r.payload, request);
    let answer: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    assert!(h.e.respond(h.now, r.id, &answer));
    let m = h.one();
    assert_eq!((m.cid, m.cmd), (cid, cmd::CBOR));
    assert_eq!(m.payload, answer);
    assert!(!h.e.is_pending(r.id));
    assert!(!h.e.respond(h.now, r.id, &answer), "answered once only");
}

#[test]
fn an_answer_beyond_the_largest_message_becomes_ctap1_err_other() {
    let mut h = Harness::new();
    let cid = h.channel();
    let r = h.request(cid, &[0x01]);
    assert!(h.e.respond(h.now, r.id, &vec![0; MAX_MESSAGE + 1]));
    assert_eq!(h.one().payload, vec![0x7f]);
}

#[test]
fn empty_cbor_is_an_invalid_length() {
    let mut h = Harness::new();
    let cid = h.channel();
    h.send(cid, cmd::CBOR, &[]);
    assert_eq!(h.one(), error(cid, err::INVALID_LEN));
}

#[test]
fn a_bad_sequence_number_drops_the_message_and_the_channel_recovers() {
    let mut h = Harness::new();
    let cid = h.channel();
    let p = packets(cid, cmd::PING, &[5; 200]);
    h.raw(&p[0]);
    h.raw(&p[2]); // SEQ 1 where 0 was due
    assert_eq!(h.one(), error(cid, err::INVALID_SEQ));
    h.raw(&p[1]);
    assert!(
        h.msgs().is_empty(),
        "the rest of the broken message is ignored"
    );
    h.send(cid, cmd::PING, b"again");
    assert_eq!(h.one().payload, b"again");
}

#[test]
fn a_new_message_before_the_last_one_was_complete_is_a_sequence_error() {
    let mut h = Harness::new();
    let cid = h.channel();
    let p = packets(cid, cmd::PING, &[5; 100]);
    h.raw(&p[0]);
    h.send(cid, cmd::PING, b"x");
    assert_eq!(h.one(), error(cid, err::INVALID_SEQ));
    h.send(cid, cmd::PING, b"y");
    assert_eq!(h.one().payload, b"y");
}

#[test]
fn an_incomplete_message_times_out() {
    let mut h = Harness::new();
    let cid = h.channel();
    let p = packets(cid, cmd::PING, &[5; 200]);
    h.raw(&p[0]);
    let deadline = h.e.poll_timeout().expect("a transaction timeout");
    assert_eq!(deadline, h.now + Duration::from_millis(1000));
    h.advance(Duration::from_millis(600));
    h.raw(&p[1]); // each packet restarts the clock
    h.advance(Duration::from_millis(600));
    assert!(h.msgs().is_empty());
    h.advance(Duration::from_millis(400));
    assert_eq!(h.one(), error(cid, err::MSG_TIMEOUT));
    h.raw(&p[2]);
    h.raw(&p[3]);
    assert!(h.msgs().is_empty(), "late packets are ignored");
    assert_eq!(h.e.poll_timeout(), None);
}

#[test]
fn spurious_continuation_packets_are_ignored() {
    let mut h = Harness::new();
    let cid = h.channel();
    let p = packets(cid, cmd::PING, &[5; 100]);
    h.raw(&p[1]);
    let mut other = p[1].clone();
    other[..4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    h.raw(&other);
    assert!(h.msgs().is_empty());
}

#[test]
fn reports_of_the_wrong_size_are_ignored() {
    let mut h = Harness::new();
    let p = packets(BROADCAST_CID, cmd::INIT, &[1; 8]);
    h.raw(&p[0][..63]);
    let mut long = p[0].clone();
    long.push(0);
    h.raw(&long);
    h.raw(&[]);
    assert!(h.msgs().is_empty());
}

#[test]
fn a_busy_channel_blocks_only_itself() {
    let mut h = Harness::new();
    let a = h.channel();
    let ra = h.request(a, &[0x01, 0xa0]);
    // The same channel: busy, for every command but INIT and CANCEL.
    h.send(a, cmd::CBOR, &[0x04]);
    assert_eq!(h.one(), error(a, err::CHANNEL_BUSY));
    h.send(a, cmd::PING, b"p");
    assert_eq!(h.one(), error(a, err::CHANNEL_BUSY));
    // INIT still allocates; another channel pings and gets its own request served.
    let b = h.channel();
    h.send(b, cmd::PING, b"pong");
    assert_eq!(h.one().payload, b"pong");
    let rb = h.request(b, &[0x04]);
    assert_ne!(ra.id, rb.id);
    assert!(h.e.respond(h.now, rb.id, &[0x00, 0xa0]));
    assert_eq!(h.one().cid, b);
    assert!(h.e.is_pending(ra.id), "A still waits for its phone");
    assert!(h.e.respond(h.now, ra.id, &[0x00]));
    assert_eq!(h.one().cid, a);
    h.send(a, cmd::PING, b"free");
    assert_eq!(h.one().payload, b"free");
}

#[test]
fn messages_on_two_channels_may_interleave() {
    let mut h = Harness::new();
    let (a, b) = (h.channel(), h.channel());
    let pa = packets(a, cmd::PING, &[0xaa; 300]);
    let pb = packets(b, cmd::PING, &[0xbb; 300]);
    for (x, y) in pa.iter().zip(&pb) {
        h.raw(x);
        h.raw(y);
    }
    let m = h.msgs();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].payload, vec![0xaa; 300]);
    assert_eq!(m[1].payload, vec![0xbb; 300]);
}

#[test]
fn keepalives_every_100ms_say_processing_then_up_needed() {
    let mut h = Harness::new();
    let cid = h.channel();
    let r = h.request(cid, &[0x01, 0xa0]);
    assert_eq!(h.e.poll_timeout(), Some(h.now + Duration::from_millis(100)));
    h.advance(Duration::from_millis(99));
    assert!(h.msgs().is_empty());
    h.advance(Duration::from_millis(1));
    let keepalive = |status: u8| Msg {
        cid,
        cmd: cmd::KEEPALIVE,
        payload: vec![status],
    };
    assert_eq!(h.one(), keepalive(1));
    h.e.set_status(r.id, Status::UpNeeded);
    let mut n = 0;
    for _ in 0..10 {
        h.advance(Duration::from_millis(100));
        assert_eq!(h.one(), keepalive(2));
        n += 1;
    }
    assert_eq!(n, 10, "one a tick for a second");
    // A stalled driver gets one keepalive, not a burst.
    h.advance(Duration::from_secs(3));
    assert_eq!(h.one(), keepalive(2));
    assert!(h.e.respond(h.now, r.id, &[0]));
    assert_eq!(h.one().cmd, cmd::CBOR);
    assert_eq!(h.e.poll_timeout(), None);
    h.advance(Duration::from_secs(1));
    assert!(h.msgs().is_empty(), "no keepalive after the answer");
}

#[test]
fn cancel_answers_the_pending_request_at_once_and_drops_the_late_answer() {
    let mut h = Harness::new();
    let cid = h.channel();
    let r = h.request(cid, &[0x02, 0xa0]);
    h.send(cid, cmd::CANCEL, &[]);
    let (m, o) = h.drain();
    assert_eq!(o, vec![Output::Cancel(r.id)]);
    assert_eq!(
        m,
        vec![Msg {
            cid,
            cmd: cmd::CBOR,
            payload: vec![CTAP2_ERR_KEEPALIVE_CANCEL]
        }]
    );
    assert!(!h.e.respond(h.now, r.id, &[0, 1, 2]));
    assert!(!h.e.respond_error(h.now, r.id, err::OTHER));
    h.advance(Duration::from_secs(1));
    assert!(h.msgs().is_empty());
    // CANCEL with nothing pending, or another channel's, is never answered.
    let other = h.channel();
    let r2 = h.request(cid, &[0x02]);
    h.send(other, cmd::CANCEL, &[]);
    assert!(h.drain() == (vec![], vec![]));
    assert!(h.e.is_pending(r2.id));
}

#[test]
fn wink_is_answered_and_reported() {
    let mut h = Harness::new();
    let cid = h.channel();
    h.send(cid, cmd::WINK, &[]);
    let (m, o) = h.drain();
    assert_eq!(o, vec![Output::Wink(cid)]);
    assert_eq!(
        m,
        vec![Msg {
            cid,
            cmd: cmd::WINK,
            payload: vec![]
        }]
    );
    h.send(cid, cmd::WINK, &[1]);
    assert_eq!(h.one(), error(cid, err::INVALID_LEN));
}

#[test]
fn lock_keeps_other_channels_out_until_it_ends() {
    let mut h = Harness::new();
    let (a, b) = (h.channel(), h.channel());
    h.send(a, cmd::LOCK, &[11]);
    assert_eq!(h.one(), error(a, err::INVALID_PAR));
    h.send(a, cmd::LOCK, &[]);
    assert_eq!(h.one(), error(a, err::INVALID_LEN));
    h.send(a, cmd::LOCK, &[2]);
    assert_eq!(h.one().cmd, cmd::LOCK);
    h.send(b, cmd::PING, b"x");
    assert_eq!(h.one(), error(b, err::CHANNEL_BUSY));
    h.send(a, cmd::PING, b"mine");
    assert_eq!(h.one().payload, b"mine");
    // New channels can still be allocated.
    let c = h.channel();
    h.send(c, cmd::CBOR, &[4]);
    assert_eq!(h.one(), error(c, err::CHANNEL_BUSY));
    h.advance(Duration::from_secs(2));
    h.send(b, cmd::PING, b"x");
    assert_eq!(h.one().payload, b"x");
    // LOCK 0 releases early.
    h.send(a, cmd::LOCK, &[10]);
    h.msgs();
    h.send(a, cmd::LOCK, &[0]);
    h.msgs();
    h.send(b, cmd::PING, b"y");
    assert_eq!(h.one().payload, b"y");
}

#[test]
fn u2f_msg_and_unknown_commands_are_invalid() {
    let mut h = Harness::new();
    let cid = h.channel();
    // U2F_VERSION as an APDU
    h.send(cid, cmd::MSG, &[0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(h.one(), error(cid, err::INVALID_CMD));
    for c in [0x00, 0x02, 0x05, 0x07, 0x40, 0x55, 0x7f] {
        h.send(cid, c, b"?");
        assert_eq!(h.one(), error(cid, err::INVALID_CMD), "command {c:#x}");
    }
}

#[test]
fn the_channel_table_is_bounded_and_frees_the_least_recently_used_idle_channel() {
    let mut h = Harness::with(Limits {
        max_channels: 3,
        ..Limits::default()
    });
    let a = h.channel();
    let busy = h.channel();
    let r = h.request(busy, &[1]);
    let c = h.channel();
    h.advance(Duration::from_millis(1));
    h.send(a, cmd::PING, b"a"); // a is now more recent than c
    h.msgs();
    let d = h.channel();
    assert_eq!(h.e.channel_count(), 3);
    h.send(c, cmd::PING, b"c");
    assert_eq!(h.one(), error(c, err::INVALID_CHANNEL), "c was freed");
    h.send(a, cmd::PING, b"a");
    assert_eq!(h.one().payload, b"a");
    assert!(h.e.is_pending(r.id), "a busy channel is never freed");
    let _ = d;
}

#[test]
fn when_every_channel_is_busy_init_says_so() {
    let mut h = Harness::with(Limits {
        max_channels: 1,
        ..Limits::default()
    });
    let a = h.channel();
    h.request(a, &[1]);
    h.send(BROADCAST_CID, cmd::INIT, &[3; 8]);
    assert_eq!(h.one(), error(BROADCAST_CID, err::CHANNEL_BUSY));
}

#[test]
fn the_report_queue_is_bounded() {
    let mut h = Harness::with(Limits {
        max_queued_reports: 10,
        ..Limits::default()
    });
    h.send(BROADCAST_CID, cmd::INIT, &[1; 8]);
    let (m, _) = h.drain();
    let cid = u32::from_be_bytes(m[0].payload[8..12].try_into().unwrap());
    for _ in 0..20 {
        h.send(cid, cmd::PING, b"flood");
    }
    assert_eq!(h.e.dropped_reports(), 10);
    let mut n = 0;
    while h.e.poll_output().is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
}

#[test]
fn debug_output_never_shows_a_request_payload() {
    let r = Output::Request(Request {
        id: RequestId(1),
        cid: 5,
        command: Command::Cbor,
        payload: b"\x06secret-pin-material".to_vec(),
    });
    let s = format!("{r:?}");
    assert!(!s.contains("secret"), "{s}");
    assert!(s.contains("len: 20"), "{s}");
}

proptest! {
    /// Any payload, through the client's packets into the engine and the engine's packets
    /// back through the client's reader: PING returns it unchanged, CBOR delivers it and
    /// carries the answer back, while another channel's message interleaves.
    #[test]
    fn messages_round_trip(
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_MESSAGE),
        answer in proptest::collection::vec(any::<u8>(), 1..=MAX_MESSAGE),
        interleave in 0usize..130,
    ) {
        let mut h = Harness::new();
        let (a, b) = (h.channel(), h.channel());
        let pa = packets(a, cmd::PING, &payload);
        let pb = packets(b, cmd::PING, b"other channel, same time, more than one packet long: \
            fifty-seven bytes do not hold it");
        let at = interleave.min(pa.len());
        for p in &pa[..at] { h.raw(p); }
        for p in &pb { h.raw(p); }
        for p in &pa[at..] { h.raw(p); }
        let m = h.msgs();
        prop_assert_eq!(m.len(), 2);
        let echo = m.iter().find(|m| m.cid == a).unwrap();
        prop_assert_eq!(&echo.payload, &payload);

        if !payload.is_empty() {
            let r = h.request(a, &payload);
            prop_assert_eq!(&r.payload, &payload);
            prop_assert!(h.e.respond(h.now, r.id, &answer));
            let m = h.one();
            prop_assert_eq!(m.cmd, cmd::CBOR);
            prop_assert_eq!(m.payload, answer);
        }
    }

    /// The engine's own fragmentation agrees with the client's.
    #[test]
    fn fragment_matches_the_spec_client(
        cid in any::<u32>(),
        command in 0u8..0x80,
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_MESSAGE),
    ) {
        let ours: Vec<Vec<u8>> = fragment(cid, command, &payload).iter().map(|r| r.to_vec()).collect();
        prop_assert_eq!(ours, packets(cid, command, &payload));
    }

    /// Arbitrary reports and clock steps: never a panic, every report the device sends is
    /// well framed, the state stays bounded.
    #[test]
    fn arbitrary_reports_are_survived(
        steps in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 64), 0u64..1500, any::<bool>()), 0..60),
    ) {
        let mut h = Harness::with(Limits { max_channels: 4, ..Limits::default() });
        let cid = h.channel();
        for (mut report, ms, own) in steps {
            if own {
                report[..4].copy_from_slice(&cid.to_be_bytes());
            }
            h.raw(&report);
            h.advance(Duration::from_millis(ms));
            let mut reader = Reader::default();
            while let Some(o) = h.e.poll_output() {
                match o {
                    Output::Report(r) => { reader.feed(&r); }
                    Output::Request(r) => { h.e.respond(h.now, r.id, &[0]); }
                    _ => {}
                }
            }
            prop_assert!(h.e.channel_count() <= 4);
        }
    }
}
