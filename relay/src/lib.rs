//! hybridge-relay: the hybrid (caBLE v2) tunnel server (docs/protocol.md §6).
//!
//! A phone opens `/cable/new/<tunnel id>` and waits; a laptop opens
//! `/cable/connect/<routing id>/<tunnel id>`; the relay pairs the two WebSockets and
//! forwards their binary messages unchanged, within limits. A linked phone keeps a
//! wake-up subscription on `/cable/subscribe`; a laptop's `/cable/contact/<contact id>`
//! wakes it, and it joins the laptop through `/cable/connect` (`hybridge_proto::contact`).
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
//!
//! The public surface is what an embedder needs: [`Relay`] and its [`RelayHandle`], the
//! [`Config`] with its [`Limits`], [`TlsFiles`], [`OriginHost`] and [`ClusterConfig`], the
//! [`Error`] type, and three helpers the binaries share ([`init_log`], [`raise_nofile`],
//! [`tunnel_capacity`]). Everything else (the HTTP and WebSocket codecs, the pairing task,
//! the registry, the cluster's NATS plumbing) is private. The cargo feature `fuzzing` adds
//! the doc-hidden entry points of the fuzz targets in `fuzz/`; they are not API.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod busy;
mod cluster;
mod config;
mod conn;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod http;
mod log;
mod metrics;
mod pairing;
mod ratelimit;
mod registry;
mod rlimit;
mod route;
mod server;
mod shared;
mod tls;
mod wake;
mod ws;

pub use cluster::ClusterConfig;
pub use config::{Config, Limits, OriginHost, TlsFiles};
pub use error::Error;
pub use log::init_log;
pub use rlimit::{raise_nofile, tunnel_capacity};
pub use server::{Relay, RelayHandle};
pub use shared::Phase;
