//! `[store]`: the backend, its URL (from the file or the environment) and
//! errors that never show the password.

use super::*;

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
