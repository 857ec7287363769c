//! The `Set-Cookie` values of the browser session and the form token. The
//! session cookie is `HttpOnly; Secure; SameSite=Lax; Path=/` with no
//! `Domain`, as its `__Host-` prefix requires (RFC 6265bis §4.1.3.2): Lax,
//! not Strict, so following a link to a protected page from elsewhere
//! arrives signed in, while cross-site POSTs carry no session.

use std::time::Duration;

use http::HeaderValue;

use crate::auth::sessions::cookies::{FORM_COOKIE, SESSION_COOKIE};

pub(super) fn session(value: &str, max_age: Duration) -> Option<HeaderValue> {
    let seconds = max_age.as_secs();
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={seconds}; HttpOnly; Secure; SameSite=Lax"
    ))
    .ok()
}

pub(super) fn clear_session() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-authgate_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
    )
}

/// The form token lives as long as the browser session (no Max-Age);
/// Strict: only this site's own pages ever post it.
pub(super) fn form(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{FORM_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict"
    ))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cleared_cookie_names_the_session_cookie() {
        let cleared = clear_session();
        assert!(cleared
            .to_str()
            .unwrap()
            .starts_with(&format!("{SESSION_COOKIE}=;")));
    }
}
