//! Who is calling: bearer extraction, pinned JWT verification and the
//! revocation check, combined into one [`Authenticator::authenticate`] call
//! that yields the caller's [`Identity`]. The submodules also hold what
//! issues credentials (`sessions`, `password`) for the account endpoints.

pub(crate) mod api_keys;
pub(crate) mod assertion;
pub mod bearer;
pub mod browser_session;
pub mod jwt;
pub mod keys;
pub(crate) mod password;
pub mod revocation;
pub(crate) mod sealed_pair;
pub(crate) mod session_watch;
pub mod sessions;
pub(crate) mod throttle;
pub(crate) mod token_cache;

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;

use crate::account::{Role, UserId};
use bearer::BearerError;
use jwt::{AccessClaims, TokenError, TokenVerifier};
use revocation::RevocationList;

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

/// The verified caller of a request. Its user id and role carry the header
/// values the proxy injects as they are. Built once per distinct token (the
/// verified-token cache keeps it) and cloned per request: every field is
/// shared, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub role: Role,
    /// The session this token belongs to, when it came from a login.
    pub session: Option<Arc<str>>,
    /// The user's token version the token carries (see [`RevocationList`]).
    pub version: u32,
    /// When the access token expires (unix seconds).
    pub expires_at: u64,
    /// The signed identity assertion for the route, when it asks for one.
    pub assertion: Option<http::HeaderValue>,
    /// The API key the request came with (`<prefix>key-id` upstream).
    pub key_id: Option<http::HeaderValue>,
}

impl TryFrom<&AccessClaims> for Identity {
    type Error = TokenError;

    /// A signed token whose `sub` or `role` cannot be written as a header is
    /// refused here: forwarded without its identity header, the request
    /// would look anonymous to a backend.
    fn try_from(claims: &AccessClaims) -> Result<Self, TokenError> {
        let user_id = UserId::parse(&claims.sub).map_err(|_| TokenError::UnsafeSubject)?;
        let role = Role::parse(&claims.role).map_err(|_| TokenError::UnsafeRole)?;
        Ok(Self {
            user_id,
            role,
            session: claims.sid.as_deref().map(Arc::from),
            version: claims.ver,
            expires_at: claims.exp,
            assertion: None,
            key_id: None,
        })
    }
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
        let token = bearer::token(headers)?;
        let verified = self.verifier.verify(token, now)?;
        // Fail closed: with other instances' revocations unknown, a valid
        // signature is not enough.
        if let Some(stale_for) = self.revocations.stale_for(now) {
            return Err(AuthError::Stale { stale_for });
        }
        let identity = verified.identity.as_ref().map_err(|err| *err)?;
        if !self.revocations.allows(
            identity.user_id.as_str(),
            identity.version,
            identity.session.as_deref(),
        ) {
            return Err(AuthError::Revoked);
        }
        Ok(identity.clone())
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
}
