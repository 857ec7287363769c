//! Where a browser goes after signing in: the `rd` parameter. Only a path
//! on this origin is followed; anything a browser could read as another
//! origin (`//host`, `/\host`, a scheme, control characters, or those
//! hidden behind percent-encoding) falls back to `/`. Checked both when
//! the redirect to the sign-in page is built and when the form is posted,
//! since the second comes from the client.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Longest target followed; longer ones are not a page anyone typed.
pub(crate) const MAX_TARGET_BYTES: usize = 2_048;

/// Characters kept as they are in the encoded `rd` value (RFC 3986 §2.3
/// unreserved, plus `/`, so the sign-in URL stays readable).
const RD_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `raw` (already decoded once, as the query or form parser gives it) if
/// it is a same-origin path, else `/`.
pub(crate) fn safe_target(raw: &str) -> &str {
    if is_safe(raw) {
        raw
    } else {
        "/"
    }
}

/// The sign-in page's URL that brings the browser back to `target` (the
/// original path and query) afterwards.
pub(crate) fn sign_in_location(auth_prefix: &str, target: &str) -> String {
    format!("{auth_prefix}/sign-in{}", rd_query(target))
}

/// `?rd=<target>`, the target checked and percent-encoded.
pub(crate) fn rd_query(target: &str) -> String {
    format!("?rd={}", utf8_percent_encode(safe_target(target), RD_KEEP))
}

fn is_safe(target: &str) -> bool {
    if target.is_empty() || target.len() > MAX_TARGET_BYTES {
        return false;
    }
    // Printable ASCII only: tabs and newlines are dropped by URL parsers
    // (so "/\t/evil" becomes "//evil"), and a Location header holds nothing else.
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    // Whatever decoding a browser or a backend applies, the result must
    // still be a plain path: decode until nothing changes (bounded).
    let mut current = target.to_owned();
    for _ in 0..4 {
        if !plain_path(&current) {
            return false;
        }
        let decoded = match percent_decode_str(&current).decode_utf8() {
            Ok(decoded) => decoded.into_owned(),
            Err(_) => return false,
        };
        if decoded == current {
            return true;
        }
        if decoded.bytes().any(|b| b.is_ascii_control()) {
            return false;
        }
        current = decoded;
    }
    false
}

/// Starts with one `/` and holds no backslash, which browsers read as `/`
/// (WHATWG URL: special schemes), so `/\evil` would be `//evil`.
fn plain_path(target: &str) -> bool {
    let mut bytes = target.bytes();
    bytes.next() == Some(b'/') && bytes.next() != Some(b'/') && !target.contains('\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_paths_are_kept() {
        for target in [
            "/",
            "/dash/",
            "/dash/report?id=7&sort=desc",
            "/dash/a%20b",
            "/dash/#section",
            "/dash/?next=//not-a-host-here",
        ] {
            assert_eq!(safe_target(target), target);
        }
    }

    #[test]
    fn the_open_redirect_list_falls_back_to_the_root() {
        let long = format!("/{}", "a".repeat(MAX_TARGET_BYTES));
        for target in [
            "//evil.example",
            "//evil.example/path",
            "/\\evil.example",
            "\\/evil",
            "\\\\evil",
            "https://evil",
            "http:evil",
            "HTTPS://evil",
            "/%2F%2Fevil",
            "/%2f%2fevil",
            "%2F%2Fevil",
            "/%5Cevil",
            "/%5cevil",
            "/%252F%252Fevil",
            "/%25252F%25252Fevil",
            "/\t/evil",
            "/\n/evil",
            "\t//evil",
            "/x\r\nSet-Cookie:a=b",
            "/%0d%0aSet-Cookie:a=b",
            "/%00",
            "/\u{7f}",
            "/ evil",
            "/é",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,x",
            "evil.example",
            "",
            &long,
        ] {
            assert_eq!(safe_target(target), "/", "{target:?}");
        }
    }

    #[test]
    fn the_sign_in_location_carries_the_target_encoded() {
        assert_eq!(
            sign_in_location("/auth", "/dash/r?id=7&x=a%20b"),
            "/auth/sign-in?rd=/dash/r%3Fid%3D7%26x%3Da%2520b"
        );
        assert_eq!(
            sign_in_location("/auth", "//evil.example"),
            "/auth/sign-in?rd=/"
        );
    }
}
