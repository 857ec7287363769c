//! Reloading the keys on SIGHUP: after `authgate keys activate` or `retire`,
//! `kill -HUP` makes the running gateway sign and verify with the new set.
//! A reload that fails (unreadable file, no active key) keeps the old set.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::auth::keys::KeyRing;
use crate::service::error_chain;

/// Reloads `keys` on every SIGHUP until the returned task is aborted; `None`
/// where there are no such signals or the handler cannot be installed.
pub(crate) fn spawn_on_sighup(keys: Arc<KeyRing>) -> Option<JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; keys reload only on restart");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let keys = Arc::clone(&keys);
                // Reading the key files is blocking I/O.
                match tokio::task::spawn_blocking(move || keys.reload_keys()).await {
                    Ok(Ok((verifying, signing))) => tracing::info!(
                        signing_kid = %signing,
                        verifying = ?verifying,
                        "SIGHUP: signing keys reloaded"
                    ),
                    Ok(Err(err)) => tracing::error!(
                        error = %error_chain(&err),
                        "SIGHUP: key reload failed; the keys in force are unchanged"
                    ),
                    Err(err) => tracing::error!(error = %err, "SIGHUP: key reload task failed"),
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = keys;
        None
    }
}
