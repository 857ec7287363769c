use super::*;

const MINIMAL: &str =
    "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("gw.toml"), text)
}

fn error_text(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn the_shipped_config_is_valid() {
    let text = include_str!("../../config/authgate.toml");
    let config = parse(text).unwrap();
    assert!(config.server.dev);
    assert_eq!(config.tokens.access_ttl, Duration::from_secs(900));
    assert_eq!(config.tokens.refresh_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(config.auth.path_prefix, "/auth");
    assert!(config.routes.iter().any(|r| r.upstream == Upstream::Echo));
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.tokens.issuer, "authgate");
    assert_eq!(config.tokens.leeway, Duration::from_secs(30));
    assert_eq!(config.tokens.refresh_reuse_grace, Duration::from_secs(5));
    assert_eq!(config.auth.default_role, "viewer");
    assert_eq!(config.auth.max_body, 16 * 1024);
    assert_eq!(config.server.identity_header_prefix, "x-user-");
    assert!(!config.server.dev);
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let text = format!("{MINIMAL}\n[tokens]\nissuer = \"x\"\naccess_tll = \"15m\"\n");
    let message = error_text(&text);
    assert!(message.starts_with("gw.toml:8:"), "{message}");
    assert!(message.contains("access_tll"), "{message}");
}

#[test]
fn bad_durations_name_their_key() {
    let text = format!("{MINIMAL}[tokens]\naccess_ttl = \"15 minutes\"\n");
    let message = error_text(&text);
    assert!(message.starts_with("gw.toml:6:"), "{message}");
    assert!(message.contains("access_ttl"), "{message}");
    assert!(message.contains("15 minutes"), "{message}");
}

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

#[test]
fn listen_and_algorithm_are_checked() {
    let text = MINIMAL.replace("127.0.0.1:8443", "localhost");
    assert!(error_text(&text).contains("server.listen"));
    let text = format!("{MINIMAL}[tokens]\nalgorithm = \"none\"\n");
    assert!(error_text(&text).contains("tokens.algorithm"));
}

#[test]
fn upstream_urls_keep_their_base_path() {
    assert_eq!(parse_upstream("builtin:echo"), Ok(Upstream::Echo));
    let Ok(Upstream::Http {
        base_path,
        authority,
        ..
    }) = parse_upstream("http://10.0.0.1:9000/v1/")
    else {
        panic!("expected an http upstream");
    };
    assert_eq!(base_path, "/v1");
    assert_eq!(authority.as_str(), "10.0.0.1:9000");
    assert!(parse_upstream("https://x").is_err());
    assert!(parse_upstream("127.0.0.1:9000").is_err());
}

#[test]
fn the_ipv6_throttle_prefix_is_read_and_bounded() {
    assert_eq!(parse(MINIMAL).unwrap().auth.throttle.ipv6_prefix, 56);
    let text = format!("{MINIMAL}[auth.throttle]\nipv6_prefix = 48\n");
    assert_eq!(parse(&text).unwrap().auth.throttle.ipv6_prefix, 48);
    for bad in ["16", "129", "-1", "\"56\""] {
        let text = format!("{MINIMAL}[auth.throttle]\nipv6_prefix = {bad}\n");
        let message = error_text(&text);
        assert!(message.starts_with("gw.toml:6:"), "{message}");
        assert!(message.contains("ipv6_prefix"), "{message}");
    }
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
