//! The admin listener: plain HTTP/1.1 on `[admin] listen`, answering
//! `GET /metrics`, `/healthz` and `/readyz`. It runs on the server's task
//! set until the shutdown begins; its connections live in the accept task's
//! `JoinSet`, so they end with it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::health;
use crate::gateway::Gateway;
use crate::tasks::{StopSignal, Tasks};

/// Admin connections served at once; more are closed at accept. Scrapers
/// and probes need a handful.
const MAX_CONNECTIONS: usize = 64;
/// A scraper must send its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin listener bound at start, if any, on `tasks` until
/// `stop`: probes and scrapes answer until the drain begins.
pub(crate) fn spawn(gateway: &Arc<Gateway>, tasks: &Tasks, stop: StopSignal) {
    let Some(listener) = gateway.observability().take_listener() else {
        return;
    };
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "cannot serve the admin listener");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin endpoints (/metrics, /healthz, /readyz) on {addr}");
    }
    let gateway = Arc::clone(gateway);
    tasks.spawn(accept_loop(listener, gateway, stop));
}

async fn accept_loop(listener: TcpListener, gateway: Arc<Gateway>, stop: StopSignal) {
    let mut connections = JoinSet::new();
    let stopped = stop.fired();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            () = &mut stopped => {
                // Aborted and awaited here, so no connection still holds the
                // gateway once this tracked task has ended.
                connections.shutdown().await;
                return;
            }
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if connections.len() >= MAX_CONNECTIONS {
            continue;
        }
        let gateway = Arc::clone(&gateway);
        connections.spawn(async move {
            let service = service_fn(move |request| answer(Arc::clone(&gateway), request));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}

async fn answer(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "METHOD_NOT_ALLOWED"}),
        ));
    }
    let response = match request.uri().path() {
        "/metrics" => {
            let depth = gateway.accounts().password_queue_depth();
            match gateway.observability().metrics().encode(depth) {
                Ok(text) => {
                    let mut response = Response::new(Full::new(Bytes::from(text)));
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    response
                }
                Err(_) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"error": "INTERNAL"}),
                ),
            }
        }
        "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "alive"})),
        "/readyz" => {
            let problems = health::readiness(&gateway, SystemTime::now()).await;
            if problems.is_empty() {
                json(StatusCode::OK, serde_json::json!({"status": "ready"}))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "not ready", "reasons": problems}),
                )
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "NOT_FOUND"}),
        ),
    };
    Ok(response)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
