//! Validates one `[[route]]`: its name, prefix, host, upstream and who may
//! use it. A prefix is held to the spelling request paths are decided in.

use std::ops::Range;

use http::uri::Authority;

use super::build::seconds;
use super::file::RouteFile;
use super::locate::Locator;
use super::{normalize_host, upstream, ConfigError, RouteAuth, RouteConfig};
use crate::account::Role;

pub(super) fn build_route(
    raw: RouteFile,
    index: usize,
    span: Range<usize>,
    at: &Locator,
) -> Result<RouteConfig, ConfigError> {
    let key = |field: &str| format!("route[{index}].{field}");
    let fail = |field: &str, message: String| at.error(span.clone(), Some(&key(field)), message);
    if raw.name.trim().is_empty() {
        return Err(fail("name", "must not be empty".to_owned()));
    }
    let upstream = upstream::build(&raw).map_err(|(field, message)| fail(field, message))?;
    let prefix_span = raw.path_prefix.span();
    let path_prefix = raw.path_prefix.into_inner();
    check_path_prefix(&path_prefix)
        .map_err(|message| at.error(prefix_span, Some(&key("path_prefix")), message))?;
    let host = match raw.host {
        None => None,
        Some(host) => {
            let normalized = normalize_host(&host).into_owned();
            if normalized.is_empty() || normalized.parse::<Authority>().is_err() {
                return Err(fail("host", format!("{host:?} is not a host name")));
            }
            Some(normalized)
        }
    };
    if raw.api_keys && raw.auth == RouteAuth::Public {
        return Err(fail(
            "api_keys",
            "a public route checks no credential; set auth = \"required\"".to_owned(),
        ));
    }
    if raw.identity_assertion && raw.auth == RouteAuth::Public {
        return Err(fail(
            "identity_assertion",
            "a public route has no identity to assert; set auth = \"required\"".to_owned(),
        ));
    }
    if raw.browser && raw.auth == RouteAuth::Public {
        return Err(fail(
            "browser",
            "a public route takes no credentials; set auth = \"required\" or remove `browser`"
                .to_owned(),
        ));
    }
    if let Some(roles) = &raw.roles {
        if raw.auth == RouteAuth::Public {
            return Err(fail(
                "roles",
                "a public route cannot require roles; remove `roles` or set auth = \"required\""
                    .to_owned(),
            ));
        }
        if roles.is_empty() {
            return Err(fail(
                "roles",
                "an empty list would refuse everyone; remove the key to allow any user".to_owned(),
            ));
        }
    }
    let roles = raw
        .roles
        .map(|roles| {
            roles
                .iter()
                .map(|role| {
                    Role::parse(role).map_err(|err| fail("roles", format!("{role:?}: {err}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(RouteConfig {
        index,
        name: raw.name,
        path_prefix,
        host,
        upstream,
        auth: raw.auth,
        roles,
        strip_prefix: raw.strip_prefix,
        timeout: seconds(raw.timeout, 30),
        forward_authorization: raw.forward_authorization,
        max_body: raw.max_body,
        websocket: raw.websocket,
        close_on_expiry: raw.close_on_expiry,
        identity_assertion: raw.identity_assertion,
        api_keys: raw.api_keys,
        browser: raw.browser,
    })
}

/// A route prefix must be spelled exactly as [`crate::path::decide`] spells
/// the paths it is matched against, or two spellings of one path could route
/// differently. Decided paths keep reserved characters (RFC 3986 §2.2) as
/// the client sent them, raw or percent-encoded, while backends decode both
/// to the same byte: a prefix `/team:admin/` would miss `/team%3Aadmin/`,
/// which would fall through to a broader route. So a prefix holds only
/// unreserved characters (RFC 3986 §2.3, which the decision always decodes)
/// and `/`, and must already be in decided form (no `//`, `.` or `..`
/// segments); anything else is refused rather than matched by a second
/// decoder whose rules would have to agree with every backend's.
pub(super) fn check_path_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!(
            "{prefix:?} must be an absolute path such as \"/api/\""
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|&c| !(c == '/' || c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
    {
        return Err(if ":?#[]@!$&'()*+,;=".contains(c) {
            format!(
                "{prefix:?} holds {c:?}, a reserved character (RFC 3986 §2.2): a client \
                 may send it percent-encoded, which the backend decodes but the prefix \
                 would not match; put the route on the parent path instead"
            )
        } else {
            format!(
                "{prefix:?} holds {c:?}, which no request path matches as written; use \
                 only letters, digits, '-', '.', '_', '~' and '/'"
            )
        });
    }
    match crate::path::decide(prefix) {
        Ok(decided) if decided.as_str() == prefix => Ok(()),
        _ => Err(format!(
            "{prefix:?} can never match: request paths have no empty, '.' or '..' segments"
        )),
    }
}
