//! Live connections follow their session: a [`SessionWatch`] completes when
//! the session behind a WebSocket tunnel or a streamed response is revoked
//! (logout, logout-all, password or role change, deletion, refresh-token
//! reuse) or, on `close_on_expiry` routes, when its access token expires.
//! It waits on the revocation list's change notification, never polls.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::revocation::RevocationList;
use super::Identity;
use crate::account::UserId;

/// Why a live connection was cut (the error a watched body ends with).
#[derive(Debug, thiserror::Error)]
#[error("the session behind this connection ended")]
pub(crate) struct SessionEnded;

/// The session one live connection belongs to.
pub struct SessionWatch {
    revocations: Arc<RevocationList>,
    user: UserId,
    version: u32,
    session: Option<Arc<str>>,
    /// When set, the connection also ends at this instant (token expiry).
    deadline: Option<tokio::time::Instant>,
}

impl SessionWatch {
    /// Watches `identity`'s session; `close_on_expiry` adds its token's
    /// expiry, measured from `now`.
    pub fn new(
        revocations: &Arc<RevocationList>,
        identity: &Identity,
        close_on_expiry: bool,
        now: SystemTime,
    ) -> Self {
        let deadline = close_on_expiry.then(|| {
            let now_secs = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            let left = Duration::from_secs(identity.expires_at.saturating_sub(now_secs));
            tokio::time::Instant::now() + left
        });
        Self {
            revocations: Arc::clone(revocations),
            user: identity.user_id.clone(),
            version: identity.version,
            session: identity.session.clone(),
            deadline,
        }
    }

    /// Completes once the session is revoked, or its token expired when
    /// asked to watch that; pending forever otherwise.
    pub async fn ended(self) {
        // Subscribed before the first check: a revocation landing between
        // the two is seen by the check, one after it wakes the wait.
        let mut changes = self.revocations.changes();
        loop {
            if !self
                .revocations
                .allows(self.user.as_str(), self.version, self.session.as_deref())
            {
                return;
            }
            let changed = changes.changed();
            let closed = match self.deadline {
                Some(deadline) => tokio::select! {
                    changed = changed => changed.is_err(),
                    () = tokio::time::sleep_until(deadline) => return,
                },
                None => changed.await.is_err(),
            };
            if closed {
                // The list is gone with the gateway: nothing more to watch.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(session: &str) -> Identity {
        Identity {
            user_id: crate::account::user_id::UserId::parse("u1").unwrap(),
            role: crate::account::role::Role::parse("user").unwrap(),
            session: Some(session.into()),
            version: 1,
            expires_at: 1_000,
            assertion: None,
            key_id: None,
        }
    }

    async fn ends_soon(watch: SessionWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(100), watch.ended())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn ends_on_its_own_session_only() {
        let list = Arc::new(RevocationList::default());
        let now = UNIX_EPOCH + Duration::from_secs(10);
        let mine = SessionWatch::new(&list, &identity("s1"), false, now);
        let other = SessionWatch::new(&list, &identity("s2"), false, now);
        let mine = tokio::spawn(mine.ended());
        list.revoke_session("s1", 2_000);
        tokio::time::timeout(Duration::from_secs(5), mine)
            .await
            .unwrap()
            .unwrap();
        assert!(!ends_soon(other).await);
    }

    #[tokio::test]
    async fn ends_on_a_version_bump_and_on_expiry_when_asked() {
        let list = Arc::new(RevocationList::default());
        let now = UNIX_EPOCH + Duration::from_secs(999);
        let watched = tokio::spawn(SessionWatch::new(&list, &identity("s1"), false, now).ended());
        list.set_min_version("u1", 2);
        tokio::time::timeout(Duration::from_secs(5), watched)
            .await
            .unwrap()
            .unwrap();

        let fresh = Arc::new(RevocationList::default());
        // One second left on the token.
        assert!(!ends_soon(SessionWatch::new(&fresh, &identity("s1"), false, now)).await);
        let expiring = SessionWatch::new(&fresh, &identity("s1"), true, now);
        tokio::time::timeout(Duration::from_secs(5), expiring.ended())
            .await
            .unwrap();
    }
}
