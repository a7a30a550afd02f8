//! A software passkey authenticator, and the phone side of a hybrid session.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod authenticator;
pub mod phone;
#[cfg(feature = "qr-image")]
pub mod qr_image;
pub mod store;
pub mod user;
