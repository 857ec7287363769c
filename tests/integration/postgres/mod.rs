//! The PostgreSQL store with real servers: the harness itself, then two
//! gateways on one database behaving as one (accounts, rotation, revocation
//! within a second, crashes, an unreachable database, a stale feed);
//! `restart.rs` restarts a server of its own under two gateways.
//!
//! Each test has a database of its own (`support::postgres`); without
//! `AUTHGATE_TEST_DATABASE_URL` they are skipped, except under `CI=true`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::accounts::FAST_HASHING;
use crate::support::gateway::{BinaryGateway, GatewayFiles};
use crate::support::postgres::TestDatabase;
use crate::support::{Behavior, GatewayOptions, Response, TestGateway, Upstream};

mod restart;

fn options(db: &TestDatabase, upstream: &Upstream, tokens: &str, store: &str) -> GatewayOptions {
    options_at(&db.url, upstream, tokens, store)
}

/// A gateway on the database at `url`.
fn options_at(url: &str, upstream: &Upstream, tokens: &str, store: &str) -> GatewayOptions {
    GatewayOptions {
        tokens: tokens.to_owned(),
        auth: FAST_HASHING.to_owned(),
        // `probe` admits no role anyone has: a valid token gets 403 and a
        // revoked one 401, and neither reaches the upstream.
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{0}\"\n\
             [[route]]\nname = \"probe\"\npath_prefix = \"/probe/\"\nupstream = \"{0}\"\n\
             roles = [\"nobody\"]\n",
            upstream.url()
        ),
        store: format!("backend = \"postgres\"\nurl = \"{url}\"\nmax_connections = 4\n{store}"),
        ..GatewayOptions::default()
    }
}

/// A and B on one database, locking an account after three failures.
async fn locking_pair(db: &TestDatabase, upstream: &Upstream) -> (TestGateway, TestGateway) {
    let throttled = || {
        let gw_options = options(db, upstream, "", "");
        GatewayOptions {
            auth: format!(
                "{}[auth.throttle]\naccount_failures = 3\nbase_lockout = \"60s\"\n",
                gw_options.auth
            ),
            ..gw_options
        }
    };
    let a = TestGateway::start_with(throttled()).await;
    let b = TestGateway::start_with(throttled()).await;
    (a, b)
}

/// Two in-process gateways, A and B, on one database.
async fn pair(
    db: &TestDatabase,
    upstream: &Upstream,
    tokens: &str,
    store: &str,
) -> (TestGateway, TestGateway) {
    let a = TestGateway::start_with(options(db, upstream, tokens, store)).await;
    let b = TestGateway::start_with(options(db, upstream, tokens, store)).await;
    (a, b)
}

async fn post(gw: &TestGateway, path: &str, body: serde_json::Value) -> Response {
    gw.client().post(path).json(&body).send().await
}

async fn register(gw: &TestGateway, email: &str) -> Response {
    post(
        gw,
        "/auth/register",
        json!({"email": email, "password": "password-1"}),
    )
    .await
}

async fn login(gw: &TestGateway, email: &str) -> Response {
    post(
        gw,
        "/auth/login",
        json!({"email": email, "password": "password-1"}),
    )
    .await
}

async fn refresh(gw: &TestGateway, token: &str) -> Response {
    post(gw, "/auth/refresh", json!({"refreshToken": token})).await
}

/// Asks the proxied path's revocation check alone (see `options`): 403
/// while the token is accepted, 401 once revoked, 503 when stale.
async fn probe(gw: &TestGateway, access: &str) -> Response {
    gw.client().get("/probe/x").bearer(access).send().await
}

async fn proxied(gw: &TestGateway, access: &str) -> Response {
    gw.client().get("/api/x").bearer(access).send().await
}

fn field(response: &Response, name: &str) -> String {
    response.json()[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.body))
        .to_owned()
}

/// Polls [`probe`] (which never reaches the upstream) until it answers
/// `status`, and returns how long that took; fails after `limit`.
async fn probe_until(gw: &TestGateway, access: &str, status: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let response = probe(gw, access).await;
        if response.status.as_u16() == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still {} ({:?}) after {limit:?}, expected {status}",
            response.status,
            response.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_test_gets_a_database_of_its_own() {
    let Some(first) = TestDatabase::create().await else {
        return;
    };
    let Some(second) = TestDatabase::create().await else {
        return;
    };
    assert_ne!(first.name, second.name);
    let a = first.client().await;
    a.batch_execute("CREATE TABLE marker (x int)")
        .await
        .unwrap();
    let b = second.client().await;
    let seen = b
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'marker'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        seen.is_none(),
        "a table of one test database is visible in another"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_on_a_log_in_on_b_and_tokens_cross() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let (a, b) = pair(&db, &upstream, "", "").await;
    assert_eq!(register(&a, "ann@example.com").await.status, 201);
    // The email is taken for B too.
    assert_eq!(register(&b, "ann@example.com").await.code(), "EMAIL_TAKEN");
    let session = login(&b, "ann@example.com").await;
    assert_eq!(session.status, 200, "{:?}", session.body);
    let response = proxied(&a, &field(&session, "accessToken")).await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_on_a_then_reuse_on_b_kills_the_family_everywhere() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let (a, b) = pair(&db, &upstream, "refresh_reuse_grace = \"0s\"", "").await;
    let original = field(&register(&a, "bob@example.com").await, "refreshToken");
    let rotated = refresh(&a, &original).await;
    assert_eq!(rotated.status, 200);
    let reuse = refresh(&b, &original).await;
    assert_eq!(
        (reuse.status.as_u16(), reuse.code().as_str()),
        (401, "TOKEN_REUSE_DETECTED")
    );
    // Dead on A as well: its refresh token at once (the store), its access
    // token within a second (the revocation feed).
    assert_eq!(
        refresh(&a, &field(&rotated, "refreshToken")).await.status,
        401
    );
    let took = probe_until(
        &a,
        &field(&rotated, "accessToken"),
        401,
        Duration::from_secs(1),
    )
    .await;
    assert!(took <= Duration::from_secs(1), "{took:?}");
    assert_eq!(
        proxied(&a, &field(&rotated, "accessToken")).await.code(),
        "TOKEN_REVOKED"
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_refreshes_across_a_and_b_mint_one_pair() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let (a, b) = pair(&db, &upstream, "refresh_reuse_grace = \"30s\"", "").await;
    let token = field(&register(&a, "gus@example.com").await, "refreshToken");
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let gw = std::sync::Arc::clone(if i % 2 == 0 { &a } else { &b });
        let token = token.clone();
        tasks.push(tokio::spawn(async move { refresh(&gw, &token).await }));
    }
    let mut pairs = Vec::new();
    for task in tasks {
        let response = task.await.unwrap();
        assert_eq!(response.status, 200, "{:?}", response.body);
        pairs.push((
            field(&response, "refreshToken"),
            field(&response, "accessToken"),
        ));
    }
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 1, "more than one pair was minted");
    let (new_refresh, new_access) = pairs.remove(0);
    // One successor in the store, and the pair kept for the grace is sealed:
    // neither token appears in it.
    let client = db.client().await;
    let tokens: i64 = client
        .query_one("SELECT count(*) FROM refresh_tokens", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tokens, 2);
    let sealed: Vec<u8> = client
        .query_one("SELECT sealed FROM grace_pairs", &[])
        .await
        .unwrap()
        .get(0);
    for secret in [&new_refresh, &new_access] {
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
    assert_eq!(proxied(&b, &new_access).await.status, 200);
    assert_eq!(refresh(&a, &new_refresh).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_role_change_and_deletion_on_a_reach_b_within_a_second() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let (a, b) = pair(&db, &upstream, "", "").await;
    register(&a, "cat@example.com").await;
    let on_a = login(&a, "cat@example.com").await;
    let on_b = login(&b, "cat@example.com").await;
    let access_b = field(&on_b, "accessToken");
    assert_eq!(probe(&b, &access_b).await.status, 403);

    let logout = a
        .client()
        .post("/auth/logout-all")
        .bearer(&field(&on_a, "accessToken"))
        .send()
        .await;
    assert_eq!(logout.status, 204);
    probe_until(&b, &access_b, 401, Duration::from_secs(1)).await;
    assert_eq!(proxied(&b, &access_b).await.code(), "TOKEN_REVOKED");

    // A role change made on A (as an operator would, through the store).
    let fresh = field(&login(&b, "cat@example.com").await, "accessToken");
    assert_eq!(probe(&b, &fresh).await.status, 403);
    let store = a.store();
    let user = store
        .user_by_email("cat@example.com")
        .await
        .unwrap()
        .unwrap();
    store.set_role(&user.id, "editor").await.unwrap();
    probe_until(&b, &fresh, 401, Duration::from_secs(1)).await;

    // And a deletion.
    let fresh = field(&login(&b, "cat@example.com").await, "accessToken");
    assert_eq!(probe(&b, &fresh).await.status, 403);
    store.delete_user(&user.id, unix_now()).await.unwrap();
    probe_until(&b, &fresh, 401, Duration::from_secs(1)).await;
    assert_eq!(proxied(&b, &fresh).await.code(), "TOKEN_REVOKED");
    assert_eq!(upstream.count(), 0, "a revoked token reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_locked_on_a_is_locked_on_b() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let (a, b) = locking_pair(&db, &upstream).await;
    register(&a, "hal@example.com").await;
    // B lets the right password in before the guesses.
    assert_eq!(login(&b, "hal@example.com").await.status, 200);
    for _ in 0..3 {
        let wrong = post(
            &a,
            "/auth/login",
            json!({"email": "hal@example.com", "password": "not-the-password"}),
        )
        .await;
        assert_eq!(wrong.status, 401);
    }
    // B never saw a failure, yet refuses even the right password.
    let locked = login(&b, "hal@example.com").await;
    assert_eq!(
        (locked.status.as_u16(), locked.code().as_str()),
        (429, "TOO_MANY_REQUESTS"),
        "{:?}",
        locked.body
    );
    assert!(locked.header("retry-after").is_some());
}

/// Guessing through the password-change endpoint (with a stolen access
/// token) is throttled across instances as guessing at the login form is:
/// wrong `currentPassword` answers on A lock the account on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_guesses_on_a_lock_the_account_on_b() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let (a, b) = locking_pair(&db, &upstream).await;
    let access = field(&register(&a, "ivy@example.com").await, "accessToken");
    let on_b = field(&login(&b, "ivy@example.com").await, "accessToken");
    let change = |gw: &TestGateway, access: &str, current: &str| {
        gw.client()
            .post("/auth/password")
            .bearer(access)
            .json(&json!({"currentPassword": current, "newPassword": "password-2"}))
            .send()
    };
    for _ in 0..3 {
        let wrong = change(&a, &access, "not-the-password").await;
        assert_eq!(wrong.status, 401, "{:?}", wrong.body);
    }
    // B never saw a guess, yet refuses the right password at the login
    // form and at the password change alike.
    let locked = login(&b, "ivy@example.com").await;
    assert_eq!(
        (locked.status.as_u16(), locked.code().as_str()),
        (429, "TOO_MANY_REQUESTS"),
        "{:?}",
        locked.body
    );
    assert!(locked.header("retry-after").is_some());
    let locked = change(&b, &on_b, "password-1").await;
    assert_eq!(locked.status, 429, "{:?}", locked.body);
    // The refused change changed nothing: the old password is still it.
    let user = db
        .client()
        .await
        .query_one("SELECT token_version FROM users", &[])
        .await
        .unwrap();
    assert_eq!(user.get::<_, i64>(0), 0);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_registration_survives_kill_9() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let files = GatewayFiles::create(&options(&db, &upstream, "", ""));
    let mut a = BinaryGateway::start(&files, "info");
    let response = a
        .client(&files)
        .post("/auth/register")
        .json(&json!({"email": "dan@example.com", "password": "password-1"}))
        .send()
        .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    a.kill9();
    let b = TestGateway::start_with(options(&db, &upstream, "", "")).await;
    assert_eq!(login(&b, "dan@example.com").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_held_down_past_the_bound_fails_closed_then_recovers() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let b = TestGateway::start_with(options(
        &db,
        &upstream,
        "",
        "revocation_max_staleness = \"1s\"",
    ))
    .await;
    register(&b, "eve@example.com").await;
    let access = field(&login(&b, "eve@example.com").await, "accessToken");
    assert_eq!(proxied(&b, &access).await.status, 200);
    assert_eq!(upstream.count(), 1);

    // The listener cannot reconnect; the pool's connections stay open.
    db.set_connections_allowed(false).await;
    db.terminate("application_name = 'authgate-listener'").await;
    probe_until(&b, &access, 503, Duration::from_secs(10)).await;
    let refused = proxied(&b, &access).await;
    assert_eq!(
        (refused.status.as_u16(), refused.code().as_str()),
        (503, "REVOCATIONS_STALE")
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(upstream.count(), 1, "a request passed on stale revocations");

    db.set_connections_allowed(true).await;
    probe_until(&b, &access, 403, Duration::from_secs(10)).await;
    assert_eq!(proxied(&b, &access).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_down_means_503_for_accounts_while_proxying_goes_on() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let (a, b) = pair(&db, &upstream, "", "").await;
    register(&a, "fay@example.com").await;
    let session = login(&a, "fay@example.com").await;
    let access = field(&session, "accessToken");
    let refresh_token = field(&session, "refreshToken");

    db.set_connections_allowed(false).await;
    db.terminate("true").await;
    let start = Instant::now();
    let down = loop {
        let response = login(&a, "fay@example.com").await;
        if response.status != 200 {
            break response;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "login kept working"
        );
    };
    assert_eq!(
        (down.status.as_u16(), down.code().as_str()),
        (503, "STORE_UNAVAILABLE"),
        "{:?}",
        down.body
    );
    assert!(down.header("retry-after").is_some());
    let refresh_down = refresh(&a, &refresh_token).await;
    assert_eq!(
        (refresh_down.status.as_u16(), refresh_down.code().as_str()),
        (503, "STORE_UNAVAILABLE")
    );
    // Within the staleness bound the proxied path needs no database.
    assert_eq!(proxied(&a, &access).await.status, 200);
    assert_eq!(proxied(&b, &access).await.status, 200);

    // Everything comes back by itself.
    db.set_connections_allowed(true).await;
    let start = Instant::now();
    while login(&b, "fay@example.com").await.status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "login never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(login(&a, "fay@example.com").await.status, 200);
    // The refresh refused while down was not remembered as decided.
    assert_eq!(refresh(&a, &refresh_token).await.status, 200);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_sled_installation_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let sled = TestGateway::start_with(GatewayOptions {
        auth: FAST_HASHING.to_owned(),
        ..GatewayOptions::default()
    })
    .await;
    register(&sled, "ida@example.com").await;
    let session = login(&sled, "ida@example.com").await;
    let refresh_token = field(&session, "refreshToken");
    let created = sled
        .client()
        .post("/auth/api-keys")
        .bearer(&field(&session, "accessToken"))
        .json(&serde_json::json!({"name": "ci"}))
        .send()
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let api_key = field(&created, "key");
    let files = sled.stop().await;
    let from = format!("sled:{}", files.dir.path().join("store.sled").display());
    let copy = || {
        // The sled gateway ran inside this process: its store's background
        // threads may hold the database lock a moment after the stop, which
        // the command reports as "in use". Retry (bounded) until it is free,
        // as an in-process restart does.
        let deadline = Instant::now() + Duration::from_secs(10);
        let output = loop {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
                .args(["store", "copy", "--from", &from, "--to", "postgres:"])
                .env("AUTHGATE_DATABASE_URL", &db.url)
                .output()
                .unwrap();
            let in_use = String::from_utf8_lossy(&output.stderr).contains("database in use");
            if !(in_use && Instant::now() < deadline) {
                break output;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let first = copy();
    assert!(first.contains("users: 1 read, 1 added"), "{first}");
    assert!(first.contains("sessions: 2 read, 2 added"), "{first}");
    assert!(first.contains("API keys: 1 read, 1 added"), "{first}");
    let second = copy();
    assert!(second.contains("users: 1 read, 0 added"), "{second}");
    assert!(second.contains("API keys: 1 read, 0 added"), "{second}");
    assert!(
        second.contains("refresh tokens: 2 read, 0 added"),
        "{second}"
    );

    let keys_route = format!(
        "[[route]]\nname = \"keys\"\npath_prefix = \"/keys/\"\nupstream = \"{}\"\napi_keys = true\n",
        upstream.url()
    );
    let mut pg_options = options(&db, &upstream, "", "");
    pg_options.routes.push_str(&keys_route);
    let pg = TestGateway::start_with(pg_options).await;
    assert_eq!(login(&pg, "ida@example.com").await.status, 200);
    // A session from the sled days goes on, and so does an API key.
    assert_eq!(refresh(&pg, &refresh_token).await.status, 200);
    let keyed = pg.client().get("/keys/x").bearer(&api_key).send().await;
    assert_eq!(keyed.status, 200, "{:?}", keyed.body);
}
