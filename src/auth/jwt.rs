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
use crate::error::GatewayError;

/// The `typ` header of an access token (RFC 9068 §2.1). Nothing else is
/// accepted as one, so no other JWT we might sign can be replayed as access.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

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
    ) -> Result<MintedToken, GatewayError> {
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
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(GatewayError::internal)?;
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
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<AccessClaims, GatewayError> {
        if token.len() > super::bearer::MAX_TOKEN_BYTES {
            return Err(GatewayError::InvalidToken("oversized token"));
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.key, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => GatewayError::InvalidToken("bad signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    GatewayError::InvalidToken("algorithm not allowed")
                }
                ErrorKind::InvalidIssuer => GatewayError::InvalidToken("wrong issuer"),
                ErrorKind::InvalidAudience => GatewayError::InvalidToken("wrong audience"),
                ErrorKind::MissingRequiredClaim(_) => {
                    GatewayError::InvalidToken("required claim missing")
                }
                _ => GatewayError::InvalidToken("malformed token"),
            })?;
        let header = &data.header;
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(GatewayError::InvalidToken("not an access token (typ)"));
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
            return Err(GatewayError::InvalidToken("key-selecting header present"));
        }
        let now = unix_seconds(now);
        let claims = data.claims;
        // The same comparisons jsonwebtoken makes, against our clock: expired
        // once `exp` is more than the leeway in the past (RFC 7519 §4.1.4).
        if claims.exp.saturating_add(self.leeway) < now {
            return Err(GatewayError::TokenExpired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(GatewayError::InvalidToken("not yet valid (nbf)"));
        }
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(GatewayError::InvalidToken("issued in the future (iat)"));
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
