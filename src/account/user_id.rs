//! A user id: the `sub` of an access token and the value of the user-id
//! header the upstream reads, so it must be writable as a header value.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

/// Why a user id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("a user id must not be empty")]
    Empty,
    #[error("a user id must hold no control characters and no surrounding whitespace")]
    NotAHeaderValue,
}

/// A non-empty id that is a valid header field value as it stands (RFC 9110
/// §5.5: no control characters; spaces or tabs inside but not at either end,
/// where a recipient strips them and would read another id); carries that
/// header value, made once when it was parsed. Cloned on every proxied
/// request, so both are shared, never copied.
#[derive(Clone, PartialEq, Eq)]
pub struct UserId {
    id: Arc<str>,
    header: HeaderValue,
}

impl UserId {
    pub fn parse(id: &str) -> Result<Self, UserIdError> {
        if id.is_empty() {
            return Err(UserIdError::Empty);
        }
        if id.starts_with([' ', '\t']) || id.ends_with([' ', '\t']) {
            return Err(UserIdError::NotAHeaderValue);
        }
        // `from_str` refuses controls (CR, LF, NUL, DEL); like the RFC's
        // obs-text, bytes past ASCII pass and reach the upstream as they are.
        let header = HeaderValue::from_str(id).map_err(|_| UserIdError::NotAHeaderValue)?;
        Ok(Self {
            id: Arc::from(id),
            header,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The id, shared rather than copied (for a log line written later).
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.id)
    }

    /// The id as the user-id header's value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserId").field(&self.id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_header_safe_ids() {
        for good in [
            "0b6a2f3e-9c1d-4f4e-8a2b-7f0e1d2c3b4a",
            "u1",
            "service:ci",
            "a b",
            "alice@example.com",
            "józef",
        ] {
            let id = UserId::parse(good).unwrap();
            assert_eq!(id.as_str(), good);
            assert_eq!(id.header_value(), good);
        }
    }

    #[test]
    fn refuses_what_a_header_cannot_carry() {
        assert_eq!(UserId::parse(""), Err(UserIdError::Empty));
        for bad in [
            "u1\n",
            "u1\r\nx-user-role: admin",
            "u\u{0}1",
            "u1\u{7f}",
            " u1",
            "u1\t",
        ] {
            assert_eq!(
                UserId::parse(bad),
                Err(UserIdError::NotAHeaderValue),
                "{bad:?}"
            );
        }
    }
}
