//! The `authgate` binary: parses the command line, starts logging, loads the
//! config and runs the chosen command. Failures print their cause chain and
//! exit non-zero.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use authgate::cli::{Cli, Command};
use authgate::config::{is_valid_role, Config};
use authgate::service::error_chain;
use authgate::StartupError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::Token { sub, role } => token(&cli.config, &sub, &role),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("authgate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn serve(config_path: &std::path::Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })
            .map_err(|e| error_chain(&e))?;
        authgate::run(config, listener, shutdown_signal())
            .await
            .map_err(|e| error_chain(&e))
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received");
}

fn token(config_path: &std::path::Path, sub: &str, role: &str) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    if !is_valid_role(role) {
        return Err(format!("{role:?} is not a valid role"));
    }
    if sub.is_empty() || http::HeaderValue::from_str(sub).is_err() {
        return Err("--sub must be a non-empty printable value".to_owned());
    }
    let (secret, _) = authgate::config::secret::resolve(&config).map_err(|e| error_chain(&e))?;
    let issuer = authgate::auth::jwt::TokenIssuer::new(&config.tokens, &secret);
    let minted = issuer
        .mint(sub, role, 0, None, SystemTime::now())
        .map_err(|e| error_chain(&e))?;
    println!("{}", minted.token);
    Ok(())
}
