//! Readiness: can this gateway do its job right now? The store takes a
//! durable write, the serving certificate is within its validity, and each
//! route whose targets are health-checked has one available. Each failed
//! check is one reason string in the `/readyz` answer.

use std::time::SystemTime;

use crate::gateway::Gateway;

/// The reasons the gateway is not ready; empty when it is.
pub(crate) async fn readiness(gateway: &Gateway, now: SystemTime) -> Vec<String> {
    let mut problems = Vec::new();
    if !store_writable(gateway).await {
        problems.push("store: cannot take a durable write".to_owned());
    }
    match gateway.observability().cert_not_after() {
        None => problems.push("certificate: its expiry could not be read".to_owned()),
        Some(not_after) if not_after <= now => problems.push("certificate: expired".to_owned()),
        Some(_) => {}
    }
    let checked_at = tokio::time::Instant::now();
    // The routes and upstreams installed last (a reload may have changed them).
    let current = gateway.live();
    for route in &current.config.routes {
        let live = current
            .proxy
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

/// The store's own check: a probe write in sled's directory, or a writable
/// PostgreSQL primary.
async fn store_writable(gateway: &Gateway) -> bool {
    match gateway.accounts().store().check_writable().await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %err, "readiness: the store cannot take a write");
            false
        }
    }
}
