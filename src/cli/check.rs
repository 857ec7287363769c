//! `authgate check-config`: validates the file and everything it names
//! without starting anything, for CI and deploy hooks.

use std::path::Path;

use crate::config::Config;
use crate::service::error_chain;

/// Validates the file and what it names; prints one line on success.
pub fn run(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    crate::check(config).map_err(|e| error_chain(&e))?;
    println!("{}: configuration is valid", config_path.display());
    Ok(())
}
