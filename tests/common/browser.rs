//! Debian's Chromium, driven headless by `tests/browser/driver.mjs` (playwright-core): each
//! named browser has one page and a fake microphone playing a tone. The driver answers one JSON
//! line per command; the test asserts on what the page shows and hears.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The longest a driver command may take (a page waiting for a state has its own 30 s limit).
const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

/// What a `<video>` element showed.
#[derive(Debug, Clone, Copy)]
pub struct Picture {
    pub frames: u64,
    /// Mean red, green, blue of the picture.
    pub rgb: [u8; 3],
}

impl Picture {
    /// Whether the picture is mostly `channel` (0 red, 1 green, 2 blue): that channel well above
    /// the other two.
    pub fn is_mostly(&self, channel: usize) -> bool {
        let main = self.rgb[channel] as i32;
        (0..3)
            .filter(|c| *c != channel)
            .all(|c| main > self.rgb[c] as i32 + 60)
    }
}

pub struct Browsers {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

/// Where the tests keep screenshots for people to look at.
pub fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts directory");
    dir
}

impl Browsers {
    pub fn start() -> Browsers {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let driver = root.join("tests/browser/driver.mjs");
        assert!(
            root.join("tests/browser/node_modules/playwright-core")
                .exists(),
            "playwright-core is not installed: run scripts/setup"
        );
        let mut child = Command::new("node")
            .arg(driver)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the browser driver (scripts/setup installs it)");
        let stdin = child.stdin.take().expect("driver stdin");
        let stdout = BufReader::new(child.stdout.take().expect("driver stdout")).lines();
        Browsers {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    /// Runs one command; the driver's error as `Err`.
    pub async fn try_op(&mut self, op: &str, mut args: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        args["id"] = json!(id);
        args["op"] = json!(op);
        let line = format!("{args}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("driver gone: {e}"))?;
        let reply = tokio::time::timeout(COMMAND_DEADLINE, async {
            loop {
                match self.stdout.next_line().await {
                    Ok(Some(line)) => {
                        let Ok(reply) = serde_json::from_str::<Value>(&line) else {
                            continue;
                        };
                        if reply["id"] == id {
                            return Ok(reply);
                        }
                    }
                    Ok(None) => return Err("the driver exited".to_string()),
                    Err(e) => return Err(format!("driver output: {e}")),
                }
            }
        })
        .await
        .map_err(|_| format!("{op} took longer than {COMMAND_DEADLINE:?}"))??;
        if reply["ok"] == true {
            Ok(reply["value"].clone())
        } else {
            Err(reply["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string())
        }
    }

    /// Runs one command that must succeed.
    pub async fn op(&mut self, op: &str, args: Value) -> Value {
        match self.try_op(op, args).await {
            Ok(value) => value,
            Err(e) => panic!("browser {op} failed: {e}"),
        }
    }

    /// A browser whose microphone plays `tone_hz`.
    pub async fn launch(&mut self, name: &str, tone_hz: f64) {
        self.op("launch", json!({"name": name, "toneHz": tone_hz}))
            .await;
    }

    /// A browser whose microphone plays `tone_hz` and whose camera shows `rgb`, one colour.
    pub async fn launch_with_camera(&mut self, name: &str, tone_hz: f64, rgb: [u8; 3]) {
        self.op(
            "launch",
            json!({"name": name, "toneHz": tone_hz, "camera": rgb}),
        )
        .await;
    }

    /// What the first `<video>` matching `selector` shows: frames decoded and the picture's mean
    /// colour, once it has decoded more than `frames` frames (within 30 s).
    pub async fn wait_for_picture(&mut self, name: &str, selector: &str, frames: u64) -> Picture {
        let mut last = Value::Null;
        for _ in 0..60 {
            last = self
                .op("picture", json!({"name": name, "selector": selector}))
                .await;
            let decoded = last["frames"].as_u64().unwrap_or(0);
            if let (true, Some(rgb)) = (decoded > frames, last["rgb"].as_array()) {
                let channel = |i: usize| rgb.get(i).and_then(Value::as_u64).unwrap_or(0) as u8;
                return Picture {
                    frames: decoded,
                    rgb: [channel(0), channel(1), channel(2)],
                };
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("{name}: {selector} decoded no more than {frames} frames in 30 s: {last}");
    }

    /// A browser with a phone-sized screen (390 x 844).
    pub async fn launch_phone_sized(&mut self, name: &str, tone_hz: f64) {
        self.op(
            "launch",
            json!({"name": name, "toneHz": tone_hz, "width": 390, "height": 844}),
        )
        .await;
    }

    /// A browser whose microphone permission is refused.
    pub async fn launch_without_microphone(&mut self, name: &str) {
        self.op("launch", json!({"name": name, "microphone": false}))
            .await;
    }

    /// Opens the gateway's page and signs in as test user `user`.
    pub async fn sign_in(&mut self, name: &str, base: &str, user: &str) {
        self.goto(name, &format!("{base}/")).await;
        self.fill(name, "#token", super::token_of(user)).await;
        self.click(name, "#sign-in-form button[type=submit]").await;
        self.wait_text(name, "#rooms-title", "Your rooms").await;
    }

    /// Opens the room from the rooms list and waits for its live state.
    pub async fn open_room(&mut self, name: &str, room_name: &str) {
        self.click(name, &format!("#room-list a:text-is(\"{room_name}\")"))
            .await;
        self.wait_text(name, "#live", "live").await;
    }

    /// Delivers `data` to the service worker of `origin` as a push message.
    pub async fn deliver_push(&mut self, name: &str, origin: &str, data: &str) {
        self.op(
            "deliverPush",
            json!({"name": name, "origin": origin, "data": data}),
        )
        .await;
    }

    /// Runs `js` (an expression, maybe a promise) in the page; its value.
    pub async fn evaluate(&mut self, name: &str, js: &str) -> Value {
        self.op("evaluate", json!({"name": name, "js": js})).await
    }

    pub async fn goto(&mut self, name: &str, url: &str) {
        self.op("goto", json!({"name": name, "url": url})).await;
    }

    pub async fn fill(&mut self, name: &str, selector: &str, value: &str) {
        self.op(
            "fill",
            json!({"name": name, "selector": selector, "value": value}),
        )
        .await;
    }

    pub async fn click(&mut self, name: &str, selector: &str) {
        self.op("click", json!({"name": name, "selector": selector}))
            .await;
    }

    /// Presses a key (`Enter`, `Tab`...) in the element.
    pub async fn press(&mut self, name: &str, selector: &str, key: &str) {
        self.op(
            "press",
            json!({"name": name, "selector": selector, "key": key}),
        )
        .await;
    }

    /// Waits until the element's text contains `text`; the text.
    pub async fn wait_text(&mut self, name: &str, selector: &str, text: &str) -> String {
        let value = self
            .op(
                "waitText",
                json!({"name": name, "selector": selector, "text": text}),
            )
            .await;
        value.as_str().unwrap_or_default().to_string()
    }

    pub async fn text(&mut self, name: &str, selector: &str) -> String {
        let value = self
            .op("text", json!({"name": name, "selector": selector}))
            .await;
        value.as_str().unwrap_or_default().to_string()
    }

    pub async fn visible(&mut self, name: &str, selector: &str) -> bool {
        self.op("visible", json!({"name": name, "selector": selector}))
            .await
            == true
    }

    /// Waits until the element is shown.
    pub async fn wait_visible(&mut self, name: &str, selector: &str) {
        self.op("waitVisible", json!({"name": name, "selector": selector}))
            .await;
    }

    /// The share of what the page's call audio holds at each frequency (0 to 1).
    pub async fn hears(&mut self, name: &str, hz: &[f64]) -> Vec<f64> {
        let value = self
            .op("frequencies", json!({"name": name, "hz": hz}))
            .await;
        hz.iter()
            .map(|f| value[format!("{f}")].as_f64().unwrap_or(0.0))
            .collect()
    }

    /// Waits until the page hears `hz` as most of its call audio.
    pub async fn wait_to_hear(&mut self, name: &str, hz: f64, other: f64) {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let shares = self.hears(name, &[hz, other]).await;
            if shares[0] > 0.5 {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "page {name} never heard {hz} Hz: share {:.3} (and {:.3} at {other} Hz); console: {}",
                shares[0],
                shares[1],
                self.op("console", json!({"name": name})).await
            );
        }
    }

    pub async fn screenshot(&mut self, name: &str, file: &str) -> PathBuf {
        let path = artifacts().join(file);
        self.op(
            "screenshot",
            json!({"name": name, "path": path.to_string_lossy()}),
        )
        .await;
        path
    }

    /// Every URL the page requested.
    pub async fn requests(&mut self, name: &str) -> Vec<String> {
        let value = self.op("requests", json!({"name": name})).await;
        value
            .as_array()
            .map(|urls| {
                urls.iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The page's console and errors, for failure messages.
    pub async fn console(&mut self, name: &str) -> String {
        self.op("console", json!({"name": name})).await.to_string()
    }

    /// Closes every browser and waits for the driver to exit; panics if a page threw.
    pub async fn close(mut self) {
        let problems = self.op("problems", json!({})).await;
        assert_eq!(problems, json!([]), "the pages had errors");
        let _ = self.stdin.shutdown().await;
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}
