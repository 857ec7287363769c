//! Connections to PostgreSQL: the deadpool pool the store queries through,
//! and single connections for the revocation listener, both plain or TLS.
//!
//! deadpool-postgres rather than bb8: it is built for tokio-postgres (no
//! adapter crate), recycles connections with a cheap check, and its
//! wait/create timeouts are what turns an unreachable database into a
//! prompt 503 instead of a hung request.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::{Client, NoTls, Socket};

use super::tls::RustlsConnect;
use super::{db_error, StoreError, CHECKOUT_TIMEOUT};
use crate::config::PostgresConfig;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP connection silent this long is probed, so a dead database is
/// noticed without waiting for the kernel's default two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

/// `application_name` of the revocation listener's connection.
pub const LISTENER_NAME: &str = "authgate-listener";

/// The driver configuration and TLS choice, ready to open connections.
#[derive(Clone)]
pub(super) struct Connector {
    config: tokio_postgres::Config,
    tls: Tls,
    /// The URL without its password, for log lines and errors.
    shown: String,
}

#[derive(Clone)]
enum Tls {
    Plain,
    Rustls(RustlsConnect),
}

impl Connector {
    pub(super) fn new(store: &PostgresConfig) -> Result<Self, StoreError> {
        let mut config = store.url.driver_config().clone();
        config
            .application_name("authgate")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE);
        let tls = match &store.tls_ca {
            Some(ca) if store.url.allows_tls() => Tls::Rustls(RustlsConnect::from_ca_file(ca)?),
            _ => Tls::Plain,
        };
        Ok(Self {
            config,
            tls,
            shown: store.url.to_string(),
        })
    }

    /// The pool every store operation draws from.
    pub(super) fn pool(&self, max_size: usize) -> Result<Pool, StoreError> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Tls::Plain => Manager::from_config(self.config.clone(), NoTls, manager_config),
            Tls::Rustls(tls) => {
                Manager::from_config(self.config.clone(), tls.clone(), manager_config)
            }
        };
        Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(CHECKOUT_TIMEOUT),
                create: Some(CONNECT_TIMEOUT),
                recycle: Some(CONNECT_TIMEOUT),
            })
            .build()
            .map_err(|err| StoreError::Unavailable(Box::new(err)))
    }

    /// One connection outside the pool, its driver polled by a spawned task
    /// that hands asynchronous messages (NOTIFY) to `on_message`. The task
    /// ends, and the channel with it, when the connection is lost.
    pub(super) async fn connect_listener(
        &self,
        on_message: tokio::sync::mpsc::UnboundedSender<tokio_postgres::AsyncMessage>,
    ) -> Result<Client, StoreError> {
        let mut config = self.config.clone();
        // Named, so an operator (or a test) can find it in pg_stat_activity.
        config.application_name(LISTENER_NAME);
        match &self.tls {
            Tls::Plain => {
                let (client, connection) = config.connect(NoTls).await.map_err(db_error)?;
                tokio::spawn(drive(connection, on_message));
                Ok(client)
            }
            Tls::Rustls(tls) => {
                let (client, connection) = config.connect(tls.clone()).await.map_err(db_error)?;
                tokio::spawn(drive(connection, on_message));
                Ok(client)
            }
        }
    }

    /// The URL without its password.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }
}

/// A pooled connection within [`CHECKOUT_TIMEOUT`], or `Unavailable`.
pub(super) async fn checkout(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get()
        .await
        .map_err(|err| StoreError::Unavailable(Box::new(err)))
}

/// Polls a connection until it ends, forwarding NOTIFY messages.
async fn drive<T>(
    mut connection: tokio_postgres::Connection<Socket, T>,
    on_message: tokio::sync::mpsc::UnboundedSender<tokio_postgres::AsyncMessage>,
) where
    T: tokio_postgres::tls::TlsStream + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(message)) => {
                if on_message.send(message).is_err() {
                    return;
                }
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "revocation listener connection lost");
                return;
            }
            None => return,
        }
    }
}
