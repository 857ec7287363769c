//! A role: what a route's `roles` list, `[auth] default_role`, a stored user
//! and an access token name, and what the gateway tells the upstream in the
//! role header.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

/// Why a role was refused. The message is safe to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a role is 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.' or ':'")]
pub struct RoleError;

const MAX_ROLE_BYTES: usize = 64;

/// A role name of a plain alphabet, so it travels unchanged in a token and a
/// header; carries its header value, made once when it was parsed. Cloned
/// on every proxied request, so both are shared, never copied.
#[derive(Clone, PartialEq, Eq)]
pub struct Role {
    name: Arc<str>,
    header: HeaderValue,
}

impl Role {
    pub fn parse(name: &str) -> Result<Self, RoleError> {
        let plain = !name.is_empty()
            && name.len() <= MAX_ROLE_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !plain {
            return Err(RoleError);
        }
        // Cannot fail for this alphabet; refusing is still the safe answer.
        let header = HeaderValue::from_str(name).map_err(|_| RoleError)?;
        Ok(Self {
            name: Arc::from(name),
            header,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The role as the role header's value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Role").field(&self.name).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_plain_alphabet() {
        for good in ["admin", "viewer", "team:ops", "a.b-c_d", &"r".repeat(64)] {
            let role = Role::parse(good).unwrap();
            assert_eq!(role.as_str(), good);
            assert_eq!(role.header_value(), good);
        }
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            &"r".repeat(65),
            "team admin",
            "admin\n",
            "admin\u{7f}",
            "rôle",
            "a/b",
            "a,b",
        ] {
            assert_eq!(Role::parse(bad), Err(RoleError), "{bad:?}");
        }
    }
}
