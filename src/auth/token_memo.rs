//! The access token a connection presented last, with what verifying it
//! gave. A client sends the same token on every request of a connection, so
//! the connection compares the bytes (a few dozen instructions) instead of
//! hashing them for the shared cache (`token_cache.rs`; SHA-256 of a
//! 350-byte token is ~0.4 µs, a lock and a map lookup on top).
//!
//! The bytes it holds passed the bearer token's character check when they
//! were remembered, so presenting them again skips that check as well.
//!
//! Like the cache, the memo remembers verification, never authorization:
//! expiry is checked on every request, and revocation whenever the
//! revocation list has changed since the token was last admitted (the
//! list's generation, one atomic read). It belongs to one key set: after a
//! reload the token is verified against the new keys.
//! It holds a copy of the last token for the connection's life (freed with
//! the connection), as the connection's read buffer held it.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::identity::VerifiedToken;
use super::keys::KeySet;

#[derive(Default)]
pub struct TokenMemo {
    /// Locked by one request at a time on HTTP/1, briefly by each stream on
    /// HTTP/2.
    last: Mutex<Option<Remembered>>,
}

struct Remembered {
    token: Box<str>,
    /// The key set the token was verified with (weak: a retired key's
    /// material is not kept alive by an idle connection).
    keys: Weak<KeySet>,
    verified: Arc<VerifiedToken>,
    /// The revocation list's generation when the token was last found not
    /// revoked; `None` until it is.
    admitted_in: Option<u64>,
}

impl Remembered {
    /// In constant time: one connection can carry several clients' requests
    /// (from a trusted proxy), and an early exit would tell one of them how
    /// much of its guess matched another's token.
    fn is(&self, token: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.token.as_bytes(), token).is_ok()
    }
}

impl std::fmt::Debug for TokenMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the token.
        f.write_str("TokenMemo")
    }
}

impl TokenMemo {
    /// What verifying `token` with `keys` gave, if it is the token this
    /// connection presented last, byte for byte, and those keys are still
    /// in force.
    pub fn recall(&self, token: &[u8], keys: &Arc<KeySet>) -> Option<Arc<VerifiedToken>> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|seen| seen.keys.as_ptr() == Arc::as_ptr(keys) && seen.is(token))
            .map(|seen| Arc::clone(&seen.verified))
    }

    /// Remembers `token` as verified with `keys`, in place of the last one.
    ///
    /// The memo keeps its own copy of what verifying gave, not the shared
    /// cache's: every request of the connection counts references to the
    /// identity's parts, and on the cache's copy those counts would sit in
    /// memory that every connection presenting the same token, on every
    /// worker, writes to as well (a service's pool of connections shares
    /// one token), each write taking the location from another core.
    pub fn remember(&self, token: &str, keys: &Arc<KeySet>, verified: &VerifiedToken) {
        let remembered = Remembered {
            token: token.into(),
            keys: Arc::downgrade(keys),
            verified: Arc::new(verified.copy()),
            admitted_in: None,
        };
        let replaced = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(remembered);
        drop(replaced);
    }

    /// Whether `verified`, recalled from this memo, was found not revoked
    /// while the revocation list was at `generation`.
    pub fn admitted_in(&self, verified: &Arc<VerifiedToken>, generation: u64) -> bool {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref().is_some_and(|seen| {
            Arc::ptr_eq(&seen.verified, verified) && seen.admitted_in == Some(generation)
        })
    }

    /// Notes that `verified` was found not revoked at `generation`, if it
    /// is still the token this memo holds.
    pub fn admit(&self, verified: &Arc<VerifiedToken>, generation: u64) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(seen) = last.as_mut() {
            if Arc::ptr_eq(&seen.verified, verified) {
                seen.admitted_in = Some(generation);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::AccessClaims;
    use crate::auth::keys::KeyRing;
    use crate::config::secret::AccessSecret;
    use crate::config::Config;

    fn keys(byte: u8) -> Arc<KeySet> {
        let text = "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let config = Config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let secret = AccessSecret::from_bytes(vec![byte; 32]).unwrap();
        KeyRing::from_secret(&config.tokens, &secret).current()
    }

    fn verified() -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken::new(AccessClaims {
            sub: "u".into(),
            role: "r".into(),
            iss: "i".into(),
            aud: "a".into(),
            exp: 10,
            iat: 1,
            nbf: None,
            jti: "j".into(),
            ver: 0,
            sid: None,
        }))
    }

    #[test]
    fn recalls_only_the_same_token_under_the_same_keys() {
        let memo = TokenMemo::default();
        let (current, other) = (keys(1), keys(2));
        assert!(memo.recall(b"t1", &current).is_none());
        let remembered = verified();
        memo.remember("t1", &current, &remembered);
        let recalled = memo.recall(b"t1", &current).expect("remembered");
        assert_eq!(recalled, remembered);
        let again = memo.recall(b"t1", &current).expect("remembered");
        assert!(Arc::ptr_eq(&recalled, &again), "one copy, kept");
        assert!(memo.recall(b"t2", &current).is_none());
        assert!(memo.recall(b"t1x", &current).is_none());
        assert!(memo.recall(b"t", &current).is_none());
        assert!(memo.recall(b"t1", &other).is_none());
        // A second token replaces the first.
        memo.remember("t2", &current, &verified());
        assert!(memo.recall(b"t1", &current).is_none());
        assert!(memo.recall(b"t2", &current).is_some());
    }

    #[test]
    fn the_memo_shares_no_reference_count_with_the_cache() {
        let memo = TokenMemo::default();
        let current = keys(1);
        let cached = verified();
        memo.remember("t1", &current, &cached);
        let recalled = memo.recall(b"t1", &current).expect("remembered");
        assert!(!Arc::ptr_eq(&recalled, &cached));
        let (Ok(mine), Ok(theirs)) = (&recalled.identity, &cached.identity) else {
            panic!("both name an identity");
        };
        assert_eq!(mine, theirs);
        assert!(!Arc::ptr_eq(
            &mine.user_id.shared(),
            &theirs.user_id.shared()
        ));
    }

    #[test]
    fn an_admission_holds_for_its_token_and_generation_only() {
        let memo = TokenMemo::default();
        let current = keys(1);
        memo.remember("t1", &current, &verified());
        let first = memo.recall(b"t1", &current).expect("remembered");
        assert!(!memo.admitted_in(&first, 0), "not admitted yet");
        memo.admit(&first, 4);
        assert!(memo.admitted_in(&first, 4));
        assert!(!memo.admitted_in(&first, 5), "the list moved on");
        // The cache's copy (or any other) is not the memo's.
        assert!(!memo.admitted_in(&verified(), 4));
        // A new token starts unadmitted, and a late note for the old one
        // does not carry over.
        memo.remember("t2", &current, &verified());
        let second = memo.recall(b"t2", &current).expect("remembered");
        memo.admit(&first, 4);
        assert!(!memo.admitted_in(&second, 4));
    }

    #[test]
    fn a_retired_key_set_is_not_kept_alive() {
        let memo = TokenMemo::default();
        let retired = keys(1);
        memo.remember("t1", &retired, &verified());
        let weak = Arc::downgrade(&retired);
        drop(retired);
        assert!(weak.upgrade().is_none());
        assert!(memo.recall(b"t1", &keys(1)).is_none());
    }
}
