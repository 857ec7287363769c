use super::*;
use crate::store::hex;

fn role(name: &str) -> Role {
    Role::parse(name).unwrap()
}

fn record(id: &str, user: &str, key_role: &str, text: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        user_id: user.to_owned(),
        name: "ci".to_owned(),
        role: key_role.to_owned(),
        hash: hex(&key::hash(text)),
        created_at: 100,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

fn new_key() -> String {
    key::generate().unwrap().text
}

#[test]
fn finds_a_key_by_its_text_only() {
    let index = ApiKeyIndex::new(role("user"));
    let text = new_key();
    index.insert(&record("k1", "u1", "admin", &text), "admin");
    let found = index.find(&text, 1_000).unwrap();
    assert_eq!(found.id, "k1");
    assert_eq!(found.user_id.as_str(), "u1");
    assert_eq!(found.role.as_str(), "admin");
    assert_eq!(
        index.find(&new_key(), 1_000).unwrap_err(),
        KeyRefusal::Unknown
    );
    assert_eq!(
        index.find("agk_short", 1_000).unwrap_err(),
        KeyRefusal::Unknown
    );
    index.remove("k1");
    assert_eq!(index.find(&text, 1_000).unwrap_err(), KeyRefusal::Unknown);
    assert!(index.is_empty());
    assert!(!index.owns_keys("u1"));
}

#[test]
fn expiry_is_checked_against_the_given_time() {
    let index = ApiKeyIndex::new(role("user"));
    let text = new_key();
    let mut expiring = record("k1", "u1", "user", &text);
    expiring.expires_at = Some(500);
    index.insert(&expiring, "user");
    assert!(index.find(&text, 499).is_ok());
    assert_eq!(index.find(&text, 500).unwrap_err(), KeyRefusal::Expired);
}

#[test]
fn revoked_records_and_deleted_owners_leave_the_index() {
    let index = ApiKeyIndex::new(role("user"));
    let (a, b) = (new_key(), new_key());
    index.insert(&record("k1", "u1", "user", &a), "user");
    index.insert(&record("k2", "u1", "user", &b), "user");
    let mut revoked = record("k1", "u1", "user", &a);
    revoked.revoked_at = Some(7);
    index.insert(&revoked, "user");
    assert!(index.find(&a, 10).is_err());
    assert!(index.find(&b, 10).is_ok());
    index.owner_deleted("u1");
    assert!(index.find(&b, 10).is_err());
    assert!(index.is_empty());
}

#[test]
fn a_demoted_owner_caps_its_keys_at_once() {
    let index = ApiKeyIndex::new(role("user"));
    let (admin_key, user_key) = (new_key(), new_key());
    index.insert(&record("k1", "u1", "admin", &admin_key), "admin");
    index.insert(&record("k2", "u1", "user", &user_key), "admin");
    index.set_owner_role("u1", &role("editor"));
    assert_eq!(index.find(&admin_key, 10).unwrap().role.as_str(), "user");
    assert_eq!(index.find(&user_key, 10).unwrap().role.as_str(), "user");
    // Promoted back: the key's own role again, never the owner's new one.
    index.set_owner_role("u1", &role("admin"));
    assert_eq!(index.find(&admin_key, 10).unwrap().role.as_str(), "admin");
}

#[test]
fn the_role_rules() {
    let (user, admin, editor) = (role("user"), role("admin"), role("editor"));
    assert!(may_carry(&admin, &admin, &user));
    assert!(may_carry(&user, &admin, &user));
    assert!(!may_carry(&editor, &admin, &user));
    assert!(!may_carry(&admin, &user, &user));
    assert_eq!(effective_role(&admin, &editor, &user), user);
    assert_eq!(effective_role(&editor, &editor, &user), editor);
}

#[tokio::test]
async fn a_use_is_queued_at_most_once_a_minute() {
    let index = ApiKeyIndex::new(role("user"));
    let mut touches = index.take_touches().unwrap();
    assert!(index.take_touches().is_none());
    let text = new_key();
    index.insert(&record("k1", "u1", "user", &text), "user");
    for now in [1_000, 1_001, 1_059] {
        index.find(&text, now).unwrap();
    }
    index.find(&text, 1_060).unwrap();
    assert_eq!(touches.try_recv().unwrap(), ("k1".to_owned(), 1_000));
    assert_eq!(touches.try_recv().unwrap(), ("k1".to_owned(), 1_060));
    assert!(touches.try_recv().is_err());
}
