//! SRTP with SDES keys on phone legs: the real binary dials a SIPp phone that answers with
//! RTP/SAVP, and the phone's media socket encrypts and decrypts with the test's own SRTP
//! implementation (tests/common/srtp.rs, not the gateway's crate), so tones heard both ways
//! prove the encryption interoperates. A phone that encrypts with another key than it announced
//! is refused with a log line.

mod common;

use common::ports::Tp;
use common::sipp::Sipp;
use common::srtp::{derive, inline_key, SrtpStream};
use common::telephony::{assert_nothing_left, trunk, wait_for, EventReader, PhoneMedia};
use common::webrtc_client::{Offer, WebRtcClient};
use common::{Client, Gateway, FAST_TIMERS};
use reqwest::Method;
use serde_json::json;

const PHONE: &str = "+4930123456";
const PHONE_TONE: f64 = 1000.0;
const BROWSER_TONE: f64 = 440.0;
/// The phone's SDES key||salt, as its answer announces it.
const PHONE_KEY: [u8; 30] = *b"phone-master-key-and-its-salt!";

fn b64(key: &[u8; 30]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}

async fn room_in_call(gw: &Gateway) -> (Client, String, i64, WebRtcClient, EventReader) {
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    let phone = alice.add_phone(&token, PHONE).await;
    alice.join_room(&token).await;
    alice.join_call(&token, 3).await;
    let offer = Offer::new(false);
    let answer = alice.join_media(&token, &offer.sdp).await;
    let browser = offer.start(&answer, BROWSER_TONE);
    let events = EventReader::open(&alice, &token).await;
    (alice, token, phone, browser, events)
}

/// The gateway's key, from the offer in the INVITE SIPp received.
fn gateway_key(sipp: &Sipp) -> [u8; 30] {
    let trace = sipp.trace();
    let invite = &trace[trace.find("INVITE sip:").expect("INVITE in the trace")..];
    assert!(
        invite.contains("m=audio ") && invite.contains(" RTP/SAVP "),
        "{invite}"
    );
    assert!(
        invite.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:")
            && invite.contains("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"),
        "{invite}"
    );
    inline_key(invite).expect("the offer's first key")
}

/// Dials the phone through a trunk with `srtp = "required"`; the phone encrypts with
/// `phone_sends_with` (its announced key, or not).
/// A moderator ends the call for everyone: the phone leg is cleared, the SIPp scenario ends
/// well, and nothing is left behind.
async fn end_for_all(
    gw: &Gateway,
    alice: &Client,
    token: &str,
    events: &mut EventReader,
    call_id: &str,
    sipp: Sipp,
) {
    alice
        .talk(
            Method::DELETE,
            &format!("/call/{token}"),
            Some(json!({"all": true})),
        )
        .await
        .expect(200);
    let rest = events.statuses(call_id).await;
    assert_eq!(rest.last().expect("final")["status"], "cleared");
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    assert_nothing_left(gw).await;
}

async fn dial_srtp_phone(
    phone_sends_with: [u8; 30],
) -> (
    Gateway,
    Client,
    String,
    WebRtcClient,
    EventReader,
    PhoneMedia,
    Sipp,
    String,
) {
    let media = PhoneMedia::start_srtp(PHONE_TONE);
    let mport = media.addr.port().to_string();
    let sipp = Sipp::uas(
        "dialout_answer_srtp.xml",
        Tp::Udp,
        &[
            "-set",
            "mhost",
            "127.0.0.1",
            "-set",
            "mport",
            &mport,
            "-set",
            "key",
            &b64(&PHONE_KEY),
        ],
    )
    .await;
    let gw = Gateway::start_with_sip(
        FAST_TIMERS,
        &trunk(sipp.port, Tp::Udp, "srtp = \"required\"\n"),
    );
    let (alice, token, phone, browser, mut events) = room_in_call(&gw).await;
    let reply = alice
        .talk(
            Method::POST,
            &format!("/call/{token}/dialout/{phone}"),
            None,
        )
        .await
        .expect(200);
    let call_id = reply.data()["callid"].as_str().expect("callid").to_string();
    events.reach("connected").await;
    media.set_srtp(&phone_sends_with, &gateway_key(&sipp), 10);
    (gw, alice, token, browser, events, media, sipp, call_id)
}

#[tokio::test]
async fn a_dial_out_with_srtp_required_is_heard_both_ways_through_another_implementation() {
    let (gw, alice, token, browser, mut events, media, sipp, call_id) =
        dial_srtp_phone(PHONE_KEY).await;
    wait_for(
        "the browser hearing the phone's SRTP tone",
        || browser.hears(PHONE_TONE) > 0.5,
        || {
            format!(
                "browser hears {:.3}\n{}",
                browser.hears(PHONE_TONE),
                gw.log()
            )
        },
    )
    .await;
    wait_for(
        "the phone decrypting the room's tone",
        || media.hears(BROWSER_TONE) > 0.5,
        || {
            format!(
                "phone hears {:.3} ({})",
                media.hears(BROWSER_TONE),
                media.describe()
            )
        },
    )
    .await;
    assert!(!gw.log().contains("SRTP packet refused"), "{}", gw.log());
    end_for_all(&gw, &alice, &token, &mut events, &call_id, sipp).await;
}

#[tokio::test]
async fn a_phone_that_encrypts_with_another_key_is_refused_with_a_log_line() {
    let wrong = *b"not-the-key-the-answer-named!!";
    let (gw, alice, token, browser, mut events, media, sipp, call_id) =
        dial_srtp_phone(wrong).await;
    // The room's audio still reaches the phone (our key is right); the phone's is refused.
    wait_for(
        "the phone decrypting the room's tone",
        || media.hears(BROWSER_TONE) > 0.5,
        || {
            format!(
                "phone hears {:.3} ({})",
                media.hears(BROWSER_TONE),
                media.describe()
            )
        },
    )
    .await;
    wait_for(
        "the gateway's log line about the refused SRTP",
        || {
            gw.log()
                .contains("SRTP packet refused: authentication failed (wrong key?)")
        },
        || gw.log(),
    )
    .await;
    assert!(
        browser.hears(PHONE_TONE) < 0.1,
        "the room heard an unauthenticated phone"
    );
    // The gateway goes on serving: the call ends normally.
    end_for_all(&gw, &alice, &token, &mut events, &call_id, sipp).await;
}

/// A caller offering only SRTP (RTP/SAVP, the _32 suite) is answered with SRTP and its own
/// key, joins the room, and both sides hear each other.
#[tokio::test]
async fn a_caller_that_offers_srtp_is_answered_with_it_and_heard_both_ways() {
    let gw = Gateway::start_with_sip(
        FAST_TIMERS,
        "[[inbound]]\nname = \"carrier\"\nallowed_sources = [\"127.0.0.1\"]\n",
    );
    let (alice, token, _phone, browser, mut events) = room_in_call(&gw).await;
    alice
        .call(
            Method::PUT,
            &format!("/api/v1/rooms/{token}/dialin"),
            Some(json!({"number": PHONE})),
        )
        .await
        .expect(200);
    let media = PhoneMedia::start_srtp(PHONE_TONE);
    let mport = media.addr.port().to_string();
    let sipp = Sipp::uac(
        gw.sip_udp.expect("SIP UDP address"),
        "uac_call_srtp.xml",
        Tp::Udp,
        PHONE,
        "Carrier SBC",
        &[
            "-set",
            "mhost",
            "127.0.0.1",
            "-set",
            "mport",
            &mport,
            "-set",
            "key",
            &b64(&PHONE_KEY),
        ],
    );
    let up = events.reach("connected").await;
    let call_id = up["callid"].as_str().expect("callid").to_string();
    let trace = sipp.trace();
    let ok = &trace[trace.find("SIP/2.0 200 OK").expect("our 200 in the trace")..];
    assert!(ok.contains(" RTP/SAVP "), "{ok}");
    assert!(
        ok.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:"),
        "{ok}"
    );
    let ours = inline_key(ok).expect("the answer's key");
    assert_ne!(ours, PHONE_KEY);
    media.set_srtp(&PHONE_KEY, &ours, 4);
    wait_for(
        "the browser hearing the caller's SRTP tone",
        || browser.hears(PHONE_TONE) > 0.5,
        || {
            format!(
                "browser hears {:.3}\n{}",
                browser.hears(PHONE_TONE),
                gw.log()
            )
        },
    )
    .await;
    wait_for(
        "the caller decrypting the room's tone",
        || media.hears(BROWSER_TONE) > 0.5,
        || {
            format!(
                "caller hears {:.3} ({})",
                media.hears(BROWSER_TONE),
                media.describe()
            )
        },
    )
    .await;
    alice
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{token}/phones/{call_id}/hangup"),
            None,
        )
        .await
        .expect(200);
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp scenario failed:\n{trace}");
    assert_nothing_left(&gw).await;
}

/// The test phone's SRTP against RFC 3711's own vectors (appendix B.3, key derivation), so that
/// the tests above check the gateway against the RFC and not against a copy of its mistakes.
#[test]
fn the_test_srtp_derives_the_rfc_3711_session_keys() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let key: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139")
        .try_into()
        .expect("16");
    let salt: [u8; 14] = hex("0EC675AD498AFEEBB6960B3AABE6").try_into().expect("14");
    assert_eq!(
        derive(&key, &salt, 0, 16),
        hex("C61E7A93744F39EE10734AFE3FF7A087")
    );
    assert_eq!(
        derive(&key, &salt, 2, 14),
        hex("30CBBC08863D8C85D49DB34A9AE1")
    );
    assert_eq!(
        derive(&key, &salt, 1, 20),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
    // And a packet survives protect and unprotect, across a rollover of the sequence number.
    let mut send = SrtpStream::new(&PHONE_KEY, 10);
    let mut receive = SrtpStream::new(&PHONE_KEY, 10);
    for seq in [65534u16, 65535, 0, 1] {
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 9, 9, 9];
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        let sealed = send.protect(&packet);
        assert_ne!(sealed[12..15], packet[12..]);
        assert_eq!(receive.unprotect(&sealed), Some(packet));
    }
}
