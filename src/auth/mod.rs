//! Who is calling: bearer extraction, pinned JWT verification and the
//! revocation check, combined into one [`Authenticator::authenticate`] call
//! that yields the caller's [`Identity`].

pub mod bearer;
pub mod email;
pub mod jwt;
pub mod password;
pub mod revocation;
pub mod sealed_pair;
pub mod throttle;

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;

use crate::error::GatewayError;
use jwt::{AccessClaims, TokenVerifier};
use revocation::RevocationList;

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub role: String,
    /// The session this token belongs to, when it came from a login.
    pub session: Option<String>,
}

impl From<AccessClaims> for Identity {
    fn from(claims: AccessClaims) -> Self {
        Self {
            user_id: claims.sub,
            role: claims.role,
            session: claims.sid,
        }
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
    ) -> Result<Identity, GatewayError> {
        let token = bearer::token(headers)?;
        let claims = self.verifier.verify(token, now)?;
        // Fail closed: with other instances' revocations unknown, a valid
        // signature is not enough.
        if let Some(stale_for) = self.revocations.stale_for(now) {
            return Err(GatewayError::RevocationsStale { stale_for });
        }
        if !self
            .revocations
            .allows(&claims.sub, claims.ver, claims.sid.as_deref())
        {
            return Err(GatewayError::TokenRevoked);
        }
        Ok(Identity::from(claims))
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
}
