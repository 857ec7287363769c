//! Users on either backend: lookup and paging, the email index, role,
//! password and version changes as compare-and-swap, and the access
//! lifetimes remembered across restarts.

use super::*;

store_tests! {
    users_by_id_email_and_page,
    ids_with_nul_are_refused,
    role_password_and_version_changes,
    a_password_is_replaced_only_over_the_hash_verified,
    a_lowered_access_lifetime_is_remembered_until_its_tokens_expire,
}

async fn users_by_id_email_and_page(store: Backend) {
    for (id, email) in [("b", "b@x.io"), ("a", "a@x.io"), ("c", "c@x.io")] {
        store.create_user(&user(id, email)).await.unwrap();
    }
    assert_eq!(
        store.user_by_id("a").await.unwrap().unwrap().email,
        "a@x.io"
    );
    assert_eq!(
        store.user_by_email("c@x.io").await.unwrap().unwrap().id,
        "c"
    );
    assert!(store.user_by_email("z@x.io").await.unwrap().is_none());
    assert!(matches!(
        store.create_user(&user("d", "a@x.io")).await,
        Err(StoreError::EmailTaken)
    ));
    // The failed create left nothing behind.
    assert!(store.user_by_id("d").await.unwrap().is_none());
    // A second user under a taken id is refused, not merged.
    assert!(matches!(
        store.create_user(&user("a", "other@x.io")).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store.user_by_email("other@x.io").await.unwrap().is_none());

    let ids = |users: Vec<User>| users.into_iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_users(None, 2).await.unwrap()), ["a", "b"]);
    assert_eq!(ids(store.list_users(Some("b"), 2).await.unwrap()), ["c"]);
    assert!(store.list_users(Some("c"), 2).await.unwrap().is_empty());
}

async fn ids_with_nul_are_refused(store: Backend) {
    assert!(matches!(
        store.create_user(&user("a\0b", "a@x.io")).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.create_user(&user("", "a@x.io")).await,
        Err(StoreError::Invalid(_))
    ));
    store.create_user(&user("u1", "a@x.io")).await.unwrap();
    assert!(matches!(
        store
            .create_family(
                &family("f\0x", "u1", 10_000),
                &[1; 32],
                &record("f\0x", "u1", 5_000),
                &fresh(),
            )
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.record_counts().await.unwrap().families, 0);
}

async fn role_password_and_version_changes(store: Backend) {
    store.create_user(&user("u1", "a@x.io")).await.unwrap();
    store.create_user(&user("u2", "b@x.io")).await.unwrap();

    let changed = store.set_role("u1", "admin").await.unwrap().unwrap();
    assert_eq!((changed.role.as_str(), changed.token_version), ("admin", 1));
    let rehashed = store
        .set_password("u1", &user("u1", "").password_hash, "new-hash", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rehashed.password_hash.as_str(), rehashed.token_version),
        ("new-hash", 1)
    );
    assert_eq!(
        store
            .set_password("u1", "new-hash", "h2", true)
            .await
            .unwrap()
            .unwrap()
            .token_version,
        2
    );
    assert_eq!(
        store
            .bump_token_version("u1")
            .await
            .unwrap()
            .unwrap()
            .token_version,
        3
    );
    assert!(store.set_role("nobody", "admin").await.unwrap().is_none());
    assert!(store.bump_token_version("nobody").await.unwrap().is_none());
    assert_eq!(
        store.token_versions().await.unwrap(),
        [("u1".to_owned(), 3)]
    );
}

async fn a_password_is_replaced_only_over_the_hash_verified(store: Backend) {
    let original = user("u1", "a@x.io");
    store.create_user(&original).await.unwrap();
    // A change committed while a login was verifying the original hash.
    store
        .set_password("u1", &original.password_hash, "changed", true)
        .await
        .unwrap();
    // The login's rehash of the old password must not revert it.
    assert!(matches!(
        store
            .set_password("u1", &original.password_hash, "rehash-of-old", false)
            .await,
        Err(StoreError::UserChanged(_))
    ));
    let user = store.user_by_id("u1").await.unwrap().unwrap();
    assert_eq!(
        (user.password_hash.as_str(), user.token_version),
        ("changed", 1)
    );
    assert!(store
        .set_password("nobody", "changed", "x", false)
        .await
        .unwrap()
        .is_none());
}

async fn a_lowered_access_lifetime_is_remembered_until_its_tokens_expire(mut store: Backend) {
    // First run: one hour.
    assert_eq!(
        store.note_access_lifetime(3_600, 1_000).await.unwrap(),
        3_600
    );
    store.restart().await;
    // Restarted at 2_000 with five minutes: the first run's tokens may live
    // until 2_000 + 3_600.
    assert_eq!(store.note_access_lifetime(300, 2_000).await.unwrap(), 3_600);
    assert_eq!(store.note_access_lifetime(300, 5_599).await.unwrap(), 3_600);
    // Once they have all expired, the shorter lifetime is the window.
    assert_eq!(store.note_access_lifetime(300, 5_600).await.unwrap(), 300);
    // A longer lifetime is its own window at once.
    assert_eq!(
        store.note_access_lifetime(7_200, 5_700).await.unwrap(),
        7_200
    );
    assert_eq!(store.note_access_lifetime(60, 5_800).await.unwrap(), 7_200);
}
