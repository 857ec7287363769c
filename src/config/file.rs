//! The raw shape of `authgate.toml`, exactly as serde reads it.
//!
//! Every table denies unknown keys, and values that can be checked alone are
//! checked here (durations, counts and their ranges, enums) so the TOML
//! parser reports them with file, line and key. `mod.rs` turns this into the
//! validated [`super::Config`].

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::count::CountIn;
use super::duration::DurationIn;
use super::store::StoreFile;

// The ranges every duration and count is held to. Nothing here is a
// recommendation: they keep typos ("15d" for "15m") and overflowing values
// from reaching arithmetic on deadlines, semaphores and allocations.
const SECOND: u64 = 1_000;
const HOUR: u64 = 3_600 * SECOND;
const DAY: u64 = 24 * HOUR;
const TEN_YEARS: u64 = 3_650 * DAY;

/// Network waits: more than zero, at most a day.
type Timeout = DurationIn<1, DAY>;
/// A wait that may be zero: at most a day.
type Grace = DurationIn<0, DAY>;
/// Clock-skew and reuse tolerances: zero to an hour.
type Tolerance = DurationIn<0, HOUR>;
/// Access tokens cannot be recalled one by one: a second to a day.
type AccessLifetime = DurationIn<SECOND, DAY>;
/// Sessions and throttle spans: a second to ten years.
type Lifetime = DurationIn<SECOND, TEN_YEARS>;
/// Sizes in bytes of request heads, URIs and account bodies: up to 1 MiB.
type Bytes<const MIN: u64> = CountIn<usize, MIN, { 1024 * 1024 }>;
/// Failure and request counts of the throttle (below 1 is read as 1).
type Attempts = CountIn<u32, 0, 1_000_000_000>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub server: ServerFile,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteFile>>,
    #[serde(default)]
    pub admin: super::observe::AdminFile,
    #[serde(default)]
    pub log: super::observe::LogFile,
    #[serde(default)]
    pub web: super::web::WebFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    pub listen: Spanned<String>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    #[serde(default)]
    pub dev: bool,
    pub max_connections: Option<CountIn<usize, 1, 1_000_000>>,
    pub handshake_timeout: Option<Timeout>,
    pub header_read_timeout: Option<Timeout>,
    pub body_read_timeout: Option<Timeout>,
    pub idle_timeout: Option<Timeout>,
    pub shutdown_grace: Option<Grace>,
    pub max_header_bytes: Option<Bytes<1024>>,
    pub max_headers: Option<CountIn<usize, 1, 10_000>>,
    pub max_uri_bytes: Option<Bytes<16>>,
    pub h2_max_concurrent_streams: Option<CountIn<u32, 1, 10_000>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub identity_header_prefix: Option<Spanned<String>>,
    pub access_log: Option<bool>,
    pub workers: Option<CountIn<usize, 1, 1_024>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokensFile {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithm: Option<Spanned<String>>,
    pub access_ttl: Option<AccessLifetime>,
    pub refresh_ttl: Option<Lifetime>,
    pub session_max_age: Option<Lifetime>,
    pub refresh_reuse_grace: Option<Tolerance>,
    pub leeway: Option<Tolerance>,
    pub secret_file: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthFile {
    pub path_prefix: Option<Spanned<String>>,
    pub registration: Option<Registration>,
    pub default_role: Option<Spanned<String>>,
    pub max_body: Option<Bytes<64>>,
    pub max_sessions_per_user: Option<CountIn<usize, 1, 1_000_000>>,
    pub refresh_per_session_per_minute: Option<CountIn<u32, 1, 1_000_000>>,
    pub refresh_per_address_per_minute: Option<CountIn<u32, 1, 1_000_000>>,
    #[serde(default)]
    pub password: PasswordFile,
    #[serde(default)]
    pub throttle: ThrottleFile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    Closed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordFile {
    pub memory_kib: Option<CountIn<u32, 8, { 4 * 1024 * 1024 }>>,
    pub iterations: Option<CountIn<u32, 1, 1_000>>,
    pub parallelism: Option<CountIn<u32, 1, 255>>,
    pub hash_workers: Option<CountIn<usize, 1, 1_024>>,
    pub hash_queue: Option<CountIn<usize, 0, 1_000_000>>,
    pub hash_priority: Option<HashPriority>,
}

/// How the argon2 threads compete with the request workers for a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashPriority {
    /// The idle scheduling class (`SCHED_IDLE`): a hash runs on CPU time
    /// nothing else wants, and a woken request worker takes the core from
    /// it at once. Under a login flood proxied latency holds; when every
    /// core is busy proxying, logins wait (and the queue answers 503 when
    /// full).
    Idle,
    /// A background batch job (`SCHED_BATCH`, nice 9): hashing keeps a
    /// share of a busy core, but a hash that has the core keeps it until
    /// the next scheduler tick (4 ms at `CONFIG_HZ=250`) while a woken
    /// worker waits.
    Low,
    /// The same as every other thread of the process.
    Normal,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ThrottleFile {
    pub account_failures: Option<Attempts>,
    pub address_failures: Option<Attempts>,
    pub window: Option<Lifetime>,
    pub base_lockout: Option<Lifetime>,
    pub max_lockout: Option<Lifetime>,
    pub registrations_per_hour: Option<Attempts>,
    pub max_entries: Option<CountIn<usize, 1, 10_000_000>>,
    pub ipv6_prefix: Option<Spanned<u8>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    pub name: String,
    pub path_prefix: Spanned<String>,
    pub host: Option<String>,
    /// One target (or `builtin:echo`); exclusive with `upstreams`.
    pub upstream: Option<Spanned<String>>,
    /// Several targets balanced per request.
    pub upstreams: Option<Spanned<Vec<Spanned<String>>>>,
    pub balance: Option<Balance>,
    pub health_check: Option<Spanned<HealthCheckFile>>,
    pub upstream_ca: Option<PathBuf>,
    pub upstream_client_cert: Option<PathBuf>,
    pub upstream_client_key: Option<PathBuf>,
    pub upstream_protocol: Option<UpstreamProtocol>,
    pub max_upstream_connections: Option<Spanned<usize>>,
    #[serde(default)]
    pub auth: RouteAuth,
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub timeout: Option<Timeout>,
    #[serde(default)]
    pub forward_authorization: bool,
    pub max_body: Option<u64>,
    #[serde(default)]
    pub websocket: bool,
    #[serde(default)]
    pub close_on_expiry: bool,
    #[serde(default)]
    pub identity_assertion: bool,
    #[serde(default)]
    pub api_keys: bool,
    /// Accept the browser session cookie; send navigations to sign in.
    #[serde(default)]
    pub browser: bool,
}

/// How a route picks one of its targets for each request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequests,
}

/// The HTTP version spoken to a route's targets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpstreamProtocol {
    #[default]
    #[serde(rename = "h1")]
    Http1,
    /// ALPN `h2` over https, prior knowledge over http.
    #[serde(rename = "h2")]
    Http2,
}

/// `health_check = { path = "/healthz", interval = "5s", timeout = "2s" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckFile {
    pub path: String,
    pub interval: Option<Timeout>,
    pub timeout: Option<Timeout>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    #[default]
    Required,
    Public,
}
