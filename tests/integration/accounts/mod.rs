//! The account endpoints end to end: register, login, refresh rotation and
//! reuse detection, the refresh race, logout, revocation on the next
//! proxied request, CSRF, cookies, admin, limits.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::client::RequestBuilder;
use crate::support::{Behavior, GatewayOptions, Response, TestGateway, Upstream};

mod refresh;

/// Small argon2 parameters keep the suite fast; production defaults are
/// covered by the password unit tests and the benchmark.
pub const FAST_HASHING: &str = "[auth.password]\nmemory_kib = 1024\niterations = 1\n";

pub async fn accounts_gateway(upstream: &Upstream, tokens: &str, auth: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        tokens: tokens.to_owned(),
        auth: format!("{auth}\n{FAST_HASHING}"),
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n\
             [[route]]\nname = \"editors\"\npath_prefix = \"/edit/\"\nupstream = \"{}\"\nroles = [\"editor\"]\n",
            upstream.url(),
            upstream.url()
        ),
        ..GatewayOptions::default()
    })
    .await
}

pub async fn register(gw: &TestGateway, email: &str, password: &str) -> Response {
    gw.client()
        .post("/auth/register")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
}

pub async fn login(gw: &TestGateway, email: &str, password: &str) -> Response {
    gw.client()
        .post("/auth/login")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
}

/// Ends the session of `refresh_token` (`POST /auth/logout`).
pub async fn logout(gw: &TestGateway, refresh_token: &str) -> Response {
    gw.client()
        .post("/auth/logout")
        .json(&json!({"refreshToken": refresh_token}))
        .send()
        .await
}

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

fn cookies(response: &Response) -> Vec<String> {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// `name=value` of a Set-Cookie line.
fn cookie_pair(response: &Response, name: &str) -> String {
    cookies(response)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

/// Makes `email` an admin directly in the store, as the CLI would.
pub async fn promote(gw: &TestGateway, email: &str) {
    let store = gw.store();
    let user = store.user_by_email(email).await.unwrap().unwrap();
    store.set_role(&user.id, "admin").await.unwrap();
}

async fn proxied(gw: &TestGateway, path: &str, access: &str) -> Response {
    gw.client().get(path).bearer(access).send().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_proxy_refresh_logout() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "", "").await;

    let registered = register(&gw, "  Alice@Example.COM ", "correct horse").await;
    assert_eq!(registered.status, 201);
    let body = registered.json();
    assert_eq!(body["user"]["email"], "alice@example.com");
    assert_eq!(body["user"]["role"], "viewer");
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 900);
    assert!(body["user"].get("passwordHash").is_none());
    assert!(body["user"]["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(registered.header("cache-control"), Some("no-store"));
    let user_id = body["user"]["id"].as_str().unwrap().to_owned();

    let logged_in = login(&gw, "alice@example.com", "correct horse").await;
    assert_eq!(logged_in.status, 200);
    let access = field(&logged_in, "accessToken");
    let refresh_token = field(&logged_in, "refreshToken");
    assert!(
        refresh_token.len() >= 43,
        "refresh token carries at least 256 bits"
    );

    let through = proxied(&gw, "/api/data", &access).await;
    assert_eq!(through.status, 200);
    assert_eq!(upstream.only().headers["x-user-id"], user_id.as_str());

    let me = gw.client().get("/auth/me").bearer(&access).send().await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["email"], "alice@example.com");
    assert!(me.json().get("passwordHash").is_none());

    let rotated = refresh(&gw, &refresh_token).await;
    assert_eq!(rotated.status, 200);
    let next_refresh = field(&rotated, "refreshToken");
    assert_ne!(next_refresh, refresh_token);
    assert_eq!(
        proxied(&gw, "/api/again", &field(&rotated, "accessToken"))
            .await
            .status,
        200
    );

    let logout = gw
        .client()
        .post("/auth/logout")
        .json(&json!({"refreshToken": next_refresh}))
        .send()
        .await;
    assert_eq!(logout.status, 204);
    assert!(cookies(&logout)
        .iter()
        .any(|c| c.starts_with("__Secure-authgate_refresh=;") && c.contains("Max-Age=0")));
    let after = refresh(&gw, &next_refresh).await;
    assert_eq!(after.status, 401);
    // The session's access token dies with it.
    upstream.clear();
    let revoked = proxied(&gw, "/api/after-logout", &field(&rotated, "accessToken")).await;
    assert_eq!(revoked.status, 401);
    assert_eq!(revoked.code(), "TOKEN_REVOKED");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_login_errors() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "", "").await;
    assert_eq!(
        register(&gw, "bob@example.com", "password-1").await.status,
        201
    );

    let taken = register(&gw, "BOB@example.com", "password-2").await;
    assert_eq!(
        (taken.status.as_u16(), taken.code().as_str()),
        (409, "EMAIL_TAKEN")
    );
    let weak = register(&gw, "carol@example.com", "short").await;
    assert_eq!(
        (weak.status.as_u16(), weak.code().as_str()),
        (400, "WEAK_PASSWORD")
    );
    let long = register(&gw, "carol@example.com", &"x".repeat(257)).await;
    assert_eq!(
        (long.status.as_u16(), long.code().as_str()),
        (400, "PASSWORD_TOO_LONG")
    );
    let bad_email = register(&gw, "not-an-email", "password-1").await;
    assert_eq!(
        (bad_email.status.as_u16(), bad_email.code().as_str()),
        (400, "INVALID_EMAIL")
    );
    let malformed = gw
        .client()
        .post("/auth/login")
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await;
    assert_eq!(
        (malformed.status.as_u16(), malformed.code().as_str()),
        (400, "MALFORMED_JSON")
    );
    let huge = gw
        .client()
        .post("/auth/login")
        .header("content-type", "application/json")
        .body(vec![b' '; 17 * 1024])
        .send()
        .await;
    assert_eq!(
        (huge.status.as_u16(), huge.code().as_str()),
        (413, "PAYLOAD_TOO_LARGE")
    );
    let wrong_method = gw.client().get("/auth/login").send().await;
    assert_eq!(wrong_method.status, 405);

    // Unknown email and wrong password: same status, same body, same headers.
    let unknown = login(&gw, "nobody@example.com", "password-1").await;
    let wrong = login(&gw, "bob@example.com", "password-X").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.code(), "INVALID_CREDENTIALS");
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body, wrong.body);
    let names = |r: &Response| {
        let mut names: Vec<String> = r
            .headers
            .keys()
            .map(|k| k.to_string())
            .filter(|k| k != "date")
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&unknown), names(&wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_registration_is_403() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "", "registration = \"closed\"").await;
    let response = register(&gw, "dave@example.com", "password-1").await;
    assert_eq!(
        (response.status.as_u16(), response.code().as_str()),
        (403, "REGISTRATION_CLOSED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_and_password_change_revoke_on_the_next_request() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "", "").await;
    register(&gw, "ivan@example.com", "password-1").await;
    let phone = login(&gw, "ivan@example.com", "password-1").await;
    let laptop = login(&gw, "ivan@example.com", "password-1").await;

    let response = gw
        .client()
        .post("/auth/logout-all")
        .bearer(&field(&phone, "accessToken"))
        .send()
        .await;
    assert_eq!(response.status, 204);
    for session in [&phone, &laptop] {
        let access = proxied(&gw, "/api/x", &field(session, "accessToken")).await;
        assert_eq!(
            (access.status.as_u16(), access.code().as_str()),
            (401, "TOKEN_REVOKED")
        );
        assert_eq!(
            refresh(&gw, &field(session, "refreshToken")).await.status,
            401
        );
    }
    assert_eq!(upstream.count(), 0);

    let current = login(&gw, "ivan@example.com", "password-1").await;
    let other = login(&gw, "ivan@example.com", "password-1").await;
    let change = gw
        .client()
        .post("/auth/password")
        .bearer(&field(&current, "accessToken"))
        .json(&json!({"currentPassword": "password-1", "newPassword": "password-2"}))
        .send()
        .await;
    assert_eq!(change.status, 204);
    assert_eq!(
        proxied(&gw, "/api/x", &field(&current, "accessToken"))
            .await
            .code(),
        "TOKEN_REVOKED"
    );
    assert_eq!(
        refresh(&gw, &field(&other, "refreshToken")).await.status,
        401
    );
    // The session that changed the password lives on and gets fresh tokens.
    let renewed = refresh(&gw, &field(&current, "refreshToken")).await;
    assert_eq!(renewed.status, 200);
    assert_eq!(
        proxied(&gw, "/api/x", &field(&renewed, "accessToken"))
            .await
            .status,
        200
    );
    assert_eq!(
        login(&gw, "ivan@example.com", "password-1").await.status,
        401
    );
    assert_eq!(
        login(&gw, "ivan@example.com", "password-2").await.status,
        200
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_role_change_and_deletion_take_effect_at_once() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "", "").await;
    register(&gw, "root@example.com", "password-1").await;
    promote(&gw, "root@example.com").await;
    let admin = field(
        &login(&gw, "root@example.com", "password-1").await,
        "accessToken",
    );
    let judy = register(&gw, "judy@example.com", "password-1").await;
    let judy_id = judy.json()["user"]["id"].as_str().unwrap().to_owned();
    let judy_access = field(&judy, "accessToken");

    let forbidden = gw
        .client()
        .get("/auth/users")
        .bearer(&judy_access)
        .send()
        .await;
    assert_eq!(forbidden.status, 403);
    let listed = gw
        .client()
        .get("/auth/users?limit=1")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(listed.status, 200);
    let page: Value = listed.json();
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    assert!(page["users"][0].get("passwordHash").is_none());
    let next = page["nextAfter"].as_str().unwrap();
    let second = gw
        .client()
        .get(&format!("/auth/users?limit=1&after={next}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(second.json()["users"].as_array().unwrap().len(), 1);
    assert!(second.json().get("nextAfter").is_none());

    let shown = gw
        .client()
        .get(&format!("/auth/users/{judy_id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(shown.json()["email"], "judy@example.com");

    assert_eq!(proxied(&gw, "/edit/doc", &judy_access).await.status, 403);
    let promoted = gw
        .client()
        .request(http::Method::PATCH, &format!("/auth/users/{judy_id}"))
        .bearer(&admin)
        .json(&json!({"role": "editor"}))
        .send()
        .await;
    assert_eq!(promoted.status, 200);
    assert_eq!(promoted.json()["role"], "editor");
    let stale = proxied(&gw, "/api/x", &judy_access).await;
    assert_eq!(stale.code(), "TOKEN_REVOKED");
    let renewed = refresh(&gw, &field(&judy, "refreshToken")).await;
    let editor_access = field(&renewed, "accessToken");
    assert_eq!(proxied(&gw, "/edit/doc", &editor_access).await.status, 200);

    let deleted = gw
        .client()
        .request(http::Method::DELETE, &format!("/auth/users/{judy_id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(deleted.status, 204);
    upstream.clear();
    assert_eq!(
        proxied(&gw, "/api/x", &editor_access).await.code(),
        "TOKEN_REVOKED"
    );
    assert_eq!(
        refresh(&gw, &field(&renewed, "refreshToken")).await.status,
        401
    );
    assert_eq!(
        login(&gw, "judy@example.com", "password-1").await.status,
        401
    );
    assert_eq!(upstream.count(), 0);
    let missing = gw
        .client()
        .get(&format!("/auth/users/{judy_id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_hashing_parameters_rehash_on_login() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = accounts_gateway(&upstream, "", "").await;
    assert_eq!(
        register(&gw, "rehash@example.com", "password-1")
            .await
            .status,
        201
    );
    let before = gw
        .store()
        .user_by_email("rehash@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        before.password_hash.starts_with("$argon2id$"),
        "{}",
        before.password_hash
    );
    assert!(
        before.password_hash.contains("t=1"),
        "{}",
        before.password_hash
    );

    let files = gw.stop().await;
    let text = std::fs::read_to_string(&files.config_path).unwrap();
    std::fs::write(
        &files.config_path,
        text.replace("iterations = 1", "iterations = 2"),
    )
    .unwrap();
    let gw = TestGateway::start_files(files).await;

    assert_eq!(
        login(&gw, "rehash@example.com", "password-1").await.status,
        200
    );
    let after = gw
        .store()
        .user_by_email("rehash@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.password_hash.contains("t=2"),
        "{}",
        after.password_hash
    );
    assert_ne!(after.password_hash, before.password_hash);
    // The upgrade changed nothing else: same user, old tokens still valid.
    assert_eq!(after.token_version, before.token_version);
    assert_eq!(
        login(&gw, "rehash@example.com", "password-1").await.status,
        200
    );
    assert_eq!(
        login(&gw, "rehash@example.com", "password-2").await.status,
        401
    );
}
