use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};

use super::dir::{KeyDir, KeyDirError, KeyState};
use super::material::{self, parse_algorithm};
use super::*;
use crate::auth::claims::TokenError;
use crate::auth::identity::VerifiedToken;
use crate::auth::jwt::{TokenIssuer, TokenVerifier, ACCESS_TOKEN_TYPE};
use crate::timestamp::unix_seconds;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn config(dir: &Path, algorithm: &str) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"c\"\ntls_key = \"k\"\n\
         [tokens]\nalgorithm = \"{algorithm}\"\nkeys_dir = {:?}\n",
        dir.join("keys")
    );
    Config::parse(Path::new("t.toml"), &text).unwrap()
}

/// A key directory with one active key of `algorithm`; returns the kid.
fn with_active_key(config: &Config, algorithm: &str) -> String {
    let dir = KeyDir::new(&config.tokens.keys_dir);
    let kid = dir
        .generate(parse_algorithm(algorithm).unwrap(), 1_000)
        .unwrap();
    dir.activate(&kid, 1_000).unwrap();
    kid
}

fn ring(config: &Config) -> Arc<KeyRing> {
    Arc::new(KeyRing::load(config).unwrap())
}

fn claims(now: SystemTime) -> Value {
    let now = unix_seconds(now);
    json!({"sub": "u1", "role": "admin", "iss": "authgate", "aud": "authgate",
           "iat": now, "exp": now + 600, "jti": "j"})
}

/// The reason a token was refused, as the log shows it.
fn invalid(result: Result<Arc<VerifiedToken>, TokenError>) -> String {
    match result {
        Err(err) if err != TokenError::Expired => err.to_string(),
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

#[test]
fn a_token_of_each_algorithm_verifies_with_its_kid() {
    for algorithm in material::ALGORITHMS {
        let temp = tempfile::tempdir().unwrap();
        let config = config(temp.path(), algorithm);
        let kid = with_active_key(&config, algorithm);
        let keys = ring(&config);
        let issuer = TokenIssuer::with_keys(&config.tokens, Arc::clone(&keys));
        let verifier = TokenVerifier::with_keys(&config.tokens, keys);
        let now = SystemTime::now();
        let token = issuer.mint("u1", "admin", 0, None, now).unwrap().token;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()), "{algorithm}");
        assert_eq!(Some(header.alg), parse_algorithm(algorithm));
        assert_eq!(
            verifier.verify(&token, now).unwrap().claims.sub,
            "u1",
            "{algorithm}"
        );
    }
}

#[test]
fn key_files_are_private_and_hmac_keys_never_published() {
    let temp = tempfile::tempdir().unwrap();
    let config = config(temp.path(), "HS256");
    let hmac = with_active_key(&config, "HS256");
    let dir = KeyDir::new(&config.tokens.keys_dir);
    let ed = dir.generate(Algorithm::EdDSA, 1_000).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&config.tokens.keys_dir), 0o700);
        for record in dir.read().unwrap().keys {
            assert_eq!(mode(&dir.key_file(&record)), 0o600);
        }
    }
    let jwks: Value = serde_json::from_slice(ring(&config).current().jwks()).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert_eq!(keys[0]["kid"], json!(ed));
    assert_eq!(keys[0]["kty"], json!("OKP"));
    assert_eq!(keys[0]["crv"], json!("Ed25519"));
    assert!(keys[0].get("d").is_none(), "no private part");
    assert!(!jwks.to_string().contains(&hmac));
}

#[test]
fn rotation_keeps_old_tokens_until_retired_and_retire_waits_for_them() {
    let temp = tempfile::tempdir().unwrap();
    let config = config(temp.path(), "EdDSA");
    let old = with_active_key(&config, "EdDSA");
    let keys = ring(&config);
    let issuer = TokenIssuer::with_keys(&config.tokens, Arc::clone(&keys));
    let verifier = TokenVerifier::with_keys(&config.tokens, Arc::clone(&keys));
    let now = SystemTime::now();
    let old_token = issuer.mint("u1", "admin", 0, None, now).unwrap().token;

    let dir = KeyDir::new(&config.tokens.keys_dir);
    let new = dir.generate(Algorithm::ES256, 2_000).unwrap();
    keys.reload_keys().unwrap();
    // Published: verifies, does not sign yet.
    let token = issuer.mint("u1", "admin", 0, None, now).unwrap().token;
    assert_eq!(jwsonkid(&token), old);
    dir.activate(&new, 2_000).unwrap();
    keys.reload_keys().unwrap();
    let new_token = issuer.mint("u1", "admin", 0, None, now).unwrap().token;
    assert_eq!(jwsonkid(&new_token), new);
    assert!(verifier.verify(&old_token, now).is_ok());
    assert!(verifier.verify(&new_token, now).is_ok());

    // Tokens the old key signed live until 2000 + their lifetime.
    let life = Duration::from_secs(900);
    assert!(matches!(
        dir.retire(&old, 2_500, life, false),
        Err(KeyDirError::StillSigning { .. })
    ));
    assert!(matches!(
        dir.retire(&new, 2_500, life, true),
        Err(KeyDirError::WrongState { .. })
    ));
    dir.retire(&old, 2_901, life, false).unwrap();
    keys.reload_keys().unwrap();
    assert_eq!(
        invalid(verifier.verify(&old_token, now)),
        "unknown key id (kid)"
    );
    assert!(verifier.verify(&new_token, now).is_ok());
    let states: Vec<KeyState> = dir.read().unwrap().keys.iter().map(|r| r.state).collect();
    assert_eq!(states, [KeyState::Retired, KeyState::Active]);
}

fn jwsonkid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[test]
fn a_failed_reload_keeps_the_keys_in_force() {
    let temp = tempfile::tempdir().unwrap();
    let config = config(temp.path(), "EdDSA");
    let kid = with_active_key(&config, "EdDSA");
    let keys = ring(&config);
    std::fs::write(config.tokens.keys_dir.join("keys.json"), "{not json").unwrap();
    assert!(keys.reload_keys().is_err());
    assert_eq!(keys.current().signing().kid, kid);
}

#[test]
fn outside_dev_mode_a_missing_key_names_the_command_that_creates_one() {
    let temp = tempfile::tempdir().unwrap();
    let config = config(temp.path(), "EdDSA");
    let err = KeyRing::load(&config).err().unwrap().to_string();
    assert!(
        err.contains("authgate keys generate --algorithm EdDSA --activate"),
        "{err}"
    );
}

#[test]
fn dev_mode_generates_and_activates_a_key_once() {
    let temp = tempfile::tempdir().unwrap();
    let mut config = config(temp.path(), "EdDSA");
    config.server.dev = true;
    let first = ring(&config).current().signing().kid.clone();
    let again = ring(&config).current().signing().kid.clone();
    assert_eq!(first, again);
    assert_eq!(
        ring(&config).current().signing().algorithm,
        Algorithm::EdDSA
    );
}

/// All the ways a header could pick the key or the algorithm.
#[test]
fn the_key_decides_the_algorithm_and_no_header_points_elsewhere() {
    let temp = tempfile::tempdir().unwrap();
    let config = config(temp.path(), "RS256");
    let rsa = with_active_key(&config, "RS256");
    let dir = KeyDir::new(&config.tokens.keys_dir);
    let es = dir.generate(Algorithm::ES256, 1_000).unwrap();
    let keys = ring(&config);
    let verifier = TokenVerifier::with_keys(&config.tokens, Arc::clone(&keys));
    let now = SystemTime::now();
    let claims = claims(now);
    let header = |alg: Algorithm, kid: &str| {
        let mut h = Header::new(alg);
        h.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        h.kid = Some(kid.to_owned());
        h
    };

    // RS256 → HS256 with the public key as the HMAC secret, in each spelling
    // an attacker might try: PEM, DER, and the JWK's modulus.
    let record = dir
        .read()
        .unwrap()
        .keys
        .into_iter()
        .find(|r| r.kid == rsa)
        .unwrap();
    let pem = std::fs::read(dir.key_file(&record)).unwrap();
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem).unwrap();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let spki: aws_lc_rs::encoding::PublicKeyX509Der<'static> = pair.public_key().as_der().unwrap();
    let public_pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(spki.as_ref())
    );
    let jwks: Value = serde_json::from_slice(keys.current().jwks()).unwrap();
    let n = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(rsa))
        .unwrap()["n"]
        .as_str()
        .unwrap()
        .to_owned();
    for secret in [public_pem.as_bytes(), spki.as_ref(), n.as_bytes()] {
        let forged = jsonwebtoken::encode(
            &header(Algorithm::HS256, &rsa),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert_eq!(
            invalid(verifier.verify(&forged, now)),
            "algorithm not allowed"
        );
    }

    // ES256 with r = s = 0 (CVE-2022-21449, "psychic signatures").
    let head = B64.encode(json!({"alg": "ES256", "typ": "at+jwt", "kid": es}).to_string());
    let body = B64.encode(claims.to_string());
    let psychic = format!("{head}.{body}.{}", B64.encode([0u8; 64]));
    assert_eq!(invalid(verifier.verify(&psychic, now)), "bad signature");

    // Keys from elsewhere: jku, x5u, an embedded jwk.
    let attacker = material::generate(Algorithm::EdDSA).unwrap();
    let attacker = material::load(Algorithm::EdDSA, &attacker).unwrap();
    for extra in [
        json!({"jku": "https://attacker.example/jwks.json"}),
        json!({"x5u": "https://attacker.example/cert.pem"}),
        json!({"jwk": attacker.public_jwk.clone().unwrap()}),
    ] {
        let mut h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "attacker"});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        let signing_input = format!(
            "{}.{}",
            B64.encode(h.to_string()),
            B64.encode(claims.to_string())
        );
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &attacker.signing,
            Algorithm::EdDSA,
        )
        .unwrap();
        let forged = format!("{signing_input}.{signature}");
        assert_eq!(
            invalid(verifier.verify(&forged, now)),
            "key-selecting header present",
            "{h}"
        );
    }

    // A kid is looked up among the loaded keys only: never a path.
    let secret_bytes = b"0123456789abcdef0123456789abcdef";
    for kid in ["../keys.json", "../../../../etc/passwd", "unknown", ""] {
        let forged = jsonwebtoken::encode(
            &header(Algorithm::HS256, kid),
            &claims,
            &EncodingKey::from_secret(secret_bytes),
        )
        .unwrap();
        assert_eq!(
            invalid(verifier.verify(&forged, now)),
            "unknown key id (kid)",
            "{kid:?}"
        );
    }
    // No kid at all: only the HMAC shortcut accepts that (tokens from before kids).
    let forged =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &attacker_rsa()).unwrap();
    assert!(verifier.verify(&forged, now).is_err());
}

fn attacker_rsa() -> EncodingKey {
    let pem = material::generate(Algorithm::RS256).unwrap();
    EncodingKey::from_rsa_pem(&pem).unwrap()
}

#[test]
fn the_cache_never_accepts_a_token_past_its_expiry() {
    let temp = tempfile::tempdir().unwrap();
    let config = config(temp.path(), "EdDSA");
    with_active_key(&config, "EdDSA");
    let keys = ring(&config);
    let issuer = TokenIssuer::with_keys(&config.tokens, Arc::clone(&keys));
    let verifier = TokenVerifier::with_keys(&config.tokens, Arc::clone(&keys));
    let now = SystemTime::now();
    let minted = issuer.mint("u1", "admin", 0, None, now).unwrap();
    assert!(verifier.verify(&minted.token, now).is_ok());
    assert_eq!(
        keys.current().verified.len(),
        1,
        "verified once, then cached"
    );
    assert!(verifier.verify(&minted.token, now).is_ok());
    let after = now + config.tokens.access_ttl + config.tokens.leeway + Duration::from_secs(1);
    assert!(matches!(
        verifier.verify(&minted.token, after),
        Err(TokenError::Expired)
    ));
    // A failed signature is never cached.
    let mut tampered = minted.token.clone();
    tampered.push('A');
    assert!(verifier.verify(&tampered, now).is_err());
    assert_eq!(keys.current().verified.len(), 1);
}
