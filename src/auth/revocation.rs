//! In-memory revocation state consulted on every authenticated request: the
//! minimum token version per user and the sessions logged out early.
//!
//! It is loaded from the store at start and updated by every change the
//! account endpoints make, so the proxied path does two hash lookups, never
//! a database read. Every revocation also bumps a generation counter that
//! live tunnels and streams watch ([`RevocationList::changes`]), so they
//! re-check their session at once instead of polling.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use tokio::sync::watch;

/// A user whose tokens can never be valid again (deleted).
pub const DELETED: u32 = u32::MAX;

pub struct RevocationList {
    inner: RwLock<Inner>,
    /// Bumped after every revocation, once the new state is readable.
    changes: watch::Sender<u64>,
}

impl Default for RevocationList {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            changes: watch::Sender::new(0),
        }
    }
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

    /// Notified after every revocation: a live connection subscribes, then
    /// re-checks [`RevocationList::allows`] each time this changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn notify(&self) {
        self.changes
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Records the user's current token version (tokens below it die).
    /// The floor only rises: two revocations finishing out of order (each
    /// reporting the version its own store write produced) must leave the
    /// higher one, and nothing lowers a deletion ([`DELETED`] is the top).
    pub fn set_min_version(&self, user: &str, version: u32) {
        if version == 0 {
            return; // Every version passes a floor of 0.
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let floor = inner.min_version.entry(user.to_owned()).or_insert(0);
        *floor = (*floor).max(version);
        drop(inner);
        self.notify();
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
        drop(inner);
        self.notify();
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

    #[test]
    fn every_revocation_is_announced_and_pruning_is_not() {
        let list = RevocationList::default();
        let mut changes = list.changes();
        list.revoke_session("s1", 100);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        list.set_min_version("u1", 3);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        list.delete_user("u2");
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        list.prune(1_000);
        assert!(!changes.has_changed().unwrap());
    }

    #[test]
    fn the_version_floor_never_goes_down() {
        let list = RevocationList::default();
        // A password change (version 3) reported after a logout-all that
        // committed later (version 4).
        list.set_min_version("u1", 4);
        list.set_min_version("u1", 3);
        assert!(!list.allows("u1", 3, None));
        assert!(list.allows("u1", 4, None));
        list.set_min_version("u1", 0);
        assert!(!list.allows("u1", 3, None));
        // A role change reported after the deletion it raced.
        list.delete_user("u1");
        list.set_min_version("u1", 5);
        assert!(!list.allows("u1", 5, None));
        assert!(!list.allows("u1", DELETED - 1, None));
    }
}
