//! A W3C WebDriver client for the dashboard test, over the tests' plain HTTP client: Debian's
//! `chromedriver` on a free port, one headless Chromium session, and the few commands the
//! test needs. Every wait is bounded.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The longest any one wait may take.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The browser and its driver, or why not.
pub(crate) fn find() -> Result<(PathBuf, PathBuf), String> {
    let driver =
        which("chromedriver").ok_or("no chromedriver (apt-get install chromium-driver)")?;
    // Debian's /usr/bin/chromium is a wrapper script; the driver wants the real binary.
    let browser = ["/usr/lib/chromium/chromium"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| which("chromium"))
        .or_else(|| which("chromium-browser"))
        .ok_or("no chromium (apt-get install chromium)")?;
    Ok((browser, driver))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A port nobody listens on now (chromedriver cannot be told port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// chromedriver, ready, with one headless session at desktop size.
    pub(crate) fn start(browser: &Path, driver: &Path) -> Self {
        let port = free_port();
        // UTC, so the times the page writes can be compared with fixed text.
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs");
        let addr = format!("127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Self {
            driver: child,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = crate::plain_http::request(&b.addr, None, "GET", "/status", None)
                .ok()
                .and_then(|(_, text)| serde_json::from_str::<Value>(&text).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser.to_str().unwrap(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--window-size=1280,900",
                    format!("--user-data-dir={}", b._profile.path().display())],
            },
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session id").to_owned();
        b
    }

    /// One command; its `value`. A WebDriver error fails the test with its message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let (status, text) =
            crate::plain_http::request(&self.addr, None, method, path, body.as_deref())
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub(crate) fn go(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub(crate) fn run(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs `script` with a callback as its last argument; what it passes the callback.
    pub(crate) fn run_async(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Says OK to the page's `confirm()`, once it is open.
    pub(crate) fn accept_dialog(&self) {
        let deadline = Instant::now() + WAIT;
        let path = format!("/session/{}/alert/accept", self.session);
        loop {
            let (status, text) =
                crate::plain_http::request(&self.addr, None, "POST", &path, Some("{}")).unwrap();
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no dialog within {WAIT:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `script` until it returns something truthy (not false, null, "" or 0); that value.
    pub(crate) fn wait(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.run(script, json!([]));
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {WAIT:?}; the page says:\n{}",
                self.run("return document.body.innerText", json!([]))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the text of `css` contains `text`.
    pub(crate) fn wait_text(&self, css: &str, text: &str) {
        let script = format!(
            "const e = document.querySelector({}); return !!e && e.textContent.includes({});",
            json!(css),
            json!(text)
        );
        self.wait(&format!("{text:?} in {css}"), &script);
    }

    /// The element `css` once it is there.
    fn element(&self, css: &str) -> String {
        let script = format!("return !!document.querySelector({})", json!(css));
        self.wait(&format!("an element {css}"), &script);
        let v = self.session_call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element reference")
            .to_owned()
    }

    pub(crate) fn click(&self, css: &str) {
        let e = self.element(css);
        self.session_call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Types `text` into `css` as keystrokes (a `\n` is Enter).
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.session_call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.session_call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub(crate) fn size(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// A PNG of the viewport into `dir/name.png`; its path.
    pub(crate) fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let v = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64"))
            .expect("a PNG in base64");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = crate::plain_http::request(&self.addr, None, "DELETE", &path, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
