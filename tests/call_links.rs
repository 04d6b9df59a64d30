//! Call links (`/api/calls`, seed 003) against the real binary: every endpoint, the status
//! lifecycle with short configured times, the seed's errors with their codes, a project reading
//! another's call, guests joining through a pass, and the spend limit as a hard cap. Every
//! response is checked against docs/openapi.json by the `Client`. Conditions are awaited with
//! generous deadlines; nothing asserts on timing.

mod common;

use std::time::Duration;

use common::telephony::EventReader;
use common::{Client, Gateway, Reply};
use dialbridge::links::when::parse_date_time;
use reqwest::Method;
use serde_json::{json, Value};

const SUPPORT: &str = "Bearer support-token-0001";
const SALES: &str = "Bearer sales-token-00002";
const NOSUB: &str = "Bearer nosub-token-00003";
const BROKE: &str = "Bearer broke-token-00004";
const TIGHT: &str = "Bearer tight-token-00005";
const ORPHAN: &str = "Bearer orphan-token-0006";

/// Organizations and projects of every gateway here; the clock looks every 100 ms and each start
/// must find a second of running time in the budget.
const SETUP: &str = r#"
[links]
check_interval = "100ms"
commitment = "1s"
[[organizations]]
name = "acme"
price_per_minute = "0.10"
[[organizations]]
name = "nosub"
subscribed = false
[[organizations]]
name = "broke"
spend_limit = "0"
[[organizations]]
name = "tight"
price_per_minute = "60.00"
spend_limit = "1.00"
[[organizations]]
name = "gone"
[[projects]]
name = "support"
organization = "acme"
tokens = ["support-token-0001"]
link_lifetime = "1h"
empty_timeout = "1s"
[[projects]]
name = "sales"
organization = "acme"
tokens = ["sales-token-00002"]
enable_recording = true
[[projects]]
name = "nosub"
organization = "nosub"
tokens = ["nosub-token-00003"]
[[projects]]
name = "broke"
organization = "broke"
tokens = ["broke-token-00004"]
[[projects]]
name = "tight"
organization = "tight"
tokens = ["tight-token-00005"]
[[projects]]
name = "orphan"
organization = "gone"
tokens = ["orphan-token-0006"]
"#;

fn start() -> Gateway {
    Gateway::start(SETUP)
}

async fn create(client: &Client, body: Value) -> Reply {
    client.call(Method::POST, "/api/calls", Some(body)).await
}

async fn created(client: &Client, body: Value) -> Value {
    create(client, body).await.expect(201).body
}

fn id_of(call: &Value) -> String {
    call["id"].as_str().expect("id").to_string()
}

fn ms(text: &Value) -> i64 {
    parse_date_time(text.as_str().expect("a timestamp")).expect("ISO 8601")
}

/// A guest pass for the call, and a client that uses it.
async fn guest(gw: &Gateway, call: &str, name: &str) -> (Client, Value) {
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
    let token = pass["token"].as_str().expect("token");
    (gw.anonymous().with_auth(&format!("Bearer {token}")), pass)
}

/// A guest who joined the link's room and its call.
async fn joined(gw: &Gateway, call: &str, name: &str) -> (Client, String) {
    let (client, pass) = guest(gw, call, name).await;
    let room = pass["roomToken"].as_str().expect("roomToken").to_string();
    client.join_room(&room).await;
    client.join_call(&room, 3).await;
    (client, room)
}

async fn get(client: &Client, call: &str) -> Value {
    client
        .call(Method::GET, &format!("/api/calls/{call}"), None)
        .await
        .expect(200)
        .body
}

/// Polls the call until `pred` holds (the clock runs every 100 ms; the deadline is generous).
async fn until(client: &Client, call: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = get(client, call).await;
        if pred(&seen) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "call never became {what}: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_empty_body_creates_a_link_with_the_seed_fields() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let call = created(&support, json!({})).await;
    let id = id_of(&call);
    assert_eq!(call["status"], "created");
    assert_eq!(call["totalBillableMinutes"], "0.00");
    assert_eq!(call["url"], format!("{}/calls/{id}", gw.base));
    assert_eq!(call["title"], Value::Null);
    for field in ["started", "ended", "deleted"] {
        assert_eq!(call[field], Value::Null, "{field}");
    }
    assert_eq!(call["created"], call["updated"]);
    assert!(call["created"].as_str().expect("created").ends_with('Z'));
    // The project's link lifetime (1h) and recording default (off).
    assert_eq!(ms(&call["expiresAt"]) - ms(&call["created"]), 3_600_000);
    assert_eq!(call["recording"], false);

    // Given fields are kept; recording null is the project's default, which sales has on.
    let sales = gw.anonymous().with_auth(SALES);
    let expires = "2099-01-29T11:26:01-03:00";
    let titled = created(
        &sales,
        json!({"title": "Reunião de Equipe", "expiresAt": expires, "recording": null}),
    )
    .await;
    assert_eq!(titled["title"], "Reunião de Equipe");
    assert_eq!(titled["expiresAt"], "2099-01-29T14:26:01.000Z");
    assert_eq!(titled["recording"], true);
    let off = created(&sales, json!({"recording": false})).await;
    assert_eq!(off["recording"], false);
    assert_eq!(
        get(&sales, &id_of(&titled)).await["title"],
        "Reunião de Equipe"
    );
}

#[tokio::test]
async fn bad_input_is_400_or_422_naming_the_field() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let raw = support
        .request(Method::POST, "/api/calls")
        .header("Content-Type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .expect("send");
    let reply = support
        .finish(Method::POST, "/api/calls", raw)
        .await
        .expect(400);
    assert_eq!(reply.body["error"], "invalid_json");

    for (body, field) in [
        (json!({"recording": "yes"}), "recording"),
        (json!({"title": 5}), "title"),
        (json!({"expiresAt": 1738160761}), "expiresAt"),
        (json!({"expiresAt": "tomorrow"}), "expiresAt"),
        (json!({"expiresAt": "2099-01-29"}), "expiresAt"),
        (json!({"title": "x".repeat(256)}), "title"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let reply = create(&support, body.clone()).await.expect(400);
        assert_eq!(reply.body["field"], field, "{body}: {}", reply.body);
        assert!(
            reply.body["message"].as_str().unwrap_or("").contains(field),
            "{}",
            reply.body
        );
    }
    let reply = create(&support, json!([])).await.expect(400);
    assert_eq!(reply.body["error"], "invalid_json");

    let past = create(&support, json!({"expiresAt": "2020-01-01T00:00:00Z"}))
        .await
        .expect(422);
    assert_eq!(past.body["error"], "invalid_expires_at");
    assert_eq!(past.body["field"], "expiresAt");

    // Nothing was created by the refused requests.
    let list = support
        .call(Method::GET, "/api/calls", None)
        .await
        .expect(200);
    assert_eq!(list.body["total"], 0);
}

#[tokio::test]
async fn no_or_a_wrong_token_is_401() {
    let gw = start();
    for client in [
        gw.anonymous(),
        gw.anonymous().with_auth("Bearer not-a-token"),
        // A user's token is not a project's.
        gw.client("alice"),
        gw.anonymous()
            .with_auth("Basic c3VwcG9ydDpzdXBwb3J0LXRva2VuLTAwMDE="),
    ] {
        let reply = create(&client, json!({})).await.expect(401);
        assert_eq!(reply.body["error"], "unauthorized");
        client
            .call(Method::GET, "/api/calls", None)
            .await
            .expect(401);
        client
            .call(Method::GET, "/api/calls/abcdefghij0123456789", None)
            .await
            .expect(401);
    }
}

#[tokio::test]
async fn the_seeds_three_errors_have_their_codes_and_messages() {
    let gw = start();
    let broke = create(&gw.anonymous().with_auth(BROKE), json!({}))
        .await
        .expect(402);
    assert_eq!(
        broke.body,
        json!({"error": "spending_limit_reached", "message": "Limite de gastos foi atingido"})
    );
    let nosub = create(&gw.anonymous().with_auth(NOSUB), json!({}))
        .await
        .expect(403);
    assert_eq!(
        nosub.body,
        json!({"error": "subscription_not_found", "message": "Assinatura não encontrada"})
    );
    // The organization is removed while its project lives on.
    let orphan = gw.anonymous().with_auth(ORPHAN);
    created(&orphan, json!({})).await;
    gw.cli(&["org", "remove", "gone"]);
    let gone = create(&orphan, json!({})).await.expect(404);
    assert_eq!(
        gone.body,
        json!({"error": "organization_not_found", "message": "Organização não encontrada"})
    );
}

#[tokio::test]
async fn lists_page_and_filter_and_a_project_sees_only_its_own() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let sales = gw.anonymous().with_auth(SALES);
    let mut ids = Vec::new();
    for title in ["one", "two", "three"] {
        ids.push(id_of(&created(&support, json!({ "title": title })).await));
    }
    let other = id_of(&created(&sales, json!({})).await);

    let first = support
        .call(Method::GET, "/api/calls?page=1&limit=2", None)
        .await
        .expect(200)
        .body;
    assert_eq!(first["total"], 3);
    assert_eq!(first["page"], 1);
    assert_eq!(first["limit"], 2);
    let second = support
        .call(Method::GET, "/api/calls?page=2&limit=2", None)
        .await
        .expect(200)
        .body;
    let mut seen: Vec<String> = first["data"]
        .as_array()
        .into_iter()
        .chain(second["data"].as_array())
        .flatten()
        .map(id_of)
        .collect();
    assert_eq!(first["data"].as_array().map(Vec::len), Some(2));
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "every link once, none of the other project's");

    let first_call = get(&support, &ids[0]).await;
    let today = &first_call["created"].as_str().expect("created")[..10];
    let today_only = support
        .call(
            Method::GET,
            &format!("/api/calls?startDate={today}&endDate={today}"),
            None,
        )
        .await
        .expect(200);
    assert_eq!(today_only.body["total"], 3);
    let future = support
        .call(Method::GET, "/api/calls?startDate=2099-01-01", None)
        .await
        .expect(200);
    assert_eq!(future.body["total"], 0);
    assert_eq!(future.body["data"], json!([]));
    let past = support
        .call(Method::GET, "/api/calls?endDate=2000-01-01", None)
        .await
        .expect(200);
    assert_eq!(past.body["total"], 0);

    for bad in [
        "startDate=yesterday",
        "endDate=2025-13-01",
        "page=0",
        "limit=101",
        "limit=x",
    ] {
        let reply = support
            .call(Method::GET, &format!("/api/calls?{bad}"), None)
            .await
            .expect(400);
        let name = bad.split('=').next().unwrap_or("");
        assert_eq!(reply.body["field"], name, "{bad}");
    }

    // Another project's call does not exist for this one, whatever is done to it.
    for (method, path) in [
        (Method::GET, format!("/api/calls/{other}")),
        (Method::GET, format!("/api/calls/{other}/status")),
        (Method::DELETE, format!("/api/calls/{other}")),
        (Method::POST, format!("/api/calls/{other}/end")),
        (Method::GET, "/api/calls/nosuchcall".to_string()),
    ] {
        let reply = support.call(method.clone(), &path, None).await.expect(404);
        assert_eq!(reply.body["error"], "call_not_found", "{method} {path}");
    }
    assert_eq!(get(&sales, &other).await["status"], "created");
    // A path under /api/calls that names nothing answers in this family's shape too.
    let response = support
        .request(Method::GET, &format!("/api/calls/{other}/nothing"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "not_found");
    // A sub-resource without its call id names nothing; another method on a call is 405.
    let response = support
        .request(Method::POST, "/api/calls/end")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 404);
    let response = support
        .request(Method::PATCH, &format!("/api/calls/{other}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 405);
    assert_eq!(
        response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("GET,DELETE")
    );
}

#[tokio::test]
async fn a_guest_joins_the_call_then_the_status_follows_it_to_the_end() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let call = created(&support, json!({"title": "Standup"})).await;
    let id = id_of(&call);
    let (ana, room) = joined(&gw, &id, "Ana").await;

    let active = get(&support, &id).await;
    assert_eq!(active["status"], "active");
    assert!(active["started"].is_string());
    let status = support
        .call(Method::GET, &format!("/api/calls/{id}/status"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(status["callId"], id.as_str());
    assert_eq!(status["status"], "active");
    assert_eq!(status["activeParticipants"], 1);
    assert_eq!(status["participants"][0]["username"], "Ana");
    assert_eq!(status["participants"][0]["active"], true);

    // The guest is an attendee of that room, and of no other.
    let listed = ana
        .talk(Method::GET, &format!("/call/{room}"), None)
        .await
        .expect(200);
    assert_eq!(listed.data()[0]["actorType"], "guests");
    assert_eq!(listed.data()[0]["displayName"], "Ana");
    ana.talk(
        Method::POST,
        "/room",
        Some(json!({"roomType": 3, "roomName": "Mine"})),
    )
    .await
    .expect(403);
    let other_room = gw.client("alice").create_room(3).await;
    ana.talk(
        Method::POST,
        &format!("/room/{other_room}/participants/active"),
        None,
    )
    .await
    .expect(404);

    let ended = support
        .call(Method::POST, &format!("/api/calls/{id}/end"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(ended["status"], "ended");
    assert!(ended["ended"].is_string());
    assert_eq!(ended["deleted"], Value::Null);
    // Ana is out of the call, her pass no longer works, and nobody can get a new one.
    ana.talk(Method::GET, &format!("/call/{room}"), None)
        .await
        .expect(401);
    let refused = gw
        .anonymous()
        .call(
            Method::POST,
            &format!("/api/calls/{id}/guests"),
            Some(json!({"name": "Late"})),
        )
        .await
        .expect(410);
    assert_eq!(refused.body["error"], "call_ended");
    let status = support
        .call(Method::GET, &format!("/api/calls/{id}/status"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(status["activeParticipants"], 0);
    assert_eq!(status["participants"][0]["active"], false);
    // Ending again changes nothing.
    let again = support
        .call(Method::POST, &format!("/api/calls/{id}/end"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(again["ended"], ended["ended"]);
}

#[tokio::test]
async fn an_empty_call_ends_after_the_empty_timeout() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let id = id_of(&created(&support, json!({})).await);
    let (ana, room) = joined(&gw, &id, "Ana").await;
    ana.talk(Method::DELETE, &format!("/call/{room}"), None)
        .await
        .expect(200);
    let ended = until(&support, &id, "ended", |c| c["status"] == "ended").await;
    assert!(ended["ended"].is_string());
}

#[tokio::test]
async fn a_link_expires_unused_and_a_running_call_ends_at_expires_at() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let soon = |secs: i64| {
        let at = dialbridge::links::when::now_ms() + secs * 1000;
        dialbridge::links::when::iso(at)
    };
    let unused = id_of(&created(&support, json!({"expiresAt": soon(2)})).await);
    let running = id_of(&created(&support, json!({"expiresAt": soon(3)})).await);
    let (ana, pass) = guest(&gw, &running, "Ana").await;
    let room = pass["roomToken"].as_str().expect("roomToken");
    ana.join_room(room).await;
    let mut events = EventReader::open(&ana, room).await;
    ana.join_call(room, 3).await;

    let expired = until(&support, &unused, "expired", |c| c["status"] == "expired").await;
    assert_eq!(expired["started"], Value::Null);
    let refused = gw
        .anonymous()
        .call(
            Method::POST,
            &format!("/api/calls/{unused}/guests"),
            Some(json!({"name": "Late"})),
        )
        .await
        .expect(410);
    assert_eq!(refused.body["error"], "call_expired");

    // Those in the call are warned before it ends (the warning lead, a minute, exceeds its life).
    let warning = events
        .until("call-expiring", |e| e["type"] == "call-expiring")
        .await;
    assert_eq!(warning["expiresAt"], pass["expiresAt"]);
    let ended = until(&support, &running, "ended", |c| c["status"] == "ended").await;
    assert!(ended["started"].is_string());
    assert!(ms(&ended["ended"]) >= ms(&ended["expiresAt"]));
}

#[tokio::test]
async fn delete_is_idempotent_ends_the_call_and_the_link_stops_working() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let id = id_of(&created(&support, json!({})).await);
    let (ana, room) = joined(&gw, &id, "Ana").await;
    let deleted = support
        .call(Method::DELETE, &format!("/api/calls/{id}"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(deleted["status"], "ended");
    assert!(deleted["deleted"].is_string());
    assert!(deleted["ended"].is_string());
    let again = support
        .call(Method::DELETE, &format!("/api/calls/{id}"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(again["deleted"], deleted["deleted"]);
    // Gone from its own URL; the list keeps it, with its deletion time.
    for (method, path) in [
        (Method::GET, format!("/api/calls/{id}")),
        (Method::GET, format!("/api/calls/{id}/status")),
        (Method::POST, format!("/api/calls/{id}/end")),
    ] {
        support.call(method, &path, None).await.expect(404);
    }
    let listed = support
        .call(Method::GET, "/api/calls", None)
        .await
        .expect(200);
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    assert_eq!(listed.body["data"][0]["deleted"], deleted["deleted"]);
    ana.talk(
        Method::POST,
        &format!("/call/{room}"),
        Some(json!({"flags": 3})),
    )
    .await
    .expect(401);
    let refused = gw
        .anonymous()
        .call(
            Method::POST,
            &format!("/api/calls/{id}/guests"),
            Some(json!({"name": "Late"})),
        )
        .await
        .expect(410);
    assert_eq!(refused.body["error"], "call_deleted");

    // A link deleted before anyone came is ended too.
    let unused = id_of(&created(&support, json!({})).await);
    let gone = support
        .call(Method::DELETE, &format!("/api/calls/{unused}"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(gone["status"], "ended");
}

#[tokio::test]
async fn guest_passes_check_their_input_and_only_a_project_makes_moderators() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let id = id_of(&created(&support, json!({})).await);
    let path = format!("/api/calls/{id}/guests");
    let anyone = gw.anonymous();
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": 3}),
    ] {
        let reply = anyone
            .call(Method::POST, &path, Some(body.clone()))
            .await
            .expect(400);
        assert_eq!(reply.body["field"], "name", "{body}");
    }
    anyone
        .call(
            Method::POST,
            "/api/calls/nosuchcall/guests",
            Some(json!({"name": "A"})),
        )
        .await
        .expect(404);
    let refused = anyone
        .call(
            Method::POST,
            &path,
            Some(json!({"name": "Eve", "moderator": true})),
        )
        .await
        .expect(403);
    assert_eq!(refused.body["error"], "moderator_needs_project_token");
    anyone
        .with_auth("Bearer not-a-token")
        .call(Method::POST, &path, Some(json!({"name": "Eve"})))
        .await
        .expect(401);
    // Another project's token is no better.
    gw.anonymous()
        .with_auth(SALES)
        .call(
            Method::POST,
            &path,
            Some(json!({"name": "Eve", "moderator": true})),
        )
        .await
        .expect(403);
    let host = support
        .call(
            Method::POST,
            &path,
            Some(json!({"name": "Host", "moderator": true})),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(host["moderator"], true);
    assert_eq!(host["callId"], id.as_str());
}

#[tokio::test]
async fn participant_minutes_are_metered_per_participant() {
    let gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let id = id_of(&created(&support, json!({})).await);
    let (_ana, _) = joined(&gw, &id, "Ana").await;
    let (_bea, _) = joined(&gw, &id, "Bea").await;
    // Two people: the total grows by about two minutes per minute; wait until it shows.
    until(&support, &id, "billed", |c| {
        c["totalBillableMinutes"] != "0.00"
    })
    .await;
    let ended = support
        .call(Method::POST, &format!("/api/calls/{id}/end"), None)
        .await
        .expect(200)
        .body;
    let total = ended["totalBillableMinutes"]
        .as_str()
        .expect("total")
        .to_string();
    let status = support
        .call(Method::GET, &format!("/api/calls/{id}/status"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(status["participants"].as_array().map(Vec::len), Some(2));
    assert_eq!(status["totalBillableMinutes"], total.as_str());
    // Nothing more is billed once the call ended.
    assert_eq!(
        get(&support, &id).await["totalBillableMinutes"],
        total.as_str()
    );
}

#[tokio::test]
async fn two_concurrent_creates_against_a_budget_for_one_let_exactly_one_through() {
    let gw = start();
    let tight = gw.anonymous().with_auth(TIGHT);
    let other = gw.anonymous().with_auth(TIGHT);
    let (a, b) = tokio::join!(create(&tight, json!({})), create(&other, json!({})));
    let mut codes = vec![a.status.as_u16(), b.status.as_u16()];
    codes.sort();
    assert_eq!(codes, vec![201, 402], "{} / {}", a.body, b.body);
    // The budget stays taken while the link is open, and frees when it is deleted.
    create(&tight, json!({})).await.expect(402);
    let open = if a.status == 201 { &a.body } else { &b.body };
    tight
        .call(Method::DELETE, &format!("/api/calls/{}", id_of(open)), None)
        .await
        .expect(200);
    create(&tight, json!({})).await.expect(201);
}

#[tokio::test]
async fn the_spend_limit_refuses_a_join_beyond_the_budget() {
    let gw = start();
    let tight = gw.anonymous().with_auth(TIGHT);
    let id = id_of(&created(&tight, json!({})).await);
    // The link holds a minute for its first participant; a second has no room.
    let (bea, pass) = guest(&gw, &id, "Bea").await;
    let room = pass["roomToken"].as_str().expect("roomToken").to_string();
    bea.join_room(&room).await;
    let (_ana, _) = joined(&gw, &id, "Ana").await;
    let refused = bea
        .talk(
            Method::POST,
            &format!("/call/{room}"),
            Some(json!({"flags": 3})),
        )
        .await
        .expect(402);
    assert_eq!(refused.data()["error"], "spending_limit_reached");
    bea.talk(
        Method::POST,
        &format!("/room/{room}/participants/active"),
        None,
    )
    .await
    .expect(402);
    let guests = gw
        .anonymous()
        .call(
            Method::POST,
            &format!("/api/calls/{id}/guests"),
            Some(json!({"name": "Cid"})),
        )
        .await
        .expect(402);
    assert_eq!(guests.body["error"], "spending_limit_reached");
}

#[tokio::test]
async fn organizations_projects_and_tokens_from_the_command_line() {
    let gw = start();
    let out = gw.cli(&[
        "org",
        "add",
        "initech",
        "--spend-limit",
        "50",
        "--no-recording",
        "--no-dialout",
    ]);
    assert!(
        out.contains("initech") && out.contains("spend_limit=50.00"),
        "{out}"
    );
    assert!(
        out.contains("no-recording") && out.contains("no-dialout"),
        "{out}"
    );
    let list = gw.cli(&["org", "list"]);
    assert!(list.lines().any(|l| l.starts_with("initech\t")), "{list}");
    let set = gw.cli(&[
        "org",
        "set",
        "initech",
        "--no-spend-limit",
        "--recording",
        "true",
    ]);
    assert!(
        set.contains("spend_limit=none") && !set.contains("no-recording"),
        "{set}"
    );

    gw.cli(&[
        "project",
        "add",
        "portal",
        "--org",
        "initech",
        "--link-lifetime",
        "2h",
    ]);
    let projects = gw.cli(&["project", "list"]);
    assert!(
        projects.lines().any(|l| l.starts_with("portal\t")
            && l.contains("org=initech")
            && l.contains("link_lifetime=7200s")),
        "{projects}"
    );
    let changed = gw.cli(&["project", "set", "portal", "--enable-recording", "true"]);
    assert!(changed.contains("recording=true"), "{changed}");

    // The plan lacks recording: asking for it is refused, the project's default gives way.
    gw.cli(&["org", "set", "initech", "--recording", "false"]);
    let out = gw.cli(&["token", "add", "--project", "portal"]);
    let token = out.lines().next().expect("the token on the first line");
    assert!(!token.is_empty() && !token.contains(' '), "{out}");
    let portal = gw.anonymous().with_auth(&format!("Bearer {token}"));
    let refused = create(&portal, json!({"recording": true}))
        .await
        .expect(403);
    assert_eq!(refused.body["error"], "recording_not_in_plan");
    assert_eq!(created(&portal, json!({})).await["recording"], false);
    gw.cli(&["org", "set", "initech", "--recording", "true"]);
    let call = created(&portal, json!({})).await;
    assert_eq!(call["recording"], true);
    assert_eq!(ms(&call["expiresAt"]) - ms(&call["created"]), 7_200_000);
    // The project's links are its own.
    gw.anonymous()
        .with_auth(SUPPORT)
        .call(Method::GET, &format!("/api/calls/{}", id_of(&call)), None)
        .await
        .expect(404);
}

#[tokio::test]
async fn a_link_survives_a_restart_and_its_open_stays_are_closed() {
    let mut gw = start();
    let support = gw.anonymous().with_auth(SUPPORT);
    let id = id_of(&created(&support, json!({})).await);
    let (_ana, _) = joined(&gw, &id, "Ana").await;
    gw.crash_and_restart();
    let support = gw.anonymous().with_auth(SUPPORT);
    let status = support
        .call(Method::GET, &format!("/api/calls/{id}/status"), None)
        .await
        .expect(200)
        .body;
    assert_eq!(status["activeParticipants"], 0);
    assert_eq!(status["participants"][0]["active"], false);
    // Nobody came back within the empty-timeout: the call ends.
    until(&support, &id, "ended", |c| c["status"] == "ended").await;
}

#[tokio::test]
async fn a_source_guessing_tokens_is_refused_before_its_tokens_are_looked_at() {
    let gw = Gateway::launch(common::Setup {
        http: "auth_failures_per_minute = 2\n",
        extra: SETUP,
        ..common::Setup::default()
    });
    let guesser = gw.anonymous().with_auth("Bearer guess-0000");
    for _ in 0..2 {
        create(&guesser, json!({})).await.expect(401);
    }
    let response = guesser
        .request(Method::POST, "/api/calls")
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert!(response.headers().contains_key("retry-after"));
    let refused = guesser
        .finish(Method::POST, "/api/calls", response)
        .await
        .expect(429);
    assert_eq!(refused.body["error"], "too_many_requests");
    // Even a right token from that source waits.
    create(&gw.anonymous().with_auth(SUPPORT), json!({}))
        .await
        .expect(429);
}
