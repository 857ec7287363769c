//! API keys end to end: create, use (identity headers, the key id, a forged
//! key id stripped), list without secrets, revoke and be refused at once,
//! the role cap by the owner's role, owner deletion, expiry, throttling of
//! bad keys, routes without `api_keys`, the CLI, and two PostgreSQL
//! instances. Every refusal is proven by an untouched upstream.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};

use crate::accounts::{login, promote, register, FAST_HASHING};
use crate::support::gateway::GatewayFiles;
use crate::support::postgres::TestDatabase;
use crate::support::{Behavior, GatewayOptions, Response, TestGateway, Upstream};

const PASSWORD: &str = "correct horse";

/// `/keys/` takes keys, `/api/` does not, `/admins/` takes keys of admins,
/// `/probe/` takes keys but admits no role (403 while a key is accepted,
/// 401 once refused; the upstream never sees either).
fn options(upstream: &Upstream, auth: &str) -> GatewayOptions {
    GatewayOptions {
        auth: format!("{FAST_HASHING}{auth}"),
        routes: format!(
            "[[route]]\nname = \"keys\"\npath_prefix = \"/keys/\"\nupstream = \"{0}\"\napi_keys = true\n\
             [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{0}\"\n\
             [[route]]\nname = \"admins\"\npath_prefix = \"/admins/\"\nupstream = \"{0}\"\n\
             api_keys = true\nroles = [\"admin\"]\n\
             [[route]]\nname = \"probe\"\npath_prefix = \"/probe/\"\nupstream = \"{0}\"\n\
             api_keys = true\nroles = [\"nobody\"]\n",
            upstream.url()
        ),
        ..GatewayOptions::default()
    }
}

async fn gateway(upstream: &Upstream) -> TestGateway {
    TestGateway::start_with(options(upstream, "")).await
}

/// Registers `email` and returns (user id, access token).
async fn account(gw: &TestGateway, email: &str) -> (String, String) {
    let registered = register(gw, email, PASSWORD).await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let id = registered.json()["user"]["id"].as_str().unwrap().to_owned();
    (id, access(gw, email).await)
}

async fn access(gw: &TestGateway, email: &str) -> String {
    let logged_in = login(gw, email, PASSWORD).await;
    assert_eq!(logged_in.status, 200, "{:?}", logged_in.body);
    logged_in.json()["accessToken"].as_str().unwrap().to_owned()
}

async fn create(gw: &TestGateway, access: &str, body: Value) -> Response {
    gw.client()
        .post("/auth/api-keys")
        .bearer(access)
        .json(&body)
        .send()
        .await
}

/// Creates a key and returns (key, id).
async fn new_key(gw: &TestGateway, access: &str, body: Value) -> (String, String) {
    let created = create(gw, access, body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let json = created.json();
    (
        json["key"].as_str().unwrap().to_owned(),
        json["id"].as_str().unwrap().to_owned(),
    )
}

async fn list(gw: &TestGateway, access: &str, query: &str) -> Response {
    gw.client()
        .get(&format!("/auth/api-keys{query}"))
        .bearer(access)
        .send()
        .await
}

async fn revoke(gw: &TestGateway, access: &str, id: &str) -> Response {
    gw.client()
        .request(Method::DELETE, &format!("/auth/api-keys/{id}"))
        .bearer(access)
        .send()
        .await
}

async fn use_key(gw: &TestGateway, path: &str, key: &str) -> Response {
    gw.client().get(path).bearer(key).send().await
}

fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(
        (response.status.as_u16(), response.code().as_str()),
        (status, code),
        "{:?}",
        response.body
    );
    if status == 401 {
        assert!(
            response.header("www-authenticate").is_some(),
            "a 401 carries a challenge"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_use_list_and_revoke_at_once() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream).await;
    let (alice, token) = account(&gw, "alice@example.com").await;

    let created = create(&gw, &token, json!({"name": "ci deploy"})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let body = created.json();
    let key = body["key"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("agk_") && key.len() >= 4 + 43, "{key}");
    assert_eq!(body["name"], "ci deploy");
    // The caller's own role by default.
    assert_eq!(body["role"], "viewer");
    assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(body["expiresAt"].is_null());

    // A client's own key-id header never reaches the upstream.
    let through = gw
        .client()
        .get("/keys/data")
        .bearer(&key)
        .header("x-user-key-id", "forged")
        .header("X_User_Key_Id", "forged")
        .send()
        .await;
    assert_eq!(through.status, 200, "{:?}", through.body);
    let seen = upstream.only();
    assert_eq!(seen.headers["x-user-id"], alice.as_str());
    assert_eq!(seen.headers["x-user-role"], "viewer");
    let key_ids: Vec<_> = seen.headers.get_all("x-user-key-id").iter().collect();
    assert_eq!(key_ids, [id.as_str()]);
    assert!(seen.headers.get("authorization").is_none());
    upstream.clear();

    let listed = list(&gw, &token, "").await;
    assert_eq!(listed.status, 200);
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    assert!(!text.contains(&key[4..]), "the secret is never listed");
    let keys = listed.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], id.as_str());
    assert!(keys[0].get("key").is_none() && keys[0].get("hash").is_none());
    assert!(keys[0]["revokedAt"].is_null());
    assert!(keys[0].get("lastUsedAt").is_some());

    assert_eq!(revoke(&gw, &token, &id).await.status, 204);
    assert_refused(
        &use_key(&gw, "/keys/data", &key).await,
        401,
        "INVALID_API_KEY",
    );
    assert!(upstream.received().is_empty());
    let listed = list(&gw, &token, "").await.json();
    assert!(listed["keys"][0]["revokedAt"].as_str().is_some());

    // The path still works, with a new key.
    let (other, _) = new_key(&gw, &token, json!({"name": "second"})).await;
    assert_eq!(use_key(&gw, "/keys/data", &other).await.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_refused_where_routes_do_not_take_them_and_on_the_account_endpoints() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream).await;
    let (_, token) = account(&gw, "alice@example.com").await;
    let (key, _) = new_key(&gw, &token, json!({"name": "ci"})).await;

    assert_refused(
        &use_key(&gw, "/api/data", &key).await,
        401,
        "API_KEY_NOT_ACCEPTED",
    );
    // A key cannot make keys, nor act on the account.
    assert_refused(
        &create(&gw, &key, json!({"name": "more"})).await,
        401,
        "API_KEY_NOT_ACCEPTED",
    );
    assert_refused(&list(&gw, &key, "").await, 401, "API_KEY_NOT_ACCEPTED");
    assert!(upstream.received().is_empty());
    assert_eq!(use_key(&gw, "/keys/data", &key).await.status, 200);
    // An access token still works on a key route.
    assert_eq!(use_key(&gw, "/keys/data", &token).await.status, 200);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_are_json_with_codes() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream).await;
    let (_, token) = account(&gw, "alice@example.com").await;
    for (body, code) in [
        (json!({"name": ""}), "INVALID_KEY_NAME"),
        (json!({"name": "x".repeat(101)}), "INVALID_KEY_NAME"),
        (json!({"name": "ci", "role": "no spaces"}), "INVALID_ROLE"),
        (json!({"name": "ci", "expiresIn": 0}), "INVALID_EXPIRY"),
        (json!({"name": "ci", "expiresIn": "soon"}), "INVALID_EXPIRY"),
        (json!({"name": "ci", "other": 1}), "MALFORMED_JSON"),
    ] {
        assert_refused(&create(&gw, &token, body).await, 400, code);
    }
    let (_, id) = new_key(&gw, &token, json!({"name": "ci", "expiresIn": "30d"})).await;
    let (_, bob) = account(&gw, "bob@example.com").await;
    // Someone else's key does not exist for bob, nor their list.
    assert_refused(&revoke(&gw, &bob, &id).await, 404, "API_KEY_NOT_FOUND");
    let alice_id = gw
        .store()
        .user_by_email("alice@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    assert_refused(
        &list(&gw, &bob, &format!("?user={alice_id}")).await,
        403,
        "FORBIDDEN",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_never_exceeds_its_owners_role() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream).await;
    let (alice, _) = account(&gw, "alice@example.com").await;
    let (_, _) = account(&gw, "root@example.com").await;
    promote(&gw, "alice@example.com").await;
    promote(&gw, "root@example.com").await;
    let token = access(&gw, "alice@example.com").await;
    let root = access(&gw, "root@example.com").await;

    assert_refused(
        &create(&gw, &token, json!({"name": "x", "role": "editor"})).await,
        403,
        "ROLE_EXCEEDS_OWNER",
    );
    let (admin_key, _) = new_key(&gw, &token, json!({"name": "a", "role": "admin"})).await;
    let (viewer_key, _) = new_key(&gw, &token, json!({"name": "v", "role": "viewer"})).await;
    assert_eq!(use_key(&gw, "/admins/x", &admin_key).await.status, 200);
    assert_refused(
        &use_key(&gw, "/admins/x", &viewer_key).await,
        403,
        "FORBIDDEN",
    );
    assert_eq!(upstream.count(), 1);
    upstream.clear();

    // Demoted: the admin key falls to the default role at once.
    let demoted = gw
        .client()
        .request(Method::PATCH, &format!("/auth/users/{alice}"))
        .bearer(&root)
        .json(&json!({"role": "editor"}))
        .send()
        .await;
    assert_eq!(demoted.status, 200, "{:?}", demoted.body);
    assert_refused(
        &use_key(&gw, "/admins/x", &admin_key).await,
        403,
        "FORBIDDEN",
    );
    assert!(upstream.received().is_empty());
    assert_eq!(use_key(&gw, "/keys/x", &admin_key).await.status, 200);
    assert_eq!(upstream.only().headers["x-user-role"], "viewer");
    // And the admin lists and revokes anyone's keys.
    let listed = list(&gw, &root, &format!("?user={alice}")).await;
    assert_eq!(listed.json()["keys"].as_array().unwrap().len(), 2);
    let id = listed.json()["keys"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(revoke(&gw, &root, &id).await.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_owner_ends_its_keys() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream).await;
    let (alice, token) = account(&gw, "alice@example.com").await;
    let (_, _) = account(&gw, "root@example.com").await;
    promote(&gw, "root@example.com").await;
    let root = access(&gw, "root@example.com").await;
    let (key, _) = new_key(&gw, &token, json!({"name": "ci"})).await;
    let (root_key, _) = new_key(&gw, &root, json!({"name": "ci"})).await;

    let deleted = gw
        .client()
        .request(Method::DELETE, &format!("/auth/users/{alice}"))
        .bearer(&root)
        .send()
        .await;
    assert_eq!(deleted.status, 204);
    assert_refused(&use_key(&gw, "/keys/x", &key).await, 401, "INVALID_API_KEY");
    assert!(upstream.received().is_empty());
    assert!(gw.store().user_api_keys(&alice).await.unwrap().is_empty());
    assert_eq!(use_key(&gw, "/keys/x", &root_key).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_refused() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream).await;
    let (_, token) = account(&gw, "alice@example.com").await;
    let (key, _) = new_key(&gw, &token, json!({"name": "ci", "expiresIn": 1})).await;
    // `/probe/` admits no role: 403 while the key holds, never the upstream.
    let start = Instant::now();
    loop {
        let response = use_key(&gw, "/probe/x", &key).await;
        if response.status == 401 {
            assert_refused(&response, 401, "API_KEY_EXPIRED");
            break;
        }
        assert_refused(&response, 403, "FORBIDDEN");
        assert!(start.elapsed() < Duration::from_secs(5), "still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_refused(&use_key(&gw, "/keys/x", &key).await, 401, "API_KEY_EXPIRED");
    assert!(upstream.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_count_toward_the_address_throttle() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start_with(options(
        &upstream,
        "[auth.throttle]\nwindow = \"10m\"\naddress_failures = 3\n",
    ))
    .await;
    let (_, token) = account(&gw, "alice@example.com").await;
    let (key, _) = new_key(&gw, &token, json!({"name": "ci"})).await;
    let guess = format!("agk_{}", "A".repeat(43));
    for bad in [guess.as_str(), "agk_short", &format!("{key}x")] {
        assert_refused(&use_key(&gw, "/keys/x", bad).await, 401, "INVALID_API_KEY");
    }
    // Now even the right key is turned away from this address.
    let throttled = use_key(&gw, "/keys/x", &key).await;
    assert_refused(&throttled, 429, "TOO_MANY_REQUESTS");
    assert!(throttled.header("retry-after").is_some());
    assert!(upstream.received().is_empty());
    // Access tokens are not guesses: the route itself still works.
    assert_eq!(use_key(&gw, "/keys/x", &token).await.status, 200);
    assert_eq!(upstream.count(), 1);
}

fn authgate(files: &GatewayFiles, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(args)
        .arg("--config")
        .arg(&files.config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "authgate {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_by_the_cli_works_and_the_cli_revokes_it() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let files = GatewayFiles::create(&options(&upstream, ""));
    let email = "svc@example.com";
    authgate(
        &files,
        &["user", "add", "--email", email, "--role", "deployer"],
        "service-password\n",
    );
    let created = authgate(
        &files,
        &[
            "api-key",
            "create",
            "--email",
            email,
            "--name",
            "deploy bot",
        ],
        "",
    );
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("agk_") && !key.contains('\n'), "{key:?}");
    let listed = authgate(&files, &["api-key", "list", "--email", email], "");
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("deploy bot") && listed.contains("deployer"),
        "{listed}"
    );
    assert!(!listed.contains(&key[4..]), "{listed}");
    let id = listed
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();

    let gw = TestGateway::start_files(files).await;
    let through = use_key(&gw, "/keys/x", &key).await;
    assert_eq!(through.status, 200, "{:?}", through.body);
    let seen = upstream.only();
    assert_eq!(seen.headers["x-user-role"], "deployer");
    assert_eq!(seen.headers["x-user-key-id"], id.as_str());
    upstream.clear();

    let files = gw.stop().await;
    authgate(&files, &["api-key", "revoke", &id], "");
    let gw = TestGateway::start_files(files).await;
    assert_refused(&use_key(&gw, "/keys/x", &key).await, 401, "INVALID_API_KEY");
    assert!(upstream.received().is_empty());
}

/// Polls `/probe/` on `gw` with `key` until it answers `status`; fails
/// after `limit`.
async fn probe_until(gw: &TestGateway, key: &str, status: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let response = use_key(gw, "/probe/x", key).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_a_key_made_on_a_works_on_b_and_its_revocation_reaches_b_within_a_second() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let upstream = Upstream::start(Behavior::Ok).await;
    let shared = |gw_options: GatewayOptions| GatewayOptions {
        store: format!(
            "backend = \"postgres\"\nurl = \"{}\"\nmax_connections = 4\n",
            db.url
        ),
        ..gw_options
    };
    let a = TestGateway::start_with(shared(options(&upstream, ""))).await;
    let b = TestGateway::start_with(shared(options(&upstream, ""))).await;
    let (_, token) = account(&a, "alice@example.com").await;
    let (key, id) = new_key(&a, &token, json!({"name": "ci"})).await;

    // 403 on the probe: B accepts the key (and the upstream is not asked).
    probe_until(&b, &key, 403, Duration::from_secs(1)).await;
    assert_eq!(use_key(&b, "/keys/x", &key).await.status, 200);
    assert_eq!(upstream.count(), 1);
    upstream.clear();

    assert_eq!(revoke(&a, &token, &id).await.status, 204);
    probe_until(&b, &key, 401, Duration::from_secs(1)).await;
    assert_refused(&use_key(&b, "/keys/x", &key).await, 401, "INVALID_API_KEY");
    assert!(upstream.received().is_empty());

    // Deleting the owner on B ends a key made on A, on A.
    let (other, _) = new_key(&a, &token, json!({"name": "second"})).await;
    probe_until(&b, &other, 403, Duration::from_secs(1)).await;
    let (_, _) = account(&b, "root@example.com").await;
    promote(&b, "root@example.com").await;
    let root = access(&b, "root@example.com").await;
    let alice = b
        .store()
        .user_by_email("alice@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let deleted = b
        .client()
        .request(Method::DELETE, &format!("/auth/users/{alice}"))
        .bearer(&root)
        .send()
        .await;
    assert_eq!(deleted.status, 204);
    probe_until(&a, &other, 401, Duration::from_secs(1)).await;
    assert!(upstream.received().is_empty());
}

/// On a `browser = true` route a key is a bearer credential like a token:
/// taken where the route takes keys, refused with 401 JSON (never a
/// redirect to the sign-in page) where it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_on_a_browser_route_is_a_bearer_credential() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let mut opts = options(&upstream, "");
    opts.routes.push_str(&format!(
        "[[route]]\nname = \"dash\"\npath_prefix = \"/dash/\"\nupstream = \"{0}\"\n\
         browser = true\napi_keys = true\n\
         [[route]]\nname = \"notebook\"\npath_prefix = \"/notebook/\"\nupstream = \"{0}\"\n\
         browser = true\n",
        upstream.url()
    ));
    let gw = TestGateway::start_with(opts).await;
    let (alice, token) = account(&gw, "alice@example.com").await;
    let (key, id) = new_key(&gw, &token, json!({"name": "script"})).await;

    let navigation = |path: &'static str| {
        gw.client()
            .get(path)
            .bearer(&key)
            .header("accept", "text/html")
    };
    let refused = navigation("/notebook/").send().await;
    assert_refused(&refused, 401, "API_KEY_NOT_ACCEPTED");
    assert!(upstream.received().is_empty());

    let taken = navigation("/dash/").send().await;
    assert_eq!(taken.status, 200, "{:?}", taken.body);
    let seen = upstream.only();
    assert_eq!(seen.headers["x-user-id"], alice.as_str());
    assert_eq!(seen.headers["x-user-key-id"], id.as_str());
}
