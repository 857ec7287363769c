//! Sessions minted after a slow password check must not outlive a change
//! committed during it (a login racing a password change, logout-all, role
//! change or deletion; a rehash-on-login racing a password change), and
//! revoked sessions stay revoked across a restart that lowers `access_ttl`.
//!
//! The races are ordered through the one argon2 worker (`hash_workers = 1`),
//! whose queue is first in, first out. Requests are put on the wire one
//! after the other, so their jobs queue in that order, and a blocker (a
//! login for an unknown account: one argon2 run) marks a point in the queue:
//! when it answers, everything queued before it has run. The margins are
//! whole argon2 runs against one local round trip.

use authgate::auth::claims::AccessClaims;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::accounts::register;
use crate::support::client::Alpn;
use crate::support::{Behavior, GatewayOptions, Response, TestGateway, Upstream};

const OLD: &str = "password-old";
const NEW: &str = "password-new";
/// The role the role change gives.
const NEW_ROLE: &str = "editor";

/// One argon2 worker; each run is long against a local round trip.
const ONE_SLOW_WORKER: &str =
    "[auth.password]\nmemory_kib = 8192\niterations = 2\nhash_workers = 1\n";

async fn race_gateway(upstream: &Upstream, password: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        auth: password.to_owned(),
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
        ..GatewayOptions::default()
    })
    .await
}

fn field(response: &Response, name: &str) -> String {
    response.json()[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.body))
        .to_owned()
}

/// Sends a login; see [`send_in_order`].
async fn spawn_login(gw: &TestGateway, email: &str, password: &str) -> JoinHandle<Response> {
    let body = json!({"email": email, "password": password});
    send_in_order(gw, "POST", "/auth/login", None, &body).await
}

/// A login for an account that does not exist: one argon2 run on the
/// worker, then 401. Used to hold the queue in a known order.
async fn spawn_blocker(gw: &TestGateway, n: usize) -> JoinHandle<Response> {
    spawn_login(gw, &format!("blocker-{n}@example.com"), "not a password").await
}

/// Writes a request on a fresh connection and returns once it is on the
/// wire, reading the answer in a task. The next request's TLS handshake
/// takes a round trip and more; the gateway parses a request and queues its
/// argon2 job in microseconds, so requests sent one after the other this way
/// reach the argon2 queue in that order.
async fn send_in_order(
    gw: &TestGateway,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> JoinHandle<Response> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let auth = bearer
        .map(|token| format!("authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         {auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tls = gw.client().tls(Alpn::Http1).await;
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::spawn(async move {
        let mut received = Vec::new();
        tls.read_to_end(&mut received).await.unwrap();
        parse_response(&received)
    })
}

/// An HTTP/1.1 response with a Content-Length body, as the gateway answers
/// its own endpoints.
fn parse_response(raw: &[u8]) -> Response {
    let text = std::str::from_utf8(raw).unwrap();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            http::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    assert!(
        !headers.contains_key("transfer-encoding"),
        "expected a Content-Length body: {head}"
    );
    Response {
        status: http::StatusCode::from_u16(status).unwrap(),
        headers,
        body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        version: http::Version::HTTP_11,
        trailers: None,
    }
}

async fn refresh(gw: &TestGateway, token: &str) -> Response {
    gw.client()
        .post("/auth/refresh")
        .json(&json!({"refreshToken": token}))
        .send()
        .await
}

/// Queues a blocker behind whatever was sent just before and waits for it:
/// by then what was queued before it has run, and what that queued when it
/// completed (while the blocker ran) is running.
async fn hold_the_worker(gw: &TestGateway, n: usize) {
    let blocker = spawn_blocker(gw, n).await;
    assert_eq!(blocker.await.unwrap().status, 401);
}

/// The racing login must not leave a session behind. It is normally refused
/// (401 INVALID_CREDENTIALS: the change committed during its check). When a
/// loaded machine lets the change commit after the login's session was
/// created instead, the change must have ended that session: nothing it was
/// given may work, and nothing reaches the upstream.
/// `raced` names what the login raced, for the failure message.
async fn assert_no_surviving_session(
    gw: &TestGateway,
    upstream: &Upstream,
    login: &Response,
    raced: &str,
) {
    if login.status == 200 {
        let renewed = refresh(gw, &field(login, "refreshToken")).await;
        assert_eq!(
            renewed.status, 401,
            "the login racing {raced}: its refresh token minted a new pair"
        );
        assert_access_refused(gw, upstream, login, &format!("the login racing {raced}")).await;
        return;
    }
    assert_eq!(
        (login.status.as_u16(), login.code().as_str()),
        (401, "INVALID_CREDENTIALS"),
        "the login racing {raced}: {:?}",
        login.body
    );
}

/// The login's access token is refused, and nothing reached the upstream.
async fn assert_access_refused(
    gw: &TestGateway,
    upstream: &Upstream,
    login: &Response,
    what: &str,
) {
    let access = gw
        .client()
        .get("/api/x")
        .bearer(&field(login, "accessToken"))
        .send()
        .await;
    assert_eq!(access.status, 401, "{what}");
    assert!(upstream.received().is_empty(), "{what}");
}

/// Logs in and proves the session reaches the upstream.
async fn assert_login_works(gw: &TestGateway, upstream: &Upstream, email: &str, password: &str) {
    let before = upstream.count();
    let fresh = spawn_login(gw, email, password).await.await.unwrap();
    assert_eq!(fresh.status, 200, "{:?}", fresh.body);
    let through = gw
        .client()
        .get("/api/x")
        .bearer(&field(&fresh, "accessToken"))
        .send()
        .await;
    assert_eq!(through.status, 200);
    assert_eq!(upstream.count(), before + 1);
}

/// The race the issue reproduced: a login with the old password reads the
/// user while a password change is hashing the new one, and verifies after
/// the change is stored. Its session must not survive the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_racing_a_password_change_gets_no_session() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = race_gateway(&upstream, ONE_SLOW_WORKER).await;
    let registered = register(&gw, "race@example.com", OLD).await;
    assert_eq!(registered.status, 201);
    let token = field(&registered, "accessToken");
    let body = json!({"currentPassword": OLD, "newPassword": NEW});
    // Queue: [change's verify, blocker]. The change queues its hashing when
    // its verify completes, behind the blocker: when the blocker answers,
    // the new hash is being computed and not yet stored.
    let change = send_in_order(&gw, "POST", "/auth/password", Some(&token), &body).await;
    hold_the_worker(&gw, 0).await;
    // Reads the old hash; its verify queues behind the change's hashing.
    let login = spawn_login(&gw, "race@example.com", OLD).await;
    assert_eq!(change.await.unwrap().status, 204);
    let login = login.await.unwrap();
    assert_no_surviving_session(&gw, &upstream, &login, "a password change").await;
    // The change stands, and the path works with the new password.
    let old = spawn_login(&gw, "race@example.com", OLD).await.await;
    assert_eq!(old.unwrap().status, 401);
    assert_login_works(&gw, &upstream, "race@example.com", NEW).await;
}

/// The revoking action a login races, done while its check is running.
#[derive(Debug, Clone, Copy)]
enum Action {
    LogoutAll,
    RoleChange,
    Delete,
}

impl Action {
    async fn run(self, gw: &TestGateway, admin: &str, user_token: &str, user_id: &str) {
        let client = gw.client();
        let response = match self {
            Action::LogoutAll => client.post("/auth/logout-all").bearer(user_token).send(),
            Action::RoleChange => client
                .request(http::Method::PATCH, &format!("/auth/users/{user_id}"))
                .bearer(admin)
                .json(&json!({"role": NEW_ROLE}))
                .send(),
            Action::Delete => client
                .request(http::Method::DELETE, &format!("/auth/users/{user_id}"))
                .bearer(admin)
                .send(),
        }
        .await;
        assert!(response.status.is_success(), "{self:?}: {:?}", response);
    }

    /// What the login may leave depends on when it read the user, which its
    /// access token's version tells (`read_before` is the version before the
    /// action). The blocker normally has it read the user before the action
    /// and verify during it, and it is refused; a loaded machine can delay
    /// the gateway's read of the login past the action, or the action past
    /// the login's whole check.
    async fn assert_login_outcome(
        self,
        gw: &TestGateway,
        upstream: &Upstream,
        login: &Response,
        read_before: u32,
    ) {
        let minted = (login.status == 200).then(|| access_claims(&field(login, "accessToken")));
        if let Some(claims) = minted.as_ref().filter(|claims| claims.ver > read_before) {
            // Read after the action committed: an ordinary later login, of a
            // user the action left able to log in, with what it left.
            assert!(!matches!(self, Action::Delete), "a deleted user logged in");
            if matches!(self, Action::RoleChange) {
                assert_eq!(claims.role, NEW_ROLE, "{claims:?}");
            }
            return;
        }
        if matches!(self, Action::RoleChange) && login.status == 200 {
            // Created before the role change committed: a role change ends no
            // session, but no token with the old role may work after it.
            assert_access_refused(gw, upstream, login, "an access token with the old role").await;
            let renewed = refresh(gw, &field(login, "refreshToken")).await;
            if renewed.status == 200 {
                let claims = access_claims(&field(&renewed, "accessToken"));
                assert_eq!(claims.role, NEW_ROLE, "{claims:?}");
            }
            return;
        }
        assert_no_surviving_session(gw, upstream, login, &format!("{self:?}")).await;
    }
}

/// What an access token was minted with, read from its payload (the test
/// trusts the gateway's signature).
fn access_claims(token: &str) -> AccessClaims {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("the payload is base64url");
    serde_json::from_slice(&bytes).expect("the payload is access claims")
}

/// A login whose check is running while logout-all, a role change or a
/// deletion commits gets no session; a deleted user's login answers 401,
/// not 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_racing_logout_all_role_change_or_deletion_gets_no_session() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = race_gateway(&upstream, ONE_SLOW_WORKER).await;
    assert_eq!(register(&gw, "root@example.com", OLD).await.status, 201);
    crate::accounts::promote(&gw, "root@example.com").await;
    let admin = spawn_login(&gw, "root@example.com", OLD).await.await;
    let admin = field(&admin.unwrap(), "accessToken");
    for (n, action) in [Action::LogoutAll, Action::RoleChange, Action::Delete]
        .into_iter()
        .enumerate()
    {
        let email = format!("user-{n}@example.com");
        let registered = register(&gw, &email, OLD).await;
        assert_eq!(registered.status, 201);
        let user_token = field(&registered, "accessToken");
        let user_id = registered.json()["user"]["id"].as_str().unwrap().to_owned();
        // Queue: [blocker, login]. When the blocker answers, the login has
        // read the user and its verify is running: the action commits
        // during it.
        let blocker = spawn_blocker(&gw, n).await;
        let login = spawn_login(&gw, &email, OLD).await;
        assert_eq!(blocker.await.unwrap().status, 401);
        action.run(&gw, &admin, &user_token, &user_id).await;
        let login = login.await.unwrap();
        action
            .assert_login_outcome(&gw, &upstream, &login, access_claims(&user_token).ver)
            .await;
    }
    // Sessions that raced nothing work, with the new role.
    assert_login_works(&gw, &upstream, "user-0@example.com", OLD).await;
    let fresh = spawn_login(&gw, "user-1@example.com", OLD).await.await;
    let me = gw
        .client()
        .get("/auth/me")
        .bearer(&field(&fresh.unwrap(), "accessToken"))
        .send()
        .await;
    assert_eq!(me.json()["role"], NEW_ROLE, "{:?}", me.body);
}

/// After the operator raises the argon2 cost, a login with the old password
/// that verified after a password change was stored must not write its
/// rehash of the old password over the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rehash_on_login_never_reverts_a_password_change() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let cheap = "[auth.password]\nmemory_kib = 8192\niterations = 1\nhash_workers = 1\n";
    let gw = race_gateway(&upstream, cheap).await;
    let registered = register(&gw, "rehash@example.com", OLD).await;
    assert_eq!(registered.status, 201);
    let files = gw.stop().await;
    let text = std::fs::read_to_string(&files.config_path).unwrap();
    std::fs::write(
        &files.config_path,
        text.replace("iterations = 1", "iterations = 2"),
    )
    .unwrap();
    let gw = TestGateway::start_files(files).await;

    // As in the login race: the change's hashing runs when the blocker
    // answers; the login reads the old hash, verifies it after the change
    // is stored, and then wants to store a rehash of the old password.
    let token = field(&registered, "accessToken");
    let body = json!({"currentPassword": OLD, "newPassword": NEW});
    let change = send_in_order(&gw, "POST", "/auth/password", Some(&token), &body).await;
    hold_the_worker(&gw, 0).await;
    let login = spawn_login(&gw, "rehash@example.com", OLD).await;
    assert_eq!(change.await.unwrap().status, 204);
    let login = login.await.unwrap();
    assert_no_surviving_session(&gw, &upstream, &login, "a password change").await;
    // The change stands: the old password is refused, the new one works.
    let old = spawn_login(&gw, "rehash@example.com", OLD).await.await;
    assert_eq!(old.unwrap().status, 401);
    assert_login_works(&gw, &upstream, "rehash@example.com", NEW).await;
}

/// Revocations reloaded at start cover the longest lifetime a live access
/// token can have: after `access_ttl` is lowered across a restart, an access
/// token minted under the old, longer lifetime for a session logged out
/// before the restart stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_access_ttl_does_not_revive_revoked_sessions() {
    use std::time::{Duration, SystemTime};

    use authgate::auth::jwt::TokenIssuer;
    use authgate::auth::sessions::hash_token;
    use authgate::config::secret::AccessSecret;

    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start_with(GatewayOptions {
        tokens: "access_ttl = \"1h\"\n".to_owned(),
        auth: crate::accounts::FAST_HASHING.to_owned(),
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
        ..GatewayOptions::default()
    })
    .await;
    let registered = register(&gw, "ttl@example.com", OLD).await;
    assert_eq!(registered.status, 201);
    let user_id = registered.json()["user"]["id"].as_str().unwrap().to_owned();
    let family = gw
        .store()
        .refresh_record(&hash_token(&field(&registered, "refreshToken")))
        .await
        .unwrap()
        .unwrap()
        .family_id;
    // An access token of this session minted twenty minutes ago under the
    // one-hour lifetime (still valid for forty minutes), and the session
    // logged out fifteen minutes ago.
    let now = SystemTime::now();
    let secret = AccessSecret::from_bytes(crate::support::gateway::SECRET.to_vec()).unwrap();
    let old_token = TokenIssuer::new(&gw.config().tokens, &secret)
        .mint(
            &user_id,
            "viewer",
            0,
            Some(&family),
            now - Duration::from_secs(20 * 60),
        )
        .unwrap()
        .token;
    let fifteen_minutes_ago = authgate::timestamp::unix_seconds(now) - 15 * 60;
    assert!(gw
        .store()
        .revoke_family(&family, fifteen_minutes_ago)
        .await
        .unwrap());

    let files = gw.stop().await;
    let text = std::fs::read_to_string(&files.config_path).unwrap();
    std::fs::write(
        &files.config_path,
        text.replace("access_ttl = \"1h\"", "access_ttl = \"5m\""),
    )
    .unwrap();
    let gw = TestGateway::start_files(files).await;

    let refused = gw.client().get("/api/x").bearer(&old_token).send().await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(
        (refused.status.as_u16(), refused.code().as_str()),
        (401, "TOKEN_REVOKED"),
        "{:?}",
        refused.body
    );
    assert!(upstream.received().is_empty());
    // A session that was never revoked works.
    assert_login_works(&gw, &upstream, "ttl@example.com", OLD).await;
}
