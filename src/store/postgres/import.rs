//! Taking over a sled installation (`authgate store copy`): every record
//! inserted in one transaction, each one skipped when already present, so
//! a second run adds nothing and an interrupted run leaves nothing half done.

use super::{db_error, to_db, PostgresStore};
use crate::store::sled_store::Export;
use crate::store::{hash_from_hex, StoreError};

/// How many records of each kind a copy inserted (0s on a repeat).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub users: u64,
    pub tombstones: u64,
    pub families: u64,
    pub chains: u64,
    pub refresh_tokens: u64,
    pub revocations: u64,
    pub api_keys: u64,
}

impl PostgresStore {
    pub async fn import(&self, export: &Export) -> Result<Imported, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let mut done = Imported::default();
        for user in &export.users {
            done.users += tx
                .execute(
                    "INSERT INTO users (id, email, role, password_hash, created_at, token_version)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[
                        &user.id,
                        &user.email,
                        &user.role,
                        &user.password_hash,
                        &to_db(user.created_at),
                        &i64::from(user.token_version),
                    ],
                )
                .await
                .map_err(db_error)?;
        }
        for (user, at) in &export.tombstones {
            done.tombstones += tx
                .execute(
                    "INSERT INTO tombstones (user_id, deleted_at) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[user, &to_db(*at)],
                )
                .await
                .map_err(db_error)?;
        }
        for family in &export.families {
            // A family whose user is gone would be swept anyway.
            done.families += tx
                .execute(
                    "INSERT INTO families (id, user_id, created_at, expires_at, revoked_at)
                     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)
                     ON CONFLICT DO NOTHING",
                    &[
                        &family.id,
                        &family.user_id,
                        &to_db(family.created_at),
                        &to_db(family.expires_at),
                        &family.revoked_at.map(to_db),
                    ],
                )
                .await
                .map_err(db_error)?;
        }
        for (family, chain) in &export.chains {
            let retired = serde_json::to_string(&chain.retired)
                .map_err(|err| StoreError::Corrupt(format!("chain retired list: {err}")))?;
            done.chains += tx
                .execute(
                    "INSERT INTO chains (family_id, generation, tag_key, retired)
                     SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM families WHERE id = $1)
                     ON CONFLICT DO NOTHING",
                    &[family, &to_db(chain.generation), &chain.tag_key, &retired],
                )
                .await
                .map_err(db_error)?;
        }
        for (hash, record) in &export.refresh_tokens {
            done.refresh_tokens += tx
                .execute(
                    "INSERT INTO refresh_tokens
                         (hash, family_id, user_id, expires_at, rotated_at, replaced_by)
                     SELECT $1, $2, $3, $4, $5, $6
                     WHERE EXISTS (SELECT 1 FROM families WHERE id = $2)
                     ON CONFLICT DO NOTHING",
                    &[
                        &&hash[..],
                        &record.family_id,
                        &record.user_id,
                        &to_db(record.expires_at),
                        &record.rotated_at.map(to_db),
                        &record.replaced_by,
                    ],
                )
                .await
                .map_err(db_error)?;
        }
        for (family, at) in &export.revocations {
            done.revocations += tx
                .execute(
                    "INSERT INTO revocations (family_id, revoked_at) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[family, &to_db(*at)],
                )
                .await
                .map_err(db_error)?;
        }
        for key in &export.api_keys {
            let hash = hash_from_hex(&key.hash)
                .ok_or(StoreError::Corrupt(format!("API key {} hash", key.id)))?;
            // A key whose owner is gone would be refused anyway.
            done.api_keys += tx
                .execute(
                    "INSERT INTO api_keys (id, user_id, name, role, hash, created_at, expires_at,
                                           last_used_at, revoked_at)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
                     WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)
                     ON CONFLICT DO NOTHING",
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
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(done)
    }
}
