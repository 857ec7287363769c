//! Readiness: can this gateway do its job right now? The store takes a
//! durable write, the serving certificate is within its validity, and each
//! route whose targets are health-checked has one available. Each failed
//! check is one reason string in the `/readyz` answer.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::gateway::Gateway;

/// The file the store probe writes, fsyncs and removes in the store's directory.
pub const STORE_PROBE_FILE: &str = "readiness.probe";

/// The reasons the gateway is not ready; empty when it is.
pub async fn readiness(gateway: &Gateway, now: SystemTime) -> Vec<String> {
    let mut problems = Vec::new();
    if !store_writable(gateway).await {
        problems.push("store: a probe write to the database directory failed".to_owned());
    }
    match gateway.observability().cert_not_after() {
        None => problems.push("certificate: its expiry could not be read".to_owned()),
        Some(not_after) if not_after <= now => problems.push("certificate: expired".to_owned()),
        Some(_) => {}
    }
    let checked_at = tokio::time::Instant::now();
    for route in &gateway.config().routes {
        let live = gateway
            .proxy()
            .upstreams(&route.name)
            .and_then(|group| group.checked_live(checked_at));
        if live == Some(false) {
            problems.push(format!(
                "route {}: no upstream target passes its health check",
                route.name
            ));
        }
    }
    problems
}

/// A write and fsync in the store's directory (the disk is full, or was
/// remounted read-only), then the store's own flush (sled fails every
/// operation after an I/O error).
async fn store_writable(gateway: &Gateway) -> bool {
    let dir = gateway.config().store.path.clone();
    let probe = tokio::task::spawn_blocking(move || probe_write(&dir)).await;
    match probe {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: store directory probe failed");
            return false;
        }
        Err(err) => {
            tracing::error!(error = %err, "readiness: store probe task failed");
            return false;
        }
    }
    match gateway.accounts().store().flush().await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %err, "readiness: store flush failed");
            false
        }
    }
}

fn probe_write(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(STORE_PROBE_FILE);
    let mut file = std::fs::File::create(&path)?;
    file.write_all(b"authgate readiness probe\n")?;
    file.sync_all()?;
    drop(file);
    match std::fs::remove_file(&path) {
        // A concurrent probe removed it first.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
