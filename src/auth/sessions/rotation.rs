//! Rotating a refresh token: concurrent presentations of one token share a
//! single rotation, a retry within the grace receives the same pair, and a
//! token presented after its rotation revokes its session.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OnceCell;

use super::{
    csrf_token_for, hash_token, random_key, refresh_token, sealed, IssuedSession, SessionError,
    Sessions,
};
use crate::store::{hash_from_hex, ChainStep, RefreshRecord, RotateOutcome, StoreError};
use crate::timestamp::unix_seconds;

/// Why a rotation failed; cloneable so every waiter on one rotation gets it,
/// its cause included.
#[derive(Debug, Clone)]
pub(super) enum RotationFailure {
    Unknown,
    Expired,
    Reuse,
    Internal(super::RotationCause),
    /// The database is unreachable: 503, the client retries.
    Unavailable(super::RotationCause),
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

pub(super) type RotationResult = Result<IssuedSession, RotationFailure>;

/// A rotation in progress or recently done, shared by every presentation of
/// the same token within the grace period.
pub(super) type Rotation = Arc<OnceCell<RotationResult>>;

impl Sessions {
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
}

/// Classifies a rotation failure: the database being unreachable is retried
/// by the client (503), anything else is ours (500). Not logged here: the
/// cause travels with the error to the service, which logs each failed
/// request once, in its span.
pub(super) fn rotation_failure(
    err: impl std::error::Error + Send + Sync + 'static,
) -> RotationFailure {
    let cause: super::RotationCause = Arc::new(err);
    if matches!(
        cause.downcast_ref::<StoreError>(),
        Some(StoreError::Unavailable(_))
    ) {
        return RotationFailure::Unavailable(cause);
    }
    RotationFailure::Internal(cause)
}
