//! Builds the validated [`Config`] from the file's shape: each section's
//! defaults filled in, and the checks that span more than one field.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::count::CountIn;
use super::duration::DurationIn;
use super::file::{self, FileConfig};
use super::locate::Locator;
use super::route::{build_route, check_path_prefix};
use super::{
    algorithm, observe, store, AuthConfig, Config, ConfigError, HashPriority, PasswordConfig,
    Registration, RouteConfig, ServerConfig, ThrottleConfig, TokensConfig,
};
use crate::account::Role;

pub(super) fn build(
    raw: FileConfig,
    env_database_url: Option<String>,
    at: &Locator,
) -> Result<Config, ConfigError> {
    let server = build_server(raw.server, at)?;
    let tokens = build_tokens(raw.tokens, at)?;
    let auth = build_auth(raw.auth, at)?;
    let admin = observe::build_admin(raw.admin, at)?;
    let log = observe::build_log(raw.log);
    let web = super::web::build(raw.web, at)?;
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
        workers: raw.workers.map_or_else(default_workers, |n| n.0),
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
        hash_priority: p.hash_priority.unwrap_or(HashPriority::Idle),
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
pub(super) fn seconds<const MIN_MS: u64, const MAX_MS: u64>(
    value: Option<DurationIn<MIN_MS, MAX_MS>>,
    default: u64,
) -> Duration {
    value.map_or(Duration::from_secs(default), |d| d.0)
}

/// A bounded count from the file, or `default`.
fn count<T, const MIN: u64, const MAX: u64>(value: Option<CountIn<T, MIN, MAX>>, default: T) -> T {
    value.map_or(default, |n| n.0)
}

/// One serving thread per core the process may run on (`taskset` and
/// cgroup CPU sets included).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One argon2 thread per core but one, so hashing never takes every core from proxying.
fn default_hash_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}
