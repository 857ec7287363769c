//! The pages under `[auth] path_prefix`: `GET/POST /sign-in`,
//! `POST /sign-out`, and `GET/POST /sign-up` while registration is open.
//! Sign-in and sign-up go through the very calls `/auth/login` and
//! `/auth/register` make (`Accounts::sign_in`, `Accounts::sign_up`), so
//! throttling, lockout, hashing, audit events and metrics are the same; a
//! failure is shown on the form with its status and the one fixed message
//! `error.rs` gives it (401 "Email or password is incorrect." for an
//! unknown email and a wrong password alike).

use std::net::IpAddr;
use std::time::SystemTime;

use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::form::{self, field};
use super::gate::{policy, same_origin};
use super::html::{self, FormPage, Kind};
use super::{cookie, redirect};
use crate::api::request::{cookie as request_cookie, read_body};
use crate::api::views::Credentials;
use crate::auth::browser_session::{self, Claims};
use crate::auth::sessions::cookies::SESSION_COOKIE;
use crate::auth::sessions::IssuedSession;
use crate::body::ResponseBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::observe::metrics::AccountAction;
use crate::timestamp::unix_seconds;

/// A page, recognised from the path below the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Named after their paths (/auth/sign-in, …), which share the prefix.
#[allow(clippy::enum_variant_names)]
pub(crate) enum Page {
    SignIn,
    SignOut,
    SignUp,
}

impl Page {
    pub(crate) fn parse(sub_path: &str) -> Option<Self> {
        match sub_path.trim_end_matches('/') {
            "/sign-in" => Some(Self::SignIn),
            "/sign-out" => Some(Self::SignOut),
            "/sign-up" => Some(Self::SignUp),
            _ => None,
        }
    }
}

/// Serves `page`. `client` is the address the throttle counts.
pub(crate) async fn serve(
    page: Page,
    gateway: &Gateway,
    request: Request<Incoming>,
    client: IpAddr,
    now: SystemTime,
) -> Result<Response<ResponseBody>, GatewayError> {
    let (parts, body) = request.into_parts();
    if page == Page::SignUp && !gateway.accounts().registration_open() {
        return Err(GatewayError::NotFound);
    }
    let kind = match page {
        Page::SignIn => Kind::SignIn,
        Page::SignUp => Kind::SignUp,
        Page::SignOut if parts.method == Method::POST => {
            return sign_out(gateway, &parts, body).await;
        }
        Page::SignOut => return Err(GatewayError::MethodNotAllowed),
    };
    match parts.method {
        Method::GET | Method::HEAD => Ok(show(gateway, kind, &parts, now)),
        Method::POST => submit(gateway, kind, &parts, body, client, now).await,
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

/// The empty form; the form token cookie is set if the browser lacks one.
fn show(gateway: &Gateway, kind: Kind, parts: &Parts, now: SystemTime) -> Response<ResponseBody> {
    let query = form::parse(parts.uri.query().unwrap_or_default());
    let rd = redirect::safe_target(field(&query, "rd").unwrap_or("/"));
    let (token, new) = form::token(&parts.headers);
    let signed_in = request_cookie(&parts.headers, SESSION_COOKIE).is_some_and(|value| {
        let keys = gateway.keys().current();
        browser_session::verify(value, &keys, gateway.revocations(), &policy(gateway), now).is_ok()
    });
    let html = page(gateway, kind, &token, rd, "", None, signed_in);
    html::response(
        StatusCode::OK,
        html,
        new.then(|| cookie::form(&token)).flatten(),
    )
}

/// A posted form: the form token, then the same call as the JSON endpoint.
async fn submit(
    gateway: &Gateway,
    kind: Kind,
    parts: &Parts,
    body: Incoming,
    client: IpAddr,
    now: SystemTime,
) -> Result<Response<ResponseBody>, GatewayError> {
    let config = gateway.config();
    let body = read_body(
        &parts.headers,
        body,
        config.auth.max_body,
        config.server.body_read_timeout,
    )
    .await?;
    let fields = form::parse(&String::from_utf8_lossy(&body));
    let rd = redirect::safe_target(field(&fields, "rd").unwrap_or("/"));
    let email = field(&fields, "email").unwrap_or_default();
    let (token, _) = form::token(&parts.headers);
    if !form::token_matches(&parts.headers, &fields) {
        // A new token in a fresh cookie: the reloaded form then works.
        let (token, _) = form::token(&http::HeaderMap::new());
        let err = GatewayError::CrossSite;
        let html = page(gateway, kind, &token, rd, email, Some(err.message()), false);
        return Ok(html::response(err.status(), html, cookie::form(&token)));
    }
    let credentials = Credentials {
        email: email.to_owned(),
        password: field(&fields, "password").unwrap_or_default().to_owned(),
    };
    let accounts = gateway.accounts();
    let (action, result) = match kind {
        Kind::SignIn => (
            AccountAction::Login,
            accounts.sign_in(credentials, client).await,
        ),
        Kind::SignUp => (
            AccountAction::Register,
            accounts.sign_up(credentials, client).await,
        ),
    };
    let metrics = gateway.observability().metrics();
    match result {
        Ok(session) => {
            let response = start(gateway, &session, rd, now)?;
            let counted: Result<Response<()>, GatewayError> = Ok(Response::new(()));
            metrics.record_result(&counted, Some(action));
            Ok(response)
        }
        Err(err) => {
            if err.is_server_fault() {
                tracing::error!(error = %err, "browser sign-in failed");
            }
            let html = page(gateway, kind, &token, rd, email, Some(err.message()), false);
            let response = html::response(err.status(), html, None);
            // Counted as the JSON endpoint counts it: same action, same code.
            let counted: Result<Response<()>, GatewayError> = Err(err);
            metrics.record_result(&counted, Some(action));
            Ok(response)
        }
    }
}

/// The session cookie for a session just started, and the way on to `rd`.
fn start(
    gateway: &Gateway,
    session: &IssuedSession,
    rd: &str,
    now: SystemTime,
) -> Result<Response<ResponseBody>, GatewayError> {
    let now_secs = unix_seconds(now);
    let claims = Claims {
        sid: session.family_id.clone(),
        sub: session.user.id.clone(),
        role: session.user.role.clone(),
        ver: session.user.token_version,
        iat: now_secs,
        // The store session ends (and is swept) at the same second.
        exp: now_secs.saturating_add(gateway.config().tokens.session_max_age.as_secs()),
    };
    let value = browser_session::mint(&claims, &gateway.keys().current())?;
    let max_age = browser_session::max_age(&claims, &policy(gateway), now);
    Ok(html::see_other(rd, cookie::session(&value, max_age)))
}

/// Ends the browser's session in the store (so on every instance at once)
/// and clears the cookie. Only this origin's pages may ask: by Fetch
/// Metadata or Origin, or with the form token.
async fn sign_out(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<ResponseBody>, GatewayError> {
    let request = Request::from_parts(parts.clone(), ());
    if !same_origin(&request) {
        let config = gateway.config();
        let body = read_body(
            &parts.headers,
            body,
            config.auth.max_body,
            config.server.body_read_timeout,
        )
        .await?;
        let fields = form::parse(&String::from_utf8_lossy(&body));
        if !form::token_matches(&parts.headers, &fields) {
            return Err(GatewayError::CrossSite);
        }
    }
    if let Some(value) = request_cookie(&parts.headers, SESSION_COOKIE) {
        // Idle or not, the session named is ended.
        if let Ok(claims) = browser_session::open(value, &gateway.keys().current()) {
            gateway
                .accounts()
                .end_browser_session(&claims.sid, &claims.sub)
                .await?;
        }
    }
    let location = format!("{}/sign-in", gateway.config().auth.path_prefix);
    Ok(html::see_other(&location, Some(cookie::clear_session())))
}

fn page(
    gateway: &Gateway,
    kind: Kind,
    csrf: &str,
    rd: &str,
    email: &str,
    message: Option<&str>,
    signed_in: bool,
) -> String {
    let config = gateway.config();
    FormPage {
        kind,
        title: &config.web.title,
        prefix: &config.auth.path_prefix,
        csrf,
        rd,
        email,
        message,
        offer_sign_up: gateway.accounts().registration_open(),
        signed_in,
    }
    .render()
}
