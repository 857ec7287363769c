//! One key's material: generated with aws-lc-rs, kept on disk as PKCS#8 PEM
//! (asymmetric) or a base64 secret (HMAC), and read back into jsonwebtoken's
//! signing and verifying keys plus, for asymmetric keys, its public JWK.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::RngCore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};

pub use crate::config::algorithm::{algorithm_name, is_hmac, parse_algorithm, ALGORITHMS};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// HMAC keys need at least the hash's output length (RFC 7518 §3.2).
pub const MIN_HMAC_BYTES: usize = 32;

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("key generation failed in aws-lc-rs")]
    Generate,
    #[error("not a PKCS#8 PEM private key")]
    Pem,
    #[error("the PKCS#8 key is not a valid {0} key")]
    Rejected(&'static str),
    #[error("an HMAC key must be at least {MIN_HMAC_BYTES} bytes, this one is {0}")]
    ShortSecret(usize),
    #[error("algorithm {0} is not supported for keys")]
    Unsupported(&'static str),
}

/// A key ready for use: what signs, what verifies, and what is published.
pub struct Material {
    pub algorithm: Algorithm,
    pub signing: EncodingKey,
    pub verifying: DecodingKey,
    /// The public half as JWK members (RFC 7517 §4, RFC 7518 §6, RFC 8037
    /// §2), without `kid`; `None` for HMAC keys, which are never published.
    pub public_jwk: Option<Value>,
}

/// A new key's file contents: PKCS#8 PEM, or for HMAC 64 random bytes in base64.
pub fn generate(algorithm: Algorithm) -> Result<Vec<u8>, MaterialError> {
    let rng = SystemRandom::new();
    let der: Vec<u8> = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let mut raw = [0u8; 64];
            rand::rng().fill_bytes(&mut raw);
            let mut text = base64::engine::general_purpose::STANDARD
                .encode(raw)
                .into_bytes();
            text.push(b'\n');
            return Ok(text);
        }
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| MaterialError::Generate)?
            .as_ref()
            .to_vec(),
        Algorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| MaterialError::Generate)?
            .as_ref()
            .to_vec(),
        Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
                .map_err(|_| MaterialError::Generate)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                pair.as_der().map_err(|_| MaterialError::Generate)?;
            der.as_ref().to_vec()
        }
        other => return Err(MaterialError::Unsupported(algorithm_name(other))),
    };
    Ok(pem_encode("PRIVATE KEY", &der).into_bytes())
}

/// Reads a key file written by [`generate`] (or by an operator: PKCS#8 PEM
/// from `openssl genpkey`, or any secret of at least 32 bytes).
pub fn load(algorithm: Algorithm, content: &[u8]) -> Result<Material, MaterialError> {
    if is_hmac(algorithm) {
        let secret = trim_line_end(content);
        if secret.len() < MIN_HMAC_BYTES {
            return Err(MaterialError::ShortSecret(secret.len()));
        }
        return Ok(Material {
            algorithm,
            signing: EncodingKey::from_secret(secret),
            verifying: DecodingKey::from_secret(secret),
            public_jwk: None,
        });
    }
    let der = PrivatePkcs8KeyDer::from_pem_slice(content).map_err(|_| MaterialError::Pem)?;
    let der = der.secret_pkcs8_der();
    let (signing, verifying, jwk) = match algorithm {
        Algorithm::EdDSA => {
            let pair =
                Ed25519KeyPair::from_pkcs8(der).map_err(|_| MaterialError::Rejected("Ed25519"))?;
            let x = B64URL.encode(pair.public_key().as_ref());
            let verifying = DecodingKey::from_ed_components(&x)
                .map_err(|_| MaterialError::Rejected("Ed25519"))?;
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
            (EncodingKey::from_ed_der(der), verifying, jwk)
        }
        Algorithm::ES256 => {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .map_err(|_| MaterialError::Rejected("P-256"))?;
            // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = pair.public_key().as_ref();
            let (x, y) = match (point.first(), point.get(1..33), point.get(33..65)) {
                (Some(4), Some(x), Some(y)) => (B64URL.encode(x), B64URL.encode(y)),
                _ => return Err(MaterialError::Rejected("P-256")),
            };
            let verifying = DecodingKey::from_ec_components(&x, &y)
                .map_err(|_| MaterialError::Rejected("P-256"))?;
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y});
            (EncodingKey::from_ec_der(der), verifying, jwk)
        }
        Algorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(der)
                .map_err(|_| MaterialError::Rejected("RSA"))?;
            let public = pair.public_key();
            let n = public.modulus().big_endian_without_leading_zero().to_vec();
            let e = public.exponent().big_endian_without_leading_zero().to_vec();
            // jsonwebtoken signs with the PKCS#1 key inside the PKCS#8 wrapper.
            let signing =
                EncodingKey::from_rsa_pem(content).map_err(|_| MaterialError::Rejected("RSA"))?;
            let jwk = json!({"kty": "RSA", "n": B64URL.encode(&n), "e": B64URL.encode(&e)});
            (signing, DecodingKey::from_rsa_raw_components(&n, &e), jwk)
        }
        other => return Err(MaterialError::Unsupported(algorithm_name(other))),
    };
    Ok(Material {
        algorithm,
        signing,
        verifying,
        public_jwk: Some(jwk),
    })
}

/// Files written by editors and `echo` end in a newline that is not part of the secret.
pub fn trim_line_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = bytes {
        bytes = rest;
    }
    bytes
}

/// RFC 7468 textual encoding: base64 in lines of 64 characters.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
