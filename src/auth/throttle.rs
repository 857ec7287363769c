//! Login and registration throttling: failure counters per account (keyed on
//! the canonical email) and per client address, in memory of bounded size.
//! The account endpoints ask it before any argon2 work and report back.
//!
//! Only failures are counted against logins: after `account_failures` in a
//! row within `window` an account is locked for a lockout that doubles each
//! time, and after `address_failures` within `window` from one address
//! (password spraying) that address may not try to log in until the window
//! ends. Registrations are counted per address per hour. Time is always a
//! parameter, so expiry is tested without sleeping.

mod address;
mod bounded;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::account::Email;
use crate::config::ThrottleConfig;
use bounded::{BoundedMap, Tracked};

/// Registrations are counted over a fixed hour.
const REGISTRATION_WINDOW: Duration = Duration::from_secs(3600);
/// The wait asked of a login refused only because earlier attempts for the
/// same account are still being checked: they decide within moments.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);
/// Configured durations are capped here so instant arithmetic cannot overflow.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A refusal: the client may try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

/// What an account's counters are keyed on: the SHA-256 of the canonical
/// email, or of the trimmed, lower-cased input when it has no canonical form
/// (such an account cannot exist, but it is answered exactly like one that
/// does). Hashing keeps every key 32 bytes whatever a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AccountKey([u8; 32]);

impl AccountKey {
    pub(crate) fn from_input(email: &str) -> Self {
        let text =
            Email::parse(email).map_or_else(|_| email.trim().to_lowercase(), Email::into_string);
        Self(crate::digest::sha256(&[text.as_bytes()]))
    }

    /// The key's bytes: a shared store counts lockouts under them.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The login and registration counters, behind one lock that is never held
/// across an `.await`.
pub(crate) struct Throttle {
    /// Swapped whole by a reload; read once per decision.
    limits: ArcSwap<Limits>,
    state: Mutex<State>,
}

/// The configured limits, made safe to compute with.
#[derive(Debug, Clone, Copy)]
struct Limits {
    account_failures: u32,
    address_failures: u32,
    window: Duration,
    base_lockout: Duration,
    max_lockout: Duration,
    registrations_per_hour: u32,
    /// IPv6 addresses sharing this many leading bits share counters.
    ipv6_prefix: u8,
}

impl Limits {
    /// Counts below 1 are read as 1, durations clamped to what arithmetic
    /// on deadlines can hold.
    fn from_config(config: &ThrottleConfig) -> Self {
        let window = config.window.clamp(Duration::from_secs(1), LONGEST);
        let max_lockout = config.max_lockout.min(LONGEST);
        Self {
            account_failures: config.account_failures.max(1),
            address_failures: config.address_failures.max(1),
            window,
            base_lockout: config.base_lockout.min(max_lockout),
            max_lockout,
            registrations_per_hour: config.registrations_per_hour.max(1),
            ipv6_prefix: config.ipv6_prefix.min(128),
        }
    }
}

struct State {
    /// Failure streaks and lockouts per account.
    accounts: BoundedMap<AccountKey, AccountEntry>,
    /// Login failures per address in the current window.
    addresses: BoundedMap<IpAddr, WindowCount>,
    /// Registrations per address in the current hour.
    registrations: BoundedMap<IpAddr, WindowCount>,
}

impl Throttle {
    /// Counts below 1 are read as 1, so a limit can never be switched off by
    /// accident; `registration = "closed"` is the way to stop registrations.
    pub(crate) fn new(config: &ThrottleConfig) -> Self {
        let limits = Limits::from_config(config);
        let capacity = config.max_entries.max(1);
        Self {
            limits: ArcSwap::from_pointee(limits),
            state: Mutex::new(State {
                accounts: BoundedMap::new(capacity, limits.window),
                addresses: BoundedMap::new(capacity, limits.window),
                registrations: BoundedMap::new(capacity, REGISTRATION_WINDOW),
            }),
        }
    }

    /// New limits from a reloaded configuration, for the next decisions.
    /// The table sizes (`max_entries`) stay as they were until a restart.
    pub(crate) fn reconfigure(&self, config: &ThrottleConfig) {
        self.limits
            .store(std::sync::Arc::new(Limits::from_config(config)));
    }

    fn limits(&self) -> Limits {
        **self.limits.load()
    }
    /// Admits a login attempt for `account` from `peer`, or refuses it while
    /// the account is locked or the address is throttled. Report the outcome
    /// on the returned [`LoginAttempt`].
    pub(crate) fn admit_login(
        &self,
        account: AccountKey,
        peer: IpAddr,
        now: Instant,
    ) -> Result<LoginAttempt<'_>, Throttled> {
        let limits = self.limits();
        let address = client_block(peer, limits.ipv6_prefix);
        let mut state = self.lock();
        let mut wait = state
            .addresses
            .get(&address)
            .and_then(|count| count.full_until(limits.address_failures, limits.window, now))
            .map(|until| until.saturating_duration_since(now));
        if let Some(entry) = state.accounts.get_mut(&account) {
            entry.refresh(now, limits.window);
            let account_wait = match entry.locked_until.filter(|until| *until > now) {
                Some(until) => Some(until.saturating_duration_since(now)),
                // Attempts still being checked count as failures-to-be, so a
                // burst of concurrent guesses cannot overshoot the limit.
                None if entry.failures.saturating_add(entry.in_flight)
                    >= limits.account_failures =>
                {
                    Some(IN_FLIGHT_RETRY)
                }
                None => None,
            };
            wait = wait.max(account_wait);
        }
        if let Some(retry_after) = wait {
            return Err(Throttled { retry_after });
        }
        let entry = state
            .accounts
            .entry(account, now, || AccountEntry::new(now));
        entry.in_flight = entry.in_flight.saturating_add(1);
        drop(state);
        Ok(LoginAttempt {
            throttle: self,
            account,
            address,
            open: true,
        })
    }

    /// Counts a registration attempt from `peer`, or refuses it once the
    /// address has used its hourly allowance.
    pub(crate) fn admit_registration(&self, peer: IpAddr, now: Instant) -> Result<(), Throttled> {
        let limit = self.limits().registrations_per_hour;
        let mut state = self.lock();
        let count =
            state
                .registrations
                .entry(client_block(peer, self.limits().ipv6_prefix), now, || {
                    WindowCount::new(now)
                });
        count.roll(now, REGISTRATION_WINDOW);
        if let Some(until) = count.full_until(limit, REGISTRATION_WINDOW, now) {
            return Err(Throttled {
                retry_after: until.saturating_duration_since(now),
            });
        }
        count.count = count.count.saturating_add(1);
        Ok(())
    }

    /// Gives back a registration that did no work (the password pool was busy).
    pub(crate) fn refund_registration(&self, peer: IpAddr) {
        let mut state = self.lock();
        let address = client_block(peer, self.limits().ipv6_prefix);
        if let Some(count) = state.registrations.get_mut(&address) {
            count.count = count.count.saturating_sub(1);
        }
    }

    /// Drops every entry that no longer affects a decision.
    pub(crate) fn prune(&self, now: Instant) {
        let mut state = self.lock();
        state.accounts.prune(now);
        state.addresses.prune(now);
        state.registrations.prune(now);
    }

    fn record_failure(&self, account: AccountKey, address: IpAddr, now: Instant) -> bool {
        let limits = self.limits();
        let mut state = self.lock();
        address::count_address_failure(&mut state, &limits, address, now);
        let entry = state
            .accounts
            .entry(account, now, || AccountEntry::new(now));
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.refresh(now, limits.window);
        if entry.failures == 0 {
            entry.streak_start = now;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= limits.account_failures {
            entry.lockouts = entry.lockouts.saturating_add(1);
            let lockout = limits.lockout(entry.lockouts);
            entry.locked_until = Some(now + lockout);
            entry.failures = 0;
            // The account is not named: the log says who tried, not whom.
            tracing::warn!(
                peer = %address,
                lockout_secs = lockout.as_secs(),
                lockouts = entry.lockouts,
                "account locked after repeated login failures"
            );
            return true;
        }
        false
    }

    fn record_success(&self, account: AccountKey) {
        let mut state = self.lock();
        if let Some(entry) = state.accounts.get_mut(&account) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.failures = 0;
            entry.lockouts = 0;
            entry.locked_until = None;
            if entry.in_flight == 0 {
                state.accounts.remove(&account);
            }
        }
    }

    fn release(&self, account: AccountKey) {
        let mut state = self.lock();
        if let Some(entry) = state.accounts.get_mut(&account) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.is_idle() {
                state.accounts.remove(&account);
            }
        }
    }

    /// Counters hold no invariant a panic could break, so a poisoned lock
    /// is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (
            state.accounts.len(),
            state.addresses.len(),
            state.registrations.len(),
        )
    }
}

/// An admitted login attempt. Report it with [`LoginAttempt::failed`] or
/// [`LoginAttempt::succeeded`]; dropped without either (the password pool was
/// busy, the store failed, the client went away) it counts as neither.
#[must_use = "an attempt is reported as failed or succeeded"]
pub(crate) struct LoginAttempt<'a> {
    throttle: &'a Throttle,
    account: AccountKey,
    address: IpAddr,
    /// Still to be reported; `Drop` releases it otherwise.
    open: bool,
}

impl LoginAttempt<'_> {
    /// Wrong password or unknown account. True when this failure locked
    /// the account (for the audit trail).
    pub(crate) fn failed(mut self, now: Instant) -> bool {
        self.open = false;
        self.throttle
            .record_failure(self.account, self.address, now)
    }

    /// The password was right: the account's streak and lockout history end.
    pub(crate) fn succeeded(mut self) {
        self.open = false;
        self.throttle.record_success(self.account);
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if self.open {
            self.throttle.release(self.account);
        }
    }
}

impl Limits {
    /// The `n`th lockout (from 1): `base_lockout` doubled `n - 1` times,
    /// at most `max_lockout`.
    fn lockout(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.base_lockout
            .saturating_mul(factor)
            .min(self.max_lockout)
    }
}

/// IPv6 clients are counted per block of `prefix` bits (/56 by default):
/// keyed per address, one attacker would have 2^64 fresh counters in the /64
/// of a single host, and households and small sites are commonly given a /56
/// or a /48. IPv4-mapped IPv6 addresses count as the IPv4 address.
/// The block `peer` is counted as: an IPv4 address (IPv4-mapped IPv6
/// included) as itself, an IPv6 address by its first `prefix` bits.
pub(crate) fn client_block(peer: IpAddr, prefix: u8) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix.min(128)))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// One account's failure streak and lockout history.
#[derive(Debug)]
struct AccountEntry {
    /// Failures in the current streak, which began at `streak_start`; a
    /// lockout or a success ends the streak, and so does `window` passing.
    failures: u32,
    streak_start: Instant,
    /// Attempts admitted and not yet reported.
    in_flight: u32,
    /// Lockouts so far: the next lasts twice as long as the last. Forgotten
    /// once `window` passes after a lockout ends with no new failure.
    lockouts: u32,
    /// Kept after it passes, to date the lockout history.
    locked_until: Option<Instant>,
}

impl AccountEntry {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            streak_start: now,
            in_flight: 0,
            lockouts: 0,
            locked_until: None,
        }
    }

    /// Forgets what `window` has outlived.
    fn refresh(&mut self, now: Instant, window: Duration) {
        if now >= self.streak_start + window {
            self.failures = 0;
        }
        if self.locked_until.is_some_and(|until| now >= until + window) {
            self.lockouts = 0;
            self.locked_until = None;
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.failures == 0 && self.locked_until.is_none()
    }
}

/// Events from one address in a fixed window that opens with the first.
#[derive(Debug)]
struct WindowCount {
    count: u32,
    start: Instant,
}

impl WindowCount {
    fn new(now: Instant) -> Self {
        Self {
            count: 0,
            start: now,
        }
    }

    /// Opens a new window when the current one has passed.
    fn roll(&mut self, now: Instant, window: Duration) {
        if now >= self.start + window {
            self.count = 0;
            self.start = now;
        }
    }

    /// When the window ends, if `limit` events have filled it.
    fn full_until(&self, limit: u32, window: Duration, now: Instant) -> Option<Instant> {
        let end = self.start + window;
        (self.count >= limit && now < end).then_some(end)
    }
}

impl Tracked for AccountEntry {
    fn expires(&self, window: Duration) -> Instant {
        let streak_end = self.streak_start + window;
        match self.locked_until {
            Some(until) => streak_end.max(until + window),
            None => streak_end,
        }
    }

    fn busy(&self) -> bool {
        self.in_flight > 0
    }

    /// Lockout history outweighs any streak; a streak outweighs a clean entry.
    fn weight(&self) -> (u8, u32) {
        if self.lockouts > 0 || self.locked_until.is_some() {
            (2, self.lockouts)
        } else {
            (u8::from(self.failures > 0), self.failures)
        }
    }
}

impl Tracked for WindowCount {
    fn expires(&self, window: Duration) -> Instant {
        self.start + window
    }

    fn weight(&self) -> (u8, u32) {
        (u8::from(self.count > 0), self.count)
    }
}

#[cfg(test)]
mod tests;
