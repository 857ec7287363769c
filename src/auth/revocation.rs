//! In-memory revocation state consulted on every authenticated request: the
//! minimum token version per user and the sessions logged out early.
//!
//! It is loaded from the store at start and updated by every change the
//! account endpoints make, so the proxied path does two hash lookups, never
//! a database read.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// A user whose tokens can never be valid again (deleted).
pub const DELETED: u32 = u32::MAX;

#[derive(Default)]
pub struct RevocationList {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Tokens with `ver` below this are revoked; absent means 0.
    min_version: HashMap<String, u32>,
    /// Sessions revoked before their access tokens expire, with the unix time
    /// after which no access token of theirs can still be valid.
    revoked_sessions: HashMap<String, u64>,
}

impl RevocationList {
    /// True when a token for `user` at `version` in `session` is still allowed.
    pub fn allows(&self, user: &str, version: u32, session: Option<&str>) -> bool {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(min) = inner.min_version.get(user) {
            if version < *min || *min == DELETED {
                return false;
            }
        }
        match session {
            Some(sid) => !inner.revoked_sessions.contains_key(sid),
            None => true,
        }
    }

    /// Records the user's current token version (tokens below it die).
    pub fn set_min_version(&self, user: &str, version: u32) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if version == 0 {
            inner.min_version.remove(user);
        } else {
            inner.min_version.insert(user.to_owned(), version);
        }
    }

    /// Every token of this user is refused from now on.
    pub fn delete_user(&self, user: &str) {
        self.set_min_version(user, DELETED);
    }

    /// Access tokens of `session` are refused until `until` (unix seconds),
    /// when the last of them has expired anyway.
    pub fn revoke_session(&self, session: &str, until: u64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.revoked_sessions.insert(session.to_owned(), until);
    }

    /// Forgets session revocations whose tokens have all expired.
    pub fn prune(&self, now: u64) -> usize {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let before = inner.revoked_sessions.len();
        inner.revoked_sessions.retain(|_, until| *until > now);
        before - inner.revoked_sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sessions_and_deletion() {
        let list = RevocationList::default();
        assert!(list.allows("u1", 0, Some("s1")));
        list.set_min_version("u1", 2);
        assert!(!list.allows("u1", 1, None));
        assert!(list.allows("u1", 2, None));
        list.revoke_session("s1", 100);
        assert!(!list.allows("u1", 2, Some("s1")));
        assert!(list.allows("u1", 2, Some("s2")));
        assert_eq!(list.prune(50), 0);
        assert_eq!(list.prune(100), 1);
        assert!(list.allows("u1", 2, Some("s1")));
        list.delete_user("u1");
        assert!(!list.allows("u1", u32::MAX - 1, None));
        assert!(!list.allows("u1", DELETED, None));
    }
}
