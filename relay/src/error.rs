//! What can go wrong starting or reconfiguring a relay.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors starting or reconfiguring a relay. Each message names the step that failed and,
/// where there is one, the setting to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not be opened.
    #[error("cannot listen on {0}: {1} (is the port in use, or below 1024 without privilege?)")]
    Bind(SocketAddr, #[source] io::Error),
    /// The certificate chain file ([`crate::TlsFiles::cert`]) could not be read or holds no
    /// PEM certificate.
    #[error("cannot read the TLS certificate chain {}: {source} (--tls-cert takes a PEM file)", path.display())]
    TlsCert {
        /// The file.
        path: PathBuf,
        /// Why it could not be used (I/O, no `CERTIFICATE` section, bad PEM).
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The private key file ([`crate::TlsFiles::key`]) could not be read or holds no PEM
    /// private key.
    #[error("cannot read the TLS private key {}: {source} (--tls-key takes a PEM file)", path.display())]
    TlsKey {
        /// The file.
        path: PathBuf,
        /// Why it could not be used (I/O, no `PRIVATE KEY` section, bad PEM).
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate and key were read but rustls refused them (a key that does not match
    /// the certificate, an unsupported key type).
    #[error("TLS certificate and key do not make a valid configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    /// [`crate::Relay::reload_tls`] on a relay started without TLS.
    #[error("TLS is not configured (start with --tls-cert and --tls-key)")]
    NoTls,
    /// The NATS client refused the cluster settings (a URL that does not parse, TLS files
    /// it cannot use).
    #[cfg(feature = "cluster")]
    #[error(
        "cluster mode: cannot use NATS at {url:?}: {source} (check --nats and, if given, \
         --nats-ca, --nats-cert and --nats-key)"
    )]
    Nats {
        /// The NATS URL(s), credentials replaced by `***`.
        url: String,
        /// What the NATS client said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// [`crate::init_log`] was given a filter that does not parse.
    #[error("invalid --log filter {filter:?}: {source}")]
    LogFilter {
        /// The filter as given.
        filter: String,
        /// Where it stops parsing.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// [`crate::init_log`] found a log already installed in this process.
    #[error("cannot start the log: {0}")]
    LogInit(#[source] tracing_subscriber::util::TryInitError),
    /// An origin host ([`crate::OriginHost`], `--origin`) that is not a host name or address
    /// with an optional port.
    #[error(
        "not a host: {0:?} (give the relay's host name as clients reach it, e.g. \
         cable.example.org or 127.0.0.1:8080, without a scheme)"
    )]
    OriginHost(String),
    /// A cluster was configured, but this build has no cluster support.
    #[error(
        "cluster mode: this hybridge-relay was built without cluster support (the `cluster` \
         feature, on by default: cargo install --path relay)"
    )]
    ClusterNotBuilt,
}

#[cfg(test)]
mod tests {
    use super::Error;

    /// What a person reads: the step, the file or URL, the cause, and what to fix.
    #[test]
    fn messages_name_the_step_and_the_fix() {
        use rustls_pki_types::pem::Error as Pem;
        let cases: Vec<(Error, &str)> = vec![
            (
                Error::Bind(
                    "127.0.0.1:80".parse().unwrap(),
                    std::io::ErrorKind::AddrInUse.into(),
                ),
                "cannot listen on 127.0.0.1:80: address in use (is the port in use, or below \
                 1024 without privilege?)",
            ),
            (
                Error::TlsCert {
                    path: "/etc/relay/fullchain.pem".into(),
                    source: Pem::NoItemsFound,
                },
                "cannot read the TLS certificate chain /etc/relay/fullchain.pem: no items found \
                 (--tls-cert takes a PEM file)",
            ),
            (
                Error::TlsKey {
                    path: "/etc/relay/key.pem".into(),
                    source: Pem::Io(std::io::ErrorKind::NotFound.into()),
                },
                "cannot read the TLS private key /etc/relay/key.pem: I/O error: entity not found \
                 (--tls-key takes a PEM file)",
            ),
            (
                Error::TlsConfig(rustls::Error::NoCertificatesPresented),
                "TLS certificate and key do not make a valid configuration: peer sent no \
                 certificates",
            ),
            (
                Error::NoTls,
                "TLS is not configured (start with --tls-cert and --tls-key)",
            ),
            (
                Error::LogFilter {
                    filter: "relay=loud".into(),
                    source: tracing_subscriber::EnvFilter::try_new("relay=loud").unwrap_err(),
                },
                "invalid --log filter \"relay=loud\": error parsing level filter: expected one \
                 of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5",
            ),
            (
                Error::OriginHost("https://cable.example.org".into()),
                "not a host: \"https://cable.example.org\" (give the relay's host name as \
                 clients reach it, e.g. cable.example.org or 127.0.0.1:8080, without a scheme)",
            ),
            (
                Error::ClusterNotBuilt,
                "cluster mode: this hybridge-relay was built without cluster support (the \
                 `cluster` feature, on by default: cargo install --path relay)",
            ),
            #[cfg(feature = "cluster")]
            (
                Error::Nats {
                    url: "nats://***@nats:4222".into(),
                    source: async_nats::ConnectError::new(
                        async_nats::ConnectErrorKind::ServerParse,
                    ),
                },
                "cluster mode: cannot use NATS at \"nats://***@nats:4222\": failed to parse \
                 server or server list (check --nats and, if given, --nats-ca, --nats-cert and \
                 --nats-key)",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    /// A second log in one process is refused, with the cause.
    #[test]
    fn a_second_log_is_refused() {
        // The first may fail too if another test installed one; "off" prints nothing.
        let _ = crate::init_log("off", false, &[]);
        let e = crate::init_log("off", false, &[]).unwrap_err();
        assert!(matches!(e, Error::LogInit(_)), "{e:?}");
        assert!(e.to_string().starts_with("cannot start the log: "), "{e}");
    }

    /// The causes stay reachable for a caller that walks the chain.
    #[test]
    fn causes_are_sources() {
        use std::error::Error as _;
        let e = Error::TlsKey {
            path: "k.pem".into(),
            source: rustls_pki_types::pem::Error::NoItemsFound,
        };
        let source = e.source().expect("a source");
        assert!(source.is::<rustls_pki_types::pem::Error>());
    }
}
