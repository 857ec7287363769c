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
    use upstream::parse_target;
    let target = parse_target("http://10.0.0.1:9000/v1/").unwrap();
    assert_eq!(target.base_path, "/v1");
    assert_eq!(target.authority.as_str(), "10.0.0.1:9000");
    assert!(parse_target("https://x").unwrap().is_https());
    assert!(parse_target("ftp://x").is_err());
    assert!(parse_target("127.0.0.1:9000").is_err());
    assert!(parse_target("http://user:pw@x").is_err());
}

fn route_with(keys: &str) -> Result<Config, ConfigError> {
    parse(&format!(
        "{MINIMAL}\n[[route]]\nname = \"r\"\npath_prefix = \"/r/\"\n{keys}\n"
    ))
}

fn http_set(config: &Config) -> &UpstreamSet {
    match &config.routes[0].upstream {
        Upstream::Http(set) => set,
        Upstream::Echo => panic!("expected http targets"),
    }
}

#[test]
fn every_upstream_key_is_read() {
    let config = route_with(
        "upstreams = [\"http://a:9000\", \"https://b:9443/base\"]\n\
         balance = \"least_requests\"\n\
         health_check = { path = \"/healthz\", interval = \"5s\", timeout = \"2s\" }\n\
         upstream_ca = \"certs/internal-ca.pem\"\n\
         upstream_client_cert = \"c.pem\"\nupstream_client_key = \"k.pem\"\n\
         upstream_protocol = \"h2\"\nmax_upstream_connections = 32\n",
    )
    .unwrap();
    let set = http_set(&config);
    assert_eq!(set.targets.len(), 2);
    assert_eq!(set.targets[1].base_path, "/base");
    assert_eq!(set.balance, Balance::LeastRequests);
    let check = set.health_check.as_ref().unwrap();
    assert_eq!(check.path, "/healthz");
    assert_eq!(check.interval, Duration::from_secs(5));
    assert_eq!(check.timeout, Duration::from_secs(2));
    assert_eq!(
        set.tls.ca.as_deref(),
        Some(Path::new("certs/internal-ca.pem"))
    );
    assert!(set.tls.client_auth.is_some());
    assert_eq!(set.protocol, UpstreamProtocol::Http2);
    assert_eq!(set.max_connections, 32);
}

#[test]
fn one_upstream_gets_the_defaults() {
    let config = route_with("upstream = \"http://a:9000\"").unwrap();
    let set = http_set(&config);
    assert_eq!(set.targets.len(), 1);
    assert_eq!(set.balance, Balance::RoundRobin);
    assert_eq!(set.protocol, UpstreamProtocol::Http1);
    assert_eq!(set.max_connections, 256);
    assert!(set.health_check.is_none());
    let echo = route_with("upstreams = [\"builtin:echo\"]").unwrap();
    assert_eq!(echo.routes[0].upstream, Upstream::Echo);
}

#[test]
fn upstream_key_problems_name_file_line_and_key() {
    let cases = [
        (
            "upstream = \"http://a:1\"\nupstreams = [\"http://b:1\"]",
            "route[0].upstreams",
        ),
        ("auth = \"public\"", "route[0].upstream"),
        ("upstreams = []", "route[0].upstreams"),
        (
            "upstreams = [\"http://a:1\", \"http://a:1\"]",
            "route[0].upstreams",
        ),
        (
            "upstreams = [\"http://a:1\", \"builtin:echo\"]",
            "route[0].upstreams",
        ),
        (
            "upstream = \"http://a:1\"\nupstream_ca = \"ca.pem\"",
            "route[0].upstream_ca",
        ),
        (
            "upstream = \"https://a:1\"\nupstream_client_cert = \"c.pem\"",
            "route[0].upstream_client_key",
        ),
        (
            "upstream = \"http://a:1\"\nmax_upstream_connections = 0",
            "route[0].max_upstream_connections",
        ),
        (
            "upstream = \"builtin:echo\"\nbalance = \"round_robin\"",
            "route[0].balance",
        ),
        (
            "upstream = \"http://a:1\"\nhealth_check = { path = \"healthz\" }",
            "route[0].health_check",
        ),
        (
            "upstream = \"http://a:1\"\nhealth_check = { path = \"/h\", interval = \"0s\" }",
            "route[0].health_check",
        ),
    ];
    for (keys, key) in cases {
        let message = route_with(keys).unwrap_err().to_string();
        assert!(message.starts_with("gw.toml:6:"), "{keys}: {message}");
        assert!(message.contains(key), "{keys}: {message}");
    }
    // Values serde refuses carry their own line.
    let cases = [
        (
            "upstream = \"http://a:1\"\nbalance = \"random\"",
            "gw.toml:10:",
            "balance",
        ),
        (
            "upstream = \"http://a:1\"\nupstream_protocol = \"h3\"",
            "gw.toml:10:",
            "upstream_protocol",
        ),
        (
            "upstream = \"http://a:1\"\nhealth_check = { path = \"/h\", every = \"1s\" }",
            "gw.toml:10:",
            "every",
        ),
    ];
    for (keys, at, key) in cases {
        let message = route_with(keys).unwrap_err().to_string();
        assert!(message.starts_with(at), "{keys}: {message}");
        assert!(message.contains(key), "{keys}: {message}");
    }
}
