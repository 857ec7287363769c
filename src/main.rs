//! The `authgate` binary: parses the command line, starts logging and runs
//! the chosen command: `serve` here (load the config, bind, call
//! `authgate::run`), the operator commands from `authgate::cli`. Failures
//! print their cause chain and exit non-zero.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use authgate::cli::{Cli, Command};
use authgate::config::{Config, LogFormat};
use authgate::service::error_chain;
use authgate::StartupError;

fn main() -> ExitCode {
    // First, while this is the only thread.
    let allocator_tuned = authgate::memory::tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config, allocator_tuned),
        Command::CheckConfig => {
            let _log_flush = init_tracing(LogFormat::Text);
            authgate::cli::check::run(&cli.config)
        }
        Command::Token { sub, role } => {
            let _log_flush = init_tracing(LogFormat::Text);
            authgate::cli::token::run(&cli.config, &sub, &role)
        }
        Command::User { command } => {
            let _log_flush = init_tracing(LogFormat::Text);
            authgate::cli::user::run(&cli.config, command)
        }
        Command::Keys { command } => {
            let _log_flush = init_tracing(LogFormat::Text);
            authgate::cli::keys::run(&cli.config, command)
        }
        Command::Store { command } => {
            let _log_flush = init_tracing(LogFormat::Text);
            authgate::cli::store::run(command)
        }
        Command::ApiKey { command } => {
            let _log_flush = init_tracing(LogFormat::Text);
            authgate::cli::api_key::run(&cli.config, command)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("authgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr through a writer thread, so a request never waits on
/// the terminal or a pipe; when the queue is full, callers wait rather than
/// lines being dropped. `format` is `[log] format`: JSON puts each event's
/// fields at the top level of one object per line, with the request span's
/// fields (method, peer, route, user) under `span`. Dropping the guard
/// flushes the lines still queued.
fn init_tracing(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Bounded well below the default 128k slots, which cost ~3 MiB up front.
        .buffered_lines_limit(16 * 1024)
        .thread_name("authgate-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    guard
}

fn serve(config_path: &std::path::Path, allocator_tuned: bool) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    // After the config, which names the format; held until serving ends.
    let _log_flush = init_tracing(config.log.format);
    if !allocator_tuned {
        tracing::warn!("could not apply the allocator settings (mmap and trim thresholds, no fast bins); idle memory may stay higher and requests cost more CPU");
    }
    // Every worker runs the current-thread scheduler on its own thread
    // (this one is the first; the server starts the others), measured in
    // bench/RESULTS.md against tokio's multi-thread scheduler.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let addr = config.server.listen;
        let listener = authgate::server::bind(addr, config.server.workers)
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
