//! The built-in `builtin:echo` upstream: answers with the method, path,
//! query and headers it received, as JSON, so a newcomer's first request
//! shows exactly what a real backend would see (the injected identity).

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use serde_json::{Map, Value};

use crate::body::ResponseBody;

/// Builds the echo answer for a request already rewritten for the upstream.
pub(crate) fn respond<B>(request: &Request<B>) -> Response<ResponseBody> {
    let mut headers = Map::new();
    for (name, value) in request.headers() {
        let value = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(list)) => list.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                headers.insert(name.as_str().to_owned(), value);
            }
        }
    }
    let body = serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
    });
    let mut response = Response::new(ResponseBody::full(body.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
