//! authgate: a TLS-terminating reverse proxy that authenticates every request.
//!
//! ```text
//!  client ──TLS──▶ server.rs ──▶ service.rs ──▶ path.rs (decide the path once)
//!                  (accept,       (access log,        │
//!                   handshake,     errors → JSON)     ├──▶ /auth/* ──▶ api/ (account endpoints:
//!                   h1/h2)                            │                │    HTTP in and out)
//!                                                     ▼                ▼
//!                                  router.rs (host, longest     auth/sessions/ (start, rotate,
//!                                             prefix)            revoke; revocations loaded
//!                                                     │          at start) ──▶ store/
//!                                                     ▼
//!                                  auth/ (bearer → JWT → revocation → role)
//!                                                     │
//!                                                     ▼
//!                                  proxy/ (scrub, inject, stream) ──▶ upstream
//! ```
//!
//! Configuration is read once (`config/`), assembled into one shared
//! [`gateway::Gateway`], and served by [`server::serve`]. Imports point down
//! the drawing: api → auth → store, proxy → auth, never back (a test in
//! `module_graph.rs` keeps it so). auth chooses no response: it returns
//! typed errors (bearer, token, session), and every client-visible failure
//! becomes a [`error::GatewayError`] in `error.rs`, mapped to a response in
//! one place.
//! What names an account (email, role, user id, a new password) is parsed
//! once where it enters, into the types of [`account`], and passed inward.
//! Every task `serve` starts (connections, HTTP/2 streams, WebSocket tunnels,
//! maintenance) runs on one [`tasks::Tasks`] set, so shutdown waits for all.

pub mod account;
pub mod api;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod error;
pub mod gateway;
#[cfg(test)]
mod module_graph;
pub mod path;
pub mod private_files;
pub mod proxy;
pub mod router;
pub mod server;
pub mod service;
pub mod store;
pub mod tasks;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use config::secret::{self, SecretOrigin};
use config::Config;

/// Anything that stops the gateway from starting, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Build(#[from] gateway::BuildError),
    #[error("cannot listen on {addr} ([server] listen): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Prepares everything `serve` needs from a validated config: the secret, the
/// TLS settings and the shared gateway state. Logs what dev mode generated.
pub async fn prepare(
    config: Config,
) -> Result<(Arc<gateway::Gateway>, Arc<rustls::ServerConfig>), StartupError> {
    let (secret, origin) = secret::resolve(&config)?;
    match &origin {
        SecretOrigin::GeneratedForDev(path) => tracing::warn!(
            path = %path.display(),
            "DEV MODE: no AUTHGATE_ACCESS_SECRET set; using a generated secret kept in this file. \
             Never run like this in production."
        ),
        SecretOrigin::Environment => tracing::info!("access-token secret from the environment"),
        SecretOrigin::File(path) => {
            tracing::info!(path = %path.display(), "access-token secret from file")
        }
    }
    let (tls, generated) = tls::server_config(&config)?;
    if generated {
        tracing::warn!(
            cert = %config.server.tls_cert.display(),
            "DEV MODE: generated a self-signed certificate for localhost"
        );
    }
    let store_path = config.store.path.clone();
    let store_backend = config.store.backend.clone();
    let key_path = config.server.tls_key.clone();
    let gateway = gateway::Gateway::build(config, &secret).await?;
    // After the build, so the database directory exists to be checked.
    if let SecretOrigin::File(path) | SecretOrigin::GeneratedForDev(path) = &origin {
        private_files::warn_if_readable_by_others("the access-token secret file", path);
    }
    private_files::warn_if_readable_by_others("the TLS private key ([server] tls_key)", &key_path);
    if matches!(store_backend, config::StoreBackend::Sled) {
        private_files::warn_if_readable_by_others(
            "the database directory ([store] path)",
            &store_path,
        );
    }
    Ok((Arc::new(gateway), tls))
}

/// Prepares and serves on an already-bound listener until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    let (gateway, tls) = prepare(config).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening on {addr}");
    }
    server::serve(listener, gateway, tls, shutdown).await;
    Ok(())
}
