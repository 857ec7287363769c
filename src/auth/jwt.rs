//! Access tokens: minting and pinned verification.
//!
//! jsonwebtoken checks only what it is told to, so the [`Validation`] here is
//! built field by field: one algorithm, `exp`/`iss`/`aud`/`sub` required,
//! `iss`/`aud` matched. Everything that depends on the time (`exp`, `nbf`,
//! `iat`) is checked by hand against the `now` the caller passes, with the
//! configured leeway, because jsonwebtoken would read the system clock; the
//! `typ` header and key-selecting headers are checked after the signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::secret::AccessSecret;
use crate::config::TokensConfig;

/// The `typ` header of an access token (RFC 9068 §2.1). Nothing else is
/// accepted as one, so no other JWT we might sign can be replayed as access.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Why an access token was refused; the text is for the log, the response
/// is chosen in `error.rs` (TOKEN_EXPIRED for [`TokenError::Expired`],
/// INVALID_TOKEN for every other reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("oversized token")]
    Oversized,
    #[error("bad signature")]
    BadSignature,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("required claim missing")]
    MissingClaim,
    #[error("malformed token")]
    Malformed,
    /// The `typ` header is not [`ACCESS_TOKEN_TYPE`].
    #[error("not an access token (typ)")]
    NotAccessToken,
    /// `kid`, `jku`, `jwk`, `x5u`, `x5c` or `crit`: the key is pinned.
    #[error("key-selecting header present")]
    KeySelectingHeader,
    /// `exp` more than the leeway in the past.
    #[error("access token expired")]
    Expired,
    /// `nbf` more than the leeway in the future.
    #[error("not yet valid (nbf)")]
    NotYetValid,
    /// `iat` more than the leeway in the future.
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    /// `sub` cannot be written as the user-id header (control characters,
    /// surrounding whitespace, empty).
    #[error("sub is not a header-safe user id")]
    UnsafeSubject,
    /// `role` is outside the role alphabet.
    #[error("role is not a valid role")]
    UnsafeRole,
}

/// Signing a token failed (a key the backend refuses): a fault of ours.
/// Transparent, so a log line showing only this error's text still says why.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct MintError(pub(crate) jsonwebtoken::errors::Error);

/// What an access token asserts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub sub: String,
    pub role: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub jti: String,
    /// The user's token version when this was minted; raising the version in
    /// the store revokes every older token at once.
    #[serde(default)]
    pub ver: u32,
    /// The session (refresh family) this token belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Mints access tokens with the configured key, lifetime, issuer and audience.
pub struct TokenIssuer {
    key: EncodingKey,
    header: Header,
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
    pub fn new(config: &TokensConfig, secret: &AccessSecret) -> Self {
        let mut header = Header::new(config.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        Self {
            key: EncodingKey::from_secret(secret.bytes()),
            header,
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
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(MintError)?;
        Ok(MintedToken {
            token,
            expires_in: self.ttl,
            claims,
        })
    }
}

/// Verifies access tokens against the pinned algorithm and key.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    leeway: u64,
}

impl TokenVerifier {
    pub fn new(config: &TokensConfig, secret: &AccessSecret) -> Self {
        let mut validation = Validation::new(config.algorithm);
        validation.algorithms = vec![config.algorithm];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        // Checked in `verify` against the caller's `now`; `exp` stays required.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.leeway = config.leeway.as_secs();
        Self {
            key: DecodingKey::from_secret(secret.bytes()),
            validation,
            leeway: config.leeway.as_secs(),
        }
    }

    /// Checks signature, claims and headers; the error says which, for the log.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<AccessClaims, TokenError> {
        if token.len() > super::bearer::MAX_TOKEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.key, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    TokenError::AlgorithmNotAllowed
                }
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
                _ => TokenError::Malformed,
            })?;
        let header = &data.header;
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenError::NotAccessToken);
        }
        // The key is pinned by configuration; a token naming its own key or
        // demanding extensions we do not implement is refused outright.
        if header.kid.is_some()
            || header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.crit.is_some()
        {
            return Err(TokenError::KeySelectingHeader);
        }
        let now = unix_seconds(now);
        let claims = data.claims;
        // The same comparisons jsonwebtoken makes, against our clock: expired
        // once `exp` is more than the leeway in the past (RFC 7519 §4.1.4).
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
        Ok(claims)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.validation
            .algorithms
            .first()
            .copied()
            .unwrap_or(Algorithm::HS256)
    }
}

pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 128 random bits, URL-safe: token ids, user ids' sibling values.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests;
