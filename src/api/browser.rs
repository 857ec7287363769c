//! What the browser sign-in pages (`web/`) need from the account service
//! beyond sign-in and sign-up themselves: ending one browser session, and
//! whether registration is open.

use std::time::SystemTime;

use super::Accounts;
use crate::audit::{AuditEvent, AuditKind};
use crate::config::Registration;
use crate::error::GatewayError;
use crate::timestamp::unix_seconds;

impl Accounts {
    /// Sign-out: revokes the store session `family_id` (and, through the
    /// revocation list, every cookie and token of it) and records the
    /// same audit event as `/auth/logout`. Durable before it returns.
    pub async fn end_browser_session(
        &self,
        family_id: &str,
        user_id: &str,
    ) -> Result<(), GatewayError> {
        let now = SystemTime::now();
        self.sessions
            .revoke_family(family_id, unix_seconds(now))
            .await?;
        let user = self.store.user_by_id(user_id).await.ok().flatten();
        let mut event = AuditEvent::new(AuditKind::Logout, now);
        event.user_id = Some(user_id);
        event.email = user.as_ref().map(|u| u.email.as_str());
        self.audit.record(event).await;
        Ok(())
    }

    /// `[auth] registration = "open"`.
    pub fn registration_open(&self) -> bool {
        self.settings.registration == Registration::Open
    }
}
