//! Reading a whole sled database out, for `authgate store copy`: every
//! record kind, with the hashes and timestamps their keys carry.

use super::{decode, split_timed_key, utf8, SledStore};
use crate::store::{ApiKeyRecord, Chain, Family, RefreshRecord, StoreError, User};

/// Everything a store holds that another store needs to take over.
#[derive(Debug, Default)]
pub struct Export {
    pub users: Vec<User>,
    /// `(user id, deleted_at)`.
    pub tombstones: Vec<(String, u64)>,
    pub families: Vec<Family>,
    pub chains: Vec<(String, Chain)>,
    pub refresh_tokens: Vec<([u8; 32], RefreshRecord)>,
    /// `(family id, revoked_at)`.
    pub revocations: Vec<(String, u64)>,
    /// Hashes only, as stored; revoked ones too, so their ids stay known.
    pub api_keys: Vec<ApiKeyRecord>,
}

impl SledStore {
    /// Reads every record. Run it on a database no gateway is using (the
    /// open already makes sure of that).
    pub fn export(&self) -> Result<Export, StoreError> {
        let t = &self.trees;
        let mut out = Export::default();
        for entry in t.users.iter() {
            let (key, bytes) = entry?;
            out.users.push(decode("user", &key, &bytes)?);
        }
        for entry in t.tombstones.iter() {
            let (key, value) = entry?;
            let at = <[u8; 8]>::try_from(value.as_ref()).map_or(0, u64::from_be_bytes);
            out.tombstones.push((utf8("tombstones key", &key)?, at));
        }
        for entry in t.families.iter() {
            let (key, bytes) = entry?;
            out.families.push(decode("family", &key, &bytes)?);
        }
        for entry in t.chains.iter() {
            let (key, bytes) = entry?;
            out.chains
                .push((utf8("chains key", &key)?, decode("chain", &key, &bytes)?));
        }
        for entry in t.refresh.iter() {
            let (key, bytes) = entry?;
            let hash = <[u8; 32]>::try_from(key.as_ref())
                .map_err(|_| StoreError::Corrupt("refresh key".to_owned()))?;
            out.refresh_tokens
                .push((hash, decode("refresh record", &key, &bytes)?));
        }
        for entry in t.revocations.iter() {
            let (key, _) = entry?;
            let (at, id) = split_timed_key(&key)
                .ok_or_else(|| StoreError::Corrupt("revocations key".to_owned()))?;
            out.revocations.push((utf8("revocations key", id)?, at));
        }
        for entry in t.api_keys.iter() {
            let (key, bytes) = entry?;
            out.api_keys.push(decode("api key", &key, &bytes)?);
        }
        Ok(out)
    }
}
