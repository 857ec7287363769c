//! The PostgreSQL store against a real server (`AUTHGATE_TEST_DATABASE_URL`),
//! each test in a fresh database. Skipped without a server, except under
//! `CI=true` where a missing server fails.

use std::str::FromStr;
use std::sync::Arc;

use super::*;
use crate::config::DatabaseUrl;
use crate::store::{hex, ChainStep, Family, RefreshRecord, RotateOutcome, User, UserStamp};

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

/// A rotation step of generation `generation`, keeping the presented token
/// until its own expiry (as for a login token).
fn step(generation: u64) -> ChainStep {
    ChainStep {
        generation,
        tag_key: [7; 32],
        keep_presented_until: None,
    }
}

pub(crate) fn user(id: &str, email: &str) -> User {
    User {
        id: id.to_owned(),
        email: email.to_owned(),
        role: "viewer".to_owned(),
        password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".to_owned(),
        created_at: 1_000,
        token_version: 0,
    }
}

pub(crate) fn family(id: &str, user_id: &str, expires_at: u64) -> Family {
    Family {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        created_at: 1_000,
        expires_at,
        revoked_at: None,
    }
}

pub(crate) fn record(family_id: &str, user_id: &str, expires_at: u64) -> RefreshRecord {
    RefreshRecord {
        family_id: family_id.to_owned(),
        user_id: user_id.to_owned(),
        expires_at,
        rotated_at: None,
        replaced_by: None,
    }
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

#[tokio::test]
async fn users_emails_versions_and_deletion() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.open().await;
    store.create_user(&user("b", "b@x.io")).await.unwrap();
    store.create_user(&user("a", "a@x.io")).await.unwrap();
    assert!(matches!(
        store.create_user(&user("c", "a@x.io")).await,
        Err(StoreError::EmailTaken)
    ));
    let page = store.list_users(None, 10).await.unwrap();
    assert_eq!(
        page.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(store.list_users(Some("a"), 10).await.unwrap().len(), 1);
    assert_eq!(
        store.user_by_email("b@x.io").await.unwrap().unwrap().id,
        "b"
    );
    let updated = store.set_role("a", "admin").await.unwrap().unwrap();
    assert_eq!((updated.role.as_str(), updated.token_version), ("admin", 1));
    let rehashed = store
        .set_password("a", &user("a", "").password_hash, "h2", false)
        .await
        .unwrap()
        .unwrap();
    // Compare-and-swap: a stale verified hash changes nothing.
    assert!(matches!(
        store.set_password("a", "stale", "h9", true).await,
        Err(StoreError::UserChanged(_))
    ));
    assert_eq!(rehashed.token_version, 1);
    let changed = store
        .set_password("a", "h2", "h3", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.token_version, 2);
    assert_eq!(
        store.token_versions().await.unwrap(),
        vec![("a".to_owned(), 2)]
    );
    assert!(store.set_role("nobody", "admin").await.unwrap().is_none());
    create_family(
        &store,
        &family("f1", "b", 10_000),
        &[1; 32],
        &record("f1", "b", 5_000),
    )
    .await
    .unwrap();
    assert_eq!(
        store.delete_user("b", 2_000).await.unwrap().unwrap().id,
        "b"
    );
    assert!(store.refresh_record(&[1; 32]).await.unwrap().is_none());
    assert!(store.family("f1").await.unwrap().is_none());
    assert_eq!(
        store.deleted_user_ids().await.unwrap(),
        vec!["b".to_owned()]
    );
    assert!(matches!(
        create_family(
            &store,
            &family("f2", "b", 10_000),
            &[2; 32],
            &record("f2", "b", 5_000)
        )
        .await,
        Err(StoreError::UnknownUser(_))
    ));
    // The email is free again.
    store.create_user(&user("b2", "b@x.io")).await.unwrap();
}

#[tokio::test]
async fn rotation_reuse_revocation_and_sweep() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = db.open().await;
    store.create_user(&user("u1", "a@x.io")).await.unwrap();
    create_family(
        &store,
        &family("f1", "u1", 10_000),
        &[1; 32],
        &record("f1", "u1", 5_000),
    )
    .await
    .unwrap();
    let outcome = store
        .rotate(
            &[1; 32],
            &[2; 32],
            &record("f1", "u1", 20_000),
            &step(1),
            1_500,
        )
        .await
        .unwrap();
    assert!(matches!(outcome, RotateOutcome::Rotated { .. }));
    // Capped at the family's end.
    assert_eq!(
        store
            .refresh_record(&[2; 32])
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        10_000
    );
    let old = store.refresh_record(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(old.rotated_at, Some(1_500));
    assert_eq!(old.replaced_by, Some(hex(&[2; 32])));
    let again = store
        .rotate(
            &[1; 32],
            &[3; 32],
            &record("f1", "u1", 5_000),
            &step(2),
            1_600,
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        RotateOutcome::AlreadyRotated {
            rotated_at: 1_500,
            family_id: "f1".to_owned()
        }
    );
    assert_eq!(
        store
            .rotate(
                &[9; 32],
                &[3; 32],
                &record("f1", "u1", 5_000),
                &step(2),
                1_600
            )
            .await
            .unwrap(),
        RotateOutcome::Unknown
    );
    assert!(store.revoke_family("f1", 1_700).await.unwrap());
    assert!(!store.revoke_family("f1", 1_800).await.unwrap());
    assert_eq!(
        store
            .rotate(
                &[2; 32],
                &[3; 32],
                &record("f1", "u1", 5_000),
                &step(2),
                1_900
            )
            .await
            .unwrap(),
        RotateOutcome::FamilyRevoked {
            family_id: "f1".to_owned()
        }
    );
    assert_eq!(
        store.revoked_families_since(1_700).await.unwrap(),
        vec![("f1".to_owned(), 1_700)]
    );
    create_family(
        &store,
        &family("f2", "u1", 10_000),
        &[4; 32],
        &record("f2", "u1", 5_000),
    )
    .await
    .unwrap();
    create_family(
        &store,
        &family("f3", "u1", 3_000),
        &[5; 32],
        &record("f3", "u1", 3_000),
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .revoke_user_families("u1", Some("f2"), 2_000)
            .await
            .unwrap(),
        vec!["f3".to_owned()]
    );
    // f3 (family 3_000) goes with its token; f1's and f2's tokens at 5_000 stay.
    assert_eq!(store.sweep_expired(3_000).await.unwrap(), 2);
    assert!(store.family("f3").await.unwrap().is_none());
    assert!(store.family("f2").await.unwrap().is_some());
    assert_eq!(store.prune_revocations(1_800).await.unwrap(), 1);
}

#[tokio::test]
async fn parallel_rotations_of_one_token_mint_one_successor() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = Arc::new(db.open().await);
    // A second store is a second instance: its own pool on the same database.
    let other = Arc::new(db.open().await);
    store.create_user(&user("u1", "a@x.io")).await.unwrap();
    create_family(
        &store,
        &family("f1", "u1", 10_000),
        &[1; 32],
        &record("f1", "u1", 5_000),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let store = if i % 2 == 0 {
            Arc::clone(&store)
        } else {
            Arc::clone(&other)
        };
        tasks.push(tokio::spawn(async move {
            store
                .rotate(
                    &[1; 32],
                    &[100 + i; 32],
                    &record("f1", "u1", 5_000),
                    &step(1),
                    2_000,
                )
                .await
                .unwrap()
        }));
    }
    let mut rotated = 0;
    for task in tasks {
        match task.await.unwrap() {
            RotateOutcome::Rotated { .. } => rotated += 1,
            RotateOutcome::AlreadyRotated { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(rotated, 1);
    let count: i64 = db
        .admin()
        .await
        .query_one("SELECT count(*) FROM refresh_tokens", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
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
