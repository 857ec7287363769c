//! What an access token says ([`AccessClaims`]) and why one is refused
//! ([`TokenError`]): the vocabulary the verifier, the verified-token cache
//! and the error mapping share. Imports nothing of ours.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

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
    /// The `typ` header is not `at+jwt`, the access-token type (RFC 9068).
    #[error("not an access token (typ)")]
    NotAccessToken,
    /// `jku`, `jwk`, `x5u`, `x5c`, `x5t` or `crit`: keys are only ever the
    /// configured ones.
    #[error("key-selecting header present")]
    KeySelectingHeader,
    /// The `kid` names no key the gateway holds (or a retired one).
    #[error("unknown key id (kid)")]
    UnknownKey,
    /// No `kid`, and no shortcut key that accepts tokens without one.
    #[error("no key id (kid)")]
    MissingKeyId,
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

/// 128 random bits, URL-safe: a fresh token id (`jti`), or key id.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
