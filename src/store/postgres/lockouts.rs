//! Account lockouts shared by every instance: failed logins per account
//! counted in one row under a row lock, so guesses spread over instances
//! lock the account as they would on one. Per-address counters stay in each
//! instance's memory.

use super::{corrupt, db_error, from_db, to_db, PostgresStore};
use crate::store::{LockoutPolicy, StoreError};

impl PostgresStore {
    pub async fn account_locked_until(
        &self,
        account: &[u8; 32],
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT locked_until FROM account_lockouts
                 WHERE account = $1 AND locked_until > $2",
                &[&&account[..], &to_db(now)],
            )
            .await
            .map_err(db_error)?;
        row.map(|row| row.try_get::<_, i64>(0).map(from_db).map_err(corrupt))
            .transpose()
    }

    pub async fn account_failed(
        &self,
        account: &[u8; 32],
        policy: &LockoutPolicy,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO account_lockouts (account, failures, window_start, lockouts)
             VALUES ($1, 0, $2, 0) ON CONFLICT (account) DO NOTHING",
            &[&&account[..], &to_db(now)],
        )
        .await
        .map_err(db_error)?;
        let row = tx
            .query_one(
                "SELECT failures, window_start, lockouts FROM account_lockouts
                 WHERE account = $1 FOR UPDATE",
                &[&&account[..]],
            )
            .await
            .map_err(db_error)?;
        let mut failures: i32 = row.try_get(0).map_err(corrupt)?;
        let mut window_start = from_db(row.try_get(1).map_err(corrupt)?);
        let mut lockouts: i32 = row.try_get(2).map_err(corrupt)?;
        if now.saturating_sub(window_start) >= policy.window {
            failures = 0;
            window_start = now;
        }
        failures = failures.saturating_add(1);
        let mut locked_until = None;
        if u32::try_from(failures).unwrap_or(u32::MAX) >= policy.failures.max(1) {
            lockouts = lockouts.saturating_add(1);
            let doublings = u32::try_from(lockouts.saturating_sub(1)).unwrap_or(0);
            let lockout = policy
                .base
                .saturating_mul(2u64.saturating_pow(doublings))
                .min(policy.max);
            locked_until = Some(now.saturating_add(lockout));
            failures = 0;
            window_start = now;
        }
        tx.execute(
            "UPDATE account_lockouts
             SET failures = $2, window_start = $3, lockouts = $4,
                 locked_until = COALESCE($5, locked_until)
             WHERE account = $1",
            &[
                &&account[..],
                &failures,
                &to_db(window_start),
                &lockouts,
                &locked_until.map(to_db),
            ],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(locked_until)
    }

    pub async fn account_succeeded(&self, account: &[u8; 32]) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM account_lockouts WHERE account = $1",
                &[&&account[..]],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
