//! The canonical form of an email address, shared by the account endpoints
//! and the `user` commands so both find the same account for the same input.

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

/// Trims surrounding whitespace and lower-cases (Unicode lower case), then
/// requires exactly one `@` with a non-empty local part (at most 64 bytes)
/// and domain, at most 254 bytes in all.
///
/// No Unicode normalisation is applied (it would need a new crate): instead
/// every character that could make two addresses look alike while differing
/// invisibly is refused: whitespace, control characters, and format
/// characters such as zero-width spaces and joiners, bidi controls, soft
/// hyphens and tag characters. Visible look-alikes in other scripts, and
/// precomposed versus decomposed accents, remain distinct addresses.
pub fn canonical_email(input: &str) -> Result<String, EmailError> {
    let email = input.trim().to_lowercase();
    if email.is_empty() {
        return Err(EmailError::Empty);
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(EmailError::TooLong);
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_format(c))
    {
        return Err(EmailError::ForbiddenCharacter);
    }
    let (local, domain) = email.split_once('@').ok_or(EmailError::Shape)?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(EmailError::Shape);
    }
    if local.len() > MAX_LOCAL_BYTES {
        return Err(EmailError::TooLong);
    }
    Ok(email)
}

/// Invisible characters of Unicode category Cf (format) and the other
/// default-ignorable code points a user cannot see in an address.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                      // soft hyphen
            | '\u{034F}'                // combining grapheme joiner
            | '\u{061C}'                // Arabic letter mark
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
    fn refuses_bad_shapes() {
        for bad in ["", "   ", "alice", "@x.io", "alice@", "a@b@c", "a b@x.io"] {
            assert!(canonical_email(bad).is_err(), "{bad:?}");
        }
        assert_eq!(canonical_email("a@b@c"), Err(EmailError::Shape));
        assert_eq!(canonical_email(" "), Err(EmailError::Empty));
    }

    #[test]
    fn refuses_invisible_characters() {
        for bad in [
            "al\u{200B}ice@x.io",
            "alice@x\u{200D}.io",
            "\u{FEFF}alice@x.io",
            "alice@x.io\u{202E}",
            "ali\u{00AD}ce@x.io",
            "alice\u{0000}@x.io",
            "alice@x.\u{E0041}io",
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
    }
}
