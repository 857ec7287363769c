//! [`PostgresStore`]: the shared [`super::Store`] several gateway instances
//! use at once. Each operation is one PostgreSQL transaction; revocations
//! also write an event that the other instances' listeners apply.
//!
//! `pool.rs` connects (TLS in `tls.rs`), `migrate.rs` brings the schema up,
//! `users.rs`, `sessions.rs` (lifecycle), `rotation.rs` and `retention.rs`
//! (sweep, prune) hold the queries, and `events.rs` writes and follows the
//! revocation feed.

mod api_keys;
mod events;
mod import;
mod lockouts;
mod migrate;
mod pool;
mod retention;
mod rotation;
mod sessions;
mod store_impl;
pub mod tls;
mod users;

use std::time::Duration;

use deadpool_postgres::Pool;

use super::StoreError;
use crate::config::PostgresConfig;

pub use api_keys::ApiKeyFeed;
pub use events::{spawn_listener, Listener, RevocationFeed};
pub use import::Imported;
pub use migrate::SCHEMA_VERSION;
pub use pool::LISTENER_NAME;

/// The PostgreSQL store. Cheap to share behind an `Arc`; the pool holds
/// up to `[store] max_connections` connections.
pub struct PostgresStore {
    pool: Pool,
    /// What to connect the listener (and `store copy`) with.
    connector: pool::Connector,
}

impl PostgresStore {
    /// Connects, applies the embedded migrations under an advisory lock (so
    /// instances started together do not race), and refuses a schema newer
    /// than this binary.
    pub async fn open(config: &PostgresConfig) -> Result<Self, StoreError> {
        let connector = pool::Connector::new(config)?;
        let pool = connector.pool(config.max_connections)?;
        let mut client = pool::checkout(&pool).await?;
        migrate::migrate(&mut client).await?;
        Ok(Self { pool, connector })
    }

    /// A pooled connection, or [`StoreError::Unavailable`] within the
    /// pool's wait timeout.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        pool::checkout(&self.pool).await
    }

    /// Reachable, and a primary that accepts writes: a server in recovery
    /// (a replica) or one set read-only would refuse every account change.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT NOT pg_is_in_recovery() \
                 AND current_setting('default_transaction_read_only') = 'off'",
                &[],
            )
            .await
            .map_err(db_error)?;
        let writable: bool = row.try_get(0).map_err(db_error)?;
        if writable {
            Ok(())
        } else {
            Err(StoreError::ReadOnly(
                "a server in recovery (a replica), or read-only",
            ))
        }
    }
}

/// How long an account request waits for a pooled connection (or a new
/// one) before it is answered 503: well under any route timeout.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sorts driver errors: a server's SQL error is a bug or a conflict to
/// report; anything else (refused, reset, closed, timed out) means the
/// database is unreachable, answered 503.
fn db_error(err: tokio_postgres::Error) -> StoreError {
    let unreachable = match err.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            // FATAL ends the session (administrator shutdown, connections
            // not allowed); classes 08 (connection), 53 (resources) and 57P
            // (shutdown, recovery) all mean "try again later".
            matches!(db.severity(), "FATAL" | "PANIC")
                || code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
        }
    };
    if unreachable || err.is_closed() {
        StoreError::Unavailable(Box::new(err))
    } else {
        StoreError::Postgres(err)
    }
}

/// A row whose columns do not decode as the schema says.
fn corrupt(err: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(err.to_string())
}

/// SQLSTATE of a failed statement, for the few conflicts that mean
/// something (unique and foreign-key violations).
fn sql_state(err: &tokio_postgres::Error) -> Option<&tokio_postgres::error::SqlState> {
    err.as_db_error().map(|db| db.code())
}

/// Ids are refused as the sled store refuses them (it joins ids with a 0
/// byte in its index keys), so both backends accept the same records;
/// PostgreSQL text cannot hold a NUL either, and would fail with an SQL
/// error instead of a store error.
fn check_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.contains('\0') {
        return Err(StoreError::Invalid("ids must be non-empty and free of NUL"));
    }
    Ok(())
}

/// Unix seconds as stored (bigint); values past i64 are clamped, never wrapped.
fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored bigint back to unix seconds; negative values (never written)
/// read as 0.
fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests;
