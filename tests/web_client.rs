//! The web client in Debian's Chromium against the real binary on loopback: a person signs in,
//! opens a room, joins the call and talks (checked by the tone each page hears), dials a phone
//! through a SIPp trunk (the phone's RTP socket hears the page, the page hears the phone, key
//! presses reach the phone), hangs up, and sees each failure as a clear message.

mod common;

use common::browser::Browsers;
use common::ports::Tp;
use common::proxy::Relay;
use common::sipp::Sipp;
use common::telephony::{self, wait_for, EventReader, PhoneMedia};
use common::webrtc_client;
use common::{token_of, Gateway};
use reqwest::Method;
use serde_json::Value;

const PHONE: &str = "+4930123456";

async fn named_room(gw: &Gateway, name: &str) -> String {
    let alice = gw.client("alice");
    let reply = alice
        .talk(
            Method::POST,
            "/room",
            Some(serde_json::json!({"roomType": 2, "roomName": name})),
        )
        .await
        .expect(201);
    reply.data()["token"].as_str().expect("token").to_string()
}

/// The web client and its SDK are the gateway's own files: the page loads nothing else.
#[tokio::test]
async fn the_page_and_the_sdk_are_served_by_the_gateway() {
    let gw = Gateway::start("");
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{}/", gw.base))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let etag = page.headers()["etag"].clone();
    assert!(page.text().await.expect("html").contains("/app.js"));
    let again = client
        .get(format!("{}/", gw.base))
        .header("If-None-Match", etag)
        .send()
        .await
        .expect("page again");
    assert_eq!(again.status(), 304);
    let sdk = client
        .get(format!("{}/sdk/dialbridge.js", gw.base))
        .send()
        .await
        .expect("sdk");
    assert_eq!(sdk.status(), 200);
    assert_eq!(
        sdk.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(sdk
        .text()
        .await
        .expect("sdk text")
        .contains("export class Dialbridge"));
    for path in ["/app.js", "/style.css", "/icon.svg", "/sdk/dialbridge.d.ts"] {
        let r = client
            .get(format!("{}{path}", gw.base))
            .send()
            .await
            .expect("asset");
        assert_eq!(r.status(), 200, "{path}");
    }
}

/// Two people in a room's call from their browsers hear each other, and a wrong token is a
/// clear message.
#[tokio::test]
async fn two_people_in_a_rooms_call_hear_each_other() {
    let gw = Gateway::start("");
    let token = named_room(&gw, "Team").await;
    gw.client("alice").add_user(&token, "bob").await;
    let mut browsers = Browsers::start();
    browsers.launch("alice", 440.0).await;
    browsers.launch("bob", 1000.0).await;

    browsers.goto("alice", &format!("{}/", gw.base)).await;
    browsers.fill("alice", "#token", "not-a-token").await;
    browsers
        .click("alice", "#sign-in-form button[type=submit]")
        .await;
    browsers
        .wait_text("alice", "#error-text", "token was not accepted")
        .await;

    browsers.sign_in("alice", &gw.base, "alice").await;
    // Bob signs in with the keyboard alone.
    browsers.goto("bob", &format!("{}/", gw.base)).await;
    browsers.fill("bob", "#token", token_of("bob")).await;
    browsers.press("bob", "#token", "Enter").await;
    browsers
        .wait_text("bob", "#rooms-title", "Your rooms")
        .await;
    browsers.open_room("alice", "Team").await;
    browsers.open_room("bob", "Team").await;
    browsers.click("alice", "#join-call").await;
    browsers.wait_text("alice", "#people", "in the call").await;
    browsers.click("bob", "#join-call").await;
    browsers.wait_visible("bob", "#leave-call").await;

    browsers.wait_to_hear("alice", 1000.0, 440.0).await;
    browsers.wait_to_hear("bob", 440.0, 1000.0).await;

    // Leaving ends the page's audio and its place in the call.
    browsers.click("bob", "#leave-call").await;
    browsers.wait_visible("bob", "#join-call").await;
    let sessions = gw
        .client("alice")
        .talk(Method::GET, &format!("/call/{token}"), None)
        .await
        .expect(200);
    let in_call: Vec<&Value> = sessions.data().as_array().expect("list").iter().collect();
    assert_eq!(in_call.len(), 1, "{in_call:?}");
    assert_eq!(in_call[0]["actorId"], "alice");

    for name in ["alice", "bob"] {
        let foreign: Vec<String> = browsers
            .requests(name)
            .await
            .into_iter()
            .filter(|u| !u.starts_with(&gw.base))
            .collect();
        assert!(foreign.is_empty(), "{name}'s page loaded {foreign:?}");
    }
    browsers.close().await;
}

/// A moderator calls a phone from the page: ringing, connected, audio both ways, key presses to
/// the phone and into the call, hang-up, cleared. Then the page loses its event stream while
/// the phone's call ends, and shows the truth when it is back.
#[tokio::test]
async fn a_moderator_talks_to_a_phone_from_the_page() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = Sipp::uas(
        "dialout_ring_then_answer_media.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
    )
    .await;
    let gw = Gateway::start(&telephony::trunk(sipp.port, Tp::Udp, ""));
    let token = named_room(&gw, "Phones").await;
    let alice = gw.client("alice");
    let mut events = EventReader::open(&alice, &token).await;
    let mut browsers = Browsers::start();
    browsers.launch("alice", 440.0).await;
    browsers.sign_in("alice", &gw.base, "alice").await;
    browsers.open_room("alice", "Phones").await;
    browsers.click("alice", "#join-call").await;
    browsers.wait_text("alice", "#people", "in the call").await;

    browsers
        .fill("alice", "#dial-number", "+49 30 123456")
        .await;
    browsers.click("alice", "#dial button[type=submit]").await;
    browsers.wait_text("alice", "#phones", "ringing").await;
    browsers.wait_text("alice", "#phones", "connected").await;
    browsers.wait_to_hear("alice", 1000.0, 440.0).await;
    wait_for(
        "the phone hearing the page's 440 Hz",
        || phone_media.hears(440.0) > 0.5,
        || {
            format!(
                "phone hears 440 Hz {:.3}, 1000 Hz {:.3} ({})",
                phone_media.hears(440.0),
                phone_media.hears(1000.0),
                phone_media.describe()
            )
        },
    )
    .await;
    let shot = browsers
        .screenshot("alice", "room-in-call-with-phone.png")
        .await;
    assert!(shot.exists());

    // Keys to the phone (RFC 4733 from the gateway), then keys into the call from the page.
    browsers
        .click(
            "alice",
            &format!("button[aria-label=\"Keypad to {PHONE}\"]"),
        )
        .await;
    browsers
        .click("alice", "button[aria-label=\"Key 5\"]")
        .await;
    browsers
        .click("alice", "button[aria-label=\"Key #\"]")
        .await;
    wait_for(
        "the phone receiving 5 and #",
        || *phone_media.dtmf.lock().expect("lock") == vec![5, 11],
        || format!("{:?}", phone_media.dtmf.lock().expect("lock")),
    )
    .await;
    // Muting the phone silences it in the page's call.
    browsers
        .click("alice", &format!("button[aria-label=\"Mute {PHONE}\"]"))
        .await;
    browsers
        .wait_visible("alice", &format!("button[aria-label=\"Unmute {PHONE}\"]"))
        .await;
    let mut heard = 1.0;
    for _ in 0..20 {
        heard = browsers.hears("alice", &[1000.0]).await[0];
        if heard < 0.1 {
            break;
        }
    }
    assert!(heard < 0.1, "the muted phone is still heard: {heard:.3}");
    browsers
        .click("alice", &format!("button[aria-label=\"Hang up {PHONE}\"]"))
        .await;
    browsers
        .wait_text("alice", "#phones", "cleared: call ended")
        .await;
    browsers
        .click("alice", "button[aria-label=\"Key 7\"]")
        .await;
    let key = events
        .until("dtmf", |e| e["type"] == "dtmf" && e["actorType"] == "users")
        .await;
    assert_eq!(key["digit"], "7");
    assert_eq!(key["actorId"], "alice");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");

    browsers.close().await;
}

/// The page loses its connection to the gateway while the phone's call is hung up: it says it is
/// reconnecting, and once back it shows the call cleared with its cause, not connected.
#[tokio::test]
async fn a_page_back_from_a_lost_stream_shows_no_stale_phone_state() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
    )
    .await;
    let gw = Gateway::start(&telephony::trunk(sipp.port, Tp::Udp, ""));
    let token = named_room(&gw, "Phones").await;
    let alice = gw.client("alice");
    let phone = alice.add_phone(&token, PHONE).await;
    let mut events = EventReader::open(&alice, &token).await;
    // The page reaches the gateway through a relay the test can cut.
    let relay = Relay::start(&gw.base).await;
    let mut browsers = Browsers::start();
    browsers.launch("alice", 440.0).await;
    browsers.sign_in("alice", &relay.base, "alice").await;
    browsers.open_room("alice", "Phones").await;
    browsers.click("alice", "#join-call").await;
    browsers.wait_text("alice", "#people", "in the call").await;
    browsers
        .click("alice", &format!("button[aria-label=\"Call {PHONE}\"]"))
        .await;
    let connected = events.reach("connected").await;
    assert_eq!(connected["attendeeId"], phone);
    browsers.wait_text("alice", "#phones", "connected").await;

    relay.cut(true);
    browsers.wait_text("alice", "#live", "reconnecting").await;
    let call_id = connected["callid"].as_str().expect("callid");
    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/hangup"),
            None,
        )
        .await
        .expect(200);
    events.reach("cleared").await;
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    assert!(
        browsers
            .text("alice", "#phones")
            .await
            .contains("connected"),
        "offline, the page cannot know yet"
    );
    relay.cut(false);
    browsers.wait_text("alice", "#live", "live").await;
    let shown = browsers
        .wait_text("alice", "#phones", "cleared: call ended")
        .await;
    assert!(!shown.contains("connected"), "{shown}");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    browsers.close().await;
}

/// Each failure a person meets shows as a clear message and leaves the page usable: a busy
/// phone, a trunk at its call limit (503), a number outside the allowlist (403).
#[tokio::test]
async fn busy_phones_full_trunks_and_refused_numbers_are_shown_in_words() {
    let ringing = Sipp::uas("uas_ring_cancel.xml", Tp::Udp, &[]).await;
    let busy = Sipp::uas("uas_busy.xml", Tp::Udp, &[]).await;
    let busy_trunk = format!(
        "[[trunks]]\nname = \"busy\"\naddress = \"127.0.0.1:{}\"\ntransport = \"udp\"\ncaller_id = \"+4940111222\"\nallowed_numbers = [\"\\\\+4940[0-9]+\"]\n",
        busy.port
    );
    let gw = Gateway::start(&format!(
        "{}{busy_trunk}",
        telephony::trunk(ringing.port, Tp::Udp, "max_concurrent_calls = 1\n")
    ));
    named_room(&gw, "Phones").await;
    let mut browsers = Browsers::start();
    // On a phone-sized screen.
    browsers.launch_phone_sized("alice", 440.0).await;
    browsers.sign_in("alice", &gw.base, "alice").await;
    browsers.open_room("alice", "Phones").await;
    browsers.click("alice", "#join-call").await;
    browsers.wait_text("alice", "#people", "in the call").await;

    browsers.fill("alice", "#dial-number", "+4940555666").await;
    browsers.click("alice", "#dial button[type=submit]").await;
    browsers
        .wait_text("alice", "#phones", "rejected: busy")
        .await;
    let (ok, trace) = busy.finish().await;
    assert!(ok, "SIPp (busy) failed:\n{trace}");

    browsers.fill("alice", "#dial-number", PHONE).await;
    browsers.click("alice", "#dial button[type=submit]").await;
    browsers.wait_text("alice", "#phones", "ringing").await;
    browsers.fill("alice", "#dial-number", "+4930999888").await;
    browsers.click("alice", "#dial button[type=submit]").await;
    browsers
        .wait_text("alice", "#error-text", "phone line is busy right now")
        .await;
    browsers
        .click("alice", &format!("button[aria-label=\"Hang up {PHONE}\"]"))
        .await;
    browsers
        .wait_text("alice", "#phones", "rejected: call ended")
        .await;
    let (ok, trace) = ringing.finish().await;
    assert!(ok, "SIPp (ringing, then our CANCEL) failed:\n{trace}");

    browsers.fill("alice", "#dial-number", "+12025550123").await;
    browsers.click("alice", "#dial button[type=submit]").await;
    let shown = browsers
        .wait_text("alice", "#error-text", "may not be called from here")
        .await;
    assert!(shown.contains("allowed_numbers"), "{shown}");
    browsers
        .screenshot("alice", "room-number-refused-phone-size.png")
        .await;
    let overflow = browsers
        .evaluate(
            "alice",
            "document.documentElement.scrollWidth - window.innerWidth",
        )
        .await;
    assert_eq!(overflow, 0, "the page is wider than a phone's screen");
    // The page still works: the refused number is listed, not called.
    browsers.wait_text("alice", "#phones", "+12025550123").await;
    let state = browsers
        .text(
            "alice",
            "#phones li:has-text(\"+12025550123\") [data-testid=phone-state]",
        )
        .await;
    assert_eq!(state, "not called");
    browsers.close().await;
}

/// No trunk (501) and a refused microphone: each a clear message, and nothing half-joined.
#[tokio::test]
async fn no_trunk_and_a_refused_microphone_are_shown_in_words() {
    let gw = Gateway::start("");
    let token = named_room(&gw, "Quiet").await;
    let mut browsers = Browsers::start();
    browsers.launch_without_microphone("alice").await;
    browsers.sign_in("alice", &gw.base, "alice").await;
    browsers.open_room("alice", "Quiet").await;
    browsers.click("alice", "#join-call").await;
    browsers
        .wait_text("alice", "#error-text", "microphone is blocked")
        .await;
    assert!(browsers.visible("alice", "#join-call").await);
    assert!(!browsers.visible("alice", "#leave-call").await);
    let sessions = gw
        .client("alice")
        .talk(Method::GET, &format!("/call/{token}"), None)
        .await
        .expect(200);
    assert_eq!(
        sessions.data().as_array().map(Vec::len),
        Some(0),
        "the failed join left a session in the call: {:?}",
        sessions.data()
    );

    // With a microphone, in the call, dialling meets the missing trunk.
    browsers.launch("alice-again", 440.0).await;
    browsers.sign_in("alice-again", &gw.base, "alice").await;
    browsers.open_room("alice-again", "Quiet").await;
    browsers.click("alice-again", "#join-call").await;
    browsers.wait_visible("alice-again", "#leave-call").await;
    browsers.fill("alice-again", "#dial-number", PHONE).await;
    browsers
        .click("alice-again", "#dial button[type=submit]")
        .await;
    browsers
        .wait_text("alice-again", "#error-text", "No phone line is set up")
        .await;
    browsers.close().await;
}

/// The level meter of whoever is named on the page, in a room that mixes (three speakers): each
/// moves with that speaker alone, and drops when that speaker mutes.
#[tokio::test]
async fn each_speakers_meter_moves_with_that_speaker() {
    let gw = Gateway::start("");
    let token = named_room(&gw, "Three").await;
    let alice = gw.client("alice");
    alice.add_user(&token, "bob").await;
    alice.add_user(&token, "carol").await;
    let mut browsers = Browsers::start();
    browsers.launch("alice", 440.0).await;
    browsers.launch("bob", 1000.0).await;
    browsers.sign_in("alice", &gw.base, "alice").await;
    browsers.sign_in("bob", &gw.base, "bob").await;
    browsers.open_room("alice", "Three").await;
    browsers.open_room("bob", "Three").await;
    browsers.click("alice", "#join-call").await;
    browsers.wait_visible("alice", "#leave-call").await;
    browsers.click("bob", "#join-call").await;
    browsers.wait_visible("bob", "#leave-call").await;
    // Carol talks from a WebRTC client of the tests.
    let carol = gw.client("carol");
    carol.join_room(&token).await;
    carol.join_call(&token, 3).await;
    let offer = webrtc_client::Offer::new(false);
    let answer = carol.join_media(&token, &offer.sdp).await;
    let _carol_media = offer.start(&answer, 660.0);

    let (bob, carol) = meters_until(&mut browsers, |bob, carol| bob > 0.05 && carol > 0.05).await;
    assert!(
        bob > 0.05 && carol > 0.05,
        "alice's page shows Bob at {bob:.3} and Carol at {carol:.3}"
    );
    browsers
        .screenshot("alice", "room-three-speakers.png")
        .await;

    browsers.click("bob", "#mute").await;
    let (bob, carol) = meters_until(&mut browsers, |bob, carol| bob < 0.01 && carol > 0.05).await;
    assert!(
        bob < 0.01 && carol > 0.05,
        "after Bob muted, alice's page shows Bob at {bob:.3} and Carol at {carol:.3}"
    );
    browsers.close().await;
}

/// The meters beside Bob and Carol on alice's page, read until `done` holds (at most 30 s).
async fn meters_until(browsers: &mut Browsers, done: impl Fn(f64, f64) -> bool) -> (f64, f64) {
    let meter = |name: &str| {
        format!(
            "[...document.querySelectorAll('#people li')].find(li => li.textContent.includes('{name}'))?.querySelector('meter')?.value ?? -1"
        )
    };
    let mut levels = (-1.0, -1.0);
    for _ in 0..300 {
        let mut read = Vec::new();
        for name in ["Bob", "Carol"] {
            let value = browsers.evaluate("alice", &meter(name)).await;
            read.push(value.as_f64().unwrap_or(-1.0));
        }
        levels = (read[0], read[1]);
        if done(levels.0, levels.1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    levels
}

/// A call link's URL opened in Chromium: a guest types a name, joins, and is heard by a second
/// guest; a deleted link's page refuses to join with a clear message.
#[tokio::test]
async fn a_guest_opens_a_call_link_and_is_heard() {
    let recordings = tempfile::tempdir().expect("recordings directory");
    let gw = Gateway::start(&format!(
        "[recording]\npath = \"{}\"\n[[organizations]]\nname = \"acme\"\nprice_per_minute = \"0.10\"\n[[projects]]\nname = \"support\"\norganization = \"acme\"\ntokens = [\"support-token-0001\"]\n",
        recordings.path().display()
    ));
    let project = gw.anonymous().with_auth("Bearer support-token-0001");
    let link = project
        .call(
            Method::POST,
            "/api/calls",
            Some(serde_json::json!({"title": "Support", "recording": true})),
        )
        .await
        .expect(201)
        .body;
    let url = link["url"].as_str().expect("url").to_string();
    assert!(url.starts_with(&gw.base), "{url}");
    let mut browsers = Browsers::start();
    browsers.launch("dora", 440.0).await;
    browsers.launch("emil", 1000.0).await;
    for (name, shown) in [("dora", "Dora"), ("emil", "Emil")] {
        browsers.goto(name, &url).await;
        browsers
            .wait_text(name, "#guest-title", "Join the call")
            .await;
        browsers.fill(name, "#guest-name", shown).await;
        browsers.press(name, "#guest-name", "Enter").await;
        browsers.wait_visible(name, "#leave-call").await;
    }
    browsers.wait_text("dora", "#people", "Emil").await;
    browsers
        .wait_text("dora", "#notice", "This call is being recorded")
        .await;
    browsers.wait_to_hear("dora", 1000.0, 440.0).await;
    browsers.wait_to_hear("emil", 440.0, 1000.0).await;
    browsers.screenshot("dora", "call-link-guest.png").await;

    let id = link["id"].as_str().expect("id");
    project
        .call(Method::DELETE, &format!("/api/calls/{id}"), None)
        .await
        .expect(200);
    browsers.launch("late", 440.0).await;
    browsers.goto("late", &url).await;
    browsers.fill("late", "#guest-name", "Late").await;
    browsers.press("late", "#guest-name", "Enter").await;
    let shown = browsers
        .wait_text("late", "#error-text", "cannot be joined any more")
        .await;
    assert!(shown.contains("deleted"), "{shown}");
    assert!(!browsers.visible("late", "#leave-call").await);
    browsers.close().await;
}
