//! SHA-256, from aws-lc-rs: the crypto provider the gateway already uses
//! for TLS and token signatures, whose assembly uses the CPU's SHA
//! extensions where it has them. Every hash the gateway keeps (refresh
//! tokens, API keys, throttle keys, the verified-token cache's keys) is
//! made here.

use aws_lc_rs::digest::{Context, SHA256};

/// The SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    // SHA-256 always gives 32 bytes; the zip keeps the copy free of a length check.
    for (byte, digest_byte) in out.iter_mut().zip(context.finish().as_ref()) {
        *byte = *digest_byte;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sha256;

    #[test]
    fn matches_the_published_test_vectors() {
        // FIPS 180-2, appendix B.1 ("abc") and the empty message.
        let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(sha256(&[b"abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(sha256(&[b"a", b"", b"bc"])), hex(sha256(&[b"abc"])));
        assert_eq!(
            hex(sha256(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
