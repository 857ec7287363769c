//! Users, their email index (a UNIQUE column) and tombstones, as SQL. Every
//! change that moves a user's token version or deletes them writes its
//! revocation event in the same transaction.

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::events::{self, Event};
use super::{check_id, corrupt, db_error, from_db, sql_state, to_db, PostgresStore};
use crate::store::{StoreError, User};

/// Highest version a bump reaches (`u32::MAX` is the deletion marker).
const MAX_VERSION: i64 = u32::MAX as i64 - 1;

pub(super) const COLUMNS: &str = "id, email, role, password_hash, created_at, token_version";

/// What a version bump changes besides the version.
enum Change<'a> {
    Role(&'a str),
    Password {
        verified: &'a str,
        hash: &'a str,
        bump: bool,
    },
    Version,
}

impl PostgresStore {
    pub async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        check_id(&user.id)?;
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO users (id, email, role, password_hash, created_at, token_version)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &user.id,
                    &user.email,
                    &user.role,
                    &user.password_hash,
                    &to_db(user.created_at),
                    &i64::from(user.token_version),
                ],
            )
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(err) if sql_state(&err) == Some(&SqlState::UNIQUE_VIOLATION) => {
                let email_taken = err
                    .as_db_error()
                    .and_then(|db| db.constraint())
                    .is_some_and(|c| c.contains("email"));
                Err(if email_taken {
                    StoreError::EmailTaken
                } else {
                    StoreError::Invalid("a user with this id already exists")
                })
            }
            Err(err) => Err(db_error(err)),
        }
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM users WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(user_from).transpose()
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM users WHERE email = $1"),
                &[&email],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(user_from).transpose()
    }

    pub async fn list_users(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // COLLATE "C": the same byte order as the sled store's keys.
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM users
                     WHERE $1::text IS NULL OR id COLLATE \"C\" > $1
                     ORDER BY id COLLATE \"C\" LIMIT $2"
                ),
                &[&after_id, &limit],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(user_from).collect()
    }

    pub async fn set_role(&self, id: &str, role: &str) -> Result<Option<User>, StoreError> {
        self.update_user(id, Change::Role(role)).await
    }

    /// Compare-and-swap on the hash the caller verified the password
    /// against: [`StoreError::UserChanged`] when it is no longer current.
    pub async fn set_password(
        &self,
        id: &str,
        verified: &str,
        hash: &str,
        bump_version: bool,
    ) -> Result<Option<User>, StoreError> {
        self.update_user(
            id,
            Change::Password {
                verified,
                hash,
                bump: bump_version,
            },
        )
        .await
    }

    pub async fn bump_token_version(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.update_user(id, Change::Version).await
    }

    pub async fn delete_user(&self, id: &str, now: u64) -> Result<Option<User>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // Families and refresh tokens go with the user (ON DELETE CASCADE);
        // a concurrent create_family fails its foreign key.
        let row = tx
            .query_opt(
                &format!("DELETE FROM users WHERE id = $1 RETURNING {COLUMNS}"),
                &[&id],
            )
            .await
            .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = user_from(&row)?;
        tx.execute(
            "INSERT INTO tombstones (user_id, deleted_at) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at",
            &[&id, &to_db(now)],
        )
        .await
        .map_err(db_error)?;
        events::record(&tx, &[Event::Deleted { user: id }]).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(user))
    }

    pub async fn deleted_user_ids(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT user_id FROM tombstones", &[])
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    pub async fn token_versions(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, token_version FROM users WHERE token_version > 0",
                &[],
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| Ok((row.get(0), version_from(row.get(1))?)))
            .collect()
    }

    /// One UPDATE, and when the version moved, its event, in one transaction.
    async fn update_user(&self, id: &str, change: Change<'_>) -> Result<Option<User>, StoreError> {
        let bump = |yes: bool| {
            if yes {
                format!("token_version = LEAST(token_version + 1, {MAX_VERSION})")
            } else {
                "token_version = token_version".to_owned()
            }
        };
        let (set, value, bumped, verified) = match change {
            Change::Role(role) => (format!("role = $2, {}", bump(true)), Some(role), true, None),
            Change::Password {
                verified,
                hash,
                bump: yes,
            } => (
                format!("password_hash = $2, {}", bump(yes)),
                Some(hash),
                yes,
                Some(verified),
            ),
            Change::Version => (bump(true), None, true, None),
        };
        let sql = format!("UPDATE users SET {set} WHERE id = $1 RETURNING {COLUMNS}");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        if let Some(verified) = verified {
            // The row lock makes the compare and the swap one step.
            let current = tx
                .query_opt(
                    "SELECT password_hash FROM users WHERE id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(db_error)?;
            match current {
                None => return Ok(None),
                Some(row) => {
                    let hash: &str = row.try_get(0).map_err(corrupt)?;
                    if hash != verified {
                        return Err(StoreError::UserChanged(id.to_owned()));
                    }
                }
            }
        }
        let row = match value {
            Some(value) => tx.query_opt(&sql, &[&id, &value]).await,
            None => tx.query_opt(&sql, &[&id]).await,
        }
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = user_from(&row)?;
        if bumped {
            events::record(
                &tx,
                &[Event::Version {
                    user: id,
                    version: user.token_version,
                }],
            )
            .await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Some(user))
    }
}

pub(super) fn user_from(row: &Row) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get(0).map_err(corrupt)?,
        email: row.try_get(1).map_err(corrupt)?,
        role: row.try_get(2).map_err(corrupt)?,
        password_hash: row.try_get(3).map_err(corrupt)?,
        created_at: from_db(row.try_get(4).map_err(corrupt)?),
        token_version: version_from(row.try_get(5).map_err(corrupt)?)?,
    })
}

fn version_from(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("token_version {value}")))
}
