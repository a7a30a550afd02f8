//! The crate's one error type.

use crate::tunnel::TunnelError;

/// Everything that can go wrong when parsing, deriving, encrypting or decrypting hybrid
/// protocol data. Messages say what was wrong with the input; none contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A tunnel path or ID was refused.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// Bytes were not valid CBOR.
    #[error("invalid CBOR: {0}")]
    Cbor(#[from] hybridge_cbor::Error),
    /// The string does not start with `FIDO:/` (any case).
    #[error("not a hybrid QR code: it must start with FIDO:/")]
    NotAFidoUrl,
    /// The digits after `FIDO:/` are not a valid base-10 encoding.
    #[error("invalid QR digits: {0}")]
    Digits(String),
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
    /// A framed message is empty or has an unknown type byte.
    #[error("invalid message frame: {0}")]
    BadFrame(String),
    /// The phone's post-handshake message offers CTAP but carries no usable getInfo response:
    /// key 1 is missing or not a byte string (brief §8.3; Chromium's desktop gives up too).
    #[error("the phone's post-handshake message has no getInfo response: {0}")]
    MissingGetInfo(&'static str),
    /// A structure decoded as CBOR but a field is missing or of the wrong type.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The linking signature does not verify: the linking data was not made in this session.
    #[error("linking data signature does not match this handshake")]
    BadLinkingSignature,
    /// A state machine was driven out of order.
    #[error("protocol violation: {0}")]
    State(&'static str),
}
