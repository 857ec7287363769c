//! The upstream group against a real HTTP/1.1 server on loopback: when a
//! connection goes back to the pool.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::target::Connections;
use super::UpstreamGroup;
use crate::config::{Config, Upstream};
use crate::proxy::forward_body::ForwardBody;
use crate::proxy::headers::IdentityScrubber;

const SMALL: usize = 100;
const LARGE: usize = 256 * 1024;

/// A keep-alive server answering `/small` with 100 bytes and anything else
/// with 256 KiB, each with a Content-Length.
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let len = if req.uri().path() == "/small" {
                        SMALL
                    } else {
                        LARGE
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'a'; len]))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn group(target: SocketAddr) -> UpstreamGroup {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
         [[route]]\nname = \"b\"\npath_prefix = \"/\"\nupstreams = [\"http://{target}\"]\n"
    );
    let config = Config::parse(Path::new("t.toml"), &text).unwrap();
    let Upstream::Http(set) = &config.routes[0].upstream else {
        panic!("expected an http target");
    };
    UpstreamGroup::new(set, 1).unwrap()
}

fn idle(group: &UpstreamGroup) -> usize {
    match &group.targets[0].connections {
        Connections::Http1(pool) => pool.idle(),
        Connections::Http2(_) => panic!("an HTTP/1 target"),
    }
}

async fn send(group: &UpstreamGroup, path: &str) -> Response<super::body::UpstreamBody> {
    send_with(group, Method::GET, path).await
}

async fn send_with(
    group: &UpstreamGroup,
    method: Method,
    path: &str,
) -> Response<super::body::UpstreamBody> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "t")
        .body(ForwardBody::empty(IdentityScrubber::new("x-user-")))
        .unwrap();
    let target = http::uri::PathAndQuery::try_from(path).unwrap();
    group
        .send(
            Box::new(request),
            target,
            Instant::now(),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_small_body_is_read_whole_and_its_connection_is_back_before_the_answer() {
    let group = group(start_upstream().await);
    let response = send(&group, "/small").await;
    assert_eq!(
        idle(&group),
        1,
        "the connection is idle while the body is unsent"
    );
    assert_eq!(response.body().size_hint().exact(), Some(SMALL as u64));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), SMALL);
    assert_eq!(group.live_connections(), vec![1]);
}

#[tokio::test]
async fn a_large_body_streams_and_holds_its_connection_until_it_ends() {
    let group = group(start_upstream().await);
    let response = send(&group, "/large").await;
    assert_eq!(idle(&group), 0, "the connection carries the body still");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), LARGE);
    assert_eq!(idle(&group), 1, "back once the body ended");
}

/// A server that answers its first request with a head announcing a small
/// body, and sends that body only when `release` fires.
async fn start_late_body_upstream(release: oneshot::Receiver<()>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await.unwrap() == 0 {
                return;
            }
            request.push(byte[0]);
        }
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {SMALL}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        let _ = release.await;
        stream.write_all(&[b'a'; SMALL]).await.unwrap();
        // Held open: the connection goes back to the pool, not closed.
        let _ = stream.read(&mut [0u8; 1]).await;
    });
    addr
}

/// The response and its body are polled without a waker of their own
/// (only driving the connection advances them): a body that comes after
/// its head must still wake the request, through the connection's socket.
#[tokio::test]
async fn a_small_body_sent_after_its_head_still_arrives() {
    let (release, released) = oneshot::channel();
    let group = group(start_late_body_upstream(released).await);
    let exchange = tokio::spawn(async move {
        let response = send(&group, "/small").await;
        (response.status(), idle(&group))
    });
    // Let the exchange read the head and wait for the body, then send it.
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    let (status, idle) = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the body woke the request")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(idle, 1, "read whole, its connection back in the pool");
}

/// A server whose first connection answers one request, then stays open
/// until `close` fires and is closed without a word (as a server closes a
/// keep-alive connection it found idle too long), reporting on `closed`.
/// Later connections answer every request. Counts the requests it answered.
async fn start_closing_upstream(
    close: oneshot::Receiver<()>,
    closed: oneshot::Sender<()>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    tokio::spawn(async move {
        let (mut first, _) = listener.accept().await.unwrap();
        answer_one(&mut first, &counter).await;
        let _ = close.await;
        drop(first);
        let _ = closed.send(());
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move { while answer_one(&mut stream, &counter).await {} });
        }
    });
    (addr, answered)
}

/// Reads one bodiless request and answers it; false at the end of the stream.
async fn answer_one(stream: &mut tokio::net::TcpStream, answered: &AtomicUsize) -> bool {
    let mut request = Vec::new();
    while !request.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return false;
        }
        request.push(byte[0]);
    }
    answered.fetch_add(1, Ordering::SeqCst);
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .is_ok()
}

/// An idle connection is not polled at check-out: the request's own first
/// poll finds it closed, and hyper hands the request back unsent. Since
/// nothing reached the target, even a POST (never retried on another
/// target) goes on a new connection to the same one.
#[tokio::test]
async fn a_request_on_an_idle_connection_the_target_closed_goes_on_a_new_one() {
    let (close, close_rx) = oneshot::channel();
    let (closed_tx, closed) = oneshot::channel();
    let (addr, answered) = start_closing_upstream(close_rx, closed_tx).await;
    let group = group(addr);
    assert_eq!(send_with(&group, Method::POST, "/a").await.status(), 200);
    assert_eq!(idle(&group), 1, "kept for the next request");

    close.send(()).unwrap();
    closed.await.unwrap();
    // Deferred until the runtime has polled its sockets once, so the
    // connection's end is known to it (as it is when the target closed it
    // any time before, rather than in the same instant).
    tokio::task::yield_now().await;

    let response = send_with(&group, Method::POST, "/b").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        answered.load(Ordering::SeqCst),
        2,
        "each POST answered once"
    );
    assert_eq!(group.live_connections(), vec![1], "the closed one is gone");
}
