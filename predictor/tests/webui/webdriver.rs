//! Just enough of the W3C WebDriver protocol, spoken over HTTP to the
//! system's `chromedriver`, to drive headless Chromium through a page:
//! open, type, upload a file, click, read the page back, screenshot.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C key under which an element reference travels.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Chromium and its driver are, or why the test cannot run.
pub enum Found {
    /// Both binaries.
    Binaries { chromium: PathBuf, chromedriver: PathBuf },
    /// Missing, and the caller asked to skip browser tests.
    Skip,
}

/// Finds `chromium` and `chromedriver` ($CHROMIUM / $CHROMEDRIVER, else on
/// PATH); panics naming the Debian packages unless HONE_SKIP_BROWSER=1.
pub fn find_browser() -> Found {
    let lookup = |env: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(env) {
            return Some(PathBuf::from(path)).filter(|p| p.is_file());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|candidate| candidate.is_file())
    };
    let chromium = lookup("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = lookup("CHROMEDRIVER", &["chromedriver"]);
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Found::Binaries { chromium, chromedriver },
        _ if std::env::var("HONE_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("HONE_SKIP_BROWSER=1: skipping the headless Chromium test");
            Found::Skip
        }
        (chromium, chromedriver) => panic!(
            "the web page test drives headless Chromium: install the Debian packages `chromium` and \
             `chromium-driver` (apt-get install chromium chromium-driver), or set CHROMIUM and CHROMEDRIVER, \
             or HONE_SKIP_BROWSER=1 to skip it (found chromium: {chromium:?}, chromedriver: {chromedriver:?})"
        ),
    }
}

/// A chromedriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session.
    pub async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let profile = tempfile::tempdir().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && r.json::<Value>().await.is_ok_and(|s| s["value"]["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // --no-sandbox: Chromium refuses to run as root with its sandbox.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--window-size=1100,900",
                         format!("--user-data-dir={}", profile.path().display())],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser { driver, session: String::new(), base, http, _profile: profile };
        let created = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = created["sessionId"].as_str().expect("session id").to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {answer}");
        answer["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.session_path("/url"), Some(json!({"url": url}))).await;
    }

    /// The element matching the CSS selector.
    pub async fn find(&self, css: &str) -> String {
        let body = json!({"using": "css selector", "value": css});
        let found = self.call("POST", &self.session_path("/element"), Some(body)).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    /// Types `text` into the element (for a file input: the file's path).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let path = self.session_path(&format!("/element/{element}/value"));
        self.call("POST", &path, Some(json!({"text": text}))).await;
    }

    /// Clicks the element as a user would (fails if it is hidden or covered).
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call("POST", &self.session_path(&format!("/element/{element}/click")), None).await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.call("POST", &self.session_path("/execute/sync"), Some(body)).await
    }

    /// Polls `script` until it returns something other than null or false.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(script).await;
            if !value.is_null() && value != json!(false) {
                return value;
            }
            if Instant::now() > deadline {
                let page = self.eval("return document.body.innerText").await;
                panic!("timed out waiting for {what}; the page says:\n{}", page.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.call("GET", &self.session_path("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The browser console's messages since the last call (chromedriver's
    /// log extension), e.g. Content-Security-Policy violations.
    pub async fn console(&self) -> Vec<String> {
        let entries =
            self.call("POST", &self.session_path("/se/log"), Some(json!({"type": "browser"}))).await;
        entries
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| format!("{} {}", e["level"], e["message"].as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the session (closing Chromium), then the driver.
    pub fn quit(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if !self.session.is_empty() {
            // Blocking on purpose: this also runs from Drop after a failed
            // assertion, where an orphaned Chromium would otherwise outlive the test.
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session
            );
            let address = self.base.trim_start_matches("http://");
            if let Ok(mut stream) = std::net::TcpStream::connect(address) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
                let _ = stream.write_all(request.as_bytes());
                let _ = stream.read_to_end(&mut Vec::new());
            }
            self.session.clear();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}
