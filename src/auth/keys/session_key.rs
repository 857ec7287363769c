//! The key a browser-session cookie is sealed under, one per signing key
//! and derived with it (so a key reload brings its cookie key along): AES-256-GCM (aws-lc-rs)
//! with a key derived by HKDF-SHA256 from one signing key's own secret
//! material, so every instance holding the same keys opens every cookie and
//! no state beyond the keys is shared.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use rand::RngCore;

/// Domain separation: a key derived for cookies is used for nothing else.
const SALT: &[u8] = b"authgate browser session v1";
const INFO: &[u8] = b"aes-256-gcm";

/// The cookie key of one signing key (one kid).
pub struct SessionKey(LessSafeKey);

impl SessionKey {
    /// Derives the key from a signing key's secret bytes (the HMAC secret,
    /// or the private key file). `None` only if HKDF refuses the length,
    /// which it never does for AES-256.
    pub fn derive(material: &[u8]) -> Option<Self> {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(material);
        let okm = prk.expand(&[INFO], &AES_256_GCM).ok()?;
        Some(Self(LessSafeKey::new(UnboundKey::from(okm))))
    }

    /// nonce ‖ ciphertext ‖ tag, bound to `aad` (the kid).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random 96-bit nonces: far below the 2^32 seals per key where
        // collisions start to matter, since a key lives with its kid.
        rand::rng().fill_bytes(&mut nonce);
        let mut body = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .ok()?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + body.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        Some(sealed)
    }

    /// The plaintext, or `None` for anything forged, truncated or sealed
    /// under another key or kid.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_first_chunk::<NONCE_LEN>()?;
        let mut body = body.to_vec();
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_material_and_kid_open_a_cookie() {
        let key = SessionKey::derive(b"secret-material").unwrap();
        let sealed = key.seal(b"kid1", b"{\"sid\":1}").unwrap();
        assert_eq!(key.open(b"kid1", &sealed).unwrap(), b"{\"sid\":1}");
        assert!(key.open(b"kid2", &sealed).is_none());
        let other = SessionKey::derive(b"other-material").unwrap();
        assert!(other.open(b"kid1", &sealed).is_none());
        for at in [0, NONCE_LEN, sealed.len() - 1] {
            let mut forged = sealed.clone();
            forged[at] ^= 1;
            assert!(key.open(b"kid1", &forged).is_none());
        }
        assert!(key.open(b"kid1", &sealed[..NONCE_LEN]).is_none());
        assert!(!sealed.windows(5).any(|w| w == b"\"sid\""));
    }
}
