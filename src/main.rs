//! The `authgate` binary: parses the command line, starts logging, loads the
//! config and runs the chosen command (`serve`, `token`, or a `user` account
//! tool on the store). Failures print their cause chain and exit non-zero.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use authgate::account::{Email, NewPassword, Role, UserId};
use authgate::auth::password::PasswordPool;
use authgate::cli::{Cli, Command, StoreCommand, UserCommand};
use authgate::config::Config;
use authgate::config::StoreBackend;
use authgate::service::error_chain;
use authgate::store::{PostgresStore, SledStore, Store, User};
use authgate::StartupError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held until exit: dropping it flushes the log lines still queued.
    let _log_flush = init_tracing();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::Token { sub, role } => token(&cli.config, &sub, &role),
        Command::User { command } => user(&cli.config, command),
        Command::Store { command } => store_command(command),
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
/// lines being dropped.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Bounded well below the default 128k slots, which cost ~3 MiB up front.
        .buffered_lines_limit(16 * 1024)
        .thread_name("authgate-log")
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .init();
    guard
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
    let role = Role::parse(role).map_err(|_| format!("{role:?} is not a valid role"))?;
    // The gateway refuses a token whose `sub` it could not pass on as a header.
    let sub = UserId::parse(sub)
        .map_err(|_| "--sub must be non-empty, without control characters or surrounding spaces")?;
    let (secret, _) = authgate::config::secret::resolve(&config).map_err(|e| error_chain(&e))?;
    let issuer = authgate::auth::jwt::TokenIssuer::new(&config.tokens, &secret);
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
            runtime.block_on(add_user(&config, store.as_ref(), email, role))
        }
        UserCommand::List => runtime.block_on(list_users(open()?.as_ref())),
        UserCommand::SetRole { email, role } => {
            let email = email_arg(&email)?;
            let role = role_arg(&role)?;
            runtime.block_on(set_role(open()?.as_ref(), &email, &role))
        }
        UserCommand::Delete { email } => {
            let email = email_arg(&email)?;
            runtime.block_on(delete_user(open()?.as_ref(), &email))
        }
        UserCommand::RevokeSessions { email } => {
            let email = email_arg(&email)?;
            runtime.block_on(revoke_sessions(open()?.as_ref(), &email))
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

async fn set_role(store: &dyn Store, email: &Email, role: &Role) -> Result<(), String> {
    let found = existing(store, email).await?;
    let updated = store
        .set_role(&found.id, role.as_str())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))?;
    flush(store).await?;
    println!(
        "role of {email} changed from {} to {}; its existing tokens are refused",
        found.role, updated.role
    );
    Ok(())
}

async fn delete_user(store: &dyn Store, email: &Email) -> Result<(), String> {
    let found = existing(store, email).await?;
    store
        .delete_user(&found.id, unix_now())
        .await
        .map_err(|e| error_chain(&e))?
        .ok_or_else(|| no_such_user(email))?;
    flush(store).await?;
    println!("deleted user {} ({email}) and all its sessions", found.id);
    Ok(())
}

async fn revoke_sessions(store: &dyn Store, email: &Email) -> Result<(), String> {
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
    println!(
        "revoked {} session(s) of {email}; its access tokens are refused",
        revoked.len()
    );
    Ok(())
}

async fn add_user(
    config: &Config,
    store: &dyn Store,
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

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds, without a date crate (the
/// days-to-civil algorithm from Howard Hinnant's "chrono-Compatible
/// Low-Level Date Algorithms").
fn utc_timestamp(unix: u64) -> String {
    let days = unix / 86_400;
    let seconds = unix % 86_400;
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3_600,
        seconds % 3_600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(utc_timestamp(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
