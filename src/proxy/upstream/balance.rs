//! Picks a target for a request among those health allows: round robin, or
//! least requests by the power of two choices (two random targets, the one
//! with fewer requests in flight), which spreads load nearly as well as a
//! full scan without every gateway herding onto the same least-loaded one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;
use tokio::time::Instant;

use super::target::TargetState;
use crate::config::Balance;

pub struct Balancer {
    policy: Balance,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(policy: Balance) -> Self {
        Self {
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// The index of the target to use, skipping `exclude` (the target a
    /// retry left) and every target health rules out; `None` when none is left.
    pub fn pick(
        &self,
        targets: &[Arc<TargetState>],
        exclude: Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let usable = |i: usize| {
            Some(i) != exclude && targets.get(i).is_some_and(|t| t.health.is_available(now))
        };
        let n = targets.len();
        match self.policy {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
            }
            Balance::LeastRequests => {
                let available = (0..n).filter(|&i| usable(i)).count();
                let nth = |k: usize| (0..n).filter(|&i| usable(i)).nth(k);
                match available {
                    0 => None,
                    1 => nth(0),
                    _ => {
                        let mut rng = rand::rng();
                        let a = rng.random_range(0..available);
                        // A second, different pick.
                        let b = (a + rng.random_range(1..available)) % available;
                        let (a, b) = (nth(a)?, nth(b)?);
                        let load = |i: usize| targets.get(i).map_or(usize::MAX, |t| t.in_flight());
                        Some(if load(b) < load(a) { b } else { a })
                    }
                }
            }
        }
    }
}
