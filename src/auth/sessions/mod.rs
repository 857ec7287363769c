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
pub mod refresh_token;

pub use error::{RotationCause, SessionError};
pub use load::load_revocations;
pub use refresh_limit::RefreshLimits;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::OnceCell;

use super::jwt::{unix_seconds, MintedToken, TokenIssuer};
use super::revocation::RevocationList;
use super::throttle::Throttled;
use crate::store::{
    hash_from_hex, ChainStep, Family, RefreshRecord, RotateOutcome, Store, StoreError, User,
    UserStamp,
};

use grace::GraceCache;

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

/// Why a rotation failed; cloneable so every waiter on one rotation gets it,
/// its cause included.
#[derive(Debug, Clone)]
enum RotationFailure {
    Unknown,
    Expired,
    Reuse,
    Internal(RotationCause),
    /// The database is unreachable: 503, the client retries.
    Unavailable(RotationCause),
}

impl From<RotationFailure> for SessionError {
    fn from(failure: RotationFailure) -> Self {
        match failure {
            RotationFailure::Unknown => SessionError::UnknownToken,
            RotationFailure::Expired => SessionError::Expired,
            RotationFailure::Reuse => SessionError::Reused,
            RotationFailure::Internal(cause) => SessionError::RotationFailed(cause),
            RotationFailure::Unavailable(cause) => SessionError::StoreUnavailable(cause),
        }
    }
}

type RotationResult = Result<IssuedSession, RotationFailure>;

/// A rotation in progress or recently done, shared by every presentation of
/// the same token within the grace period.
type Rotation = Arc<OnceCell<RotationResult>>;

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

    /// Exchanges a refresh token for a new pair (see the module doc).
    pub async fn rotate(
        &self,
        presented: &str,
        now: SystemTime,
    ) -> Result<IssuedSession, SessionError> {
        let now_secs = unix_seconds(now);
        let presented_hash = hash_token(presented);
        let Some(record) = self.store.refresh_record(&presented_hash).await? else {
            return Err(self.unknown_token(presented, now_secs).await);
        };
        // Only a token that can still rotate is held to the session's limit:
        // a rotated one mints nothing, and its reuse must never wait.
        let limited = record
            .rotated_at
            .is_none()
            .then_some(record.family_id.as_str());
        if self.policy.reuse_grace.is_zero() {
            // Strict mode: every presentation after the first is reuse.
            if let Some(family_id) = limited {
                self.limits.check_session(family_id, Instant::now())?;
            }
            return Ok(self
                .rotate_once(presented, presented_hash, record, now)
                .await?);
        }
        let cell = self.shared_rotation(presented_hash, limited)?;
        let mut rotated_here = false;
        let issued = cell
            .get_or_init(|| {
                rotated_here = true;
                self.rotate_once(presented, presented_hash, record, now)
            })
            .await
            .clone()?;
        if !rotated_here {
            // A pair minted for an earlier presentation: the session may
            // have ended since (logout, password change, reuse).
            self.ensure_live(&issued.family_id, now_secs).await?;
        }
        Ok(issued)
    }

    /// The rotation every presentation of this token within the grace
    /// shares; a new one is refused once the session `limited` (if any)
    /// made its rate limit.
    fn shared_rotation(
        &self,
        presented_hash: [u8; 32],
        limited: Option<&str>,
    ) -> Result<Rotation, SessionError> {
        let now = Instant::now();
        let mut rotations = self
            .rotations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        rotations.expire(now);
        if let Some(cell) = rotations.get(&presented_hash) {
            return Ok(cell);
        }
        if let Some(family_id) = limited {
            self.limits.check_session(family_id, now)?;
        }
        let cell = Arc::new(OnceCell::new());
        rotations.insert(presented_hash, Arc::clone(&cell), now);
        Ok(cell)
    }

    /// A pair shared from the grace is handed out only while its session
    /// lives: after a logout or a password change the old token answers
    /// 401, not the dead pair.
    async fn ensure_live(&self, family_id: &str, now_secs: u64) -> Result<(), SessionError> {
        match self.store.family(family_id).await? {
            Some(family) if family.revoked_at.is_none() && now_secs < family.expires_at => Ok(()),
            _ => Err(SessionError::UnknownToken),
        }
    }

    /// A token the store does not hold: unknown, or a rotated token dropped
    /// after its grace, which is reuse if its tag says this family issued it.
    async fn unknown_token(&self, presented: &str, now_secs: u64) -> SessionError {
        let Some(tagged) = refresh_token::parse(presented) else {
            return SessionError::UnknownToken;
        };
        let chain = match self.store.chain(tagged.family_id).await {
            Ok(Some(chain)) => chain,
            Ok(None) => return SessionError::UnknownToken,
            Err(err) => return SessionError::Store(err),
        };
        let Some(key) = hash_from_hex(&chain.tag_key) else {
            return SessionError::UnreadableTagKey;
        };
        // The live generation's own tag with a wrong secret proves nothing.
        if tagged.generation >= chain.generation || !tagged.verify(&key) {
            return SessionError::UnknownToken;
        }
        tracing::warn!(family = %tagged.family_id, "refresh token reuse detected; revoking the session");
        match self.revoke_family(tagged.family_id, now_secs).await {
            Ok(()) => SessionError::Reused,
            Err(err) => err,
        }
    }

    /// The one rotation of a token: compare-and-swap in the store, mint, flush.
    async fn rotate_once(
        &self,
        presented_token: &str,
        presented: [u8; 32],
        record: RefreshRecord,
        now: SystemTime,
    ) -> RotationResult {
        let now_secs = unix_seconds(now);
        let current_family = match self.store.family(&record.family_id).await {
            Ok(Some(family)) => family,
            Ok(None) => return Err(RotationFailure::Unknown),
            Err(err) => return Err(rotation_failure(err)),
        };
        let family_end = current_family.expires_at;
        let (generation, tag_key) = match self.store.chain(&record.family_id).await {
            Ok(Some(chain)) => match hash_from_hex(&chain.tag_key) {
                Some(key) => (chain.generation.saturating_add(1), key),
                None => {
                    return Err(rotation_failure(StoreError::Corrupt(
                        "a session chain holds an unreadable tag key".to_owned(),
                    )))
                }
            },
            Ok(None) => (1, random_key()),
            Err(err) => return Err(rotation_failure(err)),
        };
        // A token from login carries no tag: it stays until its own expiry,
        // since its reuse could not be recognised once it is gone.
        let keep_presented_until =
            refresh_token::parse(presented_token).map(|_| self.keep_until(now_secs));
        let step = ChainStep {
            generation,
            tag_key,
            keep_presented_until,
        };
        let new_token = refresh_token::mint(&record.family_id, generation, &tag_key);
        let new_hash = hash_token(&new_token);
        let new_record = RefreshRecord {
            family_id: record.family_id.clone(),
            user_id: record.user_id.clone(),
            expires_at: now_secs
                .saturating_add(self.policy.refresh_ttl.as_secs())
                .min(family_end),
            rotated_at: None,
            replaced_by: None,
        };
        // Instances sharing the store: a retry within the grace may land on
        // another instance, so the pair is minted first and kept, sealed
        // under the presented token, in the rotation's own transaction.
        let shared = self.store.shared() && !self.policy.reuse_grace.is_zero();
        let mut minted = None;
        let outcome = if shared {
            let user = match self.store.user_by_id(&record.user_id).await {
                Ok(Some(user)) => user,
                Ok(None) => return Err(RotationFailure::Unknown),
                Err(err) => return Err(rotation_failure(err)),
            };
            let issued = self
                .issue(
                    user,
                    &current_family,
                    new_token.clone(),
                    new_record.expires_at,
                    now,
                )
                .map_err(rotation_failure)?;
            let sealed = sealed::seal(presented_token, &issued, new_record.expires_at)
                .map_err(rotation_failure)?;
            let until = now_secs.saturating_add(self.policy.reuse_grace.as_secs());
            let outcome = self
                .store
                .rotate_sealed(
                    &presented,
                    &new_hash,
                    &new_record,
                    &step,
                    now_secs,
                    &sealed,
                    until,
                )
                .await
                .map_err(rotation_failure)?;
            minted = Some(issued);
            outcome
        } else {
            self.store
                .rotate(&presented, &new_hash, &new_record, &step, now_secs)
                .await
                .map_err(rotation_failure)?
        };
        let family = match outcome {
            RotateOutcome::Rotated { family } => {
                self.limits.count_session(&family.id, Instant::now());
                family
            }
            RotateOutcome::AlreadyRotated {
                rotated_at,
                family_id,
            } => {
                if now_secs <= rotated_at.saturating_add(self.policy.reuse_grace.as_secs())
                    && !self.policy.reuse_grace.is_zero()
                {
                    // Rotated on another instance within the grace: the
                    // same pair, from the sealed copy only this token opens.
                    if shared {
                        match self.store.sealed_pair(&presented, now_secs).await {
                            Ok(Some(sealed)) => {
                                return self
                                    .reopen(presented_token, &sealed, &record.user_id, now)
                                    .await
                            }
                            Ok(None) => {}
                            Err(err) => return Err(rotation_failure(err)),
                        }
                    }
                    // A retry within the grace whose pair is no longer in
                    // memory (a restart): refuse without punishing the session.
                    return Err(RotationFailure::Unknown);
                }
                tracing::warn!(family = %family_id, "refresh token reuse detected; revoking the session");
                self.revoke_family(&family_id, now_secs)
                    .await
                    .map_err(rotation_failure)?;
                return Err(RotationFailure::Reuse);
            }
            RotateOutcome::Unknown => {
                // In strict mode a concurrent rotation may have dropped the
                // token at once: its tag still tells reuse from a stranger.
                return Err(match self.unknown_token(presented_token, now_secs).await {
                    SessionError::Reused => RotationFailure::Reuse,
                    SessionError::UnknownToken => RotationFailure::Unknown,
                    err => rotation_failure(err),
                });
            }
            RotateOutcome::FamilyRevoked { .. } => return Err(RotationFailure::Unknown),
            RotateOutcome::Expired | RotateOutcome::FamilyExpired { .. } => {
                return Err(RotationFailure::Expired)
            }
        };
        let issued = match minted {
            Some(issued) => issued,
            None => {
                let user = match self.store.user_by_id(&family.user_id).await {
                    Ok(Some(user)) => user,
                    Ok(None) => return Err(RotationFailure::Unknown),
                    Err(err) => return Err(rotation_failure(err)),
                };
                self.issue(user, &family, new_token, new_record.expires_at, now)
                    .map_err(rotation_failure)?
            }
        };
        self.store.flush().await.map_err(rotation_failure)?;
        Ok(issued)
    }

    /// The pair another instance minted for `presented_token`, from its
    /// sealed copy; the user is read afresh for the answer's profile.
    async fn reopen(
        &self,
        presented_token: &str,
        sealed: &[u8],
        user_id: &str,
        now: SystemTime,
    ) -> RotationResult {
        let (family_id, access, refresh_token, refresh_expires_at) =
            sealed::open(presented_token, sealed).map_err(rotation_failure)?;
        let user = match self.store.user_by_id(user_id).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(RotationFailure::Unknown),
            Err(err) => return Err(rotation_failure(err)),
        };
        Ok(IssuedSession {
            csrf_token: csrf_token_for(&refresh_token),
            user,
            family_id,
            access,
            refresh_token,
            refresh_max_age: Duration::from_secs(
                refresh_expires_at.saturating_sub(unix_seconds(now)),
            ),
        })
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

    /// Until when a rotated token stays in the store: past the last second
    /// a retry may still fall within the grace, or not at all in strict mode.
    fn keep_until(&self, now_secs: u64) -> u64 {
        let grace = self.policy.reuse_grace;
        if grace.is_zero() {
            return now_secs;
        }
        let whole_seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        now_secs.saturating_add(whole_seconds).saturating_add(1)
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

/// Classifies a rotation failure: the database being unreachable is retried
/// by the client (503), anything else is ours (500). Not logged here: the
/// cause travels with the error to the service, which logs each failed
/// request once, in its span.
fn rotation_failure(err: impl std::error::Error + Send + Sync + 'static) -> RotationFailure {
    let cause: RotationCause = Arc::new(err);
    if matches!(
        cause.downcast_ref::<StoreError>(),
        Some(StoreError::Unavailable(_))
    ) {
        return RotationFailure::Unavailable(cause);
    }
    RotationFailure::Internal(cause)
}

/// The pair kept for the reuse grace across instances, as sealed bytes.
mod sealed {
    use serde::{Deserialize, Serialize};

    use super::IssuedSession;
    use crate::auth::jwt::{AccessClaims, MintedToken};
    use crate::auth::sealed_pair;

    /// What a retry on another instance needs to answer with the same pair.
    #[derive(Serialize, Deserialize)]
    struct Body {
        family_id: String,
        access_token: String,
        access_expires_in: u64,
        claims: AccessClaims,
        refresh_token: String,
        refresh_expires_at: u64,
    }

    #[derive(Debug, thiserror::Error)]
    pub enum SealedError {
        #[error("cannot encode the pair: {0}")]
        Encode(#[from] serde_json::Error),
        #[error(transparent)]
        Seal(#[from] sealed_pair::SealError),
    }

    pub fn seal(
        presented: &str,
        issued: &IssuedSession,
        refresh_expires_at: u64,
    ) -> Result<Vec<u8>, SealedError> {
        let body = Body {
            family_id: issued.family_id.clone(),
            access_token: issued.access.token.clone(),
            access_expires_in: issued.access.expires_in.as_secs(),
            claims: issued.access.claims.clone(),
            refresh_token: issued.refresh_token.clone(),
            refresh_expires_at,
        };
        Ok(sealed_pair::seal(presented, &serde_json::to_vec(&body)?)?)
    }

    pub fn open(
        presented: &str,
        sealed: &[u8],
    ) -> Result<(String, MintedToken, String, u64), SealedError> {
        let body: Body = serde_json::from_slice(&sealed_pair::open(presented, sealed)?)?;
        let access = MintedToken {
            token: body.access_token,
            expires_in: std::time::Duration::from_secs(body.access_expires_in),
            claims: body.claims,
        };
        Ok((
            body.family_id,
            access,
            body.refresh_token,
            body.refresh_expires_at,
        ))
    }
}

/// The CSRF token that goes with a refresh token: derived from it, so the
/// double-submit check is bound to the session and a cookie planted by a
/// sibling domain cannot be paired with a forged header.
pub fn csrf_token_for(refresh_token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"authgate-csrf\0")
        .chain_update(refresh_token.as_bytes())
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// Constant-time check of a presented CSRF header against the refresh token.
pub fn csrf_matches(refresh_token: &str, presented: &str) -> bool {
    let expected = csrf_token_for(refresh_token);
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
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
