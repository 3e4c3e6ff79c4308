//! A small W3C WebDriver client for browser tests: starts Debian's
//! `chromedriver` (package `chromium-driver`) on a free loopback port, opens
//! a headless Chromium session, and drives it over the WebDriver HTTP
//! protocol with `ureq`. Dropping the [`Browser`] ends the session and stops
//! chromedriver and the browser, also when the test panics.
//!
//! ```ignore
//! let browser = Browser::start(&[]);
//! browser.goto("https://127.0.0.1:8443/");
//! browser.send_keys(&browser.find("#user"), &format!("alice{}", webdriver::ENTER));
//! browser.wait_until("the first gate", "return document.querySelector('main').dataset.step === 'gate'");
//! std::fs::write("page.png", browser.screenshot()).unwrap();
//! ```

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where Debian installs chromedriver and Chromium.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Chromium launcher.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The Enter key, for [`Browser::send_keys`].
pub const ENTER: &str = "\u{E007}";
/// The Tab key, for [`Browser::send_keys`].
pub const TAB: &str = "\u{E004}";

/// How long [`Browser::wait_until`] waits.
const WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium driven through chromedriver.
pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    agent: ureq::Agent,
    /// What chromedriver wrote (for failure messages).
    output: Arc<Mutex<String>>,
}

/// A reference to an element of the page (W3C "web element").
#[derive(Clone, Debug)]
pub struct Element {
    /// The W3C web element identifier key, as chromedriver sent it.
    key: String,
    id: String,
}

impl Element {
    /// The element as a script argument for [`Browser::execute`].
    pub fn arg(&self) -> Value {
        let mut reference = serde_json::Map::new();
        reference.insert(self.key.clone(), Value::String(self.id.clone()));
        Value::Object(reference)
    }
}

/// An error answer from chromedriver: W3C `error` code and message.
#[derive(Debug)]
pub struct DriverError {
    /// e.g. `no such element`.
    pub error: String,
    /// chromedriver's explanation.
    pub message: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a new headless
    /// Chromium session with `extra_args` added to Chromium's command line.
    /// Panics with what to install if chromedriver or Chromium is missing.
    pub fn start(extra_args: &[String]) -> Browser {
        for (path, what) in [(CHROMEDRIVER, "chromedriver"), (CHROMIUM, "Chromium")] {
            assert!(
                Path::new(path).exists(),
                "{what} is missing ({path}): install Debian's `chromium` and `chromium-driver` \
                 packages (`apt-get install -y chromium chromium-driver`; .ci/run does)"
            );
        }
        // Its own process group, so that Drop can stop it and every browser
        // process it started at once, whatever state they are in.
        let mut driver = Command::new(CHROMEDRIVER)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let mut err = driver.stderr.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // "ChromeDriver was started successfully on port 41505."
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let mut port = None;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            output.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                port = rest.trim_end_matches('.').trim().parse::<u16>().ok();
                break;
            }
        }
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut browser = Browser {
            driver,
            session: String::new(),
            agent,
            output,
        };
        let Some(port) = port else {
            panic!("chromedriver did not start:\n{}", browser.driver_output());
        };
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(), // the suite runs as root
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1024,900".to_owned(),
            "--lang=en-US".to_owned(),
            // No calls home: the only traffic is the page's.
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
        ];
        args.extend(extra_args.iter().cloned());
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let created = browser
            .call(
                "POST",
                &format!("http://127.0.0.1:{port}/session"),
                Some(capabilities),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start Chromium: {}: {}\n{}",
                    e.error,
                    e.message,
                    browser.driver_output()
                )
            });
        let id = created["sessionId"].as_str().unwrap().to_owned();
        browser.session = format!("http://127.0.0.1:{port}/session/{id}");
        browser
    }

    /// Everything chromedriver printed so far.
    pub fn driver_output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// One WebDriver command: `value` of the answer, or the error.
    fn call(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value, DriverError> {
        let req = ureq::http::Request::builder().method(method).uri(url);
        let result = match body {
            Some(b) => self.agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut resp = result.map_err(|e| DriverError {
            error: "transport".into(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let value = json.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 {
            return Err(DriverError {
                error: value["error"].as_str().unwrap_or("unknown").to_owned(),
                message: value["message"].as_str().unwrap_or(&text).to_owned(),
            });
        }
        Ok(value)
    }

    /// A command on the session (`path` after `/session/ID`); panics on error.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {}: {}", e.error, e.message))
    }

    /// A command on the session (`path` after `/session/ID`).
    pub fn try_cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DriverError> {
        let body = match (method, body) {
            ("POST", None) => Some(json!({})),
            (_, b) => b,
        };
        self.call(method, &format!("{}{path}", self.session), body)
    }

    /// Navigates to `url` and waits until the page has loaded.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The first element matching the CSS `selector`; panics if none.
    pub fn find(&self, selector: &str) -> Element {
        self.try_find(selector)
            .unwrap_or_else(|| panic!("no element matches {selector:?}"))
    }

    /// The first element matching the CSS `selector`, if any.
    pub fn try_find(&self, selector: &str) -> Option<Element> {
        let found = self.try_cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": selector })),
        );
        match found {
            Ok(v) => Some(element(&v)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {selector:?}: {}: {}", e.error, e.message),
        }
    }

    /// Every element matching the CSS `selector`, in document order.
    pub fn find_all(&self, selector: &str) -> Vec<Element> {
        let found = self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": selector })),
        );
        found.as_array().unwrap().iter().map(element).collect()
    }

    /// Types `text` into `el` (focusing it first); [`ENTER`] and [`TAB`]
    /// press those keys.
    pub fn send_keys(&self, el: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.id),
            Some(json!({ "text": text })),
        );
    }

    /// Empties an input.
    pub fn clear(&self, el: &Element) {
        self.cmd("POST", &format!("/element/{}/clear", el.id), None);
    }

    /// Clicks `el` (scrolled into view) like a person would.
    pub fn click(&self, el: &Element) {
        self.cmd("POST", &format!("/element/{}/click", el.id), None);
    }

    /// The rendered text of `el` (empty if it is hidden).
    pub fn text(&self, el: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", el.id), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// An attribute of `el`, as the HTML says it (`None` if absent).
    pub fn attribute(&self, el: &Element, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/element/{}/attribute/{name}", el.id), None)
            .as_str()
            .map(str::to_owned)
    }

    /// Whether `el` is displayed.
    pub fn is_displayed(&self, el: &Element) -> bool {
        self.cmd("GET", &format!("/element/{}/displayed", el.id), None)
            .as_bool()
            .unwrap_or(false)
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the
    /// page and returns what it returns.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns something truthy (up to 20 s) and
    /// returns it; panics naming `what` with the page's heading and notice.
    pub fn wait_until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.execute(script, vec![]);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.execute(
                    "return [document.title, document.getElementById('notice')?.innerText, \
                     document.querySelector('main')?.dataset.step]",
                    vec![],
                );
                panic!("timed out waiting for {what}; page (title, notice, step): {page}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        base64_decode(b64.as_str().unwrap())
    }

    /// The browser's console log since the last call (chromedriver's
    /// `goog:loggingPrefs` extension): entries with `level` and `message`.
    pub fn console_log(&self) -> Vec<Value> {
        let v = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })));
        v.as_array().cloned().unwrap_or_default()
    }

    /// A Chrome DevTools Protocol command (chromedriver's extension), e.g.
    /// `Page.addScriptToEvaluateOnNewDocument`.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Closes the browser; bounded by the agent's timeout.
            let _ = self.call("DELETE", &self.session.clone(), None);
        }
        // Then chromedriver, asked first so that it reaps the browser; then
        // anything still running in the process group chromedriver leads.
        if let Some(base) = self.session.split("/session/").next()
            && !base.is_empty()
        {
            let _ = self.call("GET", &format!("{base}/shutdown"), None);
            // Not reaped yet (a zombie keeps its id, so the group id below
            // still names only what chromedriver started).
            let stat = format!("/proc/{}/stat", self.driver.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && std::fs::read_to_string(&stat).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| !r.trim_start().starts_with('Z'))
                })
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn element(v: &Value) -> Element {
    // One key: the W3C web element identifier.
    let (key, id) = v
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("not an element reference: {v}"));
    Element {
        key: key.clone(),
        id: id.as_str().unwrap().to_owned(),
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (padded) of `bytes`.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding and whitespace ignored); panics on
/// other characters.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = BASE64
            .iter()
            .position(|x| *x == c)
            .unwrap_or_else(|| panic!("not base64: {:?}", c as char)) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{base64_decode, base64_encode};

    #[test]
    fn base64_round_trips() {
        for (raw, b64) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\x00\xfe", "/wD+"),
        ] {
            assert_eq!(base64_encode(raw), b64);
            assert_eq!(base64_decode(b64), raw);
        }
    }
}
