//! The one integration-test binary: every test starts the real gateway with
//! TLS on an ephemeral port, a real recording upstream and a real client.

// Test code fails by panicking; that is how a harness reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod accounts;
mod api_keys;
mod assertion;
mod browser;
mod durability;
mod edge;
mod flood;
mod forged_tokens;
mod hardening;
mod inputs;
mod keys;
mod lifecycle;
mod limits;
mod live_sessions;
mod observability;
mod operations;
mod postgres;
mod proxying;
mod refresh_bounds;
mod session_races;
mod streaming;
mod throttle;
mod timeouts;
mod tunnels;
mod upstreams;
mod web;
