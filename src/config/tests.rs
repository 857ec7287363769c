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

fn parse_env(text: &str, env: Option<&str>) -> Result<Config, ConfigError> {
    Config::parse_with_database_url(Path::new("gw.toml"), text, env.map(str::to_owned))
}

#[test]
fn store_defaults_to_sled_at_the_old_path() {
    let config = parse_env(MINIMAL, None).unwrap();
    assert!(matches!(config.store.backend, StoreBackend::Sled));
    assert_eq!(config.store.path, PathBuf::from("data/authgate.sled"));
    assert_eq!(
        config.store.revocation_max_staleness,
        Duration::from_secs(30)
    );
    // The key every existing installation has keeps working.
    let text = format!("{MINIMAL}[store]\npath = \"/var/lib/authgate/db\"\n");
    let config = parse_env(&text, None).unwrap();
    assert_eq!(config.store.path, PathBuf::from("/var/lib/authgate/db"));
}

#[test]
fn store_postgres_url_and_options() {
    let text = format!(
        "{MINIMAL}[store]\nbackend = \"postgres\"\nurl = \"postgres://gw:s3cret@db.internal:5433/authgate\"\n\
         max_connections = 4\nrevocation_max_staleness = \"5s\"\n"
    );
    let config = parse_env(&text, None).unwrap();
    let StoreBackend::Postgres(pg) = &config.store.backend else {
        panic!("not postgres: {:?}", config.store.backend);
    };
    assert_eq!(pg.max_connections, 4);
    assert_eq!(
        config.store.revocation_max_staleness,
        Duration::from_secs(5)
    );
    assert_eq!(
        pg.url.to_string(),
        "postgres://gw@db.internal:5433/authgate"
    );
    // The password is used, never shown.
    assert_eq!(pg.url.driver_config().get_password(), Some(&b"s3cret"[..]));
    assert!(!format!("{config:?}").contains("s3cret"));
}

#[test]
fn store_url_from_the_environment_wins() {
    let text = format!(
        "{MINIMAL}[store]\nbackend = \"postgres\"\nurl = \"postgres://file@db/authgate\"\n"
    );
    let config = parse_env(&text, Some("postgres://env:pw@other:6000/x")).unwrap();
    let StoreBackend::Postgres(pg) = &config.store.backend else {
        panic!("not postgres");
    };
    assert_eq!(pg.url.to_string(), "postgres://env@other:6000/x");
    // And it alone is enough.
    let text = format!("{MINIMAL}[store]\nbackend = \"postgres\"\n");
    assert!(parse_env(&text, Some("postgres://env@other/x")).is_ok());
    let message = parse_env(&text, None).unwrap_err().to_string();
    assert!(message.contains("store.url"), "{message}");
    assert!(message.contains("AUTHGATE_DATABASE_URL"), "{message}");
}

#[test]
fn store_keys_of_the_other_backend_are_refused_by_name() {
    let text = format!(
        "{MINIMAL}[store]\nbackend = \"postgres\"\nurl = \"postgres://a@b/c\"\npath = \"x\"\n"
    );
    let message = parse_env(&text, None).unwrap_err().to_string();
    assert!(message.contains("store.path"), "{message}");
    assert!(message.contains("sled"), "{message}");
    let text = format!("{MINIMAL}[store]\nurl = \"postgres://a@b/c\"\n");
    let message = parse_env(&text, None).unwrap_err().to_string();
    assert!(message.contains("store.url"), "{message}");
    assert!(message.contains("postgres"), "{message}");
    let text = format!("{MINIMAL}[store]\nbackend = \"mysql\"\n");
    assert!(parse_env(&text, None).is_err());
}

#[test]
fn store_bad_url_and_tls_errors_never_show_the_password() {
    let text = format!(
        "{MINIMAL}[store]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@db/x?sslmode=verify-full\"\n"
    );
    let message = parse_env(&text, None).unwrap_err().to_string();
    assert!(message.contains("store.tls_ca"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let text = format!(
        "{MINIMAL}[store]\nbackend = \"postgres\"\nurl = \"postgres://u:hunter2@db/x?bogus=1\"\n"
    );
    let message = parse_env(&text, None).unwrap_err().to_string();
    assert!(message.contains("store.url"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let text = format!(
        "{MINIMAL}[store]\nbackend = \"postgres\"\nurl = \"postgres://u@db/x?sslmode=require\"\ntls_ca = \"ca.pem\"\n"
    );
    let config = parse_env(&text, None).unwrap();
    let StoreBackend::Postgres(pg) = &config.store.backend else {
        panic!("not postgres");
    };
    assert!(pg.url.requires_tls());
}
