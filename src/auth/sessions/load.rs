//! Loading the revocation state at start: what the store says about token
//! versions, deleted users and recently revoked sessions goes into the
//! in-memory [`RevocationList`] the proxied path consults.

use std::time::{Duration, SystemTime};

use crate::auth::revocation::RevocationList;
use crate::store::{Store, StoreError};
use crate::timestamp::unix_seconds;

/// Loads the revocation state the proxied path consults: token versions,
/// deleted users, and sessions revoked recently enough that their access
/// tokens may still be unexpired. `access_lifetime` is this run's (ttl
/// plus leeway); the window used is the longest any live token may have,
/// which an earlier run with a longer `access_ttl` can have made longer.
/// Returns that window: revocations made during this run must last as
/// long, and the sweep must keep stored ones as long.
pub async fn load_revocations(
    store: &dyn Store,
    revocations: &RevocationList,
    access_lifetime: Duration,
    now: SystemTime,
) -> Result<Duration, StoreError> {
    let now_secs = unix_seconds(now);
    let window = store
        .note_access_lifetime(access_lifetime.as_secs(), now_secs)
        .await?;
    for (user, version) in store.token_versions().await? {
        revocations.set_min_version(&user, version);
    }
    for user in store.deleted_user_ids().await? {
        revocations.delete_user(&user);
    }
    let since = now_secs.saturating_sub(window);
    for (family, revoked_at) in store.revoked_families_since(since).await? {
        revocations.revoke_session(&family, revoked_at.saturating_add(window));
    }
    Ok(Duration::from_secs(window))
}
