//! The raw shape of `authgate.toml`, exactly as serde reads it.
//!
//! Every table denies unknown keys, and values that can be checked alone are
//! checked here (durations, enums) so the TOML parser reports them with file,
//! line and key. `mod.rs` turns this into the validated [`super::Config`].

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::duration::ConfigDuration;
use super::store::StoreFile;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerFile,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Spanned<String>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    #[serde(default)]
    pub dev: bool,
    pub max_connections: Option<usize>,
    pub handshake_timeout: Option<ConfigDuration>,
    pub header_read_timeout: Option<ConfigDuration>,
    pub body_read_timeout: Option<ConfigDuration>,
    pub idle_timeout: Option<ConfigDuration>,
    pub shutdown_grace: Option<ConfigDuration>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_uri_bytes: Option<usize>,
    pub h2_max_concurrent_streams: Option<u32>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub identity_header_prefix: Option<Spanned<String>>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithm: Option<Spanned<String>>,
    pub access_ttl: Option<ConfigDuration>,
    pub refresh_ttl: Option<ConfigDuration>,
    pub session_max_age: Option<ConfigDuration>,
    pub refresh_reuse_grace: Option<ConfigDuration>,
    pub leeway: Option<ConfigDuration>,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub path_prefix: Option<Spanned<String>>,
    pub registration: Option<Registration>,
    pub default_role: Option<Spanned<String>>,
    pub max_body: Option<usize>,
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
pub struct PasswordFile {
    pub memory_kib: Option<u32>,
    pub iterations: Option<u32>,
    pub parallelism: Option<u32>,
    pub hash_workers: Option<usize>,
    pub hash_queue: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleFile {
    pub account_failures: Option<u32>,
    pub address_failures: Option<u32>,
    pub window: Option<ConfigDuration>,
    pub base_lockout: Option<ConfigDuration>,
    pub max_lockout: Option<ConfigDuration>,
    pub registrations_per_hour: Option<u32>,
    pub max_entries: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    pub path_prefix: String,
    pub host: Option<String>,
    pub upstream: String,
    #[serde(default)]
    pub auth: RouteAuth,
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub forward_authorization: bool,
    pub max_body: Option<u64>,
    #[serde(default)]
    pub websocket: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    #[default]
    Required,
    Public,
}
