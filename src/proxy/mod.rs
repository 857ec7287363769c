//! Forwarding an authorized request to its route's upstream and streaming the
//! answer back. Bodies are never buffered: the client's body is handed to the
//! pooled client frame by frame, and the upstream's body is handed to hyper.

pub mod client;
pub mod client_addr;
pub mod echo;
pub mod headers;
pub mod upgrade;

use std::error::Error as _;

use http::header::CONTENT_LENGTH;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::auth::Identity;
use crate::body::{ForwardBody, ForwardBodyError, ResponseBody};
use crate::config::{RouteConfig, Upstream};
use crate::error::GatewayError;
use crate::path::DecidedPath;
use client::UpstreamClient;
use headers::{ClientSide, IdentityHeaders, IdentityScrubber, RouteHeaderPolicy};

/// Shared forwarding machinery: the connection pool and the header policy.
pub struct Proxy {
    client: UpstreamClient,
    scrubber: IdentityScrubber,
    names: IdentityHeaders,
    body_stall_timeout: std::time::Duration,
}

impl Proxy {
    pub fn new(
        identity_prefix: &str,
        body_stall_timeout: std::time::Duration,
    ) -> Result<Self, http::header::InvalidHeaderName> {
        Ok(Self {
            client: client::build(),
            scrubber: IdentityScrubber::new(identity_prefix),
            names: IdentityHeaders::new(identity_prefix)?,
            body_stall_timeout,
        })
    }

    pub fn scrubber(&self) -> &IdentityScrubber {
        &self.scrubber
    }

    /// Sends `request` to `route`'s upstream at the decided path.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        route: &RouteConfig,
        path: &DecidedPath,
        identity: Option<&Identity>,
        client: &ClientSide<'_>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        // The service admits a handshake only on routes that allow WebSockets.
        let client_upgrade = upgrade::is_websocket_handshake(&request)
            .then(|| upgrade::take_client_upgrade(&mut request));
        let (mut parts, body) = request.into_parts();
        if let (Some(limit), Some(length)) = (route.max_body, content_length(&parts.headers)) {
            if length > limit {
                return Err(GatewayError::PayloadTooLarge);
            }
        }
        let policy = RouteHeaderPolicy {
            forward_authorization: route.forward_authorization,
        };
        headers::prepare_request_headers(
            &mut parts.headers,
            client,
            identity,
            &policy,
            &self.scrubber,
            &self.names,
        );
        if client_upgrade.is_some() {
            upgrade::restore_handshake_headers(&mut parts.headers);
        }
        let upstream_path = upstream_path(route, path);
        let query = parts.uri.query();
        let path_and_query = match query {
            Some(q) => format!("{upstream_path}?{q}"),
            None => upstream_path,
        };
        let (scheme, authority) = match &route.upstream {
            Upstream::Echo => {
                parts.uri = Uri::builder()
                    .path_and_query(path_and_query)
                    .build()
                    .map_err(GatewayError::internal)?;
                return Ok(echo::respond(&Request::from_parts(parts, ())));
            }
            Upstream::Http {
                scheme, authority, ..
            } => (scheme, authority),
        };
        let path_and_query =
            PathAndQuery::try_from(path_and_query).map_err(GatewayError::internal)?;
        parts.uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(GatewayError::internal)?;
        // Upstreams are spoken to in HTTP/1.1 whatever the client used.
        parts.version = Version::HTTP_11;
        let body = ForwardBody::new(
            body,
            route.max_body,
            self.body_stall_timeout,
            self.scrubber.clone(),
        );
        let request = Request::from_parts(parts, body);
        let mut response = tokio::time::timeout(route.timeout, self.client.request(request))
            .await
            .map_err(|_| GatewayError::UpstreamTimeout(route.timeout))?
            .map_err(classify_client_error)?;
        let switched = match client_upgrade {
            Some(client_upgrade) => {
                upgrade::tunnel_if_switched(client_upgrade, &mut response);
                response.status() == http::StatusCode::SWITCHING_PROTOCOLS
            }
            None => false,
        };
        let (mut parts, body) = response.into_parts();
        headers::prepare_response_headers(&mut parts.headers);
        if switched {
            upgrade::restore_handshake_headers(&mut parts.headers);
        }
        Ok(Response::from_parts(parts, ResponseBody::upstream(body)))
    }
}

/// The path the upstream receives: its base path, then the decided path with
/// the route prefix removed when the route says `strip_prefix`.
fn upstream_path(route: &RouteConfig, path: &DecidedPath) -> String {
    let path = path.as_str();
    let Upstream::Http { base_path, .. } = &route.upstream else {
        return path.to_owned();
    };
    let rest = if route.strip_prefix {
        let bare = route.path_prefix.trim_end_matches('/');
        match path.strip_prefix(bare) {
            Some("") | None => "/",
            Some(rest) => rest,
        }
    } else {
        path
    };
    format!("{base_path}{rest}")
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Tells a failed upstream exchange apart: our own body limits first, then
/// everything else is the upstream's fault (502), never the client's.
fn classify_client_error(err: hyper_util::client::legacy::Error) -> GatewayError {
    let mut source = err.source();
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
