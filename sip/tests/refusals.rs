//! Virtual-time tests of how the user agent refuses incoming calls: silently (nothing ever sent,
//! retransmissions absorbed, the transaction gone after 64*T1) and with extra headers.

use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Incoming, Transmit};
use dialbridge_sip::message::Response;
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{CallHandle, UaConfig, UaError, UaEvent, UserAgent};

mod common;
use common::{addr, parse_response, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const PEER: &str = "198.51.100.7:5060";

fn agent() -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        ..UaConfig::default()
    })
}

const INVITE: &str = "INVITE sip:+4930123456@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-scan-1\r\n\
From: <sip:100@198.51.100.7>;tag=a1\r\n\
To: <sip:+4930123456@192.0.2.10>\r\n\
Call-ID: scan-1@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n";

fn deliver(ua: &mut UserAgent, now: Instant, bytes: &[u8]) {
    ua.handle_input(
        now,
        Incoming {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr(PEER),
            message: bytes,
        },
    );
}

fn incoming(ua: &mut UserAgent, now: Instant) -> CallHandle {
    deliver(ua, now, INVITE.as_bytes());
    match ua.poll_event() {
        Some(UaEvent::IncomingCall { call, .. }) => call,
        other => panic!("expected an incoming call, got {other:?}"),
    }
}

/// Runs the agent's timers from `from` to `to` in 100 ms steps; returns what it sent.
fn run(ua: &mut UserAgent, from: Instant, to: Instant) -> Vec<Transmit> {
    let mut sent = Vec::new();
    let mut now = from;
    while now <= to {
        ua.handle_timeout(now);
        sent.extend(transmits(ua));
        now += Duration::from_millis(100);
    }
    sent
}

#[test]
fn an_ignored_invite_gets_nothing_ever_and_leaves_no_state() {
    let t0 = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, t0);
    ua.ignore(t0, call).expect("ignore");
    assert_eq!(ua.call_count(), 0);
    // No 100 Trying (due after 200 ms otherwise), and a retransmission is absorbed.
    let mut sent = run(&mut ua, t0, t0 + Duration::from_secs(2));
    deliver(&mut ua, t0 + Duration::from_secs(1), INVITE.as_bytes());
    assert!(ua.poll_event().is_none(), "a retransmission is no new call");
    sent.extend(transmits(&mut ua));
    sent.extend(run(
        &mut ua,
        t0 + Duration::from_secs(2),
        t0 + Duration::from_secs(33),
    ));
    assert!(sent.is_empty(), "nothing sent: {sent:?}");
    assert_eq!(ua.endpoint().transaction_count(), 0, "gone after 64*T1");
    assert!(ua.poll_event().is_none());
    assert_eq!(
        ua.respond(t0, call, 403, "Forbidden", None),
        Err(UaError::UnknownCall)
    );
}

#[test]
fn an_answered_invite_cannot_be_ignored() {
    let t0 = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, t0);
    ua.respond(t0, call, 180, "Ringing", None).expect("180");
    assert!(ua.ignore(t0, call).is_err(), "ringing already");
    assert_eq!(ua.call_count(), 1, "the call goes on");
    let mut ua = agent();
    let call = incoming(&mut ua, t0);
    ua.handle_timeout(t0 + Duration::from_millis(300));
    assert_eq!(transmits(&mut ua).len(), 1, "100 Trying went out");
    assert!(ua.ignore(t0, call).is_err(), "too late to stay silent");
}

#[test]
fn refusals_carry_extra_headers() {
    let t0 = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, t0);
    let headers = vec![
        (
            "Proxy-Authenticate".to_string(),
            "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256".to_string(),
        ),
        (
            "Proxy-Authenticate".to_string(),
            "Digest realm=\"r\", nonce=\"n\", algorithm=MD5".to_string(),
        ),
    ];
    ua.respond_with_headers(
        t0,
        call,
        407,
        "Proxy Authentication Required",
        &headers,
        None,
    )
    .expect("407");
    let sent = transmits(&mut ua);
    let response = parse_response(&sent[0].bytes);
    let Response {
        code, headers: h, ..
    } = response;
    assert_eq!(code, 407);
    let values: Vec<&str> = h.get_all("Proxy-Authenticate").collect();
    assert_eq!(values.len(), 2);
    assert!(
        values[0].contains("SHA-256") && values[1].contains("MD5"),
        "order kept: {values:?}"
    );
    assert!(
        h.to().expect("To").tag().is_some(),
        "a final answer has a To tag"
    );
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn a_refusal_sent_once_is_never_retransmitted_and_leaves_no_state() {
    let t0 = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, t0);
    ua.refuse_once(call, 403, "Forbidden").expect("403");
    let first = transmits(&mut ua);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].destination, addr(PEER));
    let response = parse_response(&first[0].bytes);
    assert_eq!(response.code, 403);
    assert!(response.headers.to().expect("To").tag().is_some());
    assert!(
        response.headers.get("Server").is_none(),
        "no product name unless configured"
    );
    assert_eq!(ua.call_count(), 0);
    assert_eq!(ua.endpoint().transaction_count(), 0, "nothing kept");
    assert_eq!(ua.poll_timeout(), None, "no timer left to retransmit with");
    // Timer G would have retransmitted at 0.5, 1.5, 3.5, ... s; over 64*T1 nothing goes out.
    let later = run(&mut ua, t0, t0 + Duration::from_secs(33));
    assert!(later.is_empty(), "retransmitted: {later:?}");
    // The ACK for the 403 finds nothing and draws nothing.
    let ack = INVITE
        .replacen("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    deliver(&mut ua, t0 + Duration::from_secs(1), ack.as_bytes());
    assert!(transmits(&mut ua).is_empty());
    // A retransmitted INVITE is a new request: one more single answer, no more.
    deliver(&mut ua, t0 + Duration::from_secs(2), INVITE.as_bytes());
    let Some(UaEvent::IncomingCall { call, .. }) = ua.poll_event() else {
        panic!("the retransmission is offered again");
    };
    ua.refuse_once(call, 403, "Forbidden").expect("403 again");
    assert_eq!(transmits(&mut ua).len(), 1);
    assert!(run(
        &mut ua,
        t0 + Duration::from_secs(2),
        t0 + Duration::from_secs(40)
    )
    .is_empty());
}

#[test]
fn only_an_unanswered_call_can_be_refused_once() {
    let t0 = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, t0);
    assert!(ua.refuse_once(call, 180, "Ringing").is_err(), "final only");
    ua.respond(t0, call, 180, "Ringing", None).expect("180");
    assert!(ua.refuse_once(call, 403, "Forbidden").is_err(), "ringing");
    assert_eq!(ua.call_count(), 1);
}

#[test]
fn a_configured_product_name_is_sent() {
    let t0 = Instant::now();
    let mut ua = UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        user_agent: Some("ExampleGW/2".into()),
        ..UaConfig::default()
    });
    let call = incoming(&mut ua, t0);
    ua.refuse_once(call, 403, "Forbidden").expect("403");
    let sent = transmits(&mut ua);
    let response = parse_response(&sent[0].bytes);
    assert_eq!(response.headers.get("Server"), Some("ExampleGW/2"));
}
