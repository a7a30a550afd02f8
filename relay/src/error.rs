//! What can go wrong starting or reconfiguring a relay.

use std::io;
use std::net::SocketAddr;

/// Errors starting or reconfiguring a relay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {0}: {1} (is the port in use, or below 1024 without privilege?)")]
    Bind(SocketAddr, #[source] io::Error),
    #[error("cannot read TLS file {0}: {1}")]
    TlsFile(String, String),
    #[error("TLS certificate and key do not make a valid configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error("TLS is not configured (start with --tls-cert and --tls-key)")]
    NoTls,
    #[error("cluster mode: {0}")]
    Cluster(String),
}
