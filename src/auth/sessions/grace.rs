//! The refresh grace cache: rotations of the last `refresh_reuse_grace`,
//! keyed by the presented token's hash, so a retry shares the pair already
//! minted. Entries expire in insertion order from a queue (no scan of the
//! map), and the map never holds more than its bound.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Entries by token hash, with the queue they expire from.
pub(super) struct GraceCache<V> {
    grace: Duration,
    /// Past this many entries the oldest goes first: a retry of it then gets
    /// 401 without punishing its session (the store still knows the token).
    max_entries: usize,
    /// Each value with the instant it was inserted.
    entries: HashMap<[u8; 32], (Instant, V)>,
    /// One item per entry, oldest first (insertion instants never decrease).
    order: VecDeque<(Instant, [u8; 32])>,
}

impl<V: Clone> GraceCache<V> {
    pub(super) fn new(grace: Duration, max_entries: usize) -> Self {
        Self {
            grace,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Drops entries older than the grace; touches only those.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some(&(at, _)) = self.order.front() {
            if now.saturating_duration_since(at) <= self.grace {
                return;
            }
            self.pop_oldest();
        }
    }

    /// The value for `key`, if inserted within the grace (call `expire` first).
    pub(super) fn get(&self, key: &[u8; 32]) -> Option<V> {
        self.entries.get(key).map(|(_, value)| value.clone())
    }

    /// Inserts a key that is absent, evicting the oldest entry when full.
    pub(super) fn insert(&mut self, key: [u8; 32], value: V, now: Instant) {
        while self.entries.len() >= self.max_entries && !self.order.is_empty() {
            self.pop_oldest();
        }
        if self.entries.insert(key, (now, value)).is_none() {
            self.order.push_back((now, key));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn pop_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front() {
            if self
                .entries
                .get(&key)
                .is_some_and(|(inserted, _)| *inserted == at)
            {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_grace_in_order() {
        let start = Instant::now();
        let mut cache = GraceCache::new(Duration::from_secs(5), 100);
        cache.insert([1; 32], 1, start);
        cache.insert([2; 32], 2, start + Duration::from_secs(3));
        cache.expire(start + Duration::from_secs(5));
        assert_eq!(cache.get(&[1; 32]), Some(1));
        cache.expire(start + Duration::from_secs(6));
        assert_eq!(cache.get(&[1; 32]), None);
        assert_eq!(cache.get(&[2; 32]), Some(2));
        cache.expire(start + Duration::from_secs(9));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_full_cache_evicts_the_oldest() {
        let start = Instant::now();
        let mut cache = GraceCache::new(Duration::from_secs(60), 2);
        for i in 0..5u8 {
            cache.insert([i; 32], i, start);
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&[4; 32]), Some(4));
        assert_eq!(cache.get(&[3; 32]), Some(3));
        assert_eq!(cache.get(&[0; 32]), None);
    }
}
