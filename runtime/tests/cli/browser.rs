//! Headless chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`,
//! as Puppeteer does), so a test waits for the page's own state instead of a fixed time budget.
//!
//! `--dump-dom` and `--screenshot` act at the page's load event, and a page with an MJPEG
//! `<img>` fires it at the first video part: whether the first server-sent result had been shown
//! by then was a race, and under load the label was sometimes still "waiting for frames…".

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use base64::Engine as _;
use serde_json::{Value, json};

pub struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    session: String,
    /// Events read while waiting for a reply, for [`Browser::wait_event`].
    events: Vec<Value>,
}

impl Browser {
    /// Starts chromium with its profile under `dir` and opens one 1280×800 tab on about:blank.
    pub fn launch(dir: &Path) -> Browser {
        // The protocol pipe is fds 3 (commands in) and 4 (replies out); the shell maps them onto
        // our stdin and stdout pipes, so no unsafe fd juggling is needed here.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec chromium "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg("chromium")
            .args([
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium runs (apt-get install chromium)");
        let to = child.stdin.take().expect("stdin");
        let from = BufReader::new(child.stdout.take().expect("stdout"));
        let mut browser = Browser {
            child,
            to,
            from,
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_string();
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    /// Writes one command to the browser itself (`session` None) or to the tab; returns its id.
    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> std::io::Result<u64> {
        self.next_id += 1;
        let mut msg = json!({ "id": self.next_id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(std::io::Error::other)?;
        bytes.push(0);
        self.to.write_all(&bytes)?;
        self.to.flush()?;
        Ok(self.next_id)
    }

    /// One command and its reply; events read meanwhile are kept for [`Browser::wait_event`].
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.send(session, method, params).expect("write to chromium");
        loop {
            let reply = self.read(method);
            if reply["id"].as_u64() != Some(id) {
                if reply.get("method").is_some() {
                    self.events.push(reply);
                }
                continue;
            }
            assert!(reply.get("error").is_none(), "{method} failed: {reply}");
            return reply["result"].clone();
        }
    }

    fn read(&mut self, during: &str) -> Value {
        let mut buf = Vec::new();
        let n = self.from.read_until(0, &mut buf).expect("read from chromium");
        assert!(n > 0, "chromium closed the pipe during {during}");
        buf.pop_if(|b| *b == 0);
        serde_json::from_slice(&buf).expect("a JSON message")
    }

    /// Waits for the tab's event `method` (one already read counts).
    fn wait_event(&mut self, method: &str) {
        let session = self.session.clone();
        let ours = |e: &Value| e["method"] == method && e["sessionId"] == session.as_str();
        if let Some(i) = self.events.iter().position(ours) {
            self.events.remove(i);
            return;
        }
        while !ours(&self.read(method)) {}
    }

    /// A command to the tab.
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Opens `url` and returns once its document is parsed and its scripts have run.
    pub fn navigate(&mut self, url: &str) {
        self.page("Page.enable", json!({}));
        self.page("Page.navigate", json!({ "url": url }));
        self.wait_event("Page.domContentEventFired");
    }

    /// Evaluates `expression` in the page, awaiting it if it is a promise; a rejection fails the
    /// test with its message.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "in the page: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let r = self.page("Page.captureScreenshot", json!({ "format": "png" }));
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("data"))
            .expect("base64")
    }
}

/// Closed the way the protocol asks, so no renderer process outlives the test.
impl Drop for Browser {
    fn drop(&mut self) {
        if self.send(None, "Browser.close", json!({})).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
