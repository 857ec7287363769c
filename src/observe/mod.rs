//! What the gateway keeps for operators — metrics, the audit trail, the
//! certificate's expiry, the bound admin listener — below the gateway, so
//! every layer can record into it. `admin/` serves it.

pub(crate) mod cert;
pub mod metrics;
mod per_worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::audit::{Audit, AuditError};
use crate::config::Config;
use metrics::Metrics;

/// What the gateway keeps for operators, for its whole life.
pub struct Observability {
    metrics: Metrics,
    audit: Arc<Audit>,
    /// The serving certificate's `notAfter`; `None` when unreadable.
    cert_not_after: Option<SystemTime>,
    /// The admin listener, bound at start and taken by `server::serve`.
    listener: Mutex<Option<std::net::TcpListener>>,
    listen_addr: Option<SocketAddr>,
}

impl Observability {
    /// Registers the metrics and opens the audit file.
    pub fn new(config: &Config) -> Result<Self, AuditError> {
        let audit = match &config.log.audit_file {
            Some(path) => Audit::open(path)?,
            None => Audit::disabled(),
        };
        Ok(Self {
            metrics: Metrics::new(&config.routes, config.server.workers),
            audit: Arc::new(audit),
            cert_not_after: cert::leaf_not_after(&config.server.tls_cert),
            listener: Mutex::new(None),
            listen_addr: None,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    pub fn cert_not_after(&self) -> Option<SystemTime> {
        self.cert_not_after
    }

    /// Binds `[admin] listen` (when set), so a taken port stops the start.
    pub fn bind(&mut self, config: &Config) -> std::io::Result<()> {
        let Some(addr) = config.admin.listen else {
            return Ok(());
        };
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        self.listen_addr = Some(listener.local_addr()?);
        *self
            .listener
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(listener);
        Ok(())
    }

    /// Where the admin listener is bound, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// The bound admin listener, once: `admin::listener` serves it.
    pub fn take_listener(&self) -> Option<std::net::TcpListener> {
        self.listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
