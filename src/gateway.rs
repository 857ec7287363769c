//! The gateway's shared state, assembled once at startup from the config:
//! router, authenticator, token issuer, proxy, store and account service.
//! Everything a request needs hangs off one `Arc<Gateway>`.

use std::sync::Arc;

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::api::Accounts;
use crate::auth::jwt::{TokenIssuer, TokenVerifier};
use crate::auth::keys::KeyRing;
use crate::auth::password::{PasswordError, PasswordPool};
use crate::auth::revocation::RevocationList;
use crate::auth::sessions;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::config::StoreBackend;
use crate::observe::Observability;
use crate::proxy::Proxy;
use crate::router::Router;
use crate::store::postgres::Listener;
use crate::store::{PostgresStore, SledStore, Store, StoreError};
use crate::tasks::Tasks;

pub struct Gateway {
    config: Arc<Config>,
    router: Router,
    authenticator: Authenticator,
    issuer: Arc<TokenIssuer>,
    /// The signing and verifying keys, swapped whole on reload (SIGHUP).
    keys: Arc<KeyRing>,
    proxy: Proxy,
    revocations: Arc<RevocationList>,
    accounts: Accounts,
    observability: Observability,
    /// With PostgreSQL: follows the other instances' revocations; stopped
    /// with the gateway.
    _listener: Option<Listener>,
}

/// How often expired sessions and stale revocations are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxySetupError),
    #[error("cannot open the store ([store]): {0}")]
    Store(#[from] StoreError),
    #[error("cannot start password hashing ([auth.password]): {0}")]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

impl Gateway {
    /// Opens the store, loads the revocation state and assembles the rest.
    /// With PostgreSQL, also starts following the other instances'
    /// revocations.
    pub async fn build(config: Config, keys: Arc<KeyRing>) -> Result<Self, BuildError> {
        match &config.store.backend {
            StoreBackend::Sled => {
                let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.store.path)?);
                Self::build_with_store(config, keys, store).await
            }
            StoreBackend::Postgres(postgres) => {
                let store = Arc::new(PostgresStore::open(postgres).await?);
                tracing::info!(database = %postgres.url, "using the PostgreSQL store");
                let revocations = Arc::new(RevocationList::default());
                let max_staleness = config.store.revocation_max_staleness;
                let mut gateway = Self::assemble(
                    config,
                    keys,
                    Arc::clone(&store) as Arc<dyn Store>,
                    Arc::clone(&revocations),
                )
                .await?;
                // Its first connection reloads the whole state, so whatever
                // was revoked since the load above is applied too.
                gateway._listener = Some(crate::store::postgres::spawn_listener(
                    &store,
                    revocations,
                    gateway.accounts.revocation_window(),
                    max_staleness,
                ));
                Ok(gateway)
            }
        }
    }

    /// As [`Gateway::build`], over a store the caller opened.
    pub async fn build_with_store(
        config: Config,
        keys: Arc<KeyRing>,
        store: Arc<dyn Store>,
    ) -> Result<Self, BuildError> {
        Self::assemble(config, keys, store, Arc::new(RevocationList::default())).await
    }

    async fn assemble(
        config: Config,
        keys: Arc<KeyRing>,
        store: Arc<dyn Store>,
        revocations: Arc<RevocationList>,
    ) -> Result<Self, BuildError> {
        let revocation_window = sessions::load_revocations(
            store.as_ref(),
            &revocations,
            config.tokens.access_ttl + config.tokens.leeway,
            SystemTime::now(),
        )
        .await?;
        let verifier = TokenVerifier::with_keys(&config.tokens, Arc::clone(&keys));
        let issuer = Arc::new(TokenIssuer::with_keys(&config.tokens, Arc::clone(&keys)));
        let mut proxy = Proxy::new(
            &config.server.identity_header_prefix,
            config.server.body_read_timeout,
            &config.routes,
        )?;
        let passwords = PasswordPool::new(&config.auth.password)?;
        let observability = Observability::new(&config)?;
        proxy.count_tunnels_in(observability.metrics().tunnels());
        let accounts = Accounts::new(
            &config,
            store,
            passwords,
            Arc::clone(&issuer),
            Arc::clone(&revocations),
            revocation_window,
        )
        .with_audit(Arc::clone(observability.audit()));
        Ok(Self {
            router: Router::new(&config.routes),
            authenticator: Authenticator::new(verifier, Arc::clone(&revocations)),
            issuer,
            keys,
            proxy,
            revocations,
            accounts,
            observability,
            config: Arc::new(config),
            _listener: None,
        })
    }

    /// Sweeps expired sessions and runs the upstream health checks in the
    /// background, on `tasks`, until `stop` is cancelled; a sweep under way
    /// finishes first.
    pub fn spawn_maintenance(self: &Arc<Self>, tasks: &Tasks, stop: CancellationToken) {
        let gateway = Arc::clone(self);
        let blocking = tasks.clone();
        tasks.spawn(async move {
            // Owned by this task: when it returns at shutdown, dropping the
            // set aborts every health check with it.
            let mut health_checks = tokio::task::JoinSet::new();
            gateway.proxy.spawn_health_checks(&mut health_checks);
            let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let gateway = Arc::clone(&gateway);
                let lifetime = gateway.accounts.revocation_window();
                // The sled sweep is synchronous work that may take a while
                // after long downtime; PostgreSQL's is awaited from there.
                let runtime = tokio::runtime::Handle::current();
                let swept = blocking
                    .spawn_blocking(move || {
                        runtime.block_on(gateway.accounts.sweep(lifetime, SystemTime::now()));
                    })
                    .await;
                if let Err(err) = swept {
                    tracing::error!(error = %err, "session sweep task failed");
                }
            }
        });
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    pub fn issuer(&self) -> &Arc<TokenIssuer> {
        &self.issuer
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.revocations
    }

    pub fn access_log(&self) -> bool {
        self.config.server.access_log
    }

    pub fn max_uri_bytes(&self) -> usize {
        self.config.server.max_uri_bytes
    }

    /// True for paths served by the account endpoints (`/auth` and below).
    pub fn is_account_path(&self, path: &str) -> bool {
        crate::router::prefix_matches(&self.config.auth.path_prefix, path)
    }

    /// Metrics, audit trail and the admin listener's state.
    pub fn observability(&self) -> &Observability {
        &self.observability
    }

    /// Binds the admin listener (`[admin] listen`), before the gateway is shared.
    pub fn bind_admin(&mut self) -> std::io::Result<()> {
        let config = Arc::clone(&self.config);
        self.observability.bind(&config)
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The part of an account path after the prefix (`/auth/login` → `/login`).
    pub fn account_sub_path<'a>(&self, path: &'a str) -> &'a str {
        path.get(self.config.auth.path_prefix.len()..)
            .unwrap_or_default()
    }
}
