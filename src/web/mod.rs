//! Browser sign-in for web backends: the pages under `[auth] path_prefix`
//! (`pages.rs`, rendered by `html.rs`, posted through `form.rs`), and the
//! session cookie as a credential on `browser = true` routes (`gate.rs`).
//! What the cookie carries and how it is judged is `auth::browser_session`;
//! the password check is the account service's own.

mod cookie;
mod form;
mod gate;
mod html;
mod pages;
pub(crate) mod redirect;

pub(crate) use gate::{authenticate, Gate};
pub(crate) use pages::{serve, Page};
