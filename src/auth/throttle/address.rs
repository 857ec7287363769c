//! The per-address half of [`Throttle`] on its own, for credentials that
//! are not logins (API keys): a failed attempt counts like a failed login
//! from the address, and an address past `address_failures` in `window`
//! is refused before its credential is even looked at.

use std::net::IpAddr;
use std::time::Instant;

use super::{client_block, Limits, State, Throttle, Throttled, WindowCount};

impl Throttle {
    /// Refuses `peer` while its address has used up its failures.
    pub(crate) fn admit_address(&self, peer: IpAddr, now: Instant) -> Result<(), Throttled> {
        let limits = self.limits();
        let address = client_block(peer, limits.ipv6_prefix);
        let state = self.lock();
        match state
            .addresses
            .get(&address)
            .and_then(|count| count.full_until(limits.address_failures, limits.window, now))
        {
            Some(until) => Err(Throttled {
                retry_after: until.saturating_duration_since(now),
            }),
            None => Ok(()),
        }
    }

    /// Counts one failed credential from `peer`.
    pub(crate) fn address_failed(&self, peer: IpAddr, now: Instant) {
        let limits = self.limits();
        let address = client_block(peer, limits.ipv6_prefix);
        count_address_failure(&mut self.lock(), &limits, address, now);
    }
}

/// Counts one failure (a login's or a key's) against `address`, already
/// grouped into its client block.
pub(super) fn count_address_failure(
    state: &mut State,
    limits: &Limits,
    address: IpAddr,
    now: Instant,
) {
    let count = state
        .addresses
        .entry(address, now, || WindowCount::new(now));
    count.roll(now, limits.window);
    count.count = count.count.saturating_add(1);
    if count.count == limits.address_failures {
        tracing::warn!(
            peer = %address,
            failures = count.count,
            "credential failures from one address reached the limit; address throttled"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ThrottleConfig;

    #[test]
    fn failures_from_an_address_refuse_it_until_the_window_ends() {
        let config = ThrottleConfig {
            account_failures: 5,
            address_failures: 2,
            window: Duration::from_secs(60),
            base_lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(3_600),
            registrations_per_hour: 60,
            max_entries: 1_000,
            ipv6_prefix: 56,
        };
        let throttle = Throttle::new(&config);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        assert!(throttle.admit_address(peer, t0).is_ok());
        throttle.address_failed(peer, t0);
        assert!(throttle.admit_address(peer, t0).is_ok());
        throttle.address_failed(peer, t0);
        let refused = throttle.admit_address(peer, t0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(60));
        assert!(throttle.admit_address(other, t0).is_ok());
        assert!(throttle
            .admit_address(peer, t0 + Duration::from_secs(60))
            .is_ok());
    }
}
