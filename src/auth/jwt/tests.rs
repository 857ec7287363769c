use std::time::Duration;

use super::*;
use crate::config::Config;

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
    let claims = verifier.verify(&minted.token, now).unwrap();
    assert_eq!(claims.sub, "u1");
    assert_eq!(claims.role, "admin");
    assert_eq!(claims.ver, 3);
    assert_eq!(claims.sid.as_deref(), Some("s1"));
    assert_eq!(claims.exp - claims.iat, 15 * 60);
}

#[test]
fn other_keys_and_expired_tokens_are_refused() {
    let config = tokens_config();
    let verifier = TokenVerifier::new(&config, &secret(1));
    let foreign = TokenIssuer::new(&config, &secret(2));
    let now = SystemTime::now();
    let token = foreign.mint("u1", "admin", 0, None, now).unwrap().token;
    assert!(matches!(
        verifier.verify(&token, now),
        Err(GatewayError::InvalidToken(_))
    ));
    let issuer = TokenIssuer::new(&config, &secret(1));
    let old = now - Duration::from_secs(3600);
    let token = issuer.mint("u1", "admin", 0, None, old).unwrap().token;
    assert!(matches!(
        verifier.verify(&token, now),
        Err(GatewayError::TokenExpired)
    ));
}

#[test]
fn iat_beyond_leeway_is_refused() {
    let config = tokens_config();
    let issuer = TokenIssuer::new(&config, &secret(1));
    let verifier = TokenVerifier::new(&config, &secret(1));
    let now = SystemTime::now();
    let future = now + Duration::from_secs(300);
    let token = issuer.mint("u1", "admin", 0, None, future).unwrap().token;
    assert!(matches!(
        verifier.verify(&token, now),
        Err(GatewayError::InvalidToken(_))
    ));
    let slight = now + Duration::from_secs(10);
    let token = issuer.mint("u1", "admin", 0, None, slight).unwrap().token;
    assert!(verifier.verify(&token, now).is_ok());
}
