//! `[[route]]` checks: names, prefixes held to the decided spelling, and
//! who may use a route.

use super::*;

#[test]
fn route_problems_name_the_route_key() {
    let route = |extra: &str| {
        format!("{MINIMAL}\n[[route]]\nname = \"r\"\npath_prefix = \"/r/\"\nupstream = \"http://127.0.0.1:1\"\n{extra}")
    };
    let message = error_text(&route("roles = []\n"));
    assert!(message.contains("route[0].roles"), "{message}");
    let message = error_text(&route("auth = \"public\"\nroles = [\"admin\"]\n"));
    assert!(message.contains("route[0].roles"), "{message}");
    let message = error_text(&route("auth = \"sometimes\"\n"));
    assert!(message.contains("auth"), "{message}");
    let bad_upstream = format!(
        "{MINIMAL}\n[[route]]\nname = \"r\"\npath_prefix = \"/r/\"\nupstream = \"ftp://x\"\n"
    );
    let message = error_text(&bad_upstream);
    assert!(message.contains("route[0].upstream"), "{message}");
    assert!(message.starts_with("gw.toml:6:"), "{message}");
    let under_auth = format!(
        "{MINIMAL}\n[[route]]\nname = \"r\"\npath_prefix = \"/auth/x\"\nupstream = \"builtin:echo\"\n"
    );
    assert!(error_text(&under_auth).contains("path_prefix"));
}

fn prefix_error(prefix: &str) -> String {
    let text = format!(
        "{MINIMAL}\n[[route]]\nname = \"r\"\nupstream = \"http://127.0.0.1:1\"\npath_prefix = {prefix:?}\n"
    );
    let message = error_text(&text);
    // FILE:LINE:COL: key: the line of the path_prefix value itself.
    assert!(
        message.starts_with("gw.toml:9:15: route[0].path_prefix: "),
        "{message}"
    );
    message
}

/// One test per reserved character (RFC 3986 §2.2) other than '/': a prefix
/// holding it is refused, since `%XX` would be the same path to a backend
/// but not to the prefix match. ('/' is the segment separator; its encoded
/// form is refused per request, see `edge::an_encoded_slash_never_reaches_a_protected_prefix`.)
macro_rules! reserved_character_prefixes_are_refused {
    ($($name:ident: $c:literal,)*) => {$(
        #[test]
        fn $name() {
            let message = prefix_error(&format!("/pub/team{}admin/", $c));
            assert!(message.contains("reserved character"), "{message}");
        }
    )*};
}

reserved_character_prefixes_are_refused! {
    prefix_with_colon_is_refused: ':',
    prefix_with_question_mark_is_refused: '?',
    prefix_with_hash_is_refused: '#',
    prefix_with_open_bracket_is_refused: '[',
    prefix_with_close_bracket_is_refused: ']',
    prefix_with_at_is_refused: '@',
    prefix_with_exclamation_is_refused: '!',
    prefix_with_dollar_is_refused: '$',
    prefix_with_ampersand_is_refused: '&',
    prefix_with_apostrophe_is_refused: '\'',
    prefix_with_open_paren_is_refused: '(',
    prefix_with_close_paren_is_refused: ')',
    prefix_with_asterisk_is_refused: '*',
    prefix_with_plus_is_refused: '+',
    prefix_with_comma_is_refused: ',',
    prefix_with_semicolon_is_refused: ';',
    prefix_with_equals_is_refused: '=',
}

#[test]
fn prefixes_that_can_never_match_are_refused() {
    for prefix in [
        "/café/", "/a b/", "/a%3Ab/", "/a\\b/", "/a\tb/", "//a/", "/a//b/", "/a/./b/", "/a/../b/",
        "/a/.", "/..", "api/",
    ] {
        let message = prefix_error(prefix);
        assert!(!message.contains("reserved character"), "{message}");
    }
}

#[test]
fn decided_prefixes_are_accepted_and_kept_as_written() {
    for prefix in ["/", "/api", "/api/", "/a.b/c-d_e~f/", "/v1.2/"] {
        let text = format!(
            "{MINIMAL}\n[[route]]\nname = \"r\"\nupstream = \"http://127.0.0.1:1\"\npath_prefix = {prefix:?}\n"
        );
        assert_eq!(parse(&text).unwrap().routes[0].path_prefix, prefix);
    }
}

#[test]
fn the_account_prefix_follows_the_same_rule() {
    for bad in ["/auth:x", "/a%3Auth", "/a//uth", "/au th"] {
        let text = format!("{MINIMAL}[auth]\npath_prefix = {bad:?}\n");
        assert!(error_text(&text).contains("auth.path_prefix"), "{bad}");
    }
}

#[test]
fn identity_assertions_need_an_asymmetric_algorithm_and_a_required_route() {
    let route = "[[route]]\nname = \"a\"\npath_prefix = \"/a/\"\nupstream = \"builtin:echo\"\n\
                 identity_assertion = true\n";
    let eddsa = format!("{MINIMAL}[tokens]\nalgorithm = \"EdDSA\"\n{route}");
    assert!(parse(&eddsa).unwrap().routes[0].identity_assertion);
    let err = error_text(&format!("{MINIMAL}{route}"));
    assert!(err.contains("route[0].identity_assertion"), "{err}");
    let public = format!("{MINIMAL}[tokens]\nalgorithm = \"EdDSA\"\n{route}auth = \"public\"\n");
    let err = error_text(&public);
    assert!(err.contains("public route"), "{err}");
}
