//! `authgate token`: prints a signed access token for a subject and role,
//! for tests and service accounts.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::account::{Role, UserId};
use crate::auth::jwt::TokenIssuer;
use crate::auth::keys::KeyRing;
use crate::config::Config;
use crate::service::error_chain;

/// Mints and prints an access token for `sub` with `role`, signed with
/// the configured key.
pub fn run(config_path: &Path, sub: &str, role: &str) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    let role = Role::parse(role).map_err(|_| format!("{role:?} is not a valid role"))?;
    // The gateway refuses a token whose `sub` it could not pass on as a header.
    let sub = UserId::parse(sub)
        .map_err(|_| "--sub must be non-empty, without control characters or surrounding spaces")?;
    let keys = KeyRing::load(&config).map_err(|e| error_chain(&e))?;
    let issuer = TokenIssuer::with_keys(&config.tokens, Arc::new(keys));
    let minted = issuer
        .mint(sub.as_str(), role.as_str(), 0, None, SystemTime::now())
        .map_err(|e| error_chain(&e))?;
    println!("{}", minted.token);
    Ok(())
}
