//! Sessions: starting one at login, rotating its refresh token, and
//! recognising reuse. A session is a family of refresh tokens; each token is
//! single-use, and presenting a used one again revokes the whole family.
//!
//! The refresh race (several tabs or a retrying app presenting the same
//! token at once) is settled here: concurrent presentations of one token
//! share a single rotation, and for `refresh_reuse_grace` after it the same
//! token receives that same new pair from memory instead of tripping reuse
//! detection. At most one pair is ever minted per refresh token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::OnceCell;

use crate::auth::jwt::{unix_seconds, MintedToken, TokenIssuer};
use crate::auth::revocation::RevocationList;
use crate::error::GatewayError;
use crate::store::{Family, RefreshRecord, RotateOutcome, Store, StoreError, User, UserStamp};

/// What a client receives when a session starts or rotates.
#[derive(Clone)]
pub struct IssuedSession {
    pub user: User,
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
}

/// Why a rotation failed; cloneable so every waiter on one rotation gets it.
#[derive(Debug, Clone, Copy)]
enum RotationFailure {
    Unknown,
    Expired,
    Reuse,
    Internal,
    /// The database is unreachable: 503, the client retries.
    Unavailable,
}

impl From<RotationFailure> for GatewayError {
    fn from(failure: RotationFailure) -> Self {
        match failure {
            RotationFailure::Unknown => GatewayError::InvalidRefreshToken,
            RotationFailure::Expired => GatewayError::RefreshExpired,
            RotationFailure::Reuse => GatewayError::TokenReuseDetected,
            RotationFailure::Internal => {
                GatewayError::internal("refresh rotation failed; see the log above")
            }
            RotationFailure::Unavailable => {
                GatewayError::StoreUnavailable("refresh rotation: database unavailable".into())
            }
        }
    }
}

type RotationResult = Result<IssuedSession, RotationFailure>;

/// A rotation in progress or recently done, shared by every presentation of
/// the same token within the grace period.
struct Rotation {
    started: Instant,
    result: Arc<OnceCell<RotationResult>>,
}

pub struct Sessions {
    store: Arc<dyn Store>,
    issuer: Arc<TokenIssuer>,
    revocations: Arc<RevocationList>,
    policy: SessionPolicy,
    /// Keyed by the SHA-256 of the presented token; entries older than the
    /// grace are pruned. Memory only, by design: a pair is never stored.
    rotations: Mutex<HashMap<[u8; 32], Rotation>>,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        issuer: Arc<TokenIssuer>,
        revocations: Arc<RevocationList>,
        policy: SessionPolicy,
    ) -> Self {
        Self {
            store,
            issuer,
            revocations,
            policy,
            rotations: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a new session (family) for `user` as the caller read it before
    /// its password check. If the user changed meanwhile (password change,
    /// logout-all, role change) or was deleted, no session is created and the
    /// answer is [`GatewayError::InvalidCredentials`]: a check that raced
    /// such a change must not outlive it. The caller flushes.
    pub async fn start(&self, user: User, now: SystemTime) -> Result<IssuedSession, GatewayError> {
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
                return Err(GatewayError::InvalidCredentials)
            }
            Err(err) => return Err(GatewayError::internal(err)),
        }
        self.issue(user, &family, refresh_token, record.expires_at, now)
    }

    /// Exchanges a refresh token for a new pair (see the module doc).
    pub async fn rotate(
        &self,
        presented: &str,
        now: SystemTime,
    ) -> Result<IssuedSession, GatewayError> {
        let presented_hash = hash_token(presented);
        if self.policy.reuse_grace.is_zero() {
            // Strict mode: every presentation after the first is reuse.
            return self
                .rotate_once(presented, presented_hash, now)
                .await
                .map_err(Into::into);
        }
        let cell = {
            let mut rotations = self
                .rotations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let grace = self.policy.reuse_grace;
            rotations.retain(|_, r| r.started.elapsed() <= grace);
            Arc::clone(
                &rotations
                    .entry(presented_hash)
                    .or_insert_with(|| Rotation {
                        started: Instant::now(),
                        result: Arc::new(OnceCell::new()),
                    })
                    .result,
            )
        };
        let result = cell
            .get_or_init(|| self.rotate_once(presented, presented_hash, now))
            .await;
        if matches!(
            result,
            Err(RotationFailure::Unavailable | RotationFailure::Internal)
        ) {
            // A failure of ours decided nothing about the token: the next
            // presentation tries again instead of reading it from memory.
            let mut rotations = self
                .rotations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if rotations
                .get(&presented_hash)
                .is_some_and(|r| Arc::ptr_eq(&r.result, &cell))
            {
                rotations.remove(&presented_hash);
            }
        }
        result.clone().map_err(Into::into)
    }

    /// The one rotation of a token: compare-and-swap in the store, mint, flush.
    async fn rotate_once(
        &self,
        presented_token: &str,
        presented: [u8; 32],
        now: SystemTime,
    ) -> RotationResult {
        let now_secs = unix_seconds(now);
        let internal = |err: &(dyn std::error::Error + 'static)| {
            if matches!(
                err.downcast_ref::<StoreError>(),
                Some(StoreError::Unavailable(_))
            ) {
                tracing::warn!(error = %err, "refresh rotation failed: database unavailable");
                return RotationFailure::Unavailable;
            }
            tracing::error!(error = %err, "refresh rotation failed");
            RotationFailure::Internal
        };
        let record = match self.store.refresh_record(&presented).await {
            Ok(Some(record)) => record,
            Ok(None) => return Err(RotationFailure::Unknown),
            Err(err) => return Err(internal(&err)),
        };
        let new_token = random_token(32);
        let new_hash = hash_token(&new_token);
        let current_family = match self.store.family(&record.family_id).await {
            Ok(Some(family)) => family,
            Ok(None) => return Err(RotationFailure::Unknown),
            Err(err) => return Err(internal(&err)),
        };
        let family_end = current_family.expires_at;
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
                Err(err) => return Err(internal(&err)),
            };
            let issued = self
                .issue(
                    user,
                    &current_family,
                    new_token.clone(),
                    new_record.expires_at,
                    now,
                )
                .map_err(|err| internal(&err))?;
            let sealed = grace::seal(presented_token, &issued, new_record.expires_at)
                .map_err(|err| internal(&err))?;
            let until = now_secs.saturating_add(self.policy.reuse_grace.as_secs());
            let outcome = self
                .store
                .rotate_sealed(&presented, &new_hash, &new_record, now_secs, &sealed, until)
                .await
                .map_err(|err| internal(&err))?;
            minted = Some(issued);
            outcome
        } else {
            self.store
                .rotate(&presented, &new_hash, &new_record, now_secs)
                .await
                .map_err(|err| internal(&err))?
        };
        let family = match outcome {
            RotateOutcome::Rotated { family } => family,
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
                            Err(err) => return Err(internal(&err)),
                        }
                    }
                    // A retry within the grace whose pair is no longer in
                    // memory (a restart): refuse without punishing the session.
                    return Err(RotationFailure::Unknown);
                }
                tracing::warn!(family = %family_id, "refresh token reuse detected; revoking the session");
                self.revoke_family(&family_id, now_secs)
                    .await
                    .map_err(|err| internal(&err))?;
                return Err(RotationFailure::Reuse);
            }
            RotateOutcome::Unknown | RotateOutcome::FamilyRevoked { .. } => {
                return Err(RotationFailure::Unknown)
            }
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
                    Err(err) => return Err(internal(&err)),
                };
                self.issue(user, &family, new_token, new_record.expires_at, now)
                    .map_err(|err| internal(&err))?
            }
        };
        self.store.flush().await.map_err(|err| internal(&err))?;
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
        let internal = |err: &(dyn std::error::Error + 'static)| {
            if matches!(
                err.downcast_ref::<StoreError>(),
                Some(StoreError::Unavailable(_))
            ) {
                return RotationFailure::Unavailable;
            }
            tracing::error!(error = %err, "reading the sealed refresh pair failed");
            RotationFailure::Internal
        };
        let (access, refresh_token, refresh_expires_at) =
            grace::open(presented_token, sealed).map_err(|err| internal(&err))?;
        let user = match self.store.user_by_id(user_id).await {
            Ok(Some(user)) => user,
            Ok(None) => return Err(RotationFailure::Unknown),
            Err(err) => return Err(internal(&err)),
        };
        Ok(IssuedSession {
            csrf_token: csrf_token_for(&refresh_token),
            user,
            access,
            refresh_token,
            refresh_max_age: Duration::from_secs(
                refresh_expires_at.saturating_sub(unix_seconds(now)),
            ),
        })
    }

    /// Revokes one session: its refresh tokens in the store and its access
    /// tokens in memory. Flushes before returning.
    pub async fn revoke_family(&self, family_id: &str, now_secs: u64) -> Result<(), GatewayError> {
        self.store
            .revoke_family(family_id, now_secs)
            .await
            .map_err(GatewayError::internal)?;
        self.revocations.revoke_session(
            family_id,
            now_secs.saturating_add(self.policy.access_lifetime.as_secs()),
        );
        self.store.flush().await.map_err(GatewayError::internal)
    }

    /// The family a refresh token belongs to, if the token is known.
    pub async fn family_of(&self, presented: &str) -> Result<Option<String>, GatewayError> {
        Ok(self
            .store
            .refresh_record(&hash_token(presented))
            .await
            .map_err(GatewayError::internal)?
            .map(|record| record.family_id))
    }

    /// Revokes every session of a user except `keep`; the caller flushes.
    pub async fn revoke_user_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
        now_secs: u64,
    ) -> Result<(), GatewayError> {
        let revoked = self
            .store
            .revoke_user_families(user_id, keep, now_secs)
            .await
            .map_err(GatewayError::internal)?;
        let until = now_secs.saturating_add(self.policy.access_lifetime.as_secs());
        for family in revoked {
            self.revocations.revoke_session(&family, until);
        }
        Ok(())
    }

    /// Forgets rotations past their grace.
    pub fn prune(&self) {
        let grace = self.policy.reuse_grace;
        self.rotations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, r| r.started.elapsed() <= grace);
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
    ) -> Result<IssuedSession, GatewayError> {
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
            access,
            refresh_token,
            refresh_max_age,
        })
    }
}

/// The pair kept for the reuse grace across instances, as sealed bytes.
mod grace {
    use serde::{Deserialize, Serialize};

    use super::IssuedSession;
    use crate::auth::jwt::{AccessClaims, MintedToken};
    use crate::auth::sealed_pair;

    /// What a retry on another instance needs to answer with the same pair.
    #[derive(Serialize, Deserialize)]
    struct Body {
        access_token: String,
        access_expires_in: u64,
        claims: AccessClaims,
        refresh_token: String,
        refresh_expires_at: u64,
    }

    #[derive(Debug, thiserror::Error)]
    pub enum GraceError {
        #[error("cannot encode the pair: {0}")]
        Encode(#[from] serde_json::Error),
        #[error(transparent)]
        Seal(#[from] sealed_pair::SealError),
    }

    pub fn seal(
        presented: &str,
        issued: &IssuedSession,
        refresh_expires_at: u64,
    ) -> Result<Vec<u8>, GraceError> {
        let body = Body {
            access_token: issued.access.token.clone(),
            access_expires_in: issued.access.expires_in.as_secs(),
            claims: issued.access.claims.clone(),
            refresh_token: issued.refresh_token.clone(),
            refresh_expires_at,
        };
        Ok(sealed_pair::seal(presented, &serde_json::to_vec(&body)?)?)
    }

    pub fn open(presented: &str, sealed: &[u8]) -> Result<(MintedToken, String, u64), GraceError> {
        let body: Body = serde_json::from_slice(&sealed_pair::open(presented, sealed)?)?;
        let access = MintedToken {
            token: body.access_token,
            expires_in: std::time::Duration::from_secs(body.access_expires_in),
            claims: body.claims,
        };
        Ok((access, body.refresh_token, body.refresh_expires_at))
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

/// `bytes` random bytes, URL-safe base64.
pub fn random_token(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}
