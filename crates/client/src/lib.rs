//! The laptop side of a hybrid sign-in: the WebAuthn client, the QR code, the proximity scan,
//! the tunnel and the handshake.
#![forbid(unsafe_code)]

pub mod render;
pub mod webauthn;
