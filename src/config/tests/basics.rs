//! The config as a whole: the shipped file, defaults, the
//! `FILE:LINE:COLUMN: KEY` errors, and the server, token and auth sections.

use super::*;

#[test]
fn the_shipped_config_is_valid() {
    let text = include_str!("../../../config/authgate.toml");
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
    assert_eq!(config.auth.default_role.as_str(), "viewer");
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
fn listen_and_algorithm_are_checked() {
    let text = MINIMAL.replace("127.0.0.1:8443", "localhost");
    assert!(error_text(&text).contains("server.listen"));
    let text = format!("{MINIMAL}[tokens]\nalgorithm = \"none\"\n");
    assert!(error_text(&text).contains("tokens.algorithm"));
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
        assert!(message.contains(key), "{message}");
        let message = error_text(&format!("{MINIMAL}[auth]\n{key} = 2000000\n"));
        assert!(message.contains("use 1 to 1000000"), "{message}");
    }
}

#[test]
fn token_algorithms_and_the_key_directory_are_read() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.tokens.algorithm, Algorithm::HS256);
    assert_eq!(config.tokens.keys_dir, PathBuf::from("data/keys"));
    for (name, algorithm) in [
        ("EdDSA", Algorithm::EdDSA),
        ("ES256", Algorithm::ES256),
        ("RS256", Algorithm::RS256),
        ("HS512", Algorithm::HS512),
    ] {
        let text = format!("{MINIMAL}[tokens]\nalgorithm = \"{name}\"\nkeys_dir = \"k\"\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.tokens.algorithm, algorithm);
        assert_eq!(config.tokens.keys_dir, PathBuf::from("k"));
    }
    let err = error_text(&format!("{MINIMAL}[tokens]\nalgorithm = \"none\"\n"));
    assert!(
        err.contains("tokens.algorithm") && err.contains("EdDSA"),
        "{err}"
    );
}

#[test]
fn the_argon2_threads_priority_is_read_and_checked() {
    let default = parse(MINIMAL).unwrap();
    assert_eq!(default.auth.password.hash_priority, HashPriority::Idle);
    let low = parse(&format!(
        "{MINIMAL}[auth.password]\nhash_priority = \"low\"\n"
    ))
    .unwrap();
    assert_eq!(low.auth.password.hash_priority, HashPriority::Low);
    let message = error_text(&format!(
        "{MINIMAL}[auth.password]\nhash_priority = \"lowest\"\n"
    ));
    assert!(message.starts_with("gw.toml:6:"), "{message}");
    assert!(message.contains("hash_priority"), "{message}");
    assert!(message.contains("lowest"), "{message}");
}
