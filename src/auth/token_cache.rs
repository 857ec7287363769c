//! The verified-token cache: each distinct access token's signature is
//! checked once, and its claims (with the identity they name) remembered
//! under the SHA-256 of the token.
//!
//! It caches verification, never authorization (as Envoy's jwt_authn does):
//! the caller still checks `exp`/`nbf`/`iat` against its clock and the
//! revocation list on every request. Memory is bounded by a fixed number of
//! entries spread over independently locked shards; a full shard drops its
//! expired entries first, then arbitrary ones. The cache belongs to one key
//! set, so a reload that retires a key starts from an empty cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::identity::VerifiedToken;

/// Shards, each with its own lock, so concurrent requests rarely wait.
const SHARDS: usize = 16;

/// Entries held at most. An entry is the 32-byte key plus the claims and the
/// identity built from them (about 450 bytes with their strings and map
/// overhead): ~7 MiB when full.
pub(crate) const DEFAULT_CAPACITY: usize = 16 * 1024;

/// The cache key: the token's SHA-256, so the cache never holds a token.
pub(crate) type TokenDigest = [u8; 32];

pub struct VerifiedCache {
    shards: Vec<Mutex<HashMap<TokenDigest, Arc<VerifiedToken>>>>,
    per_shard: usize,
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    pub fn digest(token: &str) -> TokenDigest {
        crate::digest::sha256(&[token.as_bytes()])
    }

    /// Claims whose signature was verified before; their times are not checked.
    pub fn get(&self, digest: &TokenDigest) -> Option<Arc<VerifiedToken>> {
        let shard = self.shard(digest)?;
        let map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(digest).cloned()
    }

    /// Remembers a verified token; `now` (unix seconds) picks what to evict.
    pub fn insert(&self, digest: TokenDigest, verified: Arc<VerifiedToken>, now: u64) {
        let Some(shard) = self.shard(&digest) else {
            return;
        };
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(&digest) {
            map.retain(|_, entry| entry.claims.exp >= now);
            while map.len() >= self.per_shard {
                let Some(victim) = map.keys().next().copied() else {
                    break;
                };
                map.remove(&victim);
            }
        }
        map.insert(digest, verified);
    }

    /// Entries held now, across all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(
        &self,
        digest: &TokenDigest,
    ) -> Option<&Mutex<HashMap<TokenDigest, Arc<VerifiedToken>>>> {
        let index = usize::from(digest[0]) % SHARDS;
        self.shards.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::AccessClaims;

    fn claims(exp: u64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken::new(AccessClaims {
            sub: "u".into(),
            role: "r".into(),
            iss: "i".into(),
            aud: "a".into(),
            iat: 0,
            exp,
            nbf: None,
            jti: "j".into(),
            ver: 0,
            sid: None,
        }))
    }

    #[test]
    fn holds_at_most_its_capacity() {
        let cache = VerifiedCache::new(64);
        for i in 0..10_000u32 {
            let token = format!("token-{i}");
            cache.insert(VerifiedCache::digest(&token), claims(1_000), 10);
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        assert!(cache.len() >= 16);
    }

    #[test]
    fn a_full_shard_drops_expired_entries_first() {
        let cache = VerifiedCache::new(SHARDS);
        // One entry per shard is the capacity; fill a shard with an expired one.
        let mut expired = None;
        let mut fresh = None;
        for i in 0..10_000u32 {
            let digest = VerifiedCache::digest(&format!("t{i}"));
            if (digest[0] as usize).is_multiple_of(SHARDS) {
                if expired.is_none() {
                    expired = Some(digest);
                } else {
                    fresh = Some(digest);
                    break;
                }
            }
        }
        let (expired, fresh) = (expired.unwrap(), fresh.unwrap());
        cache.insert(expired, claims(5), 1);
        cache.insert(fresh, claims(100), 50);
        assert!(cache.get(&expired).is_none());
        assert!(cache.get(&fresh).is_some());
    }
}
