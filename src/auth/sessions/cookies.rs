//! The cookies that carry a session to a browser: the refresh token and the
//! CSRF token derived from it. The account endpoints set and clear them
//! (`api/response.rs`); the proxy keeps them from upstreams both ways
//! (`proxy/headers.rs`), reading [`GATEWAY_COOKIES`] from here.

/// The refresh token. The `__Secure-` prefix makes browsers accept it only
/// with `Secure` from an HTTPS origin (RFC 6265bis §4.1.3.1).
pub const REFRESH_COOKIE: &str = "__Secure-authgate_refresh";

/// The CSRF token of the double-submit check, readable by the page's script.
pub const CSRF_COOKIE: &str = "authgate_csrf";

/// The browser session on `browser = true` routes (`auth::browser_session`).
/// The `__Host-` prefix holds it to this host, `Secure` and `Path=/`: a
/// sibling domain cannot plant or overwrite it (RFC 6265bis §4.1.3.2).
pub const SESSION_COOKIE: &str = "__Host-authgate_session";

/// The sign-in form's own CSRF token (double submit), set before any session.
pub const FORM_COOKIE: &str = "__Host-authgate_form";

/// Every cookie the gateway sets for itself: never forwarded to an
/// upstream, never accepted from one.
pub const GATEWAY_COOKIES: [&str; 4] = [REFRESH_COOKIE, CSRF_COOKIE, SESSION_COOKIE, FORM_COOKIE];
