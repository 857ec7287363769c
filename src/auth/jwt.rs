//! Access tokens: minting with the active key and pinned verification.
//!
//! The `kid` picks a configured key and the key fixes the algorithm (its
//! `Validation` is built in `keys/`). Everything that depends on the time
//! (`exp`, `nbf`, `iat`) is checked by hand against the `now` the caller
//! passes, with the configured leeway, on every request, because
//! jsonwebtoken would read the system clock and because signatures are
//! verified once per token ([`VerifiedCache`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Header;

use super::bearer::{Presented, MAX_TOKEN_BYTES};
use super::claims::{random_id, AccessClaims, TokenError};
use super::identity::VerifiedToken;
use super::keys::{KeyRing, KeySet, MintError};
use super::token_cache::VerifiedCache;
use super::token_memo::TokenMemo;
use super::AuthError;
use crate::config::secret::AccessSecret;
use crate::config::TokensConfig;
use crate::timestamp::unix_seconds;

/// The `typ` header of an access token (RFC 9068 §2.1). Nothing else is
/// accepted as one, so no other JWT we might sign can be replayed as access.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Mints access tokens with the active key, lifetime, issuer and audience.
pub struct TokenIssuer {
    keys: Arc<KeyRing>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// A freshly minted token and when it stops being valid.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub token: String,
    pub expires_in: Duration,
    pub claims: AccessClaims,
}

impl TokenIssuer {
    /// An issuer with one HMAC key (the `AUTHGATE_ACCESS_SECRET` shortcut).
    pub fn new(config: &TokensConfig, secret: &AccessSecret) -> Self {
        Self::with_keys(config, Arc::new(KeyRing::from_secret(config, secret)))
    }

    /// An issuer signing with whichever key `keys` has active at the time.
    pub fn with_keys(config: &TokensConfig, keys: Arc<KeyRing>) -> Self {
        Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.access_ttl,
        }
    }

    /// Signs a token for `sub` with `role`; `now` is a parameter so expiry is testable.
    pub fn mint(
        &self,
        sub: &str,
        role: &str,
        version: u32,
        session: Option<&str>,
        now: SystemTime,
    ) -> Result<MintedToken, MintError> {
        let iat = unix_seconds(now);
        let claims = AccessClaims {
            sub: sub.to_owned(),
            role: role.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat.saturating_add(self.ttl.as_secs()),
            nbf: None,
            jti: random_id(),
            ver: version,
            sid: session.map(str::to_owned),
        };
        let keys = self.keys.current();
        let signing = keys.signing();
        let mut header = Header::new(signing.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(signing.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signing.key).map_err(MintError)?;
        Ok(MintedToken {
            token,
            expires_in: self.ttl,
            claims,
        })
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }
}

/// Verifies access tokens with the key their `kid` names, in that key's
/// algorithm; each distinct token's signature is checked once.
pub struct TokenVerifier {
    keys: Arc<KeyRing>,
    leeway: u64,
}

impl TokenVerifier {
    /// A verifier with one HMAC key (the `AUTHGATE_ACCESS_SECRET` shortcut).
    pub fn new(config: &TokensConfig, secret: &AccessSecret) -> Self {
        Self::with_keys(config, Arc::new(KeyRing::from_secret(config, secret)))
    }

    pub fn with_keys(config: &TokensConfig, keys: Arc<KeyRing>) -> Self {
        Self {
            keys,
            leeway: config.leeway.as_secs(),
        }
    }

    /// Checks signature, claims and headers; the error says which, for the log.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Arc<VerifiedToken>, TokenError> {
        let now = unix_seconds(now);
        let verified = verify_signature_once(&self.keys.in_force(), token, now)?;
        self.judge_by_time(verified, now)
    }

    /// As [`TokenVerifier::verify`] for the token a request presents,
    /// asking the connection's memo before the shared cache and leaving
    /// the token in it. Presented bytes the memo holds are neither checked
    /// as a b64token nor verified again: they were both when remembered.
    pub fn verify_remembering(
        &self,
        presented: Presented<'_>,
        now: SystemTime,
        memo: &TokenMemo,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let keys = self.keys.in_force();
        let now = unix_seconds(now);
        let verified = match memo.recall(presented.as_bytes(), &keys) {
            Some(verified) => verified,
            None => {
                let token = presented.checked()?;
                let verified = verify_signature_once(&keys, token, now)?;
                memo.remember(token, &keys, &verified);
                verified
            }
        };
        Ok(self.judge_by_time(verified, now)?)
    }

    /// The same comparisons jsonwebtoken makes, against our clock, on every
    /// request, cached or not: expired once `exp` is more than the leeway in
    /// the past (RFC 7519 §4.1.4).
    fn judge_by_time(
        &self,
        verified: Arc<VerifiedToken>,
        now: u64,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        let claims = &verified.claims;
        if claims.exp.saturating_add(self.leeway) < now {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(verified)
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }
}

/// The signature check, done once per distinct token and key set (the
/// shared cache remembers it under the token's digest).
fn verify_signature_once(
    keys: &KeySet,
    token: &str,
    now: u64,
) -> Result<Arc<VerifiedToken>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Oversized);
    }
    let digest = VerifiedCache::digest(token);
    if let Some(verified) = keys.verified.get(&digest) {
        return Ok(verified);
    }
    let verified = Arc::new(VerifiedToken::new(verify_signature(keys, token)?));
    keys.verified.insert(digest, Arc::clone(&verified), now);
    Ok(verified)
}

/// The signature and the time-independent claims. The key is the one the
/// `kid` names among the configured keys; its algorithm must be the one the
/// header states, so no header can pick the algorithm (RS256 → HS256
/// confusion) and no header can point at a key elsewhere.
fn verify_signature(keys: &KeySet, token: &str) -> Result<AccessClaims, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return Err(TokenError::NotAccessToken);
    }
    // Keys are pinned by configuration; a token pointing at its own key or
    // demanding extensions we do not implement is refused outright.
    if header.jku.is_some()
        || header.jwk.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some()
        || header.x5t.is_some()
        || header.x5t_s256.is_some()
        || header.crit.is_some()
    {
        return Err(TokenError::KeySelectingHeader);
    }
    let key = match header.kid.as_deref() {
        Some(kid) => keys.verifying(kid).ok_or(TokenError::UnknownKey)?,
        None => keys.kidless().ok_or(TokenError::MissingKeyId)?,
    };
    if header.alg != key.algorithm {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    let data =
        jsonwebtoken::decode::<AccessClaims>(token, &key.key, &key.validation).map_err(|err| {
            match err.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    TokenError::AlgorithmNotAllowed
                }
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
                _ => TokenError::Malformed,
            }
        })?;
    Ok(data.claims)
}

#[cfg(test)]
mod tests;
