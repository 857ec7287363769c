//! Session lifecycle as SQL: a family created with its first token (only
//! for the user as verified), read back, revoked (one, a user's, or past the
//! per-user cap) with a revocation entry and event in the same transaction.
//! Rotation is in `rotation.rs`, removal of what expired in `retention.rs`.

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::events::{self, Event};
use super::{check_id, corrupt, db_error, from_db, sql_state, to_db, PostgresStore};
use crate::store::{Family, RefreshRecord, StoreError, UserStamp};

impl PostgresStore {
    pub async fn create_family(
        &self,
        family: &Family,
        first_token: &[u8; 32],
        record: &RefreshRecord,
        verified: &UserStamp,
    ) -> Result<(), StoreError> {
        check_id(&family.id)?;
        if record.family_id != family.id || record.user_id != family.user_id {
            return Err(StoreError::Invalid(
                "the first refresh token must belong to the new family and its user",
            ));
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // Shared row lock: a concurrent password change, logout-all, role
        // change or deletion waits for this session to exist (and then
        // revokes it) or makes this call fail here.
        let user = tx
            .query_opt(
                &format!(
                    "SELECT {} FROM users WHERE id = $1 FOR SHARE",
                    super::users::COLUMNS
                ),
                &[&family.user_id],
            )
            .await
            .map_err(db_error)?;
        let Some(user) = user else {
            return Err(StoreError::UnknownUser(family.user_id.clone()));
        };
        let user = super::users::user_from(&user)?;
        if !verified.matches(&user) {
            return Err(StoreError::UserChanged(user.id));
        }
        let inserted = tx
            .execute(
                "INSERT INTO families (id, user_id, created_at, expires_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &family.id,
                    &family.user_id,
                    &to_db(family.created_at),
                    &to_db(family.expires_at),
                    &family.revoked_at.map(to_db),
                ],
            )
            .await;
        match inserted {
            Ok(_) => {}
            // The foreign key: the user was deleted (or never existed).
            Err(err) if sql_state(&err) == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                return Err(StoreError::UnknownUser(family.user_id.clone()))
            }
            Err(err) if sql_state(&err) == Some(&SqlState::UNIQUE_VIOLATION) => {
                return Err(StoreError::Invalid("a family with this id already exists"))
            }
            Err(err) => return Err(db_error(err)),
        }
        insert_token(
            &tx,
            first_token,
            &record.family_id,
            &record.user_id,
            record.expires_at.min(family.expires_at),
        )
        .await?;
        tx.commit().await.map_err(db_error)
    }

    pub async fn refresh_record(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT family_id, user_id, expires_at, rotated_at, replaced_by
                 FROM refresh_tokens WHERE hash = $1",
                &[&&token_hash[..]],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(|row| record_from(row, 0)).transpose()
    }

    pub async fn family(&self, id: &str) -> Result<Option<Family>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, user_id, created_at, expires_at, revoked_at FROM families WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(|row| family_from(row, 0)).transpose()
    }

    pub async fn revoke_family(&self, family_id: &str, now: u64) -> Result<bool, StoreError> {
        let revoked = self.revoke_where("id = $1", &[&family_id], now).await?;
        Ok(!revoked.is_empty())
    }

    pub async fn revoke_user_families(
        &self,
        user_id: &str,
        except_family: Option<&str>,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        self.revoke_where(
            "user_id = $1 AND ($2::text IS NULL OR id <> $2)",
            &[&user_id, &except_family],
            now,
        )
        .await
    }

    pub async fn revoked_families_since(
        &self,
        since: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT family_id, revoked_at FROM revocations WHERE revoked_at >= $1
                 ORDER BY revoked_at",
                &[&to_db(since)],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(corrupt)?,
                    from_db(row.try_get(1).map_err(corrupt)?),
                ))
            })
            .collect()
    }

    /// Keeps at most `max` sessions of the user occupying the store:
    /// revoked ones go first, then the oldest live ones are revoked; both
    /// are marked expired at `now` for the sweep. Returns the ids revoked.
    pub async fn cap_user_families(
        &self,
        user_id: &str,
        max: usize,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let now_db = to_db(now);
        let rows = tx
            .query(
                "SELECT id FROM families WHERE user_id = $1 AND expires_at > $2
                 ORDER BY (revoked_at IS NULL), created_at, seq
                 FOR UPDATE",
                &[&user_id, &now_db],
            )
            .await
            .map_err(db_error)?;
        let Some(excess) = rows.len().checked_sub(max).filter(|n| *n > 0) else {
            return Ok(Vec::new());
        };
        let victims: Vec<String> = rows
            .iter()
            .take(excess)
            .map(|row| row.try_get(0).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let revoked = revoke_in(&tx, "id = ANY($1)", &[&victims], now).await?;
        tx.execute(
            "UPDATE families SET expires_at = $2 WHERE id = ANY($1) AND expires_at > $2",
            &[&victims, &now_db],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(revoked)
    }

    /// Marks the families matched by `condition` revoked, in one
    /// transaction with their revocation entries and events.
    async fn revoke_where(
        &self,
        condition: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let ids = revoke_in(&tx, condition, params, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(ids)
    }
}

/// Marks the families matched by `condition` (over `families`, with
/// `params`) revoked inside `tx`, remembers each revocation and writes its
/// event; returns the ids this call revoked.
async fn revoke_in(
    tx: &tokio_postgres::Transaction<'_>,
    condition: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    now: u64,
) -> Result<Vec<String>, StoreError> {
    let now_db = to_db(now);
    let at_param = format!("${}", params.len() + 1);
    let mut all: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.to_vec();
    all.push(&now_db);
    let rows = tx
        .query(
            &format!(
                "UPDATE families SET revoked_at = {at_param}
                 WHERE revoked_at IS NULL AND {condition} RETURNING id"
            ),
            &all,
        )
        .await
        .map_err(db_error)?;
    let ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get(0).map_err(corrupt))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(ids);
    }
    tx.execute(
        "INSERT INTO revocations (family_id, revoked_at) SELECT unnest($1::text[]), $2
         ON CONFLICT (family_id) DO NOTHING",
        &[&ids, &now_db],
    )
    .await
    .map_err(db_error)?;
    let events: Vec<Event<'_>> = ids
        .iter()
        .map(|id| Event::Family {
            family: id,
            at: now,
        })
        .collect();
    events::record(tx, &events).await?;
    Ok(ids)
}

pub(super) async fn insert_token(
    tx: &tokio_postgres::Transaction<'_>,
    hash: &[u8; 32],
    family_id: &str,
    user_id: &str,
    expires_at: u64,
) -> Result<(), StoreError> {
    let inserted = tx
        .execute(
            "INSERT INTO refresh_tokens (hash, family_id, user_id, expires_at)
             VALUES ($1, $2, $3, $4)",
            &[&&hash[..], &family_id, &user_id, &to_db(expires_at)],
        )
        .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(err) if sql_state(&err) == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::Invalid("this refresh token is already stored"))
        }
        Err(err) => Err(db_error(err)),
    }
}

/// A refresh record from the five columns starting at `at`.
pub(super) fn record_from(row: &Row, at: usize) -> Result<RefreshRecord, StoreError> {
    Ok(RefreshRecord {
        family_id: row.try_get(at).map_err(corrupt)?,
        user_id: row.try_get(at + 1).map_err(corrupt)?,
        expires_at: from_db(row.try_get(at + 2).map_err(corrupt)?),
        rotated_at: row
            .try_get::<_, Option<i64>>(at + 3)
            .map_err(corrupt)?
            .map(from_db),
        replaced_by: row.try_get(at + 4).map_err(corrupt)?,
    })
}

/// A family from the five columns starting at `at`.
pub(super) fn family_from(row: &Row, at: usize) -> Result<Family, StoreError> {
    Ok(Family {
        id: row.try_get(at).map_err(corrupt)?,
        user_id: row.try_get(at + 1).map_err(corrupt)?,
        created_at: from_db(row.try_get(at + 2).map_err(corrupt)?),
        expires_at: from_db(row.try_get(at + 3).map_err(corrupt)?),
        revoked_at: row
            .try_get::<_, Option<i64>>(at + 4)
            .map_err(corrupt)?
            .map(from_db),
    })
}
