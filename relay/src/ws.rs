//! A small WebSocket (RFC 6455) frame codec for the relay's hot path.
//!
//! The relay never needs a whole message in memory: it forwards frames as they stream in,
//! rewriting each client (masked) frame header into a server (unmasked) header and unmasking
//! the payload **in place** in the read buffer. A server header is always at least 4 bytes
//! shorter than the client header it replaces, so with [`HEADROOM`] spare bytes before the
//! read data the output never overtakes the input and no second buffer is needed.
//!
//! Only what the tunnel protocol needs (docs/protocol.md §6.1, §6.4): binary messages (possibly
//! fragmented into continuation frames), close, ping (answered with pong when possible) and
//! pong (ignored). Text frames close with 1003; size and count limits with 1009 and 1008.

/// Spare bytes the caller leaves before the data it hands to [`Decoder::process`]: the
/// longest server header (10 bytes) that may be written before any input was consumed.
pub(crate) const HEADROOM: usize = 16;

/// WebSocket opcodes.
pub(crate) mod op {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// Close codes the relay sends (RFC 6455 §7.4.1).
pub(crate) mod close {
    /// Normal closure: the other peer closed cleanly.
    pub(crate) const NORMAL: u16 = 1000;
    /// Going away: server shutdown, or the other peer vanished without a close frame.
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// Protocol error: a malformed frame.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// Unsupported data: a text frame (tunnel messages are binary, docs/protocol.md §6.4).
    pub(crate) const UNSUPPORTED: u16 = 1003;
    /// Policy violation: tunnel lifetime, message count, or pairing timeout exceeded.
    pub(crate) const POLICY: u16 = 1008;
    /// Message too big.
    pub(crate) const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub(crate) const INTERNAL: u16 = 1011;
}

/// Why the decoder stopped the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The client sent a close frame with this code (1005 if none was given).
    PeerClose(u16),
    /// The client broke a rule; close it with `code` and `reason`.
    Violation { code: u16, reason: &'static str },
}

/// Limits and tallies shared by both directions of one tunnel.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Largest message (sum of its frames' payloads) accepted, in bytes.
    pub max_message: u64,
    /// Most data messages accepted in the tunnel (both directions), 0 for no limit.
    pub max_messages: u64,
    /// Data messages started so far.
    pub messages: u64,
    /// Payload bytes forwarded so far.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    /// Inside a data frame being forwarded.
    Data {
        remaining: u64,
        fin: bool,
    },
    /// Inside a control frame being collected into `ctl`.
    Control {
        remaining: u8,
        opcode: u8,
    },
    /// A close frame was received or a violation found; ignore the rest.
    Done,
}

/// Incremental decoder for one client→server byte stream, producing server→client frames.
#[derive(Debug)]
pub(crate) struct Decoder {
    stash: [u8; 14],
    stash_len: u8,
    state: State,
    mask: [u8; 4],
    mask_off: u8,
    in_message: bool,
    message_len: u64,
    ctl: [u8; 125],
    ctl_len: u8,
    /// Payload of the latest ping not yet answered (if any).
    pub ping: Option<([u8; 125], u8)>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub(crate) const fn new() -> Self {
        Self {
            stash: [0; 14],
            stash_len: 0,
            state: State::Header,
            mask: [0; 4],
            mask_off: 0,
            in_message: false,
            message_len: 0,
            ctl: [0; 125],
            ctl_len: 0,
            ping: None,
        }
    }

    /// Whether the forwarded output stream is between frames, so that the relay may inject
    /// a frame of its own (a close or pong) into it.
    pub(crate) fn at_frame_boundary(&self) -> bool {
        !matches!(self.state, State::Data { .. })
    }

    /// Processes the client bytes `buf[start..end]` in place. Returns `(out_len, stop)`:
    /// `buf[..out_len]` holds the server frames to forward to the other peer. Requires
    /// `start >= HEADROOM`.
    pub(crate) fn process(
        &mut self,
        buf: &mut [u8],
        start: usize,
        end: usize,
        tally: &mut Tally,
    ) -> (usize, Option<Stop>) {
        debug_assert!(start >= HEADROOM && end <= buf.len());
        let mut r = start;
        let mut w = 0usize;
        while r < end {
            match self.state {
                State::Done => return (w, None),
                State::Header => {
                    // Collect the 2-byte base header, then the rest.
                    let need = if self.stash_len < 2 {
                        2
                    } else {
                        header_len(&self.stash)
                    };
                    let take = (need - self.stash_len as usize).min(end - r);
                    let s = self.stash_len as usize;
                    self.stash[s..s + take].copy_from_slice(&buf[r..r + take]);
                    self.stash_len += take as u8;
                    r += take;
                    if (self.stash_len as usize) < need {
                        continue;
                    }
                    if need == 2 && header_len(&self.stash) > 2 {
                        continue; // now we know the full length; collect the rest
                    }
                    self.stash_len = 0;
                    match self.start_frame(tally) {
                        Err(stop) => {
                            self.state = State::Done;
                            return (w, Some(stop));
                        }
                        Ok(Some((fin, opcode, len))) => {
                            // Write the server header; it fits before `r` (see module docs).
                            let b0 = if fin { 0x80 } else { 0 } | opcode;
                            w += write_header(&mut buf[w..r], b0, len);
                            if len == 0 {
                                self.end_data_frame(fin);
                            }
                        }
                        Ok(None) => {
                            if let Some(stop) = self.maybe_end_control() {
                                return (w, Some(stop));
                            }
                        }
                    }
                }
                State::Data { remaining, fin } => {
                    let take = (remaining.min((end - r) as u64)) as usize;
                    self.unmask(&mut buf[r..r + take]);
                    if w != r {
                        buf.copy_within(r..r + take, w);
                    }
                    w += take;
                    r += take;
                    tally.bytes += take as u64;
                    let remaining = remaining - take as u64;
                    if remaining == 0 {
                        self.end_data_frame(fin);
                    } else {
                        self.state = State::Data { remaining, fin };
                    }
                }
                State::Control { remaining, opcode } => {
                    let take = (remaining as usize).min(end - r);
                    let c = self.ctl_len as usize;
                    self.ctl[c..c + take].copy_from_slice(&buf[r..r + take]);
                    let (mask, off) = (self.mask, self.mask_off);
                    unmask_slice(&mut self.ctl[c..c + take], mask, off);
                    self.mask_off = ((off as usize + take) % 4) as u8;
                    self.ctl_len += take as u8;
                    r += take;
                    self.state = State::Control {
                        remaining: remaining - take as u8,
                        opcode,
                    };
                    if let Some(stop) = self.maybe_end_control() {
                        return (w, Some(stop));
                    }
                }
            }
        }
        (w, None)
    }

    /// Validates the complete header in `stash`. `Ok(Some)` for a data frame to forward,
    /// `Ok(None)` for a control frame (now being collected).
    fn start_frame(&mut self, tally: &mut Tally) -> Result<Option<(bool, u8, u64)>, Stop> {
        let h = &self.stash;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0F;
        if h[0] & 0x70 != 0 {
            return Err(violation(close::PROTOCOL, "reserved bits set"));
        }
        if h[1] & 0x80 == 0 {
            return Err(violation(close::PROTOCOL, "client frames must be masked"));
        }
        let (len, mask_at) = match h[1] & 0x7F {
            126 => (u16::from_be_bytes([h[2], h[3]]) as u64, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (n as u64, 2),
        };
        self.mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        self.mask_off = 0;
        match opcode {
            op::CLOSE | op::PING | op::PONG => {
                if !fin || len > 125 {
                    return Err(violation(close::PROTOCOL, "bad control frame"));
                }
                self.ctl_len = 0;
                self.state = State::Control {
                    remaining: len as u8,
                    opcode,
                };
                Ok(None)
            }
            op::TEXT => Err(violation(
                close::UNSUPPORTED,
                "text messages are not supported",
            )),
            op::BINARY | op::CONTINUATION => {
                if (opcode == op::BINARY) == self.in_message {
                    return Err(violation(close::PROTOCOL, "bad fragmentation"));
                }
                if opcode == op::BINARY {
                    tally.messages += 1;
                    if tally.max_messages != 0 && tally.messages > tally.max_messages {
                        return Err(violation(close::POLICY, "message limit exceeded"));
                    }
                    self.in_message = true;
                    self.message_len = 0;
                }
                self.message_len = self.message_len.saturating_add(len);
                if self.message_len > tally.max_message {
                    return Err(violation(close::TOO_BIG, "message too big"));
                }
                self.state = State::Data {
                    remaining: len,
                    fin,
                };
                Ok(Some((fin, opcode, len)))
            }
            _ => Err(violation(close::PROTOCOL, "unknown opcode")),
        }
    }

    fn end_data_frame(&mut self, fin: bool) {
        if fin {
            self.in_message = false;
        }
        self.state = State::Header;
    }

    fn maybe_end_control(&mut self) -> Option<Stop> {
        let State::Control {
            remaining: 0,
            opcode,
        } = self.state
        else {
            return None;
        };
        self.state = State::Header;
        match opcode {
            op::PING => {
                self.ping = Some((self.ctl, self.ctl_len));
                None
            }
            op::CLOSE => {
                self.state = State::Done;
                let code = match self.ctl_len {
                    0 => 1005,
                    1 => return Some(violation(close::PROTOCOL, "bad close frame")),
                    _ => u16::from_be_bytes([self.ctl[0], self.ctl[1]]),
                };
                // RFC 6455 §5.5.1, §7.4: a code that may not be sent, or a reason that is not
                // UTF-8, is a protocol error; it is never echoed back.
                let reason = &self.ctl[2.min(self.ctl_len as usize)..self.ctl_len as usize];
                if (self.ctl_len >= 2 && !close_code_sendable(code))
                    || std::str::from_utf8(reason).is_err()
                {
                    return Some(violation(close::PROTOCOL, "invalid close frame"));
                }
                Some(Stop::PeerClose(code))
            }
            _ => None, // pong: ignored (docs/protocol.md §6.4: keep-alives are not relayed)
        }
    }

    fn unmask(&mut self, data: &mut [u8]) {
        unmask_slice(data, self.mask, self.mask_off);
        self.mask_off = ((self.mask_off as usize + data.len()) % 4) as u8;
    }
}

/// Whether an endpoint may put `code` in a close frame (RFC 6455 §7.4.1 and the IANA
/// registry: 1000-1003, 1007-1014, and 3000-4999 for libraries and applications).
pub(crate) fn close_code_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn violation(code: u16, reason: &'static str) -> Stop {
    Stop::Violation { code, reason }
}

/// Total header length (including the mask key if present) given at least 2 header bytes.
fn header_len(h: &[u8]) -> usize {
    let ext = match h[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if h[1] & 0x80 != 0 { 4 } else { 0 }
}

/// XORs `data` with `mask` starting at mask position `off`.
pub(crate) fn unmask_slice(data: &mut [u8], mask: [u8; 4], off: u8) {
    let off = off as usize;
    let m = [
        mask[off % 4],
        mask[(off + 1) % 4],
        mask[(off + 2) % 4],
        mask[(off + 3) % 4],
    ];
    let m8 = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(b) ^ m8).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// Writes an unmasked frame header into `out`; returns its length (2, 4 or 10).
pub(crate) fn write_header(out: &mut [u8], b0: u8, len: u64) -> usize {
    out[0] = b0;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as u64 {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    }
}

/// Appends an unmasked server frame to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let mut h = [0u8; 10];
    let n = write_header(&mut h, 0x80 | opcode, payload.len() as u64);
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
}

/// Appends a server close frame with `code` and a short `reason`.
pub(crate) fn push_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut p = [0u8; 125];
    p[..2].copy_from_slice(&code.to_be_bytes());
    let r = &reason.as_bytes()[..reason.len().min(123)];
    p[2..2 + r.len()].copy_from_slice(r);
    push_frame(out, op::CLOSE, &p[..2 + r.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a masked client frame: the decoder's input.
    fn push_client_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], mask: [u8; 4]) {
        let mut h = [0u8; 14];
        let n = write_header(&mut h, b0, payload.len() as u64);
        h[1] |= 0x80;
        h[n..n + 4].copy_from_slice(&mask);
        out.extend_from_slice(&h[..n + 4]);
        let at = out.len();
        out.extend_from_slice(payload);
        unmask_slice(&mut out[at..], mask, 0);
    }

    fn run(dec: &mut Decoder, input: &[u8], tally: &mut Tally) -> (Vec<u8>, Option<Stop>) {
        let mut buf = vec![0u8; HEADROOM + input.len()];
        buf[HEADROOM..].copy_from_slice(input);
        let end = buf.len();
        let (n, stop) = dec.process(&mut buf, HEADROOM, end, tally);
        (buf[..n].to_vec(), stop)
    }

    fn tally() -> Tally {
        Tally {
            max_message: 1 << 20,
            max_messages: 0,
            ..Default::default()
        }
    }

    #[test]
    fn forwards_masked_frames_unmasked_byte_by_byte_and_whole() {
        let mut input = Vec::new();
        let big = vec![7u8; 70_000];
        push_client_frame(&mut input, 0x82, b"hello", [1, 2, 3, 4]);
        push_client_frame(&mut input, 0x89, b"ping!", [9, 9, 9, 9]);
        push_client_frame(&mut input, 0x02, &[5u8; 300], [4, 3, 2, 1]);
        push_client_frame(&mut input, 0x80, &big, [0xde, 0xad, 0xbe, 0xef]);
        push_client_frame(&mut input, 0x82, b"", [1, 1, 1, 1]);
        let mut want = Vec::new();
        push_frame(&mut want, op::BINARY, b"hello");
        let mut h = [0u8; 10];
        let n = write_header(&mut h, 0x02, 300);
        want.extend_from_slice(&h[..n]);
        want.extend_from_slice(&[5u8; 300]);
        push_frame(&mut want, op::CONTINUATION, &big);
        push_frame(&mut want, op::BINARY, b"");

        let mut t = tally();
        let mut dec = Decoder::new();
        let (out, stop) = run(&mut dec, &input, &mut t);
        assert_eq!(stop, None);
        assert_eq!(out, want);
        assert_eq!(t.messages, 3);
        assert_eq!(
            dec.ping.map(|(p, n)| p[..n as usize].to_vec()),
            Some(b"ping!".to_vec())
        );

        for chunk in [1, 3, 7, 1000] {
            let mut t = tally();
            let mut dec = Decoder::new();
            let mut out = Vec::new();
            for piece in input.chunks(chunk) {
                let (o, stop) = run(&mut dec, piece, &mut t);
                assert_eq!(stop, None);
                out.extend_from_slice(&o);
            }
            assert_eq!(out, want, "chunk size {chunk}");
        }
    }

    #[test]
    fn close_frames_are_checked_before_echo() {
        let close = |payload: &[u8]| {
            let mut v = vec![];
            push_client_frame(&mut v, 0x88, payload, [5, 6, 7, 8]);
            run(&mut Decoder::new(), &v, &mut tally()).1
        };
        let bad = Some(Stop::Violation {
            code: close::PROTOCOL,
            reason: "invalid close frame",
        });
        assert_eq!(close(b""), Some(Stop::PeerClose(1005)));
        for ok in [1000u16, 1001, 1003, 1008, 1011, 1014, 3000, 4999] {
            assert_eq!(close(&ok.to_be_bytes()), Some(Stop::PeerClose(ok)), "{ok}");
        }
        let mut with_reason = 4000u16.to_be_bytes().to_vec();
        with_reason.extend_from_slice("bye ✓".as_bytes());
        assert_eq!(close(&with_reason), Some(Stop::PeerClose(4000)));
        // Codes no endpoint may send (RFC 6455 §7.4.1): never echoed.
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(close(&code.to_be_bytes()), bad, "{code}");
        }
        // A reason that is not UTF-8.
        assert_eq!(close(&[0x03, 0xe8, 0xff, 0xfe]), bad);
        assert_eq!(close(&[0x03, 0xe8, 0xe2, 0x9c]), bad);
        // One byte: no room for a code.
        assert_eq!(
            close(&[0x03]),
            Some(Stop::Violation {
                code: close::PROTOCOL,
                reason: "bad close frame"
            })
        );
    }

    #[test]
    fn limits_and_violations() {
        let cases: Vec<(Vec<u8>, Stop)> = vec![
            (
                {
                    let mut v = vec![];
                    push_client_frame(&mut v, 0x81, b"hi", [1, 2, 3, 4]);
                    v
                },
                Stop::Violation {
                    code: close::UNSUPPORTED,
                    reason: "text messages are not supported",
                },
            ),
            (
                {
                    let mut v = vec![];
                    push_client_frame(&mut v, 0x82, &[0; 101], [1, 2, 3, 4]);
                    v
                },
                Stop::Violation {
                    code: close::TOO_BIG,
                    reason: "message too big",
                },
            ),
            (
                {
                    let mut v = vec![];
                    push_client_frame(&mut v, 0x02, &[0; 60], [1, 2, 3, 4]);
                    push_client_frame(&mut v, 0x80, &[0; 60], [1, 2, 3, 4]);
                    v
                },
                Stop::Violation {
                    code: close::TOO_BIG,
                    reason: "message too big",
                },
            ),
            (
                {
                    let mut v = vec![];
                    for _ in 0..4 {
                        push_client_frame(&mut v, 0x82, b"x", [0; 4]);
                    }
                    v
                },
                Stop::Violation {
                    code: close::POLICY,
                    reason: "message limit exceeded",
                },
            ),
            (
                vec![0x82, 0x01, 0x00],
                Stop::Violation {
                    code: close::PROTOCOL,
                    reason: "client frames must be masked",
                },
            ),
            (
                {
                    let mut v = vec![];
                    push_client_frame(&mut v, 0x88, &[0x03, 0xe8, b'o', b'k'], [5, 6, 7, 8]);
                    v
                },
                Stop::PeerClose(1000),
            ),
        ];
        for (input, want) in cases {
            let mut t = Tally {
                max_message: 100,
                max_messages: 3,
                ..Default::default()
            };
            let (_, stop) = run(&mut Decoder::new(), &input, &mut t);
            assert_eq!(stop, Some(want));
        }
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..3000), chunk in 1usize..97) {
            let mut t = tally();
            let mut dec = Decoder::new();
            for piece in data.chunks(chunk) {
                let (_, stop) = run(&mut dec, piece, &mut t);
                if stop.is_some() { break; }
            }
        }

        /// Whatever a client sends (any opcodes, masked or not, control frames, garbage at
        /// the end), reading it in pieces gives the same frames, the same stop, the same
        /// tally and the same pending ping as reading it whole: no state is lost at a read
        /// boundary.
        #[test]
        fn any_stream_decodes_the_same_in_pieces(
            frames in proptest::collection::vec(
                (any::<bool>(), 0u8..16, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)),
                0..12,
            ),
            tail in proptest::collection::vec(any::<u8>(), 0..20),
            chunk in 1usize..64,
            mask in any::<[u8; 4]>(),
        ) {
            let mut input = Vec::new();
            for (fin, opcode, masked, payload) in &frames {
                let b0 = if *fin { 0x80 } else { 0 } | opcode;
                if *masked {
                    push_client_frame(&mut input, b0, payload, mask);
                } else {
                    let mut h = [0u8; 10];
                    let n = write_header(&mut h, b0, payload.len() as u64);
                    input.extend_from_slice(&h[..n]);
                    input.extend_from_slice(payload);
                }
            }
            input.extend_from_slice(&tail);
            let small = || Tally { max_message: 700, max_messages: 5, ..Default::default() };

            let (mut whole_t, mut whole_d) = (small(), Decoder::new());
            let (whole, whole_stop) = run(&mut whole_d, &input, &mut whole_t);

            let (mut t, mut d) = (small(), Decoder::new());
            let (mut out, mut stop) = (Vec::new(), None);
            for piece in input.chunks(chunk) {
                let (o, s) = run(&mut d, piece, &mut t);
                out.extend_from_slice(&o);
                if s.is_some() {
                    stop = s;
                    break;
                }
            }
            prop_assert_eq!(out, whole);
            prop_assert_eq!(stop, whole_stop);
            prop_assert_eq!((t.messages, t.bytes), (whole_t.messages, whole_t.bytes));
            prop_assert_eq!(d.at_frame_boundary(), whole_d.at_frame_boundary());
            let ping = |d: &Decoder| d.ping.map(|(p, n)| p[..n as usize].to_vec());
            prop_assert_eq!(ping(&d), ping(&whole_d));
        }

        /// Any fragmentation of any messages, cut into any read sizes, comes out as the same
        /// frames unmasked.
        #[test]
        fn frames_survive_any_split(
            msgs in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..70_000), 1usize..4), 0..6),
            chunk in 1usize..9000,
            mask in any::<[u8; 4]>(),
        ) {
            let (mut input, mut want) = (Vec::new(), Vec::new());
            for (payload, parts) in &msgs {
                let step = payload.len().div_ceil(*parts).max(1);
                let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(step).collect() };
                for (i, p) in pieces.iter().enumerate() {
                    let opcode = if i == 0 { op::BINARY } else { op::CONTINUATION };
                    let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                    push_client_frame(&mut input, fin | opcode, p, mask);
                    let mut h = [0u8; 10];
                    let n = write_header(&mut h, fin | opcode, p.len() as u64);
                    want.extend_from_slice(&h[..n]);
                    want.extend_from_slice(p);
                }
            }
            let mut t = tally();
            let mut dec = Decoder::new();
            let mut out = Vec::new();
            for piece in input.chunks(chunk) {
                let (o, stop) = run(&mut dec, piece, &mut t);
                prop_assert_eq!(stop, None);
                out.extend_from_slice(&o);
            }
            prop_assert_eq!(out, want);
            prop_assert_eq!(t.messages, msgs.len() as u64);
        }
    }
}
