//! authgate: a TLS-terminating reverse proxy that authenticates every request.
//!
//! ```text
//!  client ──TLS──▶ server.rs ──▶ service.rs ──▶ path.rs (decide the path once)
//!                  (accept,       (request id,        │
//!                   handshake     access log,         ├──▶ /auth/* ──▶ api/ (account endpoints:
//!                   in tls.rs,    errors → JSON       │                │    HTTP in and out)
//!                   h1/h2)        via error.rs)       ▼                ▼
//!                                  router.rs (host, longest     auth/sessions/ (start; rotate,
//!                                             prefix)            rotation.rs; revoke; revocations
//!                                                     │          loaded at start) ──▶ store/
//!                                                     ▼                  (sled_store/, postgres/)
//!                                  auth/ (bearer → kid → key → verified-token
//!                                         cache → revocation → role; the
//!                                         identity assertion; keys/ swapped
//!                                         whole on SIGHUP, key_reload.rs)
//!                                                     │
//!                                                     ▼
//!                                  proxy/ (headers.rs: scrub, inject; forward_body.rs:
//!                                          the client's body up; upstream/: a target,
//!                                          a pooled connection; answer.rs: the body
//!                                          back, cut when the session ends) ──▶ upstream
//! ```
//!
//! Beside the request path: `config/` (the file's shape, validated once),
//! `gateway.rs` (everything built from it, shared), `reload.rs` (SIGHUP),
//! `body.rs` (the bodies the gateway writes itself), `account/` (what names
//! an account), `observe/` and `admin/` (metrics, health, the admin
//! listener), `audit.rs` (the security-event trail), `tasks.rs` (every task
//! the server starts), `request_id.rs`, `timestamp.rs`, `digest.rs`
//! (SHA-256), `private_files.rs`, and `cli.rs` + `cli/` (the operator
//! commands the binary, `main.rs`, runs).
//!
//! `GET /.well-known/jwks.json` is answered in service.rs, ahead of every
//! route, from the key set in force.
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

// Visibility says who may use an item: `pub` only for the API that the
// binary, benches, fuzz targets and tests use; everything else is
// `pub(crate)`, so dead code shows. Indexing that could panic on input is
// refused (`get` instead); tests may index (clippy.toml).
#![warn(unreachable_pub)]
#![deny(clippy::indexing_slicing)]

pub mod account;
pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod audit;
pub mod auth;
pub(crate) mod body;
pub mod cli;
pub mod config;
pub(crate) mod digest;
pub mod error;
pub mod gateway;
pub(crate) mod key_reload;
pub mod memory;
#[cfg(test)]
mod module_graph;
pub mod observe;
pub mod path;
pub(crate) mod private_files;
pub mod proxy;
pub mod reload;
pub(crate) mod request_id;
pub mod router;
pub mod server;
pub mod service;
pub mod store;
pub(crate) mod tasks;
pub mod timestamp;
pub(crate) mod tls;
pub(crate) mod web;
pub(crate) mod worker;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use auth::keys::{self, KeyRing, KeySource};
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
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Build(#[from] gateway::BuildError),
    #[error("cannot listen on {addr} ([admin] listen): {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ([server] listen): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What [`prepare`] assembles for [`server::serve`].
pub struct Prepared {
    pub gateway: Arc<gateway::Gateway>,
    pub tls: Arc<rustls::ServerConfig>,
    /// The certificate the listener presents, which a reload replaces.
    pub certs: Arc<tls::CertStore>,
}

/// Prepares everything `serve` needs from a validated config: the secret, the
/// TLS settings and the shared gateway state. Logs what dev mode generated.
pub async fn prepare(config: Config) -> Result<Prepared, StartupError> {
    let keys = Arc::new(KeyRing::load(&config)?);
    let current = keys.current();
    let signing = current.signing();
    match keys.source() {
        KeySource::Secret(SecretOrigin::Environment) => {
            tracing::info!("access-token key: the HMAC secret from AUTHGATE_ACCESS_SECRET")
        }
        KeySource::Secret(origin) => {
            tracing::info!(
                ?origin,
                "access-token key: one HMAC secret from [tokens] secret_file"
            )
        }
        KeySource::Dir(dir) => tracing::info!(
            dir = %dir.display(),
            signing_kid = %signing.kid,
            algorithm = keys::material::algorithm_name(signing.algorithm),
            verifying = current.kids().count(),
            "access-token keys from [tokens] keys_dir"
        ),
    }
    let (tls, certs, generated) = tls::server_config(&config)?;
    if generated {
        tracing::warn!(
            cert = %config.server.tls_cert.display(),
            "DEV MODE: generated a self-signed certificate for localhost"
        );
    }
    let store_path = config.store.path.clone();
    let store_backend = config.store.backend.clone();
    let key_path = config.server.tls_key.clone();
    let admin_listen = config.admin.listen;
    let mut gateway = gateway::Gateway::build(config, Arc::clone(&keys)).await?;
    if let Some(addr) = admin_listen {
        gateway
            .bind_admin()
            .map_err(|source| StartupError::AdminBind { addr, source })?;
    }
    // After the build, so the database directory exists to be checked.
    match keys.source() {
        KeySource::Secret(SecretOrigin::File(path) | SecretOrigin::GeneratedForDev(path)) => {
            private_files::warn_if_readable_by_others("the access-token secret file", path);
        }
        KeySource::Dir(dir) => {
            private_files::warn_if_readable_by_others("the key directory ([tokens] keys_dir)", dir);
        }
        KeySource::Secret(SecretOrigin::Environment) => {}
    }
    private_files::warn_if_readable_by_others("the TLS private key ([server] tls_key)", &key_path);
    if matches!(store_backend, config::StoreBackend::Sled) {
        private_files::warn_if_readable_by_others(
            "the database directory ([store] path)",
            &store_path,
        );
    }
    Ok(Prepared {
        gateway: Arc::new(gateway),
        tls,
        certs,
    })
}

/// Validates a configuration completely without starting anything: the
/// file, the TLS certificate and key, and every route's upstream settings
/// (CA and client-certificate files). The access-token keys and the store
/// are not opened: in dev mode that would create them.
pub fn check(config: Config) -> Result<(), StartupError> {
    tls::check(&config)?;
    gateway::Live::build(config).map_err(gateway::BuildError::from)?;
    Ok(())
}

/// Prepares and serves on an already-bound listener until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    let path = config.source.clone();
    let Prepared {
        gateway,
        tls,
        certs,
    } = prepare(config).await?;
    // Before "listening on": from then on a SIGHUP reloads, never kills.
    // The keys and the configuration file are reloaded by two listeners of
    // the same signal, each validating its part before swapping it.
    let key_reloader = key_reload::spawn_on_sighup(Arc::clone(gateway.keys()));
    let reloader = Arc::new(reload::Reloader::new(Arc::clone(&gateway), certs, path));
    let reloads = tokio::spawn(reload_on_hangup(reloader));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening on {addr}");
    }
    server::serve(listener, gateway, tls, shutdown).await;
    reloads.abort();
    if let Some(key_reloader) = key_reloader {
        key_reloader.abort();
    }
    Ok(())
}

/// Reloads the configuration on every SIGHUP until aborted.
async fn reload_on_hangup(reloader: Arc<reload::Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; reloads are off");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            // Reading files and building pools: off the async workers.
            let reloader = Arc::clone(&reloader);
            let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        std::future::pending::<()>().await;
    }
}
