//! Forwarding an authorized request to its route's upstream and streaming the
//! answer back. Bodies are never buffered: the client's body is handed to the
//! upstream connection frame by frame, and the upstream's body to hyper.
//! Choosing a target and holding its connection is `upstream/`'s job.

pub(crate) mod answer;
pub(crate) mod client_addr;
pub(crate) mod echo;
pub mod forward_body;
pub mod headers;
pub(crate) mod upgrade;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::{self, Either, FutureExt};
use http::header::{CONTENT_LENGTH, HOST, TE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::task::JoinSet;

use crate::auth::revocation::RevocationList;
use crate::auth::session_watch::SessionWatch;
use crate::auth::Identity;
use crate::config::{RouteConfig, Upstream};
use crate::error::GatewayError;
use crate::path::DecidedPath;
use crate::worker::PerWorker;
use answer::AnswerBody;
use forward_body::{ForwardBody, ForwardBodyError};
use headers::{ClientSide, IdentityHeaders, IdentityScrubber, RouteHeaderPolicy};
use upstream::body::UpstreamBody;
use upstream::{UpstreamError, UpstreamGroup, UpstreamSetupError};

/// Shared forwarding machinery: each route's upstreams and the header policy.
pub struct Proxy {
    /// By route name (unique); echo routes have none.
    groups: HashMap<String, Arc<UpstreamGroup>>,
    /// Per worker, as `names`: each request body holds a count on one.
    scrubber: PerWorker<IdentityScrubber>,
    /// A copy per worker: a header name's bytes carry a reference count,
    /// which each request's copy of the name writes, twice.
    names: PerWorker<IdentityHeaders>,
    body_stall_timeout: std::time::Duration,
    /// Open WebSocket tunnels, for the metrics.
    tunnels: prometheus_client::metrics::gauge::Gauge,
}

/// The authenticated caller of a request, and where the end of its
/// session is announced.
pub struct Caller<'a> {
    pub identity: &'a Identity,
    pub revocations: &'a Arc<RevocationList>,
}

impl Proxy {
    pub fn new(
        identity_prefix: &str,
        body_stall_timeout: std::time::Duration,
        routes: &[RouteConfig],
        workers: usize,
    ) -> Result<Self, ProxySetupError> {
        let mut groups = HashMap::new();
        for route in routes {
            if let Upstream::Http(set) = &route.upstream {
                let group =
                    UpstreamGroup::new(set, workers).map_err(|source| ProxySetupError::Route {
                        route: route.name.clone(),
                        source,
                    })?;
                groups.insert(route.name.clone(), Arc::new(group));
            }
        }
        Ok(Self {
            groups,
            scrubber: PerWorker::new(workers, || IdentityScrubber::new(identity_prefix)),
            names: {
                let checked = IdentityHeaders::new(identity_prefix)?;
                // Built anew for each worker: a clone would share the bytes
                // and their count.
                PerWorker::new(workers, || {
                    IdentityHeaders::new(identity_prefix).unwrap_or_else(|_| checked.clone())
                })
            },
            body_stall_timeout,
            tunnels: Default::default(),
        })
    }

    /// Counts open WebSocket tunnels in `gauge`.
    pub fn count_tunnels_in(&mut self, gauge: &prometheus_client::metrics::gauge::Gauge) {
        self.tunnels = gauge.clone();
    }

    /// Starts every route's active health checks in `tasks`; they stop
    /// when the set is dropped.
    pub fn spawn_health_checks(&self, tasks: &mut JoinSet<()>) {
        for group in self.groups.values() {
            group.spawn_health_checks(tasks);
        }
    }

    /// Closes every route's upstream connections that idled too long.
    pub fn close_idle_connections(&self, now: tokio::time::Instant) {
        for group in self.groups.values() {
            group.close_idle_connections(now);
        }
    }

    /// The upstream state of the route named `route`, if it proxies.
    pub fn upstreams(&self, route: &str) -> Option<&Arc<UpstreamGroup>> {
        self.groups.get(route)
    }

    pub fn scrubber(&self) -> &IdentityScrubber {
        self.scrubber.mine()
    }

    /// Sends `request` to `route`'s upstream at the decided path; the
    /// route's timeout counts from `asked`, the moment it was handed over.
    /// A tunnel or streamed answer of an authenticated `caller` is closed
    /// when its session ends.
    pub fn forward<'a>(
        &'a self,
        request: Request<Incoming>,
        route: &'a RouteConfig,
        path: &DecidedPath,
        caller: Option<Caller<'a>>,
        client: &ClientSide<'_>,
        asked: std::time::Instant,
    ) -> impl Future<Output = Result<Response<AnswerBody>, GatewayError>> + 'a {
        // Rewritten and handed to the upstream group before any future is
        // built, and finished in a plain function once it answers: the
        // request then lives only in the group's own future. An `async`
        // body holding it across the wait would keep its arguments and
        // locals beside that future (rust-lang/rust#62958), several hundred
        // bytes copied whole each time the request's future moves.
        let identity = caller.as_ref().map(|caller| caller.identity);
        match self.prepare(request, route, path, identity, client, asked) {
            Ok(Prepared::Sent {
                sent,
                client_upgrade,
            }) => Either::Left(sent.map(move |answer| {
                let response = answer.map_err(|err| classify_upstream_error(err, route.timeout))?;
                Ok(self.finish(response, route, caller, client_upgrade))
            })),
            Ok(Prepared::Answered(response)) => Either::Right(future::ready(Ok(response))),
            Err(err) => Either::Right(future::ready(Err(err))),
        }
    }

    /// Rewrites `request` for the upstream and hands it to the route's
    /// group (or answers it, for `builtin:echo`).
    fn prepare<'a>(
        &'a self,
        mut request: Request<Incoming>,
        route: &'a RouteConfig,
        path: &DecidedPath,
        identity: Option<&Identity>,
        client: &ClientSide<'_>,
        asked: std::time::Instant,
    ) -> Result<
        Prepared<impl Future<Output = Result<Response<UpstreamBody>, UpstreamError>> + 'a>,
        GatewayError,
    > {
        // The service admits a handshake only on routes that allow WebSockets,
        // so only those need to look for one.
        let client_upgrade = (route.websocket && upgrade::is_websocket_handshake(&request))
            .then(|| upgrade::take_client_upgrade(&mut request));
        let (mut parts, body) = request.into_parts();
        // The length is looked up only on routes with a limit.
        if let Some(limit) = route.max_body {
            if content_length(&parts.headers).is_some_and(|length| length > limit) {
                return Err(GatewayError::PayloadTooLarge);
            }
        }
        let policy = RouteHeaderPolicy {
            forward_authorization: route.forward_authorization,
        };
        // gRPC needs `te: trailers` end to end (it tells a proxy the client
        // accepts trailers); every other TE value stays hop-by-hop.
        let te_trailers = parts
            .headers
            .get(TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        headers::prepare_request_headers(
            &mut parts.headers,
            client,
            identity,
            &policy,
            self.scrubber.mine(),
            self.names.mine(),
        );
        if te_trailers {
            parts
                .headers
                .insert(TE, HeaderValue::from_static("trailers"));
        }
        if client_upgrade.is_some() {
            upgrade::restore_handshake_headers(&mut parts.headers);
        }
        let target = upstream_target(route, path, parts.uri.query())?;
        let group = match &route.upstream {
            Upstream::Echo => {
                // No target to name in Host: the echo shows none.
                parts.headers.remove(HOST);
                parts.uri = Uri::from(target);
                let answer = echo::respond(&Request::from_parts(parts, ())).map(AnswerBody::from);
                return Ok(Prepared::Answered(answer));
            }
            Upstream::Http(_) => self
                .groups
                .get(&route.name)
                .ok_or_else(|| GatewayError::internal("route has no upstream state"))?,
        };
        let body = ForwardBody::new(
            body,
            route.max_body,
            self.body_stall_timeout,
            self.scrubber.mine().clone(),
        );
        let request = Box::new(Request::from_parts(parts, body));
        let asked = tokio::time::Instant::from_std(asked);
        Ok(Prepared::Sent {
            sent: group.send(request, target, asked, route.timeout),
            client_upgrade,
        })
    }

    /// The upstream's answer made the client's: hop-by-hop headers and
    /// the gateway's cookies removed, a switch of protocols joined into a
    /// tunnel, a streamed body watched for the end of the session.
    fn finish(
        &self,
        mut response: Response<UpstreamBody>,
        route: &RouteConfig,
        caller: Option<Caller<'_>>,
        client_upgrade: Option<upgrade::ClientUpgrade>,
    ) -> Response<AnswerBody> {
        let watch = || {
            caller.as_ref().map(|caller| {
                SessionWatch::new(
                    caller.revocations,
                    caller.identity,
                    route.close_on_expiry,
                    std::time::SystemTime::now(),
                )
            })
        };
        let switched = match client_upgrade {
            Some(client_upgrade) => {
                upgrade::tunnel_if_switched(client_upgrade, &mut response, &self.tunnels, watch());
                response.status() == http::StatusCode::SWITCHING_PROTOCOLS
            }
            None => false,
        };
        let (mut parts, body) = response.into_parts();
        headers::prepare_response_headers(&mut parts.headers);
        if switched {
            upgrade::restore_handshake_headers(&mut parts.headers);
        }
        // Only a streamed answer is watched: built for every answer, the
        // watch cost a clock read and its reference counts on each request.
        let streamed = !switched && is_streamed(&parts.headers);
        let body = match streamed.then(watch).flatten() {
            Some(watch) => AnswerBody::watched(body, watch),
            None => AnswerBody::upstream(body),
        };
        Response::from_parts(parts, body)
    }
}

/// A request rewritten for its upstream ([`Proxy::prepare`]).
#[expect(
    clippy::large_enum_variant,
    reason = "built and taken apart once per request; boxing would cost an allocation"
)]
enum Prepared<F> {
    /// Answered without an upstream (`builtin:echo`).
    Answered(Response<AnswerBody>),
    /// Handed to the upstream group: `sent` resolves to its answer.
    Sent {
        sent: F,
        client_upgrade: Option<upgrade::ClientUpgrade>,
    },
}

/// The path and query below the target's base path: the decided path, with
/// the route prefix removed when the route says `strip_prefix`, and the
/// query as sent. Usually that is the request's own target, shared as it is.
fn upstream_target(
    route: &RouteConfig,
    path: &DecidedPath,
    query: Option<&str>,
) -> Result<PathAndQuery, GatewayError> {
    if let Some(target) = path.target_as_sent().filter(|_| !strips_prefix(route)) {
        return Ok(target.clone());
    }
    let path = upstream_path(route, path);
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    // A decided path and a query hyper accepted always make a valid target.
    PathAndQuery::try_from(target).map_err(GatewayError::internal)
}

fn strips_prefix(route: &RouteConfig) -> bool {
    route.strip_prefix && route.upstream != Upstream::Echo
}

/// The decided path, with the route prefix removed when the route says
/// `strip_prefix`.
fn upstream_path<'a>(route: &RouteConfig, path: &'a DecidedPath) -> &'a str {
    let path = path.as_str();
    if !strips_prefix(route) {
        return path;
    }
    let bare = route.path_prefix.trim_end_matches('/');
    match path.strip_prefix(bare) {
        Some("") | None => "/",
        Some(rest) => rest,
    }
}

/// Answers that may outlive a revocation by more than a moment: without a
/// length (SSE, chunked, gRPC streams) or longer than this many bytes.
/// Shorter ones end on their own and are not worth a watch.
const STREAMED_ABOVE: u64 = 64 * 1024;

fn is_streamed(headers: &http::HeaderMap) -> bool {
    content_length(headers).is_none_or(|length| length > STREAMED_ABOVE)
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Tells a failed upstream exchange apart: our own body limits first, then
/// everything else is the upstream's fault (502/503/504), never the client's.
fn classify_upstream_error(err: UpstreamError, timeout: std::time::Duration) -> GatewayError {
    match err {
        UpstreamError::Timeout => return GatewayError::UpstreamTimeout(timeout),
        UpstreamError::NoHealthyTarget => return GatewayError::NoHealthyUpstream,
        UpstreamError::Busy { .. } => return GatewayError::UpstreamBusy(Box::new(err)),
        _ => {}
    }
    classify_client_error(err)
}

/// Walks the cause chain for a [`ForwardBodyError`]: the client's body, not
/// the upstream, ended the exchange.
fn classify_client_error(err: UpstreamError) -> GatewayError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = source {
        if let Some(body_err) = cause.downcast_ref::<ForwardBodyError>() {
            return match body_err {
                ForwardBodyError::TooLarge { .. } => GatewayError::PayloadTooLarge,
                ForwardBodyError::Stalled(_) => GatewayError::RequestTimeout,
                ForwardBodyError::Client(_) => GatewayError::BadRequest("request body was cut off"),
            };
        }
        source = cause.source();
    }
    GatewayError::UpstreamUnavailable(Box::new(err))
}

/// Why the proxy could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum ProxySetupError {
    #[error("invalid [server] identity_header_prefix: {0}")]
    IdentityPrefix(#[from] http::header::InvalidHeaderName),
    #[error("route {route:?}: {source}")]
    Route {
        route: String,
        #[source]
        source: UpstreamSetupError,
    },
}
