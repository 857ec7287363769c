//! The harness every integration test uses: a real gateway on an ephemeral
//! port with TLS, a real recording upstream, and a real TLS client.

// Harness parts are shared by test modules that each use a subset.
#![allow(dead_code)]

pub mod body;
pub mod client;
pub mod gateway;
pub mod pki;
pub mod postgres;
pub mod upstream;

pub use client::{Response, TestClient};
pub use gateway::{GatewayOptions, TestGateway};
pub use upstream::{Behavior, Upstream};
