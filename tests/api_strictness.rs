//! What an outside probe (schemathesis against docs/openapi.json) found, one test each: the server
//! refuses what the OpenAPI file refuses, with a status the file documents. Every response here is
//! checked against the file by the `Client`.

mod common;

use common::{Client, Gateway, TALK};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A group room owned by alice, alice in it with a session, bob and carol ordinary attendees.
struct Room {
    _gw: Gateway,
    alice: Client,
    bob: Client,
    token: String,
    bob_id: i64,
    carol_id: i64,
}

async fn room() -> Room {
    let gw = Gateway::start("");
    let alice = gw.client("alice");
    let bob = gw.client("bob");
    let token = alice.create_room(2).await;
    let bob_id = alice.add_user(&token, "bob").await;
    let carol_id = alice.add_user(&token, "carol").await;
    alice.join_room(&token).await;
    Room {
        _gw: gw,
        alice,
        bob,
        token,
        bob_id,
        carol_id,
    }
}

/// A refusal names the parameter it is about.
#[track_caller]
fn refused_for(reply: &common::Reply, field: &str) {
    assert_eq!(reply.data()["error"], "parameter", "{}", reply.body);
    assert!(
        reply.message().contains(&format!("`{field}`")),
        "message should name `{field}`: {}",
        reply.message()
    );
}

#[tokio::test]
async fn leaving_a_call_with_all_of_the_wrong_type_is_a_documented_400() {
    let r = room().await;
    let path = format!("/call/{}", r.token);
    r.alice.join_call(&r.token, 3).await;
    for all in [json!("yes"), json!(1), json!({}), json!(null)] {
        let reply = r
            .alice
            .talk(Method::DELETE, &path, Some(json!({ "all": all })))
            .await
            .expect(400);
        refused_for(&reply, "all");
    }
    // Still in the call: nothing was done with the refused requests.
    let listed = r.alice.talk(Method::GET, &path, None).await.expect(200);
    assert_eq!(listed.data().as_array().map(Vec::len), Some(1));
    // A query string carries text, which is parsed.
    r.alice
        .talk(Method::DELETE, &format!("{path}?all=true"), None)
        .await
        .expect(200);
}

#[tokio::test]
async fn a_number_for_a_string_or_a_string_for_a_number_is_refused_not_converted() {
    let gw = Gateway::start("");
    let alice = gw.client("alice");
    let reply = alice
        .talk(
            Method::POST,
            "/room",
            Some(json!({"roomType": 2, "roomName": 0})),
        )
        .await
        .expect(400);
    refused_for(&reply, "roomName");
    let reply = alice
        .talk(
            Method::POST,
            "/room",
            Some(json!({"roomType": "2", "roomName": "Standup"})),
        )
        .await
        .expect(400);
    refused_for(&reply, "roomType");
    let rooms = alice.talk(Method::GET, "/room", None).await.expect(200);
    assert_eq!(rooms.data(), &json!([]), "no room was made");
    // JSON Schema counts 2.0 as an integer, and so does the server.
    alice
        .talk(
            Method::POST,
            "/room",
            Some(json!({"roomType": 2.0, "roomName": "Standup"})),
        )
        .await
        .expect(201);
}

#[tokio::test]
async fn room_names_follow_the_documented_lengths() {
    let gw = Gateway::start("");
    let alice = gw.client("alice");
    let create = |name: String| {
        alice.talk(
            Method::POST,
            "/room",
            Some(json!({"roomType": 2, "roomName": name})),
        )
    };
    create(String::new()).await.expect(400);
    create(" \t\u{3000}".to_string()).await.expect(400);
    create("é".repeat(256)).await.expect(400);
    // 255 characters (510 bytes) is the documented maximum, counted before trimming.
    create("é".repeat(255)).await.expect(201);
    create(format!(" {}", "x".repeat(255))).await.expect(400);
    let reply = create("  Standup ".to_string()).await.expect(201);
    assert_eq!(reply.data()["name"], "Standup");
}

#[tokio::test]
async fn null_is_refused_where_the_file_does_not_allow_it() {
    let r = room().await;
    let reply = r
        .alice
        .talk(
            Method::POST,
            &format!("/call/{}", r.token),
            Some(json!({"recordingConsent": null})),
        )
        .await
        .expect(400);
    refused_for(&reply, "recordingConsent");
    let reply = r
        .alice
        .talk(
            Method::PUT,
            &format!("/room/{}/recording-consent", r.token),
            Some(json!({"recordingConsent": null})),
        )
        .await
        .expect(400);
    refused_for(&reply, "recordingConsent");
    // Where null is documented (clearing the dial-in number), it is taken.
    let dialin = format!("/api/v1/rooms/{}/dialin", r.token);
    let reply = r
        .alice
        .call(Method::PUT, &dialin, Some(json!({"number": "+4930123499"})))
        .await
        .expect(200);
    assert_eq!(reply.data()["number"], "+4930123499");
    let reply = r
        .alice
        .call(Method::PUT, &dialin, Some(json!({"number": null})))
        .await
        .expect(200);
    assert_eq!(reply.data()["number"], Value::Null);
    let reply = r
        .alice
        .call(
            Method::PUT,
            &dialin,
            Some(json!({"number": 4930123499_i64})),
        )
        .await
        .expect(400);
    refused_for(&reply, "number");
}

#[tokio::test]
async fn forms_still_carry_text_that_is_parsed() {
    let r = room().await;
    let response = r
        .alice
        .request(Method::POST, &format!("{TALK}/call/{}", r.token))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("flags=3&silent=1")
        .send()
        .await
        .expect("form request");
    let reply = r
        .alice
        .finish(Method::POST, &format!("{TALK}/call/{}", r.token), response)
        .await
        .expect(200);
    assert_eq!(reply.data()["inCall"], 3);
}

#[tokio::test]
async fn oversized_bodies_get_413_in_the_ocs_envelope() {
    let r = room().await;
    let big = "x".repeat(70 * 1024);
    let reply = r
        .alice
        .talk(
            Method::POST,
            "/room",
            Some(json!({"roomType": 2, "roomName": big})),
        )
        .await
        .expect(413);
    assert_eq!(reply.data()["error"], "body");
    // The SDP offer of a media join has the same limit.
    r.alice.join_call(&r.token, 3).await;
    let path = format!("/api/v1/rooms/{}/media", r.token);
    let response = r
        .alice
        .request(Method::POST, &path)
        .header("Content-Type", "application/sdp")
        .body(format!("v=0\r\n{big}"))
        .send()
        .await
        .expect("media join");
    let reply = r.alice.finish(Method::POST, &path, response).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn a_path_that_cannot_be_decoded_names_nothing() {
    let gw = Gateway::start("");
    let reply = gw
        .client("alice")
        .talk(Method::GET, "/room/%FF%FE", None)
        .await
        .expect(404);
    assert_eq!(reply.data()["error"], "path");
}

#[tokio::test]
async fn setting_an_attendees_permissions_to_0_restores_the_defaults() {
    let r = room().await;
    let permissions = format!("/room/{}/attendees/permissions", r.token);
    let participant = |id: i64| {
        let alice = &r.alice;
        let path = format!("/room/{}/participants", r.token);
        async move {
            let listed = alice.talk(Method::GET, &path, None).await.expect(200);
            listed
                .data()
                .as_array()
                .and_then(|a| a.iter().find(|p| p["attendeeId"] == id))
                .cloned()
                .expect("attendee listed")
        }
    };
    let defaults = participant(r.carol_id).await;
    assert_eq!(defaults["attendeePermissions"], 0);
    // Custom: join the call only (4), so bob may not start one.
    r.alice
        .talk(
            Method::PUT,
            &permissions,
            Some(json!({"attendeeId": r.bob_id, "method": "set", "permissions": 4})),
        )
        .await
        .expect(200);
    let bob = participant(r.bob_id).await;
    assert_eq!(bob["permissions"], 5, "custom flag and join call");
    let view = r
        .bob
        .talk(Method::GET, &format!("/room/{}", r.token), None)
        .await
        .expect(200);
    assert_eq!(view.data()["canStartCall"], false);
    // 0 is "the defaults" (Talk's PERMISSIONS_DEFAULT), not "custom, nothing allowed".
    r.alice
        .talk(
            Method::PUT,
            &permissions,
            Some(json!({"attendeeId": r.bob_id, "permissions": 0})),
        )
        .await
        .expect(200);
    let bob = participant(r.bob_id).await;
    assert_eq!(bob["attendeePermissions"], 0);
    assert_eq!(bob["permissions"], defaults["permissions"]);
    let view = r
        .bob
        .talk(Method::GET, &format!("/room/{}", r.token), None)
        .await
        .expect(200);
    assert_eq!(view.data()["canStartCall"], true);
    // Outside 0-255 is a documented 400.
    r.alice
        .talk(
            Method::PUT,
            &permissions,
            Some(json!({"attendeeId": r.bob_id, "permissions": 256})),
        )
        .await
        .expect(400);
}
