use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::config::Config;
use jsonwebtoken::EncodingKey;

fn tokens_config() -> TokensConfig {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
    Config::parse(std::path::Path::new("t.toml"), text)
        .unwrap()
        .tokens
}

fn secret(byte: u8) -> AccessSecret {
    AccessSecret::from_bytes(vec![byte; 32]).unwrap()
}

#[test]
fn minted_tokens_verify_and_carry_claims() {
    let config = tokens_config();
    let issuer = TokenIssuer::new(&config, &secret(1));
    let verifier = TokenVerifier::new(&config, &secret(1));
    let now = SystemTime::now();
    let minted = issuer.mint("u1", "admin", 3, Some("s1"), now).unwrap();
    let verified = verifier.verify(&minted.token, now).unwrap();
    let claims = &verified.claims;
    assert_eq!(claims.sub, "u1");
    assert_eq!(claims.role, "admin");
    assert_eq!(claims.ver, 3);
    assert_eq!(claims.sid.as_deref(), Some("s1"));
    assert_eq!(claims.exp - claims.iat, 15 * 60);
    // The identity is built with the claims, once.
    let identity = verified.identity.as_ref().unwrap();
    assert_eq!(identity.user_id.as_str(), "u1");
    assert_eq!(identity.role.as_str(), "admin");
    assert_eq!(identity.session.as_deref(), Some("s1"));
    assert_eq!(identity.version, 3);
    assert_eq!(identity.expires_at, claims.exp);
}

#[test]
fn other_keys_and_expired_tokens_are_refused() {
    let config = tokens_config();
    let verifier = TokenVerifier::new(&config, &secret(1));
    let foreign = TokenIssuer::new(&config, &secret(2));
    let now = SystemTime::now();
    let token = foreign.mint("u1", "admin", 0, None, now).unwrap().token;
    assert_eq!(verifier.verify(&token, now), Err(TokenError::BadSignature));
    let issuer = TokenIssuer::new(&config, &secret(1));
    let old = now - Duration::from_secs(3600);
    let token = issuer.mint("u1", "admin", 0, None, old).unwrap().token;
    assert_eq!(verifier.verify(&token, now), Err(TokenError::Expired));
}

#[test]
fn iat_beyond_leeway_is_refused() {
    let config = tokens_config();
    let issuer = TokenIssuer::new(&config, &secret(1));
    let verifier = TokenVerifier::new(&config, &secret(1));
    let now = SystemTime::now();
    let future = now + Duration::from_secs(300);
    let token = issuer.mint("u1", "admin", 0, None, future).unwrap().token;
    assert_eq!(
        verifier.verify(&token, now),
        Err(TokenError::IssuedInFuture)
    );
    let slight = now + Duration::from_secs(10);
    let token = issuer.mint("u1", "admin", 0, None, slight).unwrap().token;
    assert!(verifier.verify(&token, now).is_ok());
}

#[test]
fn expiry_is_judged_against_the_given_time_not_the_clock() {
    let config = tokens_config();
    let issuer = TokenIssuer::new(&config, &secret(1));
    let verifier = TokenVerifier::new(&config, &secret(1));
    // A day in the past: expired by the system clock, valid at the time given.
    let then = SystemTime::now() - Duration::from_secs(86_400);
    let minted = issuer.mint("u1", "admin", 0, None, then).unwrap();
    let leeway = config.leeway;
    let last_valid = then + config.access_ttl + leeway;
    assert!(verifier.verify(&minted.token, then).is_ok());
    assert!(verifier.verify(&minted.token, last_valid).is_ok());
    assert_eq!(
        verifier.verify(&minted.token, last_valid + Duration::from_secs(1)),
        Err(TokenError::Expired)
    );
}

#[test]
fn not_before_is_judged_against_the_given_time() {
    let config = tokens_config();
    let verifier = TokenVerifier::new(&config, &secret(1));
    let issuer = TokenIssuer::new(&config, &secret(1));
    let now = SystemTime::now();
    let mut claims = issuer.mint("u1", "admin", 0, None, now).unwrap().claims;
    let nbf = unix_seconds(now) + 600;
    claims.nbf = Some(nbf);
    claims.exp = nbf + 600;
    let mut header = Header::new(config.algorithm);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&[1u8; 32])).unwrap();
    assert_eq!(verifier.verify(&token, now), Err(TokenError::NotYetValid));
    let at_nbf = UNIX_EPOCH + Duration::from_secs(nbf);
    assert!(verifier.verify(&token, at_nbf).is_ok());
}

/// The `Authorization` header of a request presenting `token`.
fn bearer(token: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let value = http::HeaderValue::from_bytes(format!("Bearer {token}").as_bytes()).unwrap();
    headers.insert(http::header::AUTHORIZATION, value);
    headers
}

/// A verifier, an empty memo, the time and a token the verifier accepts then.
fn remembering() -> (TokenVerifier, TokenMemo, SystemTime, String) {
    let config = tokens_config();
    let now = SystemTime::now();
    let token = TokenIssuer::new(&config, &secret(1))
        .mint("u1", "admin", 0, None, now)
        .unwrap()
        .token;
    let verifier = TokenVerifier::new(&config, &secret(1));
    (verifier, TokenMemo::default(), now, token)
}

#[test]
fn a_remembered_token_is_still_judged_by_time_and_only_under_its_own_keys() {
    let (verifier, memo, now, token) = remembering();
    let headers = bearer(&token);
    let presented = || crate::auth::bearer::presented(&headers).unwrap();
    let first = verifier
        .verify_remembering(presented(), now, &memo)
        .unwrap();
    let again = verifier
        .verify_remembering(presented(), now, &memo)
        .unwrap();
    let third = verifier
        .verify_remembering(presented(), now, &memo)
        .unwrap();
    assert_eq!(first, again);
    assert!(
        Arc::ptr_eq(&again, &third),
        "later requests recall what the first left in the memo"
    );
    // Remembered, yet expired an hour later.
    let later = now + Duration::from_secs(3600);
    assert_eq!(
        verifier.verify_remembering(presented(), later, &memo),
        Err(AuthError::Token(TokenError::Expired))
    );
    // Other keys (as after a reload that retired the signing key): the memo
    // vouches for nothing verified under the old ones.
    let rotated = TokenVerifier::new(&tokens_config(), &secret(2));
    assert_eq!(
        rotated.verify_remembering(presented(), now, &memo),
        Err(AuthError::Token(TokenError::BadSignature))
    );
    // A token one byte different is checked afresh.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let forged = bearer(&forged);
    let forged = crate::auth::bearer::presented(&forged).unwrap();
    assert!(verifier.verify_remembering(forged, now, &memo).is_err());
    assert!(verifier.verify_remembering(presented(), now, &memo).is_ok());
}

#[test]
fn only_the_remembered_bytes_skip_the_character_check() {
    let (verifier, memo, now, token) = remembering();
    let headers = bearer(&token);
    let presented = crate::auth::bearer::presented(&headers).unwrap();
    assert!(verifier.verify_remembering(presented, now, &memo).is_ok());
    // The remembered token with a byte outside the b64token set after it:
    // not the memo's bytes, so checked, and refused as malformed.
    let headers = bearer(&format!("{token}%"));
    let presented = crate::auth::bearer::presented(&headers).unwrap();
    assert_eq!(
        verifier.verify_remembering(presented, now, &memo),
        Err(AuthError::Bearer(
            crate::auth::bearer::BearerError::Malformed
        ))
    );
}
