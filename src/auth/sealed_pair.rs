//! Sealing a freshly minted token pair under a key only the holder of the
//! presented refresh token can derive (HKDF-SHA256 then AES-256-GCM, from
//! aws-lc-rs), so a shared store can keep the pair for the reuse grace and
//! hand it to a retry on another instance without ever being able to read
//! it, or give it to anyone who lacks the old token.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use rand::RngCore;

/// Domain separation: this key is for nothing else.
const SALT: &[u8] = b"authgate refresh grace pair v1";
const INFO: &[u8] = b"aes-256-gcm";

/// Why a sealed pair could not be opened (never detailed to a client).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SealError {
    #[error("the sealed pair is malformed or was sealed under another token")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Encrypts `plaintext` under the key derived from `presented` (the raw
/// refresh token). Output: nonce ‖ ciphertext ‖ tag.
pub(crate) fn seal(presented: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let key = key_for(presented)?;
    let mut nonce = [0u8; NONCE_LEN];
    // A random nonce under a key used for one pair only.
    rand::rng().fill_bytes(&mut nonce);
    let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    sealed.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
        .map_err(|_| SealError::Seal)?;
    sealed.extend_from_slice(&body);
    Ok(sealed)
}

/// Decrypts what [`seal`] produced under the same `presented` token.
pub(crate) fn open(presented: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let (nonce, body) = sealed
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(SealError::Open)?;
    let key = key_for(presented).map_err(|_| SealError::Open)?;
    let mut body = body.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::empty(),
            &mut body,
        )
        .map_err(|_| SealError::Open)?;
    Ok(plain.to_vec())
}

fn key_for(presented: &str) -> Result<LessSafeKey, SealError> {
    let prk = Salt::new(HKDF_SHA256, SALT).extract(presented.as_bytes());
    let okm = prk
        .expand(&[INFO], &AES_256_GCM)
        .map_err(|_| SealError::Seal)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_presented_token_opens_its_pair() {
        let sealed = seal("old-refresh-token", b"{\"pair\":1}").unwrap();
        assert_eq!(open("old-refresh-token", &sealed).unwrap(), b"{\"pair\":1}");
        assert_eq!(open("another-token", &sealed), Err(SealError::Open));
        // Tampering anywhere is detected.
        for at in [0, NONCE_LEN, sealed.len() - 1] {
            let mut forged = sealed.clone();
            forged[at] ^= 1;
            assert_eq!(open("old-refresh-token", &forged), Err(SealError::Open));
        }
        assert_eq!(
            open("old-refresh-token", &sealed[..5]),
            Err(SealError::Open)
        );
        // The plaintext is not visible in the sealed bytes.
        assert!(!sealed.windows(6).any(|w| w == b"\"pair\""));
    }
}
