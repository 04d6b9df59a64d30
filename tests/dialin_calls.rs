//! Dial-in calls end to end: SIPp plays the trunk (uac scenarios in tests/sipp/) with a
//! test-owned RTP socket as the caller's media (a tone out, what it hears kept, RFC 4733 key
//! presses), a str0m WebRTC client sits in the room, and the room's events, participants, call
//! records and /metrics say what happened.

mod common;

use common::{ports, telephony, webrtc_client};

use common::sipp::Sipp;
use common::{Client, Gateway, FAST_TIMERS};
use ports::Tp;
use reqwest::Method;
use serde_json::{json, Value};
use telephony::{
    assert_nothing_left, call_records, calls_ended, participant, wait_for, EventReader, PhoneMedia,
};
use webrtc_client::{Offer, WebRtcClient};

const ROOM_NUMBER: &str = "+4930123456";
const PIN_NUMBER: &str = "+4930123400";
/// The number SIPp's scenarios call from.
const CALLER: &str = "+4930555000";
const CALLER_TONE: f64 = 1000.0;
const BROWSER_TONE: f64 = 440.0;

fn config(dialin: &str) -> String {
    config_with_trunk("", dialin)
}

/// `trunk`: more keys of the `[[inbound]]` trunk.
fn config_with_trunk(trunk: &str, dialin: &str) -> String {
    format!(
        "[[inbound]]\nname = \"carrier\"\nallowed_sources = [\"127.0.0.1\"]\n{trunk}[dialin]\npin_number = \"{PIN_NUMBER}\"\n{dialin}"
    )
}

fn sip_addr(gw: &Gateway, tp: Tp) -> std::net::SocketAddr {
    match tp {
        Tp::Udp => gw.sip_udp.expect("SIP UDP address"),
        Tp::Tcp => gw.sip_tcp.expect("SIP TCP address"),
    }
}

/// SIPp calls `number` with `phone` as its media.
fn caller(gw: &Gateway, scenario: &str, tp: Tp, number: &str, phone: &PhoneMedia) -> Sipp {
    let port = phone.addr.port().to_string();
    Sipp::uac(
        sip_addr(gw, tp),
        scenario,
        tp,
        number,
        "Carrier SBC",
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &port],
    )
}

/// A room with the dial-in number `ROOM_NUMBER`; alice's client, its token and PIN.
async fn room(gw: &Gateway) -> (Client, String, String) {
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let reply = alice
        .call(
            Method::PUT,
            &format!("/api/v1/rooms/{token}/dialin"),
            Some(json!({"number": ROOM_NUMBER})),
        )
        .await
        .expect(200);
    let pin = reply.data()["pin"].as_str().expect("pin").to_string();
    (alice, token, pin)
}

/// A gateway with a room that has the dial-in number `ROOM_NUMBER`, alice in its call with a
/// WebRTC client sending `BROWSER_TONE`, and her event stream.
struct Scene {
    gw: Gateway,
    alice: Client,
    token: String,
    pin: String,
    browser: WebRtcClient,
    events: EventReader,
}

impl Scene {
    async fn start(config: &str) -> Scene {
        let gw = Gateway::start_with_sip(FAST_TIMERS, config);
        let (alice, token, pin) = room(&gw).await;
        let browser = browser_in_call(&alice, &token).await;
        let events = EventReader::open(&alice, &token).await;
        Scene {
            gw,
            alice,
            token,
            pin,
            browser,
            events,
        }
    }
}

/// Alice joins the room's call with a WebRTC client sending `BROWSER_TONE`.
async fn browser_in_call(alice: &Client, token: &str) -> WebRtcClient {
    alice.join_room(token).await;
    alice.join_call(token, 3).await;
    let offer = Offer::new(false);
    let answer = alice.join_media(token, &offer.sdp).await;
    offer.start(&answer, BROWSER_TONE)
}

/// The moderator hangs up the phone leg `call_id`.
async fn hang_up(alice: &Client, token: &str, call_id: &str) {
    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/hangup"),
            None,
        )
        .await
        .expect(200);
}

async fn connected(events: &mut EventReader) -> Value {
    events
        .until("connected", |e| {
            e["type"] == "callstatus" && e["status"] == "connected"
        })
        .await
}

async fn hears_each_other(browser: &WebRtcClient, phone: &PhoneMedia) {
    wait_for(
        "the browser hearing the caller's tone",
        || browser.hears(CALLER_TONE) > 0.5,
        || format!("browser hears {:.3}", browser.hears(CALLER_TONE)),
    )
    .await;
    wait_for(
        "the caller hearing the browser's tone",
        || phone.hears(BROWSER_TONE) > 0.5,
        || {
            format!(
                "caller hears {:.3} ({}); browser got {} frames, hears {:.3}",
                phone.hears(BROWSER_TONE),
                phone.describe(),
                browser.frames(),
                browser.hears(CALLER_TONE)
            )
        },
    )
    .await;
    assert!(
        phone.hears(CALLER_TONE) < 0.1,
        "the caller does not hear itself"
    );
}

/// A caller to the room's number joins at once: connected, inCall 9 as a phone attendee named by
/// its number, audio both ways, its key presses as room events, muted by the moderator, hung up
/// by the moderator (BYE to SIPp), cleared, a dialin call record, nothing left.
async fn direct_number_call(tp: Tp) {
    let Scene {
        gw,
        alice,
        token,
        browser,
        mut events,
        ..
    } = Scene::start(&config("")).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(&gw, "uac_call_until_bye.xml", tp, ROOM_NUMBER, &phone);

    let up = connected(&mut events).await;
    let call_id = up["callid"].as_str().expect("callid").to_string();
    let attendee = up["attendeeId"].clone();
    let p = participant(&alice, &token, &attendee).await;
    assert_eq!(p["actorType"], "phones");
    assert_eq!(p["inCall"], 9, "{p}");
    assert_eq!(p["displayName"], CALLER);
    assert_eq!(p["phoneNumber"], CALLER);
    assert_eq!(p["callId"], call_id.as_str());
    assert_eq!(p["callStatus"], "connected");
    hears_each_other(&browser, &phone).await;

    phone.press(7);
    let key = events
        .until("dtmf", |e| {
            e["type"] == "dtmf" && e["attendeeId"] == attendee
        })
        .await;
    assert_eq!(key["digit"], "7");
    assert_eq!(key["actorType"], "phones");

    let phones = format!("/api/v1/rooms/{token}/phones/{call_id}");
    let mute_path = format!("{phones}/mute");
    let mute = |audio: i64| alice.call(Method::POST, &mute_path, Some(json!({ "audio": audio })));
    mute(1).await.expect(200);
    wait_for(
        "the muted caller going silent in the room",
        || browser.hears(CALLER_TONE) < 0.1,
        || format!("browser hears {:.3}", browser.hears(CALLER_TONE)),
    )
    .await;
    assert!(
        phone.hears(BROWSER_TONE) > 0.5,
        "muted speaking, the caller still hears the room"
    );
    mute(0).await.expect(200);
    wait_for(
        "the unmuted caller heard again",
        || browser.hears(CALLER_TONE) > 0.5,
        || format!("browser hears {:.3}", browser.hears(CALLER_TONE)),
    )
    .await;

    alice
        .call(Method::POST, &format!("{phones}/hangup"), None)
        .await
        .expect(200);
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "{tp:?}: SIPp answered our BYE:\n{trace}");
    assert!(trace.contains("BYE sip:"), "{trace}");
    let at = |what: &str| {
        trace
            .find(what)
            .unwrap_or_else(|| panic!("no {what}:\n{trace}"))
    };
    assert!(
        at("SIP/2.0 100 Trying") < at("SIP/2.0 180 Ringing")
            && at("SIP/2.0 180 Ringing") < at("SIP/2.0 200 OK"),
        "100, 180, then 200:\n{trace}"
    );
    let seen = events.statuses(&call_id).await;
    let last = seen.last().expect("final status");
    assert_eq!(last["status"], "cleared");
    assert_eq!(last["cause"], "ended");
    let p = participant(&alice, &token, &attendee).await;
    assert_eq!(p["inCall"], 0);
    assert_eq!(p["callStatus"], "cleared");

    let recs = call_records(&alice, &token, "dialin").await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["callId"], call_id.as_str());
    assert_eq!(r["attendeeId"], attendee);
    assert_eq!(r["number"], CALLER);
    assert_eq!(r["trunk"], "carrier");
    assert_eq!(r["status"], "cleared");
    assert_eq!(r["cause"], "ended");
    assert!(r["answeredAt"].as_i64().is_some(), "{r}");
    assert!(r["endedAt"].as_i64().is_some(), "{r}");
    assert!(r["billableSeconds"].as_i64().is_some(), "{r}");
    assert_nothing_left(&gw).await;
}

/// The moderator hangs up a caller that never answers our BYE: the caller is cleared as the BYE
/// goes out, while its dialog still waits for the answer (default timers: 32 s of BYE
/// retransmissions, longer than the event reader waits).
#[tokio::test]
async fn a_caller_is_cleared_when_our_bye_goes_out_not_when_it_is_answered() {
    let gw = Gateway::start(&config(""));
    let (alice, token, _) = room(&gw).await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let mut events = EventReader::open(&alice, &token).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(
        &gw,
        "uac_call_ignores_bye.xml",
        Tp::Udp,
        ROOM_NUMBER,
        &phone,
    );
    let up = connected(&mut events).await;
    let call_id = up["callid"].as_str().expect("callid").to_string();
    hang_up(&alice, &token, &call_id).await;
    let seen = events.statuses(&call_id).await;
    let last = seen.last().expect("final status");
    assert_eq!(last["status"], "cleared", "{seen:?}");
    assert_eq!(last["cause"], "ended", "{seen:?}");
    let p = participant(&alice, &token, &up["attendeeId"]).await;
    assert_eq!(p["inCall"], 0);
    // The dialog and the leg are still there.
    telephony::assert_one_call_pending(&gw, &["dialbridge_sip_calls", "dialbridge_dialin_legs"])
        .await;
    drop(sipp);
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn direct_number_caller_joins_and_the_moderator_hangs_up_over_udp() {
    direct_number_call(Tp::Udp).await;
}

#[tokio::test]
async fn direct_number_caller_joins_and_the_moderator_hangs_up_over_tcp() {
    direct_number_call(Tp::Tcp).await;
}

/// An INVITE without SDP: our 200 carries the offer (PCMU, PCMA, telephone-event), the ACK's
/// answer starts the media, and the caller is in the room with audio both ways.
#[tokio::test]
async fn an_invite_without_sdp_gets_our_offer_and_media_starts_from_the_ack() {
    let Scene {
        gw,
        alice,
        token,
        browser,
        mut events,
        ..
    } = Scene::start(&config("")).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(&gw, "uac_late_offer.xml", Tp::Udp, ROOM_NUMBER, &phone);
    let up = connected(&mut events).await;
    hears_each_other(&browser, &phone).await;
    let call_id = up["callid"].as_str().expect("callid");
    hang_up(&alice, &token, call_id).await;
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "{trace}");
    let ok_200 = &trace[trace.find("SIP/2.0 200 OK").expect("a 200 in the trace")..];
    assert!(
        ok_200.contains("m=audio") && ok_200.contains("RTP/AVP 0 8 101"),
        "the 200 offers PCMU, PCMA and telephone-event:\n{ok_200}"
    );
    assert_nothing_left(&gw).await;
}

/// A caller that requires 100rel: our 180 goes out reliably (Require, RSeq), the caller's PRACK
/// gets its 200, and the call joins the room with audio both ways.
#[tokio::test]
async fn a_caller_that_requires_100rel_gets_a_reliable_180_and_joins() {
    let Scene {
        gw,
        alice,
        token,
        browser,
        mut events,
        ..
    } = Scene::start(&config("")).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(&gw, "uac_requires_100rel.xml", Tp::Udp, ROOM_NUMBER, &phone);
    let up = connected(&mut events).await;
    hears_each_other(&browser, &phone).await;
    let call_id = up["callid"].as_str().expect("callid");
    hang_up(&alice, &token, call_id).await;
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "{trace}");
    let ringing = &trace[trace
        .find("SIP/2.0 180 Ringing")
        .expect("a 180 in the trace")..];
    let ringing = &ringing[..ringing.find("\n\n").unwrap_or(ringing.len())];
    assert!(ringing.contains("Require: 100rel"), "{ringing}");
    assert!(ringing.contains("RSeq: "), "{ringing}");
    let prack_answered = trace
        .split("----------------------------------------------- ")
        .filter(|entry| entry.contains("message received"))
        .any(|entry| entry.contains("SIP/2.0 200 OK") && entry.contains("CSeq: 2 PRACK"));
    assert!(prack_answered, "our 200 to the PRACK:\n{trace}");
    assert_nothing_left(&gw).await;
}

/// The caller hangs up: cleared with cause hangup, the attendee leaves the call.
async fn caller_hangs_up(tp: Tp) {
    let Scene {
        gw,
        alice,
        token,
        browser: _browser,
        mut events,
        ..
    } = Scene::start(&config("")).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(&gw, "uac_call_hangs_up.xml", tp, ROOM_NUMBER, &phone);
    let up = connected(&mut events).await;
    let call_id = up["callid"].as_str().expect("callid").to_string();
    let seen = events.statuses(&call_id).await;
    let last = seen.last().expect("final");
    assert_eq!(last["status"], "cleared");
    assert_eq!(last["cause"], "hangup");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "{tp:?}: our 200 to SIPp's BYE:\n{trace}");
    let p = participant(&alice, &token, &up["attendeeId"]).await;
    assert_eq!(p["inCall"], 0);
    let recs = call_records(&alice, &token, "dialin").await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["cause"], "hangup");
    assert_eq!(calls_ended(&gw, "dialin", "cleared", "hangup").await, 1.0);
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn caller_hangs_up_over_udp() {
    caller_hangs_up(Tp::Udp).await;
}

#[tokio::test]
async fn caller_hangs_up_over_tcp() {
    caller_hangs_up(Tp::Tcp).await;
}

/// RFC 4733 event code of a key.
fn event_of(key: char) -> u8 {
    match key {
        '0'..='9' => key as u8 - b'0',
        '*' => 10,
        '#' => 11,
        other => panic!("no key {other}"),
    }
}

async fn type_keys(phone: &PhoneMedia, keys: &str) {
    for key in keys.chars() {
        phone.press(event_of(key));
        wait_for("the key press sent", || !phone.pressing(), String::new).await;
        // A gap of audio between presses, as a keypad makes.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The shared PIN number: the caller hears the welcome prompt, types the room's PIN (RFC 4733)
/// and joins; audio flows both ways.
#[tokio::test]
async fn correct_pin_joins_the_room() {
    let Scene {
        gw,
        alice,
        token,
        pin,
        browser,
        mut events,
        ..
    } = Scene::start(&config("")).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(&gw, "uac_call_until_bye.xml", Tp::Udp, PIN_NUMBER, &phone);
    wait_for(
        "the welcome prompt",
        || phone.level() > 300.0,
        || {
            format!(
                "caller hears level {:.0}; log:\n{}",
                phone.level(),
                gw.log()
            )
        },
    )
    .await;
    assert!(
        browser.hears(CALLER_TONE) < 0.1,
        "the room does not hear a caller typing a PIN"
    );
    type_keys(&phone, &format!("{pin}#")).await;
    let up = connected(&mut events).await;
    let call_id = up["callid"].as_str().expect("callid").to_string();
    hears_each_other(&browser, &phone).await;
    assert!(gw.log().contains("PIN accepted"));
    hang_up(&alice, &token, &call_id).await;
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "{trace}");
    assert_nothing_left(&gw).await;
}

/// Three wrong PINs typed as SIP INFO: wrong-PIN prompts, then the goodbye prompt and our BYE;
/// no room hears of it.
#[tokio::test]
async fn three_wrong_pins_end_with_goodbye_and_bye() {
    let gw = Gateway::start_with_sip(FAST_TIMERS, &config("digit_timeout = 3\n"));
    let (alice, token, _) = room(&gw).await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(&gw, "uac_wrong_pin_info.xml", Tp::Tcp, PIN_NUMBER, &phone);
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp's INFOs answered, then our BYE:\n{trace}");
    assert!(trace.contains("BYE sip:"), "{trace}");
    let log = gw.log();
    assert_eq!(
        log.matches("DTMF from caller (INFO)").count(),
        6,
        "every INFO key read"
    );
    assert!(log.contains("wrong PIN too often: goodbye"), "{log}");
    assert!(call_records(&alice, &token, "dialin").await.is_empty());
    assert_eq!(
        calls_ended(&gw, "dialin", "cleared", "wrong-pin").await,
        1.0,
        "counted though no room was reached"
    );
    assert_nothing_left(&gw).await;
}

/// A room without a call: the caller is answered and hears the waiting prompt; nobody starts the
/// call, so after `wait_for_call` the goodbye prompt and BYE. A second caller waits and joins as
/// soon as the moderator starts the call.
#[tokio::test]
async fn waiting_callers_join_when_the_call_starts_or_hear_goodbye() {
    let gw = Gateway::start_with_sip(FAST_TIMERS, &config("wait_for_call = 3\n"));
    let (alice, token, _) = room(&gw).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(&gw, "uac_call_until_bye.xml", Tp::Udp, ROOM_NUMBER, &phone);
    wait_for(
        "the waiting prompt",
        || phone.level() > 300.0,
        || {
            format!(
                "caller hears level {:.0} ({} samples); log:\n{}",
                phone.level(),
                phone.heard.lock().map_or(0, |h| h.len()),
                gw.log()
            )
        },
    )
    .await;
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "BYE after the wait:\n{trace}");
    assert!(gw.log().contains("no call started in time: goodbye"));
    assert!(call_records(&alice, &token, "dialin").await.is_empty());

    let mut events = EventReader::open(&alice, &token).await;
    let phone = PhoneMedia::start(CALLER_TONE);
    let sipp = caller(&gw, "uac_call_until_bye.xml", Tp::Udp, ROOM_NUMBER, &phone);
    let log_has_second_wait = || gw.log().matches("caller waits for the room's call").count() >= 2;
    wait_for(
        "the second caller waiting",
        log_has_second_wait,
        String::new,
    )
    .await;
    let browser = browser_in_call(&alice, &token).await;
    let up = connected(&mut events).await;
    hears_each_other(&browser, &phone).await;
    // Ending the call for everyone ends the caller's leg too.
    alice
        .talk(
            Method::DELETE,
            &format!("/call/{token}"),
            Some(json!({"all": true})),
        )
        .await
        .expect(200);
    let call_id = up["callid"].as_str().expect("callid");
    let last = events.statuses(call_id).await;
    assert_eq!(last.last().expect("final")["status"], "cleared");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "{trace}");
    assert_nothing_left(&gw).await;
}

/// A joined caller whose RTP stops is hung up after the trunk's media_timeout; one who talks on
/// is hung up at max_call_duration. Both get our BYE and a record with that cause.
#[tokio::test]
async fn media_timeout_and_max_duration_end_inbound_calls() {
    let Scene {
        gw,
        alice,
        token,
        browser: _browser,
        mut events,
        ..
    } = Scene::start(&config_with_trunk(
        "media_timeout = 2\nmax_call_duration = 4\n",
        "",
    ))
    .await;
    for cause in ["media-timeout", "max-duration"] {
        let phone = PhoneMedia::start(CALLER_TONE);
        let sipp = caller(&gw, "uac_call_until_bye.xml", Tp::Udp, ROOM_NUMBER, &phone);
        let up = connected(&mut events).await;
        if cause == "media-timeout" {
            // The phone goes quiet: no more RTP.
            drop(phone);
        }
        let call_id = up["callid"].as_str().expect("callid");
        let seen = events.statuses(call_id).await;
        let last = seen.last().expect("final");
        assert_eq!(last["status"], "cleared");
        assert_eq!(last["cause"], cause);
        let (ok, trace) = sipp.finish().await;
        assert!(ok, "{cause}: our BYE answered:\n{trace}");
    }
    let causes: Vec<Value> = call_records(&alice, &token, "dialin")
        .await
        .iter()
        .map(|r| r["cause"].clone())
        .collect();
    assert_eq!(causes.len(), 2, "{causes:?}");
    assert!(causes.contains(&json!("media-timeout")) && causes.contains(&json!("max-duration")));
    assert_nothing_left(&gw).await;
}

/// The caller moves its media with a re-INVITE: our 200 answers it, and the room's audio goes
/// to the new address while the room hears the caller from there.
#[tokio::test]
async fn a_callers_reinvite_moves_its_media() {
    let Scene {
        gw,
        alice,
        token,
        browser,
        mut events,
        ..
    } = Scene::start(&config("")).await;
    // The first address only listens, as a phone that moved its stream away would.
    let first = std::net::UdpSocket::bind("127.0.0.1:0").expect("first media socket");
    let moved = PhoneMedia::start(1300.0);
    let sipp = Sipp::uac(
        sip_addr(&gw, Tp::Udp),
        "uac_reinvite_move.xml",
        Tp::Udp,
        ROOM_NUMBER,
        "Carrier SBC",
        &[
            "-set",
            "mhost",
            "127.0.0.1",
            "-set",
            "mport",
            &first.local_addr().expect("addr").port().to_string(),
            "-set",
            "mport2",
            &moved.addr.port().to_string(),
        ],
    );
    let up = connected(&mut events).await;
    wait_for(
        "the new address hearing the room",
        || moved.hears(BROWSER_TONE) > 0.5,
        || format!("moved socket: {}", moved.describe()),
    )
    .await;
    wait_for(
        "the room hearing the caller from the new address",
        || browser.hears(1300.0) > 0.5,
        || format!("browser hears 1300 Hz {:.3}", browser.hears(1300.0)),
    )
    .await;
    let call_id = up["callid"].as_str().expect("callid");
    hang_up(&alice, &token, call_id).await;
    let (ok, trace) = sipp.finish().await;
    assert!(
        ok,
        "the re-INVITE answered with 200, then our BYE:\n{trace}"
    );
    assert!(gw.log().contains("phone re-INVITE followed"));
    assert_nothing_left(&gw).await;
}
