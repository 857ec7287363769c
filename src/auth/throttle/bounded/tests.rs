//! The bounded map on its own, with entries whose expiry, business and
//! weight each test sets.

use std::time::{Duration, Instant};

use super::{BoundedMap, Tracked};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: Instant,
    busy: bool,
    weight: (u8, u32),
}

impl Entry {
    fn at(start: Instant) -> Self {
        Self {
            start,
            busy: false,
            weight: (0, 0),
        }
    }
}

impl Tracked for Entry {
    fn expires(&self, window: Duration) -> Instant {
        self.start + window
    }

    fn busy(&self) -> bool {
        self.busy
    }

    fn weight(&self) -> (u8, u32) {
        self.weight
    }
}

fn map(capacity: usize) -> BoundedMap<u32, Entry> {
    BoundedMap::new(capacity, WINDOW)
}

#[test]
fn never_holds_more_than_its_capacity() {
    let now = Instant::now();
    let mut map = map(16);
    for key in 0..1_000 {
        map.entry(key, now, || Entry::at(now));
        assert!(map.len() <= 16, "{} entries after key {key}", map.len());
    }
    // The newest key is always kept.
    assert!(map.get(&999).is_some());
}

#[test]
fn a_full_map_frees_an_eighth_at_once() {
    let now = Instant::now();
    let mut map = map(16);
    for key in 0..16 {
        map.entry(key, now, || Entry::at(now));
    }
    map.entry(16, now, || Entry::at(now));
    // 16 - 16/8 kept, then the new one: the next inserts need no pass.
    assert_eq!(map.len(), 15);
}

#[test]
fn an_existing_key_in_a_full_map_evicts_nothing() {
    let now = Instant::now();
    let mut map = map(4);
    for key in 0..4 {
        map.entry(key, now, || Entry::at(now));
    }
    map.entry(2, now, || unreachable!("the entry exists"))
        .weight = (1, 1);
    assert_eq!(map.len(), 4);
    assert_eq!(map.get(&2).map(|entry| entry.weight), Some((1, 1)));
}

#[test]
fn expired_entries_go_before_any_live_one() {
    let start = Instant::now();
    let later = start + WINDOW;
    let mut map = map(8);
    for key in 0..4 {
        // Heavier than the live ones: expiry decides first.
        let mut old = Entry::at(start);
        old.weight = (2, 9);
        map.entry(key, start, || old);
    }
    for key in 4..8 {
        map.entry(key, later, || Entry::at(later));
    }
    map.entry(8, later, || Entry::at(later));
    assert_eq!(map.len(), 5);
    assert!((0..4).all(|key| map.get(&key).is_none()));
    assert!((4..9).all(|key| map.get(&key).is_some()));
}

#[test]
fn eviction_takes_idle_before_busy_light_before_heavy_and_nearest_expiry_first() {
    let now = Instant::now();
    let mut map = map(8);
    let entries = [
        (0, false, (0, 0), 3),
        (1, false, (0, 0), 1),
        (2, false, (1, 1), 0),
        (3, false, (1, 5), 0),
        (4, false, (2, 1), 0),
        (5, true, (0, 0), 0),
        (6, false, (0, 0), 2),
        (7, false, (1, 2), 0),
    ];
    for (key, busy, weight, age) in entries {
        let entry = Entry {
            start: now - Duration::from_secs(age),
            busy,
            weight,
        };
        map.entry(key, now, || entry);
    }
    // Each insert into the full map frees one slot. The newcomers are busy
    // and heavier than any original, so the originals go first, in order.
    let newcomer = Entry {
        start: now,
        busy: true,
        weight: (3, 0),
    };
    let mut order = Vec::new();
    for key in 100..108 {
        let before: Vec<u32> = (0..8).filter(|k| map.get(k).is_some()).collect();
        map.entry(key, now, || newcomer);
        order.extend(before.into_iter().filter(|k| map.get(k).is_none()));
    }
    // Clean idle entries nearest to expiry first, then the lightest streaks,
    // then lockout history; the busy entry last.
    assert_eq!(order, [0, 6, 1, 2, 7, 3, 4, 5]);
}

#[test]
fn prune_keeps_busy_entries_past_their_expiry() {
    let start = Instant::now();
    let mut map = map(8);
    map.entry(0, start, || Entry::at(start));
    map.entry(1, start, || Entry {
        busy: true,
        ..Entry::at(start)
    });
    map.entry(2, start, || Entry::at(start + WINDOW));
    map.prune(start + WINDOW);
    assert!(map.get(&0).is_none());
    assert!(map.get(&1).is_some());
    assert!(map.get(&2).is_some());
}
