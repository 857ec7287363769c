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
use crate::worker::PerWorker;

pub(crate) struct Balancer {
    policy: Balance,
    /// Each worker goes round on its own, as each nginx worker does: a
    /// shared position would be one more location every request on every
    /// core writes.
    next: PerWorker<AtomicUsize>,
}

impl Balancer {
    pub(crate) fn new(policy: Balance, workers: usize) -> Self {
        Self {
            policy,
            next: PerWorker::new(workers, AtomicUsize::default),
        }
    }

    /// The index of the target to use, skipping `exclude` (the target a
    /// retry left) and every target health rules out; `None` when none is left.
    pub(crate) fn pick(
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
                let start = match n {
                    1 => 0,
                    _ => self.next.mine().fetch_add(1, Ordering::Relaxed),
                };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstream::parse_target;
    use crate::config::UpstreamProtocol;
    use crate::proxy::upstream::connector::Connector;
    use crate::proxy::upstream::pool::H1Pool;
    use crate::proxy::upstream::target::Connections;

    fn targets(n: u16) -> Vec<Arc<TargetState>> {
        (0..n)
            .map(|i| {
                let target = parse_target(&format!("http://127.0.0.1:{}", 9000 + i)).unwrap();
                let connector = Connector::new(&target, UpstreamProtocol::Http1, None).unwrap();
                let pool = Connections::Http1(Box::new(H1Pool::new(4, 16, 1)));
                Arc::new(TargetState::new(target, connector, pool, 1).unwrap())
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_and_skips_ejected_and_excluded_targets() {
        let targets = targets(3);
        let balancer = Balancer::new(Balance::RoundRobin, 1);
        let now = Instant::now();
        let picks: Vec<_> = (0..6).map(|_| balancer.pick(&targets, None, now)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
        targets[1].health.record_failure(now);
        let picks: Vec<_> = (0..4)
            .map(|_| balancer.pick(&targets, Some(0), now))
            .collect();
        assert_eq!(picks, [Some(2); 4]);
        targets[2].health.record_failure(now);
        assert_eq!(balancer.pick(&targets, Some(0), now), None);
    }

    #[test]
    fn least_requests_never_picks_the_busier_of_two() {
        let targets = targets(2);
        let balancer = Balancer::new(Balance::LeastRequests, 1);
        let now = Instant::now();
        let _busy = targets[0].start_request();
        for _ in 0..50 {
            assert_eq!(balancer.pick(&targets, None, now), Some(1));
        }
        assert_eq!(balancer.pick(&targets, Some(1), now), Some(0));
    }
}
