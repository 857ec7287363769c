//! Who a verified token names: the [`Identity`] a request is forwarded
//! with, and the [`VerifiedToken`] (claims and identity together) that the
//! verified-token cache keeps, so both are built once per distinct token.

use std::sync::Arc;

use super::claims::{AccessClaims, TokenError};
use crate::account::{Role, UserId};

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
    /// The user's token version the token carries (see
    /// [`RevocationList`](super::revocation::RevocationList)).
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

/// A token whose signature checked out: its claims, and the identity they
/// name (or why they name none). Made once per distinct token and kept in
/// the [`VerifiedCache`](super::token_cache::VerifiedCache), so a request
/// neither copies the claims nor parses them.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub claims: AccessClaims,
    pub identity: Result<Identity, TokenError>,
}

impl VerifiedToken {
    pub(crate) fn new(claims: AccessClaims) -> Self {
        let identity = Identity::try_from(&claims);
        Self { claims, identity }
    }

    /// The same, sharing no reference-counted part with `self` (see
    /// [`TokenMemo::remember`](super::token_memo::TokenMemo::remember)).
    pub(crate) fn copy(&self) -> Self {
        Self::new(self.claims.clone())
    }
}
