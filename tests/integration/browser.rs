//! Browser sign-in in a real headless Chromium, driven over WebDriver
//! (fantoccini) through Debian's chromedriver: the sign-in round trip to
//! the original page, sign-out, the generic error, logout-all from another
//! client, a cross-site form post, and open redirects through the real
//! flow. One chromedriver per test binary, started on first use; at most
//! two browsers at once (the CI machine has two cores).
//!
//! Without chromedriver on PATH the tests are skipped with a line on
//! stderr, except under `CI=true`, where that is a failure.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::accounts::login;
use crate::accounts::register;
use crate::support::{TestGateway, Upstream};
use crate::web::{web_options, PASSWORD};

/// Browsers running at once.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// The chromedriver of this test binary: its URL, and the pipe whose end
/// (when the binary exits, however it exits) makes the wrapper shell kill it.
static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();

struct Driver {
    url: String,
    _child: Mutex<Child>,
    _lifeline: Mutex<ChildStdin>,
}

fn driver() -> Option<&'static Driver> {
    DRIVER.get_or_init(start_driver).as_ref()
}

fn start_driver() -> Option<Driver> {
    let found = Command::new("sh")
        .args(["-c", "command -v chromedriver"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromedriver is not installed; CI never skips the browser tests");
        }
        eprintln!("skipped: chromedriver is not on PATH (install Debian's chromium-driver)");
        return None;
    }
    // The shell outlives nothing: when this process ends, its stdin closes,
    // `read` returns and chromedriver is killed with it.
    let mut child = Command::new("sh")
        .args(["-c", "chromedriver --port=0 & pid=$!; read _; kill $pid"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let lifeline = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("chromedriver exited before it was ready")
            .unwrap();
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            break rest.trim_end_matches('.').trim().to_owned();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Some(Driver {
        url: format!("http://127.0.0.1:{port}"),
        _child: Mutex::new(child),
        _lifeline: Mutex::new(lifeline),
    })
}

/// A headless Chromium session; the permit holds one of the two slots.
struct Browser {
    client: Client,
    _permit: SemaphorePermit<'static>,
}

impl Browser {
    async fn start() -> Option<Self> {
        let driver = driver()?;
        let permit = BROWSERS.acquire().await.unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": [
                    "--headless=new", "--no-sandbox", "--ignore-certificate-errors",
                    "--disable-gpu", "--disable-dev-shm-usage", "--window-size=420,720",
                ],
            },
        });
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&driver.url)
            .await
            .expect("a chromium session");
        Some(Self {
            client,
            _permit: permit,
        })
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Fills the sign-in form in front of it and submits it by the button.
    async fn sign_in(&self, email: &str, password: &str) {
        let form = self
            .client
            .form(Locator::Css("form[action$='/sign-in']"))
            .await
            .unwrap();
        self.client
            .find(Locator::Id("email"))
            .await
            .unwrap()
            .send_keys(email)
            .await
            .unwrap();
        self.client
            .find(Locator::Id("password"))
            .await
            .unwrap()
            .send_keys(password)
            .await
            .unwrap();
        let page = self
            .client
            .find(Locator::Css("form[action$='/sign-in']"))
            .await
            .unwrap();
        form.submit().await.unwrap();
        self.wait_until_replaced(page).await;
    }

    /// Waits until `element`'s page has been replaced by the next one and
    /// that one has loaded: a click that starts a navigation may return
    /// before the navigation commits, and the URL read then is the old one.
    async fn wait_until_replaced(&self, element: fantoccini::elements::Element) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match element.is_displayed().await {
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    break;
                }
                _ if Instant::now() > deadline => panic!("the page was not replaced"),
                _ => tokio::task::yield_now().await,
            }
        }
        loop {
            let state = self
                .client
                .execute("return document.readyState", vec![])
                .await
                .unwrap();
            if state == "complete" {
                break;
            }
            assert!(Instant::now() < deadline, "the page did not load");
            tokio::task::yield_now().await;
        }
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn chromium_binary() -> &'static str {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|path| std::path::Path::new(path).exists())
    .unwrap_or("/usr/bin/chromium")
}

async fn echo_gateway() -> (TestGateway, Upstream) {
    let upstream = Upstream::start(crate::support::Behavior::Ok).await;
    let mut options = web_options(&upstream, "", "");
    options.routes.push_str(
        "[[route]]\nname = \"app\"\npath_prefix = \"/app/\"\nupstream = \"builtin:echo\"\nbrowser = true\n",
    );
    (TestGateway::start_with(options).await, upstream)
}

fn origin(gw: &TestGateway) -> String {
    format!("https://localhost:{}", gw.addr.port())
}

#[tokio::test]
async fn signing_in_lands_on_the_original_page_and_signing_out_sends_back() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (gw, _upstream) = echo_gateway().await;
    let user = register(&gw, "ada@example.com", PASSWORD).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let base = origin(&gw);
    browser.goto(&format!("{base}/app/report?id=7")).await;
    assert_eq!(
        browser.path().await,
        "/auth/sign-in?rd=/app/report%3Fid%3D7"
    );
    write_screenshot(&browser).await;
    browser.sign_in("ada@example.com", PASSWORD).await;
    assert_eq!(browser.path().await, "/app/report?id=7");
    let page = browser.source().await;
    assert!(
        page.contains(&user),
        "the echo upstream saw x-user-id: {page}"
    );
    assert!(
        !page.contains("authgate_session"),
        "the cookie reached the upstream: {page}"
    );
    // Sign out from the sign-in page's button.
    browser.goto(&format!("{base}/auth/sign-in")).await;
    browser
        .client
        .find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.path().await, "/auth/sign-in");
    browser.goto(&format!("{base}/app/report")).await;
    assert_eq!(browser.path().await, "/auth/sign-in?rd=/app/report");
    browser.close().await;
}

/// `AUTHGATE_WRITE_SCREENSHOT=1` refreshes `docs/sign-in.png`.
async fn write_screenshot(browser: &Browser) {
    if std::env::var("AUTHGATE_WRITE_SCREENSHOT").as_deref() != Ok("1") {
        return;
    }
    let png = browser.client.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sign-in.png");
    std::fs::write(path, png).unwrap();
}

#[tokio::test]
async fn a_wrong_password_shows_the_generic_error() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (gw, upstream) = echo_gateway().await;
    register(&gw, "ada@example.com", PASSWORD).await;
    browser.goto(&format!("{}/dash/", origin(&gw))).await;
    browser.sign_in("ada@example.com", "not the password").await;
    assert!(browser.path().await.starts_with("/auth/sign-in"));
    let error = browser.client.find(Locator::Id("error")).await.unwrap();
    assert_eq!(
        error.text().await.unwrap(),
        "Email or password is incorrect."
    );
    browser.goto(&format!("{}/auth/sign-in", origin(&gw))).await;
    browser
        .sign_in("nobody@example.com", "not the password")
        .await;
    let error = browser.client.find(Locator::Id("error")).await.unwrap();
    assert_eq!(
        error.text().await.unwrap(),
        "Email or password is incorrect."
    );
    assert!(upstream.received().is_empty());
    browser.close().await;
}

#[tokio::test]
async fn logout_all_from_another_client_ends_the_browser_session() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (gw, upstream) = echo_gateway().await;
    register(&gw, "ada@example.com", PASSWORD).await;
    let base = origin(&gw);
    browser.goto(&format!("{base}/dash/")).await;
    browser.sign_in("ada@example.com", PASSWORD).await;
    assert_eq!(browser.path().await, "/dash/");
    assert_eq!(upstream.count(), 1);
    upstream.clear();
    let token = login(&gw, "ada@example.com", PASSWORD).await.json()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let all = gw
        .client()
        .post("/auth/logout-all")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(all.status, 204);
    browser.goto(&format!("{base}/dash/")).await;
    assert_eq!(browser.path().await, "/auth/sign-in?rd=/dash/");
    assert!(upstream.received().is_empty());
    browser.close().await;
}

/// A page on another origin (plain HTTP, another port) with a form that
/// posts to the gateway; every connection gets the same answer.
async fn attacker_page(target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let html = format!(
        "<!doctype html><form method=\"post\" action=\"{target}\">\
         <input name=\"amount\" value=\"1000\"><button id=\"go\">Win a prize</button></form>"
    );
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_cross_site_form_post_never_reaches_the_upstream() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (gw, upstream) = echo_gateway().await;
    register(&gw, "ada@example.com", PASSWORD).await;
    let base = origin(&gw);
    browser.goto(&format!("{base}/dash/")).await;
    browser.sign_in("ada@example.com", PASSWORD).await;
    assert_eq!(browser.path().await, "/dash/");
    upstream.clear();
    let evil = attacker_page(format!("{base}/dash/transfer")).await;
    browser.goto(&evil).await;
    browser
        .client
        .find(Locator::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Bounded wait for the browser to have left the attacker's page.
    let started = Instant::now();
    while !browser.path().await.starts_with("/dash/transfer") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the form was never posted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = browser.source().await;
    assert!(
        answer.contains("MISSING_TOKEN") || answer.contains("CSRF_FAILED"),
        "{answer}"
    );
    assert!(upstream.received().is_empty(), "{:?}", upstream.received());
    // The session itself still works for this site's own requests.
    browser.goto(&format!("{base}/dash/")).await;
    assert_eq!(browser.path().await, "/dash/");
    assert_eq!(upstream.count(), 1);
    browser.close().await;
}

#[tokio::test]
async fn open_redirects_end_at_the_root_through_the_real_flow() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (gw, _upstream) = echo_gateway().await;
    register(&gw, "ada@example.com", PASSWORD).await;
    let base = origin(&gw);
    for rd in [
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%252F%252Fevil.example",
        "javascript%3Aalert(1)",
        "%2F%09%2Fevil.example",
    ] {
        browser.goto(&format!("{base}/auth/sign-in?rd={rd}")).await;
        browser.sign_in("ada@example.com", PASSWORD).await;
        let url = browser.client.current_url().await.unwrap();
        assert_eq!(
            (url.host_str(), url.port(), url.path()),
            (Some("localhost"), Some(gw.addr.port()), "/"),
            "rd={rd}"
        );
    }
    browser.close().await;
}
