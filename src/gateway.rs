//! The gateway's shared state, assembled at startup from the config:
//! authenticator, token issuer, store and account service, plus the [`Live`]
//! part a reload replaces atomically (router, proxy, the config they came
//! from). Everything a request needs hangs off one `Arc<Gateway>`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::api::Accounts;
use crate::auth::api_keys::feed::KeyedFeed;
use crate::auth::api_keys::ApiKeyIndex;
use crate::auth::jwt::{TokenIssuer, TokenVerifier};
use crate::auth::keys::KeyRing;
use crate::auth::password::{PasswordError, PasswordPool};
use crate::auth::revocation::RevocationList;
use crate::auth::sessions;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::config::StoreBackend;
use crate::memory::{release_free_memory, ReleasePolicy};
use crate::observe::Observability;
use crate::proxy::Proxy;
use crate::router::Router;
use crate::store::postgres::Listener;
use crate::store::{PostgresStore, SledStore, Store, StoreError};
use crate::tasks::{StopSignal, Tasks};
use crate::worker::PerWorker;

pub struct Gateway {
    /// The configuration the gateway started with: what only a restart
    /// changes (listener, store, tokens, accounts) is read from here.
    config: Arc<Config>,
    /// Routes, upstreams and per-request limits; a reload swaps the whole
    /// snapshot, and each request keeps the one it started with. Each worker
    /// has its own reference to it, so a request counts itself on its
    /// worker's reference rather than on one every worker writes to.
    live: PerWorker<ArcSwap<Arc<Live>>>,
    /// Bumped by every reload, so the maintenance task restarts the health
    /// checks of the new upstreams.
    reloads: watch::Sender<u64>,
    authenticator: Authenticator,
    issuer: Arc<TokenIssuer>,
    /// The signing and verifying keys, swapped whole on reload (SIGHUP).
    keys: Arc<KeyRing>,
    revocations: Arc<RevocationList>,
    /// Every live API key, consulted on `api_keys = true` routes.
    api_keys: Arc<ApiKeyIndex>,
    accounts: Accounts,
    observability: Observability,
    /// With PostgreSQL: follows the other instances' revocations; stopped
    /// with the gateway.
    _listener: Option<Listener>,
}

/// A request's hold on the live configuration (see [`Gateway::live`]).
pub type LiveHold = Arc<Arc<Live>>;

/// What a reload replaces, as one unit: the routing table, the upstream
/// pools and the configuration both were built from.
pub struct Live {
    pub config: Arc<Config>,
    pub router: Router,
    pub proxy: Proxy,
}

impl Live {
    /// Builds everything from `config` without touching the running
    /// gateway; an error leaves nothing half-applied.
    pub fn build(config: Config) -> Result<Self, crate::proxy::ProxySetupError> {
        let proxy = Proxy::new(
            &config.server.identity_header_prefix,
            config.server.body_read_timeout,
            &config.routes,
            config.server.workers,
        )?;
        Ok(Self {
            router: Router::new(&config.routes),
            proxy,
            config: Arc::new(config),
        })
    }
}

/// How often expired sessions and stale revocations are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// How often idle upstream connections past their idle timeout are closed
/// (a fifth of it, so none outlives it by much), and the open client
/// connections sampled to decide whether to give free memory back.
const IDLE_UPSTREAM_SWEEP: Duration = Duration::from_secs(10);

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
                // One feed for revocations and API keys, in commit order.
                let feed = KeyedFeed::new(
                    revocations,
                    Arc::clone(&gateway.api_keys),
                    gateway.accounts.revocation_window(),
                );
                gateway._listener = Some(crate::store::postgres::spawn_listener(
                    &store,
                    Arc::new(feed),
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
        let api_keys = Arc::new(ApiKeyIndex::new(config.auth.default_role.clone()));
        api_keys.replace_all(&store.live_api_keys().await?);
        let verifier = TokenVerifier::with_keys(&config.tokens, Arc::clone(&keys));
        let issuer = Arc::new(TokenIssuer::with_keys(&config.tokens, Arc::clone(&keys)));
        let mut live = Live::build(config.clone())?;
        let passwords = PasswordPool::new(&config.auth.password)?;
        let observability = Observability::new(&config)?;
        live.proxy
            .count_tunnels_in(observability.metrics().tunnels());
        let accounts = Accounts::new(
            &config,
            store,
            passwords,
            Arc::clone(&issuer),
            Arc::clone(&revocations),
            revocation_window,
        )
        .with_audit(Arc::clone(observability.audit()))
        .with_api_keys(Arc::clone(&api_keys));
        Ok(Self {
            live: {
                let live = Arc::new(live);
                PerWorker::new(config.server.workers, || {
                    ArcSwap::from_pointee(Arc::clone(&live))
                })
            },
            reloads: watch::Sender::new(0),
            authenticator: Authenticator::new(verifier, Arc::clone(&revocations)),
            issuer,
            keys,
            revocations,
            api_keys,
            accounts,
            observability,
            config: Arc::new(config),
            _listener: None,
        })
    }

    /// Sweeps expired sessions and runs the upstream health checks (those
    /// of the configuration installed last) in the background, on `tasks`,
    /// until `stop` fires; a sweep under way finishes first.
    pub fn spawn_maintenance(self: &Arc<Self>, tasks: &Tasks, stop: StopSignal) {
        self.spawn_key_touches(tasks, stop.clone());
        let gateway = Arc::clone(self);
        let blocking = tasks.clone();
        tasks.spawn(async move {
            // Owned by this task: when it ends or is aborted, dropping the
            // set aborts every health check with it.
            let mut health_checks = tokio::task::JoinSet::new();
            let mut reloads = gateway.reloads.subscribe();
            gateway.live().proxy.spawn_health_checks(&mut health_checks);
            let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
            let mut idle_ticks = tokio::time::interval(IDLE_UPSTREAM_SWEEP);
            let mut memory = ReleasePolicy::default();
            let stopped = stop.fired();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    biased;
                    () = &mut stopped => return,
                    _ = idle_ticks.tick() => {
                        gateway.live().proxy.close_idle_connections(tokio::time::Instant::now());
                        let metrics = gateway.observability.metrics();
                        let open = metrics.open_connections();
                        if memory.release_now(open, metrics.accepted_connections()) {
                            drop(blocking.spawn_blocking(release_free_memory));
                        }
                        continue;
                    }
                    changed = reloads.changed() => {
                        if changed.is_ok() {
                            // Dropping the old set stops the old upstreams' checks.
                            health_checks = tokio::task::JoinSet::new();
                            gateway.live().proxy.spawn_health_checks(&mut health_checks);
                        }
                        continue;
                    }
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

    /// The configuration the gateway started with (see [`Gateway::live`]
    /// for the part a reload changes).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current routes, upstreams and limits. A request loads this once
    /// and keeps it to its end, whatever reloads happen meanwhile.
    pub fn live(&self) -> LiveHold {
        self.live.mine().load_full()
    }

    /// Makes `live` the configuration of every request from now on, and
    /// applies its throttle settings. Requests already running keep theirs.
    pub fn install(&self, mut live: Live) {
        live.proxy
            .count_tunnels_in(self.observability.metrics().tunnels());
        let live = Arc::new(live);
        // Under the watch's lock, so two reloads at once cannot leave the
        // workers, or the workers and the account throttle, with different
        // configurations.
        self.reloads.send_modify(|generation| {
            self.accounts.reconfigure(&live.config);
            for cell in self.live.iter() {
                cell.store(Arc::new(Arc::clone(&live)));
            }
            *generation += 1;
        });
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

    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.revocations
    }

    pub fn api_keys(&self) -> &Arc<ApiKeyIndex> {
        &self.api_keys
    }

    /// Writes API keys' `last_used_at` off the request path, until `stop`.
    fn spawn_key_touches(&self, tasks: &Tasks, stop: StopSignal) {
        let Some(mut touches) = self.api_keys.take_touches() else {
            return;
        };
        let store = Arc::clone(self.accounts.store());
        tasks.spawn(async move {
            let stopped = stop.fired();
            tokio::pin!(stopped);
            loop {
                let (id, at) = tokio::select! {
                    biased;
                    () = &mut stopped => return,
                    touch = touches.recv() => match touch {
                        Some(touch) => touch,
                        None => return,
                    },
                };
                if let Err(err) = store.touch_api_key(&id, at).await {
                    tracing::warn!(key = %id, error = %err, "recording an API key's use failed");
                }
            }
        });
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
