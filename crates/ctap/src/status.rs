//! CTAP status codes (CTAP 2.1 §8.2 "Status codes") and the crate's error type.

use std::borrow::Cow;
use std::fmt;

/// The first byte of every CTAP2 response: `0x00` for success, an error code otherwise.
///
/// A newtype rather than an enum so that a client can carry any byte an authenticator sends,
/// including vendor and extension codes it does not know.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u8);

macro_rules! status_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        impl StatusCode {
            $($(#[$doc])* pub const $name: StatusCode = StatusCode($value);)*

            /// The specification's name for this code, if it is a known one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// Every code this crate names, for tests and documentation.
            pub const ALL: &'static [StatusCode] = &[$(StatusCode($value)),*];
        }
    };
}

status_codes! {
    /// Success.
    CTAP2_OK = 0x00,
    /// The command is not a valid CTAP command.
    CTAP1_ERR_INVALID_COMMAND = 0x01,
    /// The command included an invalid parameter.
    CTAP1_ERR_INVALID_PARAMETER = 0x02,
    /// Invalid message or item length.
    CTAP1_ERR_INVALID_LENGTH = 0x03,
    /// Invalid message sequencing.
    CTAP1_ERR_INVALID_SEQ = 0x04,
    /// Message timed out.
    CTAP1_ERR_TIMEOUT = 0x05,
    /// Channel busy.
    CTAP1_ERR_CHANNEL_BUSY = 0x06,
    /// Command requires channel lock.
    CTAP1_ERR_LOCK_REQUIRED = 0x0A,
    /// Command not allowed on this channel.
    CTAP1_ERR_INVALID_CHANNEL = 0x0B,
    /// Invalid or unexpected CBOR type.
    CTAP2_ERR_CBOR_UNEXPECTED_TYPE = 0x11,
    /// Error when parsing CBOR.
    CTAP2_ERR_INVALID_CBOR = 0x12,
    /// A required parameter is missing.
    CTAP2_ERR_MISSING_PARAMETER = 0x14,
    /// A limit for the number of items was exceeded.
    CTAP2_ERR_LIMIT_EXCEEDED = 0x15,
    /// Fingerprint database is full.
    CTAP2_ERR_FP_DATABASE_FULL = 0x17,
    /// Large blob storage is full.
    CTAP2_ERR_LARGE_BLOB_STORAGE_FULL = 0x18,
    /// A valid credential in the exclude list was found.
    CTAP2_ERR_CREDENTIAL_EXCLUDED = 0x19,
    /// A long operation is being processed.
    CTAP2_ERR_PROCESSING = 0x21,
    /// Credential not valid for the authenticator.
    CTAP2_ERR_INVALID_CREDENTIAL = 0x22,
    /// Authentication is waiting for user interaction.
    CTAP2_ERR_USER_ACTION_PENDING = 0x23,
    /// Processing, lengthy operation is in progress.
    CTAP2_ERR_OPERATION_PENDING = 0x24,
    /// No request is pending.
    CTAP2_ERR_NO_OPERATIONS = 0x25,
    /// The authenticator does not support any requested algorithm.
    CTAP2_ERR_UNSUPPORTED_ALGORITHM = 0x26,
    /// Not authorized for the requested operation (e.g. the user declined).
    CTAP2_ERR_OPERATION_DENIED = 0x27,
    /// Internal key storage is full.
    CTAP2_ERR_KEY_STORE_FULL = 0x28,
    /// No outstanding operations.
    CTAP2_ERR_NO_OPERATION_PENDING = 0x2A,
    /// Unsupported option.
    CTAP2_ERR_UNSUPPORTED_OPTION = 0x2B,
    /// Not a valid option for the current operation.
    CTAP2_ERR_INVALID_OPTION = 0x2C,
    /// Pending keep-alive was cancelled.
    CTAP2_ERR_KEEPALIVE_CANCEL = 0x2D,
    /// No valid credentials provided.
    CTAP2_ERR_NO_CREDENTIALS = 0x2E,
    /// A user action timeout occurred.
    CTAP2_ERR_USER_ACTION_TIMEOUT = 0x2F,
    /// Continuation command, such as authenticatorGetNextAssertion, not allowed.
    CTAP2_ERR_NOT_ALLOWED = 0x30,
    /// PIN invalid.
    CTAP2_ERR_PIN_INVALID = 0x31,
    /// PIN blocked.
    CTAP2_ERR_PIN_BLOCKED = 0x32,
    /// pinUvAuthParam verification failed.
    CTAP2_ERR_PIN_AUTH_INVALID = 0x33,
    /// pinUvAuthToken blocked until power cycle.
    CTAP2_ERR_PIN_AUTH_BLOCKED = 0x34,
    /// No PIN has been set.
    CTAP2_ERR_PIN_NOT_SET = 0x35,
    /// A pinUvAuthToken is required for the selected operation.
    CTAP2_ERR_PUAT_REQUIRED = 0x36,
    /// PIN policy violation.
    CTAP2_ERR_PIN_POLICY_VIOLATION = 0x37,
    /// Authenticator cannot handle this request due to memory constraints.
    CTAP2_ERR_REQUEST_TOO_LARGE = 0x39,
    /// The current operation has timed out.
    CTAP2_ERR_ACTION_TIMEOUT = 0x3A,
    /// User presence is required for the requested operation.
    CTAP2_ERR_UP_REQUIRED = 0x3B,
    /// Built-in user verification is disabled.
    CTAP2_ERR_UV_BLOCKED = 0x3C,
    /// A checksum did not match.
    CTAP2_ERR_INTEGRITY_FAILURE = 0x3D,
    /// The requested subcommand is invalid.
    CTAP2_ERR_INVALID_SUBCOMMAND = 0x3E,
    /// Built-in user verification was unsuccessful.
    CTAP2_ERR_UV_INVALID = 0x3F,
    /// The permissions parameter contains an unauthorized permission.
    CTAP2_ERR_UNAUTHORIZED_PERMISSION = 0x40,
    /// Other unspecified error.
    CTAP1_ERR_OTHER = 0x7F,
}

impl StatusCode {
    /// Whether this is `CTAP2_OK`.
    pub fn is_ok(self) -> bool {
        self == StatusCode::CTAP2_OK
    }
}

impl fmt::Debug for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:02x})", self.0),
            None => write!(f, "CTAP status 0x{:02x}", self.0),
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<u8> for StatusCode {
    fn from(b: u8) -> Self {
        StatusCode(b)
    }
}

/// A CTAP-level failure: the status code that goes (or came) on the wire, and why.
///
/// Decoders return it with the status an authenticator must answer with (CTAP 2.1 §6: missing
/// parameter, unexpected type, invalid CBOR, ...); the authenticator core returns it for
/// ceremony failures; a client gets it when the authenticator answered with an error status
/// (`reason` then says so).
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {reason}")]
pub struct CtapError {
    /// The status byte.
    pub status: StatusCode,
    /// A human-readable reason, for logs. Never contains secrets.
    pub reason: Cow<'static, str>,
}

impl fmt::Debug for CtapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CtapError({}: {})", self.status, self.reason)
    }
}

impl CtapError {
    /// An error with a status and a reason.
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    /// `CTAP2_ERR_INVALID_CBOR`.
    pub fn invalid_cbor(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CTAP2_ERR_INVALID_CBOR, reason)
    }

    /// `CTAP2_ERR_MISSING_PARAMETER`.
    pub fn missing(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CTAP2_ERR_MISSING_PARAMETER, reason)
    }

    /// `CTAP2_ERR_CBOR_UNEXPECTED_TYPE`.
    pub fn unexpected_type(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CTAP2_ERR_CBOR_UNEXPECTED_TYPE, reason)
    }

    /// `CTAP1_ERR_INVALID_PARAMETER`.
    pub fn invalid_parameter(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CTAP1_ERR_INVALID_PARAMETER, reason)
    }

    /// `CTAP1_ERR_INVALID_LENGTH`.
    pub fn invalid_length(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CTAP1_ERR_INVALID_LENGTH, reason)
    }
}

impl From<hybridge_cbor::Error> for CtapError {
    fn from(e: hybridge_cbor::Error) -> Self {
        CtapError::invalid_cbor(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(StatusCode::CTAP2_ERR_INVALID_CBOR.0, 0x12);
        assert_eq!(StatusCode::CTAP2_ERR_MISSING_PARAMETER.0, 0x14);
        assert_eq!(StatusCode::CTAP2_ERR_CREDENTIAL_EXCLUDED.0, 0x19);
        assert_eq!(StatusCode::CTAP2_ERR_UNSUPPORTED_ALGORITHM.0, 0x26);
        assert_eq!(StatusCode::CTAP2_ERR_OPERATION_DENIED.0, 0x27);
        assert_eq!(StatusCode::CTAP2_ERR_INVALID_OPTION.0, 0x2C);
        assert_eq!(StatusCode::CTAP2_ERR_NO_CREDENTIALS.0, 0x2E);
        assert_eq!(StatusCode::CTAP2_ERR_UV_BLOCKED.0, 0x3C);
        assert_eq!(StatusCode(0x2E).name(), Some("CTAP2_ERR_NO_CREDENTIALS"));
        assert_eq!(format!("{}", StatusCode(0xF3)), "CTAP status 0xf3");
        let mut seen = std::collections::HashSet::new();
        assert!(StatusCode::ALL.iter().all(|s| seen.insert(s.0)));
    }
}
