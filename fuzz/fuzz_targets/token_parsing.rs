//! Fuzzes bearer extraction and access-token verification
//! (`authgate::auth::bearer::token`, `TokenVerifier::verify`).
//!
//! The first byte picks a mode:
//! - even: the rest is one or more `Authorization` values, one per line. No
//!   input can carry a valid HMAC for the harness's secret, so nothing may be
//!   accepted, and no refusal may come from a check of the claims, which
//!   lie behind the signature (the header's `typ` and key-selecting fields
//!   are refused before it, by design: the header picks the key, and the
//!   client gets the same `INVALID_TOKEN` either way); the bearer parser's
//!   own guarantees are checked on the way.
//! - odd: the rest is `HEADER_JSON\nCLAIMS_JSON`; the harness signs them with
//!   the verifier's own secret (HS256, or HS384/HS512 per bits 1-2) so the
//!   fuzzer reaches the claim and header checks behind the signature. Anything
//!   accepted must satisfy the pinned policy in `auth/jwt.rs`.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use authgate::auth::bearer::{self, BearerError, MAX_TOKEN_BYTES};
use authgate::auth::claims::TokenError;
use authgate::auth::jwt::{TokenVerifier, ACCESS_TOKEN_TYPE};
use authgate::config::secret::AccessSecret;
use authgate::config::TokensConfig;
use authgate::timestamp::unix_seconds;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret-0123456789";
const ISSUER: &str = "authgate";
const AUDIENCE: &str = "authgate";
const LEEWAY: u64 = 30;

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let config = TokensConfig {
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            algorithm: Algorithm::HS256,
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(86_400),
            session_max_age: Duration::from_secs(86_400),
            refresh_reuse_grace: Duration::from_secs(5),
            leeway: Duration::from_secs(LEEWAY),
            secret_file: None,
            keys_dir: std::path::PathBuf::from("keys"),
        };
        let secret = match AccessSecret::from_bytes(SECRET.to_vec()) {
            Ok(secret) => secret,
            Err(err) => panic!("harness secret refused: {err}"),
        };
        TokenVerifier::new(&config, &secret)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        unsigned(rest);
    } else {
        signed(mode, rest);
    }
});

fn unsigned(rest: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(AUTHORIZATION, value);
        }
    }
    let token = match bearer::token(&headers) {
        Ok(token) => token,
        Err(err) => {
            // "Missing" exactly when no header was sent: RFC 6750 §3.1 gives
            // that case a challenge without an error code.
            assert_eq!(
                err == BearerError::Missing,
                !headers.contains_key(AUTHORIZATION),
                "{err:?}"
            );
            return;
        }
    };
    assert_eq!(
        headers.get_all(AUTHORIZATION).iter().count(),
        1,
        "a token was read from several Authorization headers"
    );
    assert!(
        !token.is_empty() && token.len() <= MAX_TOKEN_BYTES,
        "token of {} bytes",
        token.len()
    );
    assert!(
        token.bytes().all(|b| b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')),
        "not a b64token: {token:?}"
    );
    match verifier().verify(token, SystemTime::now()) {
        Ok(claims) => panic!("forged token accepted: {token:?} -> {claims:?}"),
        Err(err) => assert!(
            !matches!(
                err,
                TokenError::Expired
                    | TokenError::NotYetValid
                    | TokenError::IssuedInFuture
                    | TokenError::WrongIssuer
                    | TokenError::WrongAudience
                    | TokenError::MissingClaim
            ),
            "judged {err:?} before the signature: {token:?}"
        ),
    }
}

fn signed(mode: u8, rest: &[u8]) {
    let algorithm = match (mode >> 1) & 3 {
        1 => Algorithm::HS384,
        2 => Algorithm::HS512,
        _ => Algorithm::HS256,
    };
    let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (rest.get(..i), rest.get(i + 1..)),
        None => return,
    };
    let (Some(header), Some(claims)) = (header, claims) else {
        return;
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET);
    let Ok(signature) = jsonwebtoken::crypto::sign(message.as_bytes(), &key, algorithm) else {
        return;
    };
    let token = format!("{message}.{signature}");
    let now = SystemTime::now();
    let Ok(verified) = verifier().verify(&token, now) else {
        return;
    };
    let what = || {
        format!(
            "header {:?} claims {:?}",
            String::from_utf8_lossy(header),
            String::from_utf8_lossy(claims)
        )
    };
    assert_eq!(
        algorithm,
        Algorithm::HS256,
        "other algorithm accepted: {}",
        what()
    );
    let parsed = match jsonwebtoken::decode_header(&token) {
        Ok(parsed) => parsed,
        Err(err) => panic!("accepted but header unreadable ({err}): {}", what()),
    };
    assert_eq!(parsed.alg, Algorithm::HS256, "alg: {}", what());
    assert_eq!(
        parsed.typ.as_deref(),
        Some(ACCESS_TOKEN_TYPE),
        "typ: {}",
        what()
    );
    assert!(
        parsed.kid.is_none()
            && parsed.jku.is_none()
            && parsed.jwk.is_none()
            && parsed.x5u.is_none()
            && parsed.x5c.is_none()
            && parsed.crit.is_none(),
        "key-selecting header accepted: {}",
        what()
    );
    let accepted = &verified.claims;
    let now = unix_seconds(now);
    assert_eq!(accepted.iss, ISSUER, "iss: {}", what());
    assert_eq!(accepted.aud, AUDIENCE, "aud: {}", what());
    assert!(
        accepted.exp.saturating_add(LEEWAY) >= now,
        "expired: {}",
        what()
    );
    assert!(
        accepted
            .nbf
            .is_none_or(|nbf| nbf <= now.saturating_add(LEEWAY)),
        "not yet valid: {}",
        what()
    );
    assert!(
        accepted.iat <= now.saturating_add(LEEWAY),
        "iat: {}",
        what()
    );
}
