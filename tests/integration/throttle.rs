//! Login abuse through the real gateway: account lockout with Retry-After
//! before any password check, identical answers for unknown accounts, reset
//! on success, password spraying, X-Forwarded-For ignored, the registration
//! limit, and one account for every spelling of an email address.
//!
//! Lockouts are long so no test depends on timing; their expiry is covered
//! by the throttle's unit tests, which take time as a parameter.

use serde_json::json;

use crate::accounts::{login, register, FAST_HASHING};
use crate::support::{GatewayOptions, Response, TestGateway};

const PASSWORD: &str = "correct horse";

async fn throttle_gateway(throttle: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        auth: format!(
            "{FAST_HASHING}[auth.throttle]\nwindow = \"10m\"\nbase_lockout = \"5m\"\n{throttle}"
        ),
        ..GatewayOptions::default()
    })
    .await
}

async fn login_from(gw: &TestGateway, email: &str, password: &str, forwarded: &str) -> Response {
    gw.client()
        .post("/auth/login")
        .header("x-forwarded-for", forwarded)
        .header("x-real-ip", forwarded)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
}

fn assert_throttled(response: &Response) {
    assert_eq!(
        (response.status.as_u16(), response.code().as_str()),
        (429, "TOO_MANY_REQUESTS"),
        "{:?}",
        response.body
    );
    let wait: u64 = response
        .header("retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .expect("Retry-After in seconds");
    // At most the 5m lockout, or the 10m window for a throttled address.
    assert!((1..=600).contains(&wait), "Retry-After: {wait}");
}

fn assert_rejected(response: &Response) {
    assert_eq!(
        (response.status.as_u16(), response.code().as_str()),
        (401, "INVALID_CREDENTIALS"),
        "{:?}",
        response.body
    );
}

/// The header names of a response, sorted, without the per-response Date.
fn header_names(response: &Response) -> Vec<String> {
    let mut names: Vec<String> = response
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name != "date")
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_attempt_after_five_failures_is_refused_even_with_the_right_password() {
    let gw = throttle_gateway("account_failures = 5\naddress_failures = 100\n").await;
    assert_eq!(
        register(&gw, "alice@example.com", PASSWORD).await.status,
        201
    );
    for _ in 0..5 {
        assert_rejected(&login(&gw, "alice@example.com", "wrong password").await);
    }
    let locked = login(&gw, "alice@example.com", PASSWORD).await;
    assert_throttled(&locked);
    // Every spelling of the address is the same locked account.
    assert_throttled(&login(&gw, " ＡＬＩＣＥ@Example.com", PASSWORD).await);
    // Other accounts are untouched.
    assert_eq!(register(&gw, "bob@example.com", PASSWORD).await.status, 201);
    assert_eq!(login(&gw, "bob@example.com", PASSWORD).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_accounts_are_locked_out_identically() {
    let gw = throttle_gateway("account_failures = 3\naddress_failures = 100\n").await;
    assert_eq!(
        register(&gw, "alice@example.com", PASSWORD).await.status,
        201
    );
    for _ in 0..3 {
        assert_rejected(&login(&gw, "alice@example.com", "wrong password").await);
        assert_rejected(&login(&gw, "ghost@example.com", "wrong password").await);
        // Not an address at all: keyed on the text as typed, lower-cased.
        assert_rejected(&login(&gw, "Not An Email", "wrong password").await);
    }
    let known = login(&gw, "alice@example.com", PASSWORD).await;
    let unknown = login(&gw, "ghost@example.com", PASSWORD).await;
    let invalid = login(&gw, "not an email", PASSWORD).await;
    for response in [&known, &unknown, &invalid] {
        assert_throttled(response);
        assert_eq!(response.body, known.body);
        assert_eq!(header_names(response), header_names(&known));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_login_resets_the_account_counter() {
    let gw = throttle_gateway("account_failures = 3\naddress_failures = 100\n").await;
    assert_eq!(
        register(&gw, "alice@example.com", PASSWORD).await.status,
        201
    );
    for _ in 0..3 {
        for _ in 0..2 {
            assert_rejected(&login(&gw, "alice@example.com", "wrong password").await);
        }
        assert_eq!(login(&gw, "alice@example.com", PASSWORD).await.status, 200);
    }
    for _ in 0..3 {
        assert_rejected(&login(&gw, "alice@example.com", "wrong password").await);
    }
    assert_throttled(&login(&gw, "alice@example.com", PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_spraying_from_one_address_throttles_the_address() {
    let gw = throttle_gateway("account_failures = 5\naddress_failures = 6\n").await;
    assert_eq!(
        register(&gw, "alice@example.com", PASSWORD).await.status,
        201
    );
    // Successes are never counted against the address.
    for _ in 0..10 {
        assert_eq!(login(&gw, "alice@example.com", PASSWORD).await.status, 200);
    }
    // One guess per account, so no account lock ever triggers; each from a
    // different claimed client, which must not matter.
    for i in 0..6 {
        let response = login_from(
            &gw,
            &format!("user{i}@example.com"),
            "Summer2026!",
            &format!("203.0.113.{i}"),
        )
        .await;
        assert_rejected(&response);
    }
    assert_throttled(&login_from(&gw, "user6@example.com", "Summer2026!", "198.51.100.1").await);
    // The address is throttled before any password is checked.
    assert_throttled(&login(&gw, "alice@example.com", PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_does_not_change_the_key() {
    let gw = throttle_gateway("account_failures = 3\naddress_failures = 100\n").await;
    assert_eq!(
        register(&gw, "alice@example.com", PASSWORD).await.status,
        201
    );
    for i in 0..3 {
        let forwarded = format!("198.51.100.{i}");
        assert_rejected(&login_from(&gw, "alice@example.com", "wrong password", &forwarded).await);
    }
    assert_throttled(&login_from(&gw, "alice@example.com", PASSWORD, "192.0.2.200").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_limited_per_address() {
    let gw = throttle_gateway("registrations_per_hour = 30\n").await;
    // Requests refused before any hashing do not use the allowance.
    let invalid = register(&gw, "not-an-email", PASSWORD).await;
    assert_eq!(invalid.status, 400);
    let weak = register(&gw, "weak@example.com", "short").await;
    assert_eq!(weak.status, 400);
    for i in 0..29 {
        let response = register(&gw, &format!("user{i}@example.com"), PASSWORD).await;
        assert_eq!(
            response.status, 201,
            "registration {i}: {:?}",
            response.body
        );
    }
    // A taken address costs a hash like a new one, so it counts too.
    assert_eq!(
        register(&gw, "user0@example.com", PASSWORD).await.status,
        409
    );
    let refused = gw
        .client()
        .post("/auth/register")
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"email": "late@example.com", "password": PASSWORD}))
        .send()
        .await;
    assert_eq!(
        (refused.status.as_u16(), refused.code().as_str()),
        (429, "TOO_MANY_REQUESTS")
    );
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3_600).contains(&wait), "Retry-After: {wait}");
    // Logging in is not registering.
    assert_eq!(login(&gw, "user1@example.com", PASSWORD).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_an_email_is_one_account() {
    let gw = throttle_gateway("").await;
    let first = register(&gw, "alice@example.com", PASSWORD).await;
    assert_eq!(first.status, 201);
    let id = first.json()["user"]["id"].as_str().unwrap().to_owned();
    for spelling in [
        "ａｌｉｃｅ@example.com",
        "ＡＬＩＣＥ＠ＥＸＡＭＰＬＥ.ＣＯＭ",
        "𝐚𝐥𝐢𝐜𝐞@example.com",
    ] {
        let taken = register(&gw, spelling, "another password").await;
        assert_eq!(
            (taken.status.as_u16(), taken.code().as_str()),
            (409, "EMAIL_TAKEN"),
            "{spelling}"
        );
    }
    let fullwidth = login(&gw, "ａｌｉｃｅ@example.com", PASSWORD).await;
    assert_eq!(fullwidth.status, 200);
    assert_eq!(fullwidth.json()["user"]["id"], id.as_str());

    assert_eq!(
        register(&gw, "\u{E9}lodie@example.fr", PASSWORD)
            .await
            .status,
        201
    );
    let decomposed = register(&gw, "E\u{301}LODIE@example.fr", PASSWORD).await;
    assert_eq!(decomposed.status, 409);

    for invisible in [
        "al\u{200B}ice@example.com",
        "alice\u{FEFF}@example.com",
        "a＠b@example.com",
    ] {
        let refused = register(&gw, invisible, PASSWORD).await;
        assert_eq!(
            (refused.status.as_u16(), refused.code().as_str()),
            (400, "INVALID_EMAIL"),
            "{invisible:?}"
        );
    }
}

/// Behind a trusted load balancer every login arrives from its address: the
/// throttle keys on the forwarded client instead, so one sprayer is throttled
/// and everyone else behind the same balancer is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_trusted_proxies_the_forwarded_client_is_the_key() {
    let gw = TestGateway::start_with(GatewayOptions {
        server: "trusted_proxies = [\"127.0.0.0/8\"]".to_owned(),
        auth: format!(
            "{FAST_HASHING}[auth.throttle]\nwindow = \"10m\"\naccount_failures = 100\naddress_failures = 3\n"
        ),
        ..GatewayOptions::default()
    })
    .await;
    for i in 0..3 {
        let email = format!("user{i}@example.com");
        // The left-most entry is the sprayer's own claim; the right-most
        // entry not a trusted proxy is what the balancer saw.
        let chain = format!("192.0.2.{i}, 203.0.113.7, 127.0.0.2");
        assert_rejected(&login_from(&gw, &email, "Summer2026!", &chain).await);
    }
    assert_throttled(&login_from(&gw, "user9@example.com", "x", "203.0.113.7").await);
    // Another client behind the same balancer is not held to it.
    assert_rejected(&login_from(&gw, "user9@example.com", "x", "203.0.113.8").await);
}

/// A stolen access token buys no more password guesses than the login form:
/// wrong current passwords at `/auth/password` count against the account
/// like failed logins, and lock both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_current_passwords_count_against_the_login_lockout() {
    let gw = throttle_gateway("account_failures = 3\naddress_failures = 100\n").await;
    let registered = register(&gw, "carol@example.com", PASSWORD).await;
    assert_eq!(registered.status, 201);
    let token = registered.json()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let change = |current: &'static str| {
        gw.client()
            .post("/auth/password")
            .bearer(&token)
            .json(&json!({"currentPassword": current, "newPassword": "new password"}))
            .send()
    };
    for _ in 0..3 {
        assert_rejected(&change("wrong guess").await);
    }
    // Locked: even the right current password is refused unchecked, and so
    // is a login.
    assert_throttled(&change(PASSWORD).await);
    assert_throttled(&login(&gw, "carol@example.com", PASSWORD).await);
    // Guesses through logins lock the change too.
    assert_eq!(
        register(&gw, "dave@example.com", PASSWORD).await.status,
        201
    );
    let dave = login(&gw, "dave@example.com", PASSWORD).await;
    let dave_token = dave.json()["accessToken"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_rejected(&login(&gw, "dave@example.com", "wrong guess").await);
    }
    let locked = gw
        .client()
        .post("/auth/password")
        .bearer(&dave_token)
        .json(&json!({"currentPassword": PASSWORD, "newPassword": "new password"}))
        .send()
        .await;
    assert_throttled(&locked);
    // Another account changes its password as before.
    let erin = register(&gw, "erin@example.com", PASSWORD).await;
    let changed = gw
        .client()
        .post("/auth/password")
        .bearer(erin.json()["accessToken"].as_str().unwrap())
        .json(&json!({"currentPassword": PASSWORD, "newPassword": "new password"}))
        .send()
        .await;
    assert_eq!(changed.status, 204);
}
