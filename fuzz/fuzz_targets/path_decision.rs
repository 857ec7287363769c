//! Fuzzes `authgate::path::decide` with arbitrary request paths and checks
//! that every accepted path is in the one normalized form routing, the role
//! check and the upstream all rely on, and that deciding it again changes nothing.

#![no_main]

use authgate::path::decide;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(decided) = decide(raw) else {
        return;
    };
    let path = decided.as_str();
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}: not absolute");
    assert!(!path.contains("//"), "{raw:?} -> {path:?}: empty segment");
    for segment in path.split('/') {
        assert!(
            segment != "." && segment != "..",
            "{raw:?} -> {path:?}: dot segment left"
        );
    }
    assert!(!path.contains('\\'), "{raw:?} -> {path:?}: backslash");
    assert!(!path.contains('\0'), "{raw:?} -> {path:?}: NUL");
    let upper = path.to_ascii_uppercase();
    assert!(
        !upper.contains("%2F") && !upper.contains("%5C"),
        "{raw:?} -> {path:?}: encoded separator"
    );
    assert!(!upper.contains("%00"), "{raw:?} -> {path:?}: encoded NUL");
    assert!(
        !path.contains([';', '#']) && !path.bytes().any(|b| b <= 0x20 || b == 0x7f),
        "{raw:?} -> {path:?}: parameter, fragment or control character"
    );
    check_escapes(raw, path);
    match decide(path) {
        Ok(again) => assert_eq!(
            again.as_str(),
            path,
            "{raw:?} -> {path:?}: deciding again changed it"
        ),
        Err(err) => panic!("{raw:?} -> {path:?}: deciding again refused it: {err}"),
    }
});

/// Every `%` starts an escape with upper-case hex, and no escape names an
/// unreserved character (RFC 3986 §2.3: those are always decoded).
fn check_escapes(raw: &str, path: &str) {
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        assert!(
            hex.len() == 2
                && hex
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{raw:?} -> {path:?}: escape at {i} is not %XX upper-case"
        );
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        assert!(
            !(value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~')),
            "{raw:?} -> {path:?}: escaped unreserved character at {i}"
        );
    }
}
