//! The `authgate` binary: parses the command line, starts logging, loads the
//! config and runs the chosen command (`serve`, `check-config`, `token`, or a
//! `user` account tool on the store). Failures print their cause chain and exit non-zero.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use authgate::account::{Email, NewPassword, Role, UserId};
use authgate::audit::{Audit, AuditEvent, AuditKind};
use authgate::auth::password::PasswordPool;
use authgate::cli::{Cli, Command, StoreCommand, UserCommand};
use authgate::config::{Config, LogFormat, StoreBackend};
use authgate::service::error_chain;
use authgate::store::{PostgresStore, SledStore, Store, User};
use authgate::timestamp::utc_timestamp;
use authgate::StartupError;

fn main() -> ExitCode {
    // First, while this is the only thread.
    let allocator_tuned = authgate::memory::tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config, allocator_tuned),
        Command::CheckConfig => {
            let _log_flush = init_tracing(LogFormat::Text);
            check_config(&cli.config)
        }
        Command::Token { sub, role } => {
            let _log_flush = init_tracing(LogFormat::Text);
            token(&cli.config, &sub, &role)
        }
        Command::User { command } => {
            let _log_flush = init_tracing(LogFormat::Text);
            user(&cli.config, command)
        }
        Command::Keys { command } => {
            let _log_flush = init_tracing(LogFormat::Text);
            authgate::cli::keys::run(&cli.config, command)
        }
        Command::ApiKey { command } => {
            let _log_flush = init_tracing(LogFormat::Text);
            authgate::cli::api_key::run(&cli.config, command)
        }
        Command::Store { command } => {
            let _log_flush = init_tracing(LogFormat::Text);
            store_command(command)
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
        tracing::warn!("could not fix the allocator's mmap threshold; idle memory may stay higher");
    }
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

/// Validates the file and what it names; prints one line on success.
fn check_config(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    authgate::check(config).map_err(|e| error_chain(&e))?;
    println!("{}: configuration is valid", config_path.display());
    Ok(())
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
    let role = Role::parse(role).map_err(|_| format!("{role:?} is not a valid role"))?;
    // The gateway refuses a token whose `sub` it could not pass on as a header.
    let sub = UserId::parse(sub)
        .map_err(|_| "--sub must be non-empty, without control characters or surrounding spaces")?;
    let keys = authgate::auth::keys::KeyRing::load(&config).map_err(|e| error_chain(&e))?;
    let issuer =
        authgate::auth::jwt::TokenIssuer::with_keys(&config.tokens, std::sync::Arc::new(keys));
    let minted = issuer
        .mint(sub.as_str(), role.as_str(), 0, None, SystemTime::now())
        .map_err(|e| error_chain(&e))?;
    println!("{}", minted.token);
    Ok(())
}

/// Runs a `user` command against the store named in the config. Arguments
/// are checked before the store is opened, the store before a password is
/// asked for, and every change is flushed to disk before success is printed.
fn user(config_path: &Path, command: UserCommand) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| error_chain(&e))?;
    // Operator changes are security events like the endpoints' own.
    let audit = match &config.log.audit_file {
        Some(path) => Audit::open(path).map_err(|e| error_chain(&e))?,
        None => Audit::disabled(),
    };
    // The flush group and the password pool answer through tokio.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let open = || runtime.block_on(open_store(&config));
    match command {
        UserCommand::Add { email, role } => {
            let email = email_arg(&email)?;
            let role = role_arg(&role)?;
            let store = open()?;
            runtime.block_on(add_user(&config, store.as_ref(), &audit, email, role))
        }
        UserCommand::List => runtime.block_on(list_users(open()?.as_ref())),
        UserCommand::SetRole { email, role } => {
            let email = email_arg(&email)?;
            let role = role_arg(&role)?;
            runtime.block_on(set_role(open()?.as_ref(), &audit, &email, &role))
        }
        UserCommand::Delete { email } => {
            let email = email_arg(&email)?;
            runtime.block_on(delete_user(open()?.as_ref(), &audit, &email))
        }
        UserCommand::RevokeSessions { email } => {
            let email = email_arg(&email)?;
            runtime.block_on(revoke_sessions(open()?.as_ref(), &audit, &email))
        }
    }
}

/// `authgate store copy`: sled into PostgreSQL, idempotently.
fn store_command(command: StoreCommand) -> Result<(), String> {
    let StoreCommand::Copy { from, to } = command;
    let Some(path) = from.strip_prefix("sled:").filter(|p| !p.is_empty()) else {
        return Err(format!("--from {from:?}: expected sled:PATH"));
    };
    let url = match to.strip_prefix("postgres:") {
        Some("") => std::env::var(authgate::config::DATABASE_URL_ENV).map_err(|_| {
            format!(
                "--to postgres: takes the URL from {}, which is not set",
                authgate::config::DATABASE_URL_ENV
            )
        })?,
        Some(rest) if rest.starts_with("//") => to.clone(),
        Some(rest) => rest.to_owned(),
        None => return Err("--to: expected postgres:URL".to_owned()),
    };
    let url = authgate::config::DatabaseUrl::parse(&url).map_err(|e| format!("--to: {e}"))?;
    let target = authgate::config::PostgresConfig {
        url,
        max_connections: 2,
        tls_ca: None,
    };
    let source = SledStore::open(Path::new(path)).map_err(|e| error_chain(&e))?;
    let export = source.export().map_err(|e| error_chain(&e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let done = runtime.block_on(async {
        let store = PostgresStore::open(&target)
            .await
            .map_err(|e| error_chain(&e))?;
        store.import(&export).await.map_err(|e| error_chain(&e))
    })?;
    println!("copied from sled:{path} to {}:", target.url);
    for (kind, read, added) in [
        ("users", export.users.len(), done.users),
        ("deleted users", export.tombstones.len(), done.tombstones),
        ("sessions", export.families.len(), done.families),
        ("session chains", export.chains.len(), done.chains),
        (
            "refresh tokens",
            export.refresh_tokens.len(),
            done.refresh_tokens,
        ),
        ("revocations", export.revocations.len(), done.revocations),
        ("API keys", export.api_keys.len(), done.api_keys),
    ] {
        println!("  {kind}: {read} read, {added} added");
    }
    Ok(())
}

/// The store the config names: the sled directory (only while no gateway
/// holds it) or the shared PostgreSQL database, whose running gateways apply
/// the changes made here through the revocation feed.
async fn open_store(config: &Config) -> Result<Box<dyn Store>, String> {
    match &config.store.backend {
        StoreBackend::Sled => SledStore::open(&config.store.path)
            .map(|store| Box::new(store) as Box<dyn Store>)
            .map_err(|e| error_chain(&e)),
        StoreBackend::Postgres(postgres) => PostgresStore::open(postgres)
            .await
            .map(|store| Box::new(store) as Box<dyn Store>)
            .map_err(|e| error_chain(&e)),
    }
}

async fn set_role(
    store: &dyn Store,
    audit: &Audit,
    email: &Email,
    role: &Role,
) -> Result<(), String> {
    let found = existing(store, email).await?;
    let updated = store
        .set_role(&found.id, role.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))?;
    flush(store).await?;
    audit
        .record(cli_event(AuditKind::RoleChange, &updated).detail(&updated.role))
        .await;
    println!(
        "role of {email} changed from {} to {}; its existing tokens are refused",
        found.role, updated.role
    );
    Ok(())
}

async fn delete_user(store: &dyn Store, audit: &Audit, email: &Email) -> Result<(), String> {
    let found = existing(store, email).await?;
    store
        .delete_user(&found.id, unix_now())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))?;
    flush(store).await?;
    audit
        .record(cli_event(AuditKind::UserDeletion, &found))
        .await;
    println!("deleted user {} ({email}) and all its sessions", found.id);
    Ok(())
}

async fn revoke_sessions(store: &dyn Store, audit: &Audit, email: &Email) -> Result<(), String> {
    let found = existing(store, email).await?;
    let revoked = store
        .revoke_user_families(&found.id, None, unix_now())
        .await
        .map_err(|e| error_chain(&e))?;
    // Revoked sessions cannot refresh; the version bump also ends the access
    // tokens already handed out.
    store
        .bump_token_version(&found.id)
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))?;
    flush(store).await?;
    audit.record(cli_event(AuditKind::LogoutAll, &found)).await;
    println!(
        "revoked {} session(s) of {email}; its access tokens are refused",
        revoked.len()
    );
    Ok(())
}

async fn add_user(
    config: &Config,
    store: &dyn Store,
    audit: &Audit,
    email: Email,
    role: Role,
) -> Result<(), String> {
    if store
        .user_by_email(email.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .is_some()
    {
        return Err(format!("a user with email {email} already exists"));
    }
    let password = read_password(&email)?;
    // One thread is plenty for one hash.
    let mut params = config.auth.password.clone();
    params.hash_workers = 1;
    let pool = PasswordPool::new(&params).map_err(|e| error_chain(&e))?;
    let password_hash = pool
        .hash(password.into_string())
        .await
        .map_err(|e| error_chain(&e))?;
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.into_string(),
        role: role.as_str().to_owned(),
        password_hash,
        created_at: unix_now(),
        token_version: 0,
    };
    store
        .create_user(&user)
        .await
        .map_err(|e| error_chain(&e))?;
    flush(store).await?;
    audit
        .record(cli_event(AuditKind::Registration, &user))
        .await;
    println!(
        "created user {} ({}) with role {}",
        user.id, user.email, user.role
    );
    Ok(())
}

async fn list_users(store: &dyn Store) -> Result<(), String> {
    const PAGE: usize = 256;
    let mut out = std::io::stdout().lock();
    let mut print = |line: String| {
        writeln!(out, "{line}").map_err(|e| format!("cannot write to standard output: {e}"))
    };
    print("ID\tEMAIL\tROLE\tCREATED_AT".to_owned())?;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_users(after.as_deref(), PAGE)
            .await
            .map_err(|e| error_chain(&e))?;
        for user in &page {
            print(format!(
                "{}\t{}\t{}\t{}",
                user.id,
                user.email,
                user.role,
                utc_timestamp(user.created_at)
            ))?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
            _ => return Ok(()),
        }
    }
}

/// An event an operator caused from the command line, about `user`.
fn cli_event(kind: AuditKind, user: &User) -> AuditEvent<'_> {
    AuditEvent::new(kind, SystemTime::now())
        .user(&user.id)
        .email(&user.email)
        .actor("cli")
}

fn email_arg(email: &str) -> Result<Email, String> {
    Email::parse(email).map_err(|e| format!("--email {email:?}: {e}"))
}

fn role_arg(role: &str) -> Result<Role, String> {
    Role::parse(role).map_err(|e| format!("--role {role:?}: {e}"))
}

async fn existing(store: &dyn Store, email: &Email) -> Result<User, String> {
    store
        .user_by_email(email.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))
}

fn no_such_user(email: &Email) -> String {
    format!("no user with email {email}")
}

async fn flush(store: &dyn Store) -> Result<(), String> {
    store.flush().await.map_err(|e| error_chain(&e))
}

/// One line from standard input, without its line ending, held to the same
/// policy as `/auth/register`. On a terminal the prompt goes to stderr so
/// stdout stays clean for scripts.
fn read_password(email: &Email) -> Result<NewPassword, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password for {email}: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    let read = stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    if read == 0 {
        return Err("no password given on standard input".to_owned());
    }
    let password = line
        .strip_suffix('\n')
        .map_or(line.as_str(), |l| l.strip_suffix('\r').unwrap_or(l));
    NewPassword::parse(password.to_owned()).map_err(|e| e.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
