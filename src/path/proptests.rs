//! Property tests of [`decide`]: paths generated from a grammar of segments
//! (plain text, `.`, `..`, empty, percent escapes of any byte) must come out in
//! the one normalized form, or be refused; the fuzz target `path_decision`
//! checks the same properties on unstructured input.

use proptest::prelude::*;

use super::*;

/// Characters that stand for themselves in a segment (RFC 3986 pchar, minus
/// `;` which is refused, `%` which starts an escape, and `.`, added by the
/// dot-segment generators so a plain segment is never a dot segment).
const PLAIN: &[u8] = b"abcXYZ019-_~!$&'()*+,=:@";

fn plain_segment() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(PLAIN), 1..6)
        .prop_map(|bytes| bytes.into_iter().map(char::from).collect())
}

/// `%XX` of any byte, upper or lower case hex.
fn escape() -> impl Strategy<Value = String> {
    (any::<u8>(), any::<bool>()).prop_map(|(b, upper)| {
        if upper {
            format!("%{b:02X}")
        } else {
            format!("%{b:02x}")
        }
    })
}

/// One segment: text and escapes mixed, or a dot segment, or nothing.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => plain_segment(),
        3 => proptest::collection::vec(prop_oneof![plain_segment(), escape(), Just(".".to_owned())], 1..4)
            .prop_map(|parts| parts.concat()),
        2 => Just(".".to_owned()),
        2 => Just("..".to_owned()),
        1 => Just(String::new()),
        1 => Just("%2e".to_owned()),
        1 => Just(".%2E".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 0..8).prop_map(|segments| {
        let mut path = String::from("/");
        path.push_str(&segments.join("/"));
        path
    })
}

/// What every accepted path must look like.
fn assert_normalized(raw: &str, path: &str) {
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    assert!(!path.contains("//"), "{raw:?} -> {path:?}");
    assert!(
        path.split('/').all(|s| s != "." && s != ".."),
        "{raw:?} -> {path:?}: dot segment left"
    );
    assert!(
        !path.contains(['\\', '\0', ';', '#']),
        "{raw:?} -> {path:?}"
    );
    let upper = path.to_ascii_uppercase();
    assert!(
        !upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%00"),
        "{raw:?} -> {path:?}"
    );
    for (i, _) in path.match_indices('%') {
        let hex = path.get(i + 1..i + 3).unwrap_or_default();
        let value = u8::from_str_radix(hex, 16);
        assert!(
            hex.len() == 2 && hex == hex.to_ascii_uppercase() && value.is_ok(),
            "{raw:?} -> {path:?}: escape at {i} not %XX upper-case"
        );
        assert!(
            !value.is_ok_and(is_unreserved),
            "{raw:?} -> {path:?}: unreserved character left escaped"
        );
    }
}

/// RFC 3986 §5.2.4 on segments without escapes, except that climbing above
/// the root is refused instead of clamped; `None` for a refusal.
fn model(segments: &[String]) -> Option<String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match segment.as_str() {
            // Repeated slashes merge; only a final empty segment counts.
            "" => trailing_slash |= last,
            "." => trailing_slash = last,
            ".." => {
                stack.pop()?;
                trailing_slash = last;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::new();
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accepted_paths_are_normalized_and_fixed_points(raw in path()) {
        if let Ok(decided) = decide(&raw) {
            let path = decided.as_str();
            assert_normalized(&raw, path);
            let again = decide(path).map(|d| d.as_str().to_owned());
            prop_assert_eq!(again, Ok(path.to_owned()), "{:?}", raw);
        }
    }

    #[test]
    fn dot_segments_resolve_like_rfc_3986(
        segments in proptest::collection::vec(
            prop_oneof![
                3 => plain_segment(),
                1 => Just(".".to_owned()),
                1 => Just("..".to_owned()),
                1 => Just(String::new()),
            ],
            0..10,
        )
    ) {
        let raw = format!("/{}", segments.join("/"));
        let expected = model(&segments).ok_or(PathError::AboveRoot);
        prop_assert_eq!(decide(&raw).map(|d| d.as_str().to_owned()), expected, "{:?}", raw);
    }

    #[test]
    fn escaped_unreserved_characters_mean_themselves(
        segments in proptest::collection::vec(
            proptest::collection::vec((proptest::sample::select(b"aZ09-_~".as_slice()), any::<bool>()), 1..5),
            1..5,
        )
    ) {
        let literal: Vec<String> = segments
            .iter()
            .map(|s| s.iter().map(|&(b, _)| char::from(b)).collect())
            .collect();
        let escaped: Vec<String> = segments
            .iter()
            .map(|s| {
                s.iter()
                    .map(|&(b, esc)| if esc { format!("%{b:02x}") } else { char::from(b).to_string() })
                    .collect()
            })
            .collect();
        let literal = format!("/{}", literal.join("/"));
        let escaped = format!("/{}", escaped.join("/"));
        prop_assert_eq!(decide(&escaped), decide(&literal), "{:?}", escaped);
        prop_assert!(decide(&literal).is_ok());
    }

    #[test]
    fn escaped_separators_and_controls_are_refused(
        before in plain_segment(),
        after in plain_segment(),
        byte in prop_oneof![Just(b'/'), Just(b'\\'), 0u8..0x20, Just(0x7f), Just(b';')],
        upper in any::<bool>(),
    ) {
        let escape = if upper { format!("%{byte:02X}") } else { format!("%{byte:02x}") };
        let raw = format!("/{before}/x{escape}y/{after}");
        prop_assert!(decide(&raw).is_err(), "{:?} accepted", raw);
    }
}

/// Found by the `path_decision` fuzz target (inputs in `fuzz/findings/`):
/// `%25` followed by escapes of hex digits would decide to `%25XX`: double
/// encoding that a backend decoding twice reads as `/a/../admin`. Found by
/// the `path_decision` fuzz target (fuzz/findings/).
#[test]
fn escaped_hex_digits_after_an_escaped_percent_are_double_encoding() {
    for raw in ["/%25%62F", "/%25%34%31", "/a/%25%32%65%25%32%65/admin"] {
        assert_eq!(decide(raw), Err(PathError::DoubleEncoding), "{raw:?}");
    }
}
