//! The parsed forms of what names and protects an account: [`Email`],
//! [`Role`], [`UserId`] and [`NewPassword`]. Each is made once where the
//! input enters (request body, token, command line, config file) and passed
//! inward as the type, so every entry point applies the same rules.
//! Depends on nothing else in the crate.

pub(crate) mod email;
pub(crate) mod new_password;
pub(crate) mod role;
pub(crate) mod user_id;

pub use email::{Email, EmailError};
pub use new_password::{NewPassword, NewPasswordError};
pub use role::{Role, RoleError};
pub use user_id::{UserId, UserIdError};
