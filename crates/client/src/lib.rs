//! The laptop side of a hybrid sign-in: the WebAuthn client, the QR code, the proximity scan,
//! the tunnel and the handshake.
//!
//! * [`session`]: the hybrid session over a radio and a tunnel server — [`session::register`]
//!   and [`session::sign_in`] take the relying party's options JSON and an origin and give a
//!   [`session::Prepared`] ceremony: its QR code to show, then `run()` for the WebAuthn
//!   response ([`webauthn::Registration`] / [`webauthn::Assertion`], `to_json()`);
//!   [`session::Laptop`] and [`session::PhoneConnection`] run a raw CTAP request. Progress arrives as
//!   [`session::Event`]s, failures as one [`session::Error`] naming the step.
//! * [`webauthn`]: options JSON, the RP ID check, clientDataJSON, response JSON.
//! * `render` (feature `render`, on by default): the QR code for a terminal, PNG or SVG.
//!
//! Features: `bluez` (scanning through BlueZ) and `render`, both on by default; without
//! them the crate needs neither libdbus nor an image encoder.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "render")]
pub mod render;
pub mod session;
pub mod webauthn;
