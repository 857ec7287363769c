//! A real hyper server on an ephemeral port that records every request it
//! receives, so tests can prove what did (and did not) arrive. HTTP/1.1 by
//! default; HTTP/2 (prior knowledge or ALPN) and TLS on request. It also
//! counts the connections it accepted and the most requests it held at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::body::Zeros;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub trailers: Option<HeaderMap>,
}

#[derive(Debug, Clone, Copy)]
pub enum Behavior {
    /// 200 with a short body.
    Ok,
    /// 200 whose body is the request's target (path and query), so each
    /// client can tell its own answer from another's.
    Target,
    /// Never answers (504 tests).
    Hang,
    /// 200 with this many zero bytes, streamed.
    Download(u64),
    /// Sets cookies named like the gateway's, plus one of its own.
    SetGatewayCookies,
    /// Accepts WebSocket handshakes (101) and echoes the tunnel's bytes.
    WebSocketEcho,
    /// Answers every request with this status.
    Status(u16),
    /// A gRPC answer: a length-prefixed message, then `grpc-status: 0`
    /// and `grpc-message: done` as trailers.
    Grpc,
    /// A server-sent-events stream: one event, then open and silent until
    /// the gateway closes it (counted in [`Upstream::closed`]).
    Events,
}

/// How the upstream speaks.
#[derive(Clone, Default)]
pub struct UpstreamOptions {
    /// HTTP/2 only (prior knowledge over TCP, or ALPN h2 over TLS).
    pub h2: bool,
    /// Serve TLS with this config (its ALPN is set from `h2`).
    pub tls: Option<rustls::ServerConfig>,
    /// Listen here instead of an ephemeral port (bringing a dead target back).
    pub addr: Option<SocketAddr>,
}

/// Connection and concurrency counters.
#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// WebSocket tunnels whose client side has closed.
    tunnels_closed: AtomicUsize,
    /// Event streams (`Behavior::Events`) the gateway closed.
    streams_closed: AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    /// Notified when a request arrives or a tunnel closes.
    arrived: Arc<Notify>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(behavior: Behavior) -> Self {
        Self::start_with(behavior, UpstreamOptions::default()).await
    }

    pub async fn start_with(behavior: Behavior, options: UpstreamOptions) -> Self {
        let bind = options
            .addr
            .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let counters = Arc::new(Counters::default());
        let acceptor = options.tls.map(|mut tls| {
            tls.alpn_protocols = if options.h2 {
                vec![b"h2".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
            TlsAcceptor::from(Arc::new(tls))
        });
        let h2 = options.h2;
        let task = {
            let received = Arc::clone(&received);
            let arrived = Arc::clone(&arrived);
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    counters.accepted.fetch_add(1, Ordering::SeqCst);
                    let received = Arc::clone(&received);
                    let arrived = Arc::clone(&arrived);
                    let counters = Arc::clone(&counters);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            handle(
                                req,
                                behavior,
                                Arc::clone(&received),
                                Arc::clone(&arrived),
                                Arc::clone(&counters),
                            )
                        });
                        match acceptor {
                            // A refused handshake just ends the connection.
                            Some(acceptor) => {
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    serve(TokioIo::new(tls), service, h2).await;
                                }
                            }
                            None => serve(TokioIo::new(stream), service, h2).await,
                        }
                    });
                }
            })
        };
        Self {
            addr,
            received,
            arrived,
            counters,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// The most requests this upstream was handling at the same time.
    /// Tunnels and event streams the gateway closed.
    pub fn closed(&self) -> usize {
        self.counters.tunnels_closed.load(Ordering::SeqCst)
            + self.counters.streams_closed.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.counters.max_in_flight.load(Ordering::SeqCst)
    }

    /// An address where nothing listens (502 tests).
    pub async fn refused_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The one request received; fails the test if there was not exactly one.
    pub fn only(&self) -> Recorded {
        let received = self.received();
        assert_eq!(
            received.len(),
            1,
            "expected exactly one upstream request: {received:#?}"
        );
        received.into_iter().next().unwrap()
    }

    /// Waits (bounded) until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            let notified = self.arrived.notified();
            if self.count() >= n {
                break;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "upstream saw {} requests, expected {n}",
                self.count()
            );
        }
    }

    /// Waits (bounded) until the gateway has closed `n` tunnels and event
    /// streams.
    pub async fn wait_for_closed(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            let closed = self.closed();
            if closed >= n {
                break;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "upstream saw {closed} tunnels and event streams closed, expected {n}"
            );
        }
    }

    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
    }
}

async fn serve<I, S>(io: I, service: S, h2: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<UpstreamBody>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .max_concurrent_streams(1000)
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpstreamBody = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> UpstreamBody {
    Full::new(bytes.into()).boxed()
}

/// Decrements the in-flight count when a request's handling ends.
struct InFlight(Arc<Counters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    mut request: Request<Incoming>,
    behavior: Behavior,
    received: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    counters: Arc<Counters>,
) -> Result<Response<UpstreamBody>, Infallible> {
    let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    counters.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(Arc::clone(&counters));
    let on_upgrade = hyper::upgrade::on(&mut request);
    let (parts, mut body) = request.into_parts();
    let mut body_len = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        match frame.into_data() {
            Ok(data) => body_len += data.len() as u64,
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    received.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body_len,
        trailers,
    });
    arrived.notify_waiters();
    let response = match behavior {
        Behavior::Ok => Response::new(full("upstream-ok")),
        Behavior::Target => Response::new(full(target)),
        Behavior::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behavior::Download(len) => {
            Response::new(Zeros::new(len).map_err(|never| match never {}).boxed())
        }
        Behavior::SetGatewayCookies => Response::builder()
            .status(StatusCode::OK)
            .header(
                "set-cookie",
                "__Secure-authgate_refresh=stolen; Path=/; Secure",
            )
            .header("set-cookie", "authgate_csrf=stolen; Path=/")
            .header("set-cookie", "app=1; Path=/")
            .body(full("cookies"))
            .unwrap(),
        Behavior::WebSocketEcho => {
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                counters.tunnels_closed.fetch_add(1, Ordering::SeqCst);
                arrived.notify_waiters();
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .body(full(""))
                .unwrap()
        }
        Behavior::Events => Response::builder()
            .header("content-type", "text/event-stream")
            .body(
                EventStream {
                    first: Some(Bytes::from_static(b"data: hello\n\n")),
                    counters,
                    arrived,
                }
                .boxed(),
            )
            .unwrap(),
        Behavior::Status(code) => Response::builder()
            .status(code)
            .body(full("status"))
            .unwrap(),
        Behavior::Grpc => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("done"));
            // One uncompressed gRPC message of 5 bytes: "hello".
            let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
            let body = Full::new(message)
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed();
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/grpc")
                .body(body)
                .unwrap()
        }
    };
    Ok(response)
}

/// One event, then silence; counts itself closed when hyper drops it (the
/// gateway closed the connection or reset the stream).
struct EventStream {
    first: Option<Bytes>,
    counters: Arc<Counters>,
    /// Told when the gateway closes the stream.
    arrived: Arc<Notify>,
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.first.take() {
            Some(event) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(event)))),
            None => std::task::Poll::Pending,
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.counters.streams_closed.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_waiters();
    }
}
