//! `GET /.well-known/jwks.json`: the public keys that verify (published and
//! active), as a JWK Set (RFC 7517 §5). HMAC keys are never in it.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Response};

use super::KeySet;
use crate::body::ResponseBody;
use crate::error::GatewayError;

/// Where the JWKS is served, ahead of every route.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How long verifiers may cache the set. A new key is published (and so
/// fetched) this long before it is activated, and an old one stays published
/// until its tokens expire, so a verifier never needs a key it has not seen.
pub const MAX_AGE_SECS: u64 = 300;

pub fn response(keys: &KeySet, method: &Method) -> Result<Response<ResponseBody>, GatewayError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed);
    }
    let body = if method == Method::HEAD {
        ResponseBody::empty()
    } else {
        ResponseBody::full(keys.jwks().clone())
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    // RFC 7517 §8.5.1.
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    let cache = format!("public, max-age={MAX_AGE_SECS}");
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(CACHE_CONTROL, value);
    }
    Ok(response)
}
