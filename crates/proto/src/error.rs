//! The crate's one error type.

use crate::contact::ContactError;
use crate::tunnel::TunnelError;

/// Everything that can go wrong when parsing, deriving, encrypting or decrypting hybrid
/// protocol data. Messages say what was wrong with the input; none contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A tunnel path or ID was refused.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// A contact ID, wake-up subscription message or client payload was refused.
    #[error(transparent)]
    Contact(#[from] ContactError),
    /// Bytes were not valid CBOR.
    #[error("invalid CBOR: {0}")]
    Cbor(#[from] hybridge_cbor::Error),
    /// The string does not start with `FIDO:/` (any case).
    #[error("not a hybrid QR code: it must start with FIDO:/")]
    NotAFidoUrl,
    /// The QR payload is CBOR but not a valid hybrid QR map.
    #[error("invalid QR payload: {0}")]
    InvalidQr(&'static str),
    /// A P-256 public key has the wrong length or is not a point on the curve.
    #[error("invalid P-256 public key (not a point on the curve, or wrong length)")]
    InvalidPublicKey,
    /// A P-256 private key is zero, out of range or of the wrong length.
    #[error("invalid P-256 private key")]
    InvalidPrivateKey,
    /// Service data shorter than an advert.
    #[error("advert must be at least 20 bytes, got {0}")]
    AdvertTooShort(usize),
    /// The advert's tag does not match this key: it belongs to another session.
    #[error("advert was not made with this key (it belongs to another QR code or link)")]
    AdvertNotForUs,
    /// The advert's reserved first byte is not zero.
    #[error("advert decrypted, but its reserved byte is not zero")]
    AdvertReservedBits,
    /// The advert names a reserved tunnel-server domain ID (2–255) or one we do not know.
    #[error("advert names tunnel-server domain {0}, which this side does not know")]
    UnknownDomain(u16),
    /// A Noise handshake message has the wrong length.
    #[error("handshake message must be {expected} bytes, got {got}")]
    HandshakeLength {
        /// The required length (81).
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The Noise handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(&'static str),
    /// A message failed to decrypt: wrong key, reordered, replayed or corrupted. Fatal.
    #[error("message failed to decrypt (corrupted, reordered or wrong keys)")]
    Decrypt,
    /// Encryption failed.
    #[error("message could not be encrypted")]
    Encrypt,
    /// The padding of a decrypted message is inconsistent.
    #[error("message padding is invalid")]
    BadPadding,
    /// The per-direction message counter reached Chromium's limit of 2^24 − 1.
    #[error("too many messages on this connection; reconnect")]
    CounterExhausted,
    /// A message is larger than the 1 MiB limit.
    #[error("message of {0} bytes exceeds the 1 MiB limit")]
    MessageTooLong(usize),
    /// The phone's post-handshake message offers CTAP but carries no usable getInfo response:
    /// key 1 is missing or not a byte string (docs/protocol.md §8.3; Chromium's desktop gives up too).
    #[error("the phone's post-handshake message has no getInfo response: {0}")]
    MissingGetInfo(&'static str),
    /// The linking signature does not verify: the linking data was not made in this session.
    #[error("linking data signature does not match this handshake")]
    BadLinkingSignature,
    /// Bytes that do not parse as what they must be: a digit string, a frame, a CBOR
    /// structure with a field missing or of the wrong type.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] InvalidMessage),
    /// The peer sent well-formed messages that break the protocol's order.
    #[error("the peer broke the protocol: {0}")]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// The caller drove a state machine out of order: a bug in the program using this crate,
    /// never something a peer can cause.
    #[error("API misuse: {0}")]
    ApiMisuse(#[from] ApiMisuse),
}

/// Bytes that do not parse (the peer's, a QR code's, a stored link's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// Nothing follows `FIDO:/`.
    #[error("no digits after FIDO:/")]
    NoDigits,
    /// A character of the QR text after `FIDO:/` is not a digit.
    #[error("invalid QR digits: character {position} is not a digit 0-9")]
    NotADigit {
        /// 1-based position after `FIDO:/`.
        position: usize,
    },
    /// The last group of digits has a length no byte count encodes to.
    #[error("invalid QR digits: a final group of {0} digits is not a valid length")]
    DigitGroupLength(usize),
    /// A group of digits encodes a number too large for its bytes.
    #[error("invalid QR digits: a digit group is out of range for {0} bytes")]
    DigitGroupRange(usize),
    /// A framed message is empty.
    #[error("empty message")]
    EmptyFrame,
    /// A framed message has an unknown type byte.
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    /// A shutdown message carried a payload.
    #[error("shutdown message with a payload")]
    ShutdownWithPayload,
    /// A JSON message is not UTF-8.
    #[error("JSON message is not UTF-8")]
    JsonNotUtf8,
    /// A structure decoded as CBOR but a field is missing or of the wrong type.
    #[error("{0}")]
    Field(&'static str),
}

/// Well-formed messages that break the protocol's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// The phone answered with no request of that kind pending.
    #[error("the phone sent a reply with no request of its kind pending")]
    UnexpectedReply,
    /// The laptop sent a request while one was being processed.
    #[error("the laptop sent a request while one was being processed")]
    SecondRequest,
    /// The laptop sent a request after the session closed.
    #[error("the laptop sent a request after the session closed")]
    RequestAfterClose,
    /// The tunnel server's connect signal was not exactly `[0x00]`.
    #[error("the tunnel server's connect signal must be exactly [0x00]")]
    BadConnectSignal,
}

/// A state machine driven out of order by its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiMisuse {
    /// The handshake needs a matched advert first.
    #[error("no advert matched yet")]
    NoAdvertMatched,
    /// The phone's PSK needs the advert it salts first.
    #[error("no advert was built yet")]
    NoAdvertBuilt,
    /// Noise message 1 was already made.
    #[error("the handshake was already started")]
    HandshakeStarted,
    /// Noise message 2 came before message 1 was made.
    #[error("the handshake was not started")]
    HandshakeNotStarted,
    /// The session's one ephemeral key was used already.
    #[error("the session's ephemeral key was already used")]
    EphemeralUsed,
    /// The laptop cannot send before the phone's post-handshake message.
    #[error("the phone's post-handshake message has not arrived")]
    NoPostHandshakeYet,
    /// The phone must send its post-handshake message first.
    #[error("send the post-handshake message first")]
    PostHandshakeFirst,
    /// The phone's post-handshake message goes once.
    #[error("the post-handshake message was already sent")]
    PostHandshakeSent,
    /// Hybrid has no pipelining: one request at a time.
    #[error("a request is already pending (hybrid has no pipelining)")]
    RequestPending,
    /// A reply with no request of its kind pending.
    #[error("no matching request is pending")]
    NoRequestPending,
    /// Protocol revision 0 has no update messages.
    #[error("protocol revision 0 has no update messages")]
    NoUpdatesInRevision0,
    /// Protocol revision 0 carries only CTAP messages.
    #[error("protocol revision 0 carries only CTAP messages")]
    OnlyCtapInRevision0,
    /// The session was shut down.
    #[error("the session was shut down")]
    ShutDown,
}
