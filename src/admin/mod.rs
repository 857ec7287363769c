//! The plain-HTTP admin listener: `/metrics`, `/healthz` and `/readyz`
//! off the public port, served from what [`crate::observe`] keeps.

pub(crate) mod health;
pub(crate) mod listener;
