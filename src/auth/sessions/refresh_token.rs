//! The refresh token's wire form: `FAMILY.GENERATION.SECRET.TAG`. The
//! secret makes it unguessable (only its hash is stored); the tag proves the
//! gateway issued generation GENERATION of FAMILY, so a token dropped from
//! the store after rotation is still recognised as reuse by `sessions/mod.rs`.

use base64::Engine;
use subtle::ConstantTimeEq;

use super::random_token;

/// Bytes of the tag kept. Truncating SHA-256 also rules out length
/// extension: a tag never reveals the hash state it came from.
const TAG_BYTES: usize = 16;

/// A refresh token whose parts parse; its tag is not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaggedToken<'a> {
    pub family_id: &'a str,
    pub generation: u64,
    tag: &'a str,
}

/// A fresh token of `generation` for `family_id`, tagged with `key`.
pub(crate) fn mint(family_id: &str, generation: u64, key: &[u8; 32]) -> String {
    format!(
        "{family_id}.{generation}.{}.{}",
        random_token(32),
        encode_tag(key, family_id, generation)
    )
}

/// Splits a presented token. Tokens from login (random, untagged) and
/// anything malformed give `None`.
pub(crate) fn parse(token: &str) -> Option<TaggedToken<'_>> {
    let mut parts = token.split('.');
    let family_id = parts.next().filter(|p| !p.is_empty())?;
    let generation = parts.next()?.parse().ok()?;
    let _secret = parts.next().filter(|p| !p.is_empty())?;
    let tag = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some(TaggedToken {
        family_id,
        generation,
        tag,
    })
}

impl TaggedToken<'_> {
    /// True when the tag was made with `key` for this family and generation.
    pub(crate) fn verify(&self, key: &[u8; 32]) -> bool {
        let expected = encode_tag(key, self.family_id, self.generation);
        expected.as_bytes().ct_eq(self.tag.as_bytes()).into()
    }
}

/// A keyed hash over the family and generation. The key is secret and
/// first, of fixed length; the family id cannot contain the separator.
fn encode_tag(key: &[u8; 32], family_id: &str, generation: u64) -> String {
    let digest = crate::digest::sha256(&[
        b"authgate-refresh-tag\0",
        key,
        family_id.as_bytes(),
        &[0u8],
        &generation.to_be_bytes(),
    ]);
    let tag = digest.get(..TAG_BYTES).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_parses_and_verifies_only_with_its_key() {
        let token = mint("fam", 7, &[1; 32]);
        let parsed = parse(&token).unwrap();
        assert_eq!((parsed.family_id, parsed.generation), ("fam", 7));
        assert!(parsed.verify(&[1; 32]));
        assert!(!parsed.verify(&[2; 32]));
    }

    #[test]
    fn a_changed_generation_or_family_fails_the_tag() {
        let token = mint("fam", 7, &[1; 32]);
        let older = token.replacen(".7.", ".6.", 1);
        assert!(!parse(&older).unwrap().verify(&[1; 32]));
        let other = token.replacen("fam.", "fan.", 1);
        assert!(!parse(&other).unwrap().verify(&[1; 32]));
    }

    #[test]
    fn untagged_and_malformed_tokens_do_not_parse() {
        for token in [
            "",
            "random-login-token",
            "f.x.s.t",
            "f.1.s",
            "f.1..t",
            ".1.s.t",
            "f.1.s.t.u",
        ] {
            assert!(parse(token).is_none(), "{token:?}");
        }
    }
}
