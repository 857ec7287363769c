//! The identity assertion a route can hand its backend
//! (`<identity_header_prefix>assertion`): a JWT signed with the active
//! asymmetric key, bound to the route by `aud`, living at most 60 seconds,
//! so a backend reachable around the gateway can verify with the JWKS alone
//! that a request came through it (like Pomerium's X-Pomerium-Jwt-Assertion).
//!
//! Signing costs a signature; one assertion is reused for the same user,
//! role, session and route until half its life has passed, never across
//! users: the cache key holds all four, compared in full.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use http::HeaderValue;
use jsonwebtoken::Header;
use serde::Serialize;

use super::{MintError, SigningKey};
use crate::auth::Identity;

/// Lifetime of an assertion: long enough for one request's trip to the
/// backend and some clock skew, short enough that a leaked one is useless.
pub(crate) const ASSERTION_TTL: u64 = 60;

/// The `typ` of an assertion: never `at+jwt`, so it is not an access token.
pub(crate) const ASSERTION_TYPE: &str = "JWT";

/// Assertions held at most; at about 1 KiB each (key and token), ~4 MiB.
const CAPACITY: usize = 4 * 1024;

/// Signing an assertion failed: a fault of ours, mapped to 500 in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("no asymmetric signing key for the identity assertion")]
    NoAsymmetricKey,
    #[error("signing the identity assertion: {0}")]
    Sign(#[from] MintError),
    #[error("the signed identity assertion is not a header value")]
    Header(#[from] http::header::InvalidHeaderValue),
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    role: &'a str,
    iat: u64,
    exp: u64,
}

/// Recently signed assertions, by user, role, session and route.
pub struct AssertionCache {
    entries: Mutex<HashMap<String, (HeaderValue, u64)>>,
}

impl Default for AssertionCache {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl AssertionCache {
    /// The assertion for `identity` on `route`, signed by `key` unless one
    /// signed less than half its life ago is at hand.
    pub fn assertion(
        &self,
        key: &SigningKey,
        issuer: &str,
        route: &str,
        identity: &Identity,
        now: u64,
    ) -> Result<HeaderValue, AssertionError> {
        // Ids, roles, session ids and route names hold no NUL: unambiguous.
        let cache_key = format!(
            "{}\0{}\0{}\0{}",
            identity.user_id,
            identity.role,
            identity.session.as_deref().unwrap_or("-"),
            route
        );
        {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((value, iat)) = entries.get(&cache_key) {
                if now >= *iat && now < iat.saturating_add(ASSERTION_TTL / 2) {
                    return Ok(value.clone());
                }
            }
        }
        let mut header = Header::new(key.algorithm);
        header.typ = Some(ASSERTION_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let claims = AssertionClaims {
            iss: issuer,
            aud: route,
            sub: identity.user_id.as_str(),
            role: identity.role.as_str(),
            iat: now,
            exp: now.saturating_add(ASSERTION_TTL),
        };
        let token = jsonwebtoken::encode(&header, &claims, &key.key).map_err(MintError)?;
        let value = HeaderValue::from_str(&token)?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, iat)| now < iat.saturating_add(ASSERTION_TTL / 2));
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(cache_key, (value.clone(), now));
        Ok(value)
    }
}
