//! Recording a call link against the real binary: two guests join with WebRTC clients sending
//! their own tones, the call is recorded, and the Ogg Opus file it lists decodes to audio in
//! which both tones are found. Conditions are awaited with generous deadlines.

mod common;

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::telephony::EventReader;
use common::webrtc_client::{Offer, WebRtcClient};
use common::{Client, Gateway};
use dialbridge_bridge::opus_codec::OpusDecoder;
use dialbridge_bridge::testing::tone_ratio_blocks;
use ogg::reading::PacketReader;
use reqwest::Method;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

fn setup(dir: &std::path::Path, hook: &str) -> String {
    format!(
        r#"
[recording]
path = "{}"
[[organizations]]
name = "acme"
[[projects]]
name = "rec"
organization = "acme"
tokens = ["rec-token-00001"]
enable_recording = true
webhook_url = "{hook}"
webhook_secret = "whsec-recording"
"#,
        dir.display()
    )
}

/// A webhook receiver on loopback that keeps every body it gets.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let sink = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| async move {
            if let Ok(event) = serde_json::from_str(&body) {
                sink.lock().expect("lock").push(event);
            }
            axum::http::StatusCode::OK
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen)
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let end = Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < end,
            "{what} did not happen: {}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A guest of the link in its room (not yet in the call): its client and the room.
async fn guest(gw: &Gateway, call: &str, name: &str) -> (Client, String) {
    let pass = gw
        .anonymous()
        .call(
            Method::POST,
            &format!("/api/calls/{call}/guests"),
            Some(json!({ "name": name })),
        )
        .await
        .expect(201)
        .body;
    let client = gw.anonymous().with_auth(&format!(
        "Bearer {}",
        pass["token"].as_str().expect("token")
    ));
    let room = pass["roomToken"].as_str().expect("room").to_string();
    client.join_room(&room).await;
    (client, room)
}

/// The guest joins the call with a WebRTC client sending `tone`.
async fn talk(client: &Client, room: &str, tone: f64) -> WebRtcClient {
    client.join_call(room, 3).await;
    let offer = Offer::new(false);
    let answer = client.join_media(room, &offer.sdp).await;
    offer.start(&answer, tone)
}

/// The PCM of an Ogg Opus file.
fn decode(bytes: Vec<u8>) -> Vec<i16> {
    let mut reader = PacketReader::new(Cursor::new(bytes));
    let head = reader.read_packet_expected().expect("OpusHead");
    assert!(head.data.starts_with(b"OpusHead"), "not Ogg Opus");
    assert_eq!(head.data[9], 1, "one channel");
    let tags = reader.read_packet_expected().expect("OpusTags");
    assert!(tags.data.starts_with(b"OpusTags"));
    let mut decoder = OpusDecoder::new(48_000, 20).expect("decoder");
    let mut out = vec![0i16; 960 * 6];
    let mut pcm = Vec::new();
    while let Some(packet) = reader.read_packet().expect("an Ogg packet") {
        let n = decoder
            .decode(&packet.data, &mut out)
            .expect("an Opus packet");
        pcm.extend_from_slice(&out[..n]);
    }
    pcm
}

#[tokio::test]
async fn a_recorded_call_decodes_to_both_participants_tones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hook, hooks) = receiver().await;
    let gw = Gateway::start(&setup(dir.path(), &hook));
    let project = gw.anonymous().with_auth("Bearer rec-token-00001");
    let call = project
        .call(Method::POST, "/api/calls", Some(json!({})))
        .await
        .expect(201)
        .body;
    assert_eq!(call["recording"], true, "the project records by default");
    let id = call["id"].as_str().expect("id").to_string();

    let (ana, room) = guest(&gw, &id, "Ana").await;
    let mut events = EventReader::open(&ana, &room).await;
    let a = talk(&ana, &room, 440.0).await;
    let (bea, _) = guest(&gw, &id, "Bea").await;
    let b = talk(&bea, &room, 1000.0).await;
    let notice = events
        .until("recording", |e| e["type"] == "recording")
        .await;
    assert_eq!(notice["active"], true);
    wait_for(
        "both guests hearing each other",
        || a.hears(1000.0) > 0.3 && b.hears(440.0) > 0.3,
        || format!("a {:.2}, b {:.2}", a.hears(1000.0), b.hears(440.0)),
    )
    .await;
    // Let a stretch of both talking be recorded.
    tokio::time::sleep(Duration::from_secs(2)).await;
    project
        .call(Method::POST, &format!("/api/calls/{id}/end"), None)
        .await
        .expect(200);

    let path = format!("/api/calls/{id}/recordings");
    let end = Instant::now() + DEADLINE;
    let listed: Value = loop {
        let reply = project.call(Method::GET, &path, None).await.expect(200);
        if reply.body["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break reply.body;
        }
        assert!(Instant::now() < end, "no recording listed: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recording = &listed["data"][0];
    assert!(
        recording["durationSeconds"].as_i64().unwrap_or(0) >= 2,
        "{recording}"
    );
    let rid = recording["id"].as_str().expect("recording id");
    let response = project
        .request(Method::GET, &format!("{path}/{rid}"))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("audio/ogg")
    );
    let bytes = response.bytes().await.expect("body").to_vec();
    assert_eq!(recording["size"].as_u64(), Some(bytes.len() as u64));
    let pcm = decode(bytes);
    let (ana_tone, bea_tone) = (
        tone_ratio_blocks(&pcm, 440.0, 48_000, 960),
        tone_ratio_blocks(&pcm, 1000.0, 48_000, 960),
    );
    assert!(
        ana_tone > 0.15 && bea_tone > 0.15,
        "440 Hz {ana_tone:.3}, 1000 Hz {bea_tone:.3} in {} samples",
        pcm.len()
    );
    project
        .call(Method::GET, &format!("{path}/rec_nosuchrecording"), None)
        .await
        .expect(404);
    // The project heard that the file is ready.
    let ready = |events: &[Value]| {
        events
            .iter()
            .find(|e| e["event"] == "recording.ready")
            .cloned()
    };
    wait_for(
        "recording.ready",
        || ready(&hooks.lock().expect("lock")).is_some(),
        || format!("{:?}", hooks.lock().expect("lock")),
    )
    .await;
    let event = ready(&hooks.lock().expect("lock")).unwrap_or_default();
    assert_eq!(event["call"]["id"], id.as_str());
    assert_eq!(event["data"]["id"], rid);
}
