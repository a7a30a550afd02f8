//! hybridge-relay: the hybrid (caBLE v2) tunnel server (docs/protocol.md §6).
//!
//! A phone opens `/cable/new/<tunnel id>` and waits; a laptop opens
//! `/cable/connect/<routing id>/<tunnel id>`; the relay pairs the two WebSockets and
//! forwards their binary messages unchanged, within limits.
//!
//! Embedding a relay in a test or a demo:
//!
//! ```no_run
//! # async fn demo() -> Result<(), hybridge_relay::Error> {
//! use hybridge_relay::{Config, Relay};
//! let relay = Relay::bind(Config::default()).await?; // 127.0.0.1, ephemeral port
//! println!("relay at {} routing ID {}", relay.url(), relay.routing_id());
//! relay.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod busy;
pub mod client;
pub mod cluster;
pub mod config;
mod conn;
mod error;
pub mod fuzz;
pub mod http;
pub mod log;
pub mod metrics;
mod pairing;
mod ratelimit;
mod registry;
pub mod rlimit;
mod route;
mod server;
mod shared;
mod tls;
pub mod ws;

pub use config::{Config, Limits, TlsFiles};
pub use error::Error;
pub use server::{Relay, RelayHandle};
pub use shared::Phase;
