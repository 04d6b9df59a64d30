//! Voice calls (seed 000) against the real binary and a push service on loopback: a call rings
//! every activated Web Push and UnifiedPush device of its recipients (each message decrypted with
//! the subscription's key, its VAPID token verified), answers in the seed's shape, and every end
//! of ringing replaces the ring (same Topic) on every device; 410 removes a registration; a slow
//! push service delays neither the answer nor other devices; each refusal names its field. In
//! Chromium: a signed-in page rings on a voice call, answers it and talks; a cancel stops it.

mod common;

use common::browser::Browsers;
use common::events::EventReader;
use common::push::{verify_vapid, Mode, PushService, Subscription};
use common::{token_of, Client, Gateway, Reply};
use reqwest::Method;
use serde_json::{json, Value};

/// alice's room with bob and carol in it.
async fn room(gw: &Gateway) -> String {
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    alice.add_user(&token, "bob").await;
    alice.add_user(&token, "carol").await;
    token
}

/// A request with the seed's headers (`X-Auth-Token`, `X-User-Id`) instead of `Authorization`.
async fn seed_call(gw: &Gateway, user: &str, method: Method, path: &str, body: Value) -> Reply {
    let client = gw.anonymous();
    let response = client
        .request(method.clone(), path)
        .header("X-Auth-Token", token_of(user))
        .header("X-User-Id", user)
        .json(&body)
        .send()
        .await
        .expect("request");
    client.finish(method, path, response).await
}

fn call_body(room: &str, users: &[&str]) -> Value {
    json!({
        "notificationMessage": "Incoming call",
        "onlyAudio": true,
        "roomUrl": format!("https://meet.example/{room}"),
        "senderName": "Alice",
        "serverName": "https://chat.example",
        "userIds": users,
        "roomId": room,
        "additionalInfo": {"device": "iPhone"},
    })
}

/// Registers `sub` for `user` as `kind`, reads the activation message the gateway pushes through
/// it and posts it back; the registration's id.
async fn register(
    gw: &Gateway,
    push: &mut PushService,
    user: &str,
    kind: &str,
    sub: &Subscription,
) -> String {
    let client = gw.client(user);
    let reply = client
        .call(
            Method::POST,
            "/api/v1/push.token",
            Some(json!({"type": kind, "value": sub.json(), "appName": "test", "deviceId": format!("{user}-{kind}")})),
        )
        .await
        .expect(200);
    let id = reply.body["result"]["id"].as_str().expect("id").to_string();
    assert_eq!(reply.body["result"]["activated"], false);
    let pushed = push.next().await;
    let activation = sub.open(&pushed);
    assert_eq!(activation["type"], "activation");
    assert_eq!(activation["id"], id.as_str());
    client
        .call(
            Method::POST,
            "/api/v1/push.token/activate",
            Some(json!({"id": id, "activationToken": "wrong"})),
        )
        .await
        .expect(400);
    client
        .call(
            Method::POST,
            "/api/v1/push.token/activate",
            Some(json!({"id": id, "activationToken": activation["activationToken"]})),
        )
        .await
        .expect(200);
    id
}

async fn vapid_key(client: &Client) -> String {
    let reply = client
        .call(Method::GET, "/api/v1/push.vapid", None)
        .await
        .expect(200);
    reply.body["publicKey"].as_str().expect("key").to_string()
}

async fn info(client: &Client, call: &str) -> Value {
    client
        .call(
            Method::GET,
            &format!("/api/v1/voice.call.info?callId={call}"),
            None,
        )
        .await
        .expect(200)
        .body["result"]
        .clone()
}

#[tokio::test]
async fn a_call_rings_every_device_and_each_end_of_ringing_replaces_the_ring() {
    let gw = Gateway::start("");
    let mut push = PushService::start().await;
    let token = room(&gw).await;
    let web = push.subscribe("bob-web");
    let unified = push.subscribe("bob-unified");
    let web_id = register(&gw, &mut push, "bob", "webpush", &web).await;
    let unified_id = register(&gw, &mut push, "bob", "unifiedpush", &unified).await;
    let key = vapid_key(&gw.client("bob")).await;
    let mut bob_events = EventReader::open_user(&gw.client("bob")).await;

    // The seed's request, with the seed's headers.
    let reply = seed_call(
        &gw,
        "alice",
        Method::POST,
        "/api/v1/voice.call",
        call_body(&token, &["bob", "carol"]),
    )
    .await
    .expect(200);
    let result = &reply.body["result"];
    assert_eq!(reply.body["success"], true);
    // bob is reached on his first device (by registration id, never the endpoint); carol has none.
    assert_eq!(result["sentTo"], json!({"bob": web_id}));
    let call = result["callId"].as_str().expect("callId").to_string();
    let deliveries = result["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    assert!(deliveries.contains(
        &json!({"userId": "carol", "deviceId": null, "transport": null, "result": "no_device"})
    ));
    for (id, transport) in [(&web_id, "webpush"), (&unified_id, "unifiedpush")] {
        assert!(
            deliveries.iter().any(|d| d["deviceId"] == id.as_str()
                && d["transport"] == transport
                && d["result"] == "sent"),
            "{deliveries:?}"
        );
    }

    // Each device gets the ring, encrypted to it, VAPID-signed, high urgency, the call as topic.
    let rings = push.next_each(2).await;
    for (name, sub) in [("bob-web", &web), ("bob-unified", &unified)] {
        let ring = &rings[name];
        verify_vapid(ring, &key, &push.base);
        assert_eq!(ring.headers["urgency"], "high");
        assert_eq!(ring.headers["topic"], call.as_str());
        assert_eq!(ring.headers["ttl"], "30");
        let payload = sub.open(ring);
        assert_eq!(payload["notificationType"], "callInvite");
        assert_eq!(payload["callId"], call.as_str());
        assert_eq!(payload["roomId"], token.as_str());
        assert_eq!(payload["senderId"], "alice");
        assert_eq!(payload["senderName"], "Alice");
        assert_eq!(payload["serverName"], "https://chat.example");
        assert_eq!(payload["roomUrl"], format!("https://meet.example/{token}"));
        assert_eq!(payload["onlyAudio"], true);
        assert_eq!(payload["message"], "Incoming call");
        assert_eq!(payload["additionalInfo"], json!({"device": "iPhone"}));
    }
    let ringing = bob_events.next_of("voice-call").await;
    assert_eq!(ringing["callId"], call.as_str());

    // The sender cancels: every device gets a callCancel with the ring's topic.
    let alice = gw.client("alice");
    gw.client("bob")
        .call(
            Method::POST,
            "/api/v1/voice.call.cancel",
            Some(json!({"callId": call})),
        )
        .await
        .expect(403);
    alice
        .call(
            Method::POST,
            "/api/v1/voice.call.cancel",
            Some(json!({"callId": call})),
        )
        .await
        .expect(200);
    let cancels = push.next_each(2).await;
    for (name, sub) in [("bob-web", &web), ("bob-unified", &unified)] {
        let cancel = &cancels[name];
        assert_eq!(cancel.headers["topic"], call.as_str(), "replaces the ring");
        verify_vapid(cancel, &key, &push.base);
        let payload = sub.open(cancel);
        assert_eq!(payload["notificationType"], "callCancel");
        assert_eq!(payload["reason"], "canceled");
        assert_eq!(payload["callId"], call.as_str());
    }
    let stop = bob_events.next_of("stop-ringing").await;
    assert_eq!(stop["callId"], call.as_str());
    assert_eq!(stop["reason"], "canceled");
    let missed = bob_events.next_of("missed-call").await;
    assert_eq!(missed["userJid"], "alice");
    assert_eq!(info(&alice, &call).await["status"], "canceled");
    gw.client("carol")
        .call(
            Method::POST,
            "/api/v1/voice.call.accept",
            Some(json!({"callId": "no-such-call"})),
        )
        .await
        .expect(404);
    gw.client("bob")
        .call(
            Method::POST,
            "/api/v1/voice.call.accept",
            Some(json!({"callId": call})),
        )
        .await
        .expect(409);
    let log = gw
        .client("carol")
        .call(Method::GET, "/api/v1/direct-calls/logs", None)
        .await
        .expect(200)
        .body;
    assert_eq!(log["callLogs"][0]["callState"], "missed", "{log}");

    // A second call, answered: the ringing stops on every device ("answered").
    let reply = alice
        .call(
            Method::POST,
            "/api/v1/voice.call",
            Some(call_body(&token, &["bob"])),
        )
        .await
        .expect(200);
    let second = reply.body["result"]["callId"]
        .as_str()
        .expect("id")
        .to_string();
    push.next_each(2).await;
    gw.client("bob")
        .call(
            Method::POST,
            "/api/v1/voice.call.accept",
            Some(json!({"callId": second})),
        )
        .await
        .expect(200);
    let stops = push.next_each(2).await;
    for (name, sub) in [("bob-web", &web), ("bob-unified", &unified)] {
        let payload = sub.open(&stops[name]);
        assert_eq!(payload["notificationType"], "callCancel");
        assert_eq!(payload["reason"], "answered");
        assert_eq!(stops[name].headers["topic"], second.as_str());
    }
    assert_eq!(info(&alice, &second).await["status"], "accepted");
    gw.client("bob")
        .call(
            Method::POST,
            "/api/v1/voice.call.end",
            Some(json!({"callId": second})),
        )
        .await
        .expect(200);
    assert_eq!(info(&alice, &second).await["status"], "ended");
    gw.client("carol")
        .call(
            Method::GET,
            &format!("/api/v1/voice.call.info?callId={second}"),
            None,
        )
        .await
        .expect(404);
}

#[tokio::test]
async fn an_unanswered_call_is_missed_when_its_ring_times_out() {
    let gw = Gateway::start("[push]\nring_time = 2\n");
    let mut push = PushService::start().await;
    let token = room(&gw).await;
    let web = push.subscribe("bob-web");
    register(&gw, &mut push, "bob", "webpush", &web).await;
    let alice = gw.client("alice");
    let reply = alice
        .call(
            Method::POST,
            "/api/v1/voice.call",
            Some(call_body(&token, &["bob"])),
        )
        .await
        .expect(200);
    let call = reply.body["result"]["callId"]
        .as_str()
        .expect("id")
        .to_string();
    let ring = push.next().await;
    assert_eq!(web.open(&ring)["notificationType"], "callInvite");
    let stop = push.next().await;
    let payload = web.open(&stop);
    assert_eq!(payload["notificationType"], "callCancel");
    assert_eq!(payload["reason"], "timeout");
    assert_eq!(stop.headers["topic"], call.as_str());
    assert_eq!(info(&alice, &call).await["status"], "missed");
}

#[tokio::test]
async fn a_gone_subscription_is_removed_and_a_slow_one_delays_nobody() {
    let gw = Gateway::start("");
    let mut push = PushService::start().await;
    let token = room(&gw).await;
    let slow = push.subscribe("bob-slow");
    let gone = push.subscribe("bob-gone");
    let quick = push.subscribe("carol-web");
    register(&gw, &mut push, "bob", "webpush", &slow).await;
    let gone_id = register(&gw, &mut push, "bob", "webpush", &gone).await;
    register(&gw, &mut push, "carol", "webpush", &quick).await;
    push.set_mode("bob-slow", Mode::Slow);
    push.set_mode("bob-gone", Mode::Gone);

    let alice = gw.client("alice");
    let reply = alice
        .call(
            Method::POST,
            "/api/v1/voice.call",
            Some(call_body(&token, &["bob", "carol"])),
        )
        .await
        .expect(200);
    let call = reply.body["result"]["callId"]
        .as_str()
        .expect("id")
        .to_string();
    // Each of the three got its ring; the slow endpoint had not answered when the API had, nor
    // when carol's device had its ring.
    let rings = push.next_each(3).await;
    let slow_ring = &rings["bob-slow"];
    assert!(
        !slow_ring.answered.load(std::sync::atomic::Ordering::SeqCst),
        "the API answered only after the slow push service"
    );
    assert_eq!(quick.open(&rings["carol-web"])["callId"], call.as_str());

    // The gone subscription's delivery is `gone`, and the registration no longer exists.
    let mut last = Value::Null;
    let mut attempts = 0;
    while attempts < 100 {
        last = info(&alice, &call).await;
        let found = last["deliveries"].as_array().is_some_and(|list| {
            list.iter()
                .any(|d| d["deviceId"] == gone_id.as_str() && d["result"] == "gone")
        });
        if found {
            break;
        }
        attempts += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(attempts < 100, "no gone delivery: {last}");
    gw.client("bob")
        .call(
            Method::DELETE,
            "/api/v1/push.token",
            Some(json!({"token": gone_id})),
        )
        .await
        .expect(404);
}

#[tokio::test]
async fn refusals_name_their_field() {
    let gw = Gateway::start("");
    let token = room(&gw).await;
    let alice = gw.client("alice");
    let refused = |reply: Reply, field: &str| {
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.body["success"], false);
        assert!(
            reply.body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(field)),
            "{field}: {}",
            reply.body
        );
        reply.body["errorType"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for field in [
        "roomUrl",
        "senderName",
        "serverName",
        "notificationMessage",
        "roomId",
        "onlyAudio",
    ] {
        let mut body = call_body(&token, &["bob"]);
        body.as_object_mut().map(|o| o.remove(field));
        let reply = alice
            .call(Method::POST, "/api/v1/voice.call", Some(body))
            .await;
        assert_eq!(refused(reply, field), "error-invalid-params");
    }
    let mut body = call_body(&token, &["bob"]);
    body.as_object_mut().map(|o| o.remove("userIds"));
    let reply = alice
        .call(Method::POST, "/api/v1/voice.call", Some(body))
        .await;
    assert_eq!(refused(reply, "userIds"), "error-invalid-params");
    let mut body = call_body(&token, &["bob"]);
    body["onlyAudio"] = json!("yes");
    let reply = alice
        .call(Method::POST, "/api/v1/voice.call", Some(body))
        .await;
    assert_eq!(refused(reply, "onlyAudio"), "error-invalid-params");
    let mut body = call_body(&token, &["bob"]);
    body["userIds"] = json!("bob");
    let reply = alice
        .call(Method::POST, "/api/v1/voice.call", Some(body))
        .await;
    assert_eq!(refused(reply, "userIds"), "error-invalid-params");

    // Someone who is not an attendee is refused by name; userNames work like userIds.
    let other = gw.client("bob").create_room(2).await;
    gw.client("bob").add_user(&other, "alice").await;
    let mut body = call_body(&other, &[]);
    body.as_object_mut().map(|o| o.remove("userIds"));
    body["userNames"] = json!(["carol"]);
    let reply = alice
        .call(Method::POST, "/api/v1/voice.call", Some(body))
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.body["errorType"], "error-invalid-user");
    assert!(
        reply.body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("userNames") && e.contains("carol")),
        "{}",
        reply.body
    );
    assert!(rings_everyone(&alice, &other).await);

    // Wrong seed credentials: the seed's 401.
    let client = gw.anonymous();
    let response = client
        .request(Method::POST, "/api/v1/voice.call")
        .header("X-Auth-Token", token_of("alice"))
        .header("X-User-Id", "bob")
        .json(&call_body(&token, &["bob"]))
        .send()
        .await
        .expect("request");
    let reply = client
        .finish(Method::POST, "/api/v1/voice.call", response)
        .await
        .expect(401);
    assert_eq!(reply.body["status"], "error");

    // Push registrations.
    let bob = gw.client("bob");
    for (body, field) in [
        (json!({"type": "sms", "value": "x", "appName": "a"}), "type"),
        (json!({"type": "apn", "appName": "a"}), "value"),
        (json!({"type": "gcm", "value": "x"}), "appName"),
        (
            json!({"type": "webpush", "value": "https://push.example/x", "appName": "a"}),
            "value",
        ),
        (
            json!({"type": "unifiedpush", "value": "ftp://x", "appName": "a"}),
            "value",
        ),
    ] {
        let reply = bob
            .call(Method::POST, "/api/v1/push.token", Some(body))
            .await;
        refused(reply, field);
    }
    // UnifiedPush takes the bare endpoint URL; deleting by value works as by id.
    bob.call(
        Method::POST,
        "/api/v1/push.token",
        Some(json!({"type": "unifiedpush", "value": "http://127.0.0.1:9/up", "appName": "a"})),
    )
    .await
    .expect(200);
    bob.call(
        Method::DELETE,
        "/api/v1/push.token",
        Some(json!({"token": "http://127.0.0.1:9/up"})),
    )
    .await
    .expect(200);
    bob.call(
        Method::DELETE,
        "/api/v1/push.token",
        Some(json!({"token": "http://127.0.0.1:9/up"})),
    )
    .await
    .expect(404);
}

/// Whether a call into `room` with everyone in it goes through (so the refusal above was about
/// the user, not the room).
async fn rings_everyone(alice: &Client, room: &str) -> bool {
    let mut body = call_body(room, &["bob"]);
    body["senderId"] = json!("alice");
    alice
        .call(Method::POST, "/api/v1/voice.call", Some(body))
        .await
        .status
        == 200
}

#[tokio::test]
async fn a_signed_in_page_rings_answers_and_stops_ringing_when_cancelled() {
    let gw = Gateway::start("");
    let token = room(&gw).await;
    let alice = gw.client("alice");
    let mut browsers = Browsers::start();
    browsers.launch("alice", 440.0).await;
    browsers.launch("bob", 1000.0).await;
    browsers.sign_in("alice", &gw.base, "alice").await;
    browsers.open_room("alice", "Test room").await;
    browsers.click("alice", "#join-call").await;
    browsers.wait_text("alice", "#people", "in the call").await;
    browsers.sign_in("bob", &gw.base, "bob").await;

    let reply = seed_call(
        &gw,
        "alice",
        Method::POST,
        "/api/v1/voice.call",
        call_body(&token, &["bob"]),
    )
    .await
    .expect(200);
    let call = reply.body["result"]["callId"]
        .as_str()
        .expect("id")
        .to_string();
    browsers
        .wait_text("bob", "#incoming-title", "Alice is calling (audio)")
        .await;
    browsers.screenshot("bob", "voice-call-ringing.png").await;
    browsers.click("bob", "#answer").await;
    browsers.wait_to_hear("alice", 1000.0, 440.0).await;
    browsers.wait_to_hear("bob", 440.0, 1000.0).await;
    assert_eq!(info(&alice, &call).await["status"], "accepted");
    browsers.click("bob", "#leave-call").await;
    browsers.wait_visible("bob", "#join-call").await;

    // A second call, cancelled by its sender: the page stops ringing; the call was missed.
    let reply = alice
        .call(
            Method::POST,
            "/api/v1/voice.call",
            Some(call_body(&token, &["bob"])),
        )
        .await
        .expect(200);
    let second = reply.body["result"]["callId"]
        .as_str()
        .expect("id")
        .to_string();
    browsers
        .wait_text("bob", "#incoming-title", "Alice is calling")
        .await;
    alice
        .call(
            Method::POST,
            "/api/v1/voice.call.cancel",
            Some(json!({"callId": second})),
        )
        .await
        .expect(200);
    browsers
        .wait_text("bob", "#notice", "Missed call from alice.")
        .await;
    assert!(!browsers.visible("bob", "#incoming").await);
    browsers.close().await;
}

#[tokio::test]
async fn apns_gets_a_voip_push_for_the_call_and_alert_pushes_for_its_end() {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let mut apns = PushService::start().await;
    // The test's .p8 key: a fixed P-256 key in PKCS#8 PEM.
    let key = p256::SecretKey::from_slice(&[7u8; 32]).expect("key");
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem");
    let dir = tempfile::tempdir().expect("tempdir");
    let key_path = dir.path().join("AuthKey_KEYID12345.p8");
    std::fs::write(&key_path, pem.as_bytes()).expect("write key");
    let gw = Gateway::start(&format!(
        "[push.apns]\nkey = \"{}\"\nkey_id = \"KEYID12345\"\nteam_id = \"TEAM123456\"\nbundle_id = \"com.example.chat\"\nurl = \"{}\"\n",
        key_path.display(),
        apns.base
    ));
    let token = room(&gw).await;
    let bob = gw.client("bob");
    for (value, voip) in [("voiptoken1", true), ("alerttoken1", false)] {
        let reply = bob
            .call(
                Method::POST,
                "/api/v1/push.token",
                Some(json!({"type": "apn", "value": value, "appName": "chat", "deviceId": "iphone", "voip": voip})),
            )
            .await
            .expect(200);
        assert_eq!(reply.body["result"]["activated"], true);
    }
    let alice = gw.client("alice");
    let reply = alice
        .call(
            Method::POST,
            "/api/v1/voice.call",
            Some(call_body(&token, &["bob"])),
        )
        .await
        .expect(200);
    // An APNs device is named by its device token, as in the seed.
    assert_eq!(reply.body["result"]["sentTo"], json!({"bob": "voiptoken1"}));
    let call = reply.body["result"]["callId"]
        .as_str()
        .expect("id")
        .to_string();
    let public = key.public_key().to_sec1_bytes();
    let check = |pushed: &common::push::Pushed, push_type: &str, topic: &str| -> Value {
        assert_eq!(pushed.version, axum::http::Version::HTTP_2);
        assert_eq!(pushed.headers["apns-push-type"], push_type);
        assert_eq!(pushed.headers["apns-topic"], topic);
        assert_eq!(pushed.headers["apns-priority"], "10");
        assert_eq!(pushed.headers["apns-collapse-id"], call.as_str());
        assert!(pushed.headers.contains_key("apns-expiration"));
        let jwt = pushed.headers["authorization"]
            .to_str()
            .expect("ascii")
            .strip_prefix("bearer ")
            .expect("bearer token")
            .to_string();
        let (head, claims) = common::push::verify_es256(&jwt, &public);
        assert_eq!(head["kid"], "KEYID12345");
        assert_eq!(claims["iss"], "TEAM123456");
        assert!(claims["iat"].is_u64(), "{claims}");
        serde_json::from_slice(&pushed.body).expect("json body")
    };
    let rings = apns.next_each(2).await;
    let voip = check(
        &rings["/3/device/voiptoken1"],
        "voip",
        "com.example.chat.voip",
    );
    assert_eq!(voip["notificationType"], "callInvite");
    assert_eq!(voip["callId"], call.as_str());
    assert_eq!(voip["roomUrl"], format!("https://meet.example/{token}"));
    assert_eq!(voip["aps"], json!({}));
    let alert = check(&rings["/3/device/alerttoken1"], "alert", "com.example.chat");
    assert_eq!(alert["aps"]["alert"]["title"], "Alice is calling");
    assert_eq!(alert["aps"]["category"], "INCOMING_CALL");

    alice
        .call(
            Method::POST,
            "/api/v1/voice.call.cancel",
            Some(json!({"callId": call})),
        )
        .await
        .expect(200);
    // The end goes to the alert token only (a VoIP push must ring CallKit).
    let cancel = apns.next().await;
    assert_eq!(cancel.endpoint, "/3/device/alerttoken1");
    let body = check(&cancel, "alert", "com.example.chat");
    assert_eq!(body["notificationType"], "callCancel");
    assert_eq!(body["reason"], "canceled");
    assert_eq!(body["aps"]["alert"]["title"], "Missed call from Alice");
}

#[tokio::test]
async fn fcm_gets_high_priority_data_messages_with_a_service_account_token() {
    let mut fcm = PushService::start().await;
    let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa key");
    let key = openssl::pkey::PKey::from_rsa(rsa).expect("pkey");
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8().expect("pem")).expect("utf8");
    let dir = tempfile::tempdir().expect("tempdir");
    let account = dir.path().join("service-account.json");
    let token_uri = format!("{}/token", fcm.base);
    std::fs::write(
        &account,
        json!({"type": "service_account", "project_id": "chat-test", "client_email": "push@chat-test.iam.gserviceaccount.com", "private_key": pem, "token_uri": token_uri}).to_string(),
    )
    .expect("write account");
    let gw = Gateway::start(&format!(
        "[push.fcm]\nservice_account = \"{}\"\nurl = \"{}\"\n",
        account.display(),
        fcm.base
    ));
    let token = room(&gw).await;
    gw.client("bob")
        .call(
            Method::POST,
            "/api/v1/push.token",
            Some(json!({"type": "gcm", "value": "fcm-token-1", "appName": "chat"})),
        )
        .await
        .expect(200);
    let alice = gw.client("alice");
    let reply = alice
        .call(
            Method::POST,
            "/api/v1/voice.call",
            Some(call_body(&token, &["bob"])),
        )
        .await
        .expect(200);
    assert_eq!(
        reply.body["result"]["sentTo"],
        json!({"bob": "fcm-token-1"})
    );
    let call = reply.body["result"]["callId"]
        .as_str()
        .expect("id")
        .to_string();

    // The OAuth2 exchange: an RS256 assertion signed with the service account's key.
    let exchange = fcm.next().await;
    assert_eq!(exchange.endpoint, "/token");
    let form = String::from_utf8(exchange.body.to_vec()).expect("form");
    let assertion = form
        .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
        .expect("a jwt-bearer grant");
    let parts: Vec<&str> = assertion.split('.').collect();
    let decode = |p: &str| {
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).expect("b64")
    };
    let head: Value = serde_json::from_slice(&decode(parts[0])).expect("json");
    assert_eq!(head["alg"], "RS256");
    let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key)
        .expect("verifier");
    verifier
        .update(format!("{}.{}", parts[0], parts[1]).as_bytes())
        .expect("update");
    assert!(
        verifier.verify(&decode(parts[2])).expect("verify"),
        "the assertion's signature"
    );
    let claims: Value = serde_json::from_slice(&decode(parts[1])).expect("json");
    assert_eq!(claims["iss"], "push@chat-test.iam.gserviceaccount.com");
    assert_eq!(claims["aud"], token_uri.as_str());
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );

    let check = |pushed: &common::push::Pushed| -> Value {
        assert_eq!(pushed.endpoint, "/v1/projects/chat-test/messages:send");
        assert_eq!(
            pushed.headers["authorization"],
            format!("Bearer {}", common::push::ACCESS_TOKEN).as_str()
        );
        let body: Value = serde_json::from_slice(&pushed.body).expect("json");
        let message = &body["message"];
        assert_eq!(message["token"], "fcm-token-1");
        assert_eq!(message["android"]["priority"], "HIGH");
        assert_eq!(message["android"]["collapse_key"], call.as_str());
        assert_eq!(message["android"]["ttl"], "30s");
        // Data values are strings.
        assert_eq!(message["data"]["onlyAudio"], "true");
        assert_eq!(message["data"]["callId"], call.as_str());
        message["data"].clone()
    };
    let ring = check(&fcm.next().await);
    assert_eq!(ring["notificationType"], "callInvite");
    assert_eq!(ring["roomId"], token.as_str());
    assert_eq!(ring["additionalInfo"], "{\"device\":\"iPhone\"}");

    alice
        .call(
            Method::POST,
            "/api/v1/voice.call.cancel",
            Some(json!({"callId": call})),
        )
        .await
        .expect(200);
    // The access token is reused: the next request is the message itself.
    let cancel = check(&fcm.next().await);
    assert_eq!(cancel["notificationType"], "callCancel");
    assert_eq!(cancel["reason"], "canceled");
}

/// The titles and actions of the notifications the page's service worker shows.
const NOTIFICATIONS: &str = "navigator.serviceWorker.ready.then((r) => r.getNotifications()).then((list) => list.map((n) => ({title: n.title, tag: n.tag, actions: n.actions.map((a) => a.action)})))";

/// Waits until the service worker shows a notification titled `title`; the notifications.
async fn wait_notification(browsers: &mut Browsers, name: &str, title: &str) -> Value {
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = browsers.evaluate(name, NOTIFICATIONS).await;
        let found = shown
            .as_array()
            .is_some_and(|list| list.iter().any(|n| n["title"] == title));
        if found {
            return shown;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no notification {title:?}: {shown}");
}

/// The service worker's side, with the page closed: the ring the gateway pushed (decrypted by
/// the test's push service, since a browser here reaches no real push service) is handed to the
/// worker as a push message (CDP); it shows a ringing notification with answer and decline, and
/// the cancel replaces it.
#[tokio::test]
async fn the_service_worker_rings_with_answer_and_decline_and_a_cancel_replaces_it() {
    let gw = Gateway::start("");
    let mut push = PushService::start().await;
    let token = room(&gw).await;
    let device = push.subscribe("bob-web");
    register(&gw, &mut push, "bob", "webpush", &device).await;
    let mut browsers = Browsers::start();
    browsers.launch("bob", 1000.0).await;
    browsers.sign_in("bob", &gw.base, "bob").await;
    // The page registered its service worker; now it is closed.
    browsers.goto("bob", "about:blank").await;

    let alice = gw.client("alice");
    let reply = alice
        .call(
            Method::POST,
            "/api/v1/voice.call",
            Some(call_body(&token, &["bob"])),
        )
        .await
        .expect(200);
    let call = reply.body["result"]["callId"]
        .as_str()
        .expect("id")
        .to_string();
    let ring = device.open(&push.next().await);
    browsers
        .deliver_push("bob", &gw.base, &ring.to_string())
        .await;
    alice
        .call(
            Method::POST,
            "/api/v1/voice.call.cancel",
            Some(json!({"callId": call})),
        )
        .await
        .expect(200);
    let cancel = device.open(&push.next().await);

    browsers.goto("bob", &format!("{}/", gw.base)).await;
    let shown = wait_notification(&mut browsers, "bob", "Alice is calling").await;
    let ringing = &shown[0];
    assert_eq!(ringing["tag"], call.as_str());
    assert_eq!(ringing["actions"], json!(["answer", "decline"]));
    browsers
        .deliver_push("bob", &gw.base, &cancel.to_string())
        .await;
    let shown = wait_notification(&mut browsers, "bob", "Missed call: Alice").await;
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "replaced: {shown}");
    browsers.close().await;
}
