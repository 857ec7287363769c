//! Fuzzes `authgate::config::Config::parse` with arbitrary text: it must never
//! panic, every error must name a line and column inside the text, and every
//! accepted config must hold the invariants other modules rely on.

#![no_main]

use std::path::Path;

use authgate::config::{normalize_host, Config};
use authgate::proxy::headers::IdentityHeaders;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("fuzz.toml"), text) {
        Err(err) => {
            let message = err.to_string();
            assert!(message.starts_with("fuzz.toml:"), "{message}");
            if let authgate::config::ConfigError::Invalid { line, column, .. } = err {
                let lines = text.split('\n').count();
                assert!(
                    line >= 1 && line <= lines.max(1) && column >= 1,
                    "error at {line}:{column} in a text of {lines} lines: {message}"
                );
            }
        }
        Ok(config) => check(&config),
    }
});

fn check(config: &Config) {
    let prefix = &config.server.identity_header_prefix;
    assert!(
        prefix.len() >= 3 && !prefix.contains(['_', '.']) && prefix == &prefix.to_ascii_lowercase(),
        "identity prefix {prefix:?}"
    );
    // The gateway builds its injected header names from the prefix at start.
    assert!(IdentityHeaders::new(prefix).is_ok(), "prefix {prefix:?}");
    let auth = &config.auth.path_prefix;
    assert!(
        auth.starts_with('/') && auth.len() >= 2 && !auth.ends_with('/'),
        "auth prefix {auth:?}"
    );
    for (i, route) in config.routes.iter().enumerate() {
        assert!(route.path_prefix.starts_with('/'), "{route:?}");
        // Issue 8 item 7: a prefix is spelled as a decided path, and holds
        // no character a client could spell a second way (percent-encoded).
        assert_eq!(
            authgate::path::decide(&route.path_prefix).map(|d| d.as_str().to_owned()),
            Ok(route.path_prefix.clone()),
            "prefix not in decided form"
        );
        assert!(
            route
                .path_prefix
                .bytes()
                .all(|b| b == b'/' || b.is_ascii_alphanumeric() || b"-._~".contains(&b)),
            "prefix {:?} holds a character with two spellings",
            route.path_prefix
        );
        assert!(
            config
                .routes
                .iter()
                .skip(i + 1)
                .all(|r| r.name != route.name),
            "route name {:?} twice",
            route.name
        );
        let under_auth = route.path_prefix.strip_prefix(auth.as_str());
        assert!(
            !under_auth.is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            "route {:?} under the account endpoints {auth:?}",
            route.path_prefix
        );
        if let Some(host) = &route.host {
            assert_eq!(&normalize_host(host), host, "host not normalized");
        }
        if let Some(roles) = &route.roles {
            assert!(!roles.is_empty(), "empty role list");
            assert!(
                roles
                    .iter()
                    .all(|r| authgate::account::Role::parse(r.as_str()).is_ok()),
                "{roles:?}"
            );
        }
    }
}
