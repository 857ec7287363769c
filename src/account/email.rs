//! The canonical form of an email address, shared by the account endpoints
//! and the `user` commands so both find the same account for the same input;
//! the login throttle keys on it too.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Why an email address was refused. The messages are safe to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is empty")]
    Empty,
    #[error("email is longer than 254 bytes")]
    TooLong,
    #[error("email must contain exactly one '@' with text on both sides")]
    Shape,
    #[error("email contains whitespace, control or invisible formatting characters")]
    ForbiddenCharacter,
}

/// RFC 5321 §4.5.3.1.3 limits a path to 256 octets including the angle
/// brackets, which leaves 254 for the address.
const MAX_EMAIL_BYTES: usize = 254;
/// RFC 5321 §4.5.3.1.1.
const MAX_LOCAL_BYTES: usize = 64;
/// Input refused before normalising: NFKC can shrink text (fullwidth letters
/// are 3 bytes, their ASCII forms 1), but never by more than this factor, so
/// longer input cannot be 254 bytes afterwards and is not worth the work.
const MAX_INPUT_BYTES: usize = 4 * MAX_EMAIL_BYTES;

/// An email address in canonical form: the only spelling that is stored,
/// looked up or throttled on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// See [`canonical_email`].
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        canonical_email(input).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Trims surrounding whitespace, applies Unicode NFKC (UAX #15) and
/// lower-cases, then requires exactly one `@` with a non-empty local part
/// (at most 64 bytes) and domain, at most 254 bytes in all.
///
/// NFKC makes compatibility and decomposed spellings one address: fullwidth
/// `ａｌｉｃｅ＠example.com`, or `e` + U+0301 against precomposed `é`.
/// Lower-casing can leave a string that is no longer NFKC, so it is
/// normalised once more. Characters that could make two addresses look alike
/// while differing invisibly are refused, before and after normalising:
/// whitespace, controls, and format characters (category Cf: zero-width
/// spaces and joiners, bidi controls, soft hyphens, tag characters) with the
/// other default-ignorable code points. Visible look-alikes in other scripts
/// (Cyrillic `а` for Latin `a`) remain distinct addresses.
fn canonical_email(input: &str) -> Result<String, EmailError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Empty);
    }
    if trimmed.len() > MAX_INPUT_BYTES {
        return Err(EmailError::TooLong);
    }
    if trimmed.chars().any(is_forbidden) {
        return Err(EmailError::ForbiddenCharacter);
    }
    let folded: String = trimmed.nfkc().collect::<String>().to_lowercase();
    let email: String = folded.nfkc().collect();
    // NFKC can turn a visible character into whitespace (U+3000 into a
    // space) or into nothing but spaces, so both checks run again.
    let email = email.trim();
    if email.is_empty() {
        return Err(EmailError::Empty);
    }
    if email.chars().any(is_forbidden) {
        return Err(EmailError::ForbiddenCharacter);
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(EmailError::TooLong);
    }
    // After NFKC, so a fullwidth `＠` counts as the second `@` it will be.
    let (local, domain) = email.split_once('@').ok_or(EmailError::Shape)?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(EmailError::Shape);
    }
    if local.len() > MAX_LOCAL_BYTES {
        return Err(EmailError::TooLong);
    }
    Ok(email.to_owned())
}

fn is_forbidden(c: char) -> bool {
    c.is_whitespace() || c.is_control() || is_invisible(c)
}

/// Unicode category Cf (format) as of Unicode 15, and the other
/// default-ignorable code points a user cannot see in an address.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                      // soft hyphen
            | '\u{034F}'                // combining grapheme joiner
            | '\u{0600}'..='\u{0605}'   // Arabic number signs
            | '\u{061C}'                // Arabic letter mark
            | '\u{06DD}'                // Arabic end of ayah
            | '\u{070F}'                // Syriac abbreviation mark
            | '\u{0890}'..='\u{0891}'   // Arabic pound and piastre marks above
            | '\u{08E2}'                // Arabic disputed end of ayah
            | '\u{115F}'..='\u{1160}'   // Hangul fillers
            | '\u{17B4}'..='\u{17B5}'   // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}'   // Mongolian variation selectors, vowel separator
            | '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}'   // word joiner, invisible operators, bidi isolates
            | '\u{3164}'                // Hangul filler
            | '\u{FE00}'..='\u{FE0F}'   // variation selectors
            | '\u{FEFF}'                // byte-order mark / zero-width no-break space
            | '\u{FFA0}'                // halfwidth Hangul filler
            | '\u{FFF0}'..='\u{FFFB}'   // interlinear annotation controls
            | '\u{110BD}'               // Kaithi number sign
            | '\u{110CD}'               // Kaithi number sign above
            | '\u{13430}'..='\u{1343F}' // Egyptian hieroglyph format controls
            | '\u{1BCA0}'..='\u{1BCA3}' // shorthand format controls
            | '\u{1D173}'..='\u{1D17A}' // musical symbol format controls
            | '\u{E0000}'..='\u{E0FFF}' // tags and variation selectors supplement
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lower_cases() {
        assert_eq!(
            canonical_email("  Alice@Example.COM\n").unwrap(),
            "alice@example.com"
        );
        assert_eq!(canonical_email("ÉLODIE@x.fr").unwrap(), "élodie@x.fr");
    }

    #[test]
    fn compatibility_and_decomposed_spellings_are_one_address() {
        let plain = canonical_email("alice@example.com").unwrap();
        for spelling in [
            "ａｌｉｃｅ@example.com",            // fullwidth letters
            "ＡＬＩＣＥ＠ＥＸＡＭＰＬＥ.ＣＯＭ", // fullwidth capitals and at sign
            "alice﹫example.com",                // small commercial at
            "𝐚𝐥𝐢𝐜𝐞@example.com",                 // mathematical bold
            "\u{3000}alice@example.com\u{3000}", // ideographic spaces around
        ] {
            assert_eq!(canonical_email(spelling).unwrap(), plain, "{spelling:?}");
        }
        let precomposed = canonical_email("\u{E9}lodie@x.fr").unwrap();
        assert_eq!(canonical_email("e\u{301}lodie@x.fr").unwrap(), precomposed);
        assert_eq!(canonical_email("E\u{301}LODIE@x.fr").unwrap(), precomposed);
        assert_eq!(precomposed, "\u{E9}lodie@x.fr");
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for input in [
            "ＡＬＩＣＥ＠x.io",
            "E\u{301}@x.fr",
            "\u{130}stanbul@x.tr",
            "ß@x.de",
        ] {
            let once = canonical_email(input).unwrap();
            assert_eq!(canonical_email(&once).unwrap(), once, "{input:?}");
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        for bad in ["", "   ", "alice", "@x.io", "alice@", "a@b@c", "a b@x.io"] {
            assert!(canonical_email(bad).is_err(), "{bad:?}");
        }
        assert_eq!(canonical_email("a@b@c"), Err(EmailError::Shape));
        // The fullwidth at sign becomes a second '@'.
        assert_eq!(canonical_email("a＠b@c"), Err(EmailError::Shape));
        assert_eq!(canonical_email("＠x.io"), Err(EmailError::Shape));
        assert_eq!(canonical_email(" "), Err(EmailError::Empty));
        assert_eq!(canonical_email("\u{3000}"), Err(EmailError::Empty));
    }

    #[test]
    fn refuses_invisible_characters() {
        for bad in [
            "al\u{200B}ice@x.io",
            "al\u{200C}ice@x.io",
            "alice@x\u{200D}.io",
            "alice\u{200E}@x.io",
            "alice\u{200F}@x.io",
            "ali\u{2060}ce@x.io",
            "\u{FEFF}alice@x.io",
            "alice@x.io\u{202E}",
            "ali\u{2066}ce@x.io",
            "ali\u{00AD}ce@x.io",
            "ali\u{0600}ce@x.io",
            "ali\u{180E}ce@x.io",
            "ali\u{FE0F}ce@x.io",
            "ali\u{3164}ce@x.io",
            "ali\u{FFA0}ce@x.io",
            "alice\u{0000}@x.io",
            "alice\u{007F}@x.io",
            "alice\u{0085}@x.io",
            "alice@x.\u{E0041}io",
            "ali\u{3000}ce@x.io", // ideographic space: NFKC makes it a space
        ] {
            assert_eq!(
                canonical_email(bad),
                Err(EmailError::ForbiddenCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn enforces_length_limits() {
        let long_local = format!("{}@x.io", "a".repeat(65));
        assert_eq!(canonical_email(&long_local), Err(EmailError::TooLong));
        let long = format!("a@{}.io", "b".repeat(260));
        assert_eq!(canonical_email(&long), Err(EmailError::TooLong));
        assert!(canonical_email(&format!("{}@x.io", "a".repeat(64))).is_ok());
        // Limits apply to the canonical form: 64 fullwidth letters are 192
        // bytes as typed but 64 once normalised.
        assert!(canonical_email(&format!("{}@x.io", "ａ".repeat(64))).is_ok());
        let huge = format!("a@{}", "ｂ".repeat(400));
        assert_eq!(canonical_email(&huge), Err(EmailError::TooLong));
    }
}
