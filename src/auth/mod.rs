//! Who is calling: bearer extraction, pinned JWT verification and the
//! revocation check, combined into one [`Authenticator::authenticate`] call
//! that yields the caller's [`Identity`]. The submodules also hold what
//! issues credentials (`sessions`, `password`) for the account endpoints.

pub(crate) mod api_keys;
pub mod bearer;
pub mod browser_session;
pub mod claims;
pub mod identity;
pub mod jwt;
pub mod keys;
pub(crate) mod password;
pub mod revocation;
pub(crate) mod sealed_pair;
pub(crate) mod session_watch;
pub mod sessions;
pub(crate) mod throttle;
pub(crate) mod token_cache;
pub mod token_memo;

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;

use bearer::{BearerError, Presented};
use claims::TokenError;
pub use identity::Identity;
use identity::VerifiedToken;
use jwt::TokenVerifier;
use revocation::RevocationList;
use token_memo::TokenMemo;

/// Why a request's caller could not be established (the responses are
/// chosen in `error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Bearer(#[from] BearerError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A valid token of a session, user version or user revoked since.
    #[error("access token revoked")]
    Revoked,
    /// The feed of other instances' revocations has been down longer than
    /// allowed: nothing can be vouched for (fail closed).
    #[error("revocation state {stale_for:?} old")]
    Stale { stale_for: std::time::Duration },
}

/// Verifies bearer tokens and consults the revocation list.
pub struct Authenticator {
    verifier: TokenVerifier,
    revocations: Arc<RevocationList>,
}

impl Authenticator {
    pub fn new(verifier: TokenVerifier, revocations: Arc<RevocationList>) -> Self {
        Self {
            verifier,
            revocations,
        }
    }

    /// The identity behind the request's bearer token, as of `now` (read
    /// once per request by the caller).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Identity, AuthError> {
        let verified = self.verifier.verify(bearer::token(headers)?, now)?;
        self.admit(&verified, now)
    }

    /// The identity behind the token a proxied request presents, as of
    /// `now`, asking its connection's `memo` first.
    pub fn authenticate_presented(
        &self,
        presented: Presented<'_>,
        now: SystemTime,
        memo: &TokenMemo,
    ) -> Result<Identity, AuthError> {
        let verified = self.verifier.verify_remembering(presented, now, memo)?;
        // Read before the list is: a revocation after this read moves it.
        let generation = self.revocations.generation();
        let identity = self.signed_identity(&verified, now)?;
        // Not revoked when the list was as it is now: no need to look again.
        if !memo.admitted_in(&verified, generation) {
            self.check_not_revoked(identity)?;
            memo.admit(&verified, generation);
        }
        Ok(identity.clone())
    }

    /// The identity a verified token names, while the revocation list can
    /// be trusted. Fails closed: with other instances' revocations
    /// unknown, a valid signature is not enough.
    fn signed_identity<'t>(
        &self,
        verified: &'t VerifiedToken,
        now: SystemTime,
    ) -> Result<&'t Identity, AuthError> {
        if let Some(stale_for) = self.revocations.stale_for(now) {
            return Err(AuthError::Stale { stale_for });
        }
        Ok(verified.identity.as_ref().map_err(|err| *err)?)
    }

    /// Refuses an identity whose user, credential version or session the
    /// revocation list has revoked.
    fn check_not_revoked(&self, identity: &Identity) -> Result<(), AuthError> {
        let allowed = self.revocations.allows(
            identity.user_id.as_str(),
            identity.version,
            identity.session.as_deref(),
        );
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Revoked)
        }
    }

    /// The identity of a verified token, unless it has been revoked.
    fn admit(&self, verified: &VerifiedToken, now: SystemTime) -> Result<Identity, AuthError> {
        let identity = self.signed_identity(verified, now)?;
        self.check_not_revoked(identity)?;
        Ok(identity.clone())
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
}
