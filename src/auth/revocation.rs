//! In-memory revocation state consulted on every authenticated request: the
//! minimum token version per user and the sessions logged out early.
//!
//! It is loaded from the store at start and updated by every change the
//! account endpoints make, so the proxied path does two hash lookups, never
//! a database read. Every revocation also bumps a generation counter that
//! live tunnels and streams watch ([`RevocationList::changes`]), so they
//! re-check their session at once instead of polling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A user whose tokens can never be valid again (deleted).
pub const DELETED: u32 = u32::MAX;

pub struct RevocationList {
    inner: RwLock<Inner>,
    /// Bumped after every revocation, once the new state is readable.
    changes: watch::Sender<u64>,
    /// The same count, read without a lock on every request: a connection
    /// that admitted its token at this count need not look again until it
    /// moves ([`RevocationList::generation`]).
    generation: AtomicU64,
    feed: Feed,
}

impl Default for RevocationList {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            changes: watch::Sender::new(0),
            generation: AtomicU64::new(0),
            feed: Feed::default(),
        }
    }
}

/// Health of the feed that brings other instances' revocations (the
/// PostgreSQL listener). With the embedded store there is no feed and the
/// list is always current.
#[derive(Default)]
struct Feed {
    /// Milliseconds the feed may be down before the list counts as stale;
    /// 0 when there is no feed.
    max_staleness_ms: AtomicU64,
    /// Unix milliseconds when the feed went down; 0 while it is up.
    down_since_ms: AtomicU64,
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

    /// How many times the list has changed so far. A caller that found a
    /// token allowed when this read `n` may take it as allowed for as long
    /// as it still reads `n`: every revocation is readable before the count
    /// moves past it. Pruning does not move it, as it allows nothing new.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn notify(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.changes
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// From now on the list is fed by a remote source and is stale when that
    /// source has been down longer than `max_staleness`.
    pub fn follow_feed(&self, max_staleness: Duration) {
        let ms = u64::try_from(max_staleness.as_millis()).unwrap_or(u64::MAX);
        self.feed
            .max_staleness_ms
            .store(ms.max(1), Ordering::Relaxed);
    }

    /// The feed went down at `at` (kept if it was already down).
    pub fn feed_down(&self, at: SystemTime) {
        let ms = unix_millis(at).max(1);
        let _ =
            self.feed
                .down_since_ms
                .compare_exchange(0, ms, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The feed is up and the list has caught up with it.
    pub fn feed_up(&self) {
        self.feed.down_since_ms.store(0, Ordering::Release);
    }

    /// How long the feed has been down at `now`, when that is beyond the
    /// allowed staleness; `None` while the list can be trusted.
    pub fn stale_for(&self, now: SystemTime) -> Option<Duration> {
        let max = self.feed.max_staleness_ms.load(Ordering::Relaxed);
        let since = self.feed.down_since_ms.load(Ordering::Acquire);
        if max == 0 || since == 0 {
            return None;
        }
        let down = unix_millis(now).saturating_sub(since);
        (down > max).then(|| Duration::from_millis(down))
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

/// The PostgreSQL store's listener keeps this list current.
impl crate::store::postgres::RevocationFeed for RevocationList {
    fn set_min_version(&self, user: &str, version: u32) {
        RevocationList::set_min_version(self, user, version);
    }
    fn delete_user(&self, user: &str) {
        RevocationList::delete_user(self, user);
    }
    fn revoke_session(&self, session: &str, until: u64) {
        RevocationList::revoke_session(self, session, until);
    }
    fn follow_feed(&self, max_staleness: Duration) {
        RevocationList::follow_feed(self, max_staleness);
    }
    fn feed_down(&self, at: SystemTime) {
        RevocationList::feed_down(self, at);
    }
    fn feed_up(&self) {
        RevocationList::feed_up(self);
    }
    fn stale_for(&self, now: SystemTime) -> Option<Duration> {
        RevocationList::stale_for(self, now)
    }
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod feed_tests;

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
    fn a_feed_down_too_long_makes_the_list_stale_until_it_is_up() {
        let list = RevocationList::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        // No feed (sled): never stale.
        list.feed_down(t0);
        assert_eq!(list.stale_for(t0 + Duration::from_secs(3600)), None);
        let list = RevocationList::default();
        list.follow_feed(Duration::from_secs(30));
        list.feed_down(t0);
        // A second report does not move the start.
        list.feed_down(t0 + Duration::from_secs(20));
        assert_eq!(list.stale_for(t0 + Duration::from_secs(30)), None);
        assert_eq!(
            list.stale_for(t0 + Duration::from_secs(31)),
            Some(Duration::from_secs(31))
        );
        list.feed_up();
        assert_eq!(list.stale_for(t0 + Duration::from_secs(60)), None);
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
