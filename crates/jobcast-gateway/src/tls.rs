//! TLS for `wss://` and `https://`: the certificate chain and key loaded from PEM files into a
//! rustls server config, and reloaded without a restart when the files change or on SIGHUP. A
//! reload that fails (a half-written file, a key that does not match) keeps the config in use
//! and logs why; connections already open keep the certificate they started with. Reloading is
//! driven by [`crate::reload::watch`].

use crate::reload::Reload;
use parking_lot::RwLock;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};
use tokio_rustls::{TlsAcceptor, rustls};

/// The server's TLS settings, reloadable.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    acceptor: RwLock<TlsAcceptor>,
}

/// Reads the chain and key and checks that they belong together.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Tls {
    /// Loads the certificate chain and private key (PEM).
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Arc<Self>, String> {
        let (cert, key) = (cert.into(), key.into());
        let config = server_config(&cert, &key)?;
        Ok(Arc::new(Self {
            cert,
            key,
            acceptor: RwLock::new(TlsAcceptor::from(config)),
        }))
    }

    /// The acceptor for a new connection (the config loaded last).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().clone()
    }
}

impl Reload for Tls {
    fn what(&self) -> &'static str {
        "TLS certificate"
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }

    fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.cert, &self.key)?;
        *self.acceptor.write() = TlsAcceptor::from(config);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "localhost");
        let tls = Tls::load(&cert, &key).unwrap();
        // A key of another certificate: refused, and the loaded config stays.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(tls.reload().unwrap_err().contains("certificate and key"));
        std::fs::write(&cert, "not a pem").unwrap();
        assert!(tls.reload().unwrap_err().contains("no certificate"));
        assert!(Tls::load(dir.path().join("absent.pem"), &key).is_err());
    }
}
