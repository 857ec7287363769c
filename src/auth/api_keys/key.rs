//! The text of an API key: `agk_` and the unpadded base64url of 32 random
//! bytes from aws-lc-rs, recognisable in a leaked-secret scan and never
//! mistaken for a JWT (which has two dots). Only its SHA-256 is stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// What every key starts with.
pub(crate) const PREFIX: &str = "agk_";
const SECRET_BYTES: usize = 32;
/// base64url of 32 bytes, unpadded.
const ENCODED_LEN: usize = 43;

/// A freshly made key: shown once, then only its hash is kept.
pub(crate) struct NewKey {
    pub text: String,
    pub hash: [u8; 32],
}

/// The system's random source failed (aws-lc-rs reports no more).
#[derive(Debug, thiserror::Error)]
#[error("no random bytes for a new API key")]
pub(crate) struct KeyGenError;

/// Makes a new key from 256 random bits.
pub(crate) fn generate() -> Result<NewKey, KeyGenError> {
    let mut secret = [0u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| KeyGenError)?;
    let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&text);
    Ok(NewKey { text, hash })
}

/// True for a bearer credential meant as an API key (by its prefix), so it
/// is judged as one and never handed to the JWT verifier.
pub(crate) fn is_api_key(token: &[u8]) -> bool {
    token.starts_with(PREFIX.as_bytes())
}

/// True when `text` has the exact shape [`generate`] makes.
pub(crate) fn well_formed(text: &str) -> bool {
    text.strip_prefix(PREFIX).is_some_and(|secret| {
        secret.len() == ENCODED_LEN
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// SHA-256 of the whole key text. A fast hash is right here, unlike for
/// passwords: the key carries 256 random bits, so no guess list or
/// brute force gets anywhere near it, and a slow hash (argon2) would only
/// cost every request. A leaked table of hashes yields no usable key.
pub(crate) fn hash(text: &str) -> [u8; 32] {
    crate::digest::sha256(&[text.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_distinct_and_hashed() {
        let one = generate().unwrap();
        let two = generate().unwrap();
        assert!(one.text.starts_with("agk_"));
        assert_eq!(one.text.len(), 4 + 43);
        assert!(well_formed(&one.text) && is_api_key(one.text.as_bytes()));
        assert_ne!(one.text, two.text);
        assert_eq!(one.hash, hash(&one.text));
        assert_ne!(one.hash, two.hash);
    }

    #[test]
    fn other_shapes_are_not_well_formed() {
        let good = generate().unwrap().text;
        for bad in [
            "agk_".to_owned(),
            format!("{good}x"),
            good[..good.len() - 1].to_owned(),
            good.replacen("agk_", "agx_", 1),
            format!("agk_{}", "+".repeat(43)),
            "eyJhbGciOi.x.y".to_owned(),
        ] {
            assert!(!well_formed(&bad), "{bad}");
        }
    }
}
