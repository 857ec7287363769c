//! The upstream layer of one route: its targets, the balancer choosing
//! among them, their connections and health, and the one retry. The proxy
//! hands it a request already rewritten for upstreams; it returns the
//! response head with a body that keeps its connection until it ends.
//!
//! A GET, HEAD or OPTIONS that reached no target (the connect failed, the
//! pool was full, or hyper gave the request back unsent) is tried once more
//! on another target. A request of any method whose idle HTTP/1 connection
//! turns out closed by its target goes on another connection to the same
//! target. Nothing else is retried: once a byte may have reached a target,
//! a second attempt could repeat its effect.

pub(crate) mod balance;
pub(crate) mod body;
pub(crate) mod connector;
pub(crate) mod error;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod health;
mod idle;
pub(crate) mod io;
pub(crate) mod pool;
pub(crate) mod probe;
pub(crate) mod target;
#[cfg(test)]
mod tests;
pub(crate) mod tls;
mod waiters;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::TrySendError;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::upstream::HealthCheck;
use crate::config::{UpstreamProtocol, UpstreamSet};
use crate::proxy::forward_body::ForwardBody;
use balance::Balancer;
use body::UpstreamBody;
use connector::Connector;
pub use error::UpstreamError;
use h1::H1Conn;
use pool::{Checkout, H1Pool};
use target::{Connections, InFlight, TargetState};
pub use tls::UpstreamTlsError;

/// Requests allowed to wait for a connection to one target, per allowed
/// connection; beyond this (and at least [`MIN_WAITERS`]) they get 503.
const WAITERS_PER_CONNECTION: usize = 4;
const MIN_WAITERS: usize = 1024;

/// The run-time state of one route's targets.
pub struct UpstreamGroup {
    targets: Vec<Arc<TargetState>>,
    balancer: Balancer,
    protocol: UpstreamProtocol,
    health_check: Option<HealthCheck>,
}

/// Why a route's upstreams could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error(transparent)]
    Tls(#[from] UpstreamTlsError),
    #[error("{0}")]
    Target(String),
}

/// The outcome of one attempt on one target.
enum Attempt {
    /// Nothing reached the target; the request is intact for a retry.
    NotSent(Box<Request<ForwardBody>>, UpstreamError),
    Failed(UpstreamError),
}

impl UpstreamGroup {
    /// Builds pools, connectors and TLS settings for `set`, with counts kept
    /// per worker for `workers`. Reads the CA and client-certificate files.
    pub fn new(set: &UpstreamSet, workers: usize) -> Result<Self, UpstreamSetupError> {
        let tls = if set.targets.iter().any(|t| t.is_https()) {
            Some(tls::client_config(&set.tls, set.protocol)?)
        } else {
            None
        };
        let max_waiters = (set.max_connections * WAITERS_PER_CONNECTION).max(MIN_WAITERS);
        let mut targets = Vec::with_capacity(set.targets.len());
        for target in &set.targets {
            let connector = Connector::new(target, set.protocol, tls.as_ref())
                .map_err(UpstreamSetupError::Target)?;
            let connections = match set.protocol {
                UpstreamProtocol::Http1 => Connections::Http1(Box::new(H1Pool::new(
                    set.max_connections,
                    max_waiters,
                    workers,
                ))),
                UpstreamProtocol::Http2 => Connections::Http2(h2::H2Shared::default()),
            };
            let state = TargetState::new(target.clone(), connector, connections, workers)
                .map_err(|e| UpstreamSetupError::Target(format!("{}: {e}", target.authority)))?;
            targets.push(Arc::new(state));
        }
        Ok(Self {
            targets,
            balancer: Balancer::new(set.balance, workers),
            protocol: set.protocol,
            health_check: set.health_check.clone(),
        })
    }

    /// Open connections per target, in configuration order.
    pub fn live_connections(&self) -> Vec<usize> {
        self.targets.iter().map(|t| t.live_connections()).collect()
    }

    /// Whether a target is available now, for routes whose targets are
    /// health-checked (`None` for the others: nothing is known ahead).
    pub fn checked_live(&self, now: Instant) -> Option<bool> {
        self.health_check.as_ref()?;
        Some(self.targets.iter().any(|t| t.health.is_available(now)))
    }

    /// Closes the HTTP/1 connections that idled too long or that their
    /// target closed.
    pub fn close_idle_connections(&self, now: Instant) {
        for target in &self.targets {
            if let Connections::Http1(pool) = &target.connections {
                pool.close_idle(now);
            }
        }
    }

    /// Starts the active health checks of this route, if configured.
    pub fn spawn_health_checks(&self, tasks: &mut JoinSet<()>) {
        if let Some(check) = &self.health_check {
            for target in &self.targets {
                tasks.spawn(probe::run(Arc::clone(target), check.clone(), self.protocol));
            }
        }
    }

    /// Sends `request` (headers already rewritten) to a target, at
    /// `target_path` (path and query) below the target's base path, and
    /// returns the response head (with the body too when it is small: see
    /// [`UpstreamBody::read_small`]) within `timeout` of `asked`, the
    /// moment the request was handed over. The request comes boxed: held
    /// by value, it would take room in this future and again in the
    /// attempt's (320 bytes each), and the forwarding future would outgrow
    /// what malloc serves from its per-thread cache.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps a second copy of its arguments in its state (rust-lang/rust#62958)"
    )]
    pub fn send<'a>(
        &'a self,
        mut request: Box<Request<ForwardBody>>,
        target_path: PathAndQuery,
        asked: Instant,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + 'a {
        async move {
            let deadline = asked + timeout;
            // The first attempt decides by the clock reading it was given; a
            // retry reads it anew.
            let mut now = asked;
            let retryable = matches!(
                *request.method(),
                Method::GET | Method::HEAD | Method::OPTIONS
            );
            let mut first_error = None;
            let mut exclude = None;
            loop {
                let Some(index) = self.balancer.pick(&self.targets, exclude, now) else {
                    return Err(first_error.unwrap_or(UpstreamError::NoHealthyTarget));
                };
                let Some(target) = self.targets.get(index) else {
                    return Err(UpstreamError::NoHealthyTarget);
                };
                self.aim(&mut request, target, &target_path)?;
                // One timer for the whole attempt (waiting for a connection, the
                // exchange, a small body): a timer per step cost a lock on the
                // runtime's timer wheel to arm and another to cancel, each
                // (bench/RESULTS.md, "Issue 12, ninth round"). The attempt
                // is built here, not awaited inside an `async` block, which
                // would keep room for the request beside it.
                let attempt = match &target.connections {
                    Connections::Http1(pool) => {
                        Either::Left(self.attempt_h1(target, pool, request, now, deadline))
                    }
                    Connections::Http2(shared) => {
                        Either::Right(self.attempt_h2(target, shared, request, deadline))
                    }
                };
                let outcome = tokio::time::timeout_at(deadline, attempt)
                    .await
                    .unwrap_or(Err(Attempt::Failed(UpstreamError::Timeout)));
                match outcome {
                    Ok(response) => return Ok(response),
                    Err(Attempt::NotSent(back, err)) if retryable && exclude.is_none() => {
                        tracing::debug!(error = %err, "retrying on another target");
                        request = back;
                        first_error = Some(err);
                        exclude = Some(index);
                        now = Instant::now();
                    }
                    Err(Attempt::NotSent(_, err) | Attempt::Failed(err)) => return Err(err),
                }
            }
        }
    }

    /// Points `request` at `target`: origin-form and the target's Host for
    /// HTTP/1, an absolute URI with the target's authority for HTTP/2. The
    /// client's Host is replaced either way (it goes upstream as
    /// X-Forwarded-Host), and so is a previous target's on a retry.
    fn aim(
        &self,
        request: &mut Request<ForwardBody>,
        target: &TargetState,
        target_path: &PathAndQuery,
    ) -> Result<(), UpstreamError> {
        let base = &target.target.base_path;
        let path_and_query = if base.is_empty() {
            target_path.clone()
        } else {
            PathAndQuery::try_from(format!("{base}{target_path}"))
                .map_err(|e| UpstreamError::Request(e.into()))?
        };
        let (uri, version) = match self.protocol {
            UpstreamProtocol::Http1 => {
                request.headers_mut().insert(HOST, target.host.clone());
                (Uri::from(path_and_query), Version::HTTP_11)
            }
            UpstreamProtocol::Http2 => {
                // RFC 9113 §8.3.1: :authority replaces Host.
                request.headers_mut().remove(HOST);
                let uri = Uri::builder()
                    .scheme(target.target.scheme.clone())
                    .authority(target.target.authority.clone())
                    .path_and_query(path_and_query)
                    .build()
                    .map_err(UpstreamError::Request)?;
                (uri, Version::HTTP_2)
            }
        };
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        Ok(())
    }

    /// One attempt on `target`, begun at `now`; its caller bounds it by
    /// `deadline`.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps a second copy of its arguments in its state (rust-lang/rust#62958)"
    )]
    fn attempt_h1<'a>(
        &'a self,
        target: &'a Arc<TargetState>,
        pool: &'a H1Pool,
        mut request: Box<Request<ForwardBody>>,
        now: Instant,
        deadline: Instant,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Attempt>> + 'a {
        async move {
            let in_flight = target.start_request();
            let (conn, response) = loop {
                let (mut conn, was_idle) = match pool.check_out(now).await {
                    Err(source) => {
                        let err = UpstreamError::Busy {
                            target: target.name.clone(),
                            source,
                        };
                        return Err(Attempt::NotSent(request, err));
                    }
                    Ok(Checkout::Idle(conn)) => (conn, true),
                    Ok(Checkout::Connect(slot)) => match open_h1(target, slot, deadline).await {
                        Ok(conn) => (conn, false),
                        Err(source) => return Err(connect_failed(target, request, source)),
                    },
                };
                match conn.send(*request).await {
                    Ok(response) => break (conn, response),
                    // The target closed this idle connection while it sat in the
                    // pool (hyper saw the end before writing anything): any
                    // method may go on another connection, since nothing was
                    // sent. Each pass spends one idle connection, so this ends.
                    Err(mut err) if was_idle => match err.take_message() {
                        Some(unsent) => {
                            tracing::debug!(error = %err.error(), "idle upstream connection was closed");
                            *request = unsent;
                        }
                        None => return Err(unsent_or_failed(target, err)),
                    },
                    Err(err) => return Err(unsent_or_failed(target, err)),
                }
            };
            target.health.record_success();
            let (parts, incoming) = response.into_parts();
            let conn = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                conn.into_upgrade();
                None
            } else {
                Some(conn)
            };
            let body = UpstreamBody::new(incoming, conn, in_flight);
            let body = body.read_small().await.map_err(|source| {
                Attempt::Failed(UpstreamError::Exchange {
                    target: target.name.clone(),
                    source,
                })
            })?;
            Ok(Response::from_parts(parts, body))
        }
    }

    /// As [`Self::attempt_h1`].
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps a second copy of its arguments in its state (rust-lang/rust#62958)"
    )]
    fn attempt_h2<'a>(
        &'a self,
        target: &'a Arc<TargetState>,
        shared: &'a h2::H2Shared,
        request: Box<Request<ForwardBody>>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Attempt>> + 'a {
        async move {
            let in_flight: InFlight = target.start_request();
            let mut sender = match shared.sender(&target.connector, deadline).await {
                Ok(sender) => sender,
                Err(source) => return Err(connect_failed(target, request, source)),
            };
            let response = sender
                .try_send_request(*request)
                .await
                .map_err(|err| unsent_or_failed(target, err))?;
            target.health.record_success();
            let (parts, incoming) = response.into_parts();
            Ok(Response::from_parts(
                parts,
                UpstreamBody::new(incoming, None, in_flight),
            ))
        }
    }
}

/// Opens a new HTTP/1 connection to `target` in the place `slot` holds.
/// Boxed: opening a connection (TCP, TLS, handshake) is the rare path, and
/// unboxed its state (over 1 KiB) would sit in every request's future and be
/// copied each time the future moves (bench/RESULTS.md, "Issue 12, sixth
/// round").
async fn open_h1(
    target: &TargetState,
    slot: pool::Slot,
    deadline: Instant,
) -> Result<H1Conn, connector::ConnectError> {
    Box::pin(async {
        let io = target.connector.connect(deadline).await?;
        H1Conn::handshake(io, slot)
            .await
            .map_err(connector::ConnectError::Handshake)
    })
    .await
}

/// A connect failure ejects the target and leaves the request unsent.
fn connect_failed(
    target: &TargetState,
    request: Box<Request<ForwardBody>>,
    source: connector::ConnectError,
) -> Attempt {
    let backoff = target.health.record_failure(Instant::now());
    tracing::warn!(
        target = %target.name,
        error = %source,
        ejected_for = ?backoff,
        "upstream target ejected"
    );
    let err = UpstreamError::Connect {
        target: target.name.clone(),
        source,
    };
    Attempt::NotSent(request, err)
}

/// hyper hands the request back when it wrote none of it.
fn unsent_or_failed(target: &TargetState, mut err: TrySendError<Request<ForwardBody>>) -> Attempt {
    let unsent = err.take_message();
    let err = UpstreamError::Exchange {
        target: target.name.clone(),
        source: err.into_error(),
    };
    match unsent {
        Some(request) => Attempt::NotSent(Box::new(request), err),
        None => Attempt::Failed(err),
    }
}
