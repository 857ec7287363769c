//! Reading what a client sent to an account endpoint: a JSON body of bounded
//! size (413 before parsing), and the gateway's cookies.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE};
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::error::GatewayError;

/// Reads the whole body, refusing more than `limit` bytes: first by the
/// declared Content-Length, then while reading, so nothing large is buffered.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(GatewayError::PayloadTooLarge);
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| GatewayError::RequestTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(GatewayError::PayloadTooLarge)
        }
        Err(_) => Err(GatewayError::BadRequest(
            "the request body could not be read",
        )),
    }
}

/// Parses a JSON body into `T`. A body must be declared `application/json`:
/// a cross-site HTML form cannot send that type without a CORS preflight.
pub(crate) fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, GatewayError> {
    if !is_json(headers) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    serde_json::from_slice(body).map_err(|err| GatewayError::MalformedJson(describe(&err)))
}

/// What is wrong with a body, without quoting it: serde's own message repeats
/// the offending value ("invalid type: string \"hunter2\"…"), and the body of
/// a login is a password. The category and position are enough to debug.
fn describe(err: &serde_json::Error) -> String {
    let category = match err.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong shape",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{category} at line {} column {}", err.line(), err.column())
}

/// Like [`parse_json`], but an absent body parses as `T::default()`.
pub(crate) fn parse_optional_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(headers, body)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The value of cookie `name`, if the client sent it.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn finds_cookies_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; __Secure-authgate_refresh=tok; b=2"),
        );
        assert_eq!(cookie(&headers, "__Secure-authgate_refresh"), Some("tok"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn json_needs_its_media_type() {
        let mut headers = HeaderMap::new();
        let parsed: Result<serde_json::Value, _> = parse_json(&headers, b"{}");
        assert!(matches!(parsed, Err(GatewayError::UnsupportedMediaType)));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let parsed: Result<serde_json::Value, _> = parse_json(&headers, b"{}");
        assert!(parsed.is_ok());
        let parsed: Result<serde_json::Value, _> = parse_json(&headers, b"{");
        assert!(matches!(parsed, Err(GatewayError::MalformedJson(_))));
    }

    #[test]
    fn a_malformed_body_is_described_without_quoting_it() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Login {
            email: String,
            count: u32,
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for body in [
            &br#"{"email": "a@b", "count": "hunter2-secret"}"#[..],
            br#"{"email": "a@b", "hunter2-secret": 1}"#,
            br#"{"email": hunter2-secret}"#,
            br#"{"email": "hunter2-secret"#,
            br#""hunter2-secret""#,
        ] {
            let parsed: Result<Login, _> = parse_json(&headers, body);
            let Err(GatewayError::MalformedJson(message)) = parsed else {
                panic!("{body:?} parsed");
            };
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains("line 1 column"), "{message}");
        }
    }
}
