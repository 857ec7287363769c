//! Whether a target may be chosen. Passive: a target whose connect failed
//! (refused, timed out, TLS refused) is ejected for a back-off that doubles
//! with each consecutive ejection (1 s up to 1 min, like Envoy's outlier
//! detection); when it ends, the next request probes it, and its first answer
//! brings it back. Active: the health-check task's last verdict.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) const BASE_EJECTION: Duration = Duration::from_secs(1);
pub(crate) const MAX_EJECTION: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Set while an ejection is recorded (even once expired, until the
    /// target answers): lets the hot path skip the lock.
    ejected: AtomicBool,
    passive: Mutex<Ejection>,
    /// The last active check failed.
    checked_down: AtomicBool,
}

#[derive(Debug, Default)]
struct Ejection {
    /// Consecutive ejections; the back-off is `BASE_EJECTION * 2^(count-1)`.
    count: u32,
    until: Option<Instant>,
}

impl Health {
    /// May a request be sent to this target at `now`?
    pub(crate) fn is_available(&self, now: Instant) -> bool {
        if self.checked_down.load(Ordering::Relaxed) {
            return false;
        }
        if !self.ejected.load(Ordering::Acquire) {
            return true;
        }
        let ejection = self.passive.lock().unwrap_or_else(|e| e.into_inner());
        ejection.until.is_none_or(|until| now >= until)
    }

    /// A connect to the target failed at `now`: eject it, for longer each
    /// consecutive time. Returns the back-off.
    pub(crate) fn record_failure(&self, now: Instant) -> Duration {
        let mut ejection = self.passive.lock().unwrap_or_else(|e| e.into_inner());
        // Failures of requests that were already in flight when the target
        // was ejected do not lengthen the ejection again.
        if let Some(until) = ejection.until {
            if now < until {
                return until - now;
            }
        }
        ejection.count = ejection.count.saturating_add(1);
        let backoff = BASE_EJECTION
            .saturating_mul(1u32 << (ejection.count - 1).min(16))
            .min(MAX_EJECTION);
        ejection.until = Some(now + backoff);
        self.ejected.store(true, Ordering::Release);
        backoff
    }

    /// The target answered: forget past ejections.
    pub(crate) fn record_success(&self) {
        if self.ejected.load(Ordering::Acquire) {
            let mut ejection = self.passive.lock().unwrap_or_else(|e| e.into_inner());
            *ejection = Ejection::default();
            self.ejected.store(false, Ordering::Release);
        }
    }

    /// The verdict of an active check.
    pub(crate) fn record_check(&self, healthy: bool) {
        self.checked_down.store(!healthy, Ordering::Relaxed);
        if healthy {
            self.record_success();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_doubles_then_clears_on_success() {
        let health = Health::default();
        let t0 = Instant::now();
        assert!(health.is_available(t0));
        assert_eq!(health.record_failure(t0), Duration::from_secs(1));
        assert!(!health.is_available(t0));
        // A second failure during the same ejection does not extend it.
        assert_eq!(health.record_failure(t0), Duration::from_secs(1));
        let t1 = t0 + Duration::from_secs(1);
        assert!(health.is_available(t1), "probed back after the back-off");
        assert_eq!(health.record_failure(t1), Duration::from_secs(2));
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(health.record_failure(t2), Duration::from_secs(4));
        health.record_success();
        assert!(health.is_available(t2));
        assert_eq!(health.record_failure(t2), Duration::from_secs(1));
    }

    #[test]
    fn back_off_is_capped() {
        let health = Health::default();
        let mut now = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            last = health.record_failure(now);
            now += last;
        }
        assert_eq!(last, MAX_EJECTION);
    }

    #[test]
    fn a_failed_check_takes_precedence_until_one_passes() {
        let health = Health::default();
        let now = Instant::now();
        health.record_check(false);
        assert!(!health.is_available(now));
        health.record_check(true);
        assert!(health.is_available(now));
    }
}
