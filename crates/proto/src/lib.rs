//! The FIDO hybrid transport (caBLE v2) wire protocol, with no I/O.
//!
//! Every protocol decision lives here; the async crates only move bytes and wait.
#![forbid(unsafe_code)]

pub mod advert;
pub mod crypter;
pub mod digits;
pub mod domain;
mod error;
pub mod frame;
pub mod handshake;
pub mod kdf;
pub mod keys;
pub mod linking;
pub mod qr;
pub mod secret;
pub mod session;
pub mod tunnel;

pub use error::Error;
