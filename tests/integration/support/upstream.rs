//! A real hyper HTTP/1.1 server on an ephemeral port that records every
//! request it receives, so tests can prove what did (and did not) arrive.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

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
}

pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    /// Notified when a request arrives or a tunnel closes.
    arrived: Arc<Notify>,
    /// How many WebSocket tunnels the client side has closed.
    tunnels_closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(behavior: Behavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let tunnels_closed = Arc::new(AtomicUsize::new(0));
        let task = {
            let received = Arc::clone(&received);
            let arrived = Arc::clone(&arrived);
            let tunnels_closed = Arc::clone(&tunnels_closed);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let received = Arc::clone(&received);
                    let arrived = Arc::clone(&arrived);
                    let tunnels_closed = Arc::clone(&tunnels_closed);
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            handle(
                                req,
                                behavior,
                                Arc::clone(&received),
                                Arc::clone(&arrived),
                                Arc::clone(&tunnels_closed),
                            )
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            received,
            arrived,
            tunnels_closed,
            task,
        }
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

    /// Waits (bounded) until the gateway has closed `n` WebSocket tunnels.
    pub async fn wait_for_tunnels_closed(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            let closed = self.tunnels_closed.load(Ordering::SeqCst);
            if closed >= n {
                break;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "upstream saw {closed} tunnels closed, expected {n}"
            );
        }
    }

    pub fn clear(&self) {
        self.received.lock().unwrap().clear();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type UpstreamBody = Either<Full<Bytes>, Zeros>;

async fn handle(
    mut request: Request<Incoming>,
    behavior: Behavior,
    received: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    tunnels_closed: Arc<AtomicUsize>,
) -> Result<Response<UpstreamBody>, Infallible> {
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
    received.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        target: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body_len,
        trailers,
    });
    arrived.notify_waiters();
    let response = match behavior {
        Behavior::Ok => Response::new(Either::Left(Full::new(Bytes::from_static(b"upstream-ok")))),
        Behavior::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behavior::Download(len) => Response::new(Either::Right(Zeros::new(len))),
        Behavior::SetGatewayCookies => Response::builder()
            .status(StatusCode::OK)
            .header(
                "set-cookie",
                "__Secure-authgate_refresh=stolen; Path=/; Secure",
            )
            .header("set-cookie", "authgate_csrf=stolen; Path=/")
            .header("set-cookie", "app=1; Path=/")
            .body(Either::Left(Full::new(Bytes::from_static(b"cookies"))))
            .unwrap(),
        Behavior::WebSocketEcho => {
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
                tunnels_closed.fetch_add(1, Ordering::SeqCst);
                arrived.notify_waiters();
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .body(Either::Left(Full::new(Bytes::new())))
                .unwrap()
        }
        Behavior::Status(code) => Response::builder()
            .status(code)
            .body(Either::Left(Full::new(Bytes::from_static(b"status"))))
            .unwrap(),
    };
    Ok(response)
}
