//! Operations end to end: `/metrics` parsed and its series moving by the
//! expected amounts as requests flow, `/healthz` and `/readyz` (failing when
//! the store's write probe fails or the certificate has expired), one audit
//! line per security event with no secret in any, and JSON log lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::accounts::{login, promote, register, FAST_HASHING};
use crate::support::client::Alpn;
use crate::support::gateway::{BinaryGateway, GatewayFiles};
use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

mod audit;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// A plain-HTTP exchange with the admin listener.
async fn admin(addr: SocketAddr, method: http::Method, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Every sample of a scrape, keyed by `name{labels}` as written.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, text) = admin(addr, http::Method::GET, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text: {text}");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// Asserts each series moved by exactly its delta between two scrapes.
fn assert_moved(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    deltas: &[(&str, f64)],
) {
    for (series, delta) in deltas {
        let moved = value(after, series) - value(before, series);
        assert_eq!(moved, *delta, "{series} moved by {moved}, not {delta}");
    }
}

async fn metrics_gateway(upstream: &Upstream, refused: SocketAddr) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        tokens: "refresh_reuse_grace = \"0s\"\n".to_owned(),
        auth: FAST_HASHING.to_owned(),
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n\
             [[route]]\nname = \"gone\"\npath_prefix = \"/gone/\"\nupstream = \"http://{refused}\"\n",
            upstream.url()
        ),
        extra: ADMIN.to_owned(),
        ..GatewayOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_requests_flow() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let refused = Upstream::refused_addr().await;
    let gw = metrics_gateway(&upstream, refused).await;
    let addr = gw.admin_addr();
    let token = gw.token("user-1", "viewer");
    let before = scrape(addr).await;

    for _ in 0..2 {
        let ok = gw.client().get("/api/x").bearer(&token).send().await;
        assert_eq!(ok.status, 200);
    }
    let anonymous = gw.client().get("/api/x").send().await;
    assert_eq!(anonymous.code(), "MISSING_TOKEN");
    assert_eq!(
        upstream.received().len(),
        2,
        "the refused request reached the upstream"
    );
    let gone = gw.client().get("/gone/x").bearer(&token).send().await;
    assert_eq!(gone.status, 502);
    assert_eq!(
        register(&gw, "mia@example.com", "password-1").await.status,
        201
    );
    assert_eq!(
        login(&gw, "mia@example.com", "wrong-password").await.status,
        401
    );
    let session = login(&gw, "mia@example.com", "password-1").await;
    assert_eq!(session.status, 200);
    let refresh_token = session.json()["refreshToken"].as_str().unwrap().to_owned();
    for expected in [200, 401] {
        let rotated = gw
            .client()
            .post("/auth/refresh")
            .json(&json!({"refreshToken": refresh_token}))
            .send()
            .await;
        assert_eq!(rotated.status, expected);
    }

    let after = scrape(addr).await;
    assert_moved(
        &before,
        &after,
        &[
            ("authgate_requests_total{route=\"api\",status=\"200\"}", 2.0),
            ("authgate_requests_total{route=\"api\",status=\"401\"}", 1.0),
            (
                "authgate_requests_total{route=\"gone\",status=\"502\"}",
                1.0,
            ),
            (
                "authgate_requests_total{route=\"auth\",status=\"201\"}",
                1.0,
            ),
            (
                "authgate_requests_total{route=\"auth\",status=\"200\"}",
                2.0,
            ),
            (
                "authgate_requests_total{route=\"auth\",status=\"401\"}",
                2.0,
            ),
            ("authgate_auth_failures_total{code=\"MISSING_TOKEN\"}", 1.0),
            (
                "authgate_auth_failures_total{code=\"INVALID_CREDENTIALS\"}",
                1.0,
            ),
            (
                "authgate_auth_failures_total{code=\"TOKEN_REUSE_DETECTED\"}",
                1.0,
            ),
            ("authgate_registrations_total{outcome=\"success\"}", 1.0),
            ("authgate_logins_total{outcome=\"success\"}", 1.0),
            (
                "authgate_logins_total{outcome=\"INVALID_CREDENTIALS\"}",
                1.0,
            ),
            ("authgate_refreshes_total{outcome=\"success\"}", 1.0),
            (
                "authgate_refreshes_total{outcome=\"TOKEN_REUSE_DETECTED\"}",
                1.0,
            ),
            ("authgate_refresh_reuse_detected_total", 1.0),
            ("authgate_upstream_errors_total{kind=\"connect\"}", 1.0),
            // Asked twice with success and once refused: only the 200s and
            // the 502 waited on an upstream; all three spent gateway time.
            (
                "authgate_upstream_duration_seconds_count{route=\"api\"}",
                2.0,
            ),
            (
                "authgate_upstream_duration_seconds_count{route=\"gone\"}",
                1.0,
            ),
            (
                "authgate_gateway_duration_seconds_count{route=\"api\"}",
                3.0,
            ),
        ],
    );
    assert_eq!(value(&after, "authgate_password_hash_queue_depth"), 0.0);
    assert!(after.contains_key("authgate_open_tunnels"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_logins_and_open_connections_are_counted() {
    let gw = TestGateway::start_with(GatewayOptions {
        auth: format!("{FAST_HASHING}[auth.throttle]\naccount_failures = 1\n"),
        extra: ADMIN.to_owned(),
        ..GatewayOptions::default()
    })
    .await;
    let addr = gw.admin_addr();
    let before = scrape(addr).await;
    assert_eq!(
        login(&gw, "nobody@example.com", "password-1").await.status,
        401
    );
    let locked = login(&gw, "nobody@example.com", "password-1").await;
    assert_eq!(locked.status, 429);
    let after = scrape(addr).await;
    assert_moved(
        &before,
        &after,
        &[
            ("authgate_throttled_total{endpoint=\"login\"}", 1.0),
            ("authgate_logins_total{outcome=\"TOO_MANY_REQUESTS\"}", 1.0),
        ],
    );

    // A held connection counts until it closes; earlier ones drain meanwhile.
    let held = gw.client().tls(Alpn::Http1).await;
    wait_for_gauge(addr, "authgate_open_connections", 1.0).await;
    drop(held);
    wait_for_gauge(addr, "authgate_open_connections", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_counts_until_it_closes() {
    let upstream = Upstream::start(Behavior::WebSocketEcho).await;
    let gw = TestGateway::start_with(GatewayOptions {
        routes: format!(
            "[[route]]\nname = \"ws\"\npath_prefix = \"/ws/\"\nupstream = \"{}\"\nwebsocket = true\n",
            upstream.url()
        ),
        extra: ADMIN.to_owned(),
        ..GatewayOptions::default()
    })
    .await;
    let addr = gw.admin_addr();
    assert_eq!(value(&scrape(addr).await, "authgate_open_tunnels"), 0.0);
    let tunnel = crate::tunnels::open_tunnel(&gw).await;
    wait_for_gauge(addr, "authgate_open_tunnels", 1.0).await;
    drop(tunnel);
    wait_for_gauge(addr, "authgate_open_tunnels", 0.0).await;
}

/// Polls (bounded) until a gauge reads `expected`.
async fn wait_for_gauge(addr: SocketAddr, name: &str, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = value(&scrape(addr).await, name);
        if now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {now}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_store_cannot_take_a_write() {
    let gw = TestGateway::start_with(GatewayOptions {
        extra: ADMIN.to_owned(),
        ..GatewayOptions::default()
    })
    .await;
    let addr = gw.admin_addr();
    let (status, body) = admin(addr, http::Method::GET, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"alive"}"#));
    let (status, body) = admin(addr, http::Method::GET, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));

    // The probe's file cannot be created where a directory stands: a write
    // that fails for any user, root included (a read-only directory would not
    // stop root).
    let probe = gw
        .config()
        .store
        .path
        .join(authgate::store::STORE_PROBE_FILE);
    std::fs::create_dir(&probe).unwrap();
    let (status, body) = admin(addr, http::Method::GET, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let reasons: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reasons["status"], "not ready");
    assert!(
        reasons["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("store:"),
        "{body}"
    );
    // Alive all the same: a restart would not help.
    assert_eq!(admin(addr, http::Method::GET, "/healthz").await.0, 200);

    std::fs::remove_dir(&probe).unwrap();
    assert_eq!(admin(addr, http::Method::GET, "/readyz").await.0, 200);
    assert_eq!(admin(addr, http::Method::GET, "/nope").await.0, 404);
    assert_eq!(admin(addr, http::Method::POST, "/metrics").await.0, 405);

    // The admin listener stops with the gateway.
    gw.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_a_checked_route_has_no_live_target() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let refused = Upstream::refused_addr().await;
    let check = "health_check = { path = \"/healthz\", interval = \"50ms\", timeout = \"1s\" }";
    let gw = TestGateway::start_with(GatewayOptions {
        routes: format!(
            "[[route]]\nname = \"up\"\npath_prefix = \"/up/\"\nupstream = \"{}\"\n{check}\n\
             [[route]]\nname = \"down\"\npath_prefix = \"/down/\"\nupstream = \"http://{refused}\"\n{check}\n\
             [[route]]\nname = \"unchecked\"\npath_prefix = \"/other/\"\nupstream = \"http://{refused}\"\n",
            upstream.url()
        ),
        extra: ADMIN.to_owned(),
        ..GatewayOptions::default()
    })
    .await;
    let addr = gw.admin_addr();
    // The first check of the dead target fails within its interval.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = admin(addr, http::Method::GET, "/readyz").await;
        if status == 503 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["reasons"],
        json!(["route down: no upstream target passes its health check"]),
        "only the checked route without a live target is named"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_with_an_expired_certificate() {
    let files = GatewayFiles::create(&GatewayOptions {
        extra: ADMIN.to_owned(),
        ..GatewayOptions::default()
    });
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.self_signed(&key).unwrap();
    std::fs::write(files.path().join("leaf.pem"), expired.pem()).unwrap();
    std::fs::write(files.path().join("leaf-key.pem"), key.serialize_pem()).unwrap();
    let gw = TestGateway::start_files(files).await;
    let (status, body) = admin(gw.admin_addr(), http::Method::GET, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("certificate: expired"), "{body}");
}

/// The lines of the audit file, each parsed (a line that is not JSON fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_and_hold_no_token() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let files = GatewayFiles::create(&GatewayOptions {
        routes: format!(
            "[[route]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"{}\"\n",
            upstream.url()
        ),
        extra: "[log]\nformat = \"json\"\n".to_owned(),
        ..GatewayOptions::default()
    });
    let mut binary = BinaryGateway::start(&files, "debug");
    let client = binary.client(&files);
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldA";
    let refused = client
        .get("/api/x")
        .bearer(forged)
        .header("cookie", "authgate_refresh=cookie-secret-value")
        .send()
        .await;
    assert_eq!(refused.status, 401);
    assert!(upstream.received().is_empty());
    let failed = client
        .post("/auth/login")
        .json(&json!({"email": "x@example.com", "password": "password-secret"}))
        .send()
        .await;
    assert_eq!(failed.status, 401);
    binary.signal("TERM");
    assert_eq!(binary.wait(Duration::from_secs(30)), Some(0));

    let log = binary.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "authgate::access")
        .collect();
    assert_eq!(access.len(), 2, "{log}");
    assert_eq!(access[0]["route"], "api");
    assert_eq!(access[0]["status"], 401);
    for secret in [
        forged,
        "c2lnbmF0dXJlLXNlY3JldA",
        "cookie-secret-value",
        "password-secret",
    ] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}
