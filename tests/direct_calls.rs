//! Direct calls between users (seed 001) in Debian's Chromium against the real binary: the
//! callee's page rings, answers or declines, and both sides hear each other; an unanswered call
//! ends with "no answer" and a missed call; answering on one device stops the others; a plan
//! without one-to-one calls refuses with 403.

mod common;

use common::browser::Browsers;
use common::events::EventReader;
use common::ports::Tp;
use common::sipp::Sipp;
use common::telephony::{self, wait_for, PhoneMedia};
use common::Gateway;
use reqwest::Method;
use serde_json::json;

/// A page signed in as `user`, on its rooms list (and so listening for calls).
async fn signed_in(browsers: &mut Browsers, name: &str, gw: &Gateway, user: &str, tone: f64) {
    browsers.launch(name, tone).await;
    browsers.sign_in(name, &gw.base, user).await;
}

async fn call(browsers: &mut Browsers, name: &str, callee: &str) {
    browsers.fill(name, "#callee", callee).await;
    browsers.click(name, "#call-user button[type=submit]").await;
}

#[tokio::test]
async fn a_called_user_answers_and_both_hear_each_other() {
    let gw = Gateway::start("");
    let mut browsers = Browsers::start();
    signed_in(&mut browsers, "alice", &gw, "alice", 440.0).await;
    signed_in(&mut browsers, "bob", &gw, "bob", 1000.0).await;
    call(&mut browsers, "alice", "bob").await;
    browsers
        .wait_text("bob", "#incoming-title", "alice is calling")
        .await;
    browsers.wait_text("alice", "#call-banner", "ringing").await;
    browsers.screenshot("bob", "direct-call-ringing.png").await;
    browsers.click("bob", "#answer").await;
    browsers
        .wait_text("alice", "#call-banner", "connected")
        .await;
    browsers.wait_to_hear("alice", 1000.0, 440.0).await;
    browsers.wait_to_hear("bob", 440.0, 1000.0).await;
    browsers
        .screenshot("alice", "direct-call-connected.png")
        .await;

    browsers.click("alice", "#leave-call").await;
    browsers
        .wait_text("bob", "#call-banner", "ended: hung up")
        .await;
    browsers.close().await;
    let bob = gw
        .client("bob")
        .call(Method::GET, "/api/v1/direct-calls/logs", None)
        .await
        .expect(200)
        .body;
    let entry = &bob["callLogs"][0];
    assert_eq!(entry["callState"], "incoming");
    assert!(entry["startTime"].is_i64(), "{entry}");
    assert!(
        entry["endTime"].as_i64() >= entry["startTime"].as_i64(),
        "{entry}"
    );
}

#[tokio::test]
async fn a_video_call_shows_each_user_the_others_camera() {
    let gw = Gateway::start("");
    let mut browsers = Browsers::start();
    const RED: [u8; 3] = [220, 30, 30];
    const BLUE: [u8; 3] = [30, 30, 220];
    browsers.launch_with_camera("alice", 440.0, RED).await;
    browsers.sign_in("alice", &gw.base, "alice").await;
    browsers.launch_with_camera("bob", 1000.0, BLUE).await;
    browsers.sign_in("bob", &gw.base, "bob").await;

    browsers.fill("alice", "#callee", "bob").await;
    browsers.click("alice", "#video-call").await;
    browsers
        .wait_text("bob", "#incoming-title", "alice is calling (video)")
        .await;
    browsers.click("bob", "#answer").await;
    browsers
        .wait_text("alice", "#call-banner", "connected")
        .await;

    // Each remote tile decodes frames of the other's camera, through the gateway.
    let bob_sees = browsers
        .wait_for_picture("bob", "#remote-videos video", 30)
        .await;
    assert!(
        bob_sees.is_mostly(0),
        "bob should see alice's red camera: {bob_sees:?}"
    );
    let alice_sees = browsers
        .wait_for_picture("alice", "#remote-videos video", 30)
        .await;
    assert!(
        alice_sees.is_mostly(2),
        "alice should see bob's blue camera: {alice_sees:?}"
    );
    browsers
        .wait_text("alice", "#remote-videos figcaption", "bob")
        .await;
    // The audio goes on beside it.
    browsers.wait_to_hear("alice", 1000.0, 440.0).await;
    browsers.wait_to_hear("bob", 440.0, 1000.0).await;
    browsers.screenshot("alice", "direct-video-call.png").await;

    // Camera off: bob's picture of alice turns black.
    browsers.click("alice", "#camera").await;
    let mut dark = None;
    for _ in 0..40 {
        let seen = browsers
            .wait_for_picture("bob", "#remote-videos video", 0)
            .await;
        if seen.rgb.iter().all(|c| *c < 40) {
            dark = Some(seen);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(dark.is_some(), "alice's camera never went black for bob");

    browsers.click("alice", "#leave-call").await;
    browsers
        .wait_text("bob", "#call-banner", "ended: hung up")
        .await;
    assert!(!browsers.visible("bob", "#videos").await);
    browsers.close().await;
}

#[tokio::test]
async fn a_declined_and_an_unanswered_call_end_with_their_reason() {
    let gw = Gateway::start("[calls]\nring_time = 3\n");
    let mut browsers = Browsers::start();
    signed_in(&mut browsers, "alice", &gw, "alice", 440.0).await;
    signed_in(&mut browsers, "bob", &gw, "bob", 1000.0).await;

    call(&mut browsers, "alice", "bob").await;
    browsers
        .wait_text("bob", "#incoming-title", "alice is calling")
        .await;
    browsers.click("bob", "#decline").await;
    browsers
        .wait_text("alice", "#call-banner", "ended: declined")
        .await;
    assert!(!browsers.visible("bob", "#incoming").await);

    browsers
        .goto("alice", &format!("{}/#/rooms", gw.base))
        .await;
    browsers
        .wait_text("alice", "#rooms-title", "Your rooms")
        .await;
    call(&mut browsers, "alice", "bob").await;
    browsers
        .wait_text("bob", "#incoming-title", "alice is calling")
        .await;
    browsers
        .wait_text("alice", "#call-banner", "ended: no answer")
        .await;
    browsers
        .wait_text("bob", "#notice", "Missed call from alice")
        .await;
    assert!(!browsers.visible("bob", "#incoming").await);
    browsers.close().await;

    // Both calls are in both call logs, newest first.
    let log = |user: &'static str| {
        let client = gw.client(user);
        async move {
            client
                .call(Method::GET, "/api/v1/direct-calls/logs?page=1", None)
                .await
                .expect(200)
                .body
        }
    };
    let bob = log("bob").await;
    assert_eq!(bob["totalPages"], 1);
    let entries = bob["callLogs"].as_array().expect("callLogs");
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["callState"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(seen, [("missed", "no answer"), ("missed", "declined")]);
    assert_eq!(entries[0]["fromUser"], "alice");
    assert_eq!(entries[0]["callMode"], "onetoone");
    let alice = log("alice").await;
    let states: Vec<&str> = alice["callLogs"]
        .as_array()
        .expect("callLogs")
        .iter()
        .map(|e| e["callState"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, ["outgoing", "outgoing"]);
    gw.client("bob")
        .call(Method::GET, "/api/v1/direct-calls/logs?page=0", None)
        .await
        .expect(400);
}

/// The user stream ends when its token stops working, like a room's.
#[tokio::test]
async fn a_users_stream_ends_when_the_user_is_removed() {
    let gw = Gateway::start("");
    let mut events = EventReader::open_user(&gw.client("bob")).await;
    gw.cli(&["user", "remove", "bob"]);
    let seen = events.rest().await;
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn answering_on_one_device_stops_the_others() {
    let gw = Gateway::start("");
    let mut browsers = Browsers::start();
    signed_in(&mut browsers, "alice", &gw, "alice", 440.0).await;
    signed_in(&mut browsers, "bob-phone", &gw, "bob", 1000.0).await;
    signed_in(&mut browsers, "bob-laptop", &gw, "bob", 1000.0).await;
    call(&mut browsers, "alice", "bob").await;
    browsers
        .wait_text("bob-phone", "#incoming-title", "alice is calling")
        .await;
    browsers
        .wait_text("bob-laptop", "#incoming-title", "alice is calling")
        .await;
    browsers.click("bob-laptop", "#answer").await;
    browsers
        .wait_text("bob-phone", "#notice", "answered on another device")
        .await;
    assert!(!browsers.visible("bob-phone", "#incoming").await);
    browsers
        .wait_text("alice", "#call-banner", "connected")
        .await;
    browsers.wait_to_hear("alice", 1000.0, 440.0).await;
    browsers.close().await;
}

#[tokio::test]
async fn a_plan_without_one_to_one_calls_refuses_and_nothing_rings() {
    let gw = Gateway::start("[calls]\none_to_one = false\n");
    let alice = gw.client("alice");
    let reply = alice
        .call(
            Method::POST,
            "/api/v1/direct-calls",
            Some(json!({"to": ["bob"], "callType": "audio"})),
        )
        .await
        .expect(403);
    assert_eq!(reply.body["statusCode"], 403);
    assert!(reply.body["message"]
        .as_str()
        .is_some_and(|m| m.contains("one-to-one")));
    // Bob was never added to a call room.
    let rooms = gw
        .client("bob")
        .talk(Method::GET, "/room", None)
        .await
        .expect(200);
    assert_eq!(rooms.data().as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn bad_callees_are_refused_by_name() {
    let gw = Gateway::start("");
    let alice = gw.client("alice");
    for (body, status, word) in [
        (json!({"to": ["nobody"]}), 404, "nobody"),
        (json!({"to": ["alice"]}), 400, "themselves"),
        (json!({"to": []}), 400, "at least one"),
        (json!({"to": "bob"}), 400, "invalid"),
    ] {
        let reply = alice
            .call(Method::POST, "/api/v1/direct-calls", Some(body.clone()))
            .await
            .expect(status);
        assert!(
            reply.body["message"]
                .as_str()
                .is_some_and(|m| m.contains(word)),
            "{body}: {}",
            reply.body
        );
    }
    let answer = alice
        .call(
            Method::POST,
            "/api/v1/direct-calls",
            Some(json!({"to": ["bob@127.0.0.1"]})),
        )
        .await
        .expect(200);
    let room = answer.body["roomId"].as_str().expect("roomId").to_string();
    let view = gw
        .client("bob")
        .call(Method::GET, &format!("/api/v1/direct-calls/{room}"), None)
        .await
        .expect(200);
    assert_eq!(view.body["from"], "alice");
    assert_eq!(view.body["toUsers"], json!(["bob"]));
    gw.client("carol")
        .call(Method::GET, &format!("/api/v1/direct-calls/{room}"), None)
        .await
        .expect(404);
    gw.client("carol")
        .call(
            Method::POST,
            &format!("/api/v1/direct-calls/{room}/answer"),
            None,
        )
        .await
        .expect(404);
}

/// A phone number is a callee too: it is dialled through the trunk once the caller is in the
/// call, and audio flows both ways; a busy phone ends the call as busy; a number outside the
/// allowlist is refused before anything is sent.
#[tokio::test]
async fn a_phone_number_is_called_like_a_user() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = Sipp::uas(
        "dialout_ring_then_answer_media.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
    )
    .await;
    let gw = Gateway::start(&telephony::trunk(sipp.port, Tp::Udp, ""));
    let mut browsers = Browsers::start();
    signed_in(&mut browsers, "alice", &gw, "alice", 440.0).await;
    call(&mut browsers, "alice", "+4930123456").await;
    browsers
        .wait_text("alice", "#call-banner", "+4930123456: ringing")
        .await;
    browsers
        .wait_text("alice", "#call-banner", "+4930123456: connected")
        .await;
    browsers.wait_to_hear("alice", 1000.0, 440.0).await;
    wait_for(
        "the phone hearing the page's 440 Hz",
        || phone_media.hears(440.0) > 0.5,
        || phone_media.describe(),
    )
    .await;
    browsers.click("alice", "#leave-call").await;
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp (the phone, expecting our BYE) failed:\n{trace}");
    browsers.close().await;

    let alice = gw.client("alice");
    let refused = alice
        .call(
            Method::POST,
            "/api/v1/direct-calls",
            Some(json!({"to": ["tel:+12025550123"]})),
        )
        .await
        .expect(403);
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("allowed_numbers")),
        "{}",
        refused.body
    );
}

#[tokio::test]
async fn a_busy_phone_ends_the_call_as_busy() {
    let sipp = Sipp::uas("uas_busy.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&telephony::trunk(sipp.port, Tp::Udp, ""));
    let mut browsers = Browsers::start();
    signed_in(&mut browsers, "alice", &gw, "alice", 440.0).await;
    call(&mut browsers, "alice", "+4930123456").await;
    browsers
        .wait_text("alice", "#call-banner", "ended: busy")
        .await;
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp (busy) failed:\n{trace}");
    browsers.close().await;
}

#[tokio::test]
async fn a_member_invites_another_user_into_the_call() {
    let gw = Gateway::start("");
    let mut alice_events = EventReader::open_user(&gw.client("alice")).await;
    let mut bob_events = EventReader::open_user(&gw.client("bob")).await;
    let mut carol_events = EventReader::open_user(&gw.client("carol")).await;
    let (alice, bob, carol) = (gw.client("alice"), gw.client("bob"), gw.client("carol"));
    let made = alice
        .call(
            Method::POST,
            "/api/v1/direct-calls",
            Some(json!({"to": ["bob"], "callType": "audio"})),
        )
        .await
        .expect(200);
    let room = made.body["roomId"].as_str().expect("roomId").to_string();
    let incoming = bob_events.next_of("incoming-call").await;
    assert_eq!(incoming["callMode"], "onetoone");
    let invite = |body: serde_json::Value| (format!("/api/v1/direct-calls/{room}/invite"), body);

    // Carol is not in the call: she cannot invite anyone into it.
    let (path, body) = invite(json!({"to": ["bob"]}));
    carol
        .call(Method::POST, &path, Some(body))
        .await
        .expect(404);
    // Bob rings, not yet in it either.
    let (path, body) = invite(json!({"to": ["carol"]}));
    bob.call(Method::POST, &path, Some(body)).await.expect(404);

    bob.call(
        Method::POST,
        &format!("/api/v1/direct-calls/{room}/answer"),
        None,
    )
    .await
    .expect(200);
    let (path, body) = invite(json!({"to": ["carol"]}));
    let reply = bob.call(Method::POST, &path, Some(body)).await.expect(200);
    assert_eq!(reply.body["statusCode"], 200);

    // Carol's devices ring for the same room, now a call of several.
    let incoming = carol_events.next_of("incoming-call").await;
    assert_eq!(incoming["roomId"], room.as_str());
    assert_eq!(incoming["callMode"], "onetomany");
    assert_eq!(incoming["userJid"], "alice");
    let all: Vec<&str> = incoming["allUsers"]
        .as_array()
        .expect("allUsers")
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    assert_eq!(all, ["alice", "bob", "carol"]);
    // The members see her ringing.
    loop {
        let status = alice_events.next_of("call-status").await;
        if status["userJid"] == "carol" {
            assert_eq!(status["status"], "ringing");
            break;
        }
    }
    let view = alice
        .call(Method::GET, &format!("/api/v1/direct-calls/{room}"), None)
        .await
        .expect(200);
    assert_eq!(view.body["callMode"], "onetomany");

    // Everyone named is in it already; a user that does not exist; no one named.
    for (body, status) in [
        (json!({"to": ["carol", "bob"]}), 409),
        (json!({"to": ["nobody"]}), 404),
        (json!({"to": []}), 400),
        (json!({"to": ["alice"]}), 400),
    ] {
        let (path, body) = invite(body);
        let reply = alice
            .call(Method::POST, &path, Some(body))
            .await
            .expect(status);
        assert_eq!(reply.body["statusCode"], status);
    }
    // She declines and is invited again: she rings again.
    carol
        .call(
            Method::POST,
            &format!("/api/v1/direct-calls/{room}/decline"),
            None,
        )
        .await
        .expect(200);
    let (path, body) = invite(json!({"to": ["carol"]}));
    alice
        .call(Method::POST, &path, Some(body))
        .await
        .expect(200);
    let again = carol_events.next_of("incoming-call").await;
    assert_eq!(again["roomId"], room.as_str());
    let (path, body) = invite(json!({"to": ["carol"]}));
    alice
        .call(
            Method::POST,
            &path.replace(&room, "no-such-call"),
            Some(body),
        )
        .await
        .expect(404);
}
