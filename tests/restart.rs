//! What must survive a crash of the binary, and what must be closed out after it.

mod common;

use common::{ports, telephony};

use common::sipp::Sipp;
use common::{Client, Gateway};
use ports::Tp;
use reqwest::Method;
use serde_json::json;
use telephony::{call_records, wait_for, EventReader, PhoneMedia};

const PHONE: &str = "+4930123456";
/// What the gateway logs for each BYE it sends after a restart.
const RESTART_BYE: &str = "BYE for a call left up by the previous run";

#[tokio::test]
async fn rooms_attendees_and_call_records_survive_a_crash() {
    let mut gw = Gateway::start("");
    let (alice, bob) = (gw.client("alice"), gw.client("bob"));
    let token = alice.create_room(2).await;
    alice.add_user(&token, "bob").await;
    let phone_id = alice.add_phone(&token, "+4930123456").await;
    alice.join_room(&token).await;
    bob.join_room(&token).await;
    // One finished call, then one still running when the process dies.
    alice.join_call(&token, 3).await;
    alice
        .talk(Method::DELETE, &format!("/call/{token}"), None)
        .await
        .expect(200);
    alice.join_call(&token, 3).await;
    bob.join_call(&token, 3).await;

    gw.crash_and_restart();
    let (alice, bob) = (gw.client("alice"), gw.client("bob"));

    let room = alice
        .talk(Method::GET, &format!("/room/{token}"), None)
        .await
        .expect(200);
    assert_eq!(
        room.data()["hasCall"],
        false,
        "no call may stay up across a restart"
    );
    let participants = alice
        .talk(Method::GET, &format!("/room/{token}/participants"), None)
        .await
        .expect(200);
    let list = participants.data().as_array().expect("array").clone();
    assert_eq!(list.len(), 3);
    for p in &list {
        assert_eq!(p["inCall"], 0, "{p}");
        assert_eq!(p["sessionIds"].as_array().map(Vec::len), Some(0), "{p}");
    }
    assert!(list
        .iter()
        .any(|p| p["attendeeId"] == phone_id && p["phoneNumber"] == "+4930123456"));

    let records = alice
        .call(Method::GET, &format!("/api/v1/rooms/{token}/calls"), None)
        .await
        .expect(200);
    let records = records.data().as_array().expect("array").clone();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["kind"], "room");
    assert_eq!(records[0]["cause"], "hangup");
    assert!(records[0]["endedAt"].is_i64());
    assert_eq!(records[1]["status"], "cleared");
    assert_eq!(records[1]["cause"], "restart");
    assert!(records[1]["endedAt"].as_i64() >= records[1]["startedAt"].as_i64());
    assert!(records[1]["billableSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0));
    // Call records are for moderators.
    bob.call(Method::GET, &format!("/api/v1/rooms/{token}/calls"), None)
        .await
        .expect(403);
    // Sessions of the previous run are gone: bob has to join again before joining the call.
    bob.talk(Method::POST, &format!("/call/{token}"), None)
        .await
        .expect(404);
    bob.join_room(&token).await;
    bob.join_call(&token, 3).await;
    assert!(gw
        .log()
        .contains("closed out sessions and calls left open by the previous run"));
}

#[tokio::test]
async fn health_and_metrics() {
    let gw = Gateway::start("");
    let alice = gw.client("alice");
    let anon = gw.anonymous();
    let reply = anon.call(Method::GET, "/healthz", None).await.expect(200);
    assert_eq!(reply.body["status"], "ok");
    let token = alice.create_room(2).await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    alice
        .talk(Method::GET, "/room/nosuchroom", None)
        .await
        .expect(404);
    let text = gw.metrics().await;
    assert!(text.contains("dialbridge_rooms 1"), "{text}");
    assert!(text.contains("dialbridge_participants_in_call 1"), "{text}");
    let not_found = text
        .lines()
        .find(|l| l.starts_with("dialbridge_http_requests_total") && l.contains("status=\"404\""))
        .unwrap_or_else(|| panic!("404 counted by route:\n{text}"));
    assert!(
        not_found.contains("route=\"/ocs/v2.php/apps/spreed/api/v4/room/{token}\""),
        "{not_found}"
    );
}

/// The Call-ID of the first message in a SIPp trace.
fn sip_call_id(trace: &str) -> &str {
    trace
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no Call-ID in the SIPp trace:\n{trace}"))
}

/// After the crash: SIPp ends only once it got the BYE it waits for (and answered it 200), the
/// gateway logs that BYE with the call's Call-ID and the answer, and the call's record is
/// closed out with cause `restart` as before.
async fn phone_hung_up_after_restart(
    gw: &Gateway,
    sipp: Sipp,
    alice: &Client,
    token: &str,
    kind: &str,
) {
    let (ok, trace) = sipp.finish().await;
    assert!(
        ok,
        "SIPp got no BYE after the restart:\n{trace}\n{}",
        gw.log()
    );
    let line = format!("sip_call_id={}", sip_call_id(&trace));
    wait_for(
        "the BYE's log line",
        || {
            gw.log().lines().any(|l| {
                l.contains(RESTART_BYE) && l.contains(&line) && l.contains("result=200 OK")
            })
        },
        || gw.log(),
    )
    .await;
    let records = call_records(alice, token, kind).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["status"], "cleared");
    assert_eq!(records[0]["cause"], "restart");
}

#[tokio::test]
async fn a_dialled_out_phone_gets_a_bye_after_a_crash() {
    // The phone answers, then waits for a BYE; audio does not matter (its media goes nowhere).
    let sipp = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", "9"],
    )
    .await;
    let trunk = format!(
        "[[trunks]]\nname = \"sipp\"\naddress = \"127.0.0.1:{}\"\ntransport = \"udp\"\nallowed_numbers = [\"\\\\+4930[0-9]+\"]\n",
        sipp.port
    );
    let mut gw = Gateway::start(&trunk);
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let phone = alice.add_phone(&token, PHONE).await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let mut events = EventReader::open(&alice, &token).await;
    alice
        .talk(
            Method::POST,
            &format!("/call/{token}/dialout/{phone}"),
            None,
        )
        .await
        .expect(200);
    events.reach("connected").await;

    gw.crash_and_restart();
    phone_hung_up_after_restart(&gw, sipp, &gw.client("alice"), &token, "dialout").await;
}

#[tokio::test]
async fn a_caller_in_a_room_gets_a_bye_after_a_crash() {
    let mut gw =
        Gateway::start("[[inbound]]\nname = \"carrier\"\nallowed_sources = [\"127.0.0.1\"]\n");
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    alice
        .call(
            Method::PUT,
            &format!("/api/v1/rooms/{token}/dialin"),
            Some(json!({"number": PHONE})),
        )
        .await
        .expect(200);
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let mut events = EventReader::open(&alice, &token).await;
    let media = PhoneMedia::start(1000.0);
    let port = media.addr.port().to_string();
    let sipp = Sipp::uac(
        gw.sip_udp.expect("SIP UDP address"),
        "uac_call_until_bye.xml",
        Tp::Udp,
        PHONE,
        "Carrier SBC",
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &port],
    );
    events.reach("connected").await;

    gw.crash_and_restart();
    phone_hung_up_after_restart(&gw, sipp, &gw.client("alice"), &token, "dialin").await;
}
