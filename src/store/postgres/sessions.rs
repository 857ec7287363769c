//! Sessions as SQL: families, refresh tokens and revocations. Rotation locks
//! the presented token's row (and shares its family's), so two instances
//! rotating one token serialise and the second sees it rotated.

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::events::{self, Event};
use super::{check_id, corrupt, db_error, from_db, sql_state, to_db, PostgresStore};
use crate::store::{
    hash_from_hex, hex, Chain, ChainStep, Family, RecordCounts, RefreshRecord, Retired,
    RotateOutcome, StoreError, UserStamp, MAX_TRACKED_RETIRED,
};

/// Key of the advisory lock a sweep holds, so one instance sweeps at a time.
const SWEEP_LOCK: i64 = 0x6167_7377_6565_7031; // "agsweep1"

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
        // Reuse first, as the sled store: a second use is the theft signal.
        if let Some(rotated_at) = record.rotated_at {
            return Ok(RotateOutcome::AlreadyRotated {
                rotated_at,
                family_id: record.family_id,
            });
        }
        if family.revoked_at.is_some() {
            return Ok(RotateOutcome::FamilyRevoked {
                family_id: family.id,
            });
        }
        if now >= family.expires_at {
            return Ok(RotateOutcome::FamilyExpired {
                family_id: family.id,
            });
        }
        if now >= record.expires_at {
            return Ok(RotateOutcome::Expired);
        }
        if new_record.family_id != record.family_id || new_record.user_id != record.user_id {
            return Err(StoreError::Invalid(
                "a rotated token must stay in its family and with its user",
            ));
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

    pub async fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM families),
                        (SELECT count(*) FROM chains), (SELECT count(*) FROM refresh_tokens)",
                &[],
            )
            .await
            .map_err(db_error)?;
        let count = |i: usize| -> Result<usize, StoreError> {
            let n: i64 = row.try_get(i).map_err(corrupt)?;
            Ok(usize::try_from(n).unwrap_or(0))
        };
        Ok(RecordCounts {
            users: count(0)?,
            families: count(1)?,
            chains: count(2)?,
            refresh_tokens: count(3)?,
            // PostgreSQL keeps its own indexes; there are no index records.
            index_entries: 0,
        })
    }

    /// Removes expired tokens and families; one instance at a time (the
    /// others find the lock taken and return 0).
    pub async fn sweep_expired(&self, now: u64) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
            .await
            .map_err(db_error)?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let now = to_db(now);
        let tokens = tx
            .execute(
                "DELETE FROM refresh_tokens WHERE expires_at <= $1
                 OR family_id IN (SELECT id FROM families WHERE expires_at <= $1)",
                &[&now],
            )
            .await
            .map_err(db_error)?;
        // Chains would go with their families by the cascade; deleted here
        // to count them, as the sled store does.
        let chains = tx
            .execute(
                "DELETE FROM chains
                 WHERE family_id IN (SELECT id FROM families WHERE expires_at <= $1)",
                &[&now],
            )
            .await
            .map_err(db_error)?;
        let families = tx
            .execute("DELETE FROM families WHERE expires_at <= $1", &[&now])
            .await
            .map_err(db_error)?;
        // Failure streaks a day old that lock nothing any more.
        tx.execute(
            "DELETE FROM account_lockouts
             WHERE COALESCE(locked_until, 0) <= $1 AND window_start < $1 - 86400",
            &[&now],
        )
        .await
        .map_err(db_error)?;
        // Pairs past their grace are unreadable by design; not counted.
        tx.execute("DELETE FROM grace_pairs WHERE expires_at <= $1", &[&now])
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(usize::try_from(tokens + chains + families).unwrap_or(usize::MAX))
    }

    /// Forgets revocations, tombstones and revocation events older than
    /// `before`, remembering how far events were pruned so a listener that
    /// was behind reloads everything instead of missing them.
    pub async fn prune_revocations(&self, before: u64) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let before = to_db(before);
        let revocations = tx
            .execute("DELETE FROM revocations WHERE revoked_at < $1", &[&before])
            .await
            .map_err(db_error)?;
        let tombstones = tx
            .execute("DELETE FROM tombstones WHERE deleted_at < $1", &[&before])
            .await
            .map_err(db_error)?;
        events::prune(&tx, before).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(usize::try_from(revocations + tombstones).unwrap_or(usize::MAX))
    }

    /// Records this instance's access lifetime and returns the longest one
    /// a live token may have (see [`crate::store::Store::note_access_lifetime`]).
    /// Lifetimes of other runs are closed at `now + lifetime`, as the sled
    /// store does; one row per distinct lifetime, so instances sharing a
    /// config share a row.
    pub async fn note_access_lifetime(&self, lifetime: u64, now: u64) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let (lifetime, now) = (to_db(lifetime), to_db(now));
        tx.execute(
            "UPDATE access_lifetimes SET until = $2 + lifetime
             WHERE lifetime <> $1 AND until IS NULL",
            &[&lifetime, &now],
        )
        .await
        .map_err(db_error)?;
        tx.execute(
            "DELETE FROM access_lifetimes WHERE until IS NOT NULL AND until <= $1",
            &[&now],
        )
        .await
        .map_err(db_error)?;
        tx.execute(
            "INSERT INTO access_lifetimes (lifetime, until) VALUES ($1, NULL)
             ON CONFLICT (lifetime) DO UPDATE SET until = NULL",
            &[&lifetime],
        )
        .await
        .map_err(db_error)?;
        let longest: i64 = tx
            .query_one("SELECT max(lifetime) FROM access_lifetimes", &[])
            .await
            .map_err(db_error)?
            .try_get::<_, Option<i64>>(0)
            .map_err(corrupt)?
            .unwrap_or(lifetime);
        tx.commit().await.map_err(db_error)?;
        Ok(from_db(longest))
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

async fn insert_token(
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
fn record_from(row: &Row, at: usize) -> Result<RefreshRecord, StoreError> {
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
fn family_from(row: &Row, at: usize) -> Result<Family, StoreError> {
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
