//! What only the PostgreSQL store has, against a real server
//! (`AUTHGATE_TEST_DATABASE_URL`), each test in a fresh database: migrations
//! and the read-only check; `TestDb` for every PostgreSQL test. Behaviour
//! shared with sled is tested once for both in `store/tests/`. Skipped
//! without a server, except under `CI=true` where a missing server fails.

use std::str::FromStr;

use super::*;
use crate::config::DatabaseUrl;
use crate::store::{Family, RefreshRecord, UserStamp};
// The fixtures the tests shared by both backends use.
pub(crate) use crate::store::tests::{family, record, user};

/// A fresh database on the test server, dropped at the end.
pub(crate) struct TestDb {
    pub config: PostgresConfig,
    admin: String,
    pub name: String,
}

impl TestDb {
    pub(crate) async fn create() -> Option<Self> {
        let admin = match std::env::var("AUTHGATE_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("AUTHGATE_TEST_DATABASE_URL is not set and CI=true")
            }
            _ => {
                eprintln!("skipped: AUTHGATE_TEST_DATABASE_URL is not set");
                return None;
            }
        };
        let name = format!("authgate_unit_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut driver = tokio_postgres::Config::from_str(&admin).unwrap();
        driver.dbname(&name);
        let url = format!(
            "host={} port={} user={} dbname={name} sslmode=disable{}",
            match &driver.get_hosts()[0] {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            },
            driver.get_ports().first().copied().unwrap_or(5432),
            driver.get_user().unwrap_or("postgres"),
            driver
                .get_password()
                .map(|p| format!(" password={}", String::from_utf8_lossy(p)))
                .unwrap_or_default(),
        );
        Some(Self {
            config: PostgresConfig {
                url: DatabaseUrl::parse(&url).unwrap(),
                max_connections: 8,
                tls_ca: None,
            },
            admin,
            name,
        })
    }

    pub(crate) async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.config).await.unwrap()
    }

    /// A client on the server's admin database (for ALTER DATABASE).
    pub(crate) async fn server(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    pub(crate) async fn admin(&self) -> tokio_postgres::Client {
        let mut driver = self.config.url.driver_config().clone();
        driver.dbname(&self.name);
        let (client, connection) = driver.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// `create_family` with the user's current stamp, as a login would pass it.
pub(crate) async fn create_family(
    store: &PostgresStore,
    family: &Family,
    token: &[u8; 32],
    record: &RefreshRecord,
) -> Result<(), StoreError> {
    let stamp = match store.user_by_id(&family.user_id).await? {
        Some(user) => UserStamp::of(&user),
        None => UserStamp {
            token_version: 0,
            password_hash: String::new(),
        },
    };
    store.create_family(family, token, record, &stamp).await
}

#[tokio::test]
async fn migrations_are_applied_once_even_when_raced() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (a, b, c) = tokio::join!(
        PostgresStore::open(&db.config),
        PostgresStore::open(&db.config),
        PostgresStore::open(&db.config)
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let admin = db.admin().await;
    let version: i64 = admin
        .query_one("SELECT version FROM authgate_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn a_newer_schema_stops_the_start() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    db.open().await;
    db.admin()
        .await
        .batch_execute("UPDATE authgate_schema SET version = version + 1")
        .await
        .unwrap();
    let err = PostgresStore::open(&db.config).await.err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    assert!(
        err.to_string().contains("newer than this authgate"),
        "{err}"
    );
}

/// Readiness asks the store whether it takes writes: a database set
/// read-only (as a replica or a maintenance switch leaves it) does not.
#[tokio::test]
async fn a_read_only_database_is_not_writable() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.open().await;
    store.check_writable().await.unwrap();
    let server = db.server().await;
    server
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{name}' AND pid <> pg_backend_pid();",
            name = db.name
        ))
        .await
        .unwrap();
    // Settings apply to new sessions: the pool's old connections were
    // ended, so within a few checks one runs on a new session.
    let mut outcome = store.check_writable().await;
    for _ in 0..10 {
        if !matches!(outcome, Err(StoreError::Unavailable(_))) {
            break;
        }
        outcome = store.check_writable().await;
    }
    assert!(
        matches!(outcome, Err(StoreError::ReadOnly(_))),
        "{outcome:?}"
    );
}
