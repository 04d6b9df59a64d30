//! The call API's status codes, each produced by setting up the case the seed contract describes,
//! against the real binary.

mod common;

use common::{Client, Gateway};
use reqwest::Method;
use serde_json::json;

/// A group room owned by alice with bob as a plain attendee and one phone attendee.
struct Room {
    _gw: Gateway,
    alice: Client,
    bob: Client,
    carol: Client,
    token: String,
    bob_id: i64,
    phone_id: i64,
}

async fn room() -> Room {
    let gw = Gateway::start("");
    let alice = gw.client("alice");
    let bob = gw.client("bob");
    let carol = gw.client("carol");
    let token = alice.create_room(2).await;
    let bob_id = alice.add_user(&token, "bob").await;
    let phone_id = alice.add_phone(&token, "+4930123456").await;
    Room {
        _gw: gw,
        alice,
        bob,
        carol,
        token,
        bob_id,
        phone_id,
    }
}

impl Room {
    async fn set(&self, path: &str, body: serde_json::Value) {
        self.alice
            .talk(
                Method::PUT,
                &format!("/room/{}/{path}", self.token),
                Some(body),
            )
            .await
            .expect(200);
    }
}

#[tokio::test]
async fn get_call_lists_participants_and_refuses_as_documented() {
    let r = room().await;
    let path = format!("/call/{}", r.token);
    // 200: the sessions in the call, and only those.
    r.alice.join_room(&r.token).await;
    r.alice.join_call(&r.token, 3).await;
    r.bob.join_room(&r.token).await;
    let reply = r.bob.talk(Method::GET, &path, None).await.expect(200);
    let list = reply.data().as_array().expect("array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["actorId"], "alice");
    assert_eq!(list[0]["inCall"], 3);
    // 404: unknown conversation, and a conversation the caller is not an attendee of.
    r.bob
        .talk(Method::GET, "/call/nosuchroom", None)
        .await
        .expect(404);
    r.carol.talk(Method::GET, &path, None).await.expect(404);
    // 412: lobby for moderators only, caller not a moderator; moderators still pass.
    r.set("webinar/lobby", json!({"state": 1})).await;
    r.bob.talk(Method::GET, &path, None).await.expect(412);
    r.alice.talk(Method::GET, &path, None).await.expect(200);
    r.set("webinar/lobby", json!({"state": 0})).await;
    // 403: read-only conversation.
    r.set("read-only", json!({"state": 1})).await;
    r.bob.talk(Method::GET, &path, None).await.expect(403);
}

#[tokio::test]
async fn join_call_codes() {
    let r = room().await;
    let path = format!("/call/{}", r.token);
    // 404: unknown conversation; 404: did not join the conversation (no session).
    r.alice
        .talk(Method::POST, "/call/nosuchroom", None)
        .await
        .expect(404);
    let reply = r.bob.talk(Method::POST, &path, None).await.expect(404);
    assert!(
        reply.message().contains("did not join"),
        "{}",
        reply.message()
    );
    // 200: joined with the given flags; IN_CALL is always set.
    r.bob.join_room(&r.token).await;
    let reply = r
        .bob
        .talk(Method::POST, &path, Some(json!({"flags": 2})))
        .await
        .expect(200);
    assert_eq!(reply.data()["inCall"], 3);
    let participants = r
        .alice
        .talk(
            Method::GET,
            &format!("/room/{}/participants", r.token),
            None,
        )
        .await
        .expect(200);
    let bob = participants
        .data()
        .as_array()
        .and_then(|a| a.iter().find(|p| p["actorId"] == "bob"))
        .expect("bob listed")
        .clone();
    assert_eq!(bob["inCall"], 3);
    assert_eq!(bob["sessionIds"].as_array().map(Vec::len), Some(1));
    // 400: flags outside the Talk constants.
    r.bob
        .talk(Method::POST, &path, Some(json!({"flags": 16})))
        .await
        .expect(400);
    // 400: recording consent required and not given; given -> 200.
    r.set("recording-consent", json!({"recordingConsent": 1}))
        .await;
    let reply = r.bob.talk(Method::POST, &path, None).await.expect(400);
    assert_eq!(reply.data()["error"], "consent");
    r.bob
        .talk(Method::POST, &path, Some(json!({"recordingConsent": true})))
        .await
        .expect(200);
    r.set("recording-consent", json!({"recordingConsent": 0}))
        .await;
    // 412: lobby; 403: read-only.
    r.set("webinar/lobby", json!({"state": 1})).await;
    r.bob.talk(Method::POST, &path, None).await.expect(412);
    r.set("webinar/lobby", json!({"state": 0})).await;
    r.set("read-only", json!({"state": 1})).await;
    r.bob.talk(Method::POST, &path, None).await.expect(403);
}

#[tokio::test]
async fn update_call_flags_codes() {
    let r = room().await;
    let path = format!("/call/{}", r.token);
    r.alice
        .talk(Method::PUT, "/call/nosuchroom", Some(json!({"flags": 1})))
        .await
        .expect(404);
    r.bob
        .talk(Method::PUT, &path, Some(json!({"flags": 1})))
        .await
        .expect(404);
    r.bob.join_room(&r.token).await;
    // 400: not in the call.
    let reply = r
        .bob
        .talk(Method::PUT, &path, Some(json!({"flags": 3})))
        .await
        .expect(400);
    assert_eq!(reply.data()["error"], "call");
    r.bob.join_call(&r.token, 7).await;
    // 400: flags without IN_CALL.
    let reply = r
        .bob
        .talk(Method::PUT, &path, Some(json!({"flags": 2})))
        .await
        .expect(400);
    assert_eq!(reply.data()["error"], "flags");
    // 200: flags changed, visible to others.
    let reply = r
        .bob
        .talk(Method::PUT, &path, Some(json!({"flags": 3})))
        .await
        .expect(200);
    assert_eq!(reply.data()["inCall"], 3);
    r.alice.join_room(&r.token).await;
    let list = r.alice.talk(Method::GET, &path, None).await.expect(200);
    assert_eq!(list.data()[0]["inCall"], 3);
    r.set("webinar/lobby", json!({"state": 1})).await;
    r.bob
        .talk(Method::PUT, &path, Some(json!({"flags": 3})))
        .await
        .expect(412);
    r.set("webinar/lobby", json!({"state": 0})).await;
    r.set("read-only", json!({"state": 1})).await;
    r.bob
        .talk(Method::PUT, &path, Some(json!({"flags": 3})))
        .await
        .expect(403);
}

#[tokio::test]
async fn leave_call_codes_and_end_for_all() {
    let r = room().await;
    let path = format!("/call/{}", r.token);
    r.alice
        .talk(Method::DELETE, "/call/nosuchroom", None)
        .await
        .expect(404);
    r.bob.talk(Method::DELETE, &path, None).await.expect(404);
    r.alice.join_room(&r.token).await;
    r.bob.join_room(&r.token).await;
    r.alice.join_call(&r.token, 3).await;
    r.bob.join_call(&r.token, 3).await;
    // 200: bob leaves; a non-moderator's all=true only ends their own participation.
    r.bob
        .talk(Method::DELETE, &path, Some(json!({"all": true})))
        .await
        .expect(200);
    let list = r.alice.talk(Method::GET, &path, None).await.expect(200);
    assert_eq!(list.data().as_array().map(Vec::len), Some(1));
    // A moderator's all=true ends the call for everyone.
    r.bob.join_call(&r.token, 3).await;
    r.alice
        .talk(Method::DELETE, &format!("{path}?all=true"), None)
        .await
        .expect(200);
    let list = r.alice.talk(Method::GET, &path, None).await.expect(200);
    assert_eq!(list.data().as_array().map(Vec::len), Some(0));
    let room = r
        .bob
        .talk(Method::GET, &format!("/room/{}", r.token), None)
        .await
        .expect(200);
    assert_eq!(room.data()["hasCall"], false);
    r.set("webinar/lobby", json!({"state": 1})).await;
    r.bob.talk(Method::DELETE, &path, None).await.expect(412);
    r.set("webinar/lobby", json!({"state": 0})).await;
    r.set("read-only", json!({"state": 1})).await;
    r.bob.talk(Method::DELETE, &path, None).await.expect(403);
}

#[tokio::test]
async fn ring_codes() {
    let r = room().await;
    let ring = |id: i64| format!("/call/{}/ring/{id}", r.token);
    r.alice
        .talk(Method::POST, "/call/nosuchroom/ring/1", None)
        .await
        .expect(404);
    r.alice.join_room(&r.token).await;
    // 400: no call in progress.
    let reply = r
        .alice
        .talk(Method::POST, &ring(r.bob_id), None)
        .await
        .expect(400);
    assert_eq!(reply.data()["error"], "room");
    // bob starts the call; alice, in the room but not in the call, rings: 400 actor not in call.
    r.bob.join_room(&r.token).await;
    r.bob.join_call(&r.token, 3).await;
    let carol_id = r.alice.add_user(&r.token, "carol").await;
    let reply = r
        .alice
        .talk(Method::POST, &ring(carol_id), None)
        .await
        .expect(400);
    assert_eq!(reply.data()["error"], "call");
    r.alice.join_call(&r.token, 3).await;
    // 200.
    r.alice
        .talk(Method::POST, &ring(carol_id), None)
        .await
        .expect(200);
    // 400: target already in the call; 400: target not a user.
    let reply = r
        .alice
        .talk(Method::POST, &ring(r.bob_id), None)
        .await
        .expect(400);
    assert!(
        reply.message().contains("already in the call"),
        "{}",
        reply.message()
    );
    let reply = r
        .alice
        .talk(Method::POST, &ring(r.phone_id), None)
        .await
        .expect(400);
    assert!(
        reply.message().contains("only user attendees"),
        "{}",
        reply.message()
    );
    // 404: attendee not in the conversation.
    r.alice
        .talk(Method::POST, &ring(999_999), None)
        .await
        .expect(404);
    // 403: not a moderator.
    r.bob
        .talk(Method::POST, &ring(carol_id), None)
        .await
        .expect(403);
    // 412: lobby, not a moderator.
    r.set("webinar/lobby", json!({"state": 1})).await;
    r.bob
        .talk(Method::POST, &ring(carol_id), None)
        .await
        .expect(412);
}

#[tokio::test]
async fn dialout_codes_without_trunk() {
    let r = room().await;
    let dial = |id: i64| format!("/call/{}/dialout/{id}", r.token);
    r.alice
        .talk(Method::POST, "/call/nosuchroom/dialout/1", None)
        .await
        .expect(404);
    r.alice.join_room(&r.token).await;
    // 400: no call in progress.
    let reply = r
        .alice
        .talk(Method::POST, &dial(r.phone_id), None)
        .await
        .expect(400);
    assert_eq!(reply.data()["error"], "room");
    r.bob.join_room(&r.token).await;
    r.bob.join_call(&r.token, 3).await;
    // 400: the caller is not in the call.
    let reply = r
        .alice
        .talk(Method::POST, &dial(r.phone_id), None)
        .await
        .expect(400);
    assert_eq!(reply.data()["error"], "call");
    r.alice.join_call(&r.token, 3).await;
    // 404: target not found, and target not a phone number.
    r.alice
        .talk(Method::POST, &dial(999_999), None)
        .await
        .expect(404);
    r.alice
        .talk(Method::POST, &dial(r.bob_id), None)
        .await
        .expect(404);
    // 501: no trunk configured.
    let reply = r
        .alice
        .talk(Method::POST, &dial(r.phone_id), None)
        .await
        .expect(501);
    assert_eq!(reply.data()["error"], "sip");
    // 403: no "start call" permission (custom permissions without CALL_START).
    r.set(
        "attendees/permissions",
        json!({"attendeeId": r.bob_id, "method": "remove", "permissions": 2}),
    )
    .await;
    let reply = r
        .bob
        .talk(Method::POST, &dial(r.phone_id), None)
        .await
        .expect(403);
    assert_eq!(reply.data()["error"], "permission");
    // 412: lobby, not a moderator.
    r.set("webinar/lobby", json!({"state": 1})).await;
    r.bob
        .talk(Method::POST, &dial(r.phone_id), None)
        .await
        .expect(412);
}

#[tokio::test]
async fn authentication_is_required() {
    let gw = Gateway::start("");
    let token = gw.client("alice").create_room(2).await;
    let path = format!("/room/{token}");
    let reply = gw
        .anonymous()
        .talk(Method::GET, &path, None)
        .await
        .expect(401);
    assert_eq!(reply.body["ocs"]["meta"]["status"], "failure");
    assert_eq!(reply.body["ocs"]["meta"]["statuscode"], 401);
    let anon = gw.anonymous();
    for bad in [
        "Bearer wrong-token-123",
        "Basic YWxpY2U6d3Jvbmc=",
        "Digest x",
        "Bearer",
    ] {
        anon.with_auth(bad)
            .talk(Method::GET, &path, None)
            .await
            .expect(401);
    }
    // Basic user:token works, but only with the token's own user.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:alice-token-0001");
    anon.with_auth(&format!("Basic {basic}"))
        .talk(Method::GET, &path, None)
        .await
        .expect(200);
    let basic = base64::engine::general_purpose::STANDARD.encode("bob:alice-token-0001");
    anon.with_auth(&format!("Basic {basic}"))
        .talk(Method::GET, &path, None)
        .await
        .expect(401);
}

#[tokio::test]
async fn bad_input_gets_a_clear_400_and_unknown_rooms_404() {
    let gw = Gateway::start("");
    let alice = gw.client("alice");
    let response = alice
        .request(Method::POST, &format!("{}/room", common::TALK))
        .header("Content-Type", "application/json")
        .body("{\"roomType\": 2, ")
        .send()
        .await
        .expect("request");
    let reply = alice
        .finish(Method::POST, &format!("{}/room", common::TALK), response)
        .await;
    let reply = reply.expect(400);
    assert!(
        reply.message().contains("malformed JSON"),
        "{}",
        reply.message()
    );

    let token = alice.create_room(3).await;
    for bad in ["4930123456", "+49 30 123", "+1234567", "+4930abc456"] {
        let reply = alice
            .talk(
                Method::POST,
                &format!("/room/{token}/participants"),
                Some(json!({"newParticipant": bad, "source": "phones"})),
            )
            .await
            .expect(400);
        assert!(reply.message().contains("E.164"), "{}", reply.message());
    }
    alice
        .talk(
            Method::POST,
            "/room",
            Some(json!({"roomType": 1, "roomName": "x"})),
        )
        .await
        .expect(400);
    alice
        .talk(
            Method::POST,
            "/room",
            Some(json!({"roomType": "two", "roomName": "x"})),
        )
        .await
        .expect(400);
    alice
        .talk(Method::GET, "/room/nosuchroom", None)
        .await
        .expect(404);
    alice
        .talk(Method::GET, "/room/nosuchroom/participants", None)
        .await
        .expect(404);
}

#[tokio::test]
async fn moderators_and_public_rooms() {
    let gw = Gateway::start("");
    let (alice, bob, carol) = (gw.client("alice"), gw.client("bob"), gw.client("carol"));
    let token = alice.create_room(3).await;
    // A public room lets any user join; they become a self-joined attendee.
    carol.join_room(&token).await;
    let room = carol
        .talk(Method::GET, &format!("/room/{token}"), None)
        .await
        .expect(200);
    assert_eq!(room.data()["participantType"], 5);
    // Only moderators add attendees; the owner promotes bob, who then can.
    let bob_id = alice.add_user(&token, "bob").await;
    bob.talk(
        Method::POST,
        &format!("/room/{token}/participants"),
        Some(json!({"newParticipant": "+4930999999", "source": "phones"})),
    )
    .await
    .expect(403);
    alice
        .talk(
            Method::POST,
            &format!("/room/{token}/moderators"),
            Some(json!({"attendeeId": bob_id})),
        )
        .await
        .expect(200);
    let phone = bob.add_phone(&token, "+4930999999").await;
    let listed = alice
        .talk(Method::GET, &format!("/room/{token}/participants"), None)
        .await
        .expect(200);
    let phone_entry = listed
        .data()
        .as_array()
        .and_then(|a| a.iter().find(|p| p["attendeeId"] == phone))
        .expect("phone listed")
        .clone();
    assert_eq!(phone_entry["actorType"], "phones");
    assert_eq!(phone_entry["phoneNumber"], "+4930999999");
    assert_eq!(phone_entry["callId"], "");
    // Moderators remove attendees; nobody removes the owner.
    bob.talk(
        Method::DELETE,
        &format!("/room/{token}/attendees"),
        Some(json!({"attendeeId": phone})),
    )
    .await
    .expect(200);
    let owner_id = alice
        .talk(Method::GET, &format!("/room/{token}"), None)
        .await
        .expect(200)
        .data()["attendeeId"]
        .as_i64()
        .expect("id");
    bob.talk(
        Method::DELETE,
        &format!("/room/{token}/attendees"),
        Some(json!({"attendeeId": owner_id})),
    )
    .await
    .expect(403);
    let listed = alice
        .talk(Method::GET, &format!("/room/{token}/participants"), None)
        .await
        .expect(200);
    assert_eq!(listed.data().as_array().map(Vec::len), Some(3));
    // GET /room lists the caller's rooms.
    let mine = carol.talk(Method::GET, "/room", None).await.expect(200);
    assert_eq!(mine.data().as_array().map(Vec::len), Some(1));
}
