//! The per-request entry point hyper calls. It decides everything about a
//! request once — host, path, route, caller — then hands it to the account
//! endpoints or the proxy, turns any error into its JSON answer, and writes
//! the one access-log line. Each request gets its id (`request_id.rs`)
//! here, on its span, upstream and in the answer.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{AUTHORIZATION, HOST, SET_COOKIE, UPGRADE};
use http::{HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::api::AccountOutcome;
use crate::audit::{self, RequestContext};
use crate::auth::keys::{KeySet, JWKS_MAX_AGE_SECS, JWKS_PATH};
use crate::auth::token_memo::TokenMemo;
use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::config::{RouteAuth, RouteConfig};
use crate::error::GatewayError;
use crate::gateway::{Gateway, Live};
use crate::observe::metrics::AccountAction;
use crate::path;
use crate::proxy::answer::AnswerBody;
use crate::proxy::client_addr::client_address;
use crate::proxy::headers::ClientSide;
use crate::proxy::upgrade;
use crate::proxy::Caller;
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::router;
use crate::web;

mod credential;

/// What the gateway knows about the connection a request came on; each
/// request shares it (one reference count, where a copy cost one for each
/// shared part).
pub struct Connection {
    pub peer: SocketAddr,
    /// The peer's IP address as a header value (`X-Real-IP`,
    /// `X-Forwarded-For`), written out once per connection.
    pub peer_header: HeaderValue,
    /// The peer is a configured trusted proxy: its X-Forwarded-* are kept.
    pub peer_trusted: bool,
    /// The access token this connection presented last, verified.
    pub tokens: TokenMemo,
    /// Held here so a request counts a reference to its connection only:
    /// a count of its own on the gateway would be one memory location that
    /// every request on every worker writes to, twice.
    pub gateway: Arc<Gateway>,
}

impl Connection {
    pub fn new(peer: SocketAddr, peer_trusted: bool, gateway: Arc<Gateway>) -> Self {
        // An IP address's text is always a valid header value.
        let peer_header = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer,
            peer_header,
            peer_trusted,
            tokens: TokenMemo::default(),
            gateway,
        }
    }
}

/// What the access log reports about a request, filled in as it is decided.
#[derive(Default)]
struct Outcome<'live> {
    /// Borrowed from the request's live configuration: a count of its own
    /// would be one more location every request on every worker writes.
    route: Option<&'live RouteConfig>,
    /// The request went to the account endpoints rather than a route.
    account: bool,
    user: Option<Arc<str>>,
    /// The account endpoint, for the outcome metrics.
    action: Option<AccountAction>,
    /// When the upstream was asked, if it was: it has answered (or failed)
    /// by the time the request's answer is counted.
    asked: Option<Instant>,
}

impl Outcome<'_> {
    fn route_name(&self) -> &str {
        match &self.route {
            Some(route) => &route.name,
            None if self.account => "auth",
            None => "-",
        }
    }
}

/// Handles one request; never fails, so hyper never drops a connection for us.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps a second copy of its arguments in its state (rust-lang/rust#62958)"
)]
pub fn handle(
    connection: Arc<Connection>,
    mut request: Request<Incoming>,
) -> impl Future<Output = Result<Response<AnswerBody>, Infallible>> + Send {
    async move {
        let gateway = &connection.gateway;
        let started = Instant::now();
        let request_id = RequestId::for_request(request.headers(), connection.peer_trusted);
        // Replaces whatever the client sent: the upstream sees the id we log.
        request
            .headers_mut()
            .insert(X_REQUEST_ID, request_id.header().clone());
        let method = request.method().clone();
        let grpc = crate::error::is_grpc(request.headers());
        // Every line logged while serving this request carries these fields;
        // route and user are filled in once decided.
        let span = tracing::info_span!(
            "request",
            request_id = request_id.as_str(),
            method = %method,
            peer = %connection.peer.ip(),
            route = tracing::field::Empty,
            user = tracing::field::Empty,
        );
        // The routes and limits this request lives with to its end, even if a
        // reload installs others meanwhile.
        let live = gateway.live();
        let mut outcome = Outcome::default();
        let result = dispatch(gateway, &live, &connection, request, &span, &mut outcome)
            .instrument(span.clone())
            .await;
        let metrics = gateway.observability().metrics();
        metrics.record_result(&result, outcome.action);
        let mut response = match result {
            Ok(response) => response,
            Err(err) => {
                let _in_request = span.enter();
                if err.is_server_fault() {
                    tracing::error!(error = %error_chain(&err), "request failed");
                } else {
                    tracing::debug!(reason = %err, "request refused");
                }
                err.into_response_for(grpc).map(AnswerBody::from)
            }
        };
        let status = response.status();
        // One clock reading ends both the request's time and the upstream's.
        let ended = Instant::now();
        let elapsed = ended.saturating_duration_since(started);
        let upstream = outcome
            .asked
            .map(|asked| ended.saturating_duration_since(asked));
        metrics.record_request(outcome.route, outcome.account, status, elapsed, upstream);
        if live.config.server.access_log {
            tracing::info!(
                target: "authgate::access",
                method = %method,
                route = outcome.route_name(),
                status = response.status().as_u16(),
                latency_us = elapsed.as_micros() as u64,
                user = outcome.user.as_deref().unwrap_or("-"),
                peer = %connection.peer.ip(),
                request_id = request_id.as_str(),
            );
        }
        response
            .headers_mut()
            .insert(X_REQUEST_ID, request_id.header().clone());
        Ok(response)
    }
}

#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps a second copy of its arguments in its state (rust-lang/rust#62958)"
)]
fn dispatch<'a, 'live>(
    gateway: &'a Gateway,
    live: &'live Live,
    connection: &'a Connection,
    request: Request<Incoming>,
    // This request's span, to record route and user on: cheaper than
    // looking up the current one.
    span: &'a tracing::Span,
    outcome: &'a mut Outcome<'live>,
) -> impl Future<Output = Result<Response<AnswerBody>, GatewayError>> + use<'a, 'live> {
    async move {
        check_request_line(live, &request)?;
        // The one clock reading every time-dependent decision of this request uses.
        let now = SystemTime::now();
        let host = {
            let headers = &mut request
                .headers()
                .get_all(HOST)
                .iter()
                .map(|v| v.to_str().unwrap_or("\u{0}"));
            let authority = match request.version() {
                Version::HTTP_2 => request.uri().authority().map(|a| a.as_str()),
                _ => None,
            };
            router::request_host(authority, headers).map_err(GatewayError::BadRequest)?
        };
        let decided = path::decide_target(request.uri()).map_err(GatewayError::InvalidPath)?;
        // Decided once: the throttle keys on it and the upstream gets it as X-Real-IP.
        let client_addr = client_address(
            connection.peer.ip(),
            connection.peer_trusted,
            request.headers(),
            &live.config.server.trusted_proxies,
        );

        // The gateway's public keys, ahead of every route (RFC 8615 well-known URI).
        if decided.as_str() == JWKS_PATH {
            return jwks(&gateway.keys().current(), request.method())
                .map(|response| response.map(AnswerBody::from));
        }

        if gateway.is_account_path(decided.as_str()) {
            outcome.account = true;
            let sub_path = gateway.account_sub_path(decided.as_str());
            let mut account = AccountOutcome::default();
            // The id `handle` put on the request, for the audit lines it causes.
            let request_id = request
                .headers()
                .get(X_REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .map(Arc::from);
            let context = RequestContext {
                client: client_addr,
                request_id,
            };
            // The account endpoints and pages are boxed: they are the rare
            // requests, and unboxed their state (up to ~4 KiB) would size every
            // proxied request's future too, copied each time it moves.
            // The browser pages share the prefix and the audit context.
            if let Some(page) = web::Page::parse(sub_path) {
                return audit::in_request(
                    context,
                    Box::pin(web::serve(page, gateway, request, client_addr, now)),
                )
                .await
                .map(|response| response.map(AnswerBody::from));
            }
            let result = audit::in_request(
                context,
                Box::pin(gateway.accounts().handle(
                    request,
                    sub_path,
                    client_addr,
                    gateway.authenticator(),
                    now,
                    &mut account,
                )),
            )
            .await;
            outcome.action = account.action;
            if let Some(user) = &account.user {
                span.record("user", tracing::field::display(user));
            }
            outcome.user = account.user.map(Arc::from);
            return result.map(|response| response.map(AnswerBody::from));
        }

        let route = live
            .router
            .route(host.as_deref(), decided.as_str())
            .ok_or(GatewayError::NotFound)?;
        span.record("route", tracing::field::display(&route.name));
        outcome.route = Some(route);

        if request.headers().contains_key(UPGRADE)
            && !(route.websocket && upgrade::is_websocket_handshake(&request))
        {
            // h2c and other protocol switches would let a client talk past the
            // gateway on a connection it authorized once (h2c smuggling).
            return Err(GatewayError::BadRequest(
                "protocol upgrades are not allowed on this route",
            ));
        }

        // A browser session cookie re-issued on the way, for the answer.
        let mut session_cookie = None;
        let identity: Option<Identity> = match route.auth {
            RouteAuth::Public => None,
            RouteAuth::Required => {
                let mut identity = if route.browser
                    && !request.headers().contains_key(AUTHORIZATION)
                {
                    // Boxed, as the account endpoints are: the browser gate's
                    // state (~700 bytes) would otherwise size every request's
                    // future, copied whole each time it moves.
                    match Box::pin(web::authenticate(gateway, &request, now)).await? {
                        web::Gate::Allow {
                            identity,
                            set_cookie,
                        } => {
                            session_cookie = set_cookie;
                            identity
                        }
                        web::Gate::SignIn(redirect) => return Ok(redirect.map(AnswerBody::from)),
                    }
                } else {
                    // A bearer credential (access token, or API key where the
                    // route takes them) wins over the browser cookie.
                    credential::authenticate(
                        gateway,
                        route,
                        request.headers(),
                        client_addr,
                        &connection.tokens,
                        now,
                    )?
                };
                span.record("user", tracing::field::display(&identity.user_id));
                outcome.user = Some(identity.user_id.shared());
                if let Some(roles) = &route.roles {
                    if !roles.contains(&identity.role) {
                        return Err(GatewayError::Forbidden);
                    }
                }
                if route.identity_assertion {
                    identity.assertion = Some(assertion(gateway, route, &identity, now)?);
                }
                Some(identity)
            }
        };

        // The Host value is shared, not copied; one that is not visible ASCII
        // is not repeated upstream, and the request target's authority stands
        // in for it, as for a request without Host.
        let host = request
            .headers()
            .get(HOST)
            .filter(|host| host.to_str().is_ok())
            .cloned()
            .or_else(|| {
                let authority = request.uri().authority()?;
                HeaderValue::from_str(authority.as_str()).ok()
            });
        let client = ClientSide {
            peer: connection.peer.ip(),
            peer_header: &connection.peer_header,
            peer_trusted: connection.peer_trusted,
            client: client_addr,
            host,
        };
        let asked = Instant::now();
        outcome.asked = Some(asked);
        // Boxed: the forwarding state (~1.6 KiB) would otherwise be part of this
        // future and of every future wrapping it, each copied whole when built.
        let mut result = Box::pin(live.proxy.forward(
            request,
            route,
            &decided,
            identity.as_ref().map(|identity| Caller {
                identity,
                revocations: gateway.revocations(),
            }),
            &client,
            asked,
        ))
        .await;
        if let (Ok(response), Some(cookie)) = (&mut result, session_cookie) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        result
    }
}

/// The signed identity assertion for `route`, reused while fresh.
fn assertion(
    gateway: &Gateway,
    route: &RouteConfig,
    identity: &Identity,
    now: SystemTime,
) -> Result<http::HeaderValue, GatewayError> {
    // Startup and reload refuse an HMAC signing key when a route asserts.
    Ok(gateway.keys().current().assertion(
        &gateway.config().tokens.issuer,
        &route.name,
        identity,
        crate::timestamp::unix_seconds(now),
    )?)
}

/// `GET /.well-known/jwks.json`: the public keys that verify (published and
/// active, never HMAC ones) as a JWK Set (RFC 7517 §5).
fn jwks(keys: &KeySet, method: &Method) -> Result<Response<ResponseBody>, GatewayError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed);
    }
    let mut response = Response::new(ResponseBody::full(keys.jwks().clone()));
    let headers = response.headers_mut();
    // RFC 7517 §8.5.1.
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/jwk-set+json"),
    );
    if let Ok(value) = format!("public, max-age={JWKS_MAX_AGE_SECS}").parse() {
        headers.insert(http::header::CACHE_CONTROL, value);
    }
    Ok(response)
}

/// Refuses request lines a reverse proxy must not act on.
fn check_request_line<B>(live: &Live, request: &Request<B>) -> Result<(), GatewayError> {
    if request.method() == Method::CONNECT {
        // Never an open proxy: no tunnels to arbitrary hosts.
        return Err(GatewayError::MethodNotAllowed);
    }
    // HTTP/1 absolute-form targets (`GET http://other/ HTTP/1.1`) are what a
    // forward proxy receives; a gateway refuses them rather than choose
    // between the target's host and the Host header (RFC 9112 §3.2.2).
    if request.version() != Version::HTTP_2 && request.uri().scheme().is_some() {
        return Err(GatewayError::BadRequest(
            "absolute-form request targets are not accepted",
        ));
    }
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > live.config.server.max_uri_bytes {
        return Err(GatewayError::UriTooLong);
    }
    Ok(())
}

/// "outer: middle: inner" for an error and its sources. A cause whose text
/// the line already ends with (an error that shows its source in its own
/// message) is not repeated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::sessions::SessionError;
    use crate::store::StoreError;

    #[test]
    fn a_failed_rotation_is_logged_with_its_cause_once() {
        let cause = StoreError::Corrupt("a chain without its key".to_owned());
        let err = GatewayError::from(SessionError::RotationFailed(Arc::new(cause)));
        assert!(err.is_server_fault());
        assert_eq!(
            error_chain(&err),
            "internal error: refresh rotation failed: \
             undecodable record in the database: a chain without its key"
        );
    }

    #[test]
    fn a_rotation_that_found_the_database_down_names_why() {
        let cause = StoreError::Unavailable("pool timed out".into());
        let err = GatewayError::from(SessionError::StoreUnavailable(Arc::new(cause)));
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            error_chain(&err),
            "store unavailable: refresh rotation failed: \
             database unavailable: pool timed out"
        );
    }
}
