//! API keys for scripts: long-lived `agk_…` bearer credentials, accepted on
//! routes with `api_keys = true`. `key.rs` makes and hashes the text,
//! `index.rs` holds every live key in memory and decides each use,
//! `feed.rs` keeps that index current from the PostgreSQL feed. The
//! endpoints are in `api/api_keys.rs`.
//!
//! A key acts as its owner, through the same [`RevocationList`]: deleting
//! the owner refuses its keys at once, and a revoked key's live tunnels end
//! like a logged-out session's (each key is a "session" `apikey:<id>`).

pub(crate) mod feed;
pub(crate) mod index;
pub(crate) mod key;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::revocation::{RevocationList, DELETED};
use super::Identity;
use crate::timestamp::unix_seconds;
pub(crate) use index::{ApiKeyIndex, KeyRefusal};

/// What a key's live connections count as "until" for a key without an
/// expiry (a tunnel of a `close_on_expiry` route ends then at the latest).
const NO_EXPIRY: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why a presented API key was not accepted (responses chosen in `error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error(transparent)]
    Refused(#[from] KeyRefusal),
    /// As for tokens: with other instances' revocations unknown, fail closed.
    #[error("revocation state {stale_for:?} old")]
    Stale { stale_for: Duration },
}

impl ApiKeyError {
    /// Failures that are guesses (count toward the per-address throttle).
    pub fn is_guess(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

/// The revocation-list session of key `id`: revoking it ends the key's
/// live tunnels and streams.
pub(crate) fn session_of(id: &str) -> String {
    format!("apikey:{id}")
}

/// The identity `presented` (a bearer credential with the key prefix)
/// stands for at `now`.
pub(crate) fn authenticate(
    index: &ApiKeyIndex,
    revocations: &RevocationList,
    presented: &str,
    now: SystemTime,
) -> Result<Identity, ApiKeyError> {
    if let Some(stale_for) = revocations.stale_for(now) {
        return Err(ApiKeyError::Stale { stale_for });
    }
    let now_secs = unix_seconds(now);
    let found = index.find(presented, now_secs)?;
    let session = session_of(&found.id);
    // Any version below the deletion marker: only deletion (and the key's
    // own revocation, as its session) refuses it here.
    let version = DELETED - 1;
    if !revocations.allows(found.user_id.as_str(), version, Some(&session)) {
        return Err(KeyRefusal::Unknown.into());
    }
    Ok(Identity {
        user_id: found.user_id,
        role: found.role,
        session: Some(Arc::from(session)),
        version,
        expires_at: found
            .expires_at
            .unwrap_or_else(|| now_secs.saturating_add(NO_EXPIRY.as_secs())),
        assertion: None,
        key_id: Some(found.id_header),
    })
}
