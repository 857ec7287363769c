//! Session lifecycle on either backend: creation only for the user as
//! verified, revocation, the per-user cap, deletion with its tombstone,
//! and the sweep and prune that remove what expired.

use super::*;

store_tests! {
    families_need_a_living_user,
    a_session_is_created_only_for_the_user_as_verified,
    revoking_a_users_families_spares_the_exception,
    deleting_a_user_removes_everything_but_a_tombstone,
    sweep_removes_what_expired,
    a_user_keeps_at_most_max_sessions_revoked_ones_going_first,
    purging_a_family_with_a_long_history_takes_every_token,
    deleting_a_user_with_a_long_session_history_removes_every_token,
}

async fn families_need_a_living_user(store: Backend) {
    assert!(matches!(
        store
            .create_family(
                &family("f1", "ghost", 10),
                &[1; 32],
                &record("f1", "ghost", 10),
                &fresh()
            )
            .await,
        Err(StoreError::UnknownUser(_))
    ));
    assert!(store.family("f1").await.unwrap().is_none());
    assert!(store.refresh_record(&[1; 32]).await.unwrap().is_none());
}

async fn a_session_is_created_only_for_the_user_as_verified(store: Backend) {
    with_session(&*store).await;
    let create = |id: &'static str, token: u8, stamp: UserStamp| {
        let store = store.shared();
        async move {
            store
                .create_family(
                    &family(id, "u1", 10_000),
                    &[token; 32],
                    &record(id, "u1", 5_000),
                    &stamp,
                )
                .await
        }
    };
    let current = || async { UserStamp::of(&store.user_by_id("u1").await.unwrap().unwrap()) };
    let stamp = current().await;
    // Logout-all (or a role change) committed after the check.
    store.bump_token_version("u1").await.unwrap();
    assert!(matches!(
        create("f2", 2, stamp).await,
        Err(StoreError::UserChanged(_))
    ));
    // A password change that happens to leave the version where it was seen.
    let stamp = current().await;
    store
        .set_password("u1", &stamp.password_hash, "other-hash", false)
        .await
        .unwrap();
    assert!(matches!(
        create("f3", 3, stamp).await,
        Err(StoreError::UserChanged(_))
    ));
    // Nothing of the refused sessions was stored.
    assert!(store.family("f2").await.unwrap().is_none());
    assert!(store.refresh_record(&[3; 32]).await.unwrap().is_none());
    let stamp = current().await;
    create("f4", 4, stamp.clone()).await.unwrap();
    store.delete_user("u1", 2_000).await.unwrap();
    assert!(matches!(
        create("f5", 5, stamp).await,
        Err(StoreError::UnknownUser(_))
    ));
}

async fn revoking_a_users_families_spares_the_exception(store: Backend) {
    with_session(&*store).await;
    for (id, token) in [("f2", 2u8), ("f3", 3)] {
        store
            .create_family(
                &family(id, "u1", 10_000),
                &[token; 32],
                &record(id, "u1", 5_000),
                &fresh(),
            )
            .await
            .unwrap();
    }
    store.revoke_family("f3", 1_500).await.unwrap();
    let mut revoked = store
        .revoke_user_families("u1", Some("f2"), 2_000)
        .await
        .unwrap();
    revoked.sort();
    assert_eq!(revoked, ["f1"]);
    assert!(store
        .family("f2")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    assert_eq!(
        store.revoked_families_since(1_600).await.unwrap(),
        [("f1".to_owned(), 2_000)]
    );
    assert_eq!(store.revoked_families_since(0).await.unwrap().len(), 2);
    assert_eq!(store.prune_revocations(1_600).await.unwrap(), 1);
    assert_eq!(store.revoked_families_since(0).await.unwrap().len(), 1);
    // Without an exception every live one goes, and only those.
    assert_eq!(
        store.revoke_user_families("u1", None, 2_100).await.unwrap(),
        ["f2"]
    );
}

async fn deleting_a_user_removes_everything_but_a_tombstone(store: Backend) {
    with_session(&*store).await;
    store
        .rotate(
            &[1; 32],
            &[2; 32],
            &record("f1", "u1", 9_000),
            &first_step(),
            2_000,
        )
        .await
        .unwrap();
    store
        .create_user(&user("u2", "b@example.com"))
        .await
        .unwrap();

    let deleted = store.delete_user("u1", 3_000).await.unwrap().unwrap();
    assert_eq!(deleted.email, "a@example.com");
    assert!(store.user_by_id("u1").await.unwrap().is_none());
    assert!(store
        .user_by_email("a@example.com")
        .await
        .unwrap()
        .is_none());
    assert!(store.family("f1").await.unwrap().is_none());
    assert!(store.chain("f1").await.unwrap().is_none());
    assert!(store.refresh_record(&[1; 32]).await.unwrap().is_none());
    assert!(store.refresh_record(&[2; 32]).await.unwrap().is_none());
    assert_eq!(store.deleted_user_ids().await.unwrap(), ["u1"]);
    assert!(store.delete_user("u1", 3_001).await.unwrap().is_none());
    // Nothing is left for the sweep, and the email can be registered again.
    assert_eq!(store.sweep_expired(u64::MAX - 1).await.unwrap(), 0);
    store
        .create_user(&user("u3", "a@example.com"))
        .await
        .unwrap();
    assert_eq!(store.prune_revocations(3_001).await.unwrap(), 1);
    assert!(store.deleted_user_ids().await.unwrap().is_empty());
}

async fn sweep_removes_what_expired(store: Backend) {
    with_session(&*store).await;
    store
        .create_family(
            &family("f2", "u1", 20_000),
            &[2; 32],
            &record("f2", "u1", 6_000),
            &fresh(),
        )
        .await
        .unwrap();
    store
        .rotate(
            &[2; 32],
            &[3; 32],
            &record("f2", "u1", 15_000),
            &first_step(),
            5_500,
        )
        .await
        .unwrap();
    assert_eq!(store.sweep_expired(4_999).await.unwrap(), 0);
    // Token 1 (5_000) and token 2 (6_000) are due; token 3 and both families live.
    assert_eq!(store.sweep_expired(6_000).await.unwrap(), 2);
    assert!(store.refresh_record(&[1; 32]).await.unwrap().is_none());
    assert!(store.refresh_record(&[3; 32]).await.unwrap().is_some());
    assert!(store.family("f1").await.unwrap().is_some());
    // Family 1 ends at 10_000: it goes, with nothing else.
    assert_eq!(store.sweep_expired(10_000).await.unwrap(), 1);
    assert!(store.family("f1").await.unwrap().is_none());
    // Family 2 goes with its remaining token and its chain.
    assert_eq!(store.sweep_expired(20_000).await.unwrap(), 3);
    assert!(store.family("f2").await.unwrap().is_none());
    assert!(store.chain("f2").await.unwrap().is_none());
    assert!(store.refresh_record(&[3; 32]).await.unwrap().is_none());
    assert_eq!(store.sweep_expired(u64::MAX).await.unwrap(), 0);
}

async fn a_user_keeps_at_most_max_sessions_revoked_ones_going_first(store: Backend) {
    store
        .create_user(&user("u1", "a@example.com"))
        .await
        .unwrap();
    for (n, id) in ["f1", "f2", "f3", "f4"].iter().enumerate() {
        let mut session = family(id, "u1", 10_000);
        session.created_at = 1_000 + n as u64;
        store
            .create_family(
                &session,
                &[n as u8 + 1; 32],
                &record(id, "u1", 5_000),
                &fresh(),
            )
            .await
            .unwrap();
    }
    store.revoke_family("f3", 1_500).await.unwrap();
    assert_eq!(
        store.cap_user_families("u1", 4, 2_000).await.unwrap(),
        Vec::<String>::new()
    );
    // Two too many: the revoked f3 goes first, then the oldest live, f1.
    assert_eq!(
        store.cap_user_families("u1", 2, 2_000).await.unwrap(),
        ["f1"]
    );
    assert_eq!(
        store.family("f1").await.unwrap().unwrap().revoked_at,
        Some(2_000)
    );
    // Both are ended now, so the sweep purges them; f2 and f4 live on.
    assert_eq!(store.sweep_expired(2_000).await.unwrap(), 4);
    assert!(store.family("f1").await.unwrap().is_none());
    assert!(store.family("f3").await.unwrap().is_none());
    assert!(store.family("f2").await.unwrap().is_some());
    assert!(store.family("f4").await.unwrap().is_some());
    assert_eq!(
        store.cap_user_families("u1", 2, 2_001).await.unwrap(),
        Vec::<String>::new()
    );
}

/// Family f1 rotated 601 times, every rotated token kept until expiry (as
/// tokens from before the chain was kept).
async fn with_long_history(store: &dyn Store) {
    with_session(store).await;
    let next = record("f1", "u1", 9_000);
    store
        .rotate(&[1; 32], &nth_hash(0), &next, &first_step(), 1_100)
        .await
        .unwrap();
    for i in 0..600u32 {
        store
            .rotate(
                &nth_hash(i),
                &nth_hash(i + 1),
                &next,
                &step(u64::from(i) + 2, None),
                1_101,
            )
            .await
            .unwrap();
    }
}

async fn purging_a_family_with_a_long_history_takes_every_token(store: Backend) {
    with_long_history(&*store).await;
    assert_eq!(store.record_counts().await.unwrap().refresh_tokens, 602);
    // Family, chain and 602 tokens (on sled, over several purge transactions).
    assert_eq!(store.sweep_expired(10_000).await.unwrap(), 604);
    let counts = store.record_counts().await.unwrap();
    assert_eq!(
        counts,
        RecordCounts {
            users: 1,
            ..RecordCounts::default()
        }
    );
}

async fn deleting_a_user_with_a_long_session_history_removes_every_token(store: Backend) {
    with_long_history(&*store).await;
    assert!(store.delete_user("u1", 2_000).await.unwrap().is_some());
    assert_eq!(
        store.record_counts().await.unwrap(),
        RecordCounts::default()
    );
    assert_eq!(store.deleted_user_ids().await.unwrap(), ["u1"]);
}
