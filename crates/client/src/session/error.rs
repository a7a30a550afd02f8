//! The laptop session's one error type: every variant names the step that failed and, where
//! there is one, what to do about it.

use std::time::Duration;

use hybridge_ctap::StatusCode;
use hybridge_proto::engine::Failure;

use crate::webauthn::WebAuthnError;

/// A step of the session, as named in errors and timeouts: one set for both sides, in the
/// engine.
pub use hybridge_proto::engine::Step;

/// Everything that can go wrong in a laptop session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The RP options, the origin or the RP ID were refused (before any QR code is shown).
    #[error(transparent)]
    WebAuthn(#[from] WebAuthnError),
    /// No advert for this QR code was heard. The relay was never contacted.
    #[error(
        "no phone advert seen within {}s: is Bluetooth on and the phone near? \
         (scan the QR code with the phone's camera)",
        .0.as_secs()
    )]
    ProximityTimeout(Duration),
    /// The radio failed.
    #[error("the radio failed while scanning for the phone: {0}")]
    Radio(#[source] hybridge_ble::Error),
    /// An advert made with this QR code's key was unusable (for example an unknown
    /// tunnel-server domain).
    #[error("the phone's advert was unusable: {0}")]
    BadAdvert(#[source] hybridge_proto::Error),
    /// The advert names a tunnel-server domain without a known hostname and no override.
    #[error(
        "the phone uses tunnel-server domain {0}, which has no known hostname: \
         map it to a relay URL (relay override)"
    )]
    UnknownDomain(u16),
    /// The tunnel server could not be reached or refused the connection.
    #[error("cannot open the tunnel at {url}: {source}")]
    RelayUnreachable {
        /// The relay base URL (no tunnel ID).
        url: String,
        /// Why.
        source: hybridge_websocket::ConnectError,
    },
    /// A step did not finish in time.
    #[error("timed out after {}s while {step}", .after.as_secs_f32())]
    Timeout {
        /// The step.
        step: Step,
        /// Its timeout.
        after: Duration,
    },
    /// The Noise handshake failed (wrong keys, or the tunnel joined someone else).
    #[error("the handshake with the phone failed: {0}")]
    Handshake(#[source] hybridge_proto::Error),
    /// The tunnel closed before the session finished.
    #[error("the tunnel closed while {0}")]
    TunnelClosed(Step),
    /// A WebSocket-level failure on an open tunnel.
    #[error("the tunnel failed while {step}: {source}")]
    Tunnel {
        /// The step.
        step: Step,
        /// Why.
        source: hybridge_websocket::TunnelError,
    },
    /// A message from the phone failed to decrypt or parse (tampered with, corrupted or out of
    /// order). The session was aborted and nothing from it was accepted.
    #[error(
        "a message from the phone was rejected while {step} ({source}); the session was aborted"
    )]
    Protocol {
        /// The step.
        step: Step,
        /// The protocol error.
        source: hybridge_proto::Error,
    },
    /// The phone does not offer CTAP over this tunnel.
    #[error("the phone does not offer CTAP over hybrid")]
    NoCtap,
    /// The phone's first message offers CTAP but its getInfo response (key 1) is missing or
    /// does not parse, so nothing can be asked of it (Chromium's desktop gives up too). The
    /// session was aborted before any request was sent.
    #[error(
        "the phone's getInfo response (in its first message) is missing or invalid: {0}; \
         the session was aborted before any request"
    )]
    InvalidGetInfo(String),
    /// The user declined, the operation timed out on the phone, or no credential matched.
    #[error("NotAllowedError: {0}")]
    NotAllowed(String),
    /// A credential in excludeCredentials already exists on the phone.
    #[error("InvalidStateError: {0}")]
    InvalidState(String),
    /// The phone cannot do what the RP requires.
    #[error("NotSupportedError: {0}")]
    NotSupported(String),
    /// The phone answered with a CTAP error that has no better WebAuthn name.
    #[error("UnknownError: the phone answered {0}")]
    Ctap(StatusCode),
    /// The phone's answer is malformed or does not match the request.
    #[error("the phone's response is invalid: {0}")]
    BadResponse(#[source] BadResponse),
    /// Any other way the session engine ended (none is expected on the laptop side).
    #[error("the session failed: {0}")]
    Session(Failure),
}

/// How the phone's answer is malformed or does not match the request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadResponse {
    /// The answer is empty: not even a status byte.
    #[error("empty CTAP response")]
    Empty,
    /// The answer does not decode as the response to the request.
    #[error("{0}")]
    Decode(#[source] hybridge_ctap::CtapError),
    /// The authenticator data does not parse.
    #[error("{0}")]
    AuthenticatorData(#[source] hybridge_ctap::CtapError),
    /// The authenticator data is for another relying party.
    #[error("the authenticator data is for a different RP ID")]
    OtherRpId,
    /// The phone did not collect user presence.
    #[error("the phone did not collect user presence")]
    NoUserPresence,
    /// makeCredential returned no attested credential data.
    #[error("makeCredential returned no attested credential data")]
    NoCredentialData,
    /// getAssertion named no credential.
    #[error("getAssertion named no credential")]
    NoCredential,
    /// The phone used a credential the relying party did not allow.
    #[error("the phone used a credential the site did not allow")]
    CredentialNotAllowed,
}

impl Error {
    /// The engine's failure, with the relay's base URL and the transport's reason (which
    /// the driver kept) where the message needs them.
    pub(crate) fn from_failure(
        failure: Failure,
        relay: Option<&str>,
        cause: Option<hybridge_websocket::Cause>,
    ) -> Self {
        use hybridge_websocket::Cause;
        match (failure, cause) {
            (Failure::ConnectFailed, Some(Cause::Connect(source))) => Error::RelayUnreachable {
                url: relay.unwrap_or("the tunnel server").to_owned(),
                source,
            },
            (Failure::Transport { step }, Some(Cause::Tunnel(source))) => {
                Error::Tunnel { step, source }
            }
            (failure, _) => Self::from_engine(failure),
        }
    }

    fn from_engine(failure: Failure) -> Self {
        match failure {
            Failure::ProximityTimeout(after) => Error::ProximityTimeout(after),
            Failure::BadAdvert(e) => Error::BadAdvert(e),
            Failure::Timeout { step, after } => Error::Timeout { step, after },
            Failure::TunnelClosed(step) => Error::TunnelClosed(step),
            Failure::Handshake(e) => Error::Handshake(e),
            Failure::Protocol { step, source } => Error::Protocol { step, source },
            Failure::NoCtap => Error::NoCtap,
            Failure::InvalidGetInfo(why) => Error::InvalidGetInfo(why),
            other => Error::Session(other),
        }
    }
}

impl Error {
    /// The WebAuthn `DOMException` name a browser would reject with, for scripts that compare
    /// them: `NotAllowedError`, `InvalidStateError`, `NotSupportedError`, `SecurityError` (RP
    /// ID / origin) or `UnknownError`.
    pub fn dom_exception(&self) -> &'static str {
        match self {
            Error::WebAuthn(WebAuthnError::RpIdMismatch { .. })
            | Error::WebAuthn(WebAuthnError::InsecureOrigin(_)) => "SecurityError",
            Error::WebAuthn(WebAuthnError::NoSupportedAlgorithm)
            | Error::WebAuthn(WebAuthnError::NotSupported(_))
            | Error::NotSupported(_) => "NotSupportedError",
            Error::WebAuthn(WebAuthnError::BadOptions(_)) => "TypeError",
            Error::InvalidState(_) => "InvalidStateError",
            Error::NotAllowed(_) | Error::ProximityTimeout(_) | Error::Timeout { .. } => {
                "NotAllowedError"
            }
            _ => "UnknownError",
        }
    }

    /// The step the session was in, for errors raised by a step.
    pub fn step(&self) -> Option<Step> {
        match self {
            Error::ProximityTimeout(_) | Error::Radio(_) | Error::BadAdvert(_) => {
                Some(Step::Scanning)
            }
            Error::UnknownDomain(_) | Error::RelayUnreachable { .. } => Some(Step::Connecting),
            Error::Handshake(_) => Some(Step::Handshake),
            Error::InvalidGetInfo(_) => Some(Step::PostHandshake),
            Error::Timeout { step, .. }
            | Error::Tunnel { step, .. }
            | Error::Protocol { step, .. } => Some(*step),
            Error::TunnelClosed(step) => Some(*step),
            _ => None,
        }
    }
}

/// The WebAuthn error for a CTAP status the phone answered with (the mapping Chromium's
/// `device/fido` uses, simplified to the DOMException names).
pub fn from_status(status: StatusCode) -> Error {
    let name = status.name().unwrap_or("unknown status");
    match status {
        StatusCode::CTAP2_ERR_OPERATION_DENIED => Error::NotAllowed(format!(
            "the user declined on the phone, or could not be verified ({name})"
        )),
        StatusCode::CTAP2_ERR_NO_CREDENTIALS | StatusCode::CTAP2_ERR_INVALID_CREDENTIAL => {
            Error::NotAllowed(format!(
                "the phone has no passkey for this site that the site accepts ({name})"
            ))
        }
        StatusCode::CTAP2_ERR_USER_ACTION_TIMEOUT
        | StatusCode::CTAP2_ERR_ACTION_TIMEOUT
        | StatusCode::CTAP1_ERR_TIMEOUT => Error::NotAllowed(format!(
            "the user did not answer on the phone in time ({name})"
        )),
        StatusCode::CTAP2_ERR_KEEPALIVE_CANCEL | StatusCode::CTAP2_ERR_NOT_ALLOWED => {
            Error::NotAllowed(format!("the phone cancelled the request ({name})"))
        }
        StatusCode::CTAP2_ERR_UV_BLOCKED
        | StatusCode::CTAP2_ERR_PIN_BLOCKED
        | StatusCode::CTAP2_ERR_PIN_AUTH_BLOCKED
        | StatusCode::CTAP2_ERR_UV_INVALID
        | StatusCode::CTAP2_ERR_PIN_INVALID => Error::NotAllowed(format!(
            "user verification on the phone failed or is locked ({name})"
        )),
        StatusCode::CTAP2_ERR_CREDENTIAL_EXCLUDED => Error::InvalidState(format!(
            "the phone already holds a passkey that the site excluded ({name})"
        )),
        StatusCode::CTAP2_ERR_UNSUPPORTED_ALGORITHM
        | StatusCode::CTAP2_ERR_UNSUPPORTED_OPTION
        | StatusCode::CTAP2_ERR_INVALID_OPTION => Error::NotSupported(format!(
            "the phone does not support what the site asked for ({name})"
        )),
        other => Error::Ctap(other),
    }
}
