//! The CLI's one error type and its exit codes.
//!
//! | Code | Meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | invalid input: a file, QR code, option JSON or argument value that is wrong |
//! | 2 | usage error: unknown flag, missing argument |
//! | 3 | proximity or timeout: no phone advert heard, or a step did not finish in time |
//! | 4 | not allowed: the user declined, no matching passkey, or the phone refused the request |
//! | 5 | relay or network: the tunnel server is unreachable or the tunnel broke |
//! | 6 | security: the RP ID does not match the origin, or the origin is not secure |
//! | 7 | protocol: the handshake failed or a message was tampered with; the session was aborted |
//! | 8 | radio: no Bluetooth adapter, BlueZ not running, or the UDP radio failed |
//! | 9 | passkey store: wrong PIN, locked store, damaged file |
//! | 10 | demo: the relying party rejected a response |
//! | 11 | key: the virtual device cannot be made (no `/dev/uhid`, no permission) or failed |
//! | 130 | interrupted (Ctrl-C) |

use hybridge_authenticator::phone::PhoneError;
use hybridge_authenticator::store::StoreError;
use hybridge_client::session::Error as SessionError;
use hybridge_client::webauthn::WebAuthnError;

/// `hybridge key`: the virtual device cannot be made or failed.
pub const EXIT_DEVICE: i32 = 11;
/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for input that was read but is invalid (bad QR code, foreign advert, …).
pub const EXIT_INVALID_INPUT: i32 = 1;
/// Exit code for command-line usage errors (unknown flag, missing argument).
pub const EXIT_USAGE: i32 = 2;
/// No phone advert was heard in time, or a step of the session timed out.
pub const EXIT_TIMEOUT: i32 = 3;
/// The user declined, or the phone answered NotAllowed / InvalidState / NotSupported.
pub const EXIT_NOT_ALLOWED: i32 = 4;
/// The relay could not be reached, or the tunnel failed.
pub const EXIT_NETWORK: i32 = 5;
/// The RP ID is not valid for the origin (phishing protection), or the origin is insecure.
pub const EXIT_SECURITY: i32 = 6;
/// The handshake failed or a message was rejected (tampering, corruption).
pub const EXIT_PROTOCOL: i32 = 7;
/// The radio (Bluetooth or UDP) could not be used.
pub const EXIT_RADIO: i32 = 8;
/// The passkey store could not be opened or changed (wrong PIN, locked, damaged).
pub const EXIT_STORE: i32 = 9;
/// The demo's relying party refused a response.
pub const EXIT_RP_REJECTED: i32 = 10;
/// Interrupted by Ctrl-C / SIGINT (128 + 2, as a shell reports it).
pub const EXIT_INTERRUPTED: i32 = 130;
/// Ended by SIGTERM (128 + 15).
pub const EXIT_TERMINATED: i32 = 143;

/// Why a command failed. Each message fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The protocol layer rejected the input.
    #[error("{0}")]
    Proto(#[from] hybridge_proto::Error),
    /// A hex argument did not decode.
    #[error("{what} is not valid hex: {reason}")]
    Hex {
        /// Which argument.
        what: &'static str,
        /// What hex decoding said.
        reason: String,
    },
    /// Any other invalid input, with a message that says what to do.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file is ("cannot read options file").
        what: &'static str,
        /// Its path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The passkey store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The radio failed.
    #[error("{0}")]
    Radio(#[from] hybridge_ble::Error),
    /// The laptop session failed.
    #[error("{0}")]
    Session(#[from] SessionError),
    /// The phone session failed.
    #[error("{0}")]
    Phone(#[from] PhoneError),
    /// The phone answered the request with an error (the user declined, …).
    #[error("the phone answered {0}")]
    PhoneRefused(String),
    /// The relay could not start or be reached.
    #[error("{0}")]
    Network(String),
    /// Something awaited did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// The peer did not accept the protocol (a linked phone refusing the stored link's
    /// handshake), said in words that name it.
    #[error("{0}")]
    Protocol(String),
    /// The virtual security key's device failed.
    #[error("{0}")]
    Key(#[from] hybridge_key::Error),
    /// The demo's relying party refused a response.
    #[error("the relying party rejected the {what}: {reason}")]
    RpRejected {
        /// "registration" or "assertion".
        what: &'static str,
        /// What the RP said.
        reason: String,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Proto(_)
            | CliError::Hex { .. }
            | CliError::Invalid(_)
            | CliError::Io { .. } => EXIT_INVALID_INPUT,
            CliError::Store(e) => match e {
                StoreError::NotFound | StoreError::Duplicate => EXIT_INVALID_INPUT,
                _ => EXIT_STORE,
            },
            CliError::Radio(e) => radio_code(e),
            CliError::Session(e) => session_code(e),
            CliError::Phone(e) => phone_code(e),
            CliError::PhoneRefused(_) => EXIT_NOT_ALLOWED,
            CliError::Network(_) => EXIT_NETWORK,
            CliError::Timeout(_) => EXIT_TIMEOUT,
            CliError::Protocol(_) => EXIT_PROTOCOL,
            CliError::RpRejected { .. } => EXIT_RP_REJECTED,
            CliError::Key(_) => EXIT_DEVICE,
        }
    }
}

fn radio_code(e: &hybridge_ble::Error) -> i32 {
    match e {
        hybridge_ble::Error::InvalidSpec { .. } => EXIT_USAGE,
        _ => EXIT_RADIO,
    }
}

fn session_code(e: &SessionError) -> i32 {
    match e {
        SessionError::WebAuthn(WebAuthnError::RpIdMismatch { .. })
        | SessionError::WebAuthn(WebAuthnError::InsecureOrigin(_)) => EXIT_SECURITY,
        SessionError::WebAuthn(_) => EXIT_INVALID_INPUT,
        SessionError::ProximityTimeout(_) | SessionError::Timeout { .. } => EXIT_TIMEOUT,
        SessionError::Radio(e) => radio_code(e),
        SessionError::UnknownDomain(_) => EXIT_INVALID_INPUT,
        SessionError::RelayUnreachable { .. }
        | SessionError::TunnelClosed(_)
        | SessionError::Tunnel { .. } => EXIT_NETWORK,
        SessionError::BadAdvert(_)
        | SessionError::Handshake(_)
        | SessionError::Protocol { .. }
        | SessionError::InvalidGetInfo(_)
        | SessionError::BadResponse(_) => EXIT_PROTOCOL,
        SessionError::NoCtap
        | SessionError::NotAllowed(_)
        | SessionError::InvalidState(_)
        | SessionError::NotSupported(_)
        | SessionError::Ctap(_) => EXIT_NOT_ALLOWED,
        _ => EXIT_INVALID_INPUT,
    }
}

fn phone_code(e: &PhoneError) -> i32 {
    match e {
        PhoneError::InvalidQr(_) | PhoneError::QrImage(_) | PhoneError::UnknownDomain(_) => {
            EXIT_INVALID_INPUT
        }
        PhoneError::RelayUnreachable { .. }
        | PhoneError::NoRoutingId { .. }
        | PhoneError::TunnelClosed(_)
        | PhoneError::UnexpectedEof
        | PhoneError::EofWhileProcessing
        | PhoneError::Tunnel { .. } => EXIT_NETWORK,
        PhoneError::Radio(e) => radio_code(e),
        PhoneError::Timeout { .. } => EXIT_TIMEOUT,
        PhoneError::Handshake(_) | PhoneError::Protocol { .. } => EXIT_PROTOCOL,
        PhoneError::Unsupported(_) | PhoneError::AuthenticatorSelection => EXIT_NOT_ALLOWED,
        _ => EXIT_INVALID_INPUT,
    }
}

/// Decodes a hex argument, tolerating surrounding whitespace, `:` or space separators and an
/// optional `0x` prefix (as copied from btmon or Wireshark).
pub fn parse_hex(what: &'static str, s: &str) -> Result<Vec<u8>, CliError> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let cleaned: String = t
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    hex::decode(&cleaned).map_err(|e| CliError::Hex {
        what,
        reason: e.to_string(),
    })
}
