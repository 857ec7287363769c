//! The PostgreSQL feed, for an instance that also keeps API keys: the
//! revocation list and the key index behind one [`RevocationFeed`], so one
//! listener follows both in commit order.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{session_of, ApiKeyIndex};
use crate::account::Role;
use crate::auth::revocation::RevocationList;
use crate::store::postgres::{ApiKeyFeed, RevocationFeed};
use crate::store::ApiKeyRecord;
use crate::timestamp::unix_seconds;

pub(crate) struct KeyedFeed {
    revocations: Arc<RevocationList>,
    keys: Arc<ApiKeyIndex>,
    /// How long a revoked key's session stays refused (its tunnels end at
    /// once; new requests find the key gone from the index).
    session_lifetime: Duration,
}

impl KeyedFeed {
    pub(crate) fn new(
        revocations: Arc<RevocationList>,
        keys: Arc<ApiKeyIndex>,
        session_lifetime: Duration,
    ) -> Self {
        Self {
            revocations,
            keys,
            session_lifetime,
        }
    }
}

impl RevocationFeed for KeyedFeed {
    fn set_min_version(&self, user: &str, version: u32) {
        self.revocations.set_min_version(user, version);
    }
    fn delete_user(&self, user: &str) {
        self.revocations.delete_user(user);
    }
    fn revoke_session(&self, session: &str, until: u64) {
        self.revocations.revoke_session(session, until);
    }
    fn follow_feed(&self, max_staleness: Duration) {
        self.revocations.follow_feed(max_staleness);
    }
    fn feed_down(&self, at: SystemTime) {
        self.revocations.feed_down(at);
    }
    fn feed_up(&self) {
        self.revocations.feed_up();
    }
    fn stale_for(&self, now: SystemTime) -> Option<Duration> {
        self.revocations.stale_for(now)
    }
    fn api_keys(&self) -> Option<&dyn ApiKeyFeed> {
        Some(self)
    }
}

impl ApiKeyFeed for KeyedFeed {
    fn key_changed(&self, id: &str, current: Option<(ApiKeyRecord, String)>) {
        match current {
            Some((record, owner_role)) if record.revoked_at.is_none() => {
                self.keys.insert(&record, &owner_role);
            }
            _ => {
                self.keys.remove(id);
                let until =
                    unix_seconds(SystemTime::now()).saturating_add(self.session_lifetime.as_secs());
                self.revocations.revoke_session(&session_of(id), until);
            }
        }
    }

    fn owner_role(&self, user: &str, role: &str) {
        match Role::parse(role) {
            Ok(role) => self.keys.set_owner_role(user, &role),
            // A role no header can carry: the keys stop rather than guess.
            Err(_) => self.keys.owner_deleted(user),
        }
    }

    fn owner_deleted(&self, user: &str) {
        self.keys.owner_deleted(user);
    }

    fn owns_keys(&self, user: &str) -> bool {
        self.keys.owns_keys(user)
    }

    fn replace_all(&self, keys: Vec<(ApiKeyRecord, String)>) {
        self.keys.replace_all(&keys);
    }
}
