//! Resource limits: oversized heads and URIs, slow clients, idle and
//! half-open connections, the connection cap. Nothing a client sends can
//! take the gateway down or reach the upstream past a limit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::Alpn;
use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

const SHORT: Duration = Duration::from_secs(3);

async fn gateway(upstream: &Upstream, server: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        server: server.to_owned(),
        routes: format!(
            "[[route]]\nname = \"p\"\npath_prefix = \"/\"\nupstream = \"{}\"\nauth = \"public\"\nmax_body = 1024\n",
            upstream.url()
        ),
        ..GatewayOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_uris_and_bodies_are_refused() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(
        &upstream,
        "max_header_bytes = 16384\nmax_headers = 50\nmax_uri_bytes = 2048",
    )
    .await;
    let client = gw.client();

    let big_header = format!(
        "GET /x HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let exchange = client.raw(big_header.as_bytes(), SHORT).await;
    assert_eq!(exchange.statuses(), [431], "{}", exchange.text);

    let many: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers =
        format!("GET /x HTTP/1.1\r\nHost: localhost\r\n{many}Connection: close\r\n\r\n");
    let exchange = client.raw(many_headers.as_bytes(), SHORT).await;
    assert_eq!(exchange.statuses(), [431], "{}", exchange.text);

    let long_uri = format!("/x?{}", "q".repeat(3000));
    let response = client.get(&long_uri).send().await;
    assert_eq!(response.status, 414);
    assert_eq!(response.code(), "URI_TOO_LONG");

    let declared = client.post("/upload").body(vec![0u8; 2048]).send().await;
    assert_eq!(declared.status, 413);
    assert_eq!(upstream.count(), 0);

    let chunked = b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n";
    let mut request = chunked.to_vec();
    request.extend_from_slice(&[b'z'; 2048]);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let exchange = client.raw(&request, SHORT).await;
    assert_eq!(exchange.statuses().first(), Some(&413), "{}", exchange.text);

    assert_eq!(client.get("/fine").send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_within_the_timeouts() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(
        &upstream,
        "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"",
    )
    .await;
    let client = gw.client();

    // Slowloris: a head that never ends.
    let started = Instant::now();
    let mut tls = client.tls(Alpn::Http1).await;
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "a never-ending head kept the connection open"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A connection that never sends a request is closed too...
    let mut idle = client.tls(Alpn::Http1).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "an idle connection was kept open");
    // ...and so is a keep-alive connection gone quiet after a request.
    let mut kept = client.tls(Alpn::Http1).await;
    kept.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection was kept open"
    );
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));

    // A body that stops arriving: refused, never completed upstream.
    let mut trickle = client.tls(Alpn::Http1).await;
    trickle
        .write_all(b"POST /slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nx")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(5), trickle.read_to_end(&mut answer)).await;
    assert!(done.is_ok(), "a stalled body kept the connection open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(upstream.received().iter().all(|r| r.body_len < 100));

    // Same on an account endpoint, which reads its body itself.
    let mut login = client.tls(Alpn::Http1).await;
    login
        .write_all(b"POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(5), login.read_to_end(&mut answer)).await;
    assert!(done.is_ok());
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    assert_eq!(client.get("/still-serving").send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_connections_do_not_delay_real_requests() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream, "").await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        // TCP only: these never start a TLS handshake.
        idle.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    let started = Instant::now();
    let response = gw.client().get("/x").send().await;
    assert_eq!(response.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a request behind 300 idle connections took {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused_and_slots_come_back() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream, "max_connections = 4").await;
    let client = gw.client();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(client.tls(Alpn::Http1).await);
    }
    // The fifth is closed before its handshake completes.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(gw.files.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let refused = tokio::time::timeout(
        SHORT,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("refusal is immediate");
    assert!(refused.is_err(), "a connection over the cap was served");

    drop(held);
    // Slots return as connections close; poll briefly until one is free.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Until a slot is back, a new connection is closed at accept (the
        // handshake fails): that is a retry, not a failure.
        let attempt = tokio::time::timeout(SHORT, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = client.try_tls(Alpn::Http1).await.ok()?;
            tls.write_all(b"GET /x HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).await.ok()?;
            Some(answer)
        })
        .await;
        if let Ok(Some(answer)) = attempt {
            if answer.starts_with(b"HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "slots never came back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_is_cut_off_and_others_are_served() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream, "h2_max_concurrent_streams = 50").await;
    let tls = gw.client().tls(Alpn::Http2).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    // Open streams and reset each at once (CVE-2023-44487), far past any limit.
    let mut sent = 0;
    for _ in 0..5_000 {
        let request = http::Request::get("https://localhost/x").body(()).unwrap();
        let Ok((_, mut stream)) = client.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        match tokio::time::timeout(SHORT, client.ready()).await {
            Ok(Ok(ready)) => client = ready,
            _ => break,
        }
    }
    eprintln!("rapid reset: connection cut after {sent} reset streams");
    // The server answers the flood by closing the connection (GOAWAY).
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(
        ended.is_ok(),
        "the connection survived {sent} reset streams"
    );
    // The flood never reached the upstream as completed work it could not
    // shed, and the gateway still serves everyone else.
    let response = gw.client().get("/after").http2().send().await;
    assert_eq!(response.status, 200);
}
