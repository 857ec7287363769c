//! The audit trail: one JSON line per security event, appended to
//! `[log] audit_file` by a writer thread that fsyncs each batch before the
//! callers waiting on it go on, so a line is durable before the answer that
//! reports its event is sent. Lines never hold a token, password, cookie or key.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::timestamp::utc_timestamp_millis;

/// Where security events go. Cheap to share behind an `Arc`; dropping the
/// last one ends the writer thread once it has written what it was sent.
pub struct Audit {
    /// `None` when no `audit_file` is configured: events reach the log only.
    writer: Option<mpsc::Sender<Entry>>,
}

/// What happened. The names are the `event` field of the JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Registration,
    LoginSuccess,
    LoginFailure,
    /// An account became locked by repeated login failures.
    Lockout,
    RefreshReuseDetected,
    Logout,
    LogoutAll,
    PasswordChange,
    RoleChange,
    UserDeletion,
    /// An administrator read the user list or one user.
    AdminListUsers,
    AdminShowUser,
    /// A signing key was generated, made the signing key, or retired
    /// (`detail` names the kid). For the key tools.
    KeyGenerated,
    KeyActivation,
    KeyRetirement,
    /// An API key was created or revoked (`detail` names the key id).
    ApiKeyCreated,
    ApiKeyRevoked,
}

/// One event, before the writer adds the request's client address and id.
/// Every field is an identifier, never a credential.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub kind: AuditKind,
    pub at: SystemTime,
    /// The account the event is about.
    pub user_id: Option<&'a str>,
    pub email: Option<&'a str>,
    /// Who did it, when not the account itself (the administrator's id).
    pub actor: Option<&'a str>,
    /// A fixed fact about the event: the new role, a key id.
    pub detail: Option<&'a str>,
}

impl<'a> AuditEvent<'a> {
    pub fn new(kind: AuditKind, at: SystemTime) -> Self {
        Self {
            kind,
            at,
            user_id: None,
            email: None,
            actor: None,
            detail: None,
        }
    }

    pub fn user(mut self, id: &'a str) -> Self {
        self.user_id = Some(id);
        self
    }

    pub fn email(mut self, email: &'a str) -> Self {
        self.email = Some(email);
        self
    }

    pub fn actor(mut self, id: &'a str) -> Self {
        self.actor = Some(id);
        self
    }

    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// What the request an event happened in says about it; set once per
/// request by `service.rs` with [`in_request`], read by [`Audit::record`],
/// so the hooks at each event need not carry it.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    /// The client address the gateway decided on (`proxy::client_addr`).
    pub client: IpAddr,
    /// The request's id, where one exists.
    pub request_id: Option<Arc<str>>,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// Runs `future` (a request's handling) with `context` visible to the
/// audit records it makes.
pub(crate) fn in_request<F: Future>(
    context: RequestContext,
    future: F,
) -> impl Future<Output = F::Output> {
    REQUEST.scope(context, future)
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit file {path} ([log] audit_file): {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("writing the audit file failed: {0}")]
    Write(#[source] Arc<std::io::Error>),
    #[error("the audit writer has stopped")]
    Stopped,
}

/// A line to write and whom to tell when it is durable.
struct Entry {
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), Arc<std::io::Error>>>,
}

/// The JSON line. Field order is fixed; absent values are `null`, so every
/// line has the same keys.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    event: AuditKind,
    user_id: Option<&'a str>,
    email: Option<&'a str>,
    peer: Option<IpAddr>,
    request_id: Option<&'a str>,
    actor: Option<&'a str>,
    detail: Option<&'a str>,
}

impl Audit {
    /// Events reach the log only.
    pub fn disabled() -> Self {
        Self { writer: None }
    }

    /// Appends to `path` (created mode 0600, its directory as needed).
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let open_error = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(open_error)?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(open_error)?;
        let (writer, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("authgate-audit".to_owned())
            .spawn(move || write_batches(file, &queue))
            .map_err(AuditError::Spawn)?;
        Ok(Self {
            writer: Some(writer),
        })
    }

    /// Records `event` and returns once its line is on disk (written and
    /// fsynced). A failure is logged, not returned: the event has already
    /// happened and the answer must still say so.
    pub async fn record(&self, event: AuditEvent<'_>) {
        let Some(done) = self.submit(&event) else {
            return;
        };
        report(done.await);
    }

    /// As [`Audit::record`], for callers outside the async runtime (the
    /// command-line tools). Never call it from async code: it blocks.
    pub fn record_blocking(&self, event: AuditEvent<'_>) {
        let Some(done) = self.submit(&event) else {
            return;
        };
        report(done.blocking_recv());
    }

    /// Logs the event and hands its line to the writer.
    fn submit(
        &self,
        event: &AuditEvent<'_>,
    ) -> Option<oneshot::Receiver<Result<(), Arc<std::io::Error>>>> {
        let (peer, request_id) = REQUEST
            .try_with(|r| (Some(r.client), r.request_id.clone()))
            .unwrap_or((None, None));
        tracing::info!(
            target: "authgate::audit",
            event = ?event.kind,
            user = event.user_id.unwrap_or("-"),
            peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            "security event"
        );
        let writer = self.writer.as_ref()?;
        let line = Line {
            time: utc_timestamp_millis(event.at),
            event: event.kind,
            user_id: event.user_id,
            email: event.email,
            peer,
            request_id: request_id.as_deref(),
            actor: event.actor,
            detail: event.detail,
        };
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::error!(error = %err, "cannot encode an audit line");
                return None;
            }
        };
        bytes.push(b'\n');
        let (done, wait) = oneshot::channel();
        if writer.send(Entry { line: bytes, done }).is_err() {
            tracing::error!("{}", AuditError::Stopped);
            return None;
        }
        Some(wait)
    }
}

fn report(outcome: Result<Result<(), Arc<std::io::Error>>, oneshot::error::RecvError>) {
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(err)) => AuditError::Write(err),
        Err(_) => AuditError::Stopped,
    };
    tracing::error!(error = %error, "an audit line may be lost");
}

/// The writer thread: takes every line waiting, writes them in one go,
/// fsyncs once, then answers each caller. Concurrent events share one fsync
/// (group commit), so the cost per event falls as the rate rises.
fn write_batches(mut file: File, queue: &mpsc::Receiver<Entry>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut bytes = Vec::with_capacity(batch.iter().map(|e| e.line.len()).sum());
        for entry in &batch {
            bytes.extend_from_slice(&entry.line);
        }
        let outcome = file
            .write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(Arc::new);
        for entry in batch {
            let _ = entry.done.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[tokio::test]
    async fn a_recorded_event_is_one_line_on_disk_with_the_request_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.log");
        let audit = Audit::open(&path).unwrap();
        let context = RequestContext {
            client: "192.0.2.7".parse().unwrap(),
            request_id: Some(Arc::from("req-1")),
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        in_request(context, async {
            let event = AuditEvent::new(AuditKind::RoleChange, at)
                .user("u1")
                .email("a@example.com")
                .actor("admin-1")
                .detail("editor");
            audit.record(event).await;
        })
        .await;
        // Outside a request: no peer, no id.
        audit
            .record(AuditEvent::new(AuditKind::KeyActivation, at).detail("kid-2"))
            .await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0],
            serde_json::json!({
                "time": "2024-02-29T12:34:56.000Z", "event": "role_change",
                "user_id": "u1", "email": "a@example.com", "peer": "192.0.2.7",
                "request_id": "req-1", "actor": "admin-1", "detail": "editor"
            })
        );
        assert_eq!(lines[1]["event"], "key_activation");
        assert_eq!(lines[1]["peer"], serde_json::Value::Null);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
