//! [`Store`] for [`SledStore`]: each async method runs the synchronous sled
//! operation in place (an embedded store answers in microseconds, as it
//! did before the trait became async for PostgreSQL).

use super::{
    ApiKeyRecord, Chain, ChainStep, Family, FlushFuture, RecordCounts, RefreshRecord,
    RotateOutcome, SledStore, Store, StoreError, User, UserStamp,
};

#[async_trait::async_trait]
impl Store for SledStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        SledStore::create_user(self, user)
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        SledStore::user_by_id(self, id)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        SledStore::user_by_email(self, email)
    }

    async fn list_users(
        &self,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        SledStore::list_users(self, after_id, limit)
    }

    async fn set_role(&self, id: &str, role: &str) -> Result<Option<User>, StoreError> {
        SledStore::set_role(self, id, role)
    }

    async fn set_password(
        &self,
        id: &str,
        verified: &str,
        hash: &str,
        bump_version: bool,
    ) -> Result<Option<User>, StoreError> {
        SledStore::set_password(self, id, verified, hash, bump_version)
    }

    async fn bump_token_version(&self, id: &str) -> Result<Option<User>, StoreError> {
        SledStore::bump_token_version(self, id)
    }

    async fn delete_user(&self, id: &str, now: u64) -> Result<Option<User>, StoreError> {
        SledStore::delete_user(self, id, now)
    }

    async fn deleted_user_ids(&self) -> Result<Vec<String>, StoreError> {
        SledStore::deleted_user_ids(self)
    }

    async fn token_versions(&self) -> Result<Vec<(String, u32)>, StoreError> {
        SledStore::token_versions(self)
    }

    async fn create_family(
        &self,
        family: &Family,
        first_token: &[u8; 32],
        record: &RefreshRecord,
        verified: &UserStamp,
    ) -> Result<(), StoreError> {
        SledStore::create_family(self, family, first_token, record, verified)
    }

    async fn refresh_record(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshRecord>, StoreError> {
        SledStore::refresh_record(self, token_hash)
    }

    async fn family(&self, id: &str) -> Result<Option<Family>, StoreError> {
        SledStore::family(self, id)
    }

    async fn chain(&self, family_id: &str) -> Result<Option<Chain>, StoreError> {
        SledStore::chain(self, family_id)
    }

    async fn rotate(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
    ) -> Result<RotateOutcome, StoreError> {
        SledStore::rotate(self, presented, new_hash, new_record, step, now)
    }

    async fn revoke_family(&self, family_id: &str, now: u64) -> Result<bool, StoreError> {
        SledStore::revoke_family(self, family_id, now)
    }

    async fn revoke_user_families(
        &self,
        user_id: &str,
        except_family: Option<&str>,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        SledStore::revoke_user_families(self, user_id, except_family, now)
    }

    async fn cap_user_families(
        &self,
        user_id: &str,
        max: usize,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        SledStore::cap_user_families(self, user_id, max, now)
    }

    async fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        SledStore::record_counts(self)
    }

    async fn revoked_families_since(&self, since: u64) -> Result<Vec<(String, u64)>, StoreError> {
        SledStore::revoked_families_since(self, since)
    }

    async fn sweep_expired(&self, now: u64) -> Result<usize, StoreError> {
        SledStore::sweep_expired(self, now)
    }

    async fn prune_revocations(&self, before: u64) -> Result<usize, StoreError> {
        SledStore::prune_revocations(self, before)
    }

    async fn note_access_lifetime(&self, lifetime: u64, now: u64) -> Result<u64, StoreError> {
        SledStore::note_access_lifetime(self, lifetime, now)
    }

    /// A write and fsync of a probe file in the database directory (the
    /// disk is full, or was remounted read-only), off the async workers,
    /// then sled's own flush (sled fails every operation after an I/O error).
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        SledStore::create_api_key(self, key)
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        SledStore::api_key(self, id)
    }

    async fn user_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        SledStore::user_api_keys(self, user_id)
    }

    async fn live_api_keys(&self) -> Result<Vec<(ApiKeyRecord, String)>, StoreError> {
        SledStore::live_api_keys(self)
    }

    async fn revoke_api_key(&self, id: &str, now: u64) -> Result<Option<ApiKeyRecord>, StoreError> {
        SledStore::revoke_api_key(self, id, now)
    }

    async fn touch_api_key(&self, id: &str, at: u64) -> Result<(), StoreError> {
        SledStore::touch_api_key(self, id, at)
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let dir = self.path().to_owned();
        tokio::task::spawn_blocking(move || probe_write(&dir))
            .await
            .map_err(|err| StoreError::FlushTask(err.to_string()))?
            .map_err(|source| StoreError::NotWritable {
                path: self.path().join(STORE_PROBE_FILE),
                source,
            })?;
        SledStore::flush(self).await
    }

    fn flush(&self) -> FlushFuture<'_> {
        SledStore::flush(self)
    }
}

/// The file the readiness probe writes, fsyncs and removes in the database
/// directory.
pub const STORE_PROBE_FILE: &str = "readiness.probe";

fn probe_write(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(STORE_PROBE_FILE);
    let mut file = std::fs::File::create(&path)?;
    file.write_all(b"authgate readiness probe\n")?;
    file.sync_all()?;
    drop(file);
    match std::fs::remove_file(&path) {
        // A concurrent probe removed it first.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
