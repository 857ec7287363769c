//! The `[admin]` and `[log]` sections: where the plain-HTTP admin listener
//! (metrics, health) binds, the log line format, and the audit file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::locate::Locator;
use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    pub format: Option<LogFormat>,
    pub audit_file: Option<PathBuf>,
}

/// How log lines are written to stderr.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of `key=value` text per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Plain-HTTP listener for `/metrics`, `/healthz` and `/readyz`; `None`
    /// runs no admin listener.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// One JSON line per security event, durable before the answer is sent;
    /// `None` writes no audit file (events still reach the log).
    pub audit_file: Option<PathBuf>,
}

pub(super) fn build_admin(raw: AdminFile, at: &Locator) -> Result<AdminConfig, ConfigError> {
    let Some(listen) = raw.listen else {
        return Ok(AdminConfig::default());
    };
    let addr = listen.get_ref().parse().map_err(|_| {
        at.error(
            listen.span(),
            Some("admin.listen"),
            format!(
                "{:?} is not an address with a port, such as \"127.0.0.1:9901\"",
                listen.get_ref()
            ),
        )
    })?;
    Ok(AdminConfig { listen: Some(addr) })
}

pub(super) fn build_log(raw: LogFile) -> LogConfig {
    LogConfig {
        format: raw.format.unwrap_or_default(),
        audit_file: raw.audit_file,
    }
}
