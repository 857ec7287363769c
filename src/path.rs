//! The one decision about what path a request names.
//!
//! Routing, the role check and the path sent upstream all use the
//! [`DecidedPath`] made here, so what was authorized is exactly what the
//! backend receives. Anything two parsers could read two ways is refused
//! rather than guessed: encoded `/` or `\`, encoded dot segments, NUL,
//! double encoding, path parameters, invalid or overlong UTF-8, and dot
//! segments that climb above the root.

use std::fmt::Write;

use http::uri::PathAndQuery;
use http::Uri;

/// Why a path was refused; each reason is a 400 with code INVALID_PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("encoded '/' or '\\' in path")]
    EncodedSeparator,
    #[error("backslash in path")]
    Backslash,
    #[error("NUL or control character in path")]
    ControlCharacter,
    #[error("malformed percent-encoding")]
    BadEscape,
    #[error("double percent-encoding")]
    DoubleEncoding,
    #[error("encoded dot segment")]
    EncodedDotSegment,
    #[error("dot segment above the root")]
    AboveRoot,
    #[error("path parameters (';') are not accepted")]
    PathParameter,
    #[error("fragment in request target")]
    Fragment,
    #[error("invalid UTF-8 in decoded path")]
    InvalidUtf8,
}

/// A normalized request path: dot segments resolved, repeated slashes merged,
/// unreserved characters decoded, every other escape kept with upper-case hex.
#[derive(Debug, Clone)]
pub struct DecidedPath(Decided);

#[derive(Debug, Clone)]
enum Decided {
    /// The request's own target (path and query), whose path needed no
    /// change: the common case, kept as hyper parsed it, shared, not copied.
    AsSent(PathAndQuery),
    /// A path that needed normalizing, or one decided outside a request.
    Rewritten(String),
}

impl DecidedPath {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Decided::AsSent(target) => target.path(),
            Decided::Rewritten(path) => path,
        }
    }

    /// The request's target, query included, when its path is already the
    /// decided one: what the upstream can be sent as it is.
    pub fn target_as_sent(&self) -> Option<&PathAndQuery> {
        match &self.0 {
            Decided::AsSent(target) => Some(target),
            Decided::Rewritten(_) => None,
        }
    }
}

/// Equal when they name the same path, however each was decided.
impl PartialEq for DecidedPath {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for DecidedPath {}

/// Decides the path of a request's target, keeping the target itself when
/// its path needs no change.
pub fn decide_target(uri: &Uri) -> Result<DecidedPath, PathError> {
    match uri.path_and_query() {
        Some(target) if target.path().starts_with('/') && is_already_decided(target.path()) => {
            Ok(DecidedPath(Decided::AsSent(target.clone())))
        }
        _ => decide(uri.path()),
    }
}

/// Decides the path of a request target (without its query).
pub fn decide(raw: &str) -> Result<DecidedPath, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_already_decided(raw) {
        return Ok(DecidedPath(Decided::Rewritten(raw.to_owned())));
    }
    let mut segments: Vec<String> = Vec::new();
    let mut pieces = raw.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(piece) = pieces.next() {
        let is_last = pieces.peek().is_none();
        if piece.is_empty() {
            // Merge "//" as most servers do, so "//admin" cannot dodge "/admin/".
            if is_last {
                trailing_slash = true;
            }
            continue;
        }
        let (segment, was_encoded_dot) = decode_segment(piece)?;
        match segment.as_str() {
            "." | ".." if was_encoded_dot => return Err(PathError::EncodedDotSegment),
            "." => trailing_slash = is_last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = is_last;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        path.push('/');
    }
    Ok(DecidedPath(Decided::Rewritten(path)))
}

/// The common case, checked in one pass: no escapes, no backslash, no ';',
/// no empty segment and no segment starting with '.', so decoding and dot
/// resolution would change nothing. Everything else takes the full path.
fn is_already_decided(raw: &str) -> bool {
    let mut previous = 0u8;
    for &b in raw.as_bytes() {
        let plain = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            )
            || (b == b'.' && previous != b'/')
            || (b == b'/' && previous != b'/');
        if !plain {
            return false;
        }
        previous = b;
    }
    true
}

/// Normalizes one segment; the flag tells whether a '.' in it came from an escape.
fn decode_segment(piece: &str) -> Result<(String, bool), PathError> {
    let bytes = piece.as_bytes();
    let mut out = String::with_capacity(piece.len());
    let mut decoded_dot = false;
    // Every byte the segment denotes, to check that escapes form valid UTF-8.
    let mut denoted: Vec<u8> = Vec::with_capacity(piece.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let value = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or(PathError::BadEscape)?;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                    // Whether an escaped '%' starts a second escape is checked
                    // on the decoded segment below: the hex digits after it
                    // may themselves arrive escaped ("%25%32%65").
                    b'%' => out.push_str("%25"),
                    b';' => return Err(PathError::PathParameter),
                    v if is_unreserved(v) => {
                        decoded_dot |= v == b'.';
                        out.push(char::from(v));
                    }
                    v => {
                        let _ = write!(out, "%{v:02X}");
                    }
                }
                denoted.push(value);
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'#' => return Err(PathError::Fragment),
            0..=0x20 | 0x7f => return Err(PathError::ControlCharacter),
            0x80..=0xff => {
                // Raw non-ASCII never reaches here through hyper's URI parser,
                // but the function must hold for any input.
                let _ = write!(out, "%{b:02X}");
                denoted.push(b);
                i += 1;
            }
            _ => {
                out.push(char::from(b));
                denoted.push(b);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&denoted).is_err() {
        // Overlong forms such as %C0%AF ("/" to some decoders) are invalid UTF-8.
        return Err(PathError::InvalidUtf8);
    }
    if contains_double_escape(&out) {
        return Err(PathError::DoubleEncoding);
    }
    let was_encoded_dot = decoded_dot && (out == "." || out == "..");
    Ok((out, was_encoded_dot))
}

/// True when the decoded segment holds "%25" followed by two hex digits: a
/// backend that decodes once more would read another escape there. In a
/// decoded segment '%' only ever starts an escape, so this is exact.
fn contains_double_escape(decoded: &str) -> bool {
    decoded.match_indices("%25").any(|(at, _)| {
        decoded
            .as_bytes()
            .get(at + 3..at + 5)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

/// RFC 3986 §2.3: decoding these never changes what a URI means.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
