//! The revocation list fed by the PostgreSQL listener: another instance's
//! revocations arrive within a second; a feed held down goes stale and
//! catches up. Real server (`AUTHGATE_TEST_DATABASE_URL`), skipped without.

use std::sync::Arc;

use super::RevocationList;
use crate::store::postgres::tests::{create_family, family, record, user, TestDb};
use crate::store::postgres::{spawn_listener, LISTENER_NAME};

/// Polls `check` every 10 ms until it holds or `limit` passes.
pub(crate) async fn eventually(
    limit: std::time::Duration,
    mut check: impl FnMut() -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_revocations_reach_the_list_within_a_second() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = db.open().await;
    let b = db.open().await;
    b.create_user(&user("u1", "a@x.io")).await.unwrap();
    b.create_user(&user("u2", "b@x.io")).await.unwrap();
    create_family(
        &b,
        &family("f1", "u1", 10_000),
        &[1; 32],
        &record("f1", "u1", 5_000),
    )
    .await
    .unwrap();
    let list = Arc::new(RevocationList::default());
    let _listener = spawn_listener(
        &a,
        Arc::clone(&list) as Arc<dyn crate::store::postgres::RevocationFeed>,
        std::time::Duration::from_secs(900),
        std::time::Duration::from_secs(30),
    );
    let second = std::time::Duration::from_secs(1);
    // The listener is up once a version bump is seen; give the first
    // connection its time, then hold every later revocation to 1 s.
    b.bump_token_version("u1").await.unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(10), || !list
            .allows("u1", 0, None))
        .await
    );
    b.set_role("u1", "admin").await.unwrap();
    assert!(eventually(second, || !list.allows("u1", 1, None)).await);
    assert!(list.allows("u1", 2, Some("f1")));
    // Family revocation: use the real clock, so the session stays refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    b.revoke_family("f1", now).await.unwrap();
    assert!(eventually(second, || !list.allows("u1", 2, Some("f1"))).await);
    b.delete_user("u2", now).await.unwrap();
    assert!(eventually(second, || !list.allows("u2", u32::MAX - 1, None)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_held_down_goes_stale_then_catches_up() {
    use std::time::{Duration, SystemTime};
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = db.open().await;
    let b = db.open().await;
    b.create_user(&user("u1", "a@x.io")).await.unwrap();
    let list = Arc::new(RevocationList::default());
    let _listener = spawn_listener(
        &a,
        Arc::clone(&list) as Arc<dyn crate::store::postgres::RevocationFeed>,
        Duration::from_secs(900),
        Duration::from_millis(300),
    );
    b.bump_token_version("u1").await.unwrap();
    assert!(eventually(Duration::from_secs(10), || !list.allows("u1", 0, None)).await);
    assert_eq!(list.stale_for(SystemTime::now()), None);
    // Hold the listener down: no new connections to this database, and its
    // current one terminated. b's pooled connections stay open.
    let admin = db.server().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            db.name
        ))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1",
            &[&LISTENER_NAME],
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || list
            .stale_for(SystemTime::now())
            .is_some())
        .await,
        "the list never went stale"
    );
    // Missed while down, applied on reconnect.
    b.bump_token_version("u1").await.unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || list
            .stale_for(SystemTime::now())
            .is_none())
        .await,
        "the list never caught up"
    );
    assert!(!list.allows("u1", 1, None));
    assert!(list.allows("u1", 2, None));
}
