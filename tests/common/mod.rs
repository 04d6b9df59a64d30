//! Test harness: runs the real `dialbridge serve` binary on loopback and talks to it over HTTP.
//! Every JSON response is checked against docs/openapi.json.

#![allow(dead_code)]

pub mod browser;
pub mod dns;
pub mod events;
pub mod kamailio;
pub mod pki;
pub mod ports;
pub mod proxy;
pub mod push;
pub mod sipp;
pub mod srtp;
pub mod telephony;
pub mod webrtc_client;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const TALK: &str = "/ocs/v2.php/apps/spreed/api/v4";

/// `[sip]` keys for a short T1 (loopback answers at once): transactions end 64*T1 after a
/// call, so the leak check at the end of a test needs seconds, not half a minute.
pub const FAST_TIMERS: &str = "t1 = \"100ms\"\n";

/// Users every test gateway declares: (id, display name, token).
pub const USERS: &[(&str, &str, &str)] = &[
    ("alice", "Alice", "alice-token-0001"),
    ("bob", "Bob", "bob-token-0002"),
    ("carol", "Carol", "carol-token-0003"),
];

/// The token of test user `user`.
pub fn token_of(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(id, _, _)| *id == user)
        .map(|(_, _, t)| *t)
        .unwrap_or_else(|| panic!("no test user {user}"))
}

/// The SIP listeners of a test gateway's first start: ports the system picks.
const SIP_LISTEN: &str = "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]";

pub struct Gateway {
    child: Option<Child>,
    pub base: String,
    /// The bound WebRTC media address (`webrtc=` on the ready line).
    pub webrtc: Option<std::net::SocketAddr>,
    /// The bound SIP listeners (`sip=udp:ADDR,tcp:ADDR` on the ready line).
    pub sip_udp: Option<std::net::SocketAddr>,
    pub sip_tcp: Option<std::net::SocketAddr>,
    pub sip_tls: Option<std::net::SocketAddr>,
    pub dir: tempfile::TempDir,
    config_path: PathBuf,
    open_files: Option<u64>,
}

/// What [`Gateway::launch`] starts: more keys of the `[http]`, `[sip]` and `[media]` tables, more
/// configuration after them, and an open-file limit for the process.
#[derive(Default)]
pub struct Setup<'a> {
    pub http: &'a str,
    pub sip: &'a str,
    pub media: &'a str,
    pub extra: &'a str,
    pub open_files: Option<u64>,
}

impl Gateway {
    /// Starts the binary with the test users and `extra` appended to the configuration.
    pub fn start(extra: &str) -> Gateway {
        Gateway::start_with_sip("", extra)
    }

    /// [`Gateway::start`] with more keys of the `[sip]` table (`sip`, e.g. "silent_reject = true\n").
    pub fn start_with_sip(sip: &str, extra: &str) -> Gateway {
        Gateway::start_with(sip, "", extra)
    }

    /// [`Gateway::start_with_sip`] with more keys of the `[media]` table too.
    pub fn start_with(sip: &str, media: &str, extra: &str) -> Gateway {
        Gateway::launch(Setup {
            sip,
            media,
            extra,
            ..Setup::default()
        })
    }

    /// Starts the binary as `setup` says.
    pub fn launch(setup: Setup<'_>) -> Gateway {
        let Setup {
            http,
            sip,
            media,
            extra,
            open_files,
        } = setup;
        let dir = tempfile::tempdir().expect("tempdir");
        // A window of RTP ports of its own: gateways of other test runs on the machine (the
        // default range) must not latch onto each other's phones' stray packets.
        let base = 30000 + u32::from(rand::random::<u8>() % 150) * 200;
        let media = format!("rtp_ports = \"{base}-{}\"\n{media}", base + 199);
        // `sip` may name its own listen addresses (e.g. a TLS one).
        let listen = if sip.contains("listen =") {
            ""
        } else {
            SIP_LISTEN
        };
        let mut config = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n{http}[sip]\n{listen}\n{sip}[media]\nwebrtc_listen = \"127.0.0.1:0\"\n{media}[store]\npath = \"{}\"\n",
            dir.path().join("store.sqlite").display()
        );
        for (id, name, token) in USERS {
            config.push_str(&format!(
                "[[users]]\nid = \"{id}\"\ndisplay_name = \"{name}\"\ntoken = \"{token}\"\n"
            ));
        }
        config.push_str(extra);
        let config_path = dir.path().join("dialbridge.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut gateway = Gateway {
            child: None,
            base: String::new(),
            webrtc: None,
            sip_udp: None,
            sip_tcp: None,
            sip_tls: None,
            dir,
            config_path,
            open_files,
        };
        gateway.spawn();
        gateway
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("log file");
        let mut command = match self.open_files {
            Some(limit) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_dialbridge"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_dialbridge")),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start dialbridge");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(fields) = line.strip_prefix("dialbridge ready ") {
                    let _ = tx.send(fields.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(fields) => {
                // `http=ADDR` comes first; other `name=value` fields follow.
                let field = |name: &str| {
                    fields
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                        .map(str::to_string)
                };
                let http = field("http").expect("ready line names the http address");
                self.base = format!("http://{http}");
                self.webrtc = field("webrtc").and_then(|a| a.parse().ok());
                let sip = field("sip").unwrap_or_default();
                let sip_addr = |prefix: &str| {
                    sip.split(',')
                        .find_map(|entry| entry.strip_prefix(prefix)?.parse().ok())
                };
                self.sip_udp = sip_addr("udp:");
                self.sip_tcp = sip_addr("tcp:");
                self.sip_tls = sip_addr("tls:");
            }
            Err(_) => {
                let _ = child.kill();
                panic!("dialbridge did not become ready:\n{}", self.log());
            }
        }
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Runs a command of the binary (`dialbridge ARGS --config ...`) on this gateway's
    /// configuration and store while it runs; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_dialbridge"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .expect("run dialbridge");
        assert!(
            output.status.success(),
            "dialbridge {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills the process without warning (as a crash would) and starts it again on the same
    /// store and SIP ports, as a supervisor restarts a service: peers of calls from before the
    /// crash still send to those ports, and answer requests from them.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let (Some(udp), Some(tcp)) = (self.sip_udp, self.sip_tcp) {
            let config = std::fs::read_to_string(&self.config_path).expect("config");
            let pinned = config.replacen(
                SIP_LISTEN,
                &format!("listen = [\"udp:{udp}\", \"tcp:{tcp}\"]"),
                1,
            );
            std::fs::write(&self.config_path, pinned).expect("write config");
        }
        self.spawn();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        false
    }

    pub fn client(&self, user: &str) -> Client {
        Client::new(&self.base, Some(format!("Bearer {}", token_of(user))))
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.base, None)
    }

    /// The `/metrics` page.
    pub async fn metrics(&self) -> String {
        self.anonymous()
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An API client with its own cookie jar, like one browser.
pub struct Client {
    pub http: reqwest::Client,
    base: String,
    auth: Option<String>,
}

/// A response: status and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.body["ocs"]["data"]
    }
    pub fn message(&self) -> &str {
        self.body["ocs"]["meta"]["message"].as_str().unwrap_or("")
    }
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
}

impl Client {
    pub fn new(base: &str, auth: Option<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .no_proxy()
                .build()
                .expect("client"),
            base: base.to_string(),
            auth,
        }
    }

    pub fn with_auth(&self, auth: &str) -> Client {
        Client::new(&self.base, Some(auth.to_string()))
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            builder = builder.header("Authorization", auth);
        }
        builder
    }

    /// Sends a request with an optional JSON body and checks the response against the OpenAPI file.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut builder = self.request(method.clone(), path);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.expect("request");
        self.finish(method, path, response).await
    }

    pub async fn finish(&self, method: Method, path: &str, response: reqwest::Response) -> Reply {
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        check_openapi(&method, path, status, &body);
        Reply { status, body }
    }

    pub async fn talk(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, &format!("{TALK}{path}"), body).await
    }

    // Shorthands for the steps most tests take.

    pub async fn create_room(&self, room_type: i64) -> String {
        let reply = self
            .talk(
                Method::POST,
                "/room",
                Some(json!({"roomType": room_type, "roomName": "Test room"})),
            )
            .await
            .expect(201);
        reply.data()["token"].as_str().expect("token").to_string()
    }

    pub async fn add_user(&self, token: &str, user: &str) -> i64 {
        let reply = self
            .talk(
                Method::POST,
                &format!("/room/{token}/participants"),
                Some(json!({"newParticipant": user, "source": "users"})),
            )
            .await
            .expect(200);
        reply.data()["attendeeId"].as_i64().expect("attendeeId")
    }

    pub async fn add_phone(&self, token: &str, number: &str) -> i64 {
        let reply = self
            .talk(
                Method::POST,
                &format!("/room/{token}/participants"),
                Some(json!({"newParticipant": number, "source": "phones"})),
            )
            .await
            .expect(200);
        reply.data()["attendeeId"].as_i64().expect("attendeeId")
    }

    pub async fn join_room(&self, token: &str) -> String {
        let reply = self
            .talk(
                Method::POST,
                &format!("/room/{token}/participants/active"),
                None,
            )
            .await
            .expect(200);
        reply.data()["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string()
    }

    /// Joins the room's media with an SDP `offer` (WHIP); the answer.
    pub async fn join_media(&self, token: &str, offer: &str) -> String {
        let response = self
            .request(Method::POST, &format!("/api/v1/rooms/{token}/media"))
            .header("Content-Type", "application/sdp")
            .body(offer.to_string())
            .send()
            .await
            .expect("media join");
        assert_eq!(response.status(), 201, "media join refused");
        response.text().await.expect("answer")
    }

    pub async fn join_call(&self, token: &str, flags: i64) {
        self.talk(
            Method::POST,
            &format!("/call/{token}"),
            Some(json!({"flags": flags})),
        )
        .await
        .expect(200);
    }
}

fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json"))
            .expect("openapi.json is JSON")
    })
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// Panics unless the path, method and status are documented and the JSON body matches the schema.
#[track_caller]
pub fn check_openapi(method: &Method, path: &str, status: StatusCode, body: &Value) {
    let doc = openapi();
    let path = path.split('?').next().unwrap_or(path);
    let Some((template, item)) = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .find(|(t, _)| template_matches(t, path))
    else {
        panic!("{method} {path}: path not in docs/openapi.json");
    };
    let operation = &item[method.as_str().to_ascii_lowercase()];
    let response = &operation["responses"][status.as_str()];
    assert!(
        response.is_object(),
        "{method} {template}: status {status} not documented in docs/openapi.json (body {body})"
    );
    if let Some(schema) = response["content"]["application/json"]["schema"].as_object() {
        let root = json!({"allOf": [schema], "components": doc["components"]});
        let validator = jsonschema::validator_for(&root).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: response does not match docs/openapi.json: {errors:?}\nbody: {body}"
        );
    }
}
