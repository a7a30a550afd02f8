//! The FIDO hybrid transport (caBLE v2) wire protocol, with no I/O.
//!
//! Every protocol decision lives here; the async crates only move bytes and wait.
#![forbid(unsafe_code)]

pub mod tunnel;
