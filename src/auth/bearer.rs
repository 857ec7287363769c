//! Reading the bearer token out of a request (RFC 6750 §2.1): only from the
//! `Authorization` header, never the query string or a form body.

use http::header::AUTHORIZATION;
use http::HeaderMap;

/// Tokens longer than this are refused before any parsing or cryptography; our
/// own access tokens are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why no bearer token could be read (the responses are chosen in `error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// No `Authorization` header at all.
    #[error("no bearer token")]
    Missing,
    /// Not exactly one `Bearer <b64token>` credential.
    #[error("malformed Authorization header")]
    Malformed,
    /// Longer than [`MAX_TOKEN_BYTES`]: refused before any parsing.
    #[error("oversized token")]
    Oversized,
}

/// A byte of an RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" /
/// "~" / "+" / "/" ) *"=".
fn is_b64token_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// True when every byte of `token` is a b64token byte. This runs over every
/// byte of every token on every request: comparisons folded without an
/// early exit let the compiler check many bytes per instruction (a table
/// lookup, or a loop that stops at the first bad byte, goes byte by byte).
fn all_b64token_bytes(token: &[u8]) -> bool {
    token.iter().fold(true, |ok, &b| ok & is_b64token_byte(b))
}

/// The token in `Authorization: Bearer <token>`.
///
/// Exactly one `Authorization` header is accepted; two headers, or a value
/// holding two credentials (`Bearer a, Bearer b`), are ambiguous and refused
/// as INVALID_FORMAT so no two components can pick different tokens.
pub fn token(headers: &HeaderMap) -> Result<&str, BearerError> {
    presented(headers)?.checked()
}

/// What follows `Bearer ` in the request's one `Authorization` header,
/// before its characters are checked.
///
/// A connection that presents the same bytes as on its last request need
/// not check them again (`token_memo.rs`): they were checked when that
/// token was remembered. So the check is a step of its own.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a>(&'a [u8]);

impl<'a> Presented<'a> {
    /// The bytes as sent, unchecked: compare them, never use them as a token.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The token, if every byte is a b64token byte (RFC 6750 §2.1).
    pub fn checked(self) -> Result<&'a str, BearerError> {
        // The b64token check admits only ASCII, so the conversion after it
        // never fails.
        if self.0.is_empty() || !all_b64token_bytes(self.0) {
            return Err(BearerError::Malformed);
        }
        std::str::from_utf8(self.0).map_err(|_| BearerError::Malformed)
    }
}

/// `bytes` without the spaces at either end (tabs are not trimmed: they
/// are refused as not b64token bytes).
fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    bytes
}

/// The request's one bearer credential, its scheme and length checked but
/// not its characters (see [`Presented`]).
pub fn presented(headers: &HeaderMap) -> Result<Presented<'_>, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Malformed);
    }
    if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(BearerError::Oversized);
    }
    // Bytes, not `to_str` (a pass of its own over every byte): the
    // b64token check admits only ASCII.
    let value = value.as_bytes();
    let space = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or(BearerError::Malformed)?;
    let (scheme, rest) = value.split_at(space);
    // The scheme is case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(BearerError::Malformed);
    }
    Ok(Presented(trim_spaces(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn reads_bearer_in_any_case() {
        for v in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER  abc.def.ghi ",
        ] {
            assert_eq!(token(&headers(&[v])).unwrap(), "abc.def.ghi");
        }
    }

    #[test]
    fn refuses_what_is_not_one_bearer_token() {
        assert_eq!(token(&headers(&[])), Err(BearerError::Missing));
        for v in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearer a.b.c, Bearer d.e.f",
            "Bearer a.b.c d.e.f",
            "Bearera.b.c",
        ] {
            assert_eq!(token(&headers(&[v])), Err(BearerError::Malformed), "{v}");
        }
        assert_eq!(
            token(&headers(&["Bearer a.b.c", "Bearer a.b.c"])),
            Err(BearerError::Malformed)
        );
    }

    #[test]
    fn refuses_tabs_and_bytes_past_ascii_anywhere() {
        for raw in [
            &b"Bearer abc\t"[..],
            b"Bearer \tabc",
            b"Bearer\tabc",
            b"Bearer ab\xc3\xa9c",
            b"Bear\xc3\xa9r abc",
            b"Bearer abc\xff",
        ] {
            let mut map = HeaderMap::new();
            map.insert(AUTHORIZATION, HeaderValue::from_bytes(raw).unwrap());
            assert_eq!(token(&map), Err(BearerError::Malformed), "{raw:?}");
        }
    }

    #[test]
    fn exactly_the_b64token_bytes_are_admitted() {
        let allowed: Vec<u8> = (0..=255u8).filter(|&b| all_b64token_bytes(&[b])).collect();
        let expected = "+-./0123456789=ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
        assert_eq!(String::from_utf8_lossy(&allowed), expected);
    }

    #[test]
    fn one_bad_byte_anywhere_in_a_long_token_is_seen() {
        // 40 bytes: two 16-byte blocks and a remainder, each position tried.
        let good = b"abcdefghijklmnopqrstuvwxyz0123456789-._~";
        assert!(all_b64token_bytes(good));
        for at in 0..good.len() {
            for b in 0..=255u8 {
                let mut token = *good;
                token[at] = b;
                assert_eq!(
                    all_b64token_bytes(&token),
                    all_b64token_bytes(&[b]),
                    "byte {b:#04x} at {at}"
                );
            }
        }
    }

    #[test]
    fn refuses_oversized_tokens_before_parsing() {
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(token(&headers(&[&big])), Err(BearerError::Oversized));
    }
}
