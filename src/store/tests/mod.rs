//! Store behaviour both backends share, tested once against each: every
//! test body takes a [`Backend`] and `store_tests!` runs it on sled (always)
//! and on PostgreSQL (`AUTHGATE_TEST_DATABASE_URL`, a fresh database per
//! test; a missing server skips, except under `CI=true` where it fails).

mod rotation;
mod sessions;
mod sled_only;
mod users;

use std::ops::Deref;
use std::sync::Arc;

use super::postgres::tests::TestDb;
use super::*;

/// Declares, for each named test body `async fn(Backend)` of the enclosing
/// module, one test on sled and one on PostgreSQL, as `<module>::sled::<name>`
/// and `<module>::postgres::<name>`. Multi-threaded, so tasks racing on the
/// store really run at once.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::store::tests::Backend::sled()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::store::tests::Backend::postgres().await {
                        super::$name(backend).await
                    }
                }
            )*
        }
    };
}
use store_tests;

/// Opens the sled database at `path` again after its last handle was
/// dropped in this process. sled writes its log buffers on threads of its
/// own, which let go of the file (and its lock) just after a flush has been
/// answered; until they have, an open gets [`StoreError::InUse`]. A
/// restarted process never sees that (the old one is gone), so the test
/// waits for the lock, within a bound.
pub(crate) fn reopen_sled(path: &std::path::Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open(path) {
            Err(StoreError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            opened => return opened.unwrap(),
        }
    }
}

/// A store under test and what keeps its data alive (a temp directory, a
/// database dropped at the end). Derefs to the store.
pub(crate) struct Backend {
    /// `None` only inside [`Backend::restart`].
    store: Option<Arc<dyn Store>>,
    data: Data,
}

enum Data {
    Sled(tempfile::TempDir),
    Postgres(Box<TestDb>),
}

impl Backend {
    pub(crate) fn sled() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db")).unwrap();
        Self {
            store: Some(Arc::new(store)),
            data: Data::Sled(dir),
        }
    }

    /// `None` (the test is skipped) without a server.
    pub(crate) async fn postgres() -> Option<Self> {
        let db = TestDb::create().await?;
        Some(Self {
            store: Some(Arc::new(db.open().await)),
            data: Data::Postgres(Box::new(db)),
        })
    }

    /// The store, to move into spawned tasks.
    pub(crate) fn shared(&self) -> Arc<dyn Store> {
        Arc::clone(self.store.as_ref().unwrap())
    }

    /// The handle another gateway instance would have on the same data:
    /// its own pool on PostgreSQL; on sled, where one process owns the
    /// database, the same store.
    pub(crate) async fn instance(&self) -> Arc<dyn Store> {
        match &self.data {
            Data::Sled(_) => self.shared(),
            Data::Postgres(db) => Arc::new(db.open().await),
        }
    }

    /// Closes the store and opens it again on the same data, as a restart
    /// does. Handles from [`Backend::shared`] must be dropped before.
    pub(crate) async fn restart(&mut self) {
        match &self.data {
            Data::Sled(dir) => {
                // sled holds its file lock until the last handle goes.
                self.store = None;
                self.store = Some(Arc::new(reopen_sled(&dir.path().join("db"))));
            }
            Data::Postgres(db) => self.store = Some(Arc::new(db.open().await)),
        }
    }
}

impl Deref for Backend {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        self.store.as_deref().unwrap()
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

/// What a login checked about any user made by [`user`] (all share one hash
/// and start at version 0).
fn fresh() -> UserStamp {
    UserStamp::of(&user("any", "any@example.com"))
}

/// The step of a family's first rotation, keeping the presented token
/// until its own expiry (as for a token from login).
fn first_step() -> ChainStep {
    step(1, None)
}

fn step(generation: u64, keep_presented_until: Option<u64>) -> ChainStep {
    ChainStep {
        generation,
        tag_key: [7; 32],
        keep_presented_until,
    }
}

/// A distinct token hash per `i`.
fn nth_hash(i: u32) -> [u8; 32] {
    let mut hash = [0xAA; 32];
    hash[..4].copy_from_slice(&i.to_be_bytes());
    hash
}

/// A user "u1" with family "f1" (ends at 10_000) holding token [1; 32]
/// (expires at 5_000).
async fn with_session(store: &dyn Store) {
    store
        .create_user(&user("u1", "a@example.com"))
        .await
        .unwrap();
    store
        .create_family(
            &family("f1", "u1", 10_000),
            &[1; 32],
            &record("f1", "u1", 5_000),
            &fresh(),
        )
        .await
        .unwrap();
}

#[test]
fn hex_is_lower_case() {
    assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
}
