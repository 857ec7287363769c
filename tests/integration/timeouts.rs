//! HTTP/2 connection deadlines: a client that negotiates h2 and then sends
//! nothing, or goes quiet after a request, is closed (GOAWAY) within the
//! header or idle timeout, so silent sockets cannot hold every slot.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::client::Alpn;
use crate::support::{Behavior, GatewayOptions, TestGateway, Upstream};

/// Every wait in this module is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

async fn gateway(upstream: &Upstream, server: &str, route_extra: &str) -> TestGateway {
    TestGateway::start_with(GatewayOptions {
        server: server.to_owned(),
        routes: format!(
            "[[route]]\nname = \"p\"\npath_prefix = \"/\"\nupstream = \"{}\"\nauth = \"public\"\n{route_extra}\n",
            upstream.url()
        ),
        ..GatewayOptions::default()
    })
    .await
}

/// One HTTP/2 frame (RFC 9113 §4.1).
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
    /// When it was read.
    at: Instant,
}

fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `GET https://localhost/idle`, HPACK-encoded from the static table
/// (RFC 7541 Appendix A) without Huffman coding.
fn get_request_headers() -> Vec<u8> {
    let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
    block.extend_from_slice(&[0x04, 5]); // :path, literal without indexing
    block.extend_from_slice(b"/idle");
    block.extend_from_slice(&[0x01, 9]); // :authority, literal without indexing
    block.extend_from_slice(b"localhost");
    encode(HEADERS, END_STREAM | END_HEADERS, 1, &block)
}

async fn read_frame(tls: &mut TlsStream<TcpStream>) -> Option<Frame> {
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
        at: Instant::now(),
    })
}

/// What the server sent until it closed the connection.
struct Received {
    frames: Vec<Frame>,
    /// When the connection was closed.
    closed_at: Instant,
}

impl Received {
    /// The final GOAWAY: a graceful close first announces the highest
    /// stream id, then the last one processed (RFC 9113 §6.8).
    fn goaway(&self) -> Option<&Frame> {
        self.frames.iter().rev().find(|f| f.kind == GOAWAY)
    }
}

/// Reads frames until the server closes the connection (failing the test if
/// it does not within [`BOUND`]). A polite client acknowledges SETTINGS and
/// PINGs as RFC 9113 §6.5.3 and §6.7 require; a silent one never writes.
async fn read_until_closed(tls: &mut TlsStream<TcpStream>, polite: bool) -> Received {
    let mut frames = Vec::new();
    let read_all = async {
        while let Some(frame) = read_frame(tls).await {
            let answer = match frame.kind {
                SETTINGS if frame.flags & ACK == 0 => Some(encode(SETTINGS, ACK, 0, &[])),
                PING if frame.flags & ACK == 0 => Some(encode(PING, ACK, 0, &frame.payload)),
                _ => None,
            };
            if let (true, Some(answer)) = (polite, answer) {
                // The server may already have closed; that shows as the next read.
                let _ = tls.write_all(&answer).await;
                let _ = tls.flush().await;
            }
            frames.push(frame);
        }
    };
    tokio::time::timeout(BOUND, read_all)
        .await
        .unwrap_or_else(|_| panic!("the server kept a quiet HTTP/2 connection open: {frames:?}"));
    Received {
        frames,
        closed_at: Instant::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_that_sends_nothing_is_closed_after_the_header_timeout() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream, "header_read_timeout = \"1s\"", "").await;
    let mut tls = gw.client().tls(Alpn::Http2).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let opened = Instant::now();
    // No preface, no request: only the server's SETTINGS arrive, then the close.
    let received = read_until_closed(&mut tls, false).await;
    assert!(
        received.closed_at - opened >= Duration::from_millis(900),
        "closed before the header timeout"
    );
    assert!(received.frames.iter().all(|f| f.kind == SETTINGS));
    assert_eq!(gw.client().get("/x").http2().send().await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_with_a_preface_but_no_request_gets_goaway() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(&upstream, "header_read_timeout = \"1s\"", "").await;
    let mut tls = gw.client().tls(Alpn::Http2).await;
    tls.write_all(PREFACE).await.unwrap();
    tls.write_all(&encode(SETTINGS, 0, 0, &[])).await.unwrap();
    tls.flush().await.unwrap();
    let opened = Instant::now();
    let received = read_until_closed(&mut tls, true).await;
    let goaway = received
        .goaway()
        .unwrap_or_else(|| panic!("closed without GOAWAY: {:?}", received.frames));
    // Last stream id 0 (no request was processed), error code NO_ERROR.
    assert_eq!(goaway.payload[..8], [0, 0, 0, 0, 0, 0, 0, 0], "{goaway:?}");
    assert!(received.closed_at - opened >= Duration::from_millis(900));
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connection_idle_after_a_request_is_closed_after_the_idle_timeout() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(
        &upstream,
        "header_read_timeout = \"1s\"\nidle_timeout = \"3s\"",
        "",
    )
    .await;
    let mut tls = gw.client().tls(Alpn::Http2).await;
    tls.write_all(PREFACE).await.unwrap();
    tls.write_all(&encode(SETTINGS, 0, 0, &[])).await.unwrap();
    tls.write_all(&get_request_headers()).await.unwrap();
    tls.flush().await.unwrap();
    let received = read_until_closed(&mut tls, true).await;
    upstream.only();
    let answered = received
        .frames
        .iter()
        .position(|f| f.stream == 1 && f.flags & END_STREAM != 0)
        .unwrap_or_else(|| panic!("no complete response: {:?}", received.frames));
    assert!(received.frames[..=answered]
        .iter()
        .any(|f| f.kind == HEADERS && f.stream == 1));
    assert!(received.frames[..=answered]
        .iter()
        .filter(|f| f.stream == 1)
        .all(|f| f.kind == HEADERS || f.kind == DATA));
    let goaway = received
        .goaway()
        .unwrap_or_else(|| panic!("closed without GOAWAY: {:?}", received.frames));
    // The request was processed: last stream id 1, NO_ERROR.
    assert_eq!(goaway.payload[..8], [0, 0, 0, 1, 0, 0, 0, 0], "{goaway:?}");
    // The idle timeout (3 s), not the header timeout (1 s), ran from the
    // answer (the margin covers the delivery of the answer itself).
    let quiet = goaway.at - received.frames[answered].at;
    assert!(quiet >= Duration::from_secs(2), "GOAWAY after {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timer_does_not_run_while_an_h2_stream_is_open() {
    // The upstream never answers; the route gives up after 3 s, longer than
    // the 1 s idle timeout: the stream holds the connection until its 504.
    let upstream = Upstream::start(Behavior::Hang).await;
    let gw = gateway(
        &upstream,
        "header_read_timeout = \"1s\"\nidle_timeout = \"1s\"",
        "timeout = \"3s\"",
    )
    .await;
    let response = tokio::time::timeout(BOUND, gw.client().get("/slow").http2().send())
        .await
        .expect("bounded");
    assert_eq!(response.status, 504);
    assert_eq!(response.code(), "UPSTREAM_TIMEOUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_h2_sockets_at_the_connection_cap_do_not_lock_everyone_out() {
    let upstream = Upstream::start(Behavior::Ok).await;
    let gw = gateway(
        &upstream,
        "max_connections = 4\nheader_read_timeout = \"1s\"",
        "",
    )
    .await;
    let client = gw.client();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(client.tls(Alpn::Http2).await);
    }
    // Every slot is taken; each silent socket is closed within its deadline.
    for tls in &mut silent {
        read_until_closed(tls, false).await;
    }
    // A slot comes back when its closed task finishes, a moment after the
    // close: poll (bounded). A refused attempt panics inside its own task.
    let deadline = Instant::now() + BOUND;
    loop {
        let attempt = tokio::spawn({
            let client = client.clone();
            async move { client.get("/after").http2().send().await }
        });
        if let Ok(Ok(response)) = tokio::time::timeout(BOUND, attempt).await {
            assert_eq!(response.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
    }
    assert_eq!(upstream.count(), 1);
}
