//! Command-line interface: `serve` (the default), `token` for operators, and
//! the global `--config`, accepted before or after the subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authenticating reverse-proxy gateway"
)]
pub struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default when no command is given).
    Serve,
    /// Print a signed access token for a subject and role.
    Token {
        /// The user id the token asserts (becomes X-User-Id upstream).
        #[arg(long)]
        sub: String,
        /// The role the token asserts (becomes X-User-Role upstream).
        #[arg(long)]
        role: String,
    },
}
