//! CTAPHID, the USB HID framing of CTAP (CTAP 2.2 §11.2), as an engine with no I/O.
//!
//! The engine is fed the 64-byte output reports an application wrote to the device
//! ([`Engine::handle_report`]) and the clock ([`Engine::handle_timeout`]), and is asked what to
//! do ([`Engine::poll_output`]): send this input report, serve this CTAP request, the
//! application cancelled a request, blink. [`Engine::poll_timeout`] says when to wake it. The
//! answer to a request comes back through [`Engine::respond`].
//!
//! What the engine decides by itself:
//! * channels: `INIT` on the broadcast channel allocates one (the nonce is echoed); `INIT` on
//!   an allocated channel resynchronises it (abandoning what was under way there). A bounded
//!   table: the least recently used idle channel makes room.
//! * framing: an initialisation packet (`CID ‖ CMD|0x80 ‖ BCNT ‖ 57 bytes`) and continuation
//!   packets (`CID ‖ SEQ ‖ 59 bytes`, SEQ 0, 1, … 127), so a message is at most
//!   57 + 128 × 59 = 7609 bytes. Each channel assembles its own message: channels are
//!   independent, and one waiting for a phone never holds up `INIT`, `PING` or a request on
//!   another.
//! * `PING` (echo), `WINK` (answered, and reported as [`Output::Wink`]), `LOCK`, `CANCEL`,
//!   and every `ERROR`: `INVALID_CMD`, `INVALID_PAR`, `INVALID_LEN`, `INVALID_SEQ`,
//!   `MSG_TIMEOUT`, `CHANNEL_BUSY`, `INVALID_CHANNEL`.
//! * `KEEPALIVE` every [`Limits::keepalive`] (100 ms) on a channel whose `CBOR` request is
//!   being served, with the status the server last set ([`Status::UpNeeded`] while the phone
//!   is being waited for, [`Status::Processing`] otherwise).
//! * `CANCEL`: the pending `CBOR` request is answered at once with
//!   `CTAP2_ERR_KEEPALIVE_CANCEL` (§11.2.9.1.5 "…MUST respond … as soon as possible") and the
//!   server is told ([`Output::Cancel`]) so it stops the ceremony; its later answer is dropped.
//!
//! U2F (`MSG`) is not offered: the capability byte says `NMSG` and `MSG` gets
//! `ERR_INVALID_CMD`, as the spec says for a device without it. A hybrid phone speaks only
//! CTAP2, and a U2F request cannot be carried over: U2F names the relying party only by the
//! hash of its App ID, while the phone needs the RP ID itself, and a U2F registration's
//! signature covers bytes no CTAP2 authenticator signs.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Size of every HID report, in and out (the FIDO report descriptor's).
pub const REPORT_SIZE: usize = 64;
/// Payload bytes in an initialisation packet.
pub const INIT_DATA: usize = REPORT_SIZE - 7;
/// Payload bytes in a continuation packet.
pub const CONT_DATA: usize = REPORT_SIZE - 5;
/// The largest message: an initialisation packet and 128 continuation packets.
pub const MAX_MESSAGE: usize = INIT_DATA + 128 * CONT_DATA;
/// The broadcast channel, for `INIT` only.
pub const BROADCAST_CID: u32 = 0xffff_ffff;

/// One 64-byte HID report.
pub type Report = [u8; REPORT_SIZE];

/// CTAPHID command codes (without the initialisation bit 0x80).
pub mod cmd {
    /// Echo.
    pub const PING: u8 = 0x01;
    /// A U2F APDU.
    pub const MSG: u8 = 0x03;
    /// Exclusive use of the device for a while.
    pub const LOCK: u8 = 0x04;
    /// Allocate or resynchronise a channel.
    pub const INIT: u8 = 0x06;
    /// Show where the device is.
    pub const WINK: u8 = 0x08;
    /// A CTAP2 request: command byte ‖ CBOR.
    pub const CBOR: u8 = 0x10;
    /// Cancel the pending CBOR request.
    pub const CANCEL: u8 = 0x11;
    /// The request is still being processed.
    pub const KEEPALIVE: u8 = 0x3b;
    /// An error code.
    pub const ERROR: u8 = 0x3f;
}

/// CTAPHID error codes (the payload of an `ERROR` response).
pub mod err {
    /// The command is not known (or not offered: `MSG`).
    pub const INVALID_CMD: u8 = 0x01;
    /// A parameter is out of range.
    pub const INVALID_PAR: u8 = 0x02;
    /// The length is wrong for the command, or beyond 7609 bytes.
    pub const INVALID_LEN: u8 = 0x03;
    /// A continuation packet came out of order.
    pub const INVALID_SEQ: u8 = 0x04;
    /// A message was not completed in time.
    pub const MSG_TIMEOUT: u8 = 0x05;
    /// The channel (or the device, while locked) is busy.
    pub const CHANNEL_BUSY: u8 = 0x06;
    /// The command needs a channel lock.
    pub const LOCK_REQUIRED: u8 = 0x0a;
    /// The channel ID is not allocated or not valid here.
    pub const INVALID_CHANNEL: u8 = 0x0b;
    /// Anything else.
    pub const OTHER: u8 = 0x7f;
}

/// `CTAP2_ERR_KEEPALIVE_CANCEL`: the CTAP status of a request the application cancelled.
pub const CTAP2_ERR_KEEPALIVE_CANCEL: u8 = 0x2d;

/// Capability flags of the `INIT` response.
pub mod capability {
    /// Implements `WINK`.
    pub const WINK: u8 = 0x01;
    /// Implements `CBOR`.
    pub const CBOR: u8 = 0x04;
    /// Does *not* implement `MSG`.
    pub const NMSG: u8 = 0x08;
}

/// The CTAPHID protocol version in the `INIT` response.
pub const PROTOCOL_VERSION: u8 = 2;

/// What a `KEEPALIVE` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The request is being processed.
    Processing = 1,
    /// The user needs to act (here: on the phone).
    UpNeeded = 2,
}

/// Limits of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A message whose continuation packets stop coming is dropped with `ERR_MSG_TIMEOUT`
    /// after this long since its last packet.
    pub transaction_timeout: Duration,
    /// `KEEPALIVE` interval while a request is served (CTAP: every 100 ms).
    pub keepalive: Duration,
    /// Most channels allocated at once; beyond, the least recently used idle one is freed.
    pub max_channels: usize,
    /// Most reports waiting for [`Engine::poll_output`]; beyond, new ones are dropped (a driver
    /// drains after every call, so this only bounds a driver that stopped).
    pub max_queued_reports: usize,
    /// Version bytes of the `INIT` response: major, minor, build.
    pub device_version: [u8; 3],
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            transaction_timeout: Duration::from_millis(1000),
            keepalive: Duration::from_millis(100),
            max_channels: 128,
            max_queued_reports: 4096,
            device_version: [0, 1, 0],
        }
    }
}

/// The commands the engine hands to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `CTAPHID_CBOR`: a CTAP2 request, command byte ‖ CBOR; answered with status ‖ CBOR.
    Cbor,
}

/// Identifies one request, so a late answer to a cancelled one goes nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// A complete request for the server.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// Pass it back to [`Engine::respond`].
    pub id: RequestId,
    /// The channel it came on.
    pub cid: u32,
    /// Which command.
    pub command: Command,
    /// The message, as the application sent it.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Request {
    // The payload may carry a PIN or hmac-secret salts: only its size and command byte.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("cid", &format_args!("{:#010x}", self.cid))
            .field("command", &self.command)
            .field("ctap_command", &self.payload.first())
            .field("len", &self.payload.len())
            .finish()
    }
}

/// What the engine asks its driver to do.
#[derive(Clone, PartialEq, Eq)]
pub enum Output {
    /// Write this input report to the device.
    Report(Report),
    /// Serve this request; answer with [`Engine::respond`].
    Request(Request),
    /// The application cancelled this request (it has been answered already): stop serving it.
    Cancel(RequestId),
    /// The application asked the device to identify itself on this channel.
    Wink(u32),
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Report(r) => write!(
                f,
                "Report(cid {:#010x}, byte 4 {:#04x})",
                u32::from_be_bytes([r[0], r[1], r[2], r[3]]),
                r[4]
            ),
            Output::Request(r) => r.fmt(f),
            Output::Cancel(id) => write!(f, "Cancel({id:?})"),
            Output::Wink(cid) => write!(f, "Wink({cid:#010x})"),
        }
    }
}

/// A message being assembled on a channel.
struct Assembly {
    cmd: u8,
    len: usize,
    data: Vec<u8>,
    next_seq: u8,
    deadline: Instant,
}

/// A request being served on a channel.
struct Pending {
    id: RequestId,
    status: Status,
    next_keepalive: Instant,
}

/// One allocated channel.
struct Channel {
    assembly: Option<Assembly>,
    pending: Option<Pending>,
    last_used: Instant,
}

impl Channel {
    fn idle(&self) -> bool {
        self.assembly.is_none() && self.pending.is_none()
    }
}

/// The CTAPHID engine: see the [module documentation](self).
pub struct Engine {
    limits: Limits,
    capabilities: u8,
    channels: HashMap<u32, Channel>,
    next_cid: u32,
    next_request: u64,
    /// The channel holding `LOCK`, until when.
    lock: Option<(u32, Instant)>,
    outputs: VecDeque<Output>,
    queued_reports: usize,
    dropped_reports: u64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("channels", &self.channels.len())
            .field("lock", &self.lock.map(|(cid, _)| cid))
            .field("queued", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

/// Channel IDs are handed out from here on (a fixed start keeps runs reproducible; any
/// value but 0 and the broadcast one is valid).
const FIRST_CID: u32 = 0x0100_0001;

impl Engine {
    /// An engine with no channel allocated.
    pub fn new(limits: Limits) -> Self {
        Engine {
            limits,
            capabilities: capability::WINK | capability::CBOR | capability::NMSG,
            channels: HashMap::new(),
            next_cid: FIRST_CID,
            next_request: 1,
            lock: None,
            outputs: VecDeque::new(),
            queued_reports: 0,
            dropped_reports: 0,
        }
    }

    /// The capability byte of the `INIT` response.
    pub fn capabilities(&self) -> u8 {
        self.capabilities
    }

    /// Reports dropped because the queue was full (a driver that stopped draining).
    pub fn dropped_reports(&self) -> u64 {
        self.dropped_reports
    }

    /// Channels allocated now.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outputs.pop_front()?;
        if matches!(out, Output::Report(_)) {
            self.queued_reports -= 1;
        }
        Some(out)
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) if nothing else happens: the next
    /// keepalive, the next transaction timeout, or the end of a lock.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let channels = self.channels.values().flat_map(|c| {
            let a = c.assembly.as_ref().map(|a| a.deadline);
            let p = c.pending.as_ref().map(|p| p.next_keepalive);
            a.into_iter().chain(p)
        });
        channels.chain(self.lock.map(|(_, until)| until)).min()
    }

    /// The time asked for by [`poll_timeout`](Self::poll_timeout) has come (early or late
    /// calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.lock.is_some_and(|(_, until)| until <= now) {
            self.lock = None;
        }
        let mut expired = Vec::new();
        let mut keepalives = Vec::new();
        for (&cid, ch) in &mut self.channels {
            if ch.assembly.as_ref().is_some_and(|a| a.deadline <= now) {
                ch.assembly = None;
                expired.push(cid);
            }
            if let Some(p) = ch.pending.as_mut() {
                if p.next_keepalive <= now {
                    keepalives.push((cid, p.status));
                    // Catch up without a burst after a long stall.
                    p.next_keepalive = now + self.limits.keepalive;
                }
            }
        }
        expired.sort_unstable();
        keepalives.sort_unstable_by_key(|&(cid, _)| cid);
        for cid in expired {
            self.error(cid, err::MSG_TIMEOUT);
        }
        for (cid, status) in keepalives {
            self.send(cid, cmd::KEEPALIVE, &[status as u8]);
        }
    }

    /// Sets what this request's keepalives say. Unknown (finished or cancelled) requests are
    /// ignored.
    pub fn set_status(&mut self, id: RequestId, status: Status) {
        if let Some(p) = self.pending_mut(id) {
            p.status = status;
        }
    }

    /// Whether this request still waits for its answer (not answered, cancelled or abandoned).
    pub fn is_pending(&self, id: RequestId) -> bool {
        self.channels
            .values()
            .any(|c| c.pending.as_ref().is_some_and(|p| p.id == id))
    }

    /// Answers a request with `payload` (for `CBOR`: status ‖ CBOR). Returns false, and sends
    /// nothing, if the request is no longer pending (cancelled, or its channel was
    /// resynchronised or freed). A payload beyond [`MAX_MESSAGE`] becomes `CTAP1_ERR_OTHER`
    /// (0x7f), so the application is never left waiting.
    pub fn respond(&mut self, now: Instant, id: RequestId, payload: &[u8]) -> bool {
        let Some(cid) = self.take_pending(id, now) else {
            return false;
        };
        if payload.len() > MAX_MESSAGE {
            self.send(cid, cmd::CBOR, &[err::OTHER]);
        } else {
            self.send(cid, cmd::CBOR, payload);
        }
        true
    }

    /// Answers a request with a CTAPHID `ERROR` instead (e.g. `CHANNEL_BUSY` when the server
    /// serves one request at a time). Returns false if it is no longer pending.
    pub fn respond_error(&mut self, now: Instant, id: RequestId, code: u8) -> bool {
        let Some(cid) = self.take_pending(id, now) else {
            return false;
        };
        self.error(cid, code);
        true
    }

    fn pending_mut(&mut self, id: RequestId) -> Option<&mut Pending> {
        self.channels
            .values_mut()
            .filter_map(|c| c.pending.as_mut())
            .find(|p| p.id == id)
    }

    fn take_pending(&mut self, id: RequestId, now: Instant) -> Option<u32> {
        let (&cid, ch) = self
            .channels
            .iter_mut()
            .find(|(_, c)| c.pending.as_ref().is_some_and(|p| p.id == id))?;
        ch.pending = None;
        ch.last_used = now;
        Some(cid)
    }

    /// One output report from the application. Reports of another size are ignored (the
    /// device's descriptor fixes 64 bytes; the UHID driver strips the report number).
    pub fn handle_report(&mut self, now: Instant, report: &[u8]) {
        // Expire what is due first, so a late packet cannot revive a timed-out message.
        self.handle_timeout(now);
        let Ok(report) = <&Report>::try_from(report) else {
            return;
        };
        let cid = u32::from_be_bytes([report[0], report[1], report[2], report[3]]);
        let byte4 = report[4];
        if byte4 & 0x80 != 0 {
            let bcnt = usize::from(u16::from_be_bytes([report[5], report[6]]));
            self.init_packet(now, cid, byte4 & 0x7f, bcnt, &report[7..]);
        } else {
            self.cont_packet(now, cid, byte4, &report[5..]);
        }
    }

    fn init_packet(&mut self, now: Instant, cid: u32, command: u8, bcnt: usize, data: &[u8]) {
        if cid == 0 {
            return self.error(cid, err::INVALID_CHANNEL);
        }
        if cid == BROADCAST_CID {
            if command != cmd::INIT {
                return self.error(cid, err::INVALID_CHANNEL);
            }
            if bcnt != 8 {
                return self.error(cid, err::INVALID_LEN);
            }
            let mut nonce = [0; 8];
            nonce.copy_from_slice(&data[..8]);
            return self.allocate(now, nonce);
        }
        let Some(ch) = self.channels.get_mut(&cid) else {
            return self.error(cid, err::INVALID_CHANNEL);
        };
        ch.last_used = now;
        if command == cmd::INIT {
            // Resynchronise: whatever was under way on this channel is abandoned.
            if bcnt != 8 {
                return self.error(cid, err::INVALID_LEN);
            }
            ch.assembly = None;
            if let Some(p) = ch.pending.take() {
                self.push(Output::Cancel(p.id));
            }
            let mut nonce = [0; 8];
            nonce.copy_from_slice(&data[..8]);
            return self.send_init_response(cid, nonce, cid);
        }
        if command == cmd::CANCEL {
            // Never answered itself; cancels the pending request, if any (§11.2.9.1.5).
            if let Some(p) = ch.pending.take() {
                self.push(Output::Cancel(p.id));
                self.send(cid, cmd::CBOR, &[CTAP2_ERR_KEEPALIVE_CANCEL]);
            }
            return;
        }
        if let Some((holder, _)) = self.lock {
            if holder != cid {
                return self.error(cid, err::CHANNEL_BUSY);
            }
        }
        let Some(ch) = self.channels.get_mut(&cid) else {
            return;
        };
        if ch.pending.is_some() {
            return self.error(cid, err::CHANNEL_BUSY);
        }
        if ch.assembly.take().is_some() {
            // A new message before the last one was complete.
            return self.error(cid, err::INVALID_SEQ);
        }
        if bcnt > MAX_MESSAGE {
            return self.error(cid, err::INVALID_LEN);
        }
        if bcnt <= INIT_DATA {
            return self.message(now, cid, command, data[..bcnt].to_vec());
        }
        let mut buf = Vec::with_capacity(bcnt);
        buf.extend_from_slice(data);
        ch.assembly = Some(Assembly {
            cmd: command,
            len: bcnt,
            data: buf,
            next_seq: 0,
            deadline: now + self.limits.transaction_timeout,
        });
    }

    fn cont_packet(&mut self, now: Instant, cid: u32, seq: u8, data: &[u8]) {
        let Some(ch) = self.channels.get_mut(&cid) else {
            // Continuation packets on no channel of ours are ignored (§11.2.4: spurious ones
            // are).
            return;
        };
        let Some(a) = ch.assembly.as_mut() else {
            return;
        };
        ch.last_used = now;
        if seq != a.next_seq {
            ch.assembly = None;
            return self.error(cid, err::INVALID_SEQ);
        }
        let take = (a.len - a.data.len()).min(CONT_DATA);
        a.data.extend_from_slice(&data[..take]);
        a.next_seq = a.next_seq.wrapping_add(1);
        a.deadline = now + self.limits.transaction_timeout;
        if a.data.len() == a.len {
            if let Some(a) = ch.assembly.take() {
                self.message(now, cid, a.cmd, a.data);
            }
        }
        // More than 128 continuation packets cannot happen: the length was checked against
        // MAX_MESSAGE, and 128 packets carry it.
    }

    /// A complete message on an allocated channel with nothing pending.
    fn message(&mut self, now: Instant, cid: u32, command: u8, payload: Vec<u8>) {
        match command {
            cmd::PING => self.send(cid, cmd::PING, &payload),
            cmd::WINK => {
                if !payload.is_empty() {
                    return self.error(cid, err::INVALID_LEN);
                }
                self.push(Output::Wink(cid));
                self.send(cid, cmd::WINK, &[]);
            }
            cmd::LOCK => {
                let [seconds] = payload[..] else {
                    return self.error(cid, err::INVALID_LEN);
                };
                if seconds > 10 {
                    return self.error(cid, err::INVALID_PAR);
                }
                self.lock = (seconds > 0).then(|| (cid, now + Duration::from_secs(seconds.into())));
                self.send(cid, cmd::LOCK, &[]);
            }
            cmd::CBOR => {
                if payload.is_empty() {
                    return self.error(cid, err::INVALID_LEN);
                }
                let id = RequestId(self.next_request);
                self.next_request += 1;
                if let Some(ch) = self.channels.get_mut(&cid) {
                    ch.pending = Some(Pending {
                        id,
                        status: Status::Processing,
                        next_keepalive: now + self.limits.keepalive,
                    });
                }
                self.push(Output::Request(Request {
                    id,
                    cid,
                    command: Command::Cbor,
                    payload,
                }));
            }
            // MSG (U2F) is not offered (NMSG): see the module documentation.
            _ => self.error(cid, err::INVALID_CMD),
        }
    }

    fn allocate(&mut self, now: Instant, nonce: [u8; 8]) {
        if self.channels.len() >= self.limits.max_channels {
            let victim = self
                .channels
                .iter()
                .filter(|(_, c)| c.idle())
                .min_by_key(|(cid, c)| (c.last_used, **cid))
                .map(|(&cid, _)| cid);
            match victim {
                Some(cid) => {
                    self.channels.remove(&cid);
                    if self.lock.is_some_and(|(holder, _)| holder == cid) {
                        self.lock = None;
                    }
                }
                None => return self.error(BROADCAST_CID, err::CHANNEL_BUSY),
            }
        }
        let mut cid = self.next_cid;
        while cid == 0 || cid == BROADCAST_CID || self.channels.contains_key(&cid) {
            cid = cid.wrapping_add(1);
        }
        self.next_cid = cid.wrapping_add(1);
        self.channels.insert(
            cid,
            Channel {
                assembly: None,
                pending: None,
                last_used: now,
            },
        );
        self.send_init_response(BROADCAST_CID, nonce, cid);
    }

    fn send_init_response(&mut self, on: u32, nonce: [u8; 8], cid: u32) {
        let mut p = [0u8; 17];
        p[..8].copy_from_slice(&nonce);
        p[8..12].copy_from_slice(&cid.to_be_bytes());
        p[12] = PROTOCOL_VERSION;
        p[13..16].copy_from_slice(&self.limits.device_version);
        p[16] = self.capabilities;
        self.send(on, cmd::INIT, &p);
    }

    fn error(&mut self, cid: u32, code: u8) {
        self.send(cid, cmd::ERROR, &[code]);
    }

    fn push(&mut self, out: Output) {
        if matches!(out, Output::Report(_)) {
            if self.queued_reports >= self.limits.max_queued_reports {
                self.dropped_reports += 1;
                return;
            }
            self.queued_reports += 1;
        }
        self.outputs.push_back(out);
    }

    /// Queues `payload` (at most [`MAX_MESSAGE`] bytes) as packets on `cid`.
    fn send(&mut self, cid: u32, command: u8, payload: &[u8]) {
        for r in fragment(cid, command, payload) {
            self.push(Output::Report(r));
        }
    }
}

/// Splits a message into reports: an initialisation packet and as many continuation packets
/// as needed. Payloads beyond [`MAX_MESSAGE`] are cut there (callers check first).
pub fn fragment(cid: u32, command: u8, payload: &[u8]) -> Vec<Report> {
    let payload = &payload[..payload.len().min(MAX_MESSAGE)];
    let (first, rest) = payload.split_at(payload.len().min(INIT_DATA));
    let mut out = Vec::with_capacity(1 + rest.len().div_ceil(CONT_DATA));
    let mut r = [0u8; REPORT_SIZE];
    r[..4].copy_from_slice(&cid.to_be_bytes());
    r[4] = command | 0x80;
    // MAX_MESSAGE fits in 16 bits.
    r[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    r[7..7 + first.len()].copy_from_slice(first);
    out.push(r);
    for (seq, chunk) in rest.chunks(CONT_DATA).enumerate() {
        let mut r = [0u8; REPORT_SIZE];
        r[..4].copy_from_slice(&cid.to_be_bytes());
        // At most 128 chunks: seq ≤ 127.
        r[4] = seq as u8;
        r[5..5 + chunk.len()].copy_from_slice(chunk);
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests;
