//! Request ids (`X-Request-Id`): one per request, kept from a trusted proxy
//! when it sent a well-formed one, generated otherwise. The service sends it
//! upstream, returns it to the client and puts it on the request's span, so
//! every log line of the request carries it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longer ids from a proxy are replaced: they would only bloat every log line.
const MAX_LEN: usize = 128;

/// The id of one request, a valid header value by construction.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    /// The trusted proxy's id when there is exactly one and it is well
    /// formed; a fresh one otherwise. An untrusted client's id is never
    /// kept: it could collide with, or impersonate, another request's logs.
    pub(crate) fn for_request(headers: &HeaderMap, peer_trusted: bool) -> Self {
        if peer_trusted {
            let mut sent = headers.get_all(X_REQUEST_ID).iter();
            if let (Some(id), None) = (sent.next(), sent.next()) {
                if is_well_formed(id.as_bytes()) {
                    return Self(id.clone());
                }
            }
        }
        Self::generate()
    }

    /// A process-unique id: a random per-process prefix and a counter, so
    /// ids from restarts and from several instances do not collide, and no
    /// request pays for a random-number syscall.
    pub(crate) fn generate() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(rand::random::<u64>);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let text = format!("{prefix:016x}-{count:010x}");
        match HeaderValue::from_str(&text) {
            Ok(value) => Self(value),
            // Hex digits and a dash are always a valid header value.
            Err(_) => Self(HeaderValue::from_static("-")),
        }
    }

    pub(crate) fn header(&self) -> &HeaderValue {
        &self.0
    }

    pub(crate) fn as_str(&self) -> &str {
        // Well-formed ids are ASCII; generated ones are hex.
        self.0.to_str().unwrap_or("-")
    }
}

/// 1 to 128 of `A-Z a-z 0-9 - _ . : / + = @`: what UUIDs, trace ids and
/// common proxies' ids use, and nothing that could forge a log field.
fn is_well_formed(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ids: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for id in ids {
            map.append(X_REQUEST_ID, HeaderValue::from_str(id).unwrap());
        }
        map
    }

    #[test]
    fn a_trusted_well_formed_id_is_kept() {
        let id = RequestId::for_request(&headers(&["4bf92f35-77b3.4a1c:9"]), true);
        assert_eq!(id.as_str(), "4bf92f35-77b3.4a1c:9");
    }

    #[test]
    fn untrusted_malformed_or_repeated_ids_are_replaced() {
        let long = "a".repeat(MAX_LEN + 1);
        for (ids, trusted) in [
            (vec!["abc"], false),
            (vec!["has space"], true),
            (vec!["a\"b"], true),
            (vec![long.as_str()], true),
            (vec![""], true),
            (vec!["one", "two"], true),
        ] {
            let id = RequestId::for_request(&headers(&ids), trusted);
            assert!(!ids.contains(&id.as_str()), "{ids:?} kept");
            assert!(is_well_formed(id.as_bytes_for_test()));
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(
            RequestId::generate().as_str(),
            RequestId::generate().as_str()
        );
    }

    impl RequestId {
        fn as_bytes_for_test(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
}
