//! WebRTC participants against the real binary: the join endpoint, and audio through the room
//! mixer checked by content (each client sends its own tone and must hear the others', not its
//! own). Conditions are awaited with generous deadlines; nothing asserts on timing.

mod common;

use common::webrtc_client;
// Only this test links the WebRTC client, so the other test binaries stay small.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{check_openapi, Client, Gateway};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use webrtc_client::{Offer, WebRtcClient};

const DEADLINE: Duration = Duration::from_secs(20);

struct Joined {
    status: StatusCode,
    location: Option<String>,
    content_type: Option<String>,
    /// `X-Dialbridge-Video`.
    video: Option<String>,
    body: String,
    json: Value,
}

async fn post_offer(client: &Client, token: &str, content_type: &str, offer: &str) -> Joined {
    let path = format!("/api/v1/rooms/{token}/media");
    let response = client
        .request(Method::POST, &path)
        .header("Content-Type", content_type)
        .body(offer.to_string())
        .send()
        .await
        .expect("request");
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (location, content_type) = (header("location"), header("content-type"));
    let video = header("x-dialbridge-video");
    let body = response.text().await.expect("body");
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    check_openapi(&Method::POST, &path, status, &json);
    Joined {
        status,
        location,
        content_type,
        video,
        body,
        json,
    }
}

/// Joins the room's media with `offer`; returns the answer and the path of the media session.
async fn join(client: &Client, gw: &Gateway, token: &str, offer: &str) -> (String, String) {
    let joined = post_offer(client, token, "application/sdp", offer).await;
    assert_eq!(joined.status, 201, "join refused: {}", joined.body);
    assert_eq!(joined.content_type.as_deref(), Some("application/sdp"));
    let location = joined.location.expect("Location header");
    let path = location
        .strip_prefix(&gw.base)
        .unwrap_or_else(|| panic!("Location {location} is not under {}", gw.base))
        .to_string();
    assert!(
        path.starts_with(&format!("/api/v1/rooms/{token}/media/")),
        "{path}"
    );
    (joined.body, path)
}

/// A client that joined the room and its call, and a WebRTC client sending `tone` in it.
async fn participant(
    gw: &Gateway,
    user: &str,
    token: &str,
    tone: f64,
) -> (Client, WebRtcClient, String) {
    let api = gw.client(user);
    api.join_room(token).await;
    api.join_call(token, 3).await;
    let offer = Offer::new(false);
    let (answer, path) = join(&api, gw, token, &offer.sdp).await;
    (api, offer.start(&answer, tone), path)
}

/// Waits until `condition` holds, failing with `describe()` after the deadline.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let end = Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < end,
            "{what} did not happen within {DEADLINE:?}: {}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn levels(name: &str, c: &WebRtcClient) -> String {
    format!(
        "{name}: 440 Hz {:.3}, 1000 Hz {:.3}, frames {}, connected {}, failure {:?}",
        c.hears(440.0),
        c.hears(1000.0),
        c.frames(),
        c.connected(),
        c.failure()
    )
}

/// Collects the `data:` JSON of a room's event stream in the background.
async fn collect_events(client: &Client, token: &str) -> Arc<Mutex<Vec<Value>>> {
    let response = client
        .request(Method::GET, &format!("/api/v1/rooms/{token}/events"))
        .send()
        .await
        .expect("event stream");
    assert_eq!(response.status(), 200);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    tokio::spawn(async move {
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                for data in frame.lines().filter_map(|l| l.strip_prefix("data:")) {
                    if let Ok(event) = serde_json::from_str::<Value>(data.trim_start()) {
                        sink.lock().expect("lock").push(event);
                    }
                }
            }
        }
    });
    events
}

fn dtmf_digits(events: &Mutex<Vec<Value>>) -> Vec<(String, String)> {
    events
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e["type"] == "dtmf")
        .map(|e| {
            (
                e["actorId"].as_str().unwrap_or("").to_string(),
                e["digit"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn room_with(gw: &Gateway, users: &[&str]) -> String {
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    for user in users {
        alice.add_user(&token, user).await;
    }
    token
}

#[tokio::test]
async fn participants_hear_each_other_not_themselves_and_leavers_go_quiet() {
    let mut gw = Gateway::start("");
    assert!(gw.webrtc.is_some(), "ready line names the WebRTC address");
    let token = room_with(&gw, &["bob", "carol"]).await;
    let (_alice, a, a_media) = participant(&gw, "alice", &token, 440.0).await;
    let (bob, b, _) = participant(&gw, "bob", &token, 1000.0).await;
    let describe = || format!("{}; {}", levels("A", &a), levels("B", &b));

    wait_for(
        "A hearing B's 1000 Hz and B hearing A's 440 Hz",
        || {
            a.hears(1000.0) > 0.3
                && a.hears(440.0) < 0.05
                && b.hears(440.0) > 0.3
                && b.hears(1000.0) < 0.05
        },
        describe,
    )
    .await;
    // Each peer's media comes on a socket of its leg's own (the kernel demultiplexes them).
    wait_gauge(
        &gw,
        "dialbridge_webrtc_peer_sockets",
        2,
        "both legs on sockets of their own",
    )
    .await;

    // Key presses arrive as room events, once per press.
    let events = collect_events(&gw.client("carol"), &token).await;
    a.press(7);
    let pressed = |digits: &[(&str, &str)]| {
        let digits: Vec<(String, String)> = digits
            .iter()
            .map(|(a, d)| (a.to_string(), d.to_string()))
            .collect();
        move |events: &Mutex<Vec<Value>>| dtmf_digits(events) == digits
    };
    let seven = pressed(&[("alice", "7")]);
    wait_for(
        "A's key press as a room event",
        || seven(&events),
        || format!("{:?}", dtmf_digits(&events)),
    )
    .await;
    b.press(11);
    let both = pressed(&[("alice", "7"), ("bob", "#")]);
    wait_for(
        "B's key press after A's, each once",
        || both(&events),
        || format!("{:?}", dtmf_digits(&events)),
    )
    .await;

    // A third participant, silent, hears both.
    let (_carol, c, _) = participant(&gw, "carol", &token, 0.0).await;
    wait_for(
        "C hearing both tones",
        || c.hears(440.0) > 0.2 && c.hears(1000.0) > 0.2,
        || levels("C", &c),
    )
    .await;

    // A ends its media: its tone leaves the others' mix.
    gw.client("alice")
        .call(Method::DELETE, &a_media, None)
        .await
        .expect(200);
    wait_for(
        "A's tone gone from B and C",
        || b.hears(440.0) < 0.05 && c.hears(440.0) < 0.05 && c.hears(1000.0) > 0.3,
        || format!("{}; {}", levels("B", &b), levels("C", &c)),
    )
    .await;
    gw.client("alice")
        .call(Method::DELETE, &a_media, None)
        .await
        .expect(404);

    // B leaves the call: its media ends with it.
    bob.talk(Method::DELETE, &format!("/call/{token}"), None)
        .await
        .expect(200);
    wait_for(
        "B's tone gone from C",
        || c.hears(1000.0) < 0.05 && c.hears(440.0) < 0.05,
        || levels("C", &c),
    )
    .await;
    assert_eq!(a.failure(), None);
    assert_eq!(b.failure(), None);
    assert_eq!(c.failure(), None);
    // SIGTERM with C's media up: the engine closes it and the process exits cleanly.
    assert!(gw.terminate(), "clean exit:\n{}", gw.log());
    assert!(gw.log().contains("\"shutdown\""), "{}", gw.log());
}

#[tokio::test]
async fn join_endpoint_checks_the_caller_the_call_and_the_offer() {
    let gw = Gateway::start("");
    let token = room_with(&gw, &["bob"]).await;
    let alice = gw.client("alice");
    let offer = Offer::new(true).sdp;

    let refused = post_offer(&gw.anonymous(), &token, "application/sdp", &offer).await;
    assert_eq!(refused.status, 401);
    let refused = post_offer(&alice, "nosuchroom", "application/sdp", &offer).await;
    assert_eq!(refused.status, 404);
    // Carol is not an attendee of the room.
    let refused = post_offer(&gw.client("carol"), &token, "application/sdp", &offer).await;
    assert_eq!(refused.status, 404);
    // Alice has no session in the room yet.
    let refused = post_offer(&alice, &token, "application/sdp", &offer).await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.json["ocs"]["data"]["error"], "session");
    alice.join_room(&token).await;
    let refused = post_offer(&alice, &token, "application/sdp", &offer).await;
    assert_eq!(refused.status, 403, "not in the call: {}", refused.body);
    alice.join_call(&token, 3).await;
    let refused = post_offer(&alice, &token, "application/json", &offer).await;
    assert_eq!(refused.status, 415);
    let refused = post_offer(&alice, &token, "application/sdp", "v=0\r\nthis is not SDP").await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.json["ocs"]["meta"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        refused.json
    );
    let refused = post_offer(&alice, &token, "application/sdp", "").await;
    assert_eq!(refused.status, 400);

    // An offer with video: audio and VP8 video are answered.
    let (answer, first) = join(&alice, &gw, &token, &offer).await;
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(answer.contains("opus/48000/2"), "{answer}");
    assert!(answer.contains("telephone-event/48000"), "{answer}");
    assert!(answer.contains("VP8/90000"), "{answer}");
    assert!(!answer.contains("m=video 0 "), "{answer}");
    let port = gw.webrtc.expect("webrtc address").port();
    assert!(
        answer.contains(&format!("127.0.0.1 {port} typ host")),
        "{answer}"
    );

    // A second offer replaces the first media session.
    let (_, second) = join(&alice, &gw, &token, &Offer::new(false).sdp).await;
    assert_ne!(first, second);
    alice.call(Method::DELETE, &first, None).await.expect(404);
    // Only the owner may end it.
    let bob = gw.client("bob");
    bob.join_room(&token).await;
    bob.call(Method::DELETE, &second, None).await.expect(404);
    alice.call(Method::DELETE, &second, None).await.expect(200);
    alice
        .call(
            Method::DELETE,
            &format!("/api/v1/rooms/{token}/media/not-an-id"),
            None,
        )
        .await
        .expect(404);
}

#[tokio::test]
async fn cameras_beyond_the_cap_join_audio_only_and_a_freed_place_is_taken_again() {
    let gw = Gateway::start_with("", "max_video_senders = 1\n", "");
    let token = room_with(&gw, &["bob"]).await;
    let video_join = |user: &'static str| {
        let api = gw.client(user);
        let token = token.clone();
        async move {
            api.join_room(&token).await;
            api.join_call(&token, 7).await;
            let joined = post_offer(&api, &token, "application/sdp", &Offer::new(true).sdp).await;
            assert_eq!(joined.status, 201, "{}", joined.body);
            (api, joined)
        }
    };
    let (alice, first) = video_join("alice").await;
    assert_eq!(first.video.as_deref(), Some("sending"));
    assert!(first.body.contains("VP8/90000"), "{}", first.body);

    let (bob, refused) = video_join("bob").await;
    let why = refused.video.unwrap_or_default();
    assert!(
        why.starts_with("refused: ") && why.contains("maximum of 1 camera"),
        "{why}"
    );
    // Audio-only: the video m-line is rejected, the audio answered.
    assert!(refused.body.contains("m=video 0 "), "{}", refused.body);
    assert!(refused.body.contains("opus/48000/2"), "{}", refused.body);

    // Alice's media ends: her place is free, and bob's next offer takes it.
    let alice_media = first
        .location
        .and_then(|l| l.strip_prefix(&gw.base).map(str::to_string))
        .expect("Location");
    alice
        .call(Method::DELETE, &alice_media, None)
        .await
        .expect(200);
    let again = post_offer(&bob, &token, "application/sdp", &Offer::new(true).sdp).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.video.as_deref(), Some("sending"));
    // An audio-only offer says so.
    let audio = post_offer(&alice, &token, "application/sdp", &Offer::new(false).sdp).await;
    assert_eq!(audio.video.as_deref(), Some("none"));
}

/// The value of an unlabelled gauge in the gateway's metrics.
async fn gauge(gw: &Gateway, name: &str) -> Option<u64> {
    let text = gw.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

async fn wait_gauge(gw: &Gateway, name: &str, expected: u64, what: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        let now = gauge(gw, name).await;
        if now == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < end,
            "{what}: expected {name} {expected}, metrics say {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_legs(gw: &Gateway, expected: u64, what: &str) {
    wait_gauge(gw, "dialbridge_webrtc_legs", expected, what).await;
}

#[tokio::test]
async fn leaving_the_room_removal_and_ending_the_call_end_media() {
    let gw = Gateway::start("");
    let token = room_with(&gw, &["bob", "carol"]).await;
    let mut ids = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let api = gw.client(user);
        api.join_room(&token).await;
        api.join_call(&token, 3).await;
        let (_, path) = join(&api, &gw, &token, &Offer::new(false).sdp).await;
        ids.push((api, path));
    }
    wait_legs(&gw, 3, "three joined").await;

    // Bob leaves the room (and with it the call).
    ids[1]
        .0
        .talk(
            Method::DELETE,
            &format!("/room/{token}/participants/active"),
            None,
        )
        .await
        .expect(200);
    wait_legs(&gw, 2, "bob left the room").await;

    // Carol is removed by the moderator.
    let carol_id = ids[0]
        .0
        .talk(Method::GET, &format!("/room/{token}/participants"), None)
        .await
        .expect(200)
        .data()
        .as_array()
        .and_then(|a| a.iter().find(|p| p["actorId"] == "carol"))
        .and_then(|p| p["attendeeId"].as_i64())
        .expect("carol's attendee id");
    ids[0]
        .0
        .talk(
            Method::DELETE,
            &format!("/room/{token}/attendees"),
            Some(json!({"attendeeId": carol_id})),
        )
        .await
        .expect(200);
    wait_legs(&gw, 1, "carol removed").await;

    // The moderator ends the call for everyone.
    ids[0]
        .0
        .talk(
            Method::DELETE,
            &format!("/call/{token}"),
            Some(json!({"all": true})),
        )
        .await
        .expect(200);
    wait_legs(&gw, 0, "call ended for all").await;
}

/// Values of a labelled gauge family in the metrics, by label value.
async fn gauges(gw: &Gateway, name: &str, label: &str) -> Vec<(String, u64)> {
    let text = gw.metrics().await;
    let prefix = format!("{name}{{{label}=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (value, count) = rest.split_once("\"} ")?;
            Some((value.to_string(), count.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

#[tokio::test]
async fn rooms_are_spread_over_media_threads_and_all_of_them_carry_audio() {
    let gw = Gateway::start_with("", "threads = 2\n", "");
    // Two rooms of two (each on the direct path) and one of three (mixed).
    let mut rooms = Vec::new();
    for (users, tones) in [
        (&["alice", "bob"][..], &[440.0, 1000.0][..]),
        (&["alice", "bob"][..], &[440.0, 1000.0][..]),
        (&["alice", "bob", "carol"][..], &[440.0, 1000.0, 0.0][..]),
    ] {
        let token = room_with(&gw, &users[1..]).await;
        let mut clients = Vec::new();
        for (user, tone) in users.iter().zip(tones) {
            let (api, client, _) = participant(&gw, user, &token, *tone).await;
            clients.push((api, client));
        }
        rooms.push(clients);
    }
    let describe = || {
        rooms
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let c: Vec<String> = r
                    .iter()
                    .map(|(_, c)| levels(&format!("room {i}"), c))
                    .collect();
                c.join("; ")
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    wait_for(
        "every participant hearing the others' tones, not their own",
        || {
            rooms.iter().all(|r| {
                let (a, b) = (&r[0].1, &r[1].1);
                let pair = a.hears(1000.0) > 0.3
                    && a.hears(440.0) < 0.05
                    && b.hears(440.0) > 0.3
                    && b.hears(1000.0) < 0.05;
                pair && r
                    .get(2)
                    .is_none_or(|(_, c)| c.hears(440.0) > 0.2 && c.hears(1000.0) > 0.2)
            })
        },
        describe,
    )
    .await;
    let shards = gauges(&gw, "dialbridge_media_shard_legs", "shard").await;
    assert_eq!(shards.len(), 2, "{shards:?}");
    assert!(shards.iter().all(|(_, legs)| *legs >= 2), "{shards:?}");
    assert_eq!(shards.iter().map(|(_, l)| l).sum::<u64>(), 7, "{shards:?}");
    assert_eq!(gauge(&gw, "dialbridge_webrtc_legs").await, Some(7));
}
