//! The rustls client settings of one route's https targets: the trusted
//! roots (`upstream_ca`, or the system's), the optional client certificate
//! (mTLS) and the ALPN protocol. Verification cannot be turned off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::upstream::UpstreamTls;
use crate::config::UpstreamProtocol;

/// Why a route's upstream TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("cannot read {key} {path}: {source}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("upstream_ca {path} holds no usable certificate")]
    NoRoots { path: PathBuf },
    #[error("no system root certificates were found; set upstream_ca")]
    NoSystemRoots,
    #[error("upstream_client_cert and upstream_client_key are not a usable pair: {0}")]
    ClientAuth(#[source] rustls::Error),
}

/// Builds the client config for `tls` speaking `protocol`.
pub(crate) fn client_config(
    tls: &UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let roots = match &tls.ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) =
                roots.add_parsable_certificates(load_certs("upstream_ca", path)?);
            if added == 0 {
                return Err(UpstreamTlsError::NoRoots { path: path.clone() });
            }
            Arc::new(roots)
        }
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_root_certificates(roots);
    let mut config = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = load_certs("upstream_client_cert", cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|source| UpstreamTlsError::Pem {
                    key: "upstream_client_key",
                    path: key.clone(),
                    source,
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(UpstreamTlsError::ClientAuth)?
        }
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(config))
}

fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, UpstreamTlsError> {
    let error = |source| UpstreamTlsError::Pem {
        key,
        path: path.to_owned(),
        source,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(error)
}

/// The operating system's roots, read once per process and shared.
fn system_roots() -> Result<Arc<RootCertStore>, UpstreamTlsError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            tracing::warn!(error = %err, "skipping unreadable system root certificates");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        Arc::new(roots)
    });
    if roots.is_empty() {
        return Err(UpstreamTlsError::NoSystemRoots);
    }
    Ok(Arc::clone(roots))
}
