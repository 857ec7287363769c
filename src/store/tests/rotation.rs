//! Refresh-token rotation on either backend: compare-and-swap with one
//! winner (across instances on PostgreSQL), reuse, expiry and revocation
//! refusals, and the chain that lets rotated tokens leave the store.

use super::*;

store_tests! {
    rotation_succeeds_once_then_reports_reuse,
    rotation_refuses_expired_and_revoked,
    rotation_keeps_the_family_and_user,
    concurrent_rotations_of_one_token_have_one_winner,
    rotated_tokens_leave_the_store_once_their_grace_has_passed,
    strict_rotation_drops_the_presented_token_at_once,
    a_rotation_must_advance_the_chain_with_its_key,
}

async fn rotation_succeeds_once_then_reports_reuse(store: Backend) {
    with_session(&*store).await;
    let next = record("f1", "u1", 99_999);
    match store
        .rotate(&[1; 32], &[2; 32], &next, &first_step(), 2_000)
        .await
        .unwrap()
    {
        RotateOutcome::Rotated { family } => assert_eq!(family.id, "f1"),
        other => panic!("{other:?}"),
    }
    let old = store.refresh_record(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(old.rotated_at, Some(2_000));
    assert_eq!(old.replaced_by, Some(hex(&[2; 32])));
    // The successor cannot outlive its session.
    assert_eq!(
        store
            .refresh_record(&[2; 32])
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        10_000
    );
    let chain = store.chain("f1").await.unwrap().unwrap();
    assert_eq!(
        (chain.generation, chain.tag_key.as_str()),
        (1, hex(&[7; 32]).as_str())
    );

    assert_eq!(
        store
            .rotate(&[1; 32], &[3; 32], &next, &first_step(), 2_001)
            .await
            .unwrap(),
        RotateOutcome::AlreadyRotated {
            rotated_at: 2_000,
            family_id: "f1".to_owned()
        }
    );
    assert!(store.refresh_record(&[3; 32]).await.unwrap().is_none());
    assert_eq!(
        store
            .rotate(&[9; 32], &[3; 32], &next, &first_step(), 2_001)
            .await
            .unwrap(),
        RotateOutcome::Unknown
    );
}

async fn rotation_refuses_expired_and_revoked(store: Backend) {
    with_session(&*store).await;
    let next = record("f1", "u1", 9_000);
    assert_eq!(
        store
            .rotate(&[1; 32], &[2; 32], &next, &first_step(), 5_000)
            .await
            .unwrap(),
        RotateOutcome::Expired
    );
    assert_eq!(
        store
            .rotate(&[1; 32], &[2; 32], &next, &first_step(), 10_000)
            .await
            .unwrap(),
        RotateOutcome::FamilyExpired {
            family_id: "f1".to_owned()
        }
    );
    assert!(store.revoke_family("f1", 3_000).await.unwrap());
    assert!(!store.revoke_family("f1", 3_001).await.unwrap());
    assert_eq!(
        store
            .rotate(&[1; 32], &[2; 32], &next, &first_step(), 3_002)
            .await
            .unwrap(),
        RotateOutcome::FamilyRevoked {
            family_id: "f1".to_owned()
        }
    );
    assert_eq!(
        store.family("f1").await.unwrap().unwrap().revoked_at,
        Some(3_000)
    );
    // Nothing was minted by the refused rotations.
    assert!(store.refresh_record(&[2; 32]).await.unwrap().is_none());
}

async fn rotation_keeps_the_family_and_user(store: Backend) {
    with_session(&*store).await;
    let stranger = record("f2", "u1", 9_000);
    assert!(matches!(
        store
            .rotate(&[1; 32], &[2; 32], &stranger, &first_step(), 2_000)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store
        .refresh_record(&[1; 32])
        .await
        .unwrap()
        .unwrap()
        .rotated_at
        .is_none());
    assert!(store.refresh_record(&[2; 32]).await.unwrap().is_none());
}

/// 32 rotations of one token at once, split over two instances where the
/// backend has them: one succeeds, the others see it rotated, and exactly
/// one successor is stored.
async fn concurrent_rotations_of_one_token_have_one_winner(store: Backend) {
    with_session(&*store).await;
    let instances = [store.shared(), store.instance().await];
    let tasks: Vec<_> = (0..32u8)
        .map(|i| {
            let store = Arc::clone(&instances[usize::from(i % 2)]);
            tokio::spawn(async move {
                store
                    .rotate(
                        &[1; 32],
                        &[100 + i; 32],
                        &record("f1", "u1", 9_000),
                        &first_step(),
                        2_000,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::Rotated { .. }))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    let losers = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::AlreadyRotated { .. }))
        .count();
    assert_eq!(losers, 31, "{outcomes:?}");
    // The presented token and its one successor.
    assert_eq!(store.record_counts().await.unwrap().refresh_tokens, 2);
}

async fn rotated_tokens_leave_the_store_once_their_grace_has_passed(store: Backend) {
    with_session(&*store).await;
    let next = record("f1", "u1", 9_000);
    // Login's untagged token is kept until its own expiry.
    store
        .rotate(&[1; 32], &nth_hash(0), &next, &first_step(), 1_100)
        .await
        .unwrap();
    for i in 0..500u32 {
        let now = 1_101 + u64::from(i);
        let outcome = store
            .rotate(
                &nth_hash(i),
                &nth_hash(i + 1),
                &next,
                &step(u64::from(i) + 2, Some(now + 3)),
                now,
            )
            .await
            .unwrap();
        assert!(
            matches!(outcome, RotateOutcome::Rotated { .. }),
            "{outcome:?}"
        );
        let counts = store.record_counts().await.unwrap();
        // Login's token, the live one and those within the 3 s grace.
        assert!(counts.refresh_tokens <= 5, "{i}: {counts:?}");
        assert!(counts.index_entries <= 2 * 5 + 1, "{i}: {counts:?}");
    }
    assert_eq!(store.chain("f1").await.unwrap().unwrap().generation, 501);
    assert!(store.refresh_record(&nth_hash(0)).await.unwrap().is_none());
    // The one rotated last is still there for a retry within the grace.
    let last = store.refresh_record(&nth_hash(499)).await.unwrap().unwrap();
    assert_eq!(last.rotated_at, Some(1_101 + 499));
    assert!(store.refresh_record(&[1; 32]).await.unwrap().is_some());
}

async fn strict_rotation_drops_the_presented_token_at_once(store: Backend) {
    with_session(&*store).await;
    let next = record("f1", "u1", 9_000);
    store
        .rotate(&[1; 32], &[2; 32], &next, &first_step(), 1_100)
        .await
        .unwrap();
    store
        .rotate(&[2; 32], &[3; 32], &next, &step(2, Some(1_200)), 1_200)
        .await
        .unwrap();
    assert!(store.refresh_record(&[2; 32]).await.unwrap().is_none());
    assert_eq!(
        store
            .rotate(&[2; 32], &[4; 32], &next, &step(3, Some(1_201)), 1_201)
            .await
            .unwrap(),
        RotateOutcome::Unknown
    );
}

async fn a_rotation_must_advance_the_chain_with_its_key(store: Backend) {
    with_session(&*store).await;
    let next = record("f1", "u1", 9_000);
    store
        .rotate(&[1; 32], &[2; 32], &next, &first_step(), 1_100)
        .await
        .unwrap();
    let skipped = store
        .rotate(&[2; 32], &[3; 32], &next, &step(3, None), 1_101)
        .await;
    assert!(matches!(skipped, Err(StoreError::Invalid(_))));
    let mut other_key = step(2, None);
    other_key.tag_key = [8; 32];
    let rekeyed = store
        .rotate(&[2; 32], &[3; 32], &next, &other_key, 1_101)
        .await;
    assert!(matches!(rekeyed, Err(StoreError::Invalid(_))));
    assert!(store.refresh_record(&[3; 32]).await.unwrap().is_none());
    // The refused steps left the presented token live.
    assert!(store
        .refresh_record(&[2; 32])
        .await
        .unwrap()
        .unwrap()
        .rotated_at
        .is_none());
}
