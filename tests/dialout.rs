//! Dial-out end to end: the real binary dials SIPp (the trunk and the phone) on loopback, a
//! moderator drives it over the API, and the room's event stream, participant list, call
//! records and /metrics say what happened. One test also bridges audio both ways: a str0m
//! WebRTC client in the room and a test-owned RTP socket as the phone's media.

mod common;

use common::{ports, telephony, webrtc_client};

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sipp::{notified_status_lines, received, received_request, Sipp};
use common::{Client, Gateway, FAST_TIMERS, TALK};
use ports::free_port;
use ports::Tp;
use reqwest::Method;
use serde_json::{json, Value};
use telephony::{
    assert_nothing_left, call_records, calls_ended, participant, trunk, wait_for, EventReader,
    PhoneMedia,
};
use webrtc_client::{Offer, WebRtcClient};

const PHONE: &str = "+4930123456";

fn status_names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["status"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// A room with alice (moderator) in its call and a phone attendee; alice's event stream.
async fn room_with_phone(gw: &Gateway) -> (Client, String, i64, EventReader) {
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let phone = alice.add_phone(&token, PHONE).await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let events = EventReader::open(&alice, &token).await;
    (alice, token, phone, events)
}

/// Alice's WebRTC client in the room's call, sending `tone` Hz.
async fn browser_in(alice: &Client, token: &str, tone: f64) -> WebRtcClient {
    let offer = Offer::new(false);
    let answer = alice.join_media(token, &offer.sdp).await;
    offer.start(&answer, tone)
}

/// SIPp as the phone over UDP, running `scenario` with its media at the test-owned
/// 127.0.0.1:`mport`.
async fn phone_sipp(scenario: &str, mport: &str) -> Sipp {
    Sipp::uas(
        scenario,
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", mport],
    )
    .await
}

/// A moderator ends the room's call for everyone.
async fn end_call_for_all(alice: &Client, token: &str) {
    alice
        .talk(
            Method::DELETE,
            &format!("/call/{token}"),
            Some(json!({"all": true})),
        )
        .await
        .expect(200);
}

async fn dial(alice: &Client, token: &str, phone: i64, body: Option<Value>) -> common::Reply {
    alice
        .talk(
            Method::POST,
            &format!("/call/{token}/dialout/{phone}"),
            body,
        )
        .await
}

async fn phone_participant(alice: &Client, token: &str, phone: i64) -> Value {
    participant(alice, token, &json!(phone)).await
}

async fn records(alice: &Client, token: &str) -> Vec<Value> {
    call_records(alice, token, "dialout").await
}

fn invite_of(trace: &str) -> &str {
    let start = trace.find("INVITE sip:").expect("an INVITE reached SIPp");
    let rest = &trace[start..];
    &rest[..rest
        .find("\n\n")
        .or_else(|| rest.find("\r\n\r\n"))
        .unwrap_or(rest.len())]
}

/// The `callstatus` events of the phone's call up to `connected`; a rejection fails the test
/// with the gateway's log.
async fn until_connected(
    events: &mut EventReader,
    gw: &Gateway,
    call_id: &str,
    phone: i64,
) -> Vec<Value> {
    let mut seen = Vec::new();
    while seen
        .last()
        .map(|e: &Value| e["status"] != "connected")
        .unwrap_or(true)
    {
        let e = events
            .until("callstatus", |e| e["type"] == "callstatus")
            .await;
        assert_eq!(e["callid"], call_id);
        assert_eq!(e["attendeeId"], phone);
        assert!(e["status"] != "rejected", "rejected: {e}\n{}", gw.log());
        seen.push(e);
    }
    seen
}

/// Answered call: accepted, ringing, connected in order; the phone is in the call with inCall 9;
/// the room ends the call for everyone; SIPp gets the BYE; cleared; record; nothing left.
async fn answered_then_room_ends(tp: Tp) {
    let mut sipp = Sipp::uas(
        "dialout_answer.xml",
        tp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", "9"],
    )
    .await;
    let gw = Gateway::start(&trunk(sipp.port, tp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    assert_eq!(reply.data()["status"], "accepted");
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();

    let seen = until_connected(&mut events, &gw, &call_id, phone).await;
    assert_eq!(status_names(&seen), ["accepted", "ringing", "connected"]);
    assert_eq!(seen[2]["code"], 200);
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["callId"], call_id.as_str());
    assert_eq!(p["callStatus"], "connected");
    assert_eq!(p["inCall"], 9, "{p}");

    // A second dial-out to the same attendee while it is in a call is refused.
    dial(&alice, &token, phone, None).await.expect(400);

    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    assert_eq!(status_names(&rest), ["cleared"]);
    assert_eq!(rest[0]["cause"], "ended");
    let (ok, trace) = std::mem::replace(&mut sipp, Sipp::dummy()).finish().await;
    assert!(ok, "SIPp scenario failed (expected our BYE):\n{trace}");
    let invite = invite_of(&trace);
    assert!(
        invite.contains("m=audio "),
        "INVITE carries an SDP offer:\n{invite}"
    );
    for codec in ["PCMU/8000", "PCMA/8000", "telephone-event/8000"] {
        assert!(invite.contains(codec), "offer lacks {codec}:\n{invite}");
    }
    assert!(
        invite.contains("sip:+4940111222@"),
        "From is the trunk's caller id:\n{invite}"
    );

    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["callStatus"], "cleared");
    assert_eq!(p["inCall"], 0);
    let recs = records(&alice, &token).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["callId"], call_id.as_str());
    assert_eq!(r["attendeeId"], phone);
    assert_eq!(r["number"], PHONE);
    assert_eq!(r["trunk"], "sipp");
    assert_eq!(r["status"], "cleared");
    assert_eq!(r["cause"], "ended");
    assert_eq!(r["sipCode"], 200);
    assert!(r["answeredAt"].is_i64() && r["endedAt"].is_i64(), "{r}");
    assert!(r["billableSeconds"].as_i64().is_some_and(|s| s >= 0), "{r}");
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn answered_call_udp_room_ends_it() {
    answered_then_room_ends(Tp::Udp).await;
}

#[tokio::test]
async fn answered_call_tcp_room_ends_it() {
    answered_then_room_ends(Tp::Tcp).await;
}

async fn rejected(scenario: &str, tp: Tp, trunk_extra: &str, cause: &str, code: u64) -> String {
    rejected_with_sip("", scenario, tp, trunk_extra, cause, code).await
}

/// The phone attendee of a call that never connected: rejected and out of the call, its record
/// closed as rejected with `cause` and never answered.
async fn assert_rejected_and_recorded(alice: &Client, token: &str, phone: i64, cause: &str) {
    let p = phone_participant(alice, token, phone).await;
    assert_eq!(p["callStatus"], "rejected");
    assert_eq!(p["inCall"], 0);
    let recs = records(alice, token).await;
    assert_eq!(recs[0]["status"], "rejected");
    assert_eq!(recs[0]["cause"], cause);
    assert!(recs[0]["answeredAt"].is_null(), "{:?}", recs[0]);
    assert!(
        recs[0]["endedAt"].is_i64(),
        "the record is closed: {:?}",
        recs[0]
    );
}

/// [`rejected`] with more keys of the gateway's `[sip]` table.
async fn rejected_with_sip(
    sip: &str,
    scenario: &str,
    tp: Tp,
    trunk_extra: &str,
    cause: &str,
    code: u64,
) -> String {
    let sipp = Sipp::uas(scenario, tp, &[]).await;
    let gw = Gateway::start_with_sip(sip, &trunk(sipp.port, tp, trunk_extra));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let seen = events.statuses(&call_id).await;
    let last = seen.last().expect("a final status");
    assert_eq!(last["status"], "rejected", "{seen:?}");
    assert_eq!(last["cause"], cause, "{seen:?}");
    assert_eq!(last["code"], code, "{seen:?}");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    assert_rejected_and_recorded(&alice, &token, phone, cause).await;
    let recs = records(&alice, &token).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["sipCode"], code);
    assert_eq!(recs[0]["billableSeconds"], 0);
    assert_nothing_left(&gw).await;
    assert_eq!(calls_ended(&gw, "dialout", "rejected", cause).await, 1.0);
    trace
}

#[tokio::test]
async fn busy_is_rejected_with_486_over_udp_and_tcp() {
    for tp in [Tp::Udp, Tp::Tcp] {
        rejected("uas_busy.xml", tp, "", "busy", 486).await;
    }
}

#[tokio::test]
async fn no_answer_cancels_after_the_ringing_timeout() {
    let trace = rejected(
        "uas_ring_cancel.xml",
        Tp::Udp,
        "ringing_timeout = \"1s\"\n",
        "no-answer",
        487,
    )
    .await;
    assert!(trace.contains("CANCEL sip:"), "SIPp saw a CANCEL:\n{trace}");
}

#[tokio::test]
async fn trunk_answering_503_is_rejected_as_failed() {
    let trace = rejected("uas_unavailable.xml", Tp::Udp, "", "failed", 503).await;
    assert!(trace.contains("ACK sip:"), "SIPp got the ACK:\n{trace}");
}

/// A peer that never answers our INVITE: the transaction times out after 64*T1 (T1 shortened
/// with `[sip] t1`), which is our own 408, so the cause is failed rather than no-answer.
#[tokio::test]
async fn unanswered_invite_times_out_as_failed_408() {
    let trace = rejected_with_sip(
        "t1 = \"50ms\"\n",
        "uas_silent.xml",
        Tp::Udp,
        "",
        "failed",
        408,
    )
    .await;
    assert!(
        trace.matches("INVITE sip:").count() >= 2,
        "SIPp saw our INVITE retransmitted:\n{trace}"
    );
    assert!(!trace.contains("CANCEL sip:"), "{trace}");
}

/// The trunk's 200 OK crosses our CANCEL at the ringing timeout: we ACK that 200 and hang up
/// with BYE at once; the call never counts as answered.
#[tokio::test]
async fn answer_crossing_our_cancel_is_acked_and_hung_up() {
    let sipp = Sipp::uas("uas_200_crosses_cancel.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, "ringing_timeout = \"1s\"\n"));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let seen = events.statuses(&call_id).await;
    assert_eq!(
        status_names(&seen),
        ["accepted", "ringing", "rejected"],
        "{seen:?}\n{}",
        gw.log()
    );
    assert_eq!(seen[2]["cause"], "no-answer", "{seen:?}");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (expected ACK then BYE):\n{trace}");
    let cancel = trace.find("CANCEL sip:").expect("SIPp saw our CANCEL");
    let ack = trace.find("ACK sip:").expect("SIPp saw our ACK");
    let bye = trace.find("BYE sip:").expect("SIPp saw our BYE");
    assert!(
        cancel < ack && ack < bye,
        "CANCEL, ACK, BYE in order:\n{trace}"
    );
    assert_rejected_and_recorded(&alice, &token, phone, "no-answer").await;
    assert_nothing_left(&gw).await;
}

/// A moderator mutes a phone while it rings without early media (no media to mute yet): the
/// mute is kept and holds from the answer on.
#[tokio::test]
async fn a_mute_while_ringing_holds_once_the_phone_answers() {
    let sipp = Sipp::uas("dialout_ring_then_answer.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("ringing").await;
    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/mute"),
            Some(json!({"audio": 1})),
        )
        .await
        .expect(200);
    events.reach("connected").await;
    wait_for(
        "the media engine muting the phone",
        || {
            gw.log().lines().any(|l| {
                l.contains("phone leg mute changed") && l.contains("speaking=true listening=false")
            })
        },
        || gw.log(),
    )
    .await;
    assert!(!gw.log().contains("mute not applied"), "{}", gw.log());
    end_call_for_all(&alice, &token).await;
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (expected our BYE):\n{trace}");
    assert_nothing_left(&gw).await;
}

/// Key presses for a phone that still rings without early media are refused with 400: there is
/// no media to carry them yet. The room then ends the call (CANCEL).
#[tokio::test]
async fn dtmf_to_a_ringing_phone_without_media_is_refused() {
    let sipp = Sipp::uas("uas_ring_cancel.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("ringing").await;
    let refused = alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/dtmf"),
            Some(json!({"digits": "1"})),
        )
        .await
        .expect(400);
    assert!(
        refused.message().contains("not connected yet"),
        "{}",
        refused.message()
    );
    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "rejected");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (expected our CANCEL):\n{trace}");
    assert!(!trace.contains("INFO sip:"), "{trace}");
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn challenge_is_answered_with_the_trunks_credentials() {
    let sipp = Sipp::uas("uas_auth.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(
        sipp.port,
        Tp::Udp,
        "username = \"bridge\"\npassword = \"secret\"\n",
    ));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    // The phone attendee leaves the room: its call ends with a BYE.
    alice
        .talk(
            Method::DELETE,
            &format!("/room/{token}/attendees"),
            Some(json!({"attendeeId": phone})),
        )
        .await
        .expect(200);
    let rest = events.statuses(&call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "cleared");
    assert_eq!(rest.last().expect("final")["cause"], "removed");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    assert!(
        trace.contains("Proxy-Authorization: Digest username=\"bridge\""),
        "second INVITE authenticated:\n{trace}"
    );
    assert_nothing_left(&gw).await;
}

/// The phone presses a key with SIP INFO, then hangs up (SIPp sends BYE): a dtmf event, then
/// cleared with cause hangup. Dialled anonymously: From is withheld and the real number goes
/// in P-Asserted-Identity.
async fn phone_hangs_up(tp: Tp) {
    let sipp = Sipp::uas("dialout_phone_hangs_up.xml", tp, &[]).await;
    let gw = Gateway::start(&trunk(sipp.port, tp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, Some(json!({"anonymous": true})))
        .await
        .expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let mut seen = Vec::new();
    let mut keys = Vec::new();
    while !seen
        .last()
        .is_some_and(|e: &Value| e["status"] == "cleared" || e["status"] == "rejected")
    {
        let e = events
            .until("callstatus or dtmf", |e| {
                e["type"] == "callstatus" || e["type"] == "dtmf"
            })
            .await;
        if e["type"] == "dtmf" {
            keys.push(e);
        } else {
            assert_eq!(e["callid"], call_id.as_str());
            seen.push(e);
        }
    }
    assert_eq!(
        status_names(&seen),
        ["accepted", "ringing", "connected", "cleared"],
        "{tp:?}: {seen:?}\n{}",
        gw.log()
    );
    // The phone's SIP INFO key press reaches the room as a dtmf event of the phone attendee.
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["digit"], "7");
    assert_eq!(keys[0]["attendeeId"], phone);
    assert_eq!(keys[0]["actorType"], "phones");
    assert_eq!(seen[3]["cause"], "hangup");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "{tp:?}: SIPp scenario failed:\n{trace}");
    let invite = invite_of(&trace);
    assert!(
        invite.contains("sip:anonymous@anonymous.invalid"),
        "{invite}"
    );
    assert!(invite.contains("Privacy: id"), "{invite}");
    assert!(
        invite.contains("P-Asserted-Identity: <sip:+4940111222@"),
        "{invite}"
    );
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["inCall"], 0);
    let recs = records(&alice, &token).await;
    assert_eq!(recs[0]["status"], "cleared");
    assert_eq!(recs[0]["cause"], "hangup");
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn phone_hangs_up_udp() {
    phone_hangs_up(Tp::Udp).await;
}

#[tokio::test]
async fn phone_hangs_up_tcp() {
    phone_hangs_up(Tp::Tcp).await;
}

/// Limits: a second call over a trunk at max_concurrent_calls is refused with 503, one within
/// the calls_per_second spacing with 429, and neither reaches SIPp.
#[tokio::test]
async fn trunk_limits_refuse_calls_without_dialling() {
    let sipp = Sipp::uas("uas_ring_cancel.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(
        sipp.port,
        Tp::Udp,
        "max_concurrent_calls = 1\ncalls_per_second = 0.05\nringing_timeout = \"1s\"\n",
    ));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let second = alice.add_phone(&token, "+4930777888").await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let busy = dial(&alice, &token, second, None).await.expect(503);
    assert!(busy.message().contains("max"), "{}", busy.message());
    let seen = events.statuses(&call_id).await;
    assert_eq!(seen.last().expect("final")["cause"], "no-answer");
    let fast = dial(&alice, &token, second, None).await.expect(429);
    assert!(fast.message().contains("per second"), "{}", fast.message());
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    assert_eq!(trace.matches("INVITE sip:").count(), 1, "{trace}");
    assert_eq!(records(&alice, &token).await.len(), 1);
    assert_nothing_left(&gw).await;
}

#[tokio::test]
async fn number_outside_allowed_numbers_is_refused_and_never_dialled() {
    let sipp = Sipp::uas("uas_busy.xml", Tp::Udp, &[]).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let phone = alice.add_phone(&token, "+12025550123").await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let reply = dial(&alice, &token, phone, None).await.expect(403);
    assert!(
        reply.message().contains("allowed_numbers"),
        "{}",
        reply.message()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !sipp.trace().contains("INVITE"),
        "SIPp received something:\n{}",
        sipp.trace()
    );
    assert!(records(&alice, &token).await.is_empty());
    assert_nothing_left(&gw).await;
}

/// The room ends a call whose phone never answers our BYE: the phone is cleared (status,
/// participant, record) as the BYE goes out, while the dialog still waits for the answer.
#[tokio::test]
async fn a_phone_is_cleared_when_our_bye_goes_out_not_when_it_is_answered() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = phone_sipp("uas_ignores_bye.xml", &mport).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    let last = rest.last().expect("final");
    assert_eq!(last["status"], "cleared", "{rest:?}");
    assert_eq!(last["cause"], "ended", "{rest:?}");
    // The BYE is retransmitted for 64 x T1 (32 s): its dialog and the leg are still there.
    telephony::assert_one_call_pending(&gw, &["dialbridge_sip_calls", "dialbridge_dialout_legs"])
        .await;
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["inCall"], 0);
    let recs = records(&alice, &token).await;
    assert_eq!(recs[0]["status"], "cleared");
    assert!(recs[0]["endedAt"].is_i64(), "{:?}", recs[0]);
    drop(sipp);
    assert_nothing_left(&gw).await;
}

/// Audio both ways and DTMF both ways between a WebRTC client in the room and the phone.
#[tokio::test]
async fn phone_and_browser_hear_each_other_and_exchange_dtmf() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = phone_sipp("dialout_answer.xml", &mport).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let browser = browser_in(&alice, &token, 440.0).await;

    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    wait_for(
        "the browser hearing the phone's 1000 Hz",
        || browser.hears(1000.0) > 0.5,
        || {
            format!(
                "browser hears 1000 Hz {:.3}, 440 Hz {:.3}",
                browser.hears(1000.0),
                browser.hears(440.0)
            )
        },
    )
    .await;
    wait_for(
        "the phone hearing the browser's 440 Hz",
        || phone_media.hears(440.0) > 0.5,
        || {
            format!(
                "phone hears 440 Hz {:.3}, 1000 Hz {:.3} ({}); log:\n{}",
                phone_media.hears(440.0),
                phone_media.hears(1000.0),
                phone_media.describe(),
                gw.log()
            )
        },
    )
    .await;

    // DTMF from the phone becomes a room event; DTMF from a moderator reaches the phone.
    phone_media.press(5);
    let key = events
        .until("dtmf", |e| {
            e["type"] == "dtmf" && e["actorType"] == "phones"
        })
        .await;
    assert_eq!(key["digit"], "5");
    assert_eq!(key["attendeeId"], phone);
    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/dtmf"),
            Some(json!({"digits": "1#"})),
        )
        .await
        .expect(200);
    wait_for(
        "the phone receiving DTMF 1 and #",
        || *phone_media.dtmf.lock().expect("lock") == vec![1, 11],
        || format!("{:?}", phone_media.dtmf.lock().expect("lock")),
    )
    .await;
    gw.client("bob")
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/dtmf"),
            Some(json!({"digits": "1"})),
        )
        .await
        .expect(404);

    // The last WebRTC/user participant leaves the call: the phone leg ends.
    alice
        .talk(Method::DELETE, &format!("/call/{token}"), None)
        .await
        .expect(200);
    let rest = events.statuses(&call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "cleared");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    drop(browser);
    assert_nothing_left(&gw).await;
    let _ = TALK;
}

/// Our answer to SIPp's re-INVITE with CSeq `seq`.
fn reinvite_answer(trace: &str, seq: u32) -> &str {
    let cseq = format!("CSeq: {seq} INVITE");
    received(trace)
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains(&cseq))
        .unwrap_or_else(|| panic!("no 200 for re-INVITE {seq}:\n{trace}"))
}

/// The phone moves its media with a re-INVITE: we answer 200 with one codec and sendrecv, the
/// room's audio goes to the new port instead of the first one, and what the phone sends from
/// there is heard in the room.
#[tokio::test]
async fn reinvite_moves_the_phones_media() {
    let answer = phone_moves_by_reinvite("dialout_reinvite_move.xml").await;
    assert!(answer.contains("Content-Type: application/sdp"), "{answer}");
    assert!(answer.contains("a=sendrecv"), "{answer}");
    let media_line = audio_line(&answer);
    assert!(
        media_line.ends_with("RTP/AVP 0 101"),
        "one codec of the offer and telephone-event: {media_line}"
    );
}

/// The same move by a re-INVITE without SDP (RFC 3264 section 8): our 200 offers our codecs and
/// the phone's ACK answers with the new port.
#[tokio::test]
async fn offerless_reinvite_gets_our_offer_and_the_acks_answer_moves_the_media() {
    let offer = phone_moves_by_reinvite("dialout_reinvite_offerless.xml").await;
    let media_line = audio_line(&offer);
    assert!(
        media_line.ends_with("RTP/AVP 0 8 101"),
        "PCMU, PCMA and telephone-event offered: {media_line}"
    );
    assert!(offer.contains("a=sendrecv"), "{offer}");
}

/// The m=audio line of an SDP in a SIP message.
fn audio_line(message: &str) -> &str {
    message
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .unwrap_or_else(|| panic!("no audio in:\n{message}"))
}

/// Dials a SIPp phone running `scenario`, which answers with media at a port that only
/// listens and then moves it by a re-INVITE to a test phone playing 1300 Hz; checks the room's
/// audio reaches the new port and the browser hears the phone from there, ends the call and
/// checks nothing is left. Returns our 200 to the re-INVITE.
async fn phone_moves_by_reinvite(scenario: &str) -> String {
    // The first media port only listens: RTP from it would keep the gateway latched there.
    let first = UdpSocket::bind("127.0.0.1:0").expect("first media socket");
    let moved = PhoneMedia::start(1300.0);
    let mport = first.local_addr().expect("addr").port().to_string();
    let mport2 = moved.addr.port().to_string();
    let sipp = Sipp::uas(
        scenario,
        Tp::Udp,
        &[
            "-set",
            "mhost",
            "127.0.0.1",
            "-set",
            "mport",
            &mport,
            "-set",
            "mport2",
            &mport2,
        ],
    )
    .await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let browser = browser_in(&alice, &token, 440.0).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    wait_for(
        "the moved phone port hearing the browser's 440 Hz",
        || moved.hears(440.0) > 0.5,
        || format!("moved port hears 440 Hz {:.3}", moved.hears(440.0)),
    )
    .await;
    first.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 1500];
    assert!(
        first.recv_from(&mut buf).is_ok(),
        "the room's audio went to the first port before the move"
    );
    wait_for(
        "the browser hearing the moved phone's 1300 Hz",
        || browser.hears(1300.0) > 0.5,
        || format!("browser hears 1300 Hz {:.3}", browser.hears(1300.0)),
    )
    .await;
    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "cleared");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    drop(browser);
    assert_nothing_left(&gw).await;
    reinvite_answer(&trace, 1).to_string()
}

/// The phone holds the call (re-INVITE with a=inactive) for longer than media_timeout: we answer
/// inactive and keep the call; it resumes (a=sendrecv, answered sendrecv); it holds again with
/// c=0.0.0.0 (answered recvonly), resumes, and, as its media socket never sends, the media
/// timeout counted from the last resume ends the call.
#[tokio::test]
async fn hold_is_answered_and_suspends_the_media_timeout() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("silent socket");
    let mport = silent.local_addr().expect("addr").port().to_string();
    let heard = rtp_headers(silent);
    let sipp = phone_sipp("dialout_hold.xml", &mport).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, "media_timeout = \"2s\"\n"));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let seen = events.statuses(&call_id).await;
    assert_eq!(
        status_names(&seen),
        ["accepted", "ringing", "connected", "cleared"],
        "{seen:?}\n{}",
        gw.log()
    );
    assert_eq!(seen[3]["cause"], "media-timeout");
    let (ok, trace) = sipp.finish().await;
    assert!(
        ok,
        "SIPp scenario failed (a BYE while held fails it):\n{trace}"
    );
    let held = reinvite_answer(&trace, 1);
    assert!(held.contains("a=inactive"), "{held}");
    let resumed = reinvite_answer(&trace, 2);
    assert!(resumed.contains("a=sendrecv"), "{resumed}");
    // RFC 2543 hold: c=0.0.0.0 with sendrecv means "do not send to me".
    let held = reinvite_answer(&trace, 3);
    assert!(held.contains("a=recvonly"), "{held}");
    let resumed = reinvite_answer(&trace, 4);
    assert!(resumed.contains("a=sendrecv"), "{resumed}");
    // One stream throughout (the re-INVITEs are followed in place), sent in three spurts:
    // answered, resumed, resumed again; a held phone (a=inactive, then c=0.0.0.0) gets no RTP.
    // A pause shows as a timestamp that ran on further than the sequence number, and the
    // first packet after it carries the marker bit.
    let heard = heard.lock().expect("headers").clone();
    let ssrcs: std::collections::BTreeSet<u32> = heard.iter().map(|h| h.0).collect();
    assert_eq!(ssrcs.len(), 1, "one RTP stream: {ssrcs:?}");
    let spurts: Vec<(u16, bool)> = heard
        .windows(2)
        .filter(|w| {
            let seqs = u32::from(w[1].1.wrapping_sub(w[0].1));
            w[1].2.wrapping_sub(w[0].2) != seqs * 160
        })
        .map(|w| (w[1].1, w[1].3))
        .collect();
    assert_eq!(
        spurts.len(),
        2,
        "two pauses in the RTP (seq, marker): {spurts:?}"
    );
    assert!(
        spurts.iter().all(|(_, marker)| *marker),
        "talkspurts marked: {spurts:?}"
    );
    assert_nothing_left(&gw).await;
}

/// SSRC, sequence number, timestamp and marker bit of an RTP packet.
type RtpHeader = (u32, u16, u32, bool);

/// Collects the RTP headers of the packets `socket` receives, in order of arrival.
fn rtp_headers(socket: UdpSocket) -> Arc<Mutex<Vec<RtpHeader>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let seen = heard.clone();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        // Ends when the test has dropped its handle.
        while Arc::strong_count(&seen) > 1 {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            if n < 12 {
                continue;
            }
            let word =
                |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
            let seq = u16::from_be_bytes([buf[2], buf[3]]);
            let marker = buf[1] & 0x80 != 0;
            seen.lock()
                .expect("headers")
                .push((word(8), seq, word(4), marker));
        }
    });
    heard
}

/// Early media: a phone that only ever sends 183 with SDP is heard in the room while it rings;
/// the room then ends the call, which CANCELs it.
#[tokio::test]
async fn early_media_is_heard_in_the_room_before_any_answer() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = phone_sipp("dialout_early_media.xml", &mport).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let browser = browser_in(&alice, &token, 440.0).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("ringing").await;
    wait_for(
        "the browser hearing the ringing phone's 1000 Hz",
        || browser.hears(1000.0) > 0.5,
        || format!("browser hears 1000 Hz {:.3}", browser.hears(1000.0)),
    )
    .await;
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["callStatus"], "ringing");
    assert_eq!(
        p["inCall"], 0,
        "a ringing phone is not announced in the call"
    );
    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    let last = rest.last().expect("final");
    assert_eq!(last["status"], "rejected");
    assert_eq!(last["cause"], "ended");
    assert_eq!(last["code"], 487);
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (expected our CANCEL):\n{trace}");
    drop(browser);
    assert_nothing_left(&gw).await;
}

/// A phone that sends its 183 reliably (Require: 100rel): our INVITE announces 100rel, we
/// PRACK the 183 with its RSeq and the INVITE's CSeq, the phone answers once PRACKed, and audio
/// flows both ways.
#[tokio::test]
async fn a_reliable_183_is_pracked_and_the_call_goes_on() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = phone_sipp("dialout_100rel.xml", &mport).await;
    let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let browser = browser_in(&alice, &token, 440.0).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    wait_for(
        "the browser hearing the phone's 1000 Hz",
        || browser.hears(1000.0) > 0.5,
        || format!("browser hears 1000 Hz {:.3}", browser.hears(1000.0)),
    )
    .await;
    wait_for(
        "the phone hearing the browser's 440 Hz",
        || phone_media.hears(440.0) > 0.5,
        || format!("phone hears 440 Hz {:.3}", phone_media.hears(440.0)),
    )
    .await;
    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "cleared");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (PRACK expected):\n{trace}");
    let invite = invite_of(&trace);
    assert!(invite.contains("Supported: 100rel"), "{invite}");
    let prack = received_request(&trace, "PRACK");
    assert!(prack.contains("RAck: 1 1 INVITE"), "{prack}");
    assert!(prack.contains("CSeq: 2 PRACK"), "{prack}");
    let bye = received_request(&trace, "BYE");
    assert!(
        bye.contains("CSeq: 3 BYE"),
        "the BYE follows the PRACK's CSeq: {bye}"
    );
    drop(browser);
    assert_nothing_left(&gw).await;
}

/// Session timers short enough for a test (RFC 4028 says at least 90 s).
const SHORT_SESSIONS: &str = "session_expires = \"8s\"\nmin_se = \"2s\"\n";

/// A phone whose 200 sets an 8 s session that we refresh: our INVITE asks for the timer, two
/// UPDATEs refresh it (the call outlives its interval), and the call ends only when the room
/// ends it.
#[tokio::test]
async fn a_session_we_refresh_outlives_its_interval() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = phone_sipp("dialout_session_refresh.xml", &mport).await;
    let gw = Gateway::start_with_sip(SHORT_SESSIONS, &trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    wait_for(
        "two session refreshes",
        || sipp.trace().matches("UPDATE sip:").count() >= 2,
        || sipp.trace(),
    )
    .await;
    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    let last = rest.last().expect("final");
    assert_eq!(last["status"], "cleared");
    assert_eq!(
        last["cause"], "ended",
        "the room ended it, not the timer: {rest:?}"
    );
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    let invite = invite_of(&trace);
    assert!(invite.contains("Session-Expires: 8"), "{invite}");
    assert!(invite.contains("Min-SE: 2"), "{invite}");
    assert!(invite.contains("Supported: 100rel, timer"), "{invite}");
    let updates: Vec<&str> = received(&trace)
        .into_iter()
        .filter(|m| m.starts_with("UPDATE "))
        .collect();
    assert_eq!(updates.len(), 2, "{trace}");
    assert!(
        updates[0].contains("Session-Expires: 8;refresher=uac"),
        "{}",
        updates[0]
    );
    assert!(updates[0].contains("CSeq: 2 UPDATE"), "{}", updates[0]);
    assert!(updates[1].contains("CSeq: 3 UPDATE"), "{}", updates[1]);
    assert_nothing_left(&gw).await;
}

/// A phone whose 200 makes it the refresher of a 3 s session and that never refreshes: we send
/// BYE when the session expires, and the call is cleared with cause session-expired.
#[tokio::test]
async fn a_session_the_phone_stops_refreshing_is_ended_with_bye() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = phone_sipp("dialout_session_expires.xml", &mport).await;
    let gw = Gateway::start_with_sip(SHORT_SESSIONS, &trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    let rest = events.statuses(&call_id).await;
    let last = rest.last().expect("final");
    assert_eq!(last["status"], "cleared", "{rest:?}");
    assert_eq!(last["cause"], "session-expired", "{rest:?}");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (our BYE expected):\n{trace}");
    assert!(
        received(&trace).iter().any(|m| m.starts_with("BYE ")),
        "{trace}"
    );
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["inCall"], 0);
    assert_nothing_left(&gw).await;
}

/// An answered phone that sends no RTP is hung up after media_timeout; one that talks too long
/// after max_call_duration. Both: BYE on the wire, cleared with that cause.
#[tokio::test]
async fn media_timeout_and_max_duration_end_the_call() {
    for (setting, cause) in [
        ("media_timeout = \"2s\"\n", "media-timeout"),
        ("max_call_duration = \"2s\"\n", "max-duration"),
    ] {
        // The phone's media is a socket that answers with a tone only for max-duration.
        let phone_media = PhoneMedia::start(1000.0);
        let silent = UdpSocket::bind("127.0.0.1:0").expect("silent socket");
        let mport = if cause == "media-timeout" {
            silent.local_addr().expect("addr").port()
        } else {
            phone_media.addr.port()
        }
        .to_string();
        let sipp = phone_sipp("dialout_answer.xml", &mport).await;
        let gw = Gateway::start(&trunk(sipp.port, Tp::Udp, setting));
        let (alice, token, phone, mut events) = room_with_phone(&gw).await;
        let reply = dial(&alice, &token, phone, None).await.expect(200);
        let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
        let seen = events.statuses(&call_id).await;
        assert_eq!(
            status_names(&seen),
            ["accepted", "ringing", "connected", "cleared"],
            "{cause}: {seen:?}"
        );
        assert_eq!(seen[3]["cause"], cause);
        let (ok, trace) = sipp.finish().await;
        assert!(
            ok,
            "{cause}: SIPp scenario failed (expected our BYE):\n{trace}"
        );
        assert_eq!(records(&alice, &token).await[0]["cause"], cause);
        assert_nothing_left(&gw).await;
    }
}

/// A trunk that cannot be reached (nothing listens on its TCP port) fails the call: rejected
/// with cause failed and the transport error's 503.
#[tokio::test]
async fn unreachable_trunk_is_rejected_as_failed() {
    let port = free_port(Tp::Tcp);
    let gw = Gateway::start(&trunk(port, Tp::Tcp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let seen = events.statuses(&call_id).await;
    let last = seen.last().expect("final");
    assert_eq!(last["status"], "rejected", "{seen:?}");
    assert_eq!(last["cause"], "failed");
    assert_eq!(last["code"], 503);
    assert_rejected_and_recorded(&alice, &token, phone, "failed").await;
    assert_nothing_left(&gw).await;
}

/// A trunk named by host name alone, located through a local DNS server: NAPTR leads to the
/// SRV name, whose first target (priority 10) fails as `first` says and whose second (priority
/// 20) answers; the call connects through the second, the room sees no failure, and the
/// Request-URI keeps the trunk's domain.
async fn located_by_srv_fails_over(first: &str, sip: &str) -> String {
    use common::dns::{self, DnsServer};
    use std::net::Ipv4Addr;

    let failing = Sipp::uas(first, Tp::Udp, &[]).await;
    let mut answering = phone_sipp("dialout_answer.xml", "9").await;
    let loopback = Ipv4Addr::LOCALHOST;
    let dns = DnsServer::start(vec![
        dns::naptr("trunk.test.", 10, "SIP+D2U", "_sip._udp.pool.trunk.test."),
        dns::srv(
            "_sip._udp.pool.trunk.test.",
            20,
            0,
            answering.port,
            "two.trunk.test.",
        ),
        dns::srv(
            "_sip._udp.pool.trunk.test.",
            10,
            0,
            failing.port,
            "one.trunk.test.",
        ),
        dns::a("one.trunk.test.", loopback),
        dns::a("two.trunk.test.", loopback),
    ]);
    let gw = Gateway::start_with_sip(
        &format!("{sip}dns_servers = [\"{}\"]\n", dns.addr),
        "[[trunks]]\nname = \"pool\"\naddress = \"trunk.test\"\ncaller_id = \"+4940111222\"\nallowed_numbers = [\"\\\\+4930[0-9]+\"]\n",
    );
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let seen = until_connected(&mut events, &gw, &call_id, phone).await;
    assert_eq!(status_names(&seen), ["accepted", "ringing", "connected"]);
    let (ok, first_trace) = failing.finish().await;
    assert!(ok, "the first target's scenario failed:\n{first_trace}");
    let first_invite = invite_of(&first_trace).to_string();
    assert!(
        first_invite.starts_with("INVITE sip:+4930123456@trunk.test SIP/2.0"),
        "the Request-URI names the trunk's domain:\n{first_invite}"
    );
    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    assert_eq!(status_names(&rest), ["cleared"]);
    let (ok, trace) = std::mem::replace(&mut answering, Sipp::dummy())
        .finish()
        .await;
    assert!(ok, "the second target's scenario failed:\n{trace}");
    let retry = invite_of(&trace);
    let header = |message: &str, name: &str| {
        message
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert_eq!(
        header(retry, "call-id"),
        header(&first_invite, "call-id"),
        "the second target gets the same call"
    );
    assert_eq!(
        dns.asked("trunk.test", hickory_resolver::proto::rr::RecordType::NAPTR),
        1,
        "NAPTR asked once"
    );
    assert_nothing_left(&gw).await;
    first_trace
}

#[tokio::test]
async fn a_trunk_host_name_is_located_by_srv_and_a_503_fails_over_to_the_next_target() {
    let trace = located_by_srv_fails_over("uas_unavailable.xml", "").await;
    assert!(
        trace.contains("ACK sip:"),
        "the 503 was acknowledged:\n{trace}"
    );
}

/// As above, the first target silent: our INVITE times out there (T1 shortened) and moves on.
#[tokio::test]
async fn a_silent_srv_target_times_out_and_the_next_one_takes_the_call() {
    let trace = located_by_srv_fails_over("uas_silent.xml", "t1 = \"50ms\"\n").await;
    assert!(
        trace.matches("INVITE sip:").count() >= 2,
        "the first target saw our retransmissions:\n{trace}"
    );
}

/// Stopping the gateway (SIGTERM) with a phone connected sends the phone a BYE first.
#[tokio::test]
async fn shutdown_hangs_up_connected_phones() {
    let sipp = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", "9"],
    )
    .await;
    let mut gw = Gateway::start(&trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    dial(&alice, &token, phone, None).await.expect(200);
    events.reach("connected").await;
    assert!(gw.terminate(), "clean exit:\n{}", gw.log());
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed (expected our BYE):\n{trace}");
}

/// A moderator asks for a transfer of a phone call (blind transfer, REFER).
async fn transfer(alice: &Client, token: &str, call_id: &str, to: &str) -> common::Reply {
    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/transfer"),
            Some(json!({ "to": to })),
        )
        .await
}

/// The room's next `transfer` event of the call.
async fn transfer_event(events: &mut EventReader, call_id: &str) -> Value {
    events
        .until("a transfer event", |e| {
            e["type"] == "transfer" && e["callid"] == call_id
        })
        .await
}

/// A connected phone is transferred: the target goes through the allowlists (403 outside,
/// 400 for no number), our REFER names the target at the trunk, the phone's 202 and its NOTIFY
/// with a sipfrag 200 end our leg with a BYE, and the room sees `cleared` with `transferred`.
#[tokio::test]
async fn a_phone_transferred_by_refer_is_cleared_as_transferred_with_our_bye() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = phone_sipp("dialout_transfer.xml", &mport).await;
    let gw = Gateway::start_with_sip(FAST_TIMERS, &trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    let outside = transfer(&alice, &token, &call_id, "+12025550123")
        .await
        .expect(403);
    assert!(
        outside.message().contains("allowed_numbers"),
        "{}",
        outside.message()
    );
    transfer(&alice, &token, &call_id, "").await.expect(400);
    transfer(&alice, &token, "0123", "+4930999888")
        .await
        .expect(404);
    let started = transfer(&alice, &token, &call_id, "+4930999888")
        .await
        .expect(200);
    assert_eq!(started.data()["to"], "+4930999888");
    let accepted = transfer_event(&mut events, &call_id).await;
    assert_eq!(accepted["status"], "accepted", "{accepted}");
    assert_eq!(accepted["code"], 202, "{accepted}");
    let rest = events.statuses(&call_id).await;
    let last = rest.last().expect("final");
    assert_eq!(last["status"], "cleared", "{rest:?}");
    assert_eq!(last["cause"], "transferred", "{rest:?}");
    let sipp_port = sipp.port;
    let (ok, trace) = sipp.finish().await;
    assert!(
        ok,
        "SIPp scenario failed (REFER, NOTIFY, our BYE):\n{trace}"
    );
    let refer = received_request(&trace, "REFER");
    let target = format!("Refer-To: <sip:+4930999888@127.0.0.1:{sipp_port}>");
    assert!(refer.contains(&target), "{refer}");
    assert!(
        received(&trace)
            .iter()
            .any(|m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 1 NOTIFY")),
        "our 200 to the NOTIFY:\n{trace}"
    );
    let p = phone_participant(&alice, &token, phone).await;
    assert_eq!(p["inCall"], 0);
    let recs = records(&alice, &token).await;
    assert_eq!(recs[0]["status"], "cleared");
    assert_eq!(
        calls_ended(&gw, "dialout", "cleared", "transferred").await,
        1.0
    );
    assert_nothing_left(&gw).await;
}

/// A phone refusing the transfer (403 to the REFER) keeps its call: the room hears `refused`
/// with the code, the phone stays in the call, and the room ends it later as usual.
#[tokio::test]
async fn a_refused_transfer_keeps_the_call() {
    let phone_media = PhoneMedia::start(1000.0);
    let mport = phone_media.addr.port().to_string();
    let sipp = phone_sipp("dialout_transfer_refused.xml", &mport).await;
    let gw = Gateway::start_with_sip(FAST_TIMERS, &trunk(sipp.port, Tp::Udp, ""));
    let (alice, token, phone, mut events) = room_with_phone(&gw).await;
    let reply = dial(&alice, &token, phone, None).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    transfer(&alice, &token, &call_id, "+4930999888")
        .await
        .expect(200);
    let refused = transfer_event(&mut events, &call_id).await;
    assert_eq!(refused["status"], "refused", "{refused}");
    assert_eq!(refused["code"], 403, "{refused}");
    assert_eq!(refused["message"], "Forbidden", "{refused}");
    let p = phone_participant(&alice, &token, phone).await;
    assert_ne!(p["inCall"], 0, "{p}");
    end_call_for_all(&alice, &token).await;
    let rest = events.statuses(&call_id).await;
    let last = rest.last().expect("final");
    assert_eq!(last["status"], "cleared", "{rest:?}");
    assert_eq!(last["cause"], "ended", "{rest:?}");
    let (ok, trace) = sipp.finish().await;
    assert!(
        ok,
        "SIPp scenario failed (REFER refused, our BYE):\n{trace}"
    );
    assert_nothing_left(&gw).await;
}

/// A phone trying to transfer us: its REFER is refused 403 unless the trunk has `allow_refer`;
/// allowed, it is accepted (202, NOTIFY `100 Trying`), but a target the trunk may not dial is
/// refused with NOTIFY `403 Forbidden` and the room hears the transfer failed. The call goes on
/// either way.
#[tokio::test]
async fn a_refer_from_the_phone_is_refused_unless_the_trunk_allows_it() {
    for (scenario, trunk_extra, refer_answer) in [
        ("dialout_phone_refers.xml", "", "SIP/2.0 403"),
        (
            "dialout_phone_refers_allowed.xml",
            "allow_refer = true\n",
            "SIP/2.0 202",
        ),
    ] {
        let phone_media = PhoneMedia::start(1000.0);
        let mport = phone_media.addr.port().to_string();
        let sipp = phone_sipp(scenario, &mport).await;
        let gw = Gateway::start_with_sip(FAST_TIMERS, &trunk(sipp.port, Tp::Udp, trunk_extra));
        let (alice, token, phone, mut events) = room_with_phone(&gw).await;
        let reply = dial(&alice, &token, phone, None).await.expect(200);
        let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
        events.reach("connected").await;
        // SIPp sends its REFER 300 ms after the ACK; its answer is in the trace.
        wait_for(
            "the answer to the phone's REFER",
            || {
                sipp.trace()
                    .split("----------------------------------------------- ")
                    .any(|m| m.contains("message received") && m.contains("CSeq: 1 REFER"))
            },
            || sipp.trace(),
        )
        .await;
        let allowed = !trunk_extra.is_empty();
        if allowed {
            let accepted = transfer_event(&mut events, &call_id).await;
            assert_eq!(accepted["status"], "accepted", "{accepted}");
            let failed = transfer_event(&mut events, &call_id).await;
            assert_eq!(failed["status"], "failed", "{failed}");
            assert_eq!(failed["code"], 403, "{failed}");
        }
        let p = phone_participant(&alice, &token, phone).await;
        assert_ne!(p["inCall"], 0, "{scenario}: {p}");
        end_call_for_all(&alice, &token).await;
        let rest = events.statuses(&call_id).await;
        assert_eq!(rest.last().expect("final")["cause"], "ended", "{rest:?}");
        let (ok, trace) = sipp.finish().await;
        assert!(ok, "SIPp scenario {scenario} failed:\n{trace}");
        let answer = received(&trace)
            .into_iter()
            .find(|m| m.contains("CSeq: 1 REFER"))
            .unwrap_or_else(|| panic!("no answer to the REFER:\n{trace}"));
        assert!(answer.starts_with(refer_answer), "{answer}");
        let notified: &[&str] = if allowed {
            &["SIP/2.0 100 Trying", "SIP/2.0 403 Forbidden"]
        } else {
            &[]
        };
        assert_eq!(notified_status_lines(&trace), notified, "{trace}");
        assert_nothing_left(&gw).await;
    }
}
