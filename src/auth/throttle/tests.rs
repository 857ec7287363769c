//! Throttle decisions over simulated time: windows, lockout growth, reset on
//! success, spraying, concurrency, bounded memory and registrations.

use super::*;

const ALICE: &str = "alice@example.com";

fn defaults() -> ThrottleConfig {
    ThrottleConfig {
        account_failures: 5,
        address_failures: 50,
        window: Duration::from_secs(600),
        base_lockout: Duration::from_secs(60),
        max_lockout: Duration::from_secs(3_600),
        registrations_per_hour: 60,
        max_entries: 100_000,
        ipv6_prefix: 56,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn key(email: &str) -> AccountKey {
    AccountKey::from_input(email)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Admits one attempt for `email` from `peer` and reports it failed.
fn fail(throttle: &Throttle, email: &str, peer: IpAddr, now: Instant) {
    throttle
        .admit_login(key(email), peer, now)
        .unwrap_or_else(|refusal| panic!("{email} refused at once: {refusal:?}"))
        .failed(now);
}

fn refusal(throttle: &Throttle, email: &str, peer: IpAddr, now: Instant) -> Option<Duration> {
    throttle
        .admit_login(key(email), peer, now)
        .err()
        .map(|r| r.retry_after)
}

#[test]
fn locks_an_account_after_consecutive_failures() {
    let throttle = Throttle::new(&defaults());
    let (peer, t0) = (ip("192.0.2.1"), Instant::now());
    for i in 0..5 {
        fail(&throttle, ALICE, peer, t0 + secs(i));
    }
    // Refused before any password is looked at, so also for the right one.
    assert_eq!(
        refusal(&throttle, ALICE, peer, t0 + secs(5)),
        Some(secs(59))
    );
    assert_eq!(
        refusal(&throttle, ALICE, ip("198.51.100.7"), t0 + secs(30)),
        Some(secs(34)),
        "the lock is on the account, from any address"
    );
    assert_eq!(
        refusal(&throttle, "bob@example.com", peer, t0 + secs(5)),
        None
    );
    assert_eq!(refusal(&throttle, ALICE, peer, t0 + secs(64)), None);
}

#[test]
fn failures_outside_the_window_do_not_add_up() {
    let throttle = Throttle::new(&defaults());
    let (peer, t0) = (ip("192.0.2.1"), Instant::now());
    for i in 0..4 {
        fail(&throttle, ALICE, peer, t0 + secs(i));
    }
    let later = t0 + secs(600);
    for i in 0..4 {
        fail(&throttle, ALICE, peer, later + secs(i));
    }
    assert_eq!(refusal(&throttle, ALICE, peer, later + secs(4)), None);
    fail(&throttle, ALICE, peer, later + secs(4));
    assert!(refusal(&throttle, ALICE, peer, later + secs(5)).is_some());
}

#[test]
fn lockouts_double_up_to_the_cap_and_are_forgotten_after_a_quiet_window() {
    let config = ThrottleConfig {
        max_lockout: secs(300),
        ..defaults()
    };
    let throttle = Throttle::new(&config);
    let peer = ip("192.0.2.1");
    let mut now = Instant::now();
    for expected in [60, 120, 240, 300, 300] {
        for _ in 0..5 {
            fail(&throttle, ALICE, peer, now);
        }
        assert_eq!(refusal(&throttle, ALICE, peer, now), Some(secs(expected)));
        assert_eq!(
            refusal(&throttle, ALICE, peer, now + secs(expected - 1)),
            Some(secs(1))
        );
        now += secs(expected);
    }
    // A window with no failure after the last lockout ended: back to the base.
    now += secs(600);
    for _ in 0..5 {
        fail(&throttle, ALICE, peer, now);
    }
    assert_eq!(refusal(&throttle, ALICE, peer, now), Some(secs(60)));
}

#[test]
fn a_success_resets_the_account() {
    let throttle = Throttle::new(&defaults());
    let (peer, t0) = (ip("192.0.2.1"), Instant::now());
    for _ in 0..4 {
        fail(&throttle, ALICE, peer, t0);
    }
    throttle
        .admit_login(key(ALICE), peer, t0)
        .unwrap()
        .succeeded();
    for _ in 0..4 {
        fail(&throttle, ALICE, peer, t0);
    }
    assert_eq!(refusal(&throttle, ALICE, peer, t0), None);

    // After a lockout, a success also ends the doubling.
    fail(&throttle, ALICE, peer, t0);
    assert_eq!(refusal(&throttle, ALICE, peer, t0), Some(secs(60)));
    let t1 = t0 + secs(60);
    throttle
        .admit_login(key(ALICE), peer, t1)
        .unwrap()
        .succeeded();
    for _ in 0..5 {
        fail(&throttle, ALICE, peer, t1);
    }
    assert_eq!(refusal(&throttle, ALICE, peer, t1), Some(secs(60)));
}

#[test]
fn spelling_of_an_account_does_not_matter_and_unknown_input_is_keyed_too() {
    assert_eq!(key(" ＡＬＩＣＥ@Example.com"), key(ALICE));
    assert_eq!(key("A@B@C "), key("a@b@c"));
    assert_ne!(key("a@b@c"), key(ALICE));

    let throttle = Throttle::new(&defaults());
    let (peer, t0) = (ip("192.0.2.1"), Instant::now());
    for spelling in [
        "Alice@example.com",
        "ａｌｉｃｅ@example.com",
        ALICE,
        " ALICE@EXAMPLE.COM",
        ALICE,
    ] {
        fail(&throttle, spelling, peer, t0);
    }
    assert_eq!(refusal(&throttle, ALICE, peer, t0), Some(secs(60)));
    for _ in 0..5 {
        fail(&throttle, "not an email", peer, t0);
    }
    assert_eq!(refusal(&throttle, "NOT AN EMAIL", peer, t0), Some(secs(60)));
}

#[test]
fn spraying_from_one_address_throttles_the_address() {
    let config = ThrottleConfig {
        address_failures: 10,
        ..defaults()
    };
    let throttle = Throttle::new(&config);
    let (sprayer, t0) = (ip("192.0.2.66"), Instant::now());
    for i in 0..10 {
        fail(
            &throttle,
            &format!("user{i}@example.com"),
            sprayer,
            t0 + secs(i),
        );
    }
    // The window opened with the first failure, at t0.
    assert_eq!(
        refusal(&throttle, "fresh@example.com", sprayer, t0 + secs(100)),
        Some(secs(500))
    );
    assert_eq!(
        refusal(
            &throttle,
            "fresh@example.com",
            ip("192.0.2.67"),
            t0 + secs(100)
        ),
        None
    );
    assert_eq!(
        refusal(&throttle, "fresh@example.com", sprayer, t0 + secs(600)),
        None
    );
}

#[test]
fn successes_never_count_against_an_address() {
    let config = ThrottleConfig {
        address_failures: 10,
        ..defaults()
    };
    let throttle = Throttle::new(&config);
    let (office, t0) = (ip("192.0.2.10"), Instant::now());
    for i in 0..1_000 {
        let email = format!("user{i}@example.com");
        throttle
            .admit_login(key(&email), office, t0)
            .unwrap()
            .succeeded();
    }
    assert_eq!(refusal(&throttle, ALICE, office, t0), None);
    assert_eq!(throttle.sizes(), (0, 0, 0));
}

#[test]
fn concurrent_attempts_cannot_overshoot_the_limit() {
    let throttle = Throttle::new(&defaults());
    let (peer, t0) = (ip("192.0.2.1"), Instant::now());
    fail(&throttle, ALICE, peer, t0);
    let in_flight: Vec<_> = (0..4)
        .map(|_| throttle.admit_login(key(ALICE), peer, t0).unwrap())
        .collect();
    assert_eq!(refusal(&throttle, ALICE, peer, t0), Some(IN_FLIGHT_RETRY));
    let mut in_flight = in_flight.into_iter();
    // One is dropped undecided (a busy password pool): its slot comes back.
    drop(in_flight.next());
    let again = throttle.admit_login(key(ALICE), peer, t0).unwrap();
    for attempt in in_flight.chain([again]) {
        attempt.failed(t0);
    }
    assert_eq!(refusal(&throttle, ALICE, peer, t0), Some(secs(60)));
}

#[test]
fn undecided_attempts_count_as_nothing() {
    let throttle = Throttle::new(&defaults());
    let (peer, t0) = (ip("192.0.2.1"), Instant::now());
    for _ in 0..100 {
        drop(throttle.admit_login(key(ALICE), peer, t0).unwrap());
    }
    assert_eq!(refusal(&throttle, ALICE, peer, t0), None);
    assert_eq!(throttle.sizes(), (0, 0, 0));
}

#[test]
fn memory_stays_bounded_and_lockouts_outlive_noise() {
    let config = ThrottleConfig {
        max_entries: 100,
        ..defaults()
    };
    let throttle = Throttle::new(&config);
    let t0 = Instant::now();
    let victim_peer = ip("192.0.2.1");
    for _ in 0..5 {
        fail(&throttle, ALICE, victim_peer, t0);
    }
    // An attacker cycling emails and addresses, one failure each.
    for i in 0..10_000u32 {
        let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
        let now = t0 + Duration::from_millis(u64::from(i));
        fail(&throttle, &format!("noise{i}@example.com"), peer, now);
        let (accounts, addresses, _) = throttle.sizes();
        assert!(
            accounts <= 100 && addresses <= 100,
            "{accounts} {addresses}"
        );
    }
    assert!(
        refusal(&throttle, ALICE, victim_peer, t0 + secs(10)).is_some(),
        "a locked account expires last, so it is evicted last"
    );
    for i in 0..200u32 {
        let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0B00_0000 + i));
        throttle.admit_registration(peer, t0).unwrap();
    }
    assert!(throttle.sizes().2 <= 100);
    throttle.prune(t0 + secs(3_600 + 600 + 60));
    assert_eq!(throttle.sizes(), (0, 0, 0));
}

#[test]
fn registrations_are_limited_per_address_per_hour() {
    let throttle = Throttle::new(&defaults());
    let (office, t0) = (ip("192.0.2.10"), Instant::now());
    for i in 0..60 {
        throttle.admit_registration(office, t0 + secs(i)).unwrap();
    }
    assert_eq!(
        throttle.admit_registration(office, t0 + secs(600)),
        Err(Throttled {
            retry_after: secs(3_000)
        })
    );
    throttle.admit_registration(ip("192.0.2.11"), t0).unwrap();
    // A registration the password pool turned away is given back.
    throttle.refund_registration(office);
    throttle.admit_registration(office, t0 + secs(600)).unwrap();
    assert!(throttle.admit_registration(office, t0 + secs(601)).is_err());
    throttle
        .admit_registration(office, t0 + secs(3_600))
        .unwrap();
}

/// Two failures from the first address throttle the third; true when the
/// third address shares the first one's counter.
fn share_a_counter(ipv6_prefix: u8, first: &str, second: &str, third: &str) -> bool {
    let config = ThrottleConfig {
        address_failures: 2,
        ipv6_prefix,
        ..defaults()
    };
    let throttle = Throttle::new(&config);
    let t0 = Instant::now();
    fail(&throttle, "a@x.io", ip(first), t0);
    fail(&throttle, "b@x.io", ip(second), t0);
    refusal(&throttle, "c@x.io", ip(third), t0).is_some()
}

#[test]
fn ipv6_clients_are_counted_per_56_by_default() {
    assert_eq!(defaults().ipv6_prefix, 56);
    // 2001:db8:1:200::/56 holds 2001:db8:1:200:: to 2001:db8:1:2ff:ffff:...
    assert!(share_a_counter(
        56,
        "2001:db8:1:200::1",
        "2001:db8:1:2ff:ffff::9",
        "2001:db8:1:2a0::77"
    ));
    assert!(!share_a_counter(
        56,
        "2001:db8:1:200::1",
        "2001:db8:1:2ff::9",
        "2001:db8:1:300::1"
    ));
    // IPv4-mapped addresses count as the IPv4 address.
    assert!(share_a_counter(
        56,
        "::ffff:192.0.2.1",
        "192.0.2.1",
        "192.0.2.1"
    ));
}

#[test]
fn the_ipv6_prefix_length_is_configurable() {
    // Per /64: the next /64 is another counter.
    assert!(share_a_counter(
        64,
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff::9",
        "2001:db8:1:2::77"
    ));
    assert!(!share_a_counter(
        64,
        "2001:db8:1:2::1",
        "2001:db8:1:2::9",
        "2001:db8:1:3::1"
    ));
    // Per /48: a whole site is one counter.
    assert!(share_a_counter(
        48,
        "2001:db8:1:2::1",
        "2001:db8:1:ff00::9",
        "2001:db8:1:ffff::1"
    ));
    // Per address.
    assert!(!share_a_counter(
        128,
        "2001:db8::1",
        "2001:db8::1",
        "2001:db8::2"
    ));
}

#[test]
fn a_partial_failure_streak_outlives_a_flood_of_fresh_keys() {
    let config = ThrottleConfig {
        max_entries: 100,
        ..defaults()
    };
    let throttle = Throttle::new(&config);
    let t0 = Instant::now();
    let attacker = ip("192.0.2.1");
    // Four guesses at Alice: one short of the lockout.
    for i in 0..4 {
        fail(&throttle, ALICE, attacker, t0 + secs(i));
    }
    // Then a flood of fresh emails and addresses, one failure each, meant
    // to push Alice's streak out of the full map and with it the count.
    for i in 0..1_000u32 {
        let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
        fail(
            &throttle,
            &format!("noise{i}@example.com"),
            peer,
            t0 + secs(5),
        );
    }
    // The fifth guess still completes the streak and locks the account.
    fail(&throttle, ALICE, attacker, t0 + secs(6));
    assert_eq!(
        refusal(&throttle, ALICE, ip("198.51.100.7"), t0 + secs(6)),
        Some(secs(60))
    );
}

#[test]
fn an_address_close_to_its_limit_outlives_a_flood_of_fresh_addresses() {
    let config = ThrottleConfig {
        max_entries: 100,
        address_failures: 10,
        ..defaults()
    };
    let throttle = Throttle::new(&config);
    let t0 = Instant::now();
    let sprayer = ip("192.0.2.1");
    for i in 0..9 {
        fail(&throttle, &format!("victim{i}@example.com"), sprayer, t0);
    }
    for i in 0..1_000u32 {
        let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
        fail(
            &throttle,
            &format!("noise{i}@example.com"),
            peer,
            t0 + secs(1),
        );
    }
    fail(&throttle, "victim9@example.com", sprayer, t0 + secs(2));
    assert!(refusal(&throttle, "other@example.com", sprayer, t0 + secs(2)).is_some());
}

#[test]
fn limits_below_one_are_read_as_one() {
    let config = ThrottleConfig {
        account_failures: 0,
        registrations_per_hour: 0,
        max_entries: 0,
        ..defaults()
    };
    let throttle = Throttle::new(&config);
    let (peer, t0) = (ip("192.0.2.1"), Instant::now());
    fail(&throttle, ALICE, peer, t0);
    assert!(refusal(&throttle, ALICE, peer, t0).is_some());
    throttle.admit_registration(peer, t0).unwrap();
    assert!(throttle.admit_registration(peer, t0).is_err());
}
