//! WebSocket tunnels belong to the connection they were upgraded from, and
//! HTTP/2 streams to the connection that carries them: they hold its
//! `max_connections` slot, count in the shutdown drain, and end with the
//! gateway.

use std::time::{Duration, Instant};

use authgate::server::ConnectionSlots;
use http::Version;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use crate::support::client::Alpn;
use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

const SHORT: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_millis(500);

/// Opens a tunnel through `gw` and proves it carries bytes both ways.
pub async fn open_tunnel(gw: &TestGateway) -> TlsStream<tokio::net::TcpStream> {
    let mut tls = gw.client().tls(Alpn::Http1).await;
    let handshake = format!(
        "GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        gw.token("ws-user", "viewer")
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
    tls.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(SHORT, tls.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");
    tls
}

/// A gateway with `routes` and a short shutdown grace.
async fn gateway_with_grace(routes: String) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        server: format!("shutdown_grace = \"{}ms\"", GRACE.as_millis()),
        routes,
        ..GatewayOptions::default()
    })
    .await
}

/// Stops `gw` with `open` (a tunnel, a stream) still open: serve returns
/// only once the grace has passed, with every slot given back.
async fn stop_after_the_grace(gw: TestGateway, slots: &ConnectionSlots, open: &str) {
    let stopping = Instant::now();
    // stop() returns once serve has, and asserts nothing holds the gateway.
    tokio::time::timeout(GRACE + Duration::from_secs(10), gw.stop())
        .await
        .expect("serve did not return after the grace");
    assert!(
        stopping.elapsed() >= GRACE,
        "serve returned after {:?}, before the grace, with {open} open",
        stopping.elapsed()
    );
    assert_eq!(
        slots.in_use(),
        0,
        "a slot is still held after serve returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_holds_its_slot_until_the_gateway_stops_and_closes_it() {
    let upstream = Upstream::start(Behavior::WebSocketEcho).await;
    let gw = gateway_with_grace(format!(
        "[[route]]\nname = \"ws\"\npath_prefix = \"/ws/\"\nupstream = \"{}\"\nwebsocket = true\n",
        upstream.url()
    ))
    .await;
    let slots = gw.slots();
    let mut tunnel = open_tunnel(&gw).await;
    // The HTTP/1.1 connection has handed its socket to the tunnel; the
    // tunnel still counts against max_connections.
    assert_eq!(
        slots.in_use(),
        1,
        "the tunnel gave up its connection's slot"
    );

    stop_after_the_grace(gw, &slots, "a tunnel").await;
    // The tunnel was closed on both sides.
    upstream.wait_for_closed(1).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(SHORT, tunnel.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the client's side of the tunnel is still open"
    );
    assert!(rest.is_empty(), "{rest:?}");
}

/// A stream runs inside its HTTP/2 connection: one still open when the
/// gateway stops holds the drain until the grace, then ends with its
/// connection, the upstream's side included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_http2_stream_holds_the_drain_until_the_grace_then_ends_on_both_sides() {
    let events = Upstream::start(Behavior::Events).await;
    let gw = gateway_with_grace(format!(
        "[[route]]\nname = \"events\"\npath_prefix = \"/events/\"\nupstream = \"{}\"\n",
        events.url()
    ))
    .await;
    let slots = gw.slots();
    let (response, version) = gw
        .client()
        .get("/events/feed")
        .bearer(&gw.token("events-user", "viewer"))
        .http2()
        .send_streaming()
        .await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(SHORT, body.frame())
        .await
        .expect("the first event did not arrive")
        .expect("the stream ended before its first event")
        .expect("the stream failed before its first event");
    assert_eq!(
        first.into_data().ok().as_deref(),
        Some(&b"data: hello\n\n"[..])
    );
    assert_eq!(slots.in_use(), 1);

    stop_after_the_grace(gw, &slots, "a stream").await;
    // The gateway closed the upstream's side of the stream...
    events.wait_for_closed(1).await;
    // ...and the client's: its body ends (or fails) instead of waiting.
    let rest = tokio::time::timeout(SHORT, async {
        while let Some(Ok(frame)) = body.frame().await {
            assert!(
                !frame.is_data(),
                "the stream carried more events: {frame:?}"
            );
        }
    })
    .await;
    assert!(rest.is_ok(), "the client's stream is still open");
}
