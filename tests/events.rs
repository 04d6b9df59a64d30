//! The room event stream (SSE) against the real binary.

mod common;

use common::events::EventReader;
use common::Gateway;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn stream_shows_join_flags_ring_and_leave_in_order() {
    let gw = Gateway::start("");
    let (alice, bob, carol) = (gw.client("alice"), gw.client("bob"), gw.client("carol"));
    let token = alice.create_room(2).await;
    let bob_id = alice.add_user(&token, "bob").await;
    alice.add_user(&token, "carol").await;

    let open = |client: &common::Client| {
        client
            .request(Method::GET, &format!("/api/v1/rooms/{token}/events"))
            .send()
    };
    let response = open(&bob).await.expect("bob's stream");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/event-stream"));
    let mut bob_events = EventReader::new(response);
    let mut carol_events = EventReader::new(open(&carol).await.expect("carol's stream"));

    let alice_session = alice.join_room(&token).await;
    alice.join_call(&token, 7).await;
    alice
        .talk(
            Method::PUT,
            &format!("/call/{token}"),
            Some(json!({"flags": 3})),
        )
        .await
        .expect(200);
    alice
        .talk(Method::POST, &format!("/call/{token}/ring/{bob_id}"), None)
        .await
        .expect(200);
    alice
        .talk(
            Method::DELETE,
            &format!("/room/{token}/participants/active"),
            None,
        )
        .await
        .expect(200);

    let expected = [
        json!({"type": "participant-joined", "actorId": "alice", "sessionId": alice_session}),
        json!({"type": "participant-flags", "actorId": "alice", "inCall": 7}),
        json!({"type": "call-started", "actorId": "alice", "silent": false}),
        json!({"type": "participant-flags", "actorId": "alice", "inCall": 3}),
        json!({"type": "ring", "actorId": "bob", "callerActorId": "alice", "attendeeId": bob_id}),
        json!({"type": "participant-flags", "actorId": "alice", "inCall": 0}),
        json!({"type": "participant-left", "actorId": "alice", "sessionId": alice_session}),
        json!({"type": "call-ended", "all": false}),
    ];
    for want in &expected {
        let got = bob_events.next().await;
        for (key, value) in want.as_object().expect("object") {
            assert_eq!(&got[key], value, "event {got} should match {want}");
        }
    }
    // The ring was for bob only: carol's stream goes from the flag change straight to the leave.
    let mut carol_types = Vec::new();
    for _ in 0..expected.len() - 1 {
        carol_types.push(
            carol_events.next().await["type"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert!(!carol_types.iter().any(|t| t == "ring"), "{carol_types:?}");
    assert_eq!(carol_types.last().map(String::as_str), Some("call-ended"));
}

#[tokio::test]
async fn stream_needs_an_attendee_and_ends_on_shutdown() {
    let mut gw = Gateway::start("");
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let path = format!("/api/v1/rooms/{token}/events");
    let carol = gw.client("carol");
    let reply = carol.call(Method::GET, &path, None).await;
    assert_eq!(reply.status, 404);
    let reply = gw.anonymous().call(Method::GET, &path, None).await;
    assert_eq!(reply.status, 401);
    // An open stream does not keep the service from stopping on SIGTERM.
    let response = alice
        .request(Method::GET, &path)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    assert!(gw.terminate(), "clean exit on SIGTERM:\n{}", gw.log());
    drop(response);
}

#[tokio::test]
async fn a_removed_attendee_stream_ends_before_the_next_event() {
    let gw = Gateway::start("");
    let (alice, bob) = (gw.client("alice"), gw.client("bob"));
    let token = alice.create_room(2).await;
    let bob_id = alice.add_user(&token, "bob").await;
    let path = format!("/api/v1/rooms/{token}/events");
    let response = bob
        .request(Method::GET, &path)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    let mut bob_events = EventReader::new(response);

    alice
        .talk(
            Method::DELETE,
            &format!("/room/{token}/attendees"),
            Some(json!({"attendeeId": bob_id})),
        )
        .await
        .expect(200);
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;

    let seen = bob_events.rest().await;
    let types: Vec<&str> = seen.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["access-revoked"], "{seen:?}");
    assert_eq!(seen[0]["reason"], "removed");
    // And a new stream is refused.
    bob.call(Method::GET, &path, None).await.expect(404);
}

#[tokio::test]
async fn a_stream_ends_when_its_user_is_removed_by_the_command_line() {
    let gw = Gateway::start("");
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let path = format!("/api/v1/rooms/{token}/events");
    let response = alice
        .request(Method::GET, &path)
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    let mut events = EventReader::new(response);

    gw.cli(&["user", "remove", "alice"]);
    let seen = events.rest().await;
    assert!(seen.is_empty(), "{seen:?}");
    alice.call(Method::GET, &path, None).await.expect(401);
}
