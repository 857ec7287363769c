//! [`Store`] for [`PostgresStore`]: the trait over the inherent async
//! operations in `users.rs` and `sessions.rs`.

use super::PostgresStore;
use crate::store::{
    ApiKeyRecord, Chain, ChainStep, Family, FlushFuture, LockoutPolicy, RecordCounts,
    RefreshRecord, RotateOutcome, Store, StoreError, User, UserStamp,
};

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        PostgresStore::create_user(self, user).await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        PostgresStore::user_by_id(self, id).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        PostgresStore::user_by_email(self, email).await
    }

    async fn list_users(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        PostgresStore::list_users(self, after_id, limit).await
    }

    async fn set_role(&self, id: &str, role: &str) -> Result<Option<User>, StoreError> {
        PostgresStore::set_role(self, id, role).await
    }

    async fn set_password(
        &self,
        id: &str,
        verified: &str,
        hash: &str,
        bump_version: bool,
    ) -> Result<Option<User>, StoreError> {
        PostgresStore::set_password(self, id, verified, hash, bump_version).await
    }

    async fn bump_token_version(&self, id: &str) -> Result<Option<User>, StoreError> {
        PostgresStore::bump_token_version(self, id).await
    }

    async fn delete_user(&self, id: &str, now: u64) -> Result<Option<User>, StoreError> {
        PostgresStore::delete_user(self, id, now).await
    }

    async fn deleted_user_ids(&self) -> Result<Vec<String>, StoreError> {
        PostgresStore::deleted_user_ids(self).await
    }

    async fn token_versions(&self) -> Result<Vec<(String, u32)>, StoreError> {
        PostgresStore::token_versions(self).await
    }

    async fn create_family(
        &self,
        family: &Family,
        first_token: &[u8; 32],
        record: &RefreshRecord,
        verified: &UserStamp,
    ) -> Result<(), StoreError> {
        PostgresStore::create_family(self, family, first_token, record, verified).await
    }

    async fn refresh_record(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshRecord>, StoreError> {
        PostgresStore::refresh_record(self, token_hash).await
    }

    async fn family(&self, id: &str) -> Result<Option<Family>, StoreError> {
        PostgresStore::family(self, id).await
    }

    async fn chain(&self, family_id: &str) -> Result<Option<Chain>, StoreError> {
        PostgresStore::chain(self, family_id).await
    }

    async fn rotate(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
    ) -> Result<RotateOutcome, StoreError> {
        PostgresStore::rotate(self, presented, new_hash, new_record, step, now).await
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<bool, StoreError> {
        PostgresStore::revoke_family(self, family_id, now).await
    }

    async fn revoke_user_families(
        &self,
        user_id: &str,
        except_family: Option<&str>,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        PostgresStore::revoke_user_families(self, user_id, except_family, now).await
    }

    async fn cap_user_families(
        &self,
        user_id: &str,
        max: usize,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        PostgresStore::cap_user_families(self, user_id, max, now).await
    }

    async fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        PostgresStore::record_counts(self).await
    }

    async fn revoked_families_since(&self, since: u64) -> Result<Vec<(String, u64)>, StoreError> {
        PostgresStore::revoked_families_since(self, since).await
    }

    async fn sweep_expired(&self, now: u64) -> Result<usize, StoreError> {
        PostgresStore::sweep_expired(self, now).await
    }

    async fn prune_revocations(&self, before: u64) -> Result<usize, StoreError> {
        PostgresStore::prune_revocations(self, before).await
    }

    async fn note_access_lifetime(&self, lifetime: u64, now: u64) -> Result<u64, StoreError> {
        PostgresStore::note_access_lifetime(self, lifetime, now).await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn rotate_sealed(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
        sealed_pair: &[u8],
        sealed_until: u64,
    ) -> Result<RotateOutcome, StoreError> {
        PostgresStore::rotate_sealed(
            self,
            presented,
            new_hash,
            new_record,
            step,
            now,
            sealed_pair,
            sealed_until,
        )
        .await
    }

    async fn sealed_pair(
        &self,
        presented: &[u8; 32],
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        PostgresStore::sealed_pair(self, presented, now).await
    }

    async fn account_locked_until(
        &self,
        account: &[u8; 32],
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        PostgresStore::account_locked_until(self, account, now).await
    }

    async fn account_failed(
        &self,
        account: &[u8; 32],
        policy: &LockoutPolicy,
        now: u64,
    ) -> Result<Option<u64>, StoreError> {
        PostgresStore::account_failed(self, account, policy, now).await
    }

    async fn account_succeeded(&self, account: &[u8; 32]) -> Result<(), StoreError> {
        PostgresStore::account_succeeded(self, account).await
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        PostgresStore::create_api_key(self, key).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        PostgresStore::api_key(self, id).await
    }

    async fn user_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        PostgresStore::user_api_keys(self, user_id).await
    }

    async fn live_api_keys(&self) -> Result<Vec<(ApiKeyRecord, String)>, StoreError> {
        PostgresStore::live_api_keys(self).await
    }

    async fn revoke_api_key(&self, id: &str, now: u64) -> Result<Option<ApiKeyRecord>, StoreError> {
        PostgresStore::revoke_api_key(self, id, now).await
    }

    async fn touch_api_key(&self, id: &str, at: u64) -> Result<(), StoreError> {
        PostgresStore::touch_api_key(self, id, at).await
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        PostgresStore::check_writable(self).await
    }

    /// A commit is durable when it returns (`synchronous_commit` is on by
    /// default), so there is nothing left to wait for.
    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}
