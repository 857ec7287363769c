//! Sessions: starting one at login, rotating its refresh token, and
//! recognising reuse. A session is a family of refresh tokens; each token is
//! single-use, and presenting a used one again revokes the whole family.
//!
//! The refresh race (several tabs or a retrying app presenting the same
//! token at once) is settled here: concurrent presentations of one token
//! share a single rotation, and for `refresh_reuse_grace` after it the same
//! token receives that same new pair from memory instead of tripping reuse
//! detection. At most one pair is ever minted per refresh token. Only
//! tokens the store knows get a cache entry, and a shared pair is handed out
//! only while its session is still live.
//!
//! A rotated token is kept in the store only for the grace; after that, its
//! reuse is recognised from its tag (`refresh_token.rs`) against the
//! family's chain, so the store holds a bounded number of records per
//! session however often it rotates.

pub mod cookies;
mod error;
mod grace;
mod load;
mod refresh_limit;
pub(crate) mod refresh_token;
mod rotation;
mod sealed;

pub use error::{RotationCause, SessionError};
pub use load::load_revocations;
pub use refresh_limit::RefreshLimits;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::jwt::{MintedToken, TokenIssuer};
use super::revocation::RevocationList;
use super::throttle::Throttled;
use crate::store::{hash_from_hex, Family, RefreshRecord, Store, StoreError, User, UserStamp};
use crate::timestamp::unix_seconds;

use grace::GraceCache;
use rotation::Rotation;

/// Most rotations the grace cache remembers. Refreshes are rate-limited per
/// address, so this is reached only by a wide flood; an entry evicted early
/// turns a retry into a 401 that does not revoke the session.
const MAX_CACHED_ROTATIONS: usize = 16_384;

/// What a client receives when a session starts or rotates.
#[derive(Clone)]
pub struct IssuedSession {
    pub user: User,
    /// The session the pair belongs to.
    pub family_id: String,
    pub access: MintedToken,
    pub refresh_token: String,
    pub csrf_token: String,
    /// How long the refresh token (and its cookie) lives.
    pub refresh_max_age: Duration,
}

/// Lifetimes that govern sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub refresh_ttl: Duration,
    pub session_max_age: Duration,
    pub reuse_grace: Duration,
    /// Access tokens of a revoked session are refused for this long (their
    /// longest remaining life, leeway included).
    pub access_lifetime: Duration,
    /// Sessions a user may hold in the store; a login past it ends the
    /// oldest (revoked ones first).
    pub max_sessions_per_user: usize,
}

pub struct Sessions {
    store: Arc<dyn Store>,
    issuer: Arc<TokenIssuer>,
    revocations: Arc<RevocationList>,
    policy: SessionPolicy,
    /// Keyed by the SHA-256 of the presented token, for the grace. Memory
    /// only; a shared store also keeps each pair sealed under the presented
    /// token, for retries that land on another instance.
    rotations: Mutex<GraceCache<Rotation>>,
    /// Rotations per session and refreshes per address.
    limits: RefreshLimits,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        issuer: Arc<TokenIssuer>,
        revocations: Arc<RevocationList>,
        policy: SessionPolicy,
        limits: RefreshLimits,
    ) -> Self {
        Self {
            store,
            issuer,
            revocations,
            rotations: Mutex::new(GraceCache::new(policy.reuse_grace, MAX_CACHED_ROTATIONS)),
            policy,
            limits,
        }
    }

    /// Starts a new session (family) for `user` as the caller read it before
    /// its password check. If the user changed meanwhile (password change,
    /// logout-all, role change) or was deleted, no session is created and the
    /// answer is [`SessionError::UserChanged`]: a check that raced
    /// such a change must not outlive it. The caller flushes.
    pub async fn start(&self, user: User, now: SystemTime) -> Result<IssuedSession, SessionError> {
        let now_secs = unix_seconds(now);
        let family = Family {
            id: random_token(16),
            user_id: user.id.clone(),
            created_at: now_secs,
            expires_at: now_secs.saturating_add(self.policy.session_max_age.as_secs()),
            revoked_at: None,
        };
        let refresh_token = random_token(32);
        let record = RefreshRecord {
            family_id: family.id.clone(),
            user_id: user.id.clone(),
            expires_at: self.refresh_expiry(now_secs, &family),
            rotated_at: None,
            replaced_by: None,
        };
        let verified = UserStamp::of(&user);
        match self
            .store
            .create_family(&family, &hash_token(&refresh_token), &record, &verified)
            .await
        {
            Ok(()) => {}
            Err(StoreError::UserChanged(_) | StoreError::UnknownUser(_)) => {
                return Err(SessionError::UserChanged)
            }
            Err(err) => return Err(SessionError::Store(err)),
        }
        self.cap_sessions(&user.id, now_secs).await?;
        self.issue(user, &family, refresh_token, record.expires_at, now)
    }

    /// Ends the user's sessions past `max_sessions_per_user`; the sweep
    /// purges them. The caller flushes.
    async fn cap_sessions(&self, user_id: &str, now_secs: u64) -> Result<(), SessionError> {
        let revoked = self
            .store
            .cap_user_families(user_id, self.policy.max_sessions_per_user, now_secs)
            .await?;
        let until = now_secs.saturating_add(self.policy.access_lifetime.as_secs());
        for family in revoked {
            tracing::info!(family = %family, "session limit reached; ended the oldest session");
            self.revocations.revoke_session(&family, until);
        }
        Ok(())
    }

    /// Counts a refresh request from `peer` (429 past the limit).
    pub fn admit_refresh(&self, peer: IpAddr) -> Result<(), Throttled> {
        self.limits.admit_address(peer, Instant::now())
    }

    /// Revokes one session: its refresh tokens in the store and its access
    /// tokens in memory. Flushes before returning.
    pub async fn revoke_family(&self, family_id: &str, now_secs: u64) -> Result<(), SessionError> {
        self.store.revoke_family(family_id, now_secs).await?;
        self.revocations.revoke_session(
            family_id,
            now_secs.saturating_add(self.policy.access_lifetime.as_secs()),
        );
        Ok(self.store.flush().await?)
    }

    /// The family a refresh token belongs to: from its record, or, for a
    /// rotated token already dropped from the store, from its verified tag.
    pub async fn family_of(&self, presented: &str) -> Result<Option<String>, SessionError> {
        let record = self.store.refresh_record(&hash_token(presented)).await?;
        if let Some(record) = record {
            return Ok(Some(record.family_id));
        }
        let Some(tagged) = refresh_token::parse(presented) else {
            return Ok(None);
        };
        let chain = self.store.chain(tagged.family_id).await?;
        let issued_here = chain.is_some_and(|chain| {
            tagged.generation <= chain.generation
                && hash_from_hex(&chain.tag_key).is_some_and(|key| tagged.verify(&key))
        });
        Ok(issued_here.then(|| tagged.family_id.to_owned()))
    }

    /// Revokes every session of a user except `keep`; the caller flushes.
    pub async fn revoke_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now_secs: u64,
    ) -> Result<(), SessionError> {
        let revoked = self
            .store
            .revoke_user_families(user_id, keep, now_secs)
            .await?;
        let until = now_secs.saturating_add(self.policy.access_lifetime.as_secs());
        for family in revoked {
            self.revocations.revoke_session(&family, until);
        }
        Ok(())
    }

    /// Forgets rotations past their grace and rate windows that ended.
    pub fn prune(&self) {
        let now = Instant::now();
        self.rotations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expire(now);
        self.limits.prune(now);
    }

    /// How many rotations the grace cache holds.
    pub fn cached_rotations(&self) -> usize {
        self.rotations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn refresh_expiry(&self, now_secs: u64, family: &Family) -> u64 {
        now_secs
            .saturating_add(self.policy.refresh_ttl.as_secs())
            .min(family.expires_at)
    }

    fn issue(
        &self,
        user: User,
        family: &Family,
        refresh_token: String,
        refresh_expires_at: u64,
        now: SystemTime,
    ) -> Result<IssuedSession, SessionError> {
        let access = self.issuer.mint(
            &user.id,
            &user.role,
            user.token_version,
            Some(&family.id),
            now,
        )?;
        let refresh_max_age =
            Duration::from_secs(refresh_expires_at.saturating_sub(unix_seconds(now)));
        Ok(IssuedSession {
            csrf_token: csrf_token_for(&refresh_token),
            user,
            family_id: family.id.clone(),
            access,
            refresh_token,
            refresh_max_age,
        })
    }
}

/// The CSRF token that goes with a refresh token: derived from it, so the
/// double-submit check is bound to the session and a cookie planted by a
/// sibling domain cannot be paired with a forged header.
pub fn csrf_token_for(refresh_token: &str) -> String {
    let digest = crate::digest::sha256(&[b"authgate-csrf\0", refresh_token.as_bytes()]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// Constant-time check of a presented CSRF header against the refresh token.
pub fn csrf_matches(refresh_token: &str, presented: &str) -> bool {
    let expected = csrf_token_for(refresh_token);
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

pub fn hash_token(token: &str) -> [u8; 32] {
    crate::digest::sha256(&[token.as_bytes()])
}

/// A fresh key for a family's token tags.
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

/// `bytes` random bytes, URL-safe base64.
pub fn random_token(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests;
