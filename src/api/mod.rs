//! The account endpoints under `[auth] path_prefix`: routing within the
//! prefix, body reading, and the bearer/admin checks. Each endpoint group
//! lives in its own file; the session logic they call is `auth::sessions`.

mod account;
mod admin;
mod api_keys;
mod audit_events;
mod browser;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod views;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::account::Role;
use crate::audit::Audit;
use crate::auth::api_keys::ApiKeyIndex;
use crate::auth::jwt::TokenIssuer;
use crate::auth::password::{PasswordError, PasswordPool};
use crate::auth::revocation::RevocationList;
use crate::auth::sessions::{RefreshLimits, SessionPolicy, Sessions};
use crate::auth::throttle::Throttle;
use crate::auth::Authenticator;
use crate::body::ResponseBody;
use crate::config::{Config, Registration};
use crate::error::GatewayError;
use crate::observe::metrics::AccountAction;
use crate::store::Store;
use crate::timestamp::unix_seconds;

/// Settings the endpoints read on every request.
pub(crate) struct AccountSettings {
    pub path_prefix: String,
    pub registration: Registration,
    pub default_role: Role,
    pub max_body: usize,
    pub body_timeout: Duration,
    /// The account lockout, applied through the store when instances
    /// share it.
    pub lockout: crate::store::LockoutPolicy,
}

/// The account service: store, password pool, login throttle, sessions,
/// revocation state.
pub struct Accounts {
    settings: AccountSettings,
    store: Arc<dyn Store>,
    passwords: PasswordPool,
    /// Failure counters consulted by login and register before any argon2 work.
    throttle: Throttle,
    sessions: Sessions,
    revocations: Arc<RevocationList>,
    /// The longest lifetime a live access token can have, this run's or an
    /// earlier one's: what `auth::sessions::load_revocations` returned.
    revocation_window: Duration,
    /// Security events, each durable before its answer is sent.
    audit: Arc<Audit>,
    /// The live API keys, changed here by creation, revocation and the
    /// owner's role change or deletion.
    api_keys: Arc<ApiKeyIndex>,
}

/// What the access log should say about an account request.
#[derive(Default)]
pub struct AccountOutcome {
    pub user: Option<String>,
    /// Which endpoint it was, for the outcome metrics.
    pub action: Option<AccountAction>,
}

impl Accounts {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        passwords: PasswordPool,
        issuer: Arc<TokenIssuer>,
        revocations: Arc<RevocationList>,
        revocation_window: Duration,
    ) -> Self {
        let tokens = &config.tokens;
        let policy = SessionPolicy {
            refresh_ttl: tokens.refresh_ttl,
            session_max_age: tokens.session_max_age,
            reuse_grace: tokens.refresh_reuse_grace,
            // Not this run's ttl: a session revoked now may hold access
            // tokens an earlier run minted with a longer one.
            access_lifetime: revocation_window.max(tokens.access_ttl + tokens.leeway),
            max_sessions_per_user: config.auth.max_sessions_per_user,
        };
        let limits = RefreshLimits::new(
            config.auth.refresh_per_session_per_minute,
            config.auth.refresh_per_address_per_minute,
            config.auth.throttle.max_entries,
            config.auth.throttle.ipv6_prefix,
        );
        Self {
            settings: AccountSettings {
                path_prefix: config.auth.path_prefix.clone(),
                registration: config.auth.registration,
                default_role: config.auth.default_role.clone(),
                max_body: config.auth.max_body,
                body_timeout: config.server.body_read_timeout,
                lockout: crate::store::LockoutPolicy {
                    failures: config.auth.throttle.account_failures,
                    window: config.auth.throttle.window.as_secs(),
                    base: config.auth.throttle.base_lockout.as_secs(),
                    max: config.auth.throttle.max_lockout.as_secs(),
                },
            },
            sessions: Sessions::new(
                Arc::clone(&store),
                issuer,
                Arc::clone(&revocations),
                policy,
                limits,
            ),
            store,
            passwords,
            throttle: Throttle::new(&config.auth.throttle),
            revocations,
            revocation_window,
            audit: Arc::new(Audit::disabled()),
            api_keys: Arc::new(ApiKeyIndex::new(config.auth.default_role.clone())),
        }
    }

    /// Applies a reloaded configuration's throttle limits; the counters
    /// already kept stay.
    pub fn reconfigure(&self, config: &Config) {
        self.throttle.reconfigure(&config.auth.throttle);
    }

    /// Sends the security events of these endpoints to `audit`.
    pub fn with_audit(mut self, audit: Arc<Audit>) -> Self {
        self.audit = audit;
        self
    }

    /// Keeps `index` current with the keys these endpoints change.
    pub fn with_api_keys(mut self, index: Arc<ApiKeyIndex>) -> Self {
        self.api_keys = index;
        self
    }

    /// The login throttle, whose per-address counters API keys share.
    pub(crate) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Password-hashing jobs waiting or running, for the metrics.
    pub fn password_queue_depth(&self) -> usize {
        self.passwords.queue_depth()
    }

    /// How long a revocation must last: the longest lifetime a live access
    /// token can have (see [`crate::auth::sessions::load_revocations`]).
    pub fn revocation_window(&self) -> Duration {
        self.revocation_window
    }

    /// Periodic cleanup: expired refresh records, stale revocations,
    /// rotations past their grace, and throttle entries that decide nothing.
    pub async fn sweep(&self, access_lifetime: Duration, now: SystemTime) {
        let now_secs = unix_seconds(now);
        match self.store.sweep_expired(now_secs).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "swept expired sessions"),
            Err(err) => tracing::error!(error = %err, "sweeping expired sessions failed"),
        }
        if let Err(err) = self
            .store
            .prune_revocations(now_secs.saturating_sub(access_lifetime.as_secs()))
            .await
        {
            tracing::error!(error = %err, "pruning old revocations failed");
        }
        self.revocations.prune(now_secs);
        self.sessions.prune();
        self.throttle.prune(Instant::now());
    }

    /// Serves one request under the prefix; `sub_path` is what follows it.
    /// `peer` is the client address: the socket peer, or the forwarded client
    /// when the peer is a trusted proxy (`proxy::client_addr`). Login and
    /// registration are throttled by it.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        sub_path: &str,
        peer: IpAddr,
        authenticator: &Authenticator,
        now: SystemTime,
        outcome: &mut AccountOutcome,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (parts, body) = request.into_parts();
        let method = parts.method.clone();
        let endpoint = Endpoint::parse(&method, sub_path)?;
        outcome.action = Some(endpoint.action());
        // Bearer-authenticated endpoints check the token before reading a body.
        let identity = if endpoint.needs_bearer() {
            // Only an access token manages accounts and keys: a key (made
            // for one script) cannot mint more keys or act as an admin.
            if crate::auth::bearer::token(&parts.headers)
                .is_ok_and(|token| crate::auth::api_keys::key::is_api_key(token.as_bytes()))
            {
                return Err(GatewayError::ApiKeyNotAccepted);
            }
            let identity = authenticator.authenticate(&parts.headers, now)?;
            outcome.user = Some(identity.user_id.to_string());
            if endpoint.needs_admin() && identity.role.as_str() != "admin" {
                return Err(GatewayError::Forbidden);
            }
            Some(identity)
        } else {
            None
        };
        let body = if endpoint.reads_body() {
            request::read_body(
                &parts.headers,
                body,
                self.settings.max_body,
                self.settings.body_timeout,
            )
            .await?
        } else {
            bytes::Bytes::new()
        };
        let headers = &parts.headers;
        let identity = identity.as_ref();
        match (endpoint, identity) {
            (Endpoint::Register, _) => self.register(headers, &body, peer).await,
            (Endpoint::Login, _) => {
                let (response, user) = self.login(headers, &body, peer).await?;
                outcome.user = Some(user);
                Ok(response)
            }
            (Endpoint::Refresh, _) => self.refresh(headers, &body, peer).await,
            (Endpoint::Logout, _) => self.logout(headers, &body).await,
            (Endpoint::LogoutAll, Some(id)) => self.logout_all(id).await,
            (Endpoint::Me, Some(id)) => self.me(id).await,
            (Endpoint::Password, Some(id)) => self.change_password(id, headers, &body, peer).await,
            (Endpoint::ListUsers, Some(id)) => self.list_users(id, parts.uri.query()).await,
            (Endpoint::ShowUser(user), Some(id)) => self.show_user(id, user).await,
            (Endpoint::ChangeRole(user), Some(id)) => {
                self.change_role(id, user, headers, &body).await
            }
            (Endpoint::DeleteUser(user), Some(id)) => self.delete_user(id, user).await,
            (Endpoint::CreateApiKey, Some(id)) => self.create_api_key(id, headers, &body).await,
            (Endpoint::ListApiKeys, Some(id)) => self.list_api_keys(id, parts.uri.query()).await,
            (Endpoint::RevokeApiKey(key), Some(id)) => self.revoke_api_key(id, key).await,
            (_, None) => Err(GatewayError::MissingToken),
        }
    }

    async fn flush(&self) -> Result<(), GatewayError> {
        self.store.flush().await.map_err(GatewayError::internal)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// The endpoints, recognised from method and path below the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    Register,
    Login,
    Refresh,
    Logout,
    LogoutAll,
    Me,
    Password,
    ListUsers,
    ShowUser(&'a str),
    ChangeRole(&'a str),
    DeleteUser(&'a str),
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey(&'a str),
}

impl<'a> Endpoint<'a> {
    fn parse(method: &Method, sub_path: &'a str) -> Result<Self, GatewayError> {
        let path = sub_path.trim_end_matches('/');
        let post_only = |endpoint| {
            if method == Method::POST {
                Ok(endpoint)
            } else {
                Err(GatewayError::MethodNotAllowed)
            }
        };
        match path {
            "/register" => post_only(Self::Register),
            "/login" => post_only(Self::Login),
            "/refresh" => post_only(Self::Refresh),
            "/logout" => post_only(Self::Logout),
            "/logout-all" => post_only(Self::LogoutAll),
            "/password" => post_only(Self::Password),
            "/me" if method == Method::GET => Ok(Self::Me),
            "/me" => Err(GatewayError::MethodNotAllowed),
            "/users" if method == Method::GET => Ok(Self::ListUsers),
            "/users" => Err(GatewayError::MethodNotAllowed),
            "/api-keys" if method == Method::POST => Ok(Self::CreateApiKey),
            "/api-keys" if method == Method::GET => Ok(Self::ListApiKeys),
            "/api-keys" => Err(GatewayError::MethodNotAllowed),
            _ if path.starts_with("/api-keys/") => {
                let id = path
                    .strip_prefix("/api-keys/")
                    .filter(|id| !id.contains('/') && !id.is_empty())
                    .ok_or(GatewayError::NotFound)?;
                if method == Method::DELETE {
                    Ok(Self::RevokeApiKey(id))
                } else {
                    Err(GatewayError::MethodNotAllowed)
                }
            }
            _ => {
                let Some(id) = path
                    .strip_prefix("/users/")
                    .filter(|id| !id.contains('/') && !id.is_empty())
                else {
                    return Err(GatewayError::NotFound);
                };
                match *method {
                    Method::GET => Ok(Self::ShowUser(id)),
                    Method::PATCH => Ok(Self::ChangeRole(id)),
                    Method::DELETE => Ok(Self::DeleteUser(id)),
                    _ => Err(GatewayError::MethodNotAllowed),
                }
            }
        }
    }

    fn action(self) -> AccountAction {
        match self {
            Self::Register => AccountAction::Register,
            Self::Login => AccountAction::Login,
            Self::Refresh => AccountAction::Refresh,
            Self::Password => AccountAction::Password,
            _ => AccountAction::Other,
        }
    }

    fn needs_bearer(self) -> bool {
        !matches!(
            self,
            Self::Register | Self::Login | Self::Refresh | Self::Logout
        )
    }

    fn needs_admin(self) -> bool {
        matches!(
            self,
            Self::ListUsers | Self::ShowUser(_) | Self::ChangeRole(_) | Self::DeleteUser(_)
        )
    }

    fn reads_body(self) -> bool {
        matches!(
            self,
            Self::Register
                | Self::Login
                | Self::Refresh
                | Self::Logout
                | Self::Password
                | Self::ChangeRole(_)
                | Self::CreateApiKey
        )
    }
}

/// A full argon2 queue is "come back shortly", never an error of ours.
fn password_error(err: PasswordError) -> GatewayError {
    match err {
        PasswordError::Busy => GatewayError::Busy {
            retry_after: Duration::from_secs(1),
        },
        other => GatewayError::internal(other),
    }
}
