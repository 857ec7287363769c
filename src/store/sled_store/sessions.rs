//! The session half of [`SledStore`]: refresh families, their chains and
//! tokens, revocation and sweeping, and the access lifetimes in use.

use super::*;

impl SledStore {
    pub fn create_family(
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
        let family_bytes = encode(family)?;
        let record = RefreshRecord {
            expires_at: record.expires_at.min(family.expires_at),
            ..record.clone()
        };
        let record_bytes = encode(&record)?;
        self.transact(|tx| {
            // Read inside the transaction so a concurrent delete_user either
            // sees this family or makes this call fail, and a concurrent
            // password change, logout-all or role change either revokes
            // this family or makes this call fail.
            let Some(bytes) = tx.users.get(family.user_id.as_bytes())? else {
                return abort(StoreError::UnknownUser(family.user_id.clone()));
            };
            let user: User = decode_tx("user", family.user_id.as_bytes(), &bytes)?;
            if !verified.matches(&user) {
                return abort(StoreError::UserChanged(user.id));
            }
            if tx.families.get(family.id.as_bytes())?.is_some() {
                return abort(StoreError::Invalid("a family with this id already exists"));
            }
            if tx.refresh.get(first_token)?.is_some() {
                return abort(StoreError::Invalid("this refresh token is already stored"));
            }
            tx.families
                .insert(family.id.as_bytes(), family_bytes.clone())?;
            tx.user_families.insert(
                composite(family.user_id.as_bytes(), family.id.as_bytes()),
                EMPTY,
            )?;
            tx.expiry.insert(
                expiry_key(family.expires_at, &[FAMILY], family.id.as_bytes()),
                EMPTY,
            )?;
            insert_token(tx, first_token, &record, record_bytes.clone())?;
            Ok(())
        })
    }

    pub fn refresh_record(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<RefreshRecord>, StoreError> {
        match self.trees.refresh.get(token_hash)? {
            Some(bytes) => decode("refresh record", token_hash, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn family(&self, id: &str) -> Result<Option<Family>, StoreError> {
        match self.trees.families.get(id)? {
            Some(bytes) => decode("family", id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn chain(&self, family_id: &str) -> Result<Option<Chain>, StoreError> {
        match self.trees.chains.get(family_id)? {
            Some(bytes) => decode("chain", family_id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn rotate(
        &self,
        presented: &[u8; 32],
        new_hash: &[u8; 32],
        new_record: &RefreshRecord,
        step: &ChainStep,
        now: u64,
    ) -> Result<RotateOutcome, StoreError> {
        let tag_key = hex(&step.tag_key);
        self.transact(|tx| {
            let Some(bytes) = tx.refresh.get(presented)? else {
                return Ok(RotateOutcome::Unknown);
            };
            let mut record: RefreshRecord = decode_tx("refresh record", presented, &bytes)?;
            let Some(bytes) = tx.families.get(record.family_id.as_bytes())? else {
                return Ok(RotateOutcome::Unknown);
            };
            let family: Family = decode_tx("family", record.family_id.as_bytes(), &bytes)?;
            match RotateOutcome::before_rotation(&record, &family, new_record, now) {
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => {}
                Err(err) => return abort(err),
            }
            if tx.refresh.get(new_hash)?.is_some() {
                return abort(StoreError::Invalid("this refresh token is already stored"));
            }
            let family_key = record.family_id.as_bytes();
            let previous: Option<Chain> = match tx.chains.get(family_key)? {
                Some(bytes) => Some(decode_tx("chain", family_key, &bytes)?),
                None => None,
            };
            let expected = previous
                .as_ref()
                .map_or(1, |c| c.generation.saturating_add(1));
            if step.generation != expected
                || previous.as_ref().is_some_and(|c| c.tag_key != tag_key)
            {
                // Only one token of a family is ever unrotated, so a step
                // computed from a stale chain means a caller bug.
                return abort(StoreError::Invalid(
                    "a rotation must advance its family's chain by one, with its key",
                ));
            }
            let mut retired = Vec::new();
            for entry in previous.map(|chain| chain.retired).unwrap_or_default() {
                let Some(old) = hash_from_hex(&entry.hash) else {
                    return abort(StoreError::Corrupt("chain retired hash".to_owned()));
                };
                if entry.keep_until <= now {
                    remove_tokens(tx, &record.family_id, &[old])?;
                } else {
                    retired.push(entry);
                }
            }
            match step.keep_presented_until {
                Some(keep_until) if keep_until <= now => {
                    remove_tokens(tx, &record.family_id, &[*presented])?;
                }
                keep => {
                    let old_expiry = record.expires_at;
                    record.rotated_at = Some(now);
                    record.replaced_by = Some(hex(new_hash));
                    if let Some(keep_until) = keep {
                        // The expiry index then drops it after the grace,
                        // should no later rotation come to do it.
                        record.expires_at = record.expires_at.min(keep_until);
                        retired.push(Retired {
                            hash: hex(presented),
                            keep_until: record.expires_at,
                        });
                    }
                    tx.refresh.insert(&presented[..], encode_tx(&record)?)?;
                    tx.expiry
                        .remove(expiry_key(old_expiry, &[TOKEN], presented))?;
                    tx.expiry
                        .insert(expiry_key(record.expires_at, &[TOKEN], presented), EMPTY)?;
                }
            }
            // Untracked ones still leave at their `keep_until`, by the sweep.
            let excess = retired.len().saturating_sub(MAX_TRACKED_RETIRED);
            retired.drain(..excess);
            let chain = Chain {
                generation: step.generation,
                tag_key: tag_key.clone(),
                retired,
            };
            tx.chains.insert(family_key, encode_tx(&chain)?)?;
            let successor = RefreshRecord {
                family_id: record.family_id.clone(),
                user_id: record.user_id.clone(),
                expires_at: new_record.expires_at.min(family.expires_at),
                rotated_at: None,
                replaced_by: None,
            };
            let successor_bytes = encode_tx(&successor)?;
            insert_token(tx, new_hash, &successor, successor_bytes)?;
            Ok(RotateOutcome::Rotated { family })
        })
    }

    pub fn revoke_family(&self, family_id: &str, now: u64) -> Result<bool, StoreError> {
        self.transact(|tx| revoke_in(tx, family_id, now))
    }

    pub fn revoke_user_families(
        &self,
        user_id: &str,
        except_family: Option<&str>,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let candidates: Vec<String> = self
            .user_family_ids(user_id)?
            .into_iter()
            .filter(|id| Some(id.as_str()) != except_family)
            .collect();
        self.transact(|tx| {
            let mut revoked = Vec::new();
            for id in &candidates {
                if revoke_in(tx, id, now)? {
                    revoked.push(id.clone());
                }
            }
            Ok(revoked)
        })
    }

    pub fn cap_user_families(
        &self,
        user_id: &str,
        max: usize,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut occupying = Vec::new();
        for (id, seq) in self.user_family_order(user_id)? {
            if let Some(family) = self.family(&id)? {
                if family.expires_at > now {
                    occupying.push((seq, family));
                }
            }
        }
        let Some(excess) = occupying.len().checked_sub(max).filter(|n| *n > 0) else {
            return Ok(Vec::new());
        };
        // Revoked sessions only take room: they go first, then the oldest.
        occupying.sort_by_key(|(seq, f)| (f.revoked_at.is_none(), f.created_at, *seq));
        let victims: Vec<String> = occupying
            .into_iter()
            .take(excess)
            .map(|(_, f)| f.id)
            .collect();
        self.transact(|tx| {
            let mut revoked = Vec::new();
            for id in &victims {
                if revoke_in(tx, id, now)? {
                    revoked.push(id.clone());
                }
                expire_in(tx, id, now)?;
            }
            Ok(revoked)
        })
    }

    pub fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        let t = &self.trees;
        Ok(RecordCounts {
            users: t.users.len(),
            families: t.families.len(),
            chains: t.chains.len(),
            refresh_tokens: t.refresh.len(),
            index_entries: t.family_tokens.len() + t.expiry.len(),
        })
    }

    pub fn revoked_families_since(&self, since: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let mut revoked = Vec::new();
        for entry in self.trees.revocations.range(since.to_be_bytes()..) {
            let (key, _) = entry?;
            let (at, id) = split_timed_key(&key)
                .ok_or_else(|| StoreError::Corrupt("revocations key".to_owned()))?;
            revoked.push((utf8("revocations key", id)?, at));
        }
        Ok(revoked)
    }

    pub fn sweep_expired(&self, now: u64) -> Result<usize, StoreError> {
        // Keys are `expires_at` first, so everything due sorts below this.
        let due = now.saturating_add(1).to_be_bytes();
        let mut removed = 0;
        loop {
            let batch: Vec<IVec> = self
                .trees
                .expiry
                .range(..due)
                .keys()
                .take(SWEEP_BATCH)
                .collect::<Result<_, _>>()?;
            if batch.is_empty() {
                return Ok(removed);
            }
            for key in batch {
                let (_, rest) = split_timed_key(&key)
                    .ok_or_else(|| StoreError::Corrupt("expiry key".to_owned()))?;
                match rest.split_first() {
                    Some((&FAMILY, id)) => {
                        removed += self.purge_family(&utf8("expiry key", id)?)?
                    }
                    Some((&TOKEN, hash)) => {
                        if let Ok(hash) = <[u8; 32]>::try_from(hash) {
                            removed += self.purge_token(&hash)?;
                        }
                    }
                    _ => {}
                }
                // Whatever the entry pointed at is gone (or was never
                // readable); the entry must go too or the sweep would loop.
                self.trees.expiry.remove(&key)?;
            }
        }
    }

    pub fn prune_revocations(&self, before: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        let old: Vec<IVec> = self
            .trees
            .revocations
            .range(..before.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()?;
        for key in old {
            if self.trees.revocations.remove(key)?.is_some() {
                removed += 1;
            }
        }
        for entry in self.trees.tombstones.iter() {
            let (key, value) = entry?;
            let deleted_at = <[u8; 8]>::try_from(value.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if deleted_at < before && self.trees.tombstones.remove(key)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn note_access_lifetime(&self, lifetime: u64, now: u64) -> Result<u64, StoreError> {
        let earlier: Vec<LifetimeInUse> = match self.trees.meta.get(LIFETIMES_KEY)? {
            Some(bytes) => decode("meta", LIFETIMES_KEY, &bytes)?,
            None => Vec::new(),
        };
        let (longest, kept) = lifetimes_in_use(earlier, lifetime, now);
        self.trees.meta.insert(LIFETIMES_KEY, encode(&kept)?)?;
        // At start, before any token of this run exists: durable at once.
        self.trees.meta.flush()?;
        Ok(longest)
    }
}

/// An access lifetime some run minted tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct LifetimeInUse {
    /// Seconds, leeway included.
    lifetime: u64,
    /// When the last token minted with it expires; `None` while the run
    /// using it may still be minting (it is closed at the next start).
    until: Option<u64>,
}

/// Closes the entries of earlier runs (they stopped minting by `now`), drops
/// those whose tokens have all expired or that `lifetime` covers anyway, and
/// opens one for this run. Returns the longest lifetime still in use.
pub(super) fn lifetimes_in_use(
    earlier: Vec<LifetimeInUse>,
    lifetime: u64,
    now: u64,
) -> (u64, Vec<LifetimeInUse>) {
    let mut kept: Vec<LifetimeInUse> = earlier
        .into_iter()
        .map(|entry| LifetimeInUse {
            until: Some(
                entry
                    .until
                    .unwrap_or_else(|| now.saturating_add(entry.lifetime)),
            ),
            ..entry
        })
        .filter(|entry| entry.lifetime > lifetime && entry.until.is_some_and(|u| u > now))
        .collect();
    let longest = kept
        .iter()
        .map(|entry| entry.lifetime)
        .fold(lifetime, u64::max);
    kept.push(LifetimeInUse {
        lifetime,
        until: None,
    });
    (longest, kept)
}

/// Marks a family revoked inside a transaction; true if this call did.
pub(super) fn revoke_in(tx: &Tx, family_id: &str, now: u64) -> TxResult<bool> {
    let Some(bytes) = tx.families.get(family_id.as_bytes())? else {
        return Ok(false);
    };
    let mut family: Family = decode_tx("family", family_id.as_bytes(), &bytes)?;
    if family.revoked_at.is_some() {
        return Ok(false);
    }
    family.revoked_at = Some(now);
    tx.families
        .insert(family_id.as_bytes(), encode_tx(&family)?)?;
    tx.revocations
        .insert(expiry_key(now, b"", family_id.as_bytes()), EMPTY)?;
    Ok(true)
}

/// Ends a family at `now` (never later than it would have), moving its
/// expiry index entry so the sweep purges it.
pub(super) fn expire_in(tx: &Tx, family_id: &str, now: u64) -> TxResult<()> {
    let Some(bytes) = tx.families.get(family_id.as_bytes())? else {
        return Ok(());
    };
    let mut family: Family = decode_tx("family", family_id.as_bytes(), &bytes)?;
    if family.expires_at <= now {
        return Ok(());
    }
    tx.expiry.remove(expiry_key(
        family.expires_at,
        &[FAMILY],
        family_id.as_bytes(),
    ))?;
    family.expires_at = now;
    tx.families
        .insert(family_id.as_bytes(), encode_tx(&family)?)?;
    tx.expiry
        .insert(expiry_key(now, &[FAMILY], family_id.as_bytes()), EMPTY)?;
    Ok(())
}

/// Stores a refresh token with its family and expiry index entries.
pub(super) fn insert_token(
    tx: &Tx,
    hash: &[u8; 32],
    record: &RefreshRecord,
    bytes: Vec<u8>,
) -> TxResult<()> {
    tx.refresh.insert(&hash[..], bytes)?;
    tx.family_tokens
        .insert(composite(record.family_id.as_bytes(), hash), EMPTY)?;
    tx.expiry
        .insert(expiry_key(record.expires_at, &[TOKEN], hash), EMPTY)?;
    Ok(())
}

/// Removes a family record, its index entries and the given tokens.
pub(super) fn remove_family(tx: &Tx, family_id: &str, hashes: &[[u8; 32]]) -> TxResult<usize> {
    let mut removed = remove_tokens(tx, family_id, hashes)?;
    if tx.chains.remove(family_id.as_bytes())?.is_some() {
        removed += 1;
    }
    if let Some(bytes) = tx.families.remove(family_id.as_bytes())? {
        removed += 1;
        // An unreadable record still goes; only its index entries may stay
        // behind, and the sweep and scans skip entries whose record is gone.
        if let Ok(family) = decode::<Family>("family", family_id.as_bytes(), &bytes) {
            tx.user_families
                .remove(composite(family.user_id.as_bytes(), family_id.as_bytes()))?;
            tx.expiry.remove(expiry_key(
                family.expires_at,
                &[FAMILY],
                family_id.as_bytes(),
            ))?;
        }
    }
    Ok(removed)
}

/// Removes tokens of `family_id` with their index entries; counts records.
pub(super) fn remove_tokens(tx: &Tx, family_id: &str, hashes: &[[u8; 32]]) -> TxResult<usize> {
    let mut removed = 0;
    for hash in hashes {
        tx.family_tokens
            .remove(composite(family_id.as_bytes(), hash))?;
        if let Some(bytes) = tx.refresh.remove(&hash[..])? {
            removed += 1;
            if let Ok(record) = decode::<RefreshRecord>("refresh record", hash, &bytes) {
                tx.expiry
                    .remove(expiry_key(record.expires_at, &[TOKEN], hash))?;
            }
        }
    }
    Ok(removed)
}
