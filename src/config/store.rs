//! The `[store]` table: which backend holds users and sessions, validated
//! into [`StoreConfig`]. The PostgreSQL URL is kept as a [`DatabaseUrl`],
//! whose `Display` and `Debug` never show the password.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::ConfigDuration;
use super::locate::Locator;
use super::ConfigError;

/// The environment variable that, when set, replaces `[store] url` so the
/// database password never has to sit in the file.
pub const DATABASE_URL_ENV: &str = "AUTHGATE_DATABASE_URL";

const DEFAULT_SLED_PATH: &str = "data/authgate.sled";
const DEFAULT_MAX_CONNECTIONS: usize = 16;
const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(30);

/// The raw `[store]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreFile {
    pub backend: Option<Spanned<BackendKind>>,
    /// sled only.
    pub path: Option<Spanned<PathBuf>>,
    /// postgres only.
    pub url: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<usize>>,
    pub tls_ca: Option<Spanned<PathBuf>>,
    pub revocation_max_staleness: Option<Spanned<ConfigDuration>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Sled,
    Postgres,
}

/// Where users and sessions live.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// The sled directory. With PostgreSQL it only says where dev mode keeps
    /// its generated secret (beside it), as it did before.
    pub path: PathBuf,
    /// How long the revocation listener may be disconnected before
    /// authenticated requests are refused (PostgreSQL only; fail closed).
    pub revocation_max_staleness: Duration,
}

#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// The embedded database at [`StoreConfig::path`].
    Sled,
    Postgres(Box<PostgresConfig>),
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: DatabaseUrl,
    /// Pool size of each instance (the listener has one more connection).
    pub max_connections: usize,
    /// PEM CA certificates the server's certificate must chain to. Required
    /// when the URL asks for TLS: authgate always verifies the server.
    pub tls_ca: Option<PathBuf>,
}

/// A parsed PostgreSQL connection string. Shown as `postgres://user@host:port/db`,
/// never with its password.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
}

impl DatabaseUrl {
    /// Accepts a `postgres://` URL or a `key=value` string. `sslmode`
    /// `verify-ca` and `verify-full` are read as `require`: authgate verifies
    /// the server certificate (against `tls_ca`) whenever TLS is used.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut normalized = text.to_owned();
        for verify in ["sslmode=verify-full", "sslmode=verify-ca"] {
            normalized = normalized.replace(verify, "sslmode=require");
        }
        // tokio-postgres's parse errors name the option, never its value.
        let config = tokio_postgres::Config::from_str(&normalized)
            .map_err(|err| format!("not a PostgreSQL connection string: {err}"))?;
        if config.get_hosts().is_empty() {
            return Err("the connection string names no host".to_owned());
        }
        Ok(Self { config })
    }

    /// The driver's configuration, password included.
    pub fn driver_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// True when the URL insists on TLS (`sslmode=require` or stronger).
    pub fn requires_tls(&self) -> bool {
        matches!(
            self.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        )
    }

    /// True when a connection may use TLS (anything but `sslmode=disable`).
    pub fn allows_tls(&self) -> bool {
        !matches!(
            self.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        )
    }

    /// `sslmode=prefer` (the default) with no CA to verify against: plain.
    fn without_tls(mut self) -> Self {
        self.config
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        self
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("postgres://")?;
        if let Some(user) = self.config.get_user() {
            write!(f, "{user}@")?;
        }
        for (index, host) in self.config.get_hosts().iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            match host {
                tokio_postgres::config::Host::Tcp(name) => f.write_str(name)?,
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            if let Some(port) = self.config.get_ports().get(index) {
                write!(f, ":{port}")?;
            }
        }
        if let Some(db) = self.config.get_dbname() {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Validates `[store]`. `env_url` is the value of [`DATABASE_URL_ENV`],
/// passed in so tests do not depend on the process environment.
pub(super) fn build(
    raw: StoreFile,
    env_url: Option<String>,
    at: &Locator,
) -> Result<StoreConfig, ConfigError> {
    let kind = raw
        .backend
        .as_ref()
        .map_or(BackendKind::Sled, |b| *b.get_ref());
    let foreign = |span: std::ops::Range<usize>, key: &str, owner: &str| {
        at.error(
            span,
            Some(&format!("store.{key}")),
            format!("`{key}` belongs to backend = \"{owner}\", but this store is not that backend"),
        )
    };
    let revocation_max_staleness = raw
        .revocation_max_staleness
        .map_or(DEFAULT_MAX_STALENESS, |d| d.into_inner().0);
    let path = raw
        .path
        .as_ref()
        .map_or_else(|| PathBuf::from(DEFAULT_SLED_PATH), |p| p.get_ref().clone());
    let backend = match kind {
        BackendKind::Sled => {
            if let Some(url) = &raw.url {
                return Err(foreign(url.span(), "url", "postgres"));
            }
            if let Some(value) = &raw.max_connections {
                return Err(foreign(value.span(), "max_connections", "postgres"));
            }
            if let Some(value) = &raw.tls_ca {
                return Err(foreign(value.span(), "tls_ca", "postgres"));
            }
            StoreBackend::Sled
        }
        BackendKind::Postgres => {
            if let Some(value) = &raw.path {
                return Err(foreign(value.span(), "path", "sled"));
            }
            let backend_span = raw.backend.as_ref().map_or(0..0, Spanned::span);
            let (text, span, key) = match (env_url, &raw.url) {
                (Some(text), _) => (text, backend_span, DATABASE_URL_ENV.to_owned()),
                (None, Some(url)) => (url.get_ref().clone(), url.span(), "store.url".to_owned()),
                (None, None) => {
                    return Err(at.error(
                        backend_span,
                        Some("store.url"),
                        format!(
                            "backend = \"postgres\" needs `url` (or the environment \
                             variable {DATABASE_URL_ENV})"
                        ),
                    ))
                }
            };
            let url = DatabaseUrl::parse(&text)
                .map_err(|message| at.error(span.clone(), Some(&key), message))?;
            let tls_ca = raw.tls_ca.map(Spanned::into_inner);
            if url.requires_tls() && tls_ca.is_none() {
                return Err(at.error(
                    span,
                    Some("store.tls_ca"),
                    "the connection string asks for TLS (sslmode); set `tls_ca` to the CA \
                     that signed the database server's certificate (authgate always verifies it), \
                     or use sslmode=disable on a trusted network"
                        .to_owned(),
                ));
            }
            let url = if tls_ca.is_none() {
                url.without_tls()
            } else {
                url
            };
            let max_connections = match raw.max_connections {
                None => DEFAULT_MAX_CONNECTIONS,
                Some(value) if *value.get_ref() == 0 => {
                    return Err(at.error(
                        value.span(),
                        Some("store.max_connections"),
                        "must be at least 1".to_owned(),
                    ))
                }
                Some(value) => value.into_inner(),
            };
            StoreBackend::Postgres(Box::new(PostgresConfig {
                url,
                max_connections,
                tls_ca,
            }))
        }
    };
    Ok(StoreConfig {
        backend,
        path,
        revocation_max_staleness,
    })
}
