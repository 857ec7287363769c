//! Browser sessions: what the `__Host-authgate_session` cookie carries and
//! how it is checked. The cookie is a sealed copy of a store session's
//! facts (session id, user, role, token version, when the store last
//! vouched for it, its absolute end), opened with the keys every instance
//! loads, so no instance keeps a browser session in memory alone.
//!
//! Between two store checks a cookie is judged like an access token, in
//! memory: idle timeout, absolute end, and the [`RevocationList`] (session
//! revoked, user version bumped, user deleted). A cookie older than
//! [`BrowserPolicy::refresh_after`] is checked against the store once and
//! re-issued: since revocations are held in memory for at least the access
//! token lifetime, and a cookie goes unchecked for less than that, no
//! revocation can be forgotten while a cookie that predates it is accepted.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use super::revocation::RevocationList;
use super::Identity;
use crate::account::{Role, UserId};
use crate::store::{Store, StoreError};
use crate::timestamp::unix_seconds;

/// Longest cookie value read: a sealed claim set is a few hundred bytes.
const MAX_COOKIE_BYTES: usize = 2_048;

/// Lifetimes that govern a browser session.
#[derive(Debug, Clone, Copy)]
pub struct BrowserPolicy {
    /// `[web] session_idle_timeout`: unused this long, the session ends.
    pub idle_timeout: Duration,
    /// How long a cookie may go without a store check: below the time the
    /// revocation list holds a revoked session (`[tokens] access_ttl`).
    pub recheck_after: Duration,
}

impl BrowserPolicy {
    /// A cookie this old is checked against the store and re-issued. A
    /// quarter of the idle timeout at most, so the idle clock slides
    /// with use to within a quarter of its length.
    pub fn refresh_after(&self) -> Duration {
        self.recheck_after.min(self.idle_timeout / 4)
    }
}

/// What a cookie carries. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The store session (refresh family) this cookie belongs to.
    pub sid: String,
    pub sub: String,
    pub role: String,
    pub ver: u32,
    /// When this cookie was issued: the store last vouched for the session
    /// then, and the idle clock counts from it.
    pub iat: u64,
    /// The session's absolute end (`session_max_age` after sign-in).
    pub exp: u64,
}

/// Why a cookie is not a credential (the answers are chosen in `error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// Forged, truncated, from an unknown or retired key, or unreadable.
    #[error("unreadable session cookie")]
    Unreadable,
    #[error("browser session past its absolute end")]
    Expired,
    #[error("browser session idle too long")]
    Idle,
    #[error("browser session revoked")]
    Revoked,
    #[error("revocation state {stale_for:?} old")]
    Stale { stale_for: Duration },
    #[error("cannot seal the session cookie")]
    Seal,
    #[error("checking the browser session: {0}")]
    Store(#[from] StoreError),
}

impl BrowserError {
    /// The session itself is over (or was never one): the browser should
    /// sign in again. The others are the gateway's trouble, not the cookie's.
    pub fn ends_session(&self) -> bool {
        matches!(
            self,
            Self::Unreadable | Self::Expired | Self::Idle | Self::Revoked
        )
    }
}

/// A cookie that was accepted.
#[derive(Debug)]
pub struct Verified {
    pub identity: Identity,
    pub claims: Claims,
    /// Old enough to be checked against the store and re-issued.
    pub due: bool,
}

/// Seals `claims` under the current signing key's cookie key:
/// `<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`.
pub fn mint(claims: &Claims, keys: &KeySet) -> Result<String, BrowserError> {
    let kid = &keys.signing().kid;
    let key = keys.session_key(kid).ok_or(BrowserError::Seal)?;
    let plain = serde_json::to_vec(claims).map_err(|_| BrowserError::Seal)?;
    let sealed = key.seal(kid.as_bytes(), &plain).ok_or(BrowserError::Seal)?;
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
    Ok(format!("{kid}.{body}"))
}

/// The claims of a cookie sealed by any key still loaded.
pub fn open(value: &str, keys: &KeySet) -> Result<Claims, BrowserError> {
    if value.len() > MAX_COOKIE_BYTES {
        return Err(BrowserError::Unreadable);
    }
    let (kid, body) = value.split_once('.').ok_or(BrowserError::Unreadable)?;
    let key = keys.session_key(kid).ok_or(BrowserError::Unreadable)?;
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| BrowserError::Unreadable)?;
    let plain = key
        .open(kid.as_bytes(), &sealed)
        .ok_or(BrowserError::Unreadable)?;
    serde_json::from_slice(&plain).map_err(|_| BrowserError::Unreadable)
}

/// Judges a cookie as of `now` without touching the store.
pub fn verify(
    value: &str,
    keys: &KeySet,
    revocations: &RevocationList,
    policy: &BrowserPolicy,
    now: SystemTime,
) -> Result<Verified, BrowserError> {
    let claims = open(value, keys)?;
    let now_secs = unix_seconds(now);
    if now_secs >= claims.exp {
        return Err(BrowserError::Expired);
    }
    let age = now_secs.saturating_sub(claims.iat);
    if age >= policy.idle_timeout.as_secs() {
        return Err(BrowserError::Idle);
    }
    // Fail closed, as for bearer tokens: other instances' revocations unknown.
    if let Some(stale_for) = revocations.stale_for(now) {
        return Err(BrowserError::Stale { stale_for });
    }
    if !revocations.allows(&claims.sub, claims.ver, Some(&claims.sid)) {
        return Err(BrowserError::Revoked);
    }
    let identity = identity(&claims, policy)?;
    Ok(Verified {
        identity,
        due: age >= policy.refresh_after().as_secs(),
        claims,
    })
}

/// Asks the store whether the session still stands and the user is
/// unchanged; if so, the claims to re-issue, dated `now`. The role is the
/// user's current one (a role change also bumps the version, so this only
/// matters for a cookie minted before it).
pub async fn recheck(
    store: &dyn Store,
    claims: Claims,
    now: SystemTime,
) -> Result<Claims, BrowserError> {
    let now_secs = unix_seconds(now);
    let family = store.family(&claims.sid).await?;
    let live = family.is_some_and(|family| {
        family.revoked_at.is_none() && now_secs < family.expires_at && family.user_id == claims.sub
    });
    if !live {
        return Err(BrowserError::Revoked);
    }
    let user = store
        .user_by_id(&claims.sub)
        .await?
        .filter(|user| user.token_version == claims.ver)
        .ok_or(BrowserError::Revoked)?;
    Ok(Claims {
        role: user.role,
        iat: now_secs,
        ..claims
    })
}

/// How long the browser should keep a cookie carrying `claims`: until the
/// idle timeout or the absolute end, whichever comes first.
pub fn max_age(claims: &Claims, policy: &BrowserPolicy, now: SystemTime) -> Duration {
    let until_end = claims.exp.saturating_sub(unix_seconds(now));
    policy.idle_timeout.min(Duration::from_secs(until_end))
}

/// The caller a cookie's claims name.
pub fn identity(claims: &Claims, policy: &BrowserPolicy) -> Result<Identity, BrowserError> {
    Ok(Identity {
        user_id: UserId::parse(&claims.sub).map_err(|_| BrowserError::Unreadable)?,
        role: Role::parse(&claims.role).map_err(|_| BrowserError::Unreadable)?,
        session: Some(Arc::from(claims.sid.as_str())),
        version: claims.ver,
        expires_at: claims
            .exp
            .min(claims.iat.saturating_add(policy.idle_timeout.as_secs())),
        assertion: None,
        key_id: None,
    })
}

#[cfg(test)]
mod tests;
