//! The schema, embedded in the binary as numbered SQL files and applied at
//! start in one transaction under an advisory lock, so instances started
//! together apply each migration once. A database whose schema is newer than
//! this binary stops the start: an old binary must not write a new schema.

use super::{db_error, StoreError};

/// Numbered migrations, applied in order; never edit a released one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_api_keys.sql")),
];

/// The schema this binary writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

/// Key of the advisory lock migrations run under ("authgate" in ASCII).
const MIGRATION_LOCK: i64 = 0x6175_7468_6761_7465;

/// Brings the schema to [`SCHEMA_VERSION`]; returns the version found.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<i64, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    // Held until commit: a second instance waits here, then finds the work
    // done. DDL is transactional, so a failed migration leaves nothing.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS authgate_schema (
             one boolean PRIMARY KEY DEFAULT true CHECK (one),
             version bigint NOT NULL
         )",
    )
    .await
    .map_err(db_error)?;
    let found: i64 = tx
        .query_opt("SELECT version FROM authgate_schema", &[])
        .await
        .map_err(db_error)?
        .map_or(0, |row| row.get(0));
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO authgate_schema (version) VALUES ($1)
             ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
            &[version],
        )
        .await
        .map_err(db_error)?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit().await.map_err(db_error)?;
    Ok(found)
}
