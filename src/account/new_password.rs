//! The password policy for a password being set: one rule for
//! `/auth/register`, `/auth/password` and `authgate user add`.

use std::fmt;

/// Fewer characters are refused (NIST SP 800-63B §5.1.1.2). Counted in
/// Unicode code points, as that section asks, not in bytes: `ééééééé` is 7.
pub(crate) const MIN_PASSWORD_CHARS: usize = 8;
/// Passwords are refused past this many bytes before any hashing, so a
/// megabyte password cannot buy a megabyte of argon2 work. Applies to every
/// presented password, not only new ones.
pub(crate) const MAX_PASSWORD_BYTES: usize = 256;

/// Why a new password was refused. The messages are safe to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NewPasswordError {
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    TooLong,
}

/// A password that meets the policy, on its way to be hashed. Its `Debug`
/// never shows it.
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(password: String) -> Result<Self, NewPasswordError> {
        // Bytes first: counting characters of a huge input is work too.
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(NewPasswordError::TooLong);
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(NewPasswordError::TooShort);
        }
        Ok(Self(password))
    }

    /// The password itself, for the hasher.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(password: &str) -> Result<String, NewPasswordError> {
        NewPassword::parse(password.to_owned()).map(NewPassword::into_string)
    }

    #[test]
    fn the_minimum_counts_characters_not_bytes() {
        // 7 characters in 14 bytes: too short, however many bytes.
        assert_eq!(parse(&"é".repeat(7)), Err(NewPasswordError::TooShort));
        assert_eq!(parse("seven77"), Err(NewPasswordError::TooShort));
        assert!(parse(&"é".repeat(8)).is_ok());
        assert!(parse("eight888").is_ok());
    }

    #[test]
    fn the_maximum_counts_bytes() {
        // 64 four-byte characters are exactly 256 bytes.
        assert!(parse(&"😀".repeat(64)).is_ok());
        assert_eq!(
            parse(&format!("{}a", "😀".repeat(64))),
            Err(NewPasswordError::TooLong)
        );
        assert!(parse(&"a".repeat(256)).is_ok());
        assert_eq!(parse(&"a".repeat(257)), Err(NewPasswordError::TooLong));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let password = NewPassword::parse("correct horse".to_owned()).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}
