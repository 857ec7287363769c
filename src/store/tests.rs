use std::sync::Arc;

use super::*;

fn open() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

fn user(id: &str, email: &str) -> User {
    User {
        id: id.to_owned(),
        email: email.to_owned(),
        role: "viewer".to_owned(),
        password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".to_owned(),
        created_at: 1_000,
        token_version: 0,
    }
}

fn family(id: &str, user_id: &str, expires_at: u64) -> Family {
    Family {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        created_at: 1_000,
        expires_at,
        revoked_at: None,
    }
}

fn record(family_id: &str, user_id: &str, expires_at: u64) -> RefreshRecord {
    RefreshRecord {
        family_id: family_id.to_owned(),
        user_id: user_id.to_owned(),
        expires_at,
        rotated_at: None,
        replaced_by: None,
    }
}

/// What a login checked about any user made by [`user`] (all share one hash
/// and start at version 0).
fn fresh() -> UserStamp {
    UserStamp::of(&user("any", "any@example.com"))
}

/// The step of a family's first rotation, keeping the presented token
/// until its own expiry (as for a token from login).
fn first_step() -> ChainStep {
    ChainStep {
        generation: 1,
        tag_key: [7; 32],
        keep_presented_until: None,
    }
}

/// A user "u1" with family "f1" (ends at 10_000) holding token [1; 32]
/// (expires at 5_000).
fn with_session() -> (tempfile::TempDir, SledStore) {
    let (dir, store) = open();
    store.create_user(&user("u1", "a@example.com")).unwrap();
    store
        .create_family(
            &family("f1", "u1", 10_000),
            &[1; 32],
            &record("f1", "u1", 5_000),
            &fresh(),
        )
        .unwrap();
    (dir, store)
}

#[test]
fn users_by_id_email_and_page() {
    let (_dir, store) = open();
    for (id, email) in [("b", "b@x.io"), ("a", "a@x.io"), ("c", "c@x.io")] {
        store.create_user(&user(id, email)).unwrap();
    }
    assert_eq!(store.user_by_id("a").unwrap().unwrap().email, "a@x.io");
    assert_eq!(store.user_by_email("c@x.io").unwrap().unwrap().id, "c");
    assert!(store.user_by_email("z@x.io").unwrap().is_none());
    assert!(matches!(
        store.create_user(&user("d", "a@x.io")),
        Err(StoreError::EmailTaken)
    ));
    // The failed create left nothing behind.
    assert!(store.user_by_id("d").unwrap().is_none());

    let ids = |users: Vec<User>| users.into_iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_users(None, 2).unwrap()), ["a", "b"]);
    assert_eq!(ids(store.list_users(Some("b"), 2).unwrap()), ["c"]);
    assert!(store.list_users(Some("c"), 2).unwrap().is_empty());
}

#[test]
fn ids_with_nul_are_refused() {
    let (_dir, store) = open();
    assert!(matches!(
        store.create_user(&user("a\0b", "a@x.io")),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn role_password_and_version_changes() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "a@x.io")).unwrap();
    store.create_user(&user("u2", "b@x.io")).unwrap();

    let changed = store.set_role("u1", "admin").unwrap().unwrap();
    assert_eq!((changed.role.as_str(), changed.token_version), ("admin", 1));
    let rehashed = store
        .set_password("u1", &user("u1", "").password_hash, "new-hash", false)
        .unwrap()
        .unwrap();
    assert_eq!(
        (rehashed.password_hash.as_str(), rehashed.token_version),
        ("new-hash", 1)
    );
    assert_eq!(
        store
            .set_password("u1", "new-hash", "h2", true)
            .unwrap()
            .unwrap()
            .token_version,
        2
    );
    assert_eq!(
        store
            .bump_token_version("u1")
            .unwrap()
            .unwrap()
            .token_version,
        3
    );
    assert!(store.set_role("nobody", "admin").unwrap().is_none());
    assert_eq!(store.token_versions().unwrap(), [("u1".to_owned(), 3)]);
}

#[test]
fn rotation_succeeds_once_then_reports_reuse() {
    let (_dir, store) = with_session();
    let next = record("f1", "u1", 99_999);
    match store
        .rotate(&[1; 32], &[2; 32], &next, &first_step(), 2_000)
        .unwrap()
    {
        RotateOutcome::Rotated { family } => assert_eq!(family.id, "f1"),
        other => panic!("{other:?}"),
    }
    let old = store.refresh_record(&[1; 32]).unwrap().unwrap();
    assert_eq!(old.rotated_at, Some(2_000));
    assert_eq!(old.replaced_by, Some(hex(&[2; 32])));
    // The successor cannot outlive its session.
    assert_eq!(
        store.refresh_record(&[2; 32]).unwrap().unwrap().expires_at,
        10_000
    );

    assert_eq!(
        store
            .rotate(&[1; 32], &[3; 32], &next, &first_step(), 2_001)
            .unwrap(),
        RotateOutcome::AlreadyRotated {
            rotated_at: 2_000,
            family_id: "f1".to_owned()
        }
    );
    assert!(store.refresh_record(&[3; 32]).unwrap().is_none());
    assert_eq!(
        store
            .rotate(&[9; 32], &[3; 32], &next, &first_step(), 2_001)
            .unwrap(),
        RotateOutcome::Unknown
    );
}

#[test]
fn rotation_refuses_expired_and_revoked() {
    let (_dir, store) = with_session();
    let next = record("f1", "u1", 9_000);
    assert_eq!(
        store
            .rotate(&[1; 32], &[2; 32], &next, &first_step(), 5_000)
            .unwrap(),
        RotateOutcome::Expired
    );
    assert_eq!(
        store
            .rotate(&[1; 32], &[2; 32], &next, &first_step(), 10_000)
            .unwrap(),
        RotateOutcome::FamilyExpired {
            family_id: "f1".to_owned()
        }
    );
    assert!(store.revoke_family("f1", 3_000).unwrap());
    assert!(!store.revoke_family("f1", 3_001).unwrap());
    assert_eq!(
        store
            .rotate(&[1; 32], &[2; 32], &next, &first_step(), 3_002)
            .unwrap(),
        RotateOutcome::FamilyRevoked {
            family_id: "f1".to_owned()
        }
    );
    assert_eq!(store.family("f1").unwrap().unwrap().revoked_at, Some(3_000));
}

#[test]
fn rotation_keeps_the_family_and_user() {
    let (_dir, store) = with_session();
    let stranger = record("f2", "u1", 9_000);
    assert!(matches!(
        store.rotate(&[1; 32], &[2; 32], &stranger, &first_step(), 2_000),
        Err(StoreError::Invalid(_))
    ));
    assert!(store
        .refresh_record(&[1; 32])
        .unwrap()
        .unwrap()
        .rotated_at
        .is_none());
}

#[test]
fn concurrent_rotations_of_one_token_have_one_winner() {
    let (_dir, store) = with_session();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                store
                    .rotate(
                        &[1; 32],
                        &[10 + i; 32],
                        &record("f1", "u1", 9_000),
                        &first_step(),
                        2_000,
                    )
                    .unwrap()
            })
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, RotateOutcome::Rotated { .. }))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
}

#[test]
fn families_need_a_living_user() {
    let (_dir, store) = open();
    assert!(matches!(
        store.create_family(
            &family("f1", "ghost", 10),
            &[1; 32],
            &record("f1", "ghost", 10),
            &fresh()
        ),
        Err(StoreError::UnknownUser(_))
    ));
    assert!(store.family("f1").unwrap().is_none());
}

#[test]
fn revoking_a_users_families_spares_the_exception() {
    let (_dir, store) = with_session();
    for (id, token) in [("f2", 2u8), ("f3", 3)] {
        store
            .create_family(
                &family(id, "u1", 10_000),
                &[token; 32],
                &record(id, "u1", 5_000),
                &fresh(),
            )
            .unwrap();
    }
    store.revoke_family("f3", 1_500).unwrap();
    let mut revoked = store.revoke_user_families("u1", Some("f2"), 2_000).unwrap();
    revoked.sort();
    assert_eq!(revoked, ["f1"]);
    assert!(store.family("f2").unwrap().unwrap().revoked_at.is_none());
    assert_eq!(
        store.revoked_families_since(1_600).unwrap(),
        [("f1".to_owned(), 2_000)]
    );
    assert_eq!(store.revoked_families_since(0).unwrap().len(), 2);
    assert_eq!(store.prune_revocations(1_600).unwrap(), 1);
    assert_eq!(store.revoked_families_since(0).unwrap().len(), 1);
}

#[test]
fn deleting_a_user_removes_everything_but_a_tombstone() {
    let (_dir, store) = with_session();
    store
        .rotate(
            &[1; 32],
            &[2; 32],
            &record("f1", "u1", 9_000),
            &first_step(),
            2_000,
        )
        .unwrap();
    store.create_user(&user("u2", "b@example.com")).unwrap();

    let deleted = store.delete_user("u1", 3_000).unwrap().unwrap();
    assert_eq!(deleted.email, "a@example.com");
    assert!(store.user_by_id("u1").unwrap().is_none());
    assert!(store.user_by_email("a@example.com").unwrap().is_none());
    assert!(store.family("f1").unwrap().is_none());
    assert!(store.refresh_record(&[1; 32]).unwrap().is_none());
    assert!(store.refresh_record(&[2; 32]).unwrap().is_none());
    assert_eq!(store.deleted_user_ids().unwrap(), ["u1"]);
    assert!(store.delete_user("u1", 3_001).unwrap().is_none());
    // Nothing is left for the sweep, and the email can be registered again.
    assert_eq!(store.sweep_expired(u64::MAX - 1).unwrap(), 0);
    store.create_user(&user("u3", "a@example.com")).unwrap();
    assert_eq!(store.prune_revocations(3_001).unwrap(), 1);
    assert!(store.deleted_user_ids().unwrap().is_empty());
}

#[test]
fn sweep_removes_what_expired() {
    let (_dir, store) = with_session();
    store
        .create_family(
            &family("f2", "u1", 20_000),
            &[2; 32],
            &record("f2", "u1", 6_000),
            &fresh(),
        )
        .unwrap();
    store
        .rotate(
            &[2; 32],
            &[3; 32],
            &record("f2", "u1", 15_000),
            &first_step(),
            5_500,
        )
        .unwrap();
    assert_eq!(store.sweep_expired(4_999).unwrap(), 0);
    // Token 1 (5_000) and token 2 (6_000) are due; token 3 and both families live.
    assert_eq!(store.sweep_expired(6_000).unwrap(), 2);
    assert!(store.refresh_record(&[1; 32]).unwrap().is_none());
    assert!(store.refresh_record(&[3; 32]).unwrap().is_some());
    assert!(store.family("f1").unwrap().is_some());
    // Family 1 ends at 10_000: it goes, with nothing else.
    assert_eq!(store.sweep_expired(10_000).unwrap(), 1);
    assert!(store.family("f1").unwrap().is_none());
    // Family 2 goes with its remaining token and its chain.
    assert_eq!(store.sweep_expired(20_000).unwrap(), 3);
    assert!(store.family("f2").unwrap().is_none());
    assert!(store.refresh_record(&[3; 32]).unwrap().is_none());
    assert_eq!(store.sweep_expired(u64::MAX).unwrap(), 0);
}

#[test]
fn a_second_open_reports_database_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _first = SledStore::open(&path).unwrap();
    let error = match SledStore::open(&path) {
        Err(error) => error,
        Ok(_) => panic!("opened a locked database"),
    };
    let message = error.to_string();
    assert!(matches!(error, StoreError::InUse { .. }), "{message}");
    assert!(message.contains("database in use"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn flushed_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory does not exist yet.
    let path = dir.path().join("nested").join("db");
    {
        let store = SledStore::open(&path).unwrap();
        store.create_user(&user("u1", "a@x.io")).unwrap();
        let store = Arc::new(store);
        let flushes: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.flush().await })
            })
            .collect();
        for flush in flushes {
            flush.await.unwrap().unwrap();
        }
    }
    let store = SledStore::open(&path).unwrap();
    assert_eq!(store.user_by_email("a@x.io").unwrap().unwrap().id, "u1");
}

/// Damage that sled 0.34 itself would recover from as an empty database.
fn assert_refused_after(damage: impl Fn(&std::path::Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = SledStore::open(&path).unwrap();
        store.create_user(&user("u1", "a@x.io")).unwrap();
    }
    damage(&path);
    match SledStore::open(&path) {
        Err(error @ StoreError::CorruptDatabase { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("opened a corrupt database"),
    }
}

#[test]
fn a_corrupt_database_is_refused_with_its_path() {
    assert_refused_after(|path| {
        let data = path.join("db");
        let mut garbage = vec![0xA5u8; 4096];
        garbage.extend_from_slice(&std::fs::read(&data).unwrap());
        std::fs::write(&data, garbage).unwrap();
    });
    assert_refused_after(|path| {
        let data = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("db"))
            .unwrap();
        data.set_len(0).unwrap();
    });
    assert_refused_after(|path| std::fs::remove_file(path.join("db")).unwrap());
}

#[test]
fn a_foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a database").unwrap();
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(StoreError::CorruptDatabase { .. })
    ));
}

#[test]
fn hex_is_lower_case() {
    assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
}

#[test]
fn a_session_is_created_only_for_the_user_as_verified() {
    let (_dir, store) = with_session();
    let create = |id: &str, token: u8, stamp: &UserStamp| {
        store.create_family(
            &family(id, "u1", 10_000),
            &[token; 32],
            &record(id, "u1", 5_000),
            stamp,
        )
    };
    let stamp = UserStamp::of(&store.user_by_id("u1").unwrap().unwrap());
    // Logout-all (or a role change) committed after the check.
    store.bump_token_version("u1").unwrap();
    assert!(matches!(
        create("f2", 2, &stamp),
        Err(StoreError::UserChanged(_))
    ));
    // A password change that happens to leave the version where it was seen.
    let stamp = UserStamp::of(&store.user_by_id("u1").unwrap().unwrap());
    store
        .set_password("u1", &stamp.password_hash, "other-hash", false)
        .unwrap();
    assert!(matches!(
        create("f3", 3, &stamp),
        Err(StoreError::UserChanged(_))
    ));
    // Nothing of the refused sessions was stored.
    assert!(store.family("f2").unwrap().is_none());
    assert!(store.refresh_record(&[3; 32]).unwrap().is_none());
    let current = UserStamp::of(&store.user_by_id("u1").unwrap().unwrap());
    create("f4", 4, &current).unwrap();
    store.delete_user("u1", 2_000).unwrap();
    assert!(matches!(
        create("f5", 5, &current),
        Err(StoreError::UnknownUser(_))
    ));
}

#[test]
fn a_password_is_replaced_only_over_the_hash_verified() {
    let (_dir, store) = open();
    let original = user("u1", "a@x.io");
    store.create_user(&original).unwrap();
    // A change committed while a login was verifying the original hash.
    store
        .set_password("u1", &original.password_hash, "changed", true)
        .unwrap();
    // The login's rehash of the old password must not revert it.
    assert!(matches!(
        store.set_password("u1", &original.password_hash, "rehash-of-old", false),
        Err(StoreError::UserChanged(_))
    ));
    let user = store.user_by_id("u1").unwrap().unwrap();
    assert_eq!(
        (user.password_hash.as_str(), user.token_version),
        ("changed", 1)
    );
    assert!(store
        .set_password("nobody", "changed", "x", false)
        .unwrap()
        .is_none());
}

#[test]
fn a_lowered_access_lifetime_is_remembered_until_its_tokens_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = SledStore::open(&path).unwrap();
        // First run: one hour.
        assert_eq!(store.note_access_lifetime(3_600, 1_000).unwrap(), 3_600);
    }
    let store = SledStore::open(&path).unwrap();
    // Restarted at 2_000 with five minutes: the first run's tokens may live
    // until 2_000 + 3_600.
    assert_eq!(store.note_access_lifetime(300, 2_000).unwrap(), 3_600);
    assert_eq!(store.note_access_lifetime(300, 5_599).unwrap(), 3_600);
    // Once they have all expired, the shorter lifetime is the window.
    assert_eq!(store.note_access_lifetime(300, 5_600).unwrap(), 300);
    // A longer lifetime is its own window at once.
    assert_eq!(store.note_access_lifetime(7_200, 5_700).unwrap(), 7_200);
    assert_eq!(store.note_access_lifetime(60, 5_800).unwrap(), 7_200);
}

/// A distinct token hash per `i`.
fn nth_hash(i: u32) -> [u8; 32] {
    let mut hash = [0xAA; 32];
    hash[..4].copy_from_slice(&i.to_be_bytes());
    hash
}

fn step(generation: u64, keep_presented_until: Option<u64>) -> ChainStep {
    ChainStep {
        generation,
        tag_key: [7; 32],
        keep_presented_until,
    }
}

#[test]
fn rotated_tokens_leave_the_store_once_their_grace_has_passed() {
    let (_dir, store) = with_session();
    let next = record("f1", "u1", 9_000);
    // Login's untagged token is kept until its own expiry.
    store
        .rotate(&[1; 32], &nth_hash(0), &next, &first_step(), 1_100)
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
            .unwrap();
        assert!(
            matches!(outcome, RotateOutcome::Rotated { .. }),
            "{outcome:?}"
        );
        let counts = store.record_counts().unwrap();
        // Login's token, the live one and those within the 3 s grace.
        assert!(counts.refresh_tokens <= 5, "{i}: {counts:?}");
        assert!(counts.index_entries <= 2 * 5 + 1, "{i}: {counts:?}");
    }
    assert_eq!(store.chain("f1").unwrap().unwrap().generation, 501);
    assert!(store.refresh_record(&nth_hash(0)).unwrap().is_none());
    // The one rotated last is still there for a retry within the grace.
    let last = store.refresh_record(&nth_hash(499)).unwrap().unwrap();
    assert_eq!(last.rotated_at, Some(1_101 + 499));
    assert!(store.refresh_record(&[1; 32]).unwrap().is_some());
}

#[test]
fn strict_rotation_drops_the_presented_token_at_once() {
    let (_dir, store) = with_session();
    let next = record("f1", "u1", 9_000);
    store
        .rotate(&[1; 32], &[2; 32], &next, &first_step(), 1_100)
        .unwrap();
    store
        .rotate(&[2; 32], &[3; 32], &next, &step(2, Some(1_200)), 1_200)
        .unwrap();
    assert!(store.refresh_record(&[2; 32]).unwrap().is_none());
    assert_eq!(
        store
            .rotate(&[2; 32], &[4; 32], &next, &step(3, Some(1_201)), 1_201)
            .unwrap(),
        RotateOutcome::Unknown
    );
}

#[test]
fn a_rotation_must_advance_the_chain_with_its_key() {
    let (_dir, store) = with_session();
    let next = record("f1", "u1", 9_000);
    store
        .rotate(&[1; 32], &[2; 32], &next, &first_step(), 1_100)
        .unwrap();
    let skipped = store.rotate(&[2; 32], &[3; 32], &next, &step(3, None), 1_101);
    assert!(matches!(skipped, Err(StoreError::Invalid(_))));
    let mut other_key = step(2, None);
    other_key.tag_key = [8; 32];
    let rekeyed = store.rotate(&[2; 32], &[3; 32], &next, &other_key, 1_101);
    assert!(matches!(rekeyed, Err(StoreError::Invalid(_))));
    assert!(store.refresh_record(&[3; 32]).unwrap().is_none());
}

#[test]
fn a_user_keeps_at_most_max_sessions_revoked_ones_going_first() {
    let (_dir, store) = open();
    store.create_user(&user("u1", "a@example.com")).unwrap();
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
            .unwrap();
    }
    store.revoke_family("f3", 1_500).unwrap();
    assert_eq!(
        store.cap_user_families("u1", 4, 2_000).unwrap(),
        Vec::<String>::new()
    );
    // Two too many: the revoked f3 goes first, then the oldest live, f1.
    assert_eq!(store.cap_user_families("u1", 2, 2_000).unwrap(), ["f1"]);
    assert_eq!(store.family("f1").unwrap().unwrap().revoked_at, Some(2_000));
    // Both are ended now, so the sweep purges them; f2 and f4 live on.
    assert_eq!(store.sweep_expired(2_000).unwrap(), 4);
    assert!(store.family("f1").unwrap().is_none());
    assert!(store.family("f3").unwrap().is_none());
    assert!(store.family("f2").unwrap().is_some());
    assert!(store.family("f4").unwrap().is_some());
    assert_eq!(
        store.cap_user_families("u1", 2, 2_001).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn purging_a_family_with_a_long_history_takes_every_token() {
    let (_dir, store) = with_session();
    let next = record("f1", "u1", 9_000);
    store
        .rotate(&[1; 32], &nth_hash(0), &next, &first_step(), 1_100)
        .unwrap();
    // Kept until expiry, as tokens from before this version were.
    for i in 0..600u32 {
        store
            .rotate(
                &nth_hash(i),
                &nth_hash(i + 1),
                &next,
                &step(u64::from(i) + 2, None),
                1_101,
            )
            .unwrap();
    }
    assert_eq!(store.record_counts().unwrap().refresh_tokens, 602);
    // Family, chain and 602 tokens, over several purge transactions.
    assert_eq!(store.sweep_expired(10_000).unwrap(), 604);
    let counts = store.record_counts().unwrap();
    assert_eq!(
        counts,
        RecordCounts {
            users: 1,
            ..RecordCounts::default()
        }
    );
}

#[test]
fn deleting_a_user_with_a_long_session_history_removes_every_token() {
    let (_dir, store) = with_session();
    let next = record("f1", "u1", 9_000);
    store
        .rotate(&[1; 32], &nth_hash(0), &next, &first_step(), 1_100)
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
            .unwrap();
    }
    assert!(store.delete_user("u1", 2_000).unwrap().is_some());
    assert_eq!(store.record_counts().unwrap(), RecordCounts::default());
    assert_eq!(store.deleted_user_ids().unwrap(), ["u1"]);
}
