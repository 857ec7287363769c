//! The per-request entry point hyper calls. It decides everything about a
//! request once — host, path, route, caller — then hands it to the account
//! endpoints or the proxy, turns any error into its JSON answer, and writes
//! the one access-log line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HOST, UPGRADE};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::api::AccountOutcome;
use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::config::{RouteAuth, RouteConfig};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::path;
use crate::proxy::client_addr::client_address;
use crate::proxy::headers::ClientSide;
use crate::proxy::upgrade;
use crate::router;

/// What the gateway knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    /// The peer is a configured trusted proxy: its X-Forwarded-* are kept.
    pub peer_trusted: bool,
}

/// What the access log reports about a request, filled in as it is decided.
#[derive(Default)]
struct Outcome {
    route: Option<Arc<RouteConfig>>,
    /// The request went to the account endpoints rather than a route.
    account: bool,
    user: Option<String>,
}

impl Outcome {
    fn route_name(&self) -> &str {
        match &self.route {
            Some(route) => &route.name,
            None if self.account => "auth",
            None => "-",
        }
    }
}

/// Handles one request; never fails, so hyper never drops a connection for us.
pub async fn handle(
    gateway: Arc<Gateway>,
    connection: Connection,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let grpc = crate::error::is_grpc(request.headers());
    let mut outcome = Outcome::default();
    // Every line logged while serving this request carries these fields;
    // route and user are filled in once decided.
    let span = tracing::info_span!(
        "request",
        method = %method,
        peer = %connection.peer.ip(),
        route = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    let result = dispatch(&gateway, connection, request, &mut outcome)
        .instrument(span.clone())
        .await;
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            let _in_request = span.enter();
            if err.is_server_fault() {
                tracing::error!(error = %error_chain(&err), "request failed");
            } else {
                tracing::debug!(reason = %err, "request refused");
            }
            err.into_response_for(grpc)
        }
    };
    if gateway.access_log() {
        tracing::info!(
            target: "authgate::access",
            method = %method,
            route = outcome.route_name(),
            status = response.status().as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            user = outcome.user.as_deref().unwrap_or("-"),
            peer = %connection.peer.ip(),
        );
    }
    Ok(response)
}

async fn dispatch(
    gateway: &Gateway,
    connection: Connection,
    request: Request<Incoming>,
    outcome: &mut Outcome,
) -> Result<Response<ResponseBody>, GatewayError> {
    check_request_line(gateway, &request)?;
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
    let decided = path::decide(request.uri().path()).map_err(GatewayError::InvalidPath)?;
    // Decided once: the throttle keys on it and the upstream gets it as X-Real-IP.
    let client_addr = client_address(
        connection.peer.ip(),
        connection.peer_trusted,
        request.headers(),
        &gateway.config().server.trusted_proxies,
    );

    if gateway.is_account_path(decided.as_str()) {
        outcome.account = true;
        let sub_path = gateway.account_sub_path(decided.as_str());
        let mut account = AccountOutcome::default();
        let result = gateway
            .accounts()
            .handle(
                request,
                sub_path,
                client_addr,
                gateway.authenticator(),
                now,
                &mut account,
            )
            .await;
        if let Some(user) = &account.user {
            tracing::Span::current().record("user", tracing::field::display(user));
        }
        outcome.user = account.user;
        return result;
    }

    let route = gateway
        .router()
        .route(host.as_deref(), decided.as_str())
        .ok_or(GatewayError::NotFound)?;
    tracing::Span::current().record("route", tracing::field::display(&route.name));
    outcome.route = Some(Arc::clone(route));

    if request.headers().contains_key(UPGRADE)
        && !(route.websocket && upgrade::is_websocket_handshake(&request))
    {
        // h2c and other protocol switches would let a client talk past the
        // gateway on a connection it authorized once (h2c smuggling).
        return Err(GatewayError::BadRequest(
            "protocol upgrades are not allowed on this route",
        ));
    }

    let identity: Option<Identity> = match route.auth {
        RouteAuth::Public => None,
        RouteAuth::Required => {
            let identity = gateway
                .authenticator()
                .authenticate(request.headers(), now)?;
            tracing::Span::current().record("user", tracing::field::display(&identity.user_id));
            outcome.user = Some(identity.user_id.to_string());
            if let Some(roles) = &route.roles {
                if !roles.contains(&identity.role) {
                    return Err(GatewayError::Forbidden);
                }
            }
            Some(identity)
        }
    };

    let host_header = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    let client = ClientSide {
        peer: connection.peer.ip(),
        peer_trusted: connection.peer_trusted,
        client: client_addr,
        host: host_header.as_deref(),
    };
    gateway
        .proxy()
        .forward(request, route, &decided, identity.as_ref(), &client)
        .await
}

/// Refuses request lines a reverse proxy must not act on.
fn check_request_line<B>(gateway: &Gateway, request: &Request<B>) -> Result<(), GatewayError> {
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
    if uri_len > gateway.max_uri_bytes() {
        return Err(GatewayError::UriTooLong);
    }
    Ok(())
}

/// "outer: middle: inner" for an error and its sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
