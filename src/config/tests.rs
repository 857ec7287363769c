use std::collections::BTreeSet;

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
    ];
    for (keys, key) in cases {
        let message = route_with(keys).unwrap_err().to_string();
        assert!(message.starts_with("gw.toml:6:"), "{keys}: {message}");
        assert!(message.contains(key), "{keys}: {message}");
    }
    // A zero interval is out of the duration's range, refused inside serde
    // at the value itself.
    let message = route_with(
        "upstream = \"http://a:1\"\nhealth_check = { path = \"/h\", interval = \"0s\" }",
    )
    .unwrap_err()
    .to_string();
    assert!(message.starts_with("gw.toml:10:"), "{message}");
    assert!(message.contains("health_check"), "{message}");
    assert!(message.contains("out of range"), "{message}");
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

/// Each value is refused at load with `gw.toml:LINE:COL: key: ...out of range`,
/// instead of overflowing a deadline or a semaphore after the start.
fn assert_out_of_range(table: &str, line: &str) {
    let text = format!("{MINIMAL}{table}\n{line}\n");
    let key = line.split('=').next().unwrap().trim();
    let line_number = text.lines().count();
    let message = error_text(&text);
    assert!(
        message.starts_with(&format!("gw.toml:{line_number}:")),
        "{line}: {message}"
    );
    assert!(message.contains(&format!(": {key}: ")), "{line}: {message}");
    assert!(message.contains("out of range"), "{line}: {message}");
}

#[test]
fn absurd_durations_are_refused_with_their_key() {
    for (table, line) in [
        ("[tokens]", "access_ttl = \"18446744073709551615s\""),
        ("[tokens]", "access_ttl = \"2d\""),
        ("[tokens]", "refresh_ttl = \"100000d\""),
        ("[tokens]", "session_max_age = \"0s\""),
        ("[tokens]", "leeway = \"2h\""),
        (
            "[tokens]",
            "refresh_reuse_grace = \"18446744073709551615ms\"",
        ),
        ("", "body_read_timeout = \"18446744073709551615s\""),
        ("", "header_read_timeout = \"0ms\""),
        ("", "idle_timeout = \"1000d\""),
        ("", "shutdown_grace = \"2d\""),
        ("[auth.throttle]", "window = \"100000d\""),
        ("[auth.throttle]", "max_lockout = \"18446744073709551615s\""),
    ] {
        assert_out_of_range(table, line);
    }
    let route = format!(
        "{MINIMAL}[[route]]\nname = \"r\"\npath_prefix = \"/r/\"\nupstream = \"builtin:echo\"\ntimeout = \"18446744073709551615s\"\n"
    );
    let message = error_text(&route);
    assert!(message.starts_with("gw.toml:9:"), "{message}");
    assert!(message.contains("timeout"), "{message}");
}

#[test]
fn absurd_counts_are_refused_with_their_key() {
    for (table, line) in [
        // One past tokio's semaphore maximum (usize::MAX >> 3) on 64 bits.
        ("", "max_connections = 2305843009213693952"),
        ("", "max_connections = 0"),
        ("", "max_headers = 1000000"),
        ("", "max_header_bytes = 9223372036854775807"),
        ("", "max_uri_bytes = -1"),
        ("", "h2_max_concurrent_streams = 0"),
        ("[auth]", "max_body = 1073741824"),
        ("[auth.password]", "hash_queue = 9223372036854775807"),
        ("[auth.password]", "hash_workers = 0"),
        ("[auth.password]", "memory_kib = 4294967295"),
        ("[auth.throttle]", "max_entries = 9223372036854775807"),
        ("[auth.throttle]", "account_failures = -5"),
    ] {
        assert_out_of_range(table, line);
    }
}

#[test]
fn bounded_values_inside_their_ranges_are_kept() {
    let text = format!(
        "{MINIMAL}max_connections = 1000000\nshutdown_grace = \"0s\"\n\
         [tokens]\naccess_ttl = \"1d\"\nrefresh_ttl = \"3650d\"\nleeway = \"0s\"\n\
         [auth.password]\nhash_queue = 0\n"
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.server.max_connections, 1_000_000);
    assert_eq!(config.server.shutdown_grace, Duration::ZERO);
    assert_eq!(config.tokens.access_ttl, Duration::from_secs(86_400));
    assert_eq!(
        config.tokens.refresh_ttl,
        Duration::from_secs(3_650 * 86_400)
    );
    assert_eq!(config.auth.password.hash_queue, 0);
}

/// A key no table accepts, so the loader answers with the keys it does.
const PROBE: &str = "zz_probe";

/// The keys the table at `path` accepts, or `None` when `path` is not a
/// table (or array of tables). Asks the loader itself: serde's
/// `deny_unknown_fields` refuses the probe key with the list of accepted ones.
fn accepted_fields(path: &[&str]) -> Option<Vec<String>> {
    for as_array in [false, true] {
        let mut doc: toml::Table = MINIMAL.parse().unwrap();
        let mut probe = toml::Table::new();
        probe.insert(PROBE.to_owned(), toml::Value::Integer(1));
        let Some((last, parents)) = path.split_last() else {
            doc.extend(probe);
            return refused_fields(&doc);
        };
        let mut table = &mut doc;
        for segment in parents {
            let entry = table
                .entry(segment.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut()?;
        }
        if as_array {
            table.insert(
                last.to_string(),
                toml::Value::Array(vec![toml::Value::Table(probe)]),
            );
        } else {
            let entry = table
                .entry(last.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry.as_table_mut() {
                Some(existing) => existing.extend(probe),
                None => *entry = toml::Value::Table(probe),
            }
        }
        if let Some(fields) = refused_fields(&doc) {
            return Some(fields);
        }
    }
    None
}

/// The accepted keys the loader names when it refuses the probe in `doc`.
fn refused_fields(doc: &toml::Table) -> Option<Vec<String>> {
    let message = error_text(&toml::to_string(doc).unwrap());
    let (_, rest) = message.split_once(&format!("unknown field `{PROBE}`"))?;
    // "expected one of `a`, `b`", "expected `a` or `b`", or "there are no fields".
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every key the loader accepts, as `table.key` (`auth.password.memory_kib`,
/// `route.websocket` for `[[route]]`), walking the tables from the root.
fn accepted_keys(path: &mut Vec<String>, keys: &mut BTreeSet<String>) {
    let borrowed: Vec<&str> = path.iter().map(String::as_str).collect();
    let Some(fields) = accepted_fields(&borrowed) else {
        keys.insert(path.join("."));
        return;
    };
    for field in fields {
        path.push(field);
        accepted_keys(path, keys);
        path.pop();
    }
}

/// The keys `config/authgate.toml` lists, set or commented out, as `table.key`.
fn shipped_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches([' ', '#']).trim_end();
        let header = line
            .strip_prefix("[[")
            .and_then(|l| l.strip_suffix("]]"))
            .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')));
        if let Some(name) = header.filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
        }) {
            table = name.to_owned();
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            keys.insert(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    keys
}

#[test]
fn the_shipped_config_lists_every_key_the_loader_accepts() {
    let mut accepted = BTreeSet::new();
    accepted_keys(&mut Vec::new(), &mut accepted);
    // The walk itself works: it reaches nested tables and the route array.
    for known in [
        "server.listen",
        "tokens.access_ttl",
        "store.path",
        "auth.throttle.window",
        "route.upstream",
    ] {
        assert!(
            accepted.contains(known),
            "{known} not found in {accepted:?}"
        );
    }
    let shipped = shipped_keys(include_str!("../../config/authgate.toml"));
    let missing: Vec<_> = accepted.difference(&shipped).collect();
    assert!(
        missing.is_empty(),
        "config/authgate.toml claims to list every key but lacks {missing:?}; add each, \
         commented out with its default unless the example sets it"
    );
    let unknown: Vec<_> = shipped.difference(&accepted).collect();
    assert!(
        unknown.is_empty(),
        "config/authgate.toml lists keys the loader refuses: {unknown:?}"
    );
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
