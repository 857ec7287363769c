use super::*;
use crate::config::Config;

fn routes() -> Vec<RouteConfig> {
    let text = r#"
[server]
listen = "127.0.0.1:0"
tls_cert = "c.pem"
tls_key = "k.pem"

[[route]]
name = "root"
path_prefix = "/"
upstream = "http://127.0.0.1:1"

[[route]]
name = "api"
path_prefix = "/api/"
upstream = "http://127.0.0.1:2"

[[route]]
name = "api-admin"
path_prefix = "/api/admin"
upstream = "http://127.0.0.1:3"

[[route]]
name = "api-on-host"
path_prefix = "/api/"
host = "Api.Example.COM."
upstream = "http://127.0.0.1:4"
"#;
    Config::parse(std::path::Path::new("test.toml"), text)
        .unwrap()
        .routes
}

fn name(router: &Router, host: Option<&str>, path: &str) -> String {
    router
        .route(host, path)
        .map(|r| r.name.clone())
        .unwrap_or_default()
}

#[test]
fn host_then_longest_prefix() {
    let router = Router::new(&routes());
    assert_eq!(name(&router, None, "/api/x"), "api");
    assert_eq!(name(&router, None, "/api"), "api");
    assert_eq!(name(&router, None, "/api/admin/users"), "api-admin");
    assert_eq!(name(&router, None, "/api/adminx"), "api");
    assert_eq!(name(&router, None, "/apix"), "root");
    assert_eq!(
        name(&router, Some("api.example.com"), "/api/x"),
        "api-on-host"
    );
    assert_eq!(name(&router, Some("other.example.com"), "/api/x"), "api");
    assert_eq!(name(&router, Some("api.example.com"), "/other"), "root");
}

#[test]
fn prefix_boundary_is_a_segment() {
    assert!(prefix_matches("/admin/", "/admin"));
    assert!(prefix_matches("/admin/", "/admin/x"));
    assert!(prefix_matches("/admin", "/admin/x"));
    assert!(!prefix_matches("/admin/", "/adminx"));
    assert!(!prefix_matches("/admin", "/adminx"));
    assert!(prefix_matches("/", "/anything"));
}

#[test]
fn request_host_normalizes_and_refuses_conflicts() {
    fn host(authority: Option<&str>, headers: &[&str]) -> Result<Option<String>, &'static str> {
        request_host(authority, &mut headers.iter().copied()).map(|h| h.map(Cow::into_owned))
    }
    assert_eq!(
        host(None, &["API.example.com.:8443"]),
        Ok(Some("api.example.com".into()))
    );
    assert_eq!(host(None, &["[::1]:8443"]), Ok(Some("[::1]".into())));
    assert_eq!(host(Some("a.example"), &[]), Ok(Some("a.example".into())));
    assert_eq!(
        host(Some("a.example"), &["A.example:443"]),
        Ok(Some("a.example".into()))
    );
    assert!(host(Some("a.example"), &["b.example"]).is_err());
    assert!(host(None, &["a.example", "b.example"]).is_err());
    assert_eq!(host(None, &[]), Ok(None));
}

#[test]
fn a_host_already_in_normal_form_is_not_copied() {
    let sent = "api.example.com:8443";
    let decided = request_host(None, &mut [sent].into_iter())
        .unwrap()
        .unwrap();
    assert!(
        matches!(decided, Cow::Borrowed("api.example.com")),
        "{decided:?}"
    );
    let upper = request_host(None, &mut ["API.example.com"].into_iter())
        .unwrap()
        .unwrap();
    assert!(matches!(upper, Cow::Owned(_)), "{upper:?}");
}
