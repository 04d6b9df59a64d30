//! Phones in call links against the real binary, with SIPp as the trunk's phone on loopback: the
//! plan's dial-out flag and the spend limit refuse a dial-out, and a running phone leg is cut
//! (cause `spend-limit`) when the organization's month reaches its limit.

mod common;

use common::ports::Tp;
use common::sipp::Sipp;
use common::telephony::{wait_for, EventReader, PhoneMedia};
use common::{Client, Gateway};
use reqwest::Method;
use serde_json::{json, Value};

const PHONE: &str = "+4930123456";

fn setup(sipp_port: u16) -> String {
    format!(
        r#"
[[trunks]]
name = "sipp"
address = "127.0.0.1:{sipp_port}"
allowed_numbers = ["\\+4930[0-9]+"]
price_per_minute = "60.00"
[[inbound]]
name = "carrier"
allowed_sources = ["127.0.0.1"]
[links]
check_interval = "100ms"
commitment = "1s"
[[organizations]]
name = "phones"
spend_limit = "3.00"
[[organizations]]
name = "nodial"
dialout = false
[[organizations]]
name = "poor"
spend_limit = "0.50"
[[projects]]
name = "phones"
organization = "phones"
tokens = ["phones-token-0001"]
[[projects]]
name = "nodial"
organization = "nodial"
tokens = ["nodial-token-0002"]
[[projects]]
name = "poor"
organization = "poor"
tokens = ["poor-token-00003"]
[[organizations]]
name = "single"
spend_limit = "1.50"
[[projects]]
name = "single"
organization = "single"
tokens = ["single-token-0004"]
"#
    )
}

/// A link of the project, its host (a moderator pass) in the call, and a phone attendee.
async fn host_with_phone(gw: &Gateway, project_token: &str) -> (Client, String, i64, String) {
    let project = gw.anonymous().with_auth(&format!("Bearer {project_token}"));
    let call = project
        .call(Method::POST, "/api/calls", Some(json!({})))
        .await
        .expect(201)
        .body;
    let id = call["id"].as_str().expect("id").to_string();
    let pass = project
        .call(
            Method::POST,
            &format!("/api/calls/{id}/guests"),
            Some(json!({"name": "Host", "moderator": true})),
        )
        .await
        .expect(201)
        .body;
    let host = gw.anonymous().with_auth(&format!(
        "Bearer {}",
        pass["token"].as_str().expect("token")
    ));
    let room = pass["roomToken"].as_str().expect("room").to_string();
    host.join_room(&room).await;
    host.join_call(&room, 3).await;
    let phone = host.add_phone(&room, PHONE).await;
    (host, room, phone, id)
}

async fn dial(host: &Client, room: &str, phone: i64) -> common::Reply {
    host.talk(Method::POST, &format!("/call/{room}/dialout/{phone}"), None)
        .await
}

#[tokio::test]
async fn the_plan_and_the_budget_refuse_a_dial_out() {
    let gw = Gateway::start(&setup(9));
    let (host, room, phone, _) = host_with_phone(&gw, "nodial-token-0002").await;
    let refused = dial(&host, &room, phone).await.expect(403);
    assert_eq!(refused.data()["error"], "dialout_not_in_plan");
    // A trunk minute (1.00 for the commitment of a second) does not fit in 0.50.
    let (host, room, phone, _) = host_with_phone(&gw, "poor-token-00003").await;
    let refused = dial(&host, &room, phone).await.expect(402);
    assert_eq!(refused.data()["error"], "spending_limit_reached");
}

/// Eight dial-outs at once against a budget with room for one (a trunk second at 1.00 in
/// 1.50): exactly one is placed.
#[tokio::test]
async fn concurrent_dial_outs_against_a_budget_for_one_place_exactly_one() {
    let gw = Gateway::start(&setup(9));
    let (host, room, first, _) = host_with_phone(&gw, "single-token-0004").await;
    let mut phones = vec![first];
    for n in 1..8 {
        phones.push(host.add_phone(&room, &format!("+49301234{n:02}")).await);
    }
    let replies =
        futures_util::future::join_all(phones.iter().map(|p| dial(&host, &room, *p))).await;
    let placed = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies.iter().filter(|r| r.status == 402).count();
    assert_eq!(
        (placed, refused),
        (1, 7),
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_running_phone_leg_is_cut_when_the_month_reaches_the_limit() {
    let sipp = Sipp::uas(
        "dialout_answer.xml",
        Tp::Udp,
        &["-set", "mhost", "127.0.0.1", "-set", "mport", "9"],
    )
    .await;
    let gw = Gateway::start(&setup(sipp.port));
    let (host, room, phone, id) = host_with_phone(&gw, "phones-token-0001").await;
    let mut events = EventReader::open(&host, &room).await;
    let reply = dial(&host, &room, phone).await.expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    let statuses = events.statuses(&call_id).await;
    let last = statuses.last().cloned().unwrap_or(Value::Null);
    let names: Vec<&str> = statuses
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert!(names.contains(&"connected"), "{names:?}\n{}", gw.log());
    // At 1.00 a second the 3.00 of the month run out while the phone talks.
    assert_eq!(last["status"], "cleared", "{last}");
    assert_eq!(last["cause"], "spend-limit", "{last}");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp expected our BYE:\n{trace}");
    // Nothing more starts this month: neither a dial-out nor a new link.
    dial(&host, &room, phone).await.expect(402);
    let project = gw.anonymous().with_auth("Bearer phones-token-0001");
    project
        .call(Method::POST, "/api/calls", Some(json!({})))
        .await
        .expect(402);
    // The phone counted as a participant of the link.
    let status = project
        .call(Method::GET, &format!("/api/calls/{id}/status"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(status["participants"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_caller_dialling_in_is_refused_once_the_budget_is_spent() {
    let gw = Gateway::start(&setup(9));
    let (host, room, _, id) = host_with_phone(&gw, "phones-token-0001").await;
    host.call(
        Method::PUT,
        &format!("/api/v1/rooms/{room}/dialin"),
        Some(json!({"number": "+4930999888"})),
    )
    .await
    .expect(200);
    gw.cli(&["org", "set", "phones", "--spend-limit", "0"]);
    let sip = gw.sip_udp.expect("SIP UDP address");
    let caller = Sipp::uac(
        sip,
        "uac_call_until_bye.xml",
        Tp::Udp,
        "+4930999888",
        "Carrier SBC",
        &["-set", "mhost", "127.0.0.1", "-set", "mport", "9"],
    );
    // Answered (a routed call is), then refused its room, and hung up.
    let (ok, trace) = caller.finish().await;
    assert!(ok, "SIPp expected our BYE:\n{trace}");
    let status = gw
        .anonymous()
        .with_auth("Bearer phones-token-0001")
        .call(Method::GET, &format!("/api/calls/{id}/status"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(
        status["participants"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    // Refused for the budget, not for anything else.
    assert!(
        gw.log().contains("Limite de gastos foi atingido"),
        "{}",
        gw.log()
    );
}

/// A phone in a recorded call hears that it is recorded: the room is otherwise silent, so what
/// reaches the phone is the notice; in a call that is not recorded it hears silence.
#[tokio::test]
async fn a_phone_of_a_recorded_call_hears_that_it_is_recorded() {
    for recorded in [true, false] {
        let phone_media = PhoneMedia::start(0.0);
        let mport = phone_media.addr.port().to_string();
        let sipp = Sipp::uas(
            "dialout_answer.xml",
            Tp::Udp,
            &["-set", "mhost", "127.0.0.1", "-set", "mport", &mport],
        )
        .await;
        let recordings = tempfile::tempdir().expect("recordings");
        let gw = Gateway::start(&format!(
            r#"
[[trunks]]
name = "sipp"
address = "127.0.0.1:{}"
allowed_numbers = ["\\+4930[0-9]+"]
[recording]
path = "{}"
[[organizations]]
name = "open"
[[projects]]
name = "open"
organization = "open"
tokens = ["open-token-000005"]
"#,
            sipp.port,
            recordings.path().display()
        ));
        let project = gw.anonymous().with_auth("Bearer open-token-000005");
        let call = project
            .call(
                Method::POST,
                "/api/calls",
                Some(json!({ "recording": recorded })),
            )
            .await
            .expect(201)
            .body;
        let id = call["id"].as_str().expect("id");
        let pass = project
            .call(
                Method::POST,
                &format!("/api/calls/{id}/guests"),
                Some(json!({"name": "Host", "moderator": true})),
            )
            .await
            .expect(201)
            .body;
        let host = gw.anonymous().with_auth(&format!(
            "Bearer {}",
            pass["token"].as_str().expect("token")
        ));
        let room = pass["roomToken"].as_str().expect("room").to_string();
        host.join_room(&room).await;
        host.join_call(&room, 3).await;
        let phone = host.add_phone(&room, PHONE).await;
        let mut events = EventReader::open(&host, &room).await;
        dial(&host, &room, phone).await.expect(200);
        events.reach("connected").await;
        if recorded {
            wait_for(
                "the phone hearing the recording notice",
                || phone_media.level() > 1000.0,
                || phone_media.describe(),
            )
            .await;
            assert!(
                gw.log().contains("phone told the call is recorded"),
                "{}",
                gw.log()
            );
        } else {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            assert!(
                phone_media.level() < 50.0,
                "a call that is not recorded is silent: {}",
                phone_media.describe()
            );
        }
        drop(sipp);
    }
}
