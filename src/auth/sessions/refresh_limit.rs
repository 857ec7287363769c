//! Refresh rate limits: rotations per session and refresh requests per
//! client address, each counted over a fixed minute in a map of bounded
//! size. A refused refresh gets 429 with Retry-After, like a login.
//!
//! Kept apart from `auth/throttle.rs`, which counts failures: here every
//! request counts, and nothing locks anyone out beyond the minute.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::throttle::{client_block, Throttled};

/// The span requests are counted over.
const WINDOW: Duration = Duration::from_secs(60);

/// The two counters, each behind its own lock, never held across `.await`.
pub struct RefreshLimits {
    sessions: Mutex<Windows<String>>,
    addresses: Mutex<Windows<IpAddr>>,
    /// IPv6 clients sharing this many leading bits count as one, as in the
    /// login throttle (`[auth.throttle] ipv6_prefix`).
    ipv6_prefix: u8,
}

impl RefreshLimits {
    /// `max_entries` bounds each map; when one is full the oldest window
    /// goes first (forgetting a count only ever admits a little more).
    pub fn new(per_session: u32, per_address: u32, max_entries: usize, ipv6_prefix: u8) -> Self {
        Self {
            sessions: Mutex::new(Windows::new(per_session, max_entries)),
            addresses: Mutex::new(Windows::new(per_address, max_entries)),
            ipv6_prefix,
        }
    }

    /// Refuses a rotation of the session `family_id` once it made its
    /// limit this minute. Counts nothing: only a rotation that happens
    /// counts ([`Self::count_session`]), so presentations of a token already
    /// rotated still reach reuse detection, and since a session's rotations
    /// follow one another, concurrent checks cannot overshoot the limit.
    pub fn check_session(&self, family_id: &str, now: Instant) -> Result<(), Throttled> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(family_id, now)
    }

    /// Counts one rotation the session `family_id` made.
    pub fn count_session(&self, family_id: &str, now: Instant) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count(family_id, now);
    }

    /// Counts one refresh request from `peer`, before any store work.
    pub fn admit_address(&self, peer: IpAddr, now: Instant) -> Result<(), Throttled> {
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(&client_block(peer, self.ipv6_prefix), now)
    }

    /// Forgets windows that ended.
    pub fn prune(&self, now: Instant) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expire(now);
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expire(now);
    }
}

/// Fixed windows per key, expiring oldest first from a queue.
struct Windows<K> {
    limit: u32,
    max_entries: usize,
    /// Window start and requests counted in it.
    entries: HashMap<K, (Instant, u32)>,
    /// One item per entry, in window-start order.
    order: VecDeque<(Instant, K)>,
}

impl<K: Hash + Eq + Clone> Windows<K> {
    fn new(limit: u32, max_entries: usize) -> Self {
        Self {
            limit: limit.max(1),
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn admit<Q>(&mut self, key: &Q, now: Instant) -> Result<(), Throttled>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check(key, now)?;
        self.count(key, now);
        Ok(())
    }

    fn check<Q>(&mut self, key: &Q, now: Instant) -> Result<(), Throttled>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.expire(now);
        match self.entries.get(key) {
            Some((start, count)) if *count >= self.limit => Err(Throttled {
                retry_after: (*start + WINDOW).saturating_duration_since(now),
            }),
            _ => Ok(()),
        }
    }

    fn count<Q>(&mut self, key: &Q, now: Instant)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.expire(now);
        if let Some((_, count)) = self.entries.get_mut(key) {
            *count = count.saturating_add(1);
            return;
        }
        while self.entries.len() >= self.max_entries && !self.order.is_empty() {
            self.pop_oldest();
        }
        let key = key.to_owned();
        self.entries.insert(key.clone(), (now, 1));
        self.order.push_back((now, key));
    }

    fn expire(&mut self, now: Instant) {
        while let Some((start, _)) = self.order.front() {
            if now.saturating_duration_since(*start) < WINDOW {
                return;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((start, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|(s, _)| *s == start) {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_for_the_minute_then_resets() {
        let start = Instant::now();
        let limits = RefreshLimits::new(2, 100, 10, 56);
        for _ in 0..2 {
            assert!(limits.check_session("f", start).is_ok());
            limits.count_session("f", start);
        }
        let refused = limits
            .check_session("f", start + Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(40));
        assert!(limits.check_session("g", start).is_ok());
        assert!(limits.check_session("f", start + WINDOW).is_ok());
    }

    #[test]
    fn addresses_share_a_count_per_ipv6_prefix() {
        let start = Instant::now();
        let limits = RefreshLimits::new(100, 1, 10, 56);
        let a: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let b: IpAddr = "2001:db8:0:2::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:1::1".parse().unwrap();
        assert!(limits.admit_address(a, start).is_ok());
        assert!(limits.admit_address(b, start).is_err());
        assert!(limits.admit_address(c, start).is_ok());
    }

    #[test]
    fn the_maps_stay_within_their_bound() {
        let start = Instant::now();
        let limits = RefreshLimits::new(1, 1, 3, 56);
        for i in 0..50 {
            limits.count_session(&format!("f{i}"), start);
        }
        let sessions = limits.sessions.lock().unwrap();
        assert_eq!(sessions.entries.len(), 3);
        assert_eq!(sessions.order.len(), 3);
    }
}
