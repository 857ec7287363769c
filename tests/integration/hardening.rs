//! Hostile requests through the real gateway: ambiguous paths, request-line
//! tricks, smuggling, upgrades, limits. Each proves what reached the upstream.

use std::time::Duration;

use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

const SHORT: Duration = Duration::from_secs(3);

/// An admin-only route and a public catch-all on the same upstream: the
/// classic setup where a path trick would turn into a bypass.
async fn split_routes(upstream: &Upstream) -> TestGateway {
    TestGateway::start_with(GatewayOptions::routes(format!(
        "[[route]]\nname = \"admin\"\npath_prefix = \"/admin/\"\nupstream = \"{u}\"\nroles = [\"admin\"]\n\
         [[route]]\nname = \"public\"\npath_prefix = \"/\"\nupstream = \"{u}\"\nauth = \"public\"\n",
        u = upstream.url()
    )))
    .await
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_refused_and_never_reach_admin() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = split_routes(&upstream).await;
    let client = gw.client();
    let refused = [
        "/admin%2fpanel",
        "/admin%2Fpanel",
        "/x/..%2fadmin/panel",
        "/admin%5cpanel",
        "/x/%2e%2e/admin/panel",
        "/x/.%2e/admin/panel",
        "/x/%252e%252e/admin/panel",
        "/x/%25%32%65%25%32%65/admin/panel",
        "/admin/panel%00",
        "/x%00/../admin/panel",
        "/admin;x=1/panel",
        "/x;/../admin/panel",
        "/x/%c0%af../admin/panel",
        "/x/%c0%ae%c0%ae/admin/panel",
        "/../admin/panel",
        "/x\\..\\admin/panel",
    ];
    for target in refused {
        let exchange = client.raw(&get(target), SHORT).await;
        let statuses = exchange.statuses();
        assert_eq!(statuses.first(), Some(&400), "{target}: {}", exchange.text);
    }
    assert_eq!(upstream.count(), 0, "{:#?}", upstream.received());
    // A raw '#' starts a fragment, which is not part of the target: the
    // gateway and the upstream both see only "/public".
    let fragment = client.raw(&get("/public#/../admin/panel"), SHORT).await;
    assert_eq!(fragment.statuses().first(), Some(&200), "{}", fragment.text);
    assert_eq!(upstream.only().target, "/public");
    upstream.clear();

    // Resolved dot segments route to what they resolve to, and the upstream
    // receives exactly the path that was authorized.
    let resolved = client.raw(&get("/public/../admin/panel"), SHORT).await;
    assert_eq!(resolved.statuses().first(), Some(&401), "{}", resolved.text);
    let merged = client.raw(&get("//admin//panel"), SHORT).await;
    assert_eq!(merged.statuses().first(), Some(&401), "{}", merged.text);
    assert_eq!(upstream.count(), 0);
    let ok = client.raw(&get("/docs/./a/../b%7Ec?q=%2F"), SHORT).await;
    assert_eq!(ok.statuses().first(), Some(&200), "{}", ok.text);
    assert_eq!(upstream.only().target, "/docs/b~c?q=%2F");
    // Prefix boundary: /adminx is not under /admin/.
    let adminx = client.raw(&get("/adminx"), SHORT).await;
    assert_eq!(adminx.statuses().first(), Some(&200));
    assert_eq!(upstream.received()[1].target, "/adminx");
    // Encoded '#' is a character of the path, forwarded as such.
    let hash = client.raw(&get("/a%23b"), SHORT).await;
    assert_eq!(hash.statuses().first(), Some(&200));
    assert_eq!(upstream.received()[2].target, "/a%23b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_line_tricks_cannot_pick_a_route() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = split_routes(&upstream).await;
    let client = gw.client();
    let cases: [(&str, &[u16]); 4] = [
        (
            "GET http://evil.example/admin/panel HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            &[400],
        ),
        (
            "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n",
            &[405],
        ),
        (
            "GET /public HTTP/1.1\r\nHost: localhost\r\nHost: admin.example\r\nConnection: close\r\n\r\n",
            &[400],
        ),
        (
            "GET /public HTTP/1.1\r\nHost: localhost\r\nX-Original-URL: /admin/panel\r\nX-Rewrite-URL: /admin/panel\r\nX-Forwarded-Prefix: /admin\r\nConnection: close\r\n\r\n",
            &[200],
        ),
    ];
    for (request, allowed) in cases {
        let exchange = client.raw(request.as_bytes(), SHORT).await;
        let status = exchange.statuses().first().copied().unwrap_or(0);
        assert!(allowed.contains(&status), "{request:?} → {}", exchange.text);
    }
    let seen = upstream.only();
    assert_eq!(seen.target, "/public");
    for header in ["x-original-url", "x-rewrite-url", "x-forwarded-prefix"] {
        assert!(seen.headers.get(header).is_none(), "{header} was forwarded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_refused_and_close_the_connection() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = split_routes(&upstream).await;
    let client = gw.client();
    let smuggled = "GET /admin/panel HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let cases = [
        format!("POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4, 4\r\n\r\nabcd{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: localhost\r\nContent-Length: +44\r\n\r\nabcd{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nA\r\n0\r\n\r\n{smuggled}"),
    ];
    let mut failures = Vec::new();
    for request in &cases {
        let exchange = client.raw(request.as_bytes(), SHORT).await;
        let statuses = exchange.statuses();
        if !(statuses.is_empty() || statuses == [400]) || !exchange.closed {
            failures.push(format!(
                "{request:?} → {statuses:?} closed={}",
                exchange.closed
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Both framing headers: hyper reads the body by Transfer-Encoding alone,
    // as RFC 9112 §6.1 allows, and closes the connection after answering;
    // the bytes after the chunked body are never parsed as a request.
    let both = format!("POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}");
    let exchange = client.raw(both.as_bytes(), SHORT).await;
    assert_eq!(exchange.statuses(), [200], "{}", exchange.text);
    assert!(exchange.closed);
    // Bare-LF line ends are accepted by the parser (RFC 9112 §2.2 allows it),
    // but every request it yields is routed and authorized on its own: the
    // one hidden after the body meets the admin route's 401.
    let bare_lf =
        format!("POST /public HTTP/1.1\nHost: localhost\nContent-Length: 4\n\nabcd{smuggled}");
    let exchange = client.raw(bare_lf.as_bytes(), SHORT).await;
    assert_eq!(exchange.statuses(), [200, 401], "{}", exchange.text);

    let admin_hits = upstream
        .received()
        .into_iter()
        .filter(|r| r.target.starts_with("/admin"))
        .count();
    assert_eq!(admin_hits, 0, "a smuggled request reached the admin path");
    for seen in upstream.received() {
        assert!(
            !(seen.headers.contains_key("transfer-encoding")
                && seen.headers.contains_key("content-length")),
            "upstream received both framing headers"
        );
    }
    // Still serving.
    let after = client.raw(&get("/public"), SHORT).await;
    assert_eq!(after.statuses(), [200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_unknown_upgrades_are_refused() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = split_routes(&upstream).await;
    let client = gw.client();
    for upgrade in ["h2c", "websocket", "TLS/1.2"] {
        let request = format!(
            "GET /public HTTP/1.1\r\nHost: localhost\r\nUpgrade: {upgrade}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        );
        let exchange = client.raw(request.as_bytes(), SHORT).await;
        assert_eq!(
            exchange.statuses().first(),
            Some(&400),
            "{upgrade}: {}",
            exchange.text
        );
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_in_chunked_trailers_are_removed() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = split_routes(&upstream).await;
    let request = "POST /public HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nTrailer: X-User-Id, X_User_Role, X-Other\r\nTE: trailers\r\nConnection: close\r\n\r\n\
                   4\r\nabcd\r\n0\r\nX-User-Id: admin\r\nX_User_Role: admin\r\nX-Other: kept\r\n\r\n";
    let exchange = gw.client().raw(request.as_bytes(), SHORT).await;
    assert_eq!(exchange.statuses(), [200], "{}", exchange.text);
    let seen = upstream.only();
    assert_eq!(seen.body_len, 4);
    let trailers = seen
        .trailers
        .as_ref()
        .expect("declared trailers are forwarded");
    assert_eq!(trailers["x-other"], "kept");
    for headers in std::iter::once(&seen.headers).chain(seen.trailers.as_ref()) {
        for (name, _) in headers {
            let normalized = name.as_str().replace(['_', '.'], "-");
            assert!(
                !normalized.starts_with("x-user-"),
                "{name} reached the upstream"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = split_routes(&upstream).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(SHORT, tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection not closed");
    assert!(!String::from_utf8_lossy(&buf).contains("200"));
    assert_eq!(upstream.count(), 0);
}

fn websocket_handshake(path: &str, token: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\nX-User-Id: admin\r\n\r\n"
    )
    .into_bytes()
}

async fn websocket_gateway(upstream: &Upstream) -> TestGateway {
    TestGateway::start(&format!(
        "[[route]]\nname = \"ws\"\npath_prefix = \"/ws/\"\nupstream = \"{}\"\nwebsocket = true\n",
        upstream.url()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_only_after_the_upstream_switches() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start(Behavior::WebSocketEcho).await;
    let gw = websocket_gateway(&upstream).await;

    // Unauthenticated handshakes never reach the upstream.
    let refused = gw
        .client()
        .raw(&websocket_handshake("/ws/chat", "forged.token.here"), SHORT)
        .await;
    assert_eq!(refused.statuses().first(), Some(&401));
    assert_eq!(upstream.count(), 0);

    let mut tls = gw.client().tls(crate::support::client::Alpn::Http1).await;
    tls.write_all(&websocket_handshake(
        "/ws/chat",
        &gw.token("ws-user", "viewer"),
    ))
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    tls.write_all(b"hello through the tunnel").await.unwrap();
    let mut echoed = [0u8; 24];
    tokio::time::timeout(SHORT, tls.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"hello through the tunnel");
    let seen = upstream.only();
    assert_eq!(seen.headers["x-user-id"], "ws-user");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_websocket_handshake_opens_no_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start(Behavior::Status(426)).await;
    let gw = websocket_gateway(&upstream).await;
    let mut tls = gw.client().tls(crate::support::client::Alpn::Http1).await;
    tls.write_all(&websocket_handshake("/ws/chat", &gw.token("u", "viewer")))
        .await
        .unwrap();
    // What follows the refused handshake must be read as a new HTTP request
    // by the gateway, never passed through as tunnel bytes.
    tls.write_all(b"GET /ws/next HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = Vec::new();
    let _ = tokio::time::timeout(SHORT, tls.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("HTTP/1.1 426"), "{text}");
    assert!(
        text.contains("HTTP/1.1 401"),
        "second request was not parsed as HTTP: {text}"
    );
    assert_eq!(upstream.only().target, "/ws/chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_trusted_only_from_trusted_proxies() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let route = format!(
        "[[route]]\nname = \"p\"\npath_prefix = \"/\"\nupstream = \"{}\"\nauth = \"public\"\n",
        upstream.url()
    );
    let untrusted = TestGateway::start(&route).await;
    let trusted = TestGateway::start_with(GatewayOptions {
        server: "trusted_proxies = [\"127.0.0.0/8\"]".to_owned(),
        routes: route.clone(),
        ..GatewayOptions::default()
    })
    .await;
    for gw in [&untrusted, &trusted] {
        let response = gw
            .client()
            .get("/x")
            .header("x-forwarded-for", "198.51.100.1")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "spoofed.example")
            .send()
            .await;
        assert_eq!(response.status, 200);
    }
    let seen = upstream.received();
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert_eq!(seen[0].headers["x-forwarded-host"], "localhost");
    assert_eq!(
        seen[1].headers["x-forwarded-for"],
        "198.51.100.1, 127.0.0.1"
    );
    assert_eq!(seen[1].headers["x-forwarded-proto"], "http");
    assert_eq!(seen[1].headers["x-forwarded-host"], "spoofed.example");
}
