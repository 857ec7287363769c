//! Reading what a sign-in form posts (`application/x-www-form-urlencoded`,
//! WHATWG URL §5) and the form's own CSRF token: a random value in the
//! `__Host-authgate_form` cookie that the page repeats in a hidden field
//! (double submit). A cross-site page can neither read nor plant a
//! `__Host-` cookie, so it cannot post a matching pair.

use http::HeaderMap;
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;

use crate::api::request::cookie;
use crate::auth::sessions::cookies::FORM_COOKIE;
use crate::auth::sessions::random_token;

/// The name of the hidden field that repeats the cookie.
pub(super) const TOKEN_FIELD: &str = "csrf";

/// Decoded name/value pairs of a form body or query string. Invalid UTF-8
/// is replaced, never an error: such a value matches nothing.
pub(super) fn parse(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// The first value of `name`.
pub(super) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The form token the browser holds, or a new one it must be given
/// (`true`: set the cookie with the page).
pub(super) fn token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, FORM_COOKIE).filter(|t| well_formed(t)) {
        Some(token) => (token.to_owned(), false),
        None => (random_token(32), true),
    }
}

/// True when the posted field repeats the cookie (constant time).
pub(super) fn token_matches(headers: &HeaderMap, fields: &[(String, String)]) -> bool {
    let (Some(held), Some(posted)) = (cookie(headers, FORM_COOKIE), field(fields, TOKEN_FIELD))
    else {
        return false;
    };
    well_formed(held) && bool::from(held.as_bytes().ct_eq(posted.as_bytes()))
}

/// What [`random_token`] makes: 32 bytes as unpadded base64url.
fn well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use http::header::COOKIE;
    use http::HeaderValue;

    use super::*;

    #[test]
    fn parses_what_browsers_post() {
        let fields = parse("email=a%40example.com&password=p+w%26rd%3D&rd=%2Fdash%2F%3Fx%3D1&flag");
        assert_eq!(field(&fields, "email"), Some("a@example.com"));
        assert_eq!(field(&fields, "password"), Some("p w&rd="));
        assert_eq!(field(&fields, "rd"), Some("/dash/?x=1"));
        assert_eq!(field(&fields, "flag"), Some(""));
        assert_eq!(field(&fields, "missing"), None);
        assert_eq!(field(&parse("e=%FF"), "e"), Some("\u{fffd}"));
    }

    #[test]
    fn the_token_must_repeat_the_cookie() {
        let token = random_token(32);
        let mut headers = HeaderMap::new();
        let fields = parse(&format!("csrf={token}"));
        assert!(!token_matches(&headers, &fields), "no cookie");
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("{FORM_COOKIE}={token}")).unwrap(),
        );
        assert!(token_matches(&headers, &fields));
        assert_eq!(self::token(&headers), (token.clone(), false));
        assert!(!token_matches(&headers, &parse("csrf=other")));
        assert!(!token_matches(&headers, &parse("email=x")));
        headers.insert(
            COOKIE,
            HeaderValue::from_static("__Host-authgate_form=short"),
        );
        assert!(!token_matches(&headers, &parse("csrf=short")), "not ours");
        assert!(self::token(&headers).1, "a malformed cookie is replaced");
    }
}
