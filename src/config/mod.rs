//! The validated configuration every other module reads.
//!
//! `file.rs` is the TOML shape; this module loads it, fills defaults, checks
//! what needs more than one field, and reports every problem as
//! `FILE:LINE:COLUMN: KEY: message` so an operator can go straight to it.

pub mod algorithm;
mod cidr;
mod count;
mod duration;
mod file;
mod observe;
pub mod secret;
mod store;
pub mod upstream;
mod web;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use jsonwebtoken::Algorithm;

use crate::account::Role;

pub use cidr::Cidr;
use count::CountIn;
pub use duration::{ConfigDuration, DurationIn};
use file::{FileConfig, RouteFile};
pub use file::{Registration, RouteAuth};
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
        build(raw, env_database_url, &locator)
    }
}

/// Turns byte spans into `file:line:column: key` errors.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn error(&self, span: Range<usize>, key: Option<&str>, message: String) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = self.text.get(..start).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        let key = match key {
            Some(key) => key.to_owned(),
            None => self.key_on_line(line_start),
        };
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key,
            message,
        }
    }

    /// The key written on the line starting at `line_start`, or the table header.
    fn key_on_line(&self, line_start: usize) -> String {
        let line = self
            .text
            .get(line_start..)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_default()
            .trim();
        match line.split_once('=') {
            Some((key, _)) => key.trim().to_owned(),
            None if line.is_empty() => "(document)".to_owned(),
            None => line.to_owned(),
        }
    }
}

fn build(
    raw: FileConfig,
    env_database_url: Option<String>,
    at: &Locator,
) -> Result<Config, ConfigError> {
    let server = build_server(raw.server, at)?;
    let tokens = build_tokens(raw.tokens, at)?;
    let auth = build_auth(raw.auth, at)?;
    let admin = observe::build_admin(raw.admin, at)?;
    let log = observe::build_log(raw.log);
    let web = web::build(raw.web, at)?;
    let store = store::build(raw.store, env_database_url, at)?;
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.routes.len());
    for (index, spanned) in raw.routes.into_iter().enumerate() {
        let span = spanned.span();
        let route = build_route(spanned.into_inner(), index, span.clone(), at)?;
        if routes.iter().any(|r| r.name == route.name) {
            return Err(at.error(
                span,
                Some(&format!("route[{index}].name")),
                format!("route name {:?} is used twice", route.name),
            ));
        }
        if route.path_prefix.starts_with(&auth.path_prefix)
            && (route.path_prefix.len() == auth.path_prefix.len()
                || route.path_prefix.as_bytes().get(auth.path_prefix.len()) == Some(&b'/'))
        {
            return Err(at.error(
                span,
                Some(&format!("route[{index}].path_prefix")),
                format!(
                    "{:?} lies under the account endpoints at [auth] path_prefix {:?}",
                    route.path_prefix, auth.path_prefix
                ),
            ));
        }
        if route.identity_assertion && algorithm::is_hmac(tokens.algorithm) {
            return Err(at.error(
                span,
                Some(&format!("route[{index}].identity_assertion")),
                "needs an asymmetric signing key so backends can verify without the secret: \
                 set [tokens] algorithm to \"EdDSA\", \"ES256\" or \"RS256\""
                    .to_owned(),
            ));
        }
        routes.push(route);
    }
    Ok(Config {
        source: at.path.to_owned(),
        server,
        tokens,
        store,
        auth,
        routes,
        admin,
        log,
        web,
    })
}

fn build_server(raw: file::ServerFile, at: &Locator) -> Result<ServerConfig, ConfigError> {
    let listen = raw.listen.get_ref().parse().map_err(|_| {
        at.error(
            raw.listen.span(),
            Some("server.listen"),
            format!(
                "{:?} is not an address with a port, such as \"127.0.0.1:8443\"",
                raw.listen.get_ref()
            ),
        )
    })?;
    let mut trusted_proxies = Vec::with_capacity(raw.trusted_proxies.len());
    for entry in &raw.trusted_proxies {
        let cidr = entry
            .get_ref()
            .parse()
            .map_err(|message| at.error(entry.span(), Some("server.trusted_proxies"), message))?;
        trusted_proxies.push(cidr);
    }
    let identity_header_prefix = match raw.identity_header_prefix {
        None => "x-user-".to_owned(),
        Some(prefix) => {
            let normalized = prefix
                .get_ref()
                .to_ascii_lowercase()
                .replace(['_', '.'], "-");
            if normalized.len() < 3 || http::HeaderName::from_bytes(normalized.as_bytes()).is_err()
            {
                return Err(at.error(
                    prefix.span(),
                    Some("server.identity_header_prefix"),
                    "must be a header-name prefix of at least 3 characters, such as \"x-user-\""
                        .to_owned(),
                ));
            }
            normalized
        }
    };
    Ok(ServerConfig {
        listen,
        tls_cert: raw.tls_cert,
        tls_key: raw.tls_key,
        dev: raw.dev,
        max_connections: count(raw.max_connections, 10_000),
        handshake_timeout: seconds(raw.handshake_timeout, 10),
        header_read_timeout: seconds(raw.header_read_timeout, 10),
        body_read_timeout: seconds(raw.body_read_timeout, 30),
        idle_timeout: seconds(raw.idle_timeout, 60),
        shutdown_grace: seconds(raw.shutdown_grace, 20),
        max_header_bytes: count(raw.max_header_bytes, 32 * 1024),
        max_headers: count(raw.max_headers, 100),
        max_uri_bytes: count(raw.max_uri_bytes, 8 * 1024),
        h2_max_concurrent_streams: count(raw.h2_max_concurrent_streams, 100),
        trusted_proxies,
        identity_header_prefix,
        access_log: raw.access_log.unwrap_or(true),
    })
}

fn build_tokens(raw: file::TokensFile, at: &Locator) -> Result<TokensConfig, ConfigError> {
    let algorithm = match &raw.algorithm {
        None => Algorithm::HS256,
        Some(name) => match algorithm::parse_algorithm(name.get_ref()) {
            Some(algorithm) => algorithm,
            None => {
                return Err(at.error(
                    name.span(),
                    Some("tokens.algorithm"),
                    format!(
                        "unsupported algorithm {:?} (use one of {})",
                        name.get_ref(),
                        algorithm::ALGORITHMS.join(", ")
                    ),
                ))
            }
        },
    };
    Ok(TokensConfig {
        issuer: raw.issuer.unwrap_or_else(|| "authgate".to_owned()),
        audience: raw.audience.unwrap_or_else(|| "authgate".to_owned()),
        algorithm,
        access_ttl: seconds(raw.access_ttl, 15 * 60),
        refresh_ttl: seconds(raw.refresh_ttl, 7 * 86_400),
        session_max_age: seconds(raw.session_max_age, 30 * 86_400),
        refresh_reuse_grace: seconds(raw.refresh_reuse_grace, 5),
        leeway: seconds(raw.leeway, 30),
        secret_file: raw.secret_file,
        keys_dir: raw.keys_dir.unwrap_or_else(|| PathBuf::from("data/keys")),
    })
}

fn build_auth(raw: file::AuthFile, at: &Locator) -> Result<AuthConfig, ConfigError> {
    let path_prefix = match raw.path_prefix {
        None => "/auth".to_owned(),
        Some(prefix) => {
            let trimmed = prefix.get_ref().trim_end_matches('/');
            if trimmed.len() < 2 {
                return Err(at.error(
                    prefix.span(),
                    Some("auth.path_prefix"),
                    "must be an absolute path such as \"/auth\"".to_owned(),
                ));
            }
            // The account endpoints are matched like routes, so spelled like them.
            check_path_prefix(trimmed)
                .map_err(|message| at.error(prefix.span(), Some("auth.path_prefix"), message))?;
            trimmed.to_owned()
        }
    };
    let (default_role, role_span) = match &raw.default_role {
        None => ("viewer", 0..0),
        Some(role) => (role.get_ref().as_str(), role.span()),
    };
    let default_role = Role::parse(default_role)
        .map_err(|err| at.error(role_span, Some("auth.default_role"), err.to_string()))?;
    let p = raw.password;
    let password = PasswordConfig {
        memory_kib: count(p.memory_kib, 19 * 1024),
        iterations: count(p.iterations, 2),
        parallelism: count(p.parallelism, 1),
        hash_workers: p.hash_workers.map_or_else(default_hash_workers, |n| n.0),
        hash_queue: count(p.hash_queue, 64),
    };
    let t = raw.throttle;
    let ipv6_prefix = match t.ipv6_prefix {
        None => 56,
        Some(bits) if (32..=128).contains(bits.get_ref()) => *bits.get_ref(),
        Some(bits) => {
            return Err(at.error(
                bits.span(),
                Some("auth.throttle.ipv6_prefix"),
                format!(
                    "{} is not a prefix length from 32 to 128 (56 groups a household's block)",
                    bits.get_ref()
                ),
            ))
        }
    };
    let throttle = ThrottleConfig {
        account_failures: count(t.account_failures, 5),
        address_failures: count(t.address_failures, 50),
        window: seconds(t.window, 600),
        base_lockout: seconds(t.base_lockout, 60),
        max_lockout: seconds(t.max_lockout, 3_600),
        registrations_per_hour: count(t.registrations_per_hour, 60),
        max_entries: count(t.max_entries, 100_000),
        ipv6_prefix,
    };
    Ok(AuthConfig {
        path_prefix,
        registration: raw.registration.unwrap_or(Registration::Open),
        default_role,
        max_body: count(raw.max_body, 16 * 1024),
        max_sessions_per_user: count(raw.max_sessions_per_user, 32),
        refresh_per_session_per_minute: count(raw.refresh_per_session_per_minute, 10),
        refresh_per_address_per_minute: count(raw.refresh_per_address_per_minute, 300),
        password,
        throttle,
    })
}

/// A bounded duration from the file, or `default` seconds.
fn seconds<const MIN_MS: u64, const MAX_MS: u64>(
    value: Option<DurationIn<MIN_MS, MAX_MS>>,
    default: u64,
) -> Duration {
    value.map_or(Duration::from_secs(default), |d| d.0)
}

/// A bounded count from the file, or `default`.
fn count<T, const MIN: u64, const MAX: u64>(value: Option<CountIn<T, MIN, MAX>>, default: T) -> T {
    value.map_or(default, |n| n.0)
}

/// One argon2 thread per core but one, so hashing never takes every core from proxying.
fn default_hash_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

fn build_route(
    raw: RouteFile,
    index: usize,
    span: Range<usize>,
    at: &Locator,
) -> Result<RouteConfig, ConfigError> {
    let key = |field: &str| format!("route[{index}].{field}");
    let fail = |field: &str, message: String| at.error(span.clone(), Some(&key(field)), message);
    if raw.name.trim().is_empty() {
        return Err(fail("name", "must not be empty".to_owned()));
    }
    let upstream = upstream::build(&raw).map_err(|(field, message)| fail(field, message))?;
    let prefix_span = raw.path_prefix.span();
    let path_prefix = raw.path_prefix.into_inner();
    check_path_prefix(&path_prefix)
        .map_err(|message| at.error(prefix_span, Some(&key("path_prefix")), message))?;
    let host = match raw.host {
        None => None,
        Some(host) => {
            let normalized = normalize_host(&host);
            if normalized.is_empty() || normalized.parse::<Authority>().is_err() {
                return Err(fail("host", format!("{host:?} is not a host name")));
            }
            Some(normalized)
        }
    };
    if raw.api_keys && raw.auth == RouteAuth::Public {
        return Err(fail(
            "api_keys",
            "a public route checks no credential; set auth = \"required\"".to_owned(),
        ));
    }
    if raw.identity_assertion && raw.auth == RouteAuth::Public {
        return Err(fail(
            "identity_assertion",
            "a public route has no identity to assert; set auth = \"required\"".to_owned(),
        ));
    }
    if raw.browser && raw.auth == RouteAuth::Public {
        return Err(fail(
            "browser",
            "a public route takes no credentials; set auth = \"required\" or remove `browser`"
                .to_owned(),
        ));
    }
    if let Some(roles) = &raw.roles {
        if raw.auth == RouteAuth::Public {
            return Err(fail(
                "roles",
                "a public route cannot require roles; remove `roles` or set auth = \"required\""
                    .to_owned(),
            ));
        }
        if roles.is_empty() {
            return Err(fail(
                "roles",
                "an empty list would refuse everyone; remove the key to allow any user".to_owned(),
            ));
        }
    }
    let roles = raw
        .roles
        .map(|roles| {
            roles
                .iter()
                .map(|role| {
                    Role::parse(role).map_err(|err| fail("roles", format!("{role:?}: {err}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(RouteConfig {
        index,
        name: raw.name,
        path_prefix,
        host,
        upstream,
        auth: raw.auth,
        roles,
        strip_prefix: raw.strip_prefix,
        timeout: seconds(raw.timeout, 30),
        forward_authorization: raw.forward_authorization,
        max_body: raw.max_body,
        websocket: raw.websocket,
        close_on_expiry: raw.close_on_expiry,
        identity_assertion: raw.identity_assertion,
        api_keys: raw.api_keys,
        browser: raw.browser,
    })
}

/// A route prefix must be spelled exactly as [`crate::path::decide`] spells
/// the paths it is matched against, or two spellings of one path could route
/// differently. Decided paths keep reserved characters (RFC 3986 §2.2) as
/// the client sent them, raw or percent-encoded, while backends decode both
/// to the same byte: a prefix `/team:admin/` would miss `/team%3Aadmin/`,
/// which would fall through to a broader route. So a prefix holds only
/// unreserved characters (RFC 3986 §2.3, which the decision always decodes)
/// and `/`, and must already be in decided form (no `//`, `.` or `..`
/// segments); anything else is refused rather than matched by a second
/// decoder whose rules would have to agree with every backend's.
fn check_path_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!(
            "{prefix:?} must be an absolute path such as \"/api/\""
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|&c| !(c == '/' || c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
    {
        return Err(if ":?#[]@!$&'()*+,;=".contains(c) {
            format!(
                "{prefix:?} holds {c:?}, a reserved character (RFC 3986 §2.2): a client \
                 may send it percent-encoded, which the backend decodes but the prefix \
                 would not match; put the route on the parent path instead"
            )
        } else {
            format!(
                "{prefix:?} holds {c:?}, which no request path matches as written; use \
                 only letters, digits, '-', '.', '_', '~' and '/'"
            )
        });
    }
    match crate::path::decide(prefix) {
        Ok(decided) if decided.as_str() == prefix => Ok(()),
        _ => Err(format!(
            "{prefix:?} can never match: request paths have no empty, '.' or '..' segments"
        )),
    }
}

/// Host names compare case-insensitively and without a trailing dot (RFC 9110 §4.2.3).
pub fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
