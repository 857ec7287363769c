//! Refresh under load and after revocation: the store stays bounded however
//! often a session rotates, reuse of a token already dropped from it is
//! still caught, refresh is rate-limited per session and per address,
//! sessions per user are capped, and a revoked session's old token gets 401
//! within the grace instead of the pair shared from memory.

use serde_json::json;

use crate::accounts::{accounts_gateway, login, register};
use crate::support::{Behavior, Response, TestGateway, Upstream};

async fn refresh(gw: &TestGateway, token: &str) -> Response {
    gw.client()
        .post("/auth/refresh")
        .json(&json!({"refreshToken": token}))
        .send()
        .await
}

fn field(response: &Response, name: &str) -> String {
    response.json()[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.body))
        .to_owned()
}

async fn proxied(gw: &TestGateway, access: &str) -> Response {
    gw.client().get("/api/x").bearer(access).send().await
}

fn outcome(response: &Response) -> (u16, String) {
    (response.status.as_u16(), response.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rotations_keep_the_store_bounded_and_reuse_of_a_dropped_token_is_caught() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(
        &upstream,
        "refresh_reuse_grace = \"0s\"",
        "refresh_per_session_per_minute = 1000\nrefresh_per_address_per_minute = 1000",
    )
    .await;
    let registered = register(&gw, "rita@example.com", "password-1").await;
    let mut token = field(&registered, "refreshToken");
    let mut issued = Vec::new();
    let mut access = String::new();
    for i in 0..60 {
        let rotated = refresh(&gw, &token).await;
        assert_eq!(rotated.status, 200, "rotation {i}: {:?}", rotated.body);
        token = field(&rotated, "refreshToken");
        access = field(&rotated, "accessToken");
        issued.push(token.clone());
        let counts = gw.store().record_counts().await.unwrap();
        // The family, its chain, the token from registration (kept to its
        // expiry) and the live one: the same after 1 rotation as after 60.
        assert_eq!(
            (counts.families, counts.chains, counts.refresh_tokens),
            (1, 1, 2),
            "after rotation {i}"
        );
        assert!(counts.index_entries <= 5, "after rotation {i}: {counts:?}");
    }

    // Long gone from the store, yet recognised as this session's: reuse.
    let reused = refresh(&gw, &issued[10]).await;
    assert_eq!(outcome(&reused), (401, "TOKEN_REUSE_DETECTED".to_owned()));
    assert_eq!(refresh(&gw, &token).await.status, 401);
    let refused = proxied(&gw, &access).await;
    assert_eq!(outcome(&refused), (401, "TOKEN_REVOKED".to_owned()));
    assert!(upstream.received().is_empty());

    let fresh = login(&gw, "rita@example.com", "password-1").await;
    assert_eq!(
        proxied(&gw, &field(&fresh, "accessToken")).await.status,
        200
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_rate_limited_per_session_and_per_address() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(
        &upstream,
        "refresh_reuse_grace = \"0s\"",
        "refresh_per_session_per_minute = 3\nrefresh_per_address_per_minute = 8",
    )
    .await;
    let registered = register(&gw, "sam@example.com", "password-1").await;
    let mut token = field(&registered, "refreshToken");
    for _ in 0..3 {
        let rotated = refresh(&gw, &token).await;
        assert_eq!(rotated.status, 200);
        token = field(&rotated, "refreshToken");
    }
    let limited = refresh(&gw, &token).await;
    assert_eq!(outcome(&limited), (429, "TOO_MANY_REQUESTS".to_owned()));
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(limited.header("set-cookie").is_none());

    // Four requests so far from this address; made-up tokens count too.
    for i in 0..4 {
        let bogus = refresh(&gw, &format!("made-up-{i}")).await;
        assert_eq!(outcome(&bogus), (401, "INVALID_REFRESH_TOKEN".to_owned()));
    }
    let flooded = refresh(&gw, "made-up-again").await;
    assert_eq!(outcome(&flooded), (429, "TOO_MANY_REQUESTS".to_owned()));
    assert!(flooded.header("retry-after").is_some());

    // The refused rotation left the session intact: its token is still live
    // in the store, and its pair still reaches the upstream.
    let record = gw
        .store()
        .refresh_record(&authgate::auth::sessions::hash_token(&token))
        .await
        .unwrap()
        .unwrap();
    assert!(record.rotated_at.is_none());
    assert!(upstream.received().is_empty());
    let access = field(
        &login(&gw, "sam@example.com", "password-1").await,
        "accessToken",
    );
    assert_eq!(proxied(&gw, &access).await.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_past_the_session_cap_ends_the_oldest_session() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "", "max_sessions_per_user = 2").await;
    let oldest = register(&gw, "tess@example.com", "password-1").await;
    let middle = login(&gw, "tess@example.com", "password-1").await;
    let newest = login(&gw, "tess@example.com", "password-1").await;

    let refused = proxied(&gw, &field(&oldest, "accessToken")).await;
    assert_eq!(outcome(&refused), (401, "TOKEN_REVOKED".to_owned()));
    let stale = refresh(&gw, &field(&oldest, "refreshToken")).await;
    assert_eq!(stale.status, 401);
    assert!(upstream.received().is_empty());

    assert_eq!(
        refresh(&gw, &field(&middle, "refreshToken")).await.status,
        200
    );
    assert_eq!(
        proxied(&gw, &field(&newest, "accessToken")).await.status,
        200
    );
    assert_eq!(upstream.count(), 1);
    let user = gw
        .store()
        .user_by_email("tess@example.com")
        .await
        .unwrap()
        .unwrap();
    // The ended session was purged by the next sweep; two remain after it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    gw.store().sweep_expired(now).await.unwrap();
    let revoked_now = gw
        .store()
        .cap_user_families(&user.id, 2, now)
        .await
        .unwrap();
    assert!(revoked_now.is_empty());
    assert_eq!(gw.store().record_counts().await.unwrap().families, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_grace_a_revoked_sessions_old_token_gets_401_not_its_pair() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "refresh_reuse_grace = \"60s\"", "").await;

    // Logout: the token presented before it must not replay the dead pair.
    let registered = register(&gw, "uma@example.com", "password-1").await;
    let original = field(&registered, "refreshToken");
    let rotated = refresh(&gw, &original).await;
    assert_eq!(rotated.status, 200);
    let logout = gw
        .client()
        .post("/auth/logout")
        .json(&json!({"refreshToken": field(&rotated, "refreshToken")}))
        .send()
        .await;
    assert_eq!(logout.status, 204);
    let replay = refresh(&gw, &original).await;
    assert_eq!(outcome(&replay), (401, "INVALID_REFRESH_TOKEN".to_owned()));
    assert!(replay.header("set-cookie").is_none());

    // Password change from another session ends this one the same way.
    let phone = login(&gw, "uma@example.com", "password-1").await;
    let laptop = login(&gw, "uma@example.com", "password-1").await;
    let phone_token = field(&phone, "refreshToken");
    let phone_pair = refresh(&gw, &phone_token).await;
    assert_eq!(phone_pair.status, 200);
    let change = gw
        .client()
        .post("/auth/password")
        .bearer(&field(&laptop, "accessToken"))
        .json(&json!({"currentPassword": "password-1", "newPassword": "password-2"}))
        .send()
        .await;
    assert_eq!(change.status, 204);
    let replay = refresh(&gw, &phone_token).await;
    assert_eq!(outcome(&replay), (401, "INVALID_REFRESH_TOKEN".to_owned()));
    assert!(replay.header("set-cookie").is_none());
    let dead = proxied(&gw, &field(&phone_pair, "accessToken")).await;
    assert_eq!(dead.status, 401);
    assert!(upstream.received().is_empty());

    // The session that changed the password still refreshes and proxies.
    let renewed = refresh(&gw, &field(&laptop, "refreshToken")).await;
    assert_eq!(renewed.status, 200);
    assert_eq!(
        proxied(&gw, &field(&renewed, "accessToken")).await.status,
        200
    );
    assert_eq!(upstream.count(), 1);
}
