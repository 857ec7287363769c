//! Live connections follow their session: a WebSocket tunnel or a streamed
//! answer opened with an access token is closed, at both ends, within a
//! second of that session's revocation — and nobody else's is touched.

use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::accounts::{login, promote, register, FAST_HASHING};
use crate::support::client::Alpn;
use crate::support::{Behavior, GatewayOptions, Response, TestGateway, Upstream};

/// What "at once" means for a revocation reaching a live connection.
const WITHIN: Duration = Duration::from_secs(1);

async fn live_gateway(ws: &Upstream, events: &Upstream) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        // Strict refresh: a second presentation of a token is reuse at once.
        tokens: "refresh_reuse_grace = \"0s\"".to_owned(),
        auth: FAST_HASHING.to_owned(),
        routes: format!(
            "[[route]]\nname = \"ws\"\npath_prefix = \"/ws/\"\nupstream = \"{}\"\nwebsocket = true\n\
             [[route]]\nname = \"ws-expiring\"\npath_prefix = \"/ws-expiring/\"\nupstream = \"{}\"\n\
             websocket = true\nclose_on_expiry = true\n\
             [[route]]\nname = \"events\"\npath_prefix = \"/events/\"\nupstream = \"{}\"\n",
            ws.url(),
            ws.url(),
            events.url()
        ),
        ..GatewayOptions::default()
    })
    .await
}

fn access(response: &Response) -> String {
    response.json()["accessToken"].as_str().unwrap().to_owned()
}

/// Registers and logs in `email`; returns the login answer.
async fn signed_in(gw: &TestGateway, email: &str) -> Response {
    assert_eq!(register(gw, email, "password-1").await.status, 201);
    let session = login(gw, email, "password-1").await;
    assert_eq!(session.status, 200);
    session
}

/// An open WebSocket tunnel through the gateway, echo checked.
async fn open_tunnel(gw: &TestGateway, path: &str, token: &str) -> TlsStream<TcpStream> {
    let mut tls = gw.client().tls(Alpn::Http1).await;
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    tls.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_echoes(&mut tls).await;
    tls
}

async fn assert_echoes(tls: &mut TlsStream<TcpStream>) {
    tls.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut echoed))
        .await
        .expect("no echo")
        .expect("tunnel closed");
    assert_eq!(&echoed, b"ping");
}

/// The tunnel's client end is closed by the gateway within `limit`.
async fn assert_closed_within(tls: &mut TlsStream<TcpStream>, limit: Duration) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(limit, tls.read(&mut buf))
        .await
        .expect("the tunnel stayed open after its session ended");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "tunnel still carried data: {read:?}"
    );
}

/// Bounded wait until the upstream has seen `n` closes.
async fn upstream_sees_closes(upstream: &Upstream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.closed() < n {
        assert!(
            Instant::now() < deadline,
            "the upstream never saw the close"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_closes_the_users_websocket_and_leaves_another_users_open() {
    let ws = Upstream::start(Behavior::WebSocketEcho).await;
    let events = Upstream::start(Behavior::Events).await;
    let gw = live_gateway(&ws, &events).await;
    let alice = signed_in(&gw, "alice@example.com").await;
    let bob = signed_in(&gw, "bob@example.com").await;
    let mut alice_tunnel = open_tunnel(&gw, "/ws/chat", &access(&alice)).await;
    let mut bob_tunnel = open_tunnel(&gw, "/ws/chat", &access(&bob)).await;

    let out = gw
        .client()
        .post("/auth/logout-all")
        .bearer(&access(&alice))
        .send()
        .await;
    assert_eq!(out.status, 204);

    assert_closed_within(&mut alice_tunnel, WITHIN).await;
    upstream_sees_closes(&ws, 1).await;
    assert_echoes(&mut bob_tunnel).await;
    assert_eq!(ws.closed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_closes_the_users_websocket() {
    let ws = Upstream::start(Behavior::WebSocketEcho).await;
    let events = Upstream::start(Behavior::Events).await;
    let gw = live_gateway(&ws, &events).await;
    signed_in(&gw, "root@example.com").await;
    promote(&gw, "root@example.com").await;
    let admin = access(&login(&gw, "root@example.com", "password-1").await);
    let judy = signed_in(&gw, "judy@example.com").await;
    let judy_id = gw
        .store()
        .user_by_email("judy@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let mut tunnel = open_tunnel(&gw, "/ws/chat", &access(&judy)).await;

    let changed = gw
        .client()
        .request(http::Method::PATCH, &format!("/auth/users/{judy_id}"))
        .bearer(&admin)
        .json(&json!({"role": "editor"}))
        .send()
        .await;
    assert_eq!(changed.status, 200);

    assert_closed_within(&mut tunnel, WITHIN).await;
    upstream_sees_closes(&ws, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_cuts_a_streamed_answer_and_a_password_change_an_http2_stream() {
    let ws = Upstream::start(Behavior::WebSocketEcho).await;
    let events = Upstream::start(Behavior::Events).await;
    let gw = live_gateway(&ws, &events).await;
    let carol = signed_in(&gw, "carol@example.com").await;
    let other = signed_in(&gw, "dave@example.com").await;

    // HTTP/1.1 server-sent events, cut by the logout of this one session.
    let (response, _) = gw
        .client()
        .get("/events/feed")
        .bearer(&access(&carol))
        .send_streaming()
        .await;
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();
    let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: hello\n\n");
    let (untouched, _) = gw
        .client()
        .get("/events/feed")
        .bearer(&access(&other))
        .http2()
        .send_streaming()
        .await;
    let mut untouched = untouched.into_body();
    untouched.frame().await.unwrap().unwrap();

    let refresh = carol.json()["refreshToken"].as_str().unwrap().to_owned();
    let out = gw
        .client()
        .post("/auth/logout")
        .json(&json!({"refreshToken": refresh}))
        .send()
        .await;
    assert_eq!(out.status, 204);
    let next = tokio::time::timeout(WITHIN, stream.frame())
        .await
        .expect("the stream stayed open after logout");
    assert!(!matches!(next, Some(Ok(_))), "the stream went on: {next:?}");
    upstream_sees_closes(&events, 1).await;

    // Dave's HTTP/2 stream lived through Carol's logout; his password
    // change revokes his tokens and resets it.
    let dave_token = access(&other);
    let change = gw
        .client()
        .post("/auth/password")
        .bearer(&dave_token)
        .json(&json!({"currentPassword": "password-1", "newPassword": "password-2"}))
        .send()
        .await;
    assert_eq!(change.status, 204);
    let next = tokio::time::timeout(WITHIN, untouched.frame())
        .await
        .expect("the HTTP/2 stream stayed open after the password change");
    assert!(!matches!(next, Some(Ok(_))), "the stream went on: {next:?}");
    upstream_sees_closes(&events, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_on_expiry_closes_a_tunnel_when_its_token_expires_and_only_there() {
    let ws = Upstream::start(Behavior::WebSocketEcho).await;
    let events = Upstream::start(Behavior::Events).await;
    let gw = live_gateway(&ws, &events).await;
    // Minted so that it expires one second from now.
    let ttl = gw.config().tokens.access_ttl;
    let token = gw.token_at(
        "u-expiring",
        "user",
        SystemTime::now() - ttl + Duration::from_secs(1),
    );
    let mut expiring = open_tunnel(&gw, "/ws-expiring/chat", &token).await;
    let mut lasting = open_tunnel(&gw, "/ws/chat", &token).await;

    assert_closed_within(&mut expiring, Duration::from_secs(5)).await;
    upstream_sees_closes(&ws, 1).await;
    // Past the expiry: the route without close_on_expiry keeps its tunnel.
    assert_echoes(&mut lasting).await;
    assert_eq!(ws.closed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_refresh_reuse_and_deletion_each_close_the_sessions_websocket() {
    let ws = Upstream::start(Behavior::WebSocketEcho).await;
    let events = Upstream::start(Behavior::Events).await;
    let gw = live_gateway(&ws, &events).await;
    signed_in(&gw, "root@example.com").await;
    promote(&gw, "root@example.com").await;
    let admin = access(&login(&gw, "root@example.com", "password-1").await);
    let bystander = signed_in(&gw, "zoe@example.com").await;
    let mut bystander_tunnel = open_tunnel(&gw, "/ws/chat", &access(&bystander)).await;

    // Logout of this one session.
    let erin = signed_in(&gw, "erin@example.com").await;
    let erin_other = login(&gw, "erin@example.com", "password-1").await;
    let mut tunnel = open_tunnel(&gw, "/ws/chat", &access(&erin)).await;
    let mut other_session = open_tunnel(&gw, "/ws/chat", &access(&erin_other)).await;
    let out = gw
        .client()
        .post("/auth/logout")
        .json(&json!({"refreshToken": erin.json()["refreshToken"]}))
        .send()
        .await;
    assert_eq!(out.status, 204);
    assert_closed_within(&mut tunnel, WITHIN).await;
    upstream_sees_closes(&ws, 1).await;
    // The same user's other session keeps its tunnel.
    assert_echoes(&mut other_session).await;

    // Reuse of a rotated refresh token revokes the whole family.
    let frank = signed_in(&gw, "frank@example.com").await;
    let mut tunnel = open_tunnel(&gw, "/ws/chat", &access(&frank)).await;
    let first_refresh = frank.json()["refreshToken"].clone();
    let rotate = |token: serde_json::Value| {
        gw.client()
            .post("/auth/refresh")
            .json(&json!({"refreshToken": token}))
            .send()
    };
    assert_eq!(rotate(first_refresh.clone()).await.status, 200);
    let reused = rotate(first_refresh).await;
    assert_eq!(reused.code(), "TOKEN_REUSE_DETECTED");
    assert_closed_within(&mut tunnel, WITHIN).await;
    upstream_sees_closes(&ws, 2).await;

    // Deletion by an admin.
    let gina = signed_in(&gw, "gina@example.com").await;
    let mut tunnel = open_tunnel(&gw, "/ws/chat", &access(&gina)).await;
    let gina_id = gw
        .store()
        .user_by_email("gina@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let deleted = gw
        .client()
        .request(http::Method::DELETE, &format!("/auth/users/{gina_id}"))
        .bearer(&admin)
        .send()
        .await;
    assert!(deleted.status.is_success(), "{deleted:?}");
    assert_closed_within(&mut tunnel, WITHIN).await;
    upstream_sees_closes(&ws, 3).await;

    assert_echoes(&mut bystander_tunnel).await;
    assert_echoes(&mut other_session).await;
    assert_eq!(ws.closed(), 3);
}
