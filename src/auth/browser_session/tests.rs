use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::auth::keys::KeyRing;
use crate::config::secret::AccessSecret;
use crate::config::Config;

const USER: &str = "5f0c7a8e-1b2d-4c3e-9f4a-0b1c2d3e4f5a";

fn ring(byte: u8) -> KeyRing {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
    let tokens = Config::parse(std::path::Path::new("t.toml"), text)
        .unwrap()
        .tokens;
    KeyRing::from_secret(&tokens, &AccessSecret::from_bytes(vec![byte; 32]).unwrap())
}

const POLICY: BrowserPolicy = BrowserPolicy {
    idle_timeout: Duration::from_secs(3_600),
    recheck_after: Duration::from_secs(900),
};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn claims() -> Claims {
    Claims {
        sid: "family-1".to_owned(),
        sub: USER.to_owned(),
        role: "viewer".to_owned(),
        ver: 2,
        iat: 1_000_000,
        exp: 1_000_000 + 86_400,
    }
}

#[test]
fn a_minted_cookie_opens_only_under_the_same_keys() {
    let keys = ring(1).current();
    let value = mint(&claims(), &keys).unwrap();
    assert!(value.starts_with("env."), "{value}");
    assert_eq!(open(&value, &keys).unwrap(), claims());
    // Another instance with the same secret opens it; other keys do not.
    assert_eq!(open(&value, &ring(1).current()).unwrap(), claims());
    assert!(matches!(
        open(&value, &ring(2).current()),
        Err(BrowserError::Unreadable)
    ));
    for forged in [
        "",
        "env",
        "env.",
        "other.AAAA",
        &value.replace("env.", "env.A"),
    ] {
        assert!(open(forged, &keys).is_err(), "{forged:?}");
    }
    assert!(open(&"a".repeat(MAX_COOKIE_BYTES + 1), &keys).is_err());
}

#[test]
fn idle_and_absolute_limits_hold_and_age_makes_it_due() {
    let keys = ring(1).current();
    let revocations = RevocationList::default();
    let value = mint(&claims(), &keys).unwrap();
    let iat = claims().iat;
    let fresh = verify(&value, &keys, &revocations, &POLICY, at(iat + 10)).unwrap();
    assert!(!fresh.due);
    assert_eq!(fresh.identity.user_id.as_str(), USER);
    assert_eq!(fresh.identity.session.as_deref(), Some("family-1"));
    // refresh_after = min(900, 3600 / 4) = 900.
    assert!(
        verify(&value, &keys, &revocations, &POLICY, at(iat + 900))
            .unwrap()
            .due
    );
    assert!(matches!(
        verify(&value, &keys, &revocations, &POLICY, at(iat + 3_600)),
        Err(BrowserError::Idle)
    ));
    let long_idle = BrowserPolicy {
        idle_timeout: Duration::from_secs(10 * 86_400),
        ..POLICY
    };
    assert!(matches!(
        verify(&value, &keys, &revocations, &long_idle, at(claims().exp)),
        Err(BrowserError::Expired)
    ));
}

#[test]
fn revocations_end_the_cookie_at_once() {
    let keys = ring(1).current();
    let value = mint(&claims(), &keys).unwrap();
    let now = at(claims().iat + 1);
    let session = RevocationList::default();
    session.revoke_session("family-1", u64::MAX);
    let version = RevocationList::default();
    version.set_min_version(USER, 3);
    let deleted = RevocationList::default();
    deleted.delete_user(USER);
    for revocations in [session, version, deleted] {
        assert!(matches!(
            verify(&value, &keys, &revocations, &POLICY, now),
            Err(BrowserError::Revoked)
        ));
    }
}

#[test]
fn refresh_after_never_exceeds_a_quarter_of_the_idle_timeout() {
    let short = BrowserPolicy {
        idle_timeout: Duration::from_secs(8),
        recheck_after: Duration::from_secs(900),
    };
    assert_eq!(short.refresh_after(), Duration::from_secs(2));
    assert_eq!(POLICY.refresh_after(), Duration::from_secs(900));
    let c = claims();
    assert_eq!(max_age(&c, &POLICY, at(c.iat)), Duration::from_secs(3_600));
    assert_eq!(max_age(&c, &POLICY, at(c.exp - 5)), Duration::from_secs(5));
}
