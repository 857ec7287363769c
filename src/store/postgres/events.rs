//! The revocation feed between instances: each revocation is written as an
//! event row in the transaction that makes it and announced with NOTIFY;
//! every instance's [`Listener`] follows the table by sequence number on a
//! dedicated connection and applies it to its in-memory revocation state
//! (a [`RevocationFeed`], implemented by `auth::revocation::RevocationList`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{AsyncMessage, Client, IsolationLevel};

use super::pool::Connector;
use super::{corrupt, db_error, from_db, PostgresStore};
use crate::store::StoreError;

/// The in-memory revocation state the listener keeps current. Defined
/// here so the store depends on no layer above it; `auth` implements it.
pub trait RevocationFeed: Send + Sync + 'static {
    /// Tokens of `user` below `version` are refused (the floor only rises).
    fn set_min_version(&self, user: &str, version: u32);
    /// Every token of `user` is refused.
    fn delete_user(&self, user: &str);
    /// Access tokens of `session` are refused until `until` (unix seconds).
    fn revoke_session(&self, session: &str, until: u64);
    /// From now on the state is stale when the feed is down longer than
    /// `max_staleness`.
    fn follow_feed(&self, max_staleness: Duration);
    /// The feed went down at `at`.
    fn feed_down(&self, at: SystemTime);
    /// The feed is up and caught up.
    fn feed_up(&self);
    /// How long the feed has been down beyond the allowed staleness.
    fn stale_for(&self, now: SystemTime) -> Option<Duration>;
    /// The API-key index the feed also keeps current, if any.
    fn api_keys(&self) -> Option<&dyn super::ApiKeyFeed> {
        None
    }
}

/// The NOTIFY channel.
const CHANNEL: &str = "authgate_revocations";

/// Key of the advisory lock event writers take before their sequence
/// number, so sequence order is commit order and a reader that has seen
/// event N has seen every event below it.
const EVENTS_LOCK: i64 = 0x6167_6576_656e_7473; // "agevents"

/// A quiet connection is still checked this often (a query with a timeout),
/// so a silently dead one is noticed well within the staleness bound.
const HEARTBEAT: Duration = Duration::from_secs(2);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);

/// Reconnection delays: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(2);

/// One revocation, as another instance must apply it.
pub(super) enum Event<'a> {
    /// Access tokens of `user` below `version` are refused.
    Version { user: &'a str, version: u32 },
    /// Every token of `user` is refused.
    Deleted { user: &'a str },
    /// Access tokens of session `family` are refused (revoked at `at`).
    Family { family: &'a str, at: u64 },
    /// API key `id` was created or revoked: re-read it.
    ApiKey { id: &'a str },
}

/// Writes `events` inside `tx` and announces them at its commit.
pub(super) async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    events: &[Event<'_>],
) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENTS_LOCK])
        .await
        .map_err(db_error)?;
    for event in events {
        let (kind, subject, version, at) = match event {
            Event::Version { user, version } => ("version", *user, Some(i64::from(*version)), None),
            Event::Deleted { user } => ("deleted", *user, None, None),
            Event::Family { family, at } => ("family", *family, None, Some(super::to_db(*at))),
            Event::ApiKey { id } => ("api_key", *id, None, None),
        };
        tx.execute(
            "INSERT INTO revocation_events (kind, subject, version, at)
             VALUES ($1, $2, $3, COALESCE($4, extract(epoch FROM now())::bigint))",
            &[&kind, &subject, &version, &at],
        )
        .await
        .map_err(db_error)?;
    }
    // Delivered at commit, only if the transaction commits.
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Deletes events older than `before` and records the highest pruned.
pub(super) async fn prune(
    tx: &tokio_postgres::Transaction<'_>,
    before: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "WITH gone AS (DELETE FROM revocation_events WHERE at < $1 RETURNING seq)
         UPDATE revocation_events_pruned
         SET through = GREATEST(through, (SELECT max(seq) FROM gone))
         WHERE EXISTS (SELECT 1 FROM gone)",
        &[&before],
    )
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The running listener; stops when dropped.
pub struct Listener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the feed into `revocations` until the returned [`Listener`] is
/// dropped. `access_lifetime` (access TTL plus leeway) is how long a revoked
/// session must stay refused. From now on `revocations` counts as stale when
/// the feed is down longer than `max_staleness`.
pub fn spawn_listener(
    store: &PostgresStore,
    revocations: Arc<dyn RevocationFeed>,
    access_lifetime: Duration,
    max_staleness: Duration,
) -> Listener {
    revocations.follow_feed(max_staleness);
    let connector = store.connector.clone();
    let task = tokio::spawn(follow(connector, revocations, access_lifetime));
    Listener { task }
}

/// Connects, catches up, applies what arrives; on any failure marks the
/// feed down and reconnects with a growing delay.
async fn follow(connector: Connector, revocations: Arc<dyn RevocationFeed>, lifetime: Duration) {
    let mut last: Option<i64> = None;
    let mut delay = RETRY_FIRST;
    let mut reported_stale = false;
    loop {
        let mut was_up = false;
        let err = match session(
            &connector,
            revocations.as_ref(),
            lifetime,
            &mut last,
            &mut was_up,
        )
        .await
        {
            Err(err) => err,
            Ok(never) => match never {},
        };
        revocations.feed_down(SystemTime::now());
        if was_up {
            delay = RETRY_FIRST;
            reported_stale = false;
            tracing::warn!(
                database = connector.shown(),
                error = %err,
                "revocation feed lost; reconnecting"
            );
        } else {
            tracing::debug!(error = %err, "revocation feed reconnect failed");
        }
        if let Some(stale_for) = revocations.stale_for(SystemTime::now()) {
            if !reported_stale {
                reported_stale = true;
                tracing::error!(
                    database = connector.shown(),
                    stale_for = ?stale_for,
                    error = %err,
                    "revocation feed down beyond [store] revocation_max_staleness: \
                     authenticated requests are refused (503) until it catches up"
                );
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_LAST);
    }
}

/// One connection's life; returns only with the error that ended it.
async fn session(
    connector: &Connector,
    revocations: &dyn RevocationFeed,
    lifetime: Duration,
    last: &mut Option<i64>,
    was_up: &mut bool,
) -> Result<std::convert::Infallible, StoreError> {
    let (sender, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let mut client = connector.connect_listener(sender).await?;
    // LISTEN before catching up: nothing committed after the catch-up's
    // snapshot can go unannounced.
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(db_error)?;
    catch_up(&mut client, revocations, lifetime, last).await?;
    revocations.feed_up();
    *was_up = true;
    tracing::info!(database = connector.shown(), "revocation feed up");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(AsyncMessage::Notification(_)) => {
                    catch_up(&mut client, revocations, lifetime, last).await?;
                }
                Some(_) => {}
                None => return Err(StoreError::Unavailable("the listener connection closed".into())),
            },
            _ = heartbeat.tick() => {
                tokio::time::timeout(HEARTBEAT_TIMEOUT, catch_up(&mut client, revocations, lifetime, last))
                    .await
                    .map_err(|_| StoreError::Unavailable("the listener connection stopped answering".into()))??;
            }
        }
        // Applied events are the only thing that makes the list current.
        revocations.feed_up();
    }
}

/// Applies every event after `last` (or reloads the whole state when events
/// after `last` were already pruned, or on the first connection), in one
/// consistent snapshot.
async fn catch_up(
    client: &mut Client,
    revocations: &dyn RevocationFeed,
    lifetime: Duration,
    last: &mut Option<i64>,
) -> Result<(), StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error)?;
    let pruned_through: i64 = tx
        .query_one("SELECT through FROM revocation_events_pruned", &[])
        .await
        .map_err(db_error)?
        .try_get(0)
        .map_err(corrupt)?;
    match *last {
        Some(seen) if pruned_through <= seen => {
            let rows = tx
                .query(
                    "SELECT seq, kind, subject, version, at FROM revocation_events
                     WHERE seq > $1 ORDER BY seq",
                    &[&seen],
                )
                .await
                .map_err(db_error)?;
            for row in &rows {
                let seq: i64 = row.try_get(0).map_err(corrupt)?;
                let kind: &str = row.try_get(1).map_err(corrupt)?;
                let subject: &str = row.try_get(2).map_err(corrupt)?;
                let version: Option<i64> = row.try_get(3).map_err(corrupt)?;
                let at: i64 = row.try_get(4).map_err(corrupt)?;
                apply(revocations, kind, subject, version, from_db(at), lifetime);
                if let Some(keys) = revocations.api_keys() {
                    super::api_keys::follow(&tx, keys, kind, subject).await?;
                }
                *last = Some(seq);
            }
        }
        _ => {
            *last = Some(reload(&tx, revocations, lifetime).await?);
        }
    }
    tx.commit().await.map_err(db_error)
}

fn apply(
    revocations: &dyn RevocationFeed,
    kind: &str,
    subject: &str,
    version: Option<i64>,
    at: u64,
    lifetime: Duration,
) {
    match (kind, version) {
        ("version", Some(version)) => {
            let version = u32::try_from(version).unwrap_or(u32::MAX - 1);
            revocations.set_min_version(subject, version);
        }
        ("deleted", _) => revocations.delete_user(subject),
        ("family", _) => {
            revocations.revoke_session(subject, at.saturating_add(lifetime.as_secs()));
        }
        // Applied by `api_keys::follow`, which reads the key.
        ("api_key", _) => {}
        (kind, _) => {
            // A newer instance wrote a kind this one does not know; the
            // schema check at start makes this a bug, not an upgrade path.
            tracing::error!(kind, "unknown revocation event kind ignored");
        }
    }
}

/// Loads the whole revocation state, as at start; returns the sequence
/// number it is current to.
async fn reload(
    tx: &tokio_postgres::Transaction<'_>,
    revocations: &dyn RevocationFeed,
    lifetime: Duration,
) -> Result<i64, StoreError> {
    let through: i64 = tx
        .query_one("SELECT COALESCE(max(seq), 0) FROM revocation_events", &[])
        .await
        .map_err(db_error)?
        .try_get(0)
        .map_err(corrupt)?;
    for row in tx
        .query(
            "SELECT id, token_version FROM users WHERE token_version > 0",
            &[],
        )
        .await
        .map_err(db_error)?
    {
        let user: &str = row.try_get(0).map_err(corrupt)?;
        let version: i64 = row.try_get(1).map_err(corrupt)?;
        revocations.set_min_version(user, u32::try_from(version).unwrap_or(u32::MAX - 1));
    }
    for row in tx
        .query("SELECT user_id FROM tombstones", &[])
        .await
        .map_err(db_error)?
    {
        revocations.delete_user(row.try_get(0).map_err(corrupt)?);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let since = super::to_db(now.saturating_sub(lifetime.as_secs()));
    for row in tx
        .query(
            "SELECT family_id, revoked_at FROM revocations WHERE revoked_at >= $1",
            &[&since],
        )
        .await
        .map_err(db_error)?
    {
        let family: &str = row.try_get(0).map_err(corrupt)?;
        let at: i64 = row.try_get(1).map_err(corrupt)?;
        revocations.revoke_session(family, from_db(at).saturating_add(lifetime.as_secs()));
    }
    if let Some(keys) = revocations.api_keys() {
        super::api_keys::reload(tx, keys).await?;
    }
    Ok(through)
}
