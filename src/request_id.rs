//! Request ids (`X-Request-Id`): one per request, kept from a trusted proxy
//! when it sent a well-formed one, generated otherwise. The service sends it
//! upstream, returns it to the client and puts it on the request's span, so
//! every log line of the request carries it.

use std::cell::{Cell, RefCell};

use bytes::{BufMut, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longer ids from a proxy are replaced: they would only bloat every log line.
const MAX_LEN: usize = 128;

/// The id of one request, a valid header value by construction.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    /// Marked for HPACK's "never indexed" form: an id is sent once, so an
    /// HTTP/2 encoder that indexed it would fill its table with entries no
    /// later header matches, evicting the ones that do (`date`, `server`),
    /// and search a chain of earlier ids on every answer. HTTP/1 ignores
    /// the mark.
    fn new(mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        Self(value)
    }

    /// The trusted proxy's id when there is exactly one and it is well
    /// formed; a fresh one otherwise. An untrusted client's id is never
    /// kept: it could collide with, or impersonate, another request's logs.
    pub(crate) fn for_request(headers: &HeaderMap, peer_trusted: bool) -> Self {
        if peer_trusted {
            let mut sent = headers.get_all(X_REQUEST_ID).iter();
            if let (Some(id), None) = (sent.next(), sent.next()) {
                if is_well_formed(id.as_bytes()) {
                    return Self::new(id.clone());
                }
            }
        }
        Self::generate()
    }

    /// A process-unique id: a random prefix and a counter, so ids from
    /// restarts and from several instances do not collide, and no request
    /// pays for a random-number syscall. Both are per thread: a counter
    /// shared by the workers would be a memory location every request on
    /// every core writes to, moving between the cores' caches.
    pub(crate) fn generate() -> Self {
        thread_local! {
            // `{prefix:016x}-`, written out once per thread.
            static PREFIX: Vec<u8> = {
                let mut prefix = Vec::with_capacity(16 + 1);
                push_hex(&mut prefix, rand::random::<u64>(), 16);
                prefix.push(b'-');
                prefix
            };
            static COUNTER: Cell<u64> = const { Cell::new(0) };
            // Ids are cut from one block per thread, so an id costs no
            // allocation of its own: the block is shared by the ids cut
            // from it (a reference count) and freed with the last of them.
            // An id held long (a long poll waiting for its answer) keeps
            // its whole block: [`BLOCK_LEN`] bounds that.
            static BLOCK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
        }
        let count = COUNTER.with(|counter| counter.replace(counter.get().wrapping_add(1)));
        // `{prefix}{count:010x}`, written by hand: this runs on every
        // request, and the formatter costs five times the writing.
        let text = BLOCK.with(|block| {
            let mut block = block.borrow_mut();
            if block.capacity() < ID_MAX_LEN {
                *block = BytesMut::with_capacity(BLOCK_LEN);
            }
            PREFIX.with(|prefix| block.extend_from_slice(prefix));
            push_hex(&mut *block, count, 10);
            block.split().freeze()
        });
        match HeaderValue::from_maybe_shared(text) {
            Ok(value) => Self::new(value),
            // Hex digits and a dash are always a valid header value.
            Err(_) => Self::new(HeaderValue::from_static("-")),
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

/// A generated id's longest form: two 64-bit numbers in hex and a dash.
const ID_MAX_LEN: usize = 16 + 1 + 16;

/// The size of the block ids are cut from: 37 ids, one allocation for
/// them all; and at most this much kept by a request whose id outlives
/// its block's other ids.
const BLOCK_LEN: usize = 1024;

/// `value` in lower-case hex, at least `min_digits` long (zero-padded).
fn push_hex(out: &mut impl BufMut, value: u64, min_digits: usize) {
    let needed = (64 - value.leading_zeros() as usize).div_ceil(4);
    for digit in (0..needed.max(min_digits)).rev() {
        let nibble = value.checked_shr(4 * digit as u32).unwrap_or(0) & 0xf;
        out.put_u8(char::from_digit(nibble as u32, 16).map_or(b'0', |c| c as u8));
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
    fn hex_is_written_as_the_formatter_writes_it() {
        for (value, min) in [
            (0u64, 10),
            (0xabc, 10),
            (u64::MAX, 16),
            (1 << 40, 10),
            (7, 16),
        ] {
            let mut out = Vec::new();
            push_hex(&mut out, value, min);
            assert_eq!(out, format!("{value:0min$x}").into_bytes(), "{value:#x}");
        }
    }

    #[test]
    fn ids_are_marked_never_to_be_indexed() {
        let kept = RequestId::for_request(&headers(&["4bf92f35"]), true);
        let generated = RequestId::for_request(&headers(&[]), false);
        assert!(kept.header().is_sensitive());
        assert!(generated.header().is_sensitive());
    }

    #[test]
    fn ids_cut_from_several_blocks_keep_their_own_text() {
        // Over two blocks' worth, all held at once: a new block must not
        // write over the ids cut from the last.
        let ids: Vec<RequestId> = (0..2 * BLOCK_LEN / 27 + 10)
            .map(|_| RequestId::generate())
            .collect();
        let first = u64::from_str_radix(&ids[0].as_str()[17..], 16).unwrap();
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(id.as_str().len(), 27, "{}", id.as_str());
            assert_eq!(id.as_str()[..17], ids[0].as_str()[..17]);
            let count = u64::from_str_radix(&id.as_str()[17..], 16).unwrap();
            assert_eq!(count, first + n as u64, "{}", id.as_str());
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(
            RequestId::generate().as_str(),
            RequestId::generate().as_str()
        );
    }

    #[test]
    fn generated_ids_share_the_process_prefix_then_count() {
        let (first, second) = (RequestId::generate(), RequestId::generate());
        for id in [&first, &second] {
            let (prefix, count) = id.as_str().split_once('-').unwrap();
            assert_eq!(prefix.len(), 16, "{}", id.as_str());
            assert!(count.len() >= 10, "{}", id.as_str());
            assert!(id
                .as_str()
                .bytes()
                .all(|b| b == b'-' || b.is_ascii_hexdigit()));
        }
        assert_eq!(first.as_str()[..17], second.as_str()[..17]);
    }

    impl RequestId {
        fn as_bytes_for_test(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
}
