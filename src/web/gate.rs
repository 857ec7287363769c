//! Who is calling on a `browser = true` route: a bearer token when the
//! request has one (it wins), else the browser session cookie. Without
//! either, a top-level navigation is sent to the sign-in page and anything
//! else gets the usual 401. A cookie-authenticated request that changes
//! state must prove it comes from this origin (the cookie alone would ride
//! along on a form another site submits).

use std::time::SystemTime;

use http::header::{ACCEPT, HOST, ORIGIN};
use http::{HeaderValue, Method, Request, Response};

use super::{cookie, html, redirect};
use crate::api::request::cookie as request_cookie;
use crate::auth::browser_session::{self, BrowserError, BrowserPolicy};
use crate::auth::sessions::cookies::SESSION_COOKIE;
use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;

/// The outcome of [`authenticate`] when it is not an error answer.
pub(crate) enum Gate {
    /// Go on to the upstream as `identity`; a re-issued session cookie, if
    /// any, goes back with the upstream's answer.
    Allow {
        identity: Identity,
        set_cookie: Option<HeaderValue>,
    },
    /// Answer with this redirect to the sign-in page.
    SignIn(Response<ResponseBody>),
}

/// The lifetimes browser sessions are held to, from the configuration.
pub(super) fn policy(gateway: &Gateway) -> BrowserPolicy {
    let config = gateway.config();
    BrowserPolicy {
        idle_timeout: config.web.session_idle_timeout,
        recheck_after: config.tokens.access_ttl,
    }
}

/// The browser session of a request to a `browser = true` route. A request
/// with an Authorization header never comes here: the service authenticates
/// it as a bearer credential, which wins over the cookie.
pub(crate) async fn authenticate<B>(
    gateway: &Gateway,
    request: &Request<B>,
    now: SystemTime,
) -> Result<Gate, GatewayError> {
    let headers = request.headers();
    let Some(value) = request_cookie(headers, SESSION_COOKIE) else {
        return refuse(gateway, request, None);
    };
    let policy = policy(gateway);
    let keys = gateway.keys().current();
    let verified = match browser_session::verify(value, &keys, gateway.revocations(), &policy, now)
    {
        Ok(verified) => verified,
        Err(err) => return refuse(gateway, request, Some(err)),
    };
    if !is_safe_method(request.method()) && !same_origin(request) {
        return Err(GatewayError::CrossSite);
    }
    if !verified.due {
        return Ok(Gate::Allow {
            identity: verified.identity,
            set_cookie: None,
        });
    }
    let store = gateway.accounts().store();
    let claims = match browser_session::recheck(store.as_ref(), verified.claims, now).await {
        Ok(claims) => claims,
        Err(err) => return refuse(gateway, request, Some(err)),
    };
    let identity = browser_session::identity(&claims, &policy)?;
    let value = browser_session::mint(&claims, &keys)?;
    Ok(Gate::Allow {
        identity,
        set_cookie: cookie::session(&value, browser_session::max_age(&claims, &policy, now)),
    })
}

/// No usable credential: a navigation goes to sign in (dropping a cookie
/// that ended), anything else gets the error. A revocation list too stale
/// to trust, or a store that cannot answer, is reported as such, never
/// turned into a sign-in that could not help.
fn refuse<B>(
    gateway: &Gateway,
    request: &Request<B>,
    failure: Option<BrowserError>,
) -> Result<Gate, GatewayError> {
    let ended = match &failure {
        None => false,
        Some(err) if err.ends_session() => true,
        Some(_) => return Err(failure.map_or(GatewayError::MissingToken, Into::into)),
    };
    if !is_navigation(request) {
        return Err(failure.map_or(GatewayError::MissingToken, Into::into));
    }
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = redirect::sign_in_location(&gateway.config().auth.path_prefix, target);
    let clear = ended.then(cookie::clear_session);
    Ok(Gate::SignIn(html::see_other(&location, clear)))
}

/// A top-level navigation: a GET or HEAD whose Accept names HTML.
fn is_navigation<B>(request: &Request<B>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && request
            .headers()
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// Methods that must not change state (RFC 9110 §9.2.1).
fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request says it comes from this origin: `Sec-Fetch-Site:
/// same-origin` (Fetch Metadata), or an `Origin` (RFC 6454 §7) of https
/// and the very host the request was sent to.
pub(super) fn same_origin<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"same-origin"))
    {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(HOST).and_then(|v| v.to_str().ok()));
    match (origin.strip_prefix("https://"), host) {
        (Some(origin_host), Some(host)) => {
            without_default_port(origin_host).eq_ignore_ascii_case(without_default_port(host))
        }
        _ => false,
    }
}

fn without_default_port(authority: &str) -> &str {
    authority.strip_suffix(":443").unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri("/dash/x");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn origin_must_be_this_host_over_https() {
        let host = ("host", "gw.example:8443");
        for (headers, expected) in [
            (vec![host, ("origin", "https://gw.example:8443")], true),
            (vec![host, ("origin", "https://GW.example:8443")], true),
            (vec![host, ("sec-fetch-site", "same-origin")], true),
            (vec![host, ("origin", "http://gw.example:8443")], false),
            (vec![host, ("origin", "https://evil.example")], false),
            (vec![host, ("origin", "https://gw.example:8444")], false),
            (
                vec![host, ("origin", "https://gw.example:8443.evil")],
                false,
            ),
            (vec![host, ("origin", "null")], false),
            (vec![host, ("sec-fetch-site", "same-site")], false),
            (vec![host, ("sec-fetch-site", "cross-site")], false),
            (vec![host], false),
            (
                vec![("host", "gw.example:443"), ("origin", "https://gw.example")],
                true,
            ),
        ] {
            assert_eq!(
                same_origin(&request(Method::POST, &headers)),
                expected,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn navigations_are_html_gets() {
        let html = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
        assert!(is_navigation(&request(Method::GET, &[html])));
        assert!(is_navigation(&request(Method::HEAD, &[html])));
        assert!(!is_navigation(&request(Method::POST, &[html])));
        assert!(!is_navigation(&request(
            Method::GET,
            &[("accept", "application/json")]
        )));
        assert!(!is_navigation(&request(Method::GET, &[])));
    }
}
