//! Built-in TLS: the server configuration made from the PEM files, swapped on reload.

use std::sync::{Arc, RwLock};

use crate::config::TlsFiles;
use crate::error::Error;

/// The PEM files and the configuration last made from them.
pub(crate) struct TlsState {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsState {
    /// Reads the files; fails unless they make a valid server configuration.
    pub(crate) fn new(files: &TlsFiles) -> Result<TlsState, Error> {
        Ok(TlsState {
            current: RwLock::new(load(files)?),
            files: files.clone(),
        })
    }

    /// The configuration for a new connection.
    pub(crate) fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the files. New connections use them; on error the old configuration stays.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let cfg = load(&self.files)?;
        match self.current.write() {
            Ok(mut c) => *c = cfg,
            Err(p) => *p.into_inner() = cfg,
        }
        Ok(())
    }
}

fn load(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_err = |source| Error::TlsCert {
        path: files.cert.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(cert_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| Error::TlsKey {
        path: files.key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
