//! API keys as SQL, and their side of the revocation feed: creation and
//! revocation each write an `api_key` event in their transaction, and a
//! listener re-reads the key (or the owner's role, after a `version` event)
//! into its [`ApiKeyFeed`] within the catch-up's snapshot.

use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Row};

use super::events::{self, Event};
use super::{corrupt, db_error, from_db, sql_state, to_db, PostgresStore};
use crate::store::{hash_from_hex, hex, ApiKeyRecord, StoreError};

const COLUMNS: &str = "k.id, k.user_id, k.name, k.role, k.hash, k.created_at, k.expires_at, \
                       k.last_used_at, k.revoked_at";

/// The in-memory key index a listener keeps current. Defined here so the
/// store depends on no layer above it; `auth::api_keys` implements it.
pub trait ApiKeyFeed: Send + Sync + 'static {
    /// The key `id` as now stored, with its owner's role; `None`: gone.
    fn key_changed(&self, id: &str, current: Option<(ApiKeyRecord, String)>);
    /// The owner's role is now `role`.
    fn owner_role(&self, user: &str, role: &str);
    /// The owner is deleted, and its keys with it.
    fn owner_deleted(&self, user: &str);
    /// True when some key in the index belongs to `user`.
    fn owns_keys(&self, user: &str) -> bool;
    /// Replaces the whole index (first connection, or events pruned).
    fn replace_all(&self, keys: Vec<(ApiKeyRecord, String)>);
}

impl PostgresStore {
    pub async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let hash = hash_from_hex(&key.hash).ok_or(StoreError::Invalid("API key hash not hex"))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let inserted = tx
            .execute(
                "INSERT INTO api_keys (id, user_id, name, role, hash, created_at, expires_at,
                                       last_used_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &key.id,
                    &key.user_id,
                    &key.name,
                    &key.role,
                    &&hash[..],
                    &to_db(key.created_at),
                    &key.expires_at.map(to_db),
                    &key.last_used_at.map(to_db),
                    &key.revoked_at.map(to_db),
                ],
            )
            .await;
        match inserted {
            Ok(_) => {}
            // The owner was deleted meanwhile (or never existed).
            Err(err) if sql_state(&err) == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                return Err(StoreError::UnknownUser(key.user_id.clone()));
            }
            Err(err) if sql_state(&err) == Some(&SqlState::UNIQUE_VIOLATION) => {
                return Err(StoreError::Invalid(
                    "an API key with this id or hash exists",
                ));
            }
            Err(err) => return Err(db_error(err)),
        }
        events::record(&tx, &[Event::ApiKey { id: &key.id }]).await?;
        tx.commit().await.map_err(db_error)
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM api_keys k WHERE k.id = $1"),
                &[&id],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(key_from).transpose()
    }

    pub async fn user_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM api_keys k WHERE k.user_id = $1
                     ORDER BY k.created_at, k.id COLLATE \"C\""
                ),
                &[&user_id],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(key_from).collect()
    }

    pub async fn live_api_keys(&self) -> Result<Vec<(ApiKeyRecord, String)>, StoreError> {
        let client = self.client().await?;
        live(&**client).await
    }

    pub async fn revoke_api_key(
        &self,
        id: &str,
        now: u64,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let revoked = tx
            .query_opt(
                &format!(
                    "UPDATE api_keys k SET revoked_at = $2
                     WHERE k.id = $1 AND k.revoked_at IS NULL RETURNING {COLUMNS}"
                ),
                &[&id, &to_db(now)],
            )
            .await
            .map_err(db_error)?;
        let Some(row) = revoked else {
            // Already revoked, or no such key: nothing to announce.
            drop(tx);
            return self.api_key(id).await;
        };
        let key = key_from(&row)?;
        events::record(&tx, &[Event::ApiKey { id }]).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(key))
    }

    pub async fn touch_api_key(&self, id: &str, at: u64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $2)
                 WHERE id = $1",
                &[&id, &to_db(at)],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

/// Applies one event of the feed to `keys`, reading inside the catch-up's
/// transaction (its snapshot includes the event).
pub(super) async fn follow(
    tx: &tokio_postgres::Transaction<'_>,
    keys: &dyn ApiKeyFeed,
    kind: &str,
    subject: &str,
) -> Result<(), StoreError> {
    match kind {
        "api_key" => {
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS}, u.role FROM api_keys k JOIN users u ON u.id = k.user_id
                         WHERE k.id = $1"
                    ),
                    &[&subject],
                )
                .await
                .map_err(db_error)?;
            let current = match row {
                Some(row) => Some((key_from(&row)?, row.try_get(9).map_err(corrupt)?)),
                None => None,
            };
            keys.key_changed(subject, current);
        }
        // A role change bumps the version: an owner's keys follow its role.
        "version" if keys.owns_keys(subject) => {
            let row = tx
                .query_opt("SELECT role FROM users WHERE id = $1", &[&subject])
                .await
                .map_err(db_error)?;
            match row {
                Some(row) => keys.owner_role(subject, row.try_get(0).map_err(corrupt)?),
                None => keys.owner_deleted(subject),
            }
        }
        "deleted" => keys.owner_deleted(subject),
        _ => {}
    }
    Ok(())
}

/// Reloads every live key into `keys` (inside the reload's snapshot).
pub(super) async fn reload(
    tx: &tokio_postgres::Transaction<'_>,
    keys: &dyn ApiKeyFeed,
) -> Result<(), StoreError> {
    keys.replace_all(live(tx).await?);
    Ok(())
}

async fn live(client: &impl GenericClient) -> Result<Vec<(ApiKeyRecord, String)>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS}, u.role FROM api_keys k JOIN users u ON u.id = k.user_id
                 WHERE k.revoked_at IS NULL"
            ),
            &[],
        )
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| Ok((key_from(row)?, row.try_get(9).map_err(corrupt)?)))
        .collect()
}

fn key_from(row: &Row) -> Result<ApiKeyRecord, StoreError> {
    let hash: &[u8] = row.try_get(4).map_err(corrupt)?;
    let optional = |index: usize| -> Result<Option<u64>, StoreError> {
        Ok(row
            .try_get::<_, Option<i64>>(index)
            .map_err(corrupt)?
            .map(from_db))
    };
    Ok(ApiKeyRecord {
        id: row.try_get(0).map_err(corrupt)?,
        user_id: row.try_get(1).map_err(corrupt)?,
        name: row.try_get(2).map_err(corrupt)?,
        role: row.try_get(3).map_err(corrupt)?,
        hash: hex(hash),
        created_at: from_db(row.try_get(5).map_err(corrupt)?),
        expires_at: optional(6)?,
        last_used_at: optional(7)?,
        revoked_at: optional(8)?,
    })
}
