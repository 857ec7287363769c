//! Bounded durations and counts: absurd values refused with their key,
//! values inside their ranges kept.

use super::*;

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
        ("", "workers = 0"),
        ("", "workers = 1025"),
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
        "{MINIMAL}max_connections = 1000000\nshutdown_grace = \"0s\"\nworkers = 1\n\
         [tokens]\naccess_ttl = \"1d\"\nrefresh_ttl = \"3650d\"\nleeway = \"0s\"\n\
         [auth.password]\nhash_queue = 0\n"
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.server.max_connections, 1_000_000);
    assert_eq!(config.server.workers, 1);
    assert_eq!(config.server.shutdown_grace, Duration::ZERO);
    assert_eq!(config.tokens.access_ttl, Duration::from_secs(86_400));
    assert_eq!(
        config.tokens.refresh_ttl,
        Duration::from_secs(3_650 * 86_400)
    );
    assert_eq!(config.auth.password.hash_queue, 0);
}
