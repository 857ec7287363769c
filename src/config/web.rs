//! The `[web]` section: what the browser sign-in pages show and how long a
//! browser session may sit idle. The routes that accept the session cookie
//! say so themselves (`browser = true`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::DurationIn;
use super::{ConfigError, Locator};

/// A second to ten years, as every other session lifetime.
type IdleTimeout = DurationIn<1_000, { 3_650 * 24 * 3_600 * 1_000 }>;

/// Longest title: it is a heading on a phone screen, not a paragraph.
const MAX_TITLE_CHARS: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebFile {
    pub title: Option<Spanned<String>>,
    pub session_idle_timeout: Option<IdleTimeout>,
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Shown as the heading and `<title>` of the sign-in pages (escaped).
    pub title: String,
    /// A browser session unused for this long ends; each use slides it.
    pub session_idle_timeout: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            title: "authgate".to_owned(),
            session_idle_timeout: Duration::from_secs(8 * 3_600),
        }
    }
}

pub(super) fn build(raw: WebFile, at: &Locator) -> Result<WebConfig, ConfigError> {
    let defaults = WebConfig::default();
    let title = match raw.title {
        None => defaults.title,
        Some(title) => {
            let text = title.get_ref().trim();
            if text.is_empty()
                || text.chars().count() > MAX_TITLE_CHARS
                || text.chars().any(char::is_control)
            {
                return Err(at.error(
                    title.span(),
                    Some("web.title"),
                    format!(
                        "must be 1 to {MAX_TITLE_CHARS} characters on one line, such as \
                         \"Example Corp\""
                    ),
                ));
            }
            text.to_owned()
        }
    };
    Ok(WebConfig {
        title,
        session_idle_timeout: raw
            .session_idle_timeout
            .map_or(defaults.session_idle_timeout, |d| d.0),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    const MINIMAL: &str =
        "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("gw.toml"), &format!("{MINIMAL}{extra}"))
    }

    #[test]
    fn defaults_when_the_section_is_left_out() {
        let config = parse("").unwrap();
        assert_eq!(config.web.title, "authgate");
        assert_eq!(
            config.web.session_idle_timeout,
            Duration::from_secs(8 * 3_600)
        );
    }

    #[test]
    fn reads_title_and_idle_timeout() {
        let config =
            parse("[web]\ntitle = \"Example Corp\"\nsession_idle_timeout = \"30m\"\n").unwrap();
        assert_eq!(config.web.title, "Example Corp");
        assert_eq!(config.web.session_idle_timeout, Duration::from_secs(1_800));
    }

    #[test]
    fn bad_values_name_their_key_and_line() {
        let cases = [
            ("[web]\ntitle = \"\"\n", "gw.toml:6:9: web.title:"),
            ("[web]\ntitle = \"a\\nb\"\n", "gw.toml:6:9: web.title:"),
            (
                "[web]\nsession_idle_timeout = \"0s\"\n",
                "gw.toml:6:24: session_idle_timeout:",
            ),
            (
                "[web]\nsession_idle_timeout = \"soon\"\n",
                "gw.toml:6:24: session_idle_timeout:",
            ),
            ("[web]\ncolour = \"red\"\n", "gw.toml:6:1: colour:"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn browser_routes_must_require_authentication() {
        let route = "[[route]]\nname = \"dash\"\npath_prefix = \"/dash/\"\n\
                     upstream = \"http://127.0.0.1:3000\"\nbrowser = true\n";
        let config = parse(route).unwrap();
        assert!(config.routes[0].browser);
        let err = parse(&format!("{route}auth = \"public\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("route[0].browser"), "{err}");
        let plain = parse(&route.replace("browser = true\n", "")).unwrap();
        assert!(!plain.routes[0].browser);
    }
}
