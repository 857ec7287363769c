//! Sessions against the real sled store: what the grace cache holds and how
//! reuse of a token dropped from the store is recognised.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::rotation::{rotation_failure, RotationFailure};
use super::*;
use crate::config::secret::AccessSecret;
use crate::config::Config;
use crate::store::SledStore;

const CONFIG: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SledStore>,
    sessions: Sessions,
}

fn fixture(reuse_grace: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
    let config = Config::parse(Path::new("test.toml"), CONFIG).unwrap();
    let secret = AccessSecret::from_bytes(vec![7; 48]).unwrap();
    let issuer = Arc::new(TokenIssuer::new(&config.tokens, &secret));
    let policy = SessionPolicy {
        refresh_ttl: Duration::from_secs(3_600),
        session_max_age: Duration::from_secs(86_400),
        reuse_grace,
        access_lifetime: Duration::from_secs(900),
        max_sessions_per_user: 32,
    };
    let sessions = Sessions::new(
        Arc::clone(&store) as Arc<dyn Store>,
        issuer,
        Arc::new(RevocationList::default()),
        policy,
        RefreshLimits::new(1_000, 1_000, 1_000, 56),
    );
    Fixture {
        _dir: dir,
        store,
        sessions,
    }
}

fn user() -> User {
    User {
        id: "u1".to_owned(),
        email: "a@example.com".to_owned(),
        role: "viewer".to_owned(),
        password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".to_owned(),
        created_at: 1_000,
        token_version: 0,
    }
}

#[tokio::test]
async fn bogus_tokens_leave_no_entry_in_the_grace_cache() {
    let f = fixture(Duration::from_secs(30));
    f.store.create_user(&user()).unwrap();
    let now = SystemTime::now();
    let session = f.sessions.start(user(), now).await.unwrap();
    let family = session.family_id.clone();
    for i in 0..200 {
        // Random-looking, and shaped like a tagged token of a real family.
        for bogus in [format!("bogus-{i}"), format!("{family}.{i}.secret.tag")] {
            let refused = f.sessions.rotate(&bogus, now).await.err().unwrap();
            assert!(matches!(refused, SessionError::UnknownToken), "{refused:?}");
        }
    }
    assert_eq!(f.sessions.cached_rotations(), 0);
    assert!(f
        .store
        .family(&family)
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());

    // A known token gets its one entry, which a retry shares.
    let first = f
        .sessions
        .rotate(&session.refresh_token, now)
        .await
        .unwrap();
    let retry = f
        .sessions
        .rotate(&session.refresh_token, now)
        .await
        .unwrap();
    assert_eq!(first.refresh_token, retry.refresh_token);
    assert_eq!(f.sessions.cached_rotations(), 1);
}

#[tokio::test]
async fn a_token_dropped_after_its_grace_is_still_recognised_as_reuse() {
    let f = fixture(Duration::from_secs(2));
    f.store.create_user(&user()).unwrap();
    let start = SystemTime::now();
    let mut token = f.sessions.start(user(), start).await.unwrap().refresh_token;
    let mut issued = Vec::new();
    for i in 1..=20u64 {
        let at = start + Duration::from_secs(10 * i);
        token = f.sessions.rotate(&token, at).await.unwrap().refresh_token;
        issued.push(token.clone());
    }
    // Login's token, the live one and the last rotated (within its grace).
    let counts = f.store.record_counts().unwrap();
    assert_eq!(
        (counts.families, counts.refresh_tokens),
        (1, 3),
        "{counts:?}"
    );
    let dropped = &issued[4];
    assert!(f
        .store
        .refresh_record(&hash_token(dropped))
        .unwrap()
        .is_none());
    let later = start + Duration::from_secs(300);
    let refused = f.sessions.rotate(dropped, later).await.err().unwrap();
    assert!(matches!(refused, SessionError::Reused), "{refused:?}");
    // The whole session is over, the live token included.
    let live = f.sessions.rotate(&token, later).await.err().unwrap();
    assert!(matches!(live, SessionError::UnknownToken), "{live:?}");
}

#[tokio::test]
async fn logout_with_a_dropped_token_still_finds_its_session() {
    let f = fixture(Duration::from_secs(2));
    f.store.create_user(&user()).unwrap();
    let start = SystemTime::now();
    let session = f.sessions.start(user(), start).await.unwrap();
    let first = f
        .sessions
        .rotate(&session.refresh_token, start)
        .await
        .unwrap();
    let later = start + Duration::from_secs(60);
    let second = f
        .sessions
        .rotate(&first.refresh_token, later)
        .await
        .unwrap();
    f.sessions
        .rotate(&second.refresh_token, later + Duration::from_secs(60))
        .await
        .unwrap();
    assert!(f
        .store
        .refresh_record(&hash_token(&first.refresh_token))
        .unwrap()
        .is_none());
    assert_eq!(
        f.sessions.family_of(&first.refresh_token).await.unwrap(),
        Some(session.family_id.clone())
    );
    let forged = first.refresh_token.replacen(".1.", ".0.", 1);
    assert_eq!(f.sessions.family_of(&forged).await.unwrap(), None);
    assert_eq!(f.sessions.family_of("made-up").await.unwrap(), None);
}

/// A failed rotation is classified where it happens and logged only by the
/// service, with this cause: nothing is logged here.
#[test]
fn a_rotation_failure_is_classified_not_logged() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let log = Arc::clone(&log);
        move || LogWriter(Arc::clone(&log))
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let (down, corrupt) = tracing::subscriber::with_default(subscriber, || {
        (
            rotation_failure(StoreError::Unavailable("pool timed out".into())),
            rotation_failure(StoreError::Corrupt("bad chain".to_owned())),
        )
    });
    assert!(
        matches!(&down, RotationFailure::Unavailable(cause) if cause.to_string().contains("pool timed out")),
        "{down:?}"
    );
    assert!(
        matches!(&corrupt, RotationFailure::Internal(cause) if cause.to_string().contains("bad chain")),
        "{corrupt:?}"
    );
    let logged = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(logged.is_empty(), "{logged}");
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
