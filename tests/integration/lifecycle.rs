//! The connection and configuration lifecycle: early answers read by
//! HTTP/1.1 clients still sending their body (lingering close), request ids,
//! `check-config`, and SIGHUP reloads.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::Alpn;
use crate::support::gateway::{BinaryGateway, GatewayFiles};
use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

const TWO_MB: usize = 2 * 1024 * 1024;

fn route(name: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n{extra}\n"
    )
}

/// Reads until the peer closes (or errors) or `limit` passes.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(reader: &mut R, limit: Duration) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(limit, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_401_to_a_2mb_upload_is_read_by_an_http1_client_sending_it_all_first() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start(&route("api", "/api/", &upstream.url(), "")).await;

    // Like Python requests: the whole body goes out before the answer is read.
    let mut tls = gw.client().tls(Alpn::Http1).await;
    let head = format!(
        "POST /api/upload HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream\r\n\
         content-length: {TWO_MB}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let body = vec![b'x'; TWO_MB];
    tls.write_all(&body)
        .await
        .expect("the gateway reset the connection while the body was being sent");
    tls.flush().await.unwrap();
    let answer = read_all(&mut tls, Duration::from_secs(10)).await;

    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "expected the 401, got {:?}",
        answer.get(..answer.len().min(200))
    );
    assert!(answer.contains("www-authenticate"));
    assert!(upstream.received().is_empty());

    // HTTP/2 answers the same upload as before: the 401 while the body is
    // still being sent, then RST_STREAM NO_ERROR for the rest (RFC 9113 §8.1).
    let tls = gw.client().tls(Alpn::Http2).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post("https://localhost/api/upload")
        .header("content-length", TWO_MB.to_string())
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // The gateway may answer and reset the stream before this data leaves
    // (it does not wait for the body): then the stream is already gone here.
    let sent = body.send_data(bytes::Bytes::from(vec![b'x'; 16 * 1024]), false);
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 401);
    let reset = tokio::time::timeout(
        Duration::from_secs(10),
        std::future::poll_fn(|cx| body.poll_reset(cx)),
    )
    .await
    .unwrap();
    match reset {
        Ok(reason) => assert_eq!(reason, h2::Reason::NO_ERROR),
        // Only when the stream was closed before the data could be sent.
        Err(err) => assert!(sent.is_err(), "{err}"),
    }
    assert!(upstream.received().is_empty());

    // One valid upload proves the route works.
    let token = gw.token("u1", "user");
    let ok = gw
        .client()
        .post("/api/upload")
        .bearer(&token)
        .zeros(TWO_MB as u64)
        .send()
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(upstream.only().body_len, TWO_MB as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_from_an_untrusted_client_is_replaced_and_returned() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = TestGateway::start(&route("api", "/api/", &upstream.url(), "")).await;
    let token = gw.token("u1", "user");

    let response = gw
        .client()
        .get("/api/x")
        .bearer(&token)
        .header("x-request-id", "chosen-by-client")
        .send()
        .await;

    assert_eq!(response.status, 200);
    let returned = response.header("x-request-id").unwrap().to_owned();
    assert_ne!(returned, "chosen-by-client");
    let seen = upstream.only();
    assert_eq!(seen.headers.get_all("x-request-id").iter().count(), 1);
    assert_eq!(seen.headers["x-request-id"], returned.as_str());

    // Refusals carry an id too, and each request its own.
    let refused = gw.client().get("/api/x").send().await;
    assert_eq!(refused.status, 401);
    let refused_id = refused.header("x-request-id").unwrap();
    assert!(!refused_id.is_empty());
    assert_ne!(refused_id, returned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_from_a_trusted_proxy_is_kept_upstream_back_and_in_the_logs() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let files = GatewayFiles::create(&GatewayOptions {
        server: "trusted_proxies = [\"127.0.0.0/8\"]".to_owned(),
        routes: route("api", "/api/", &upstream.url(), "auth = \"public\""),
        ..GatewayOptions::default()
    });
    let gateway = BinaryGateway::start(&files, "info");
    let client = gateway.client(&files);

    let kept = client
        .get("/api/x")
        .header("x-request-id", "edge-4bf92f3577b34da6")
        .send()
        .await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.header("x-request-id"), Some("edge-4bf92f3577b34da6"));
    assert_eq!(
        upstream.only().headers["x-request-id"],
        "edge-4bf92f3577b34da6"
    );

    // A malformed one is replaced even from a trusted proxy.
    upstream.clear();
    let replaced = client
        .get("/api/x")
        .header("x-request-id", "has spaces \" and quotes")
        .send()
        .await;
    let new_id = replaced.header("x-request-id").unwrap().to_owned();
    assert_ne!(new_id, "has spaces \" and quotes");
    assert_eq!(upstream.only().headers["x-request-id"], new_id.as_str());

    // The access-log line of each request names its id (bounded wait: the
    // log is written by a writer thread).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = gateway.log();
        let logged = |id: &str| {
            log.lines()
                .any(|l| l.contains("authgate::access") && l.contains(id))
        };
        if logged("edge-4bf92f3577b34da6") && logged(&new_id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "request ids missing from the access log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `authgate check-config --config PATH`: its exit code, stdout and stderr.
fn check_config(path: &std::path::Path) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .env("AUTHGATE_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_exits_0_for_a_valid_file_and_1_with_file_line_key_otherwise() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let files = GatewayFiles::create(&GatewayOptions::routes(route(
        "api",
        "/api/",
        &upstream.url(),
        "",
    )));
    let (code, stdout, _) = check_config(&files.config_path);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    // Nothing was started: no store was created.
    assert!(!files.path().join("store.sled").exists());

    // An unknown key in a route: named with file, line and key.
    let bad = files.path().join("bad.toml");
    let text = std::fs::read_to_string(&files.config_path).unwrap();
    std::fs::write(&bad, format!("{text}balance_typo = \"round_robin\"\n")).unwrap();
    let (code, _, stderr) = check_config(&bad);
    assert_eq!(code, Some(1));
    let lines = text.lines().count() + 1;
    assert!(
        stderr.contains(&format!("bad.toml:{lines}:")) && stderr.contains("balance_typo"),
        "{stderr}"
    );

    // A certificate file that does not exist is caught too, not only syntax.
    std::fs::remove_file(files.path().join("leaf.pem")).unwrap();
    let (code, _, stderr) = check_config(&files.config_path);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("tls_cert"), "{stderr}");
}

/// Bounded wait for `done` (reloads and log lines take effect asynchronously).
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_route_while_a_long_download_continues() {
    use http_body_util::BodyExt;
    const SIZE: u64 = 32 * 1024 * 1024;
    let bulk = Upstream::start(Behavior::Download(SIZE)).await;
    let fresh = Upstream::start(Behavior::Ok).await;
    let old_routes = route("bulk", "/bulk/", &bulk.url(), "auth = \"public\"");
    let gw = TestGateway::start(&old_routes).await;
    assert_eq!(gw.client().get("/new/x").send().await.status, 404);

    let (response, _) = gw.client().get("/bulk/file").send_streaming().await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0u64;
    while received < 1024 * 1024 {
        let frame = body.frame().await.unwrap().unwrap();
        received += frame.into_data().map_or(0, |d| d.len() as u64);
    }

    gw.reload_with(&GatewayOptions::routes(format!(
        "{old_routes}{}",
        route("new", "/new/", &fresh.url(), "auth = \"public\"")
    )))
    .unwrap();
    let added = gw.client().get("/new/x").send().await;
    assert_eq!(added.status, 200);
    assert_eq!(fresh.count(), 1);

    // The download started before the reload runs to its last byte.
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().into_data().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_rejected_and_the_old_routes_keep_serving() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let routes = route("api", "/api/", &upstream.url(), "auth = \"public\"");
    let gw = TestGateway::start(&routes).await;

    let bad = format!(
        "{routes}{}",
        route("new", "/new/", &upstream.url(), "balance = \"fastest\"")
    );
    let err = gw.reload_with(&GatewayOptions::routes(bad)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("authgate.toml:") && text.contains("balance"),
        "{text}"
    );
    assert_eq!(gw.client().get("/new/x").send().await.status, 404);
    assert!(upstream.received().is_empty());
    assert_eq!(gw.client().get("/api/x").send().await.status, 200);
    assert_eq!(upstream.count(), 1);

    // A file that parses but names an upstream CA that does not exist is
    // refused as a whole too: validation covers what the file points to.
    let missing_ca = format!(
        "{routes}{}",
        route(
            "tls",
            "/tls/",
            "https://localhost:1",
            "upstream_ca = \"/nonexistent/ca.pem\""
        )
    );
    assert!(gw.reload_with(&GatewayOptions::routes(missing_ca)).is_err());
    assert_eq!(gw.client().get("/tls/x").send().await.status, 404);
    assert_eq!(gw.client().get("/api/x").send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_tls_certificate_for_new_handshakes() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let options =
        GatewayOptions::routes(route("api", "/api/", &upstream.url(), "auth = \"public\""));
    let gw = TestGateway::start_with(options.clone()).await;
    let old_client = gw.client();
    // An open connection made with the old certificate.
    let (kept, _) = old_client.get("/api/x").send_streaming().await;
    assert_eq!(kept.status(), 200);

    // A renewed certificate from another CA, written over the same files.
    let renewed = crate::support::pki::TestPki::create(gw.files.path());
    let new_client = crate::support::TestClient::new(gw.addr, renewed.ca_pem.clone());
    assert!(
        new_client.try_tls(Alpn::Http1).await.is_err(),
        "the new certificate was served before the reload"
    );

    gw.reload_with(&options).unwrap();
    assert_eq!(new_client.get("/api/x").send().await.status, 200);
    assert!(old_client.try_tls(Alpn::Http1).await.is_err());
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary_and_a_bad_file_keeps_the_running_config() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let routes = route("api", "/api/", &upstream.url(), "auth = \"public\"");
    let files = GatewayFiles::create(&GatewayOptions::routes(routes.clone()));
    let gateway = BinaryGateway::start(&files, "info");
    let client = gateway.client(&files);
    assert_eq!(client.get("/new/x").send().await.status, 404);

    // A bad file: rejected with its file:line:key error, old routes serve.
    let text = std::fs::read_to_string(&files.config_path).unwrap();
    std::fs::write(&files.config_path, format!("{text}typo_key = 1\n")).unwrap();
    gateway.signal("HUP");
    eventually("the rejection is logged", async || {
        gateway.log().contains("configuration reload rejected")
    })
    .await;
    assert!(gateway.log().contains("typo_key"), "{}", gateway.log());
    assert_eq!(client.get("/api/x").send().await.status, 200);

    // A good file with a new route and a key that needs a restart.
    let good = crate::support::gateway::config_text(
        files.path(),
        &GatewayOptions {
            server: "max_connections = 77".to_owned(),
            routes: format!(
                "{routes}{}",
                route("new", "/new/", &upstream.url(), "auth = \"public\"")
            ),
            ..GatewayOptions::default()
        },
    );
    std::fs::write(&files.config_path, good).unwrap();
    gateway.signal("HUP");
    eventually("the new route serves", async || {
        client.get("/new/x").send().await.status == 200
    })
    .await;
    // The log lines follow the swap (written by the log thread, read by
    // the harness's): wait for them, bounded.
    eventually(
        "the reload and the restart-needed key are logged",
        async || {
            let log = gateway.log();
            log.contains("configuration reloaded")
                && log.contains("max_connections")
                && log.contains("after a restart")
        },
    )
    .await;
}
