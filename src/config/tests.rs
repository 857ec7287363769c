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
fn session_and_refresh_limits_have_defaults_and_refuse_zero() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.auth.max_sessions_per_user, 32);
    assert_eq!(config.auth.refresh_per_session_per_minute, 10);
    assert_eq!(config.auth.refresh_per_address_per_minute, 300);
    let text =
        format!("{MINIMAL}[auth]\nmax_sessions_per_user = 4\nrefresh_per_session_per_minute = 2\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.auth.max_sessions_per_user, 4);
    assert_eq!(config.auth.refresh_per_session_per_minute, 2);
    for key in [
        "max_sessions_per_user",
        "refresh_per_session_per_minute",
        "refresh_per_address_per_minute",
    ] {
        let message = error_text(&format!("{MINIMAL}[auth]\n{key} = 0\n"));
        assert!(message.starts_with("gw.toml:6:"), "{message}");
        assert!(message.contains(&format!("auth.{key}")), "{message}");
        let message = error_text(&format!("{MINIMAL}[auth]\n{key} = 2000000\n"));
        assert!(message.contains("between 1 and 1000000"), "{message}");
    }
}
