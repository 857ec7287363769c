//! Active health checks: every `interval`, a GET of the configured path on
//! a fresh connection to one target; a 2xx or 3xx answer within `timeout`
//! keeps it (or brings it back) in rotation, anything else takes it out.
//! One task per target, owned by the gateway's maintenance task so it stops
//! at shutdown.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{Request, Uri};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::{Instant, MissedTickBehavior};

use super::target::TargetState;
use crate::config::upstream::HealthCheck;
use crate::config::UpstreamProtocol;

/// Checks `target` forever.
pub(crate) async fn run(target: Arc<TargetState>, check: HealthCheck, protocol: UpstreamProtocol) {
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        ticks.tick().await;
        let healthy = check_once(&target, &check, protocol).await;
        if healthy != was_healthy {
            if healthy {
                tracing::info!(target = %target.name, "upstream target passed its health check");
            } else {
                tracing::warn!(target = %target.name, path = %check.path, "upstream target failed its health check");
            }
        }
        target.health.record_check(healthy);
        was_healthy = healthy;
    }
}

async fn check_once(target: &TargetState, check: &HealthCheck, protocol: UpstreamProtocol) -> bool {
    let deadline = Instant::now() + check.timeout;
    let exchange = async {
        let io = target.connector.connect(deadline).await.ok()?;
        let io = TokioIo::new(io);
        let authority = target.target.authority.as_str();
        let path = format!("{}{}", target.target.base_path, check.path);
        let builder = match protocol {
            UpstreamProtocol::Http1 => Request::get(path)
                .header(HOST, authority)
                .header(CONNECTION, "close"),
            UpstreamProtocol::Http2 => {
                let uri: Uri = format!("{}://{authority}{path}", target.target.scheme)
                    .parse()
                    .ok()?;
                Request::get(uri)
            }
        };
        let request = builder
            .header(USER_AGENT, "authgate-health-check")
            .body(Empty::<Bytes>::new())
            .ok()?;
        // The connection is driven here, not spawned, so a target that
        // hangs leaves nothing behind when the timeout drops this future.
        let status = match protocol {
            UpstreamProtocol::Http1 => {
                let (mut sender, connection) = http1::handshake(io).await.ok()?;
                answer(sender.send_request(request), connection).await?
            }
            UpstreamProtocol::Http2 => {
                let (mut sender, connection) =
                    http2::handshake(TokioExecutor::new(), io).await.ok()?;
                answer(sender.send_request(request), connection).await?
            }
        };
        Some(status.is_success() || status.is_redirection())
    };
    matches!(
        tokio::time::timeout_at(deadline, exchange).await,
        Ok(Some(true))
    )
}

/// The status of `response`, driving `connection` meanwhile. The
/// connection may end in the same poll that completes the response (the
/// check asks for `Connection: close`), so its end is not a failure.
async fn answer<B>(
    response: impl std::future::Future<Output = hyper::Result<http::Response<B>>>,
    connection: impl std::future::Future,
) -> Option<http::StatusCode> {
    let mut response = std::pin::pin!(response);
    tokio::select! {
        biased;
        answered = &mut response => return answered.ok().map(|r| r.status()),
        _ = connection => {}
    }
    response.await.ok().map(|r| r.status())
}
