//! A minimal W3C WebDriver client for headless Chromium, over `ureq` and `serde_json`: just what
//! tests/it/browser.rs needs (navigate, run a script, find and click an element, screenshots).
//! The WebDriver crates (fantoccini, thirtyfour) bring tokio and hyper, which would double the
//! test build on 2 cores; this is a few blocking JSON requests to a chromedriver child.

use base64::Engine;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver names element references by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `name` on the PATH, if there.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The Chromium (or Chrome) binary on the PATH, if any.
pub fn find_chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|n| find_on_path(n))
}

/// A free port on the loopback interface (free when asked; a race with another process taking
/// it in between shows as chromedriver failing to start).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A chromedriver child with one headless browser session. Dropping it (also when a test
/// panics) ends the session, which closes the browser, then kills chromedriver.
pub struct Browser {
    driver: Child,
    base: String,
    session: Option<String>,
    agent: ureq::Agent,
}

impl Browser {
    /// Starts `chromedriver` and a headless session of `chromium` with a `width` x `height`
    /// window. Errors carry chromedriver's message.
    pub fn start(chromedriver: &Path, chromium: &Path, (width, height): (u32, u32)) -> Result<Browser, String> {
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", chromedriver.display()))?;
        // Loopback only: no proxy from the environment; WebDriver's errors come as 4xx/5xx
        // with a JSON body, read rather than turned into a bare status error.
        let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into();
        let mut browser = Browser { driver, base: format!("http://127.0.0.1:{port}"), session: None, agent };
        browser.wait_ready()?;
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(), // the tests may run as root, where Chromium's sandbox refuses to start
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(), // containers' /dev/shm is often 64 MB
            "--force-color-profile=srgb".into(), // PNG pixels reach the screenshot unconverted
            "--force-device-scale-factor=1".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let created = browser.send("POST", "/session", Some(caps))?;
        let id = created["sessionId"].as_str().ok_or_else(|| format!("POST /session: no sessionId in {created}"))?;
        browser.session = Some(id.to_string());
        Ok(browser)
    }

    /// Polls `/status` until chromedriver says it is ready (10 s at most).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.driver.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("chromedriver exited at start ({status})"));
            }
            if let Ok(v) = self.send("GET", "/status", None) {
                if v["ready"] == true {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not answer /status within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command; its `value`, or chromedriver's error and message.
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {path}");
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).header("Content-Type", "application/json").send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut response = response.map_err(|e| format!("{what}: {e}"))?;
        let status = response.status();
        // Screenshots are base64 PNGs: allow far more than ureq's 10 MB default.
        let text = response.body_mut().with_config().limit(256 << 20).read_to_string().map_err(|e| format!("{what}: reading the answer: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|_| format!("{what}: {status}, not JSON: {text:.200}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["message"].as_str().unwrap_or(&text);
            Err(format!("{what}: {status} {}: {message}", value["error"].as_str().unwrap_or("error")))
        }
    }

    fn session(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session.as_deref().expect("an open session"))
    }

    /// Loads `url` (returns when the page has loaded).
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.send("POST", &self.session("/url"), Some(json!({ "url": url }))).map(|_| ())
    }

    /// Runs `script` (a function body; `arguments[k]` are `args`) in the page; what it returns.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value, String> {
        self.send("POST", &self.session("/execute/sync"), Some(json!({ "script": script, "args": args })))
    }

    /// The first element matching the CSS selector.
    pub fn find(&self, css: &str) -> Result<String, String> {
        let v = self.send("POST", &self.session("/element"), Some(json!({ "using": "css selector", "value": css })))?;
        v[ELEMENT_KEY].as_str().map(str::to_string).ok_or_else(|| format!("find {css}: no element reference in {v}"))
    }

    pub fn click(&self, element: &str) -> Result<(), String> {
        self.send("POST", &self.session(&format!("/element/{element}/click")), None).map(|_| ())
    }

    /// A PNG of what the element shows, at its rendered size.
    pub fn element_screenshot(&self, element: &str) -> Result<Vec<u8>, String> {
        let v = self.send("GET", &self.session(&format!("/element/{element}/screenshot")), None)?;
        decode_png(&v)
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let v = self.send("GET", &self.session("/screenshot"), None)?;
        decode_png(&v)
    }

    /// Resizes the window (its outer size; the viewport is what is left of it in headless mode).
    pub fn set_window_size(&self, width: u32, height: u32) -> Result<(), String> {
        self.send("POST", &self.session("/window/rect"), Some(json!({ "width": width, "height": height }))).map(|_| ())
    }
}

fn decode_png(v: &Value) -> Result<Vec<u8>, String> {
    let b64 = v.as_str().ok_or_else(|| format!("a screenshot is not a string: {v}"))?;
    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("a screenshot is not base64: {e}"))
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self.send("DELETE", &self.session(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
