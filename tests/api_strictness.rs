//! What an outside probe (schemathesis against docs/openapi.json) found, one test each: the server
//! refuses what the OpenAPI file refuses, with a status the file documents. Every response here is
//! checked against the file by the `Client`.

mod common;

use common::{Client, Gateway};
use reqwest::Method;
use serde_json::json;

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
