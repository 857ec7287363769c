//! Config loading, by topic; the helpers here are shared by every topic.

mod basics;
mod bounds;
mod routes;
mod shipped_keys;
mod store;
mod upstreams;

use super::*;

const MINIMAL: &str =
    "[server]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("gw.toml"), text)
}

fn error_text(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

fn route_with(keys: &str) -> Result<Config, ConfigError> {
    parse(&format!(
        "{MINIMAL}\n[[route]]\nname = \"r\"\npath_prefix = \"/r/\"\n{keys}\n"
    ))
}

fn http_set(config: &Config) -> &UpstreamSet {
    match &config.routes[0].upstream {
        Upstream::Http(set) => set,
        Upstream::Echo => panic!("expected http targets"),
    }
}

fn parse_env(text: &str, env: Option<&str>) -> Result<Config, ConfigError> {
    Config::parse_with_database_url(Path::new("gw.toml"), text, env.map(str::to_owned))
}
