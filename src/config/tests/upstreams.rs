//! A route's upstream: targets, their keys, defaults and errors.

use super::*;

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
    assert_eq!(set.max_connections, 64);
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
