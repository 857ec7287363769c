//! The plain-HTTP admin listener: `/metrics`, `/healthz` and `/readyz`
//! off the public port, served from what [`crate::observe`] keeps.

pub mod health;
pub mod listener;
