//! TLS for the one public listener: PEM loading, the rustls server config
//! (TLS 1.2 and 1.3, ALPN h2 + http/1.1, no 0-RTT) whose certificate a reload
//! swaps ([`CertStore`]), and the self-signed localhost certificate dev mode
//! generates when none is configured.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::secret::create_private;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate chain {path} ([server] tls_cert): {source}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("cannot read TLS private key {path} ([server] tls_key): {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate {cert} and key {key} do not form a usable pair: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot generate the dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write the dev certificate to {path}: {source}")]
    WriteDev {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Builds the rustls config from the configured files, generating them first
/// in dev mode when both are missing. Returns the config, the certificate
/// holder a reload swaps, and whether a certificate was generated.
pub(crate) fn server_config(
    config: &Config,
) -> Result<(Arc<ServerConfig>, Arc<CertStore>, bool), TlsError> {
    let cert_path = &config.server.tls_cert;
    let key_path = &config.server.tls_key;
    let generated = config.server.dev && !cert_path.exists() && !key_path.exists();
    if generated {
        write_dev_certificate(cert_path, key_path)?;
    }
    let store = Arc::new(CertStore::new(load_certified_key(config)?));
    Ok((build(Arc::clone(&store)), store, generated))
}

/// Loads and checks the configured chain and key without touching anything
/// else (`check-config`, reloads). In dev mode, missing files are fine: they
/// are generated at start.
pub(crate) fn check(config: &Config) -> Result<(), TlsError> {
    let server = &config.server;
    if server.dev && !server.tls_cert.exists() && !server.tls_key.exists() {
        return Ok(());
    }
    load_certified_key(config).map(drop)
}

/// The configured chain and key as one certificate rustls can serve.
pub(crate) fn load_certified_key(config: &Config) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_path = &config.server.tls_cert;
    let key_path = &config.server.tls_key;
    let certs = load_chain(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Key {
        path: key_path.clone(),
        source,
    })?;
    let pair_error = |source| TlsError::Pair {
        cert: cert_path.clone(),
        key: key_path.clone(),
        source,
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider).map_err(pair_error)?;
    Ok(Arc::new(certified))
}

/// The rustls settings every listener uses, serving `certs`' current certificate.
pub(crate) fn build(certs: Arc<CertStore>) -> Arc<ServerConfig> {
    let mut tls = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_cert_resolver(certs);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // 0-RTT data can be replayed by an attacker; a gateway forwarding
    // non-idempotent requests must never accept it (RFC 8446 §8).
    tls.max_early_data_size = 0;
    Arc::new(tls)
}

/// The certificate the listener presents; a reload swaps it atomically.
/// Handshakes under way keep the one they started with; new ones get the
/// new one. Nothing else about TLS changes at runtime.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(certified: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(certified),
        }
    }

    /// Presents `certified` from the next handshake on.
    pub fn replace(&self, certified: Arc<CertifiedKey>) {
        self.current.store(certified);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |source| TlsError::Certificate {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(error)?;
    if certs.is_empty() {
        return Err(error(rustls_pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// A self-signed end-entity certificate for localhost and 127.0.0.1; the key
/// file is created with mode 0600.
fn write_dev_certificate(cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let key_pem = certified.signing_key.serialize_pem();
    let cert_pem = certified.cert.pem();
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| TlsError::WriteDev {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let write = |path: &Path, text: &str| -> Result<(), TlsError> {
        let werr = |source| TlsError::WriteDev {
            path: path.to_owned(),
            source,
        };
        let mut file = create_private(path).map_err(werr)?;
        file.write_all(text.as_bytes()).map_err(werr)?;
        file.sync_all().map_err(werr)
    };
    write(key_path, &key_pem)?;
    write(cert_path, &cert_pem)
}
