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

    // HTTP/2 answers the same upload as before: the 401, then RST_STREAM.
    let h2 = gw
        .client()
        .post("/api/upload")
        .zeros(TWO_MB as u64)
        .http2()
        .send()
        .await;
    assert_eq!(h2.status, 401);
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
