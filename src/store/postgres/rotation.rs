//! Refresh-token rotation as SQL. Rotation locks the presented token's row
//! (and shares its family's), so two instances rotating one token serialise
//! and the second sees it rotated; the sealed pair a retry within the grace
//! reads on another instance is written in the same transaction.

use tokio_postgres::Row;

use super::sessions::{family_from, insert_token, record_from};
use super::{corrupt, db_error, from_db, to_db, PostgresStore};
use crate::store::{
    hash_from_hex, hex, Chain, ChainStep, RefreshRecord, Retired, RotateOutcome, StoreError,
    MAX_TRACKED_RETIRED,
};

impl PostgresStore {
    pub async fn chain(&self, family_id: &str) -> Result<Option<Chain>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT generation, tag_key, retired FROM chains WHERE family_id = $1",
                &[&family_id],
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(chain_from).transpose()
    }

    pub async fn rotate(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
    ) -> Result<RotateOutcome, StoreError> {
        self.rotate_keeping(presented, new_hash, new_record, step, now, None)
            .await
    }

    /// Rotation that also keeps the sealed new pair for the reuse grace, in
    /// the same transaction: a retry on another instance waits on the row
    /// lock, then finds the pair committed with the rotation.
    #[allow(clippy::too_many_arguments)]
    pub async fn rotate_sealed(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
        sealed_pair: &[u8],
        sealed_until: u64,
    ) -> Result<RotateOutcome, StoreError> {
        self.rotate_keeping(
            presented,
            new_hash,
            new_record,
            step,
            now,
            Some((sealed_pair, sealed_until)),
        )
        .await
    }

    /// The sealed pair kept for `presented`, unless past its grace.
    pub async fn sealed_pair(
        &self,
        presented: &[u8; 32],
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT sealed FROM grace_pairs WHERE presented = $1 AND expires_at > $2",
                &[&&presented[..], &to_db(now)],
            )
            .await
            .map_err(db_error)?;
        row.map(|row| row.try_get(0).map_err(corrupt)).transpose()
    }

    async fn rotate_keeping(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
        sealed: Option<(&[u8], u64)>,
    ) -> Result<RotateOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // The row lock is the compare-and-swap: a concurrent rotation of the
        // same token waits here and then reads it rotated. Sharing the family
        // row makes a concurrent revocation wait for (or beat) this one.
        let row = tx
            .query_opt(
                "SELECT r.family_id, r.user_id, r.expires_at, r.rotated_at, r.replaced_by,
                        f.id, f.user_id, f.created_at, f.expires_at, f.revoked_at
                 FROM refresh_tokens r JOIN families f ON f.id = r.family_id
                 WHERE r.hash = $1
                 FOR UPDATE OF r FOR SHARE OF f",
                &[&&presented[..]],
            )
            .await
            .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(RotateOutcome::Unknown);
        };
        let record = record_from(&row, 0)?;
        let family = family_from(&row, 5)?;
        if let Some(answer) = RotateOutcome::before_rotation(&record, &family, new_record, now)? {
            return Ok(answer);
        }
        // The chain row is locked too: its generation and retired list move
        // with this rotation only.
        let previous = tx
            .query_opt(
                "SELECT generation, tag_key, retired FROM chains WHERE family_id = $1 FOR UPDATE",
                &[&record.family_id],
            )
            .await
            .map_err(db_error)?
            .as_ref()
            .map(chain_from)
            .transpose()?;
        let tag_key = hex(&step.tag_key);
        let expected = previous
            .as_ref()
            .map_or(1, |c| c.generation.saturating_add(1));
        if step.generation != expected || previous.as_ref().is_some_and(|c| c.tag_key != tag_key) {
            return Err(StoreError::Invalid(
                "a rotation must advance its family's chain by one, with its key",
            ));
        }
        let mut retired = Vec::new();
        for entry in previous.map(|chain| chain.retired).unwrap_or_default() {
            let Some(old) = hash_from_hex(&entry.hash) else {
                return Err(StoreError::Corrupt("chain retired hash".to_owned()));
            };
            if entry.keep_until <= now {
                delete_token(&tx, &old).await?;
            } else {
                retired.push(entry);
            }
        }
        match step.keep_presented_until {
            Some(keep_until) if keep_until <= now => delete_token(&tx, presented).await?,
            keep => {
                let expires_at = match keep {
                    Some(keep_until) => record.expires_at.min(keep_until),
                    None => record.expires_at,
                };
                tx.execute(
                    "UPDATE refresh_tokens SET rotated_at = $2, replaced_by = $3, expires_at = $4
                     WHERE hash = $1",
                    &[
                        &&presented[..],
                        &to_db(now),
                        &hex(new_hash),
                        &to_db(expires_at),
                    ],
                )
                .await
                .map_err(db_error)?;
                if keep.is_some() {
                    retired.push(Retired {
                        hash: hex(presented),
                        keep_until: expires_at,
                    });
                }
            }
        }
        // Untracked ones still leave at their expiry, by the sweep.
        let excess = retired.len().saturating_sub(MAX_TRACKED_RETIRED);
        retired.drain(..excess);
        let retired = serde_json::to_string(&retired)
            .map_err(|err| StoreError::Corrupt(format!("chain retired list: {err}")))?;
        tx.execute(
            "INSERT INTO chains (family_id, generation, tag_key, retired) VALUES ($1, $2, $3, $4)
             ON CONFLICT (family_id) DO UPDATE
             SET generation = EXCLUDED.generation, tag_key = EXCLUDED.tag_key,
                 retired = EXCLUDED.retired",
            &[
                &record.family_id,
                &to_db(step.generation),
                &tag_key,
                &retired,
            ],
        )
        .await
        .map_err(db_error)?;
        insert_token(
            &tx,
            new_hash,
            &record.family_id,
            &record.user_id,
            new_record.expires_at.min(family.expires_at),
        )
        .await?;
        if let Some((sealed, until)) = sealed {
            tx.execute(
                "INSERT INTO grace_pairs (presented, sealed, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (presented) DO NOTHING",
                &[&&presented[..], &sealed, &to_db(until)],
            )
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(RotateOutcome::Rotated { family })
    }
}

async fn delete_token(
    tx: &tokio_postgres::Transaction<'_>,
    hash: &[u8; 32],
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM refresh_tokens WHERE hash = $1", &[&&hash[..]])
        .await
        .map_err(db_error)?;
    Ok(())
}

fn chain_from(row: &Row) -> Result<Chain, StoreError> {
    let retired: String = row.try_get(2).map_err(corrupt)?;
    Ok(Chain {
        generation: from_db(row.try_get(0).map_err(corrupt)?),
        tag_key: row.try_get(1).map_err(corrupt)?,
        retired: serde_json::from_str(&retired)
            .map_err(|err| StoreError::Corrupt(format!("chain retired list: {err}")))?,
    })
}
