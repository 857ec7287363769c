//! The HTML of the sign-in, sign-up and signed-in pages, and the headers
//! every page is served with. No script, no asset from anywhere: the one
//! inline stylesheet is allowed by its hash in a `default-src 'none'`
//! Content-Security-Policy. Everything interpolated goes through [`escape`].

use std::sync::LazyLock;

use base64::Engine;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, SET_COOKIE,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Response, StatusCode};

use super::form::TOKEN_FIELD;
use crate::body::ResponseBody;

/// The pages' whole stylesheet; its hash is in the CSP, so any edit here
/// is allowed automatically and nothing injected ever is.
const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;\
font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f3f4f6;color:#111827}\
main{width:100%;max-width:24rem;margin:1rem;padding:2rem;background:#fff;border-radius:.75rem;\
box-shadow:0 1px 3px rgba(0,0,0,.12)}\
h1{margin:0 0 .25rem;font-size:1.5rem}\
h2{margin:0 0 1.5rem;font-size:1rem;font-weight:400;color:#4b5563}\
label{display:block;margin:1rem 0 .25rem;font-weight:600}\
input{width:100%;padding:.625rem .75rem;font:inherit;border:1px solid #d1d5db;border-radius:.375rem}\
input:focus{outline:2px solid #2563eb;outline-offset:1px}\
button{width:100%;margin-top:1.5rem;padding:.75rem;font:inherit;font-weight:600;color:#fff;\
background:#2563eb;border:0;border-radius:.375rem;cursor:pointer}\
button:focus{outline:2px solid #1e3a8a;outline-offset:2px}\
.error{margin:0 0 1rem;padding:.75rem;color:#991b1b;background:#fee2e2;border-radius:.375rem}\
.alt{margin:1.5rem 0 0;text-align:center}\
a{color:#2563eb}";

/// `default-src 'none'` and the stylesheet's hash: no script, image, font,
/// frame or connection; forms post only here; no page may frame these.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD
        .encode(crate::digest::sha256(&[STYLE.as_bytes()]));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// Which form a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    SignIn,
    SignUp,
}

/// What a form page shows.
pub(super) struct FormPage<'a> {
    pub kind: Kind,
    /// `[web] title`.
    pub title: &'a str,
    /// `[auth] path_prefix`.
    pub prefix: &'a str,
    pub csrf: &'a str,
    /// The validated target after signing in.
    pub rd: &'a str,
    /// Refilled after a failure, so only the password is typed again.
    pub email: &'a str,
    /// The one message of a failed attempt.
    pub message: Option<&'a str>,
    /// Offer the sign-up page (registration is open).
    pub offer_sign_up: bool,
    /// A valid session cookie came with the request.
    pub signed_in: bool,
}

impl FormPage<'_> {
    pub(super) fn render(&self) -> String {
        let (heading, action, button, password_autocomplete) = match self.kind {
            Kind::SignIn => ("Sign in", "sign-in", "Sign in", "current-password"),
            Kind::SignUp => (
                "Create an account",
                "sign-up",
                "Create account",
                "new-password",
            ),
        };
        let prefix = escape(self.prefix);
        let rd = escape(self.rd);
        let rd_query = escape(&super::redirect::rd_query(self.rd));
        let mut html = head(self.title, heading);
        if self.signed_in && self.kind == Kind::SignIn {
            html.push_str(&format!(
                "<p>You are already signed in. <a href=\"{rd}\">Continue</a></p>\
                 <form method=\"post\" action=\"{prefix}/sign-out\">\
                 <input type=\"hidden\" name=\"{TOKEN_FIELD}\" value=\"{csrf}\">\
                 <button type=\"submit\" id=\"sign-out\">Sign out</button></form>\
                 <p class=\"alt\">Or sign in as someone else:</p>",
                csrf = escape(self.csrf),
            ));
        }
        if let Some(message) = self.message {
            html.push_str(&format!(
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                escape(message)
            ));
        }
        // Focus where typing starts: the email, or the password once the
        // email is refilled.
        let (email_focus, password_focus) = if self.email.is_empty() {
            (" autofocus", "")
        } else {
            ("", " autofocus")
        };
        html.push_str(&format!(
            "<form method=\"post\" action=\"{prefix}/{action}\">\
             <input type=\"hidden\" name=\"{TOKEN_FIELD}\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
             <label for=\"email\">Email</label>\
             <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" \
             required value=\"{email}\"{email_focus}>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"{password_autocomplete}\" required{password_focus}>\
             <button type=\"submit\">{button}</button></form>",
            csrf = escape(self.csrf),
            email = escape(self.email),
        ));
        match self.kind {
            Kind::SignIn if self.offer_sign_up => html.push_str(&format!(
                "<p class=\"alt\">No account? <a href=\"{prefix}/sign-up{rd_query}\">Create one</a></p>"
            )),
            Kind::SignUp => html.push_str(&format!(
                "<p class=\"alt\">Have an account? <a href=\"{prefix}/sign-in{rd_query}\">Sign in</a></p>"
            )),
            Kind::SignIn => {}
        }
        html.push_str("</main></body></html>\n");
        html
    }
}

fn head(title: &str, heading: &str) -> String {
    let title = escape(title);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{heading} · {title}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1><h2>{heading}</h2>"
    )
}

/// A page with the headers every page carries; `cookies` are appended.
pub(super) fn response(
    status: StatusCode,
    html: String,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CONTENT_SECURITY_POLICY, CSP.clone());
    // The page holds a CSRF token and, after a failure, an email address.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The URL carries `rd`: no other site learns where the user was going.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
    response
}

/// A 303 See Other to `location` (a validated same-origin path), so the
/// browser follows a POST with a GET (RFC 9110 §15.4.4).
pub(super) fn see_other(
    location: &str,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    let location =
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    headers.insert(http::header::LOCATION, location);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
    response
}

/// Text as HTML text or a double-quoted attribute value (HTML §13.1.2.3):
/// the five characters that could end either are replaced.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> FormPage<'static> {
        FormPage {
            kind: Kind::SignIn,
            title: "Example <Corp> & \"Co\"",
            prefix: "/auth",
            csrf: "tok",
            rd: "/dash/?a=1&b=\"><script>",
            email: "",
            message: None,
            offer_sign_up: true,
            signed_in: false,
        }
    }

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(escape("plain é"), "plain é");
    }

    #[test]
    fn nothing_interpolated_escapes_its_place() {
        let html = page().render();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<Corp>"), "{html}");
        assert!(html.contains("Example &lt;Corp&gt; &amp; &quot;Co&quot;"));
        assert!(html.contains("value=\"/dash/?a=1&amp;b=&quot;&gt;&lt;script&gt;\""));
        let failed = FormPage {
            email: "\"onfocus=alert(1)",
            message: Some("Email or password is incorrect."),
            ..page()
        }
        .render();
        assert!(
            failed.contains("value=\"&quot;onfocus=alert(1)\""),
            "{failed}"
        );
        assert!(failed.contains("role=\"alert\""));
    }

    #[test]
    fn the_form_is_usable_without_script() {
        let html = page().render();
        for needle in [
            "<meta name=\"viewport\"",
            "<label for=\"email\">",
            "<label for=\"password\">",
            " autofocus>",
            "method=\"post\" action=\"/auth/sign-in\"",
            "name=\"csrf\" value=\"tok\"",
            "href=\"/auth/sign-up?rd=",
        ] {
            assert!(html.contains(needle), "{needle}: {html}");
        }
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style() {
        let csp = CSP.to_str().unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        let hash = base64::engine::general_purpose::STANDARD
            .encode(crate::digest::sha256(&[STYLE.as_bytes()]));
        assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
        assert!(!csp.contains("unsafe"));
        let html = page().render();
        assert!(html.contains(&format!("<style>{STYLE}</style>")));
    }
}
