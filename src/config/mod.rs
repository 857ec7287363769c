//! The validated configuration every other module reads.
//!
//! `file.rs` is the TOML shape; this module loads it and holds what the rest
//! of the gateway sees. `build.rs` fills defaults and checks what needs more
//! than one field, `route.rs` checks each route, and `locate.rs` reports
//! every problem as `FILE:LINE:COLUMN: KEY: message`.

pub(crate) mod algorithm;
mod build;
mod cidr;
mod count;
mod duration;
mod file;
mod locate;
mod observe;
mod route;
pub mod secret;
mod store;
pub(crate) mod upstream;
mod web;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::account::Role;

pub use cidr::Cidr;
pub use duration::{ConfigDuration, DurationIn};
use file::FileConfig;
pub use file::{HashPriority, Registration, RouteAuth};
use locate::Locator;
pub use observe::{AdminConfig, LogConfig, LogFormat};
pub use store::{
    BackendKind, DatabaseUrl, PostgresConfig, StoreBackend, StoreConfig, DATABASE_URL_ENV,
};
pub use upstream::{Balance, Upstream, UpstreamProtocol, UpstreamSet};
pub use web::WebConfig;

/// The whole gateway configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; named in later errors (certificates, secrets).
    pub source: PathBuf,
    pub server: ServerConfig,
    pub tokens: TokensConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    /// Routes in the order they were written; the router orders them for matching.
    pub routes: Vec<RouteConfig>,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// The browser sign-in pages and session (`[web]`).
    pub web: WebConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Development conveniences: generated certificate and secret when missing.
    pub dev: bool,
    /// Connections beyond this are closed at accept, before the TLS handshake.
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// A client must finish sending request headers within this time
    /// (slowloris); on HTTP/2, the preface and the first request.
    pub header_read_timeout: Duration,
    /// Longest pause allowed between two pieces of a request body.
    pub body_read_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed
    /// with GOAWAY; half of it is the HTTP/2 keep-alive PING interval.
    pub idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    /// Peers whose X-Forwarded-* headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Lower-case prefix of the identity headers the gateway owns (`x-user-`).
    pub identity_header_prefix: String,
    pub access_log: bool,
    /// Threads that serve connections, each with tokio's current-thread
    /// scheduler and its own listener on the shared port (`server::workers`):
    /// no work-stealing machinery and no hop between threads.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct TokensConfig {
    pub issuer: String,
    pub audience: String,
    pub algorithm: Algorithm,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_max_age: Duration,
    pub refresh_reuse_grace: Duration,
    pub leeway: Duration,
    pub secret_file: Option<PathBuf>,
    /// One file per key id plus `keys.json`; used unless the HMAC shortcut
    /// (`AUTHGATE_ACCESS_SECRET` or `secret_file`) is set.
    pub keys_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Where the account endpoints live, without a trailing slash (`/auth`).
    pub path_prefix: String,
    pub registration: Registration,
    pub default_role: Role,
    /// Largest request body the account endpoints read.
    pub max_body: usize,
    /// Sessions (refresh families) one user may hold; a login past it ends
    /// the oldest, revoked ones first.
    pub max_sessions_per_user: usize,
    /// Rotations one session may make per minute (429 past it).
    pub refresh_per_session_per_minute: u32,
    /// Refresh requests one client address may make per minute.
    pub refresh_per_address_per_minute: u32,
    pub password: PasswordConfig,
    pub throttle: ThrottleConfig,
}

#[derive(Debug, Clone)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Threads that run argon2, away from the async workers.
    pub hash_workers: usize,
    /// Hash jobs allowed to wait; more are answered 503 at once.
    pub hash_queue: usize,
    /// The scheduling class of those threads.
    pub hash_priority: HashPriority,
}

#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    pub account_failures: u32,
    pub address_failures: u32,
    pub window: Duration,
    pub base_lockout: Duration,
    pub max_lockout: Duration,
    pub registrations_per_hour: u32,
    pub max_entries: usize,
    /// Leading bits of an IPv6 address that make one throttle key.
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Position in the file: finds per-route state (metrics) without a lookup.
    pub index: usize,
    pub name: String,
    /// Always starts with `/`.
    pub path_prefix: String,
    /// Lower-case, without a trailing dot; `None` matches any host.
    pub host: Option<String>,
    pub upstream: Upstream,
    pub auth: RouteAuth,
    /// `None`: any authenticated user.
    pub roles: Option<Vec<Role>>,
    pub strip_prefix: bool,
    pub timeout: Duration,
    pub forward_authorization: bool,
    pub max_body: Option<u64>,
    pub websocket: bool,
    /// Live tunnels and streams also end when the access token that opened
    /// them expires (they always end when its session is revoked).
    pub close_on_expiry: bool,
    /// Send the backend a signed identity assertion (`<prefix>assertion`).
    pub identity_assertion: bool,
    /// Accept API keys (`Authorization: Bearer agk_…`) besides access tokens.
    pub api_keys: bool,
    /// The browser session cookie is a credential here, and navigations
    /// without one are sent to the sign-in page.
    pub browser: bool,
}

/// A configuration problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

pub const DEFAULT_CONFIG_PATH: &str = "config/authgate.toml";

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates config text; `path` is only used to name the file in errors.
    /// The database URL in `AUTHGATE_DATABASE_URL`, when set, replaces
    /// `[store] url`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let env_url = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|v| !v.is_empty());
        Self::parse_with_database_url(path, text, env_url)
    }

    /// [`Config::parse`] with the environment's database URL given.
    pub fn parse_with_database_url(
        path: &Path,
        text: &str,
        env_database_url: Option<String>,
    ) -> Result<Self, ConfigError> {
        let locator = Locator { path, text };
        let raw: FileConfig = toml::from_str(text).map_err(|err| {
            let span = err.span().unwrap_or(0..0);
            locator.error(span, None, err.message().trim_end().to_owned())
        })?;
        build::build(raw, env_database_url, &locator)
    }
}

/// Host names compare case-insensitively and without a trailing dot (RFC 9110 §4.2.3).
/// Borrowed when the name is already in that form (as clients send it).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let bare = host.trim().trim_end_matches('.');
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(bare.to_ascii_lowercase())
    } else {
        Cow::Borrowed(bare)
    }
}

#[cfg(test)]
mod tests;
