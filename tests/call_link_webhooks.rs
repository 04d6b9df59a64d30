//! Webhooks of call links against the real binary and a receiver on loopback: every delivery is
//! signed with the project's secret, each event arrives as listed, a 500 is retried, and events
//! queued while the receiver fails survive a crash of the gateway.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::Gateway;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "whsec-test-secret";
const TOKEN: &str = "Bearer hooks-token-0001";

/// What the receiver saw: every attempt (event id, answered status), and the accepted events.
#[derive(Default)]
struct Seen {
    attempts: Vec<(String, u16)>,
    accepted: Vec<Value>,
    bad_signatures: Vec<String>,
    /// Answer 500 to the first attempt of each event.
    fail_first: bool,
    /// Answer 500 to everything.
    fail_all: bool,
}

type Shared = Arc<Mutex<Seen>>;

fn verify(headers: &HeaderMap, body: &str) -> Result<(), String> {
    let header = headers
        .get("x-dialbridge-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or("no signature header")?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => return Err(format!("unexpected part in {header}")),
        }
    }
    let (t, v1) = (t.ok_or("no t")?, v1.ok_or("no v1")?);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if expected != v1 {
        return Err(format!("signature {v1} is not {expected}"));
    }
    Ok(())
}

async fn receive(
    axum::extract::State(seen): axum::extract::State<Shared>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let mut seen = seen.lock().expect("lock");
    if let Err(e) = verify(&headers, &body) {
        seen.bad_signatures.push(e);
        return StatusCode::BAD_REQUEST;
    }
    let event: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let id = event["id"].as_str().unwrap_or("").to_string();
    let first = !seen.attempts.iter().any(|(seen_id, _)| *seen_id == id);
    let status = if seen.fail_all || (seen.fail_first && first) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    seen.attempts.push((id, status.as_u16()));
    if status == StatusCode::OK {
        seen.accepted.push(event);
    }
    status
}

async fn receiver() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

fn setup(url: &str) -> String {
    format!(
        r#"
[links]
check_interval = "100ms"
webhook_retry = "100ms"
webhook_max_retry = "400ms"
[[organizations]]
name = "acme"
price_per_minute = "0.10"
[[projects]]
name = "hooks"
organization = "acme"
tokens = ["hooks-token-0001"]
webhook_url = "{url}"
webhook_secret = "{SECRET}"
"#
    )
}

/// Waits until `pred` holds on what the receiver saw.
async fn until(seen: &Shared, what: &str, pred: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        {
            let s = seen.lock().expect("lock");
            if pred(&s) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never saw {what}: accepted {:?}, attempts {:?}",
                s.accepted
                    .iter()
                    .map(|e| e["event"].clone())
                    .collect::<Vec<_>>(),
                s.attempts
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The accepted events of one call, by name.
fn events_of(seen: &Seen, call: &str) -> Vec<String> {
    let mut names: Vec<String> = seen
        .accepted
        .iter()
        .filter(|e| e["call"]["id"] == call)
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn every_event_arrives_signed_and_retried_after_a_500() {
    let (url, seen) = receiver().await;
    seen.lock().expect("lock").fail_first = true;
    let gw = Gateway::start(&setup(&url));
    let project = gw.anonymous().with_auth(TOKEN);
    let call = project
        .call(Method::POST, "/api/calls", Some(json!({"title": "Hooks"})))
        .await
        .expect(201)
        .body;
    let id = call["id"].as_str().expect("id").to_string();
    let pass = gw
        .anonymous()
        .call(
            Method::POST,
            &format!("/api/calls/{id}/guests"),
            Some(json!({"name": "Ana"})),
        )
        .await
        .expect(201)
        .body;
    let ana = gw.anonymous().with_auth(&format!(
        "Bearer {}",
        pass["token"].as_str().expect("token")
    ));
    let room = pass["roomToken"].as_str().expect("room");
    ana.join_room(room).await;
    ana.join_call(room, 3).await;
    project
        .call(Method::POST, &format!("/api/calls/{id}/end"), None)
        .await
        .expect(200);
    // A link nobody used expires.
    let soon = dialbridge::links::when::iso(dialbridge::links::when::now_ms() + 1000);
    let unused = project
        .call(Method::POST, "/api/calls", Some(json!({"expiresAt": soon})))
        .await
        .expect(201)
        .body;
    let unused = unused["id"].as_str().expect("id").to_string();

    let expected = sorted(&[
        "call.created",
        "call.started",
        "participant.joined",
        "participant.left",
        "call.ended",
    ]);
    until(&seen, "every event of the call", |s| {
        events_of(s, &id) == expected
            && events_of(s, &unused) == sorted(&["call.created", "call.expired"])
    })
    .await;
    let s = seen.lock().expect("lock");
    assert!(s.bad_signatures.is_empty(), "{:?}", s.bad_signatures);
    // Each event was refused once with 500 and delivered again, under the same id.
    for event in &s.accepted {
        let id = event["id"].as_str().expect("event id");
        let tries: Vec<u16> = s
            .attempts
            .iter()
            .filter(|(seen_id, _)| seen_id == id)
            .map(|(_, status)| *status)
            .collect();
        assert_eq!(tries, vec![500, 200], "{event}");
        assert!(id.starts_with("evt_"));
        assert!(event["timestamp"].is_string());
        assert!(!event.to_string().contains(SECRET));
    }
    let mut ids: Vec<&str> = s.accepted.iter().filter_map(|e| e["id"].as_str()).collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "event ids are unique");
    let joined = s
        .accepted
        .iter()
        .find(|e| e["event"] == "participant.joined")
        .expect("joined");
    assert_eq!(joined["data"]["username"], "Ana");
    let ended = s
        .accepted
        .iter()
        .find(|e| e["event"] == "call.ended")
        .expect("ended");
    assert_eq!(ended["call"]["status"], "ended");
    assert_eq!(ended["data"]["reason"], "ended");
    let created: HashMap<&str, &Value> = s
        .accepted
        .iter()
        .filter(|e| e["event"] == "call.created")
        .map(|e| (e["call"]["id"].as_str().unwrap_or(""), &e["call"]))
        .collect();
    assert_eq!(created[id.as_str()]["title"], "Hooks");
    assert_eq!(created[id.as_str()]["status"], "created");
}

#[tokio::test]
async fn events_queued_while_the_receiver_fails_survive_a_gateway_crash() {
    let (url, seen) = receiver().await;
    seen.lock().expect("lock").fail_all = true;
    let mut gw = Gateway::start(&setup(&url));
    let project = gw.anonymous().with_auth(TOKEN);
    let call = project
        .call(Method::POST, "/api/calls", Some(json!({})))
        .await
        .expect(201)
        .body;
    let id = call["id"].as_str().expect("id").to_string();
    until(&seen, "a refused attempt", |s| !s.attempts.is_empty()).await;
    let first_id = seen.lock().expect("lock").attempts[0].0.clone();
    gw.crash_and_restart();
    seen.lock().expect("lock").fail_all = false;
    until(&seen, "the event after the restart", |s| {
        events_of(s, &id) == sorted(&["call.created"])
    })
    .await;
    let s = seen.lock().expect("lock");
    assert_eq!(
        s.accepted[0]["id"],
        first_id.as_str(),
        "the same event, not a new one"
    );
    assert!(s.bad_signatures.is_empty(), "{:?}", s.bad_signatures);
}
