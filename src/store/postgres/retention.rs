//! How long records stay, as SQL: the sweep of expired sessions (one
//! instance at a time), the pruning of revocations once no token they
//! refuse can be alive, the access lifetimes that decide when that is, and
//! the record counts operators read.

use super::events;
use super::{corrupt, db_error, from_db, to_db, PostgresStore};
use crate::store::{RecordCounts, StoreError};

/// Key of the advisory lock a sweep holds, so one instance sweeps at a time.
const SWEEP_LOCK: i64 = 0x6167_7377_6565_7031; // "agsweep1"

impl PostgresStore {
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
}
