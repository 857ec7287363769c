//! The audit records of the account endpoints that need more than the
//! handler has at hand: the lockout a failure caused, the user of a
//! presented refresh token. The simple ones are one line at their event.

use std::time::SystemTime;

use super::Accounts;
use crate::audit::{AuditEvent, AuditKind};

impl Accounts {
    /// A wrong password or unknown account (`user_id` is `None`), and the
    /// lockout it started. `email` is canonical: raw input is never
    /// recorded, as a password typed into the email field would be.
    pub(super) async fn audit_login_failure(
        &self,
        user_id: Option<&str>,
        email: Option<&str>,
        locked: bool,
        detail: Option<&str>,
    ) {
        let now = SystemTime::now();
        let mut failure = AuditEvent::new(AuditKind::LoginFailure, now);
        failure.user_id = user_id;
        failure.email = email;
        failure.detail = detail;
        self.audit.record(failure).await;
        if locked {
            let mut lockout = AuditEvent::new(AuditKind::Lockout, now);
            lockout.user_id = user_id;
            lockout.email = email;
            self.audit.record(lockout).await;
        }
    }

    /// An event about the session `presented` (a refresh token) belongs
    /// to, naming its user when the store still knows it.
    pub(super) async fn audit_session(&self, kind: AuditKind, presented: &str) {
        let family = match self.sessions.family_of(presented).await {
            Ok(Some(id)) => self.store.family(&id).await.ok().flatten(),
            _ => None,
        };
        let user = match &family {
            Some(f) => self.store.user_by_id(&f.user_id).await.ok().flatten(),
            None => None,
        };
        let mut event = AuditEvent::new(kind, SystemTime::now());
        event.user_id = family.as_ref().map(|f| f.user_id.as_str());
        event.email = user.as_ref().map(|u| u.email.as_str());
        self.audit.record(event).await;
    }
}
