//! The API-key half of [`SledStore`]: key records by id and the per-user
//! index, written in transactions that also read the owner, so a key is
//! never left behind by a deletion.

use super::*;
use crate::store::ApiKeyRecord;

impl SledStore {
    pub fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        check_id(&key.id)?;
        check_id(&key.user_id)?;
        let bytes = encode(key)?;
        self.transact(|tx| {
            // Read in the transaction: a concurrent delete_user either sees
            // this key (and removes it) or makes this call fail.
            if tx.users.get(key.user_id.as_bytes())?.is_none() {
                return abort(StoreError::UnknownUser(key.user_id.clone()));
            }
            if tx.api_keys.get(key.id.as_bytes())?.is_some() {
                return abort(StoreError::Invalid(
                    "an API key with this id already exists",
                ));
            }
            tx.api_keys.insert(key.id.as_bytes(), bytes.clone())?;
            tx.user_api_keys
                .insert(composite(key.user_id.as_bytes(), key.id.as_bytes()), EMPTY)?;
            Ok(())
        })
    }

    pub fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        match self.trees.api_keys.get(id)? {
            Some(bytes) => decode("api key", id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn user_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut keys = Vec::new();
        for id in self.user_api_key_ids(user_id)? {
            // An index entry whose record is gone (a purge in progress) is skipped.
            if let Some(key) = self.api_key(&id)? {
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    pub fn live_api_keys(&self) -> Result<Vec<(ApiKeyRecord, String)>, StoreError> {
        let mut live = Vec::new();
        for entry in self.trees.api_keys.iter() {
            let (id, bytes) = entry?;
            let key: ApiKeyRecord = decode("api key", &id, &bytes)?;
            if key.revoked_at.is_some() {
                continue;
            }
            // A key whose owner is gone is being purged: not live.
            if let Some(owner) = self.user_by_id(&key.user_id)? {
                live.push((key, owner.role));
            }
        }
        Ok(live)
    }

    pub fn revoke_api_key(&self, id: &str, now: u64) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.transact(|tx| {
            let Some(bytes) = tx.api_keys.get(id.as_bytes())? else {
                return Ok(None);
            };
            let mut key: ApiKeyRecord = decode_tx("api key", id.as_bytes(), &bytes)?;
            if key.revoked_at.is_none() {
                key.revoked_at = Some(now);
                tx.api_keys.insert(id.as_bytes(), encode_tx(&key)?)?;
            }
            Ok(Some(key))
        })
    }

    pub fn touch_api_key(&self, id: &str, at: u64) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(bytes) = tx.api_keys.get(id.as_bytes())? else {
                return Ok(());
            };
            let mut key: ApiKeyRecord = decode_tx("api key", id.as_bytes(), &bytes)?;
            if key.last_used_at.is_some_and(|last| last >= at) {
                return Ok(());
            }
            key.last_used_at = Some(at);
            tx.api_keys.insert(id.as_bytes(), encode_tx(&key)?)?;
            Ok(())
        })
    }

    /// The ids of a user's keys, from the index.
    pub(super) fn user_api_key_ids(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let prefix = composite(user_id.as_bytes(), b"");
        let mut ids = Vec::new();
        for entry in self.trees.user_api_keys.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let rest = key.get(prefix.len()..).unwrap_or_default();
            ids.push(utf8("user_api_keys key", rest)?);
        }
        Ok(ids)
    }

    /// Removes whatever keys the user still has (after its deletion).
    pub(super) fn purge_api_keys(&self, user_id: &str) -> Result<(), StoreError> {
        let ids = self.user_api_key_ids(user_id)?;
        if ids.is_empty() {
            return Ok(());
        }
        self.transact(|tx| {
            for id in &ids {
                remove_api_key(tx, user_id, id)?;
            }
            Ok(())
        })
    }
}

/// Removes one key of `user_id` with its index entry.
pub(super) fn remove_api_key(tx: &Tx, user_id: &str, id: &str) -> TxResult<()> {
    tx.api_keys.remove(id.as_bytes())?;
    tx.user_api_keys
        .remove(composite(user_id.as_bytes(), id.as_bytes()))?;
    Ok(())
}
