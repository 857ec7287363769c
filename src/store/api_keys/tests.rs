//! The API-key operations of both stores, by one script over `dyn Store`.

use super::*;
use crate::store::{hex, SledStore, Store, StoreError, User};

fn user(id: &str, email: &str) -> User {
    User {
        id: id.to_owned(),
        email: email.to_owned(),
        role: "admin".to_owned(),
        password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".to_owned(),
        created_at: 1_000,
        token_version: 0,
    }
}

fn key(id: &str, user_id: &str, created_at: u64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        name: format!("key {id}"),
        role: "viewer".to_owned(),
        hash: hex(&crate::digest::sha256(&[id.as_bytes()])),
        created_at,
        expires_at: Some(9_000),
        last_used_at: None,
        revoked_at: None,
    }
}

async fn keys_live_revoke_touch_and_go_with_their_owner(store: &dyn Store) {
    store
        .create_user(&user("u1", "a@example.com"))
        .await
        .unwrap();
    store
        .create_user(&user("u2", "b@example.com"))
        .await
        .unwrap();
    let (k1, k2, k3) = (
        key("k1", "u1", 20),
        key("k2", "u1", 10),
        key("k3", "u2", 30),
    );
    for k in [&k1, &k2, &k3] {
        store.create_api_key(k).await.unwrap();
    }
    store.flush().await.unwrap();
    assert!(matches!(
        store.create_api_key(&key("k4", "nobody", 1)).await,
        Err(StoreError::UnknownUser(_))
    ));
    assert_eq!(store.api_key("k1").await.unwrap(), Some(k1.clone()));
    assert_eq!(store.api_key("zz").await.unwrap(), None);
    // Oldest first.
    assert_eq!(
        store.user_api_keys("u1").await.unwrap(),
        vec![k2.clone(), k1.clone()]
    );

    let revoked = store.revoke_api_key("k1", 500).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(500));
    // Idempotent: the first revocation's time stays.
    let again = store.revoke_api_key("k1", 600).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, Some(500));
    assert_eq!(store.revoke_api_key("zz", 600).await.unwrap(), None);
    let mut live = store.live_api_keys().await.unwrap();
    live.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    assert_eq!(
        live,
        vec![
            (k2.clone(), "admin".to_owned()),
            (k3.clone(), "admin".to_owned())
        ]
    );
    // Revoked keys are still listed to their owner.
    assert_eq!(store.user_api_keys("u1").await.unwrap().len(), 2);

    store.touch_api_key("k2", 700).await.unwrap();
    store.touch_api_key("k2", 650).await.unwrap();
    store.touch_api_key("zz", 650).await.unwrap();
    assert_eq!(
        store.api_key("k2").await.unwrap().unwrap().last_used_at,
        Some(700)
    );

    store.delete_user("u1", 800).await.unwrap().unwrap();
    assert_eq!(store.api_key("k1").await.unwrap(), None);
    assert_eq!(store.api_key("k2").await.unwrap(), None);
    assert!(store.user_api_keys("u1").await.unwrap().is_empty());
    let live = store.live_api_keys().await.unwrap();
    assert_eq!(live, vec![(k3, "admin".to_owned())]);
}

#[tokio::test]
async fn sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    keys_live_revoke_touch_and_go_with_their_owner(&store).await;
    // And they survive a reopen.
    drop(store);
    let store = crate::store::tests::reopen_sled(&dir.path().join("db"));
    assert_eq!(store.live_api_keys().unwrap().len(), 1);
}

#[tokio::test]
async fn postgres() {
    let Some(db) = crate::store::postgres::tests::TestDb::create().await else {
        return;
    };
    let store = crate::store::PostgresStore::open(&db.config).await.unwrap();
    keys_live_revoke_touch_and_go_with_their_owner(&store).await;
}
