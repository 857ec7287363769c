//! Building account-endpoint answers: JSON bodies, `Cache-Control: no-store`
//! on anything carrying tokens, and the session cookies.

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA, SET_COOKIE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::auth::sessions::cookies::{CSRF_COOKIE, REFRESH_COOKIE};
use crate::body::ResponseBody;
use crate::error::GatewayError;

pub(crate) fn json<T: Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<Response<ResponseBody>, GatewayError> {
    let body = serde_json::to_vec(value).map_err(GatewayError::internal)?;
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Account answers are personal; tokens must never sit in a cache (RFC 6749 §5.1).
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

pub(crate) fn no_content() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The session cookies: the refresh token, HttpOnly and scoped to the
/// account endpoints, and the CSRF token, readable by the page's script.
pub(crate) fn set_session_cookies(
    response: &mut Response<ResponseBody>,
    auth_prefix: &str,
    refresh_token: &str,
    csrf_token: &str,
    max_age: Duration,
) {
    let seconds = max_age.as_secs();
    let refresh = format!(
        "{REFRESH_COOKIE}={refresh_token}; Path={auth_prefix}; Max-Age={seconds}; HttpOnly; Secure; SameSite=Strict"
    );
    let csrf =
        format!("{CSRF_COOKIE}={csrf_token}; Path=/; Max-Age={seconds}; Secure; SameSite=Strict");
    append_cookie(response, &refresh);
    append_cookie(response, &csrf);
}

/// Expires both session cookies in the browser.
pub(crate) fn clear_session_cookies(response: &mut Response<ResponseBody>, auth_prefix: &str) {
    let refresh = format!(
        "{REFRESH_COOKIE}=; Path={auth_prefix}; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
    );
    let csrf = format!("{CSRF_COOKIE}=; Path=/; Max-Age=0; Secure; SameSite=Strict");
    append_cookie(response, &refresh);
    append_cookie(response, &csrf);
}

fn append_cookie(response: &mut Response<ResponseBody>, cookie: &str) {
    // Tokens are base64url and the prefix is validated at load; a value that
    // is still not a header value is skipped rather than panicking.
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}
