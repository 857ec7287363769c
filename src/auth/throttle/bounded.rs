//! A map of bounded size for the throttle's counters: full, it drops expired
//! entries first, then the ones whose loss gives away least, so an attacker
//! cycling addresses or emails can neither grow memory nor wash out a count.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// An entry in a [`BoundedMap`].
pub(super) trait Tracked {
    /// From this instant on the entry affects no decision and may be dropped.
    fn expires(&self, window: Duration) -> Instant;

    /// An entry with attempts in flight is evicted last.
    fn busy(&self) -> bool {
        false
    }

    /// How much evicting the entry would give away, compared first by the
    /// first field, then the second: evicting it forgets that many failures.
    /// Heavier entries are evicted later, so flooding the map with fresh
    /// one-failure keys cannot wipe an attacker's own partial streak.
    fn weight(&self) -> (u8, u32);
}

/// Order of eviction, lowest first: idle before busy, then by
/// [`Tracked::weight`], then nearest to expiry first.
type EvictionRank = (bool, (u8, u32), Instant);

/// A map of at most `capacity` entries, so an attacker cycling addresses or
/// emails cannot grow memory without bound. Inserting into a full map first
/// drops expired entries, then, if too few were, the lightest ones (clean
/// entries before partial failure streaks, short streaks before long ones,
/// lockout history last; see [`Tracked::weight`]), nearest to expiry first
/// among equals. It frees an eighth of the map at a time, so the O(n) pass
/// is paid once per many inserts rather than on each.
pub(super) struct BoundedMap<K, V> {
    entries: HashMap<K, V>,
    capacity: usize,
    /// The window the entries' expiry is measured with.
    window: Duration,
}

impl<K: Copy + Eq + Hash, V: Tracked> BoundedMap<K, V> {
    pub(super) fn new(capacity: usize, window: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
            window,
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    pub(super) fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry for `key`, made with `make` (after making room) if absent.
    pub(super) fn entry(&mut self, key: K, now: Instant, make: impl FnOnce() -> V) -> &mut V {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        self.entries.entry(key).or_insert_with(make)
    }

    pub(super) fn prune(&mut self, now: Instant) {
        let window = self.window;
        self.entries
            .retain(|_, entry| entry.busy() || entry.expires(window) > now);
    }

    fn make_room(&mut self, now: Instant) {
        self.prune(now);
        let target = self.capacity.saturating_sub((self.capacity / 8).max(1));
        let excess = self.entries.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        let window = self.window;
        let mut ranked: Vec<(EvictionRank, K)> = self
            .entries
            .iter()
            .map(|(key, entry)| {
                let rank = (entry.busy(), entry.weight(), entry.expires(window));
                (rank, *key)
            })
            .collect();
        ranked.select_nth_unstable_by_key(excess - 1, |(rank, _)| *rank);
        for (_, key) in ranked.into_iter().take(excess) {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests;
