//! Digest challenges to our INVITEs, answered by the user agent itself in virtual time: the
//! retry is a new INVITE of the same call (same Call-ID and From tag, next CSeq, one handle for
//! events and commands), checked by the server-side verifier; a refused password or a realm we
//! have no account for ends the call with the challenge instead of looping.

use std::time::{Duration, Instant};

use dialbridge_sip::auth::{Algorithm, Authorization, Challenge, Credentials};
use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{NameAddr, Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaConfig, UaEvent, UserAgent};

mod common;
use common::{addr, parse_request, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const TRUNK: &str = "198.51.100.7:5080";
const URI: &str = "sip:+15551234@198.51.100.7:5080;transport=udp";
const REALM: &str = "trunk.example.net";
const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn agent() -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        ..UaConfig::default()
    })
}

fn outgoing() -> OutgoingCall {
    OutgoingCall {
        request_uri: Uri::parse(URI).expect("uri"),
        from: NameAddr::parse("<sip:trunkuser@192.0.2.10>").expect("from"),
        to: NameAddr::parse("<sip:+15551234@198.51.100.7>").expect("to"),
        alternates: Vec::new(),
        target: Target {
            transport: Transport::Udp,
            addr: addr(TRUNK),
        },
        body: Some(Body::sdp("v=0\r\n")),
        headers: Vec::new(),
    }
}

fn credentials(password: &str, realm: Option<&str>) -> Credentials {
    Credentials {
        username: "trunkuser".into(),
        password: password.into(),
        realm: realm.map(str::to_string),
    }
}

fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

/// The one request the agent sent.
fn sent(ua: &mut UserAgent) -> Request {
    match transmits(ua).as_slice() {
        [t] => parse_request(&t.bytes),
        other => panic!("expected one request, got {}", other.len()),
    }
}

fn deliver(ua: &mut UserAgent, now: Instant, r: &Response) {
    ua.handle_input(
        now,
        Incoming {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr(TRUNK),
            message: &r.to_bytes(),
        },
    );
}

/// The trunk's response to `req`.
fn response(req: &Request, code: u16, headers: &[(&str, String)]) -> Response {
    let mut r = Response::for_request(req, code, "X");
    if code > 100 {
        r.set_to_tag("px1").expect("tag");
    }
    for (name, value) in headers {
        r.headers.push(name, value.clone());
    }
    if (200..300).contains(&code) && req.method.as_str() == "INVITE" {
        r.headers
            .push("Contact", "<sip:+15551234@198.51.100.7:5080>");
        r.set_body("application/sdp", ANSWER.as_bytes().to_vec());
    }
    r
}

fn challenge(req: &Request, code: u16, c: &Challenge) -> Response {
    let header = if code == 401 {
        "WWW-Authenticate"
    } else {
        "Proxy-Authenticate"
    };
    response(req, code, &[(header, c.to_string())])
}

/// Sends the challenge for `req` and returns the retried INVITE (after the ACK for the
/// challenge), checking that the call goes on without an event.
fn challenged(
    ua: &mut UserAgent,
    now: Instant,
    req: &Request,
    code: u16,
    c: &Challenge,
) -> Request {
    deliver(ua, now, &challenge(req, code, c));
    let sent = transmits(ua);
    assert_eq!(sent.len(), 2, "ACK for the challenge, then the retry");
    let ack = parse_request(&sent[0].bytes);
    assert_eq!(ack.method.as_str(), "ACK");
    assert!(events(ua).is_empty(), "a challenge answered is no event");
    parse_request(&sent[1].bytes)
}

/// Dials with credentials; returns the handle and the first INVITE.
fn dial(ua: &mut UserAgent, now: Instant, creds: Credentials) -> (CallHandle, Request) {
    let call = ua
        .invite_with_credentials(now, outgoing(), Some(creds))
        .expect("invite");
    (call, sent(ua))
}

fn answered(ua: &mut UserAgent, now: Instant, call: CallHandle, req: &Request) {
    deliver(ua, now, &response(req, 200, &[]));
    match events(ua).as_slice() {
        [UaEvent::Answered { call: c, .. }] => assert_eq!(*c, call),
        other => panic!("{other:?}"),
    }
    let ack = sent(ua);
    assert_eq!(ack.method.as_str(), "ACK");
    assert_eq!(
        ack.headers.get("CSeq"),
        req.headers
            .get("CSeq")
            .map(|s| s.replace("INVITE", "ACK"))
            .as_deref()
    );
}

fn challenge_then_200(code: u16, algorithm: Algorithm) {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, first) = dial(&mut ua, t0, credentials("s3cret", None));
    let c = Challenge::new(REALM, "nonce-1", algorithm);
    let second = challenged(&mut ua, t0 + ms(40), &first, code, &c);

    assert_eq!(second.headers.get("CSeq"), Some("2 INVITE"));
    assert_eq!(
        second.headers.call_id().expect("cid"),
        first.headers.call_id().expect("cid")
    );
    assert_eq!(
        second.headers.from().expect("from").tag(),
        first.headers.from().expect("from").tag()
    );
    assert_ne!(
        second.headers.top_via().expect("via").branch(),
        first.headers.top_via().expect("via").branch()
    );
    let (ours, other) = if code == 401 {
        ("Authorization", "Proxy-Authorization")
    } else {
        ("Proxy-Authorization", "Authorization")
    };
    assert_eq!(second.headers.get(other), None);
    // The digest uri is the Request-URI exactly as sent, port and transport included.
    let creds = Authorization::parse(second.headers.get(ours).expect("credentials"))
        .expect("parse credentials");
    assert_eq!(creds.uri, URI);
    assert_eq!(second.uri.to_string(), URI);
    assert_eq!(creds.cnonce.as_deref().map(str::len), Some(16));
    creds
        .verify_against(&c, "INVITE", "s3cret", &second.body)
        .expect("the trunk accepts the credentials");

    answered(&mut ua, t0 + ms(90), call, &second);
    assert!(
        ua.dialog(call).is_some(),
        "the dialog is the first handle's"
    );
}

#[test]
fn proxy_challenge_md5_then_200_keeps_the_handle() {
    challenge_then_200(407, Algorithm::Md5);
}

#[test]
fn proxy_challenge_sha256_then_200_keeps_the_handle() {
    challenge_then_200(407, Algorithm::Sha256);
}

#[test]
fn www_challenge_then_200_keeps_the_handle() {
    challenge_then_200(401, Algorithm::Md5);
}

fn wrong_password_fails_with_the_second_challenge(code: u16) {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, first) = dial(&mut ua, t0, credentials("wrong", None));
    let c = Challenge::new(REALM, "nonce-1", Algorithm::Md5);
    let second = challenged(&mut ua, t0 + ms(40), &first, code, &c);
    // The same nonce again means the password is wrong: no third INVITE.
    deliver(&mut ua, t0 + ms(90), &challenge(&second, code, &c));
    assert_eq!(sent(&mut ua).method.as_str(), "ACK");
    match events(&mut ua).as_slice() {
        [UaEvent::Failed {
            call: c,
            code: got,
            response: Some(r),
            ..
        }] => {
            assert_eq!((*c, *got), (call, code));
            assert_eq!(r.headers.get("CSeq"), Some("2 INVITE"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ua.call_count(), 0);
    assert!(ua.hangup(t0 + ms(100), call).is_err(), "the call is gone");
}

#[test]
fn wrong_password_fails_with_the_final_407() {
    wrong_password_fails_with_the_second_challenge(407);
}

#[test]
fn wrong_password_fails_with_the_final_401() {
    wrong_password_fails_with_the_second_challenge(401);
}

#[test]
fn stale_nonce_is_answered_again() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, first) = dial(&mut ua, t0, credentials("s3cret", None));
    let c1 = Challenge::new(REALM, "nonce-1", Algorithm::Md5);
    let second = challenged(&mut ua, t0 + ms(40), &first, 407, &c1);
    let mut c2 = Challenge::new(REALM, "nonce-2", Algorithm::Md5);
    c2.stale = true;
    let third = challenged(&mut ua, t0 + ms(80), &second, 407, &c2);
    assert_eq!(third.headers.get("CSeq"), Some("3 INVITE"));
    let creds = Authorization::parse(third.headers.get("Proxy-Authorization").expect("creds"))
        .expect("parse");
    assert_eq!(creds.nonce, "nonce-2");
    creds
        .verify_against(&c2, "INVITE", "s3cret", &third.body)
        .expect("accepted");
    answered(&mut ua, t0 + ms(120), call, &third);
}

#[test]
fn challenge_of_another_realm_is_not_answered() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, first) = dial(
        &mut ua,
        t0,
        credentials("s3cret", Some("other.example.net")),
    );
    let c = Challenge::new(REALM, "nonce-1", Algorithm::Md5);
    deliver(&mut ua, t0 + ms(40), &challenge(&first, 407, &c));
    assert_eq!(sent(&mut ua).method.as_str(), "ACK");
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::Failed { call: c, code: 407, response: Some(_), .. }] if *c == call
    ));
}

#[test]
fn without_credentials_the_challenge_is_the_failure() {
    let mut ua = agent();
    let t0 = Instant::now();
    let call = ua.invite(t0, outgoing()).expect("invite");
    let first = sent(&mut ua);
    let c = Challenge::new(REALM, "nonce-1", Algorithm::Md5);
    deliver(&mut ua, t0 + ms(40), &challenge(&first, 407, &c));
    assert_eq!(sent(&mut ua).method.as_str(), "ACK");
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::Failed { call: c, code: 407, response: Some(_), .. }] if *c == call
    ));
}

#[test]
fn cancel_during_the_retry_uses_the_current_transaction() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, first) = dial(&mut ua, t0, credentials("s3cret", None));
    // The first INVITE rang before it was challenged (a proxy's 100 and a 180 are possible).
    deliver(&mut ua, t0 + ms(20), &response(&first, 100, &[]));
    let c = Challenge::new(REALM, "nonce-1", Algorithm::Md5);
    let second = challenged(&mut ua, t0 + ms(40), &first, 407, &c);
    ua.hangup(t0 + ms(50), call).expect("hangup");
    // No provisional response to the retry yet: the CANCEL waits (RFC 3261 section 9.1).
    assert!(transmits(&mut ua).is_empty());
    deliver(&mut ua, t0 + ms(60), &response(&second, 180, &[]));
    let cancel = sent(&mut ua);
    assert_eq!(cancel.method.as_str(), "CANCEL");
    assert_eq!(cancel.headers.get("CSeq"), Some("2 CANCEL"));
    assert_eq!(
        cancel.headers.top_via().expect("via").branch(),
        second.headers.top_via().expect("via").branch()
    );
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::Progress { call: c, code: 180, .. }] if *c == call
    ));
    deliver(&mut ua, t0 + ms(70), &response(&cancel, 200, &[]));
    deliver(&mut ua, t0 + ms(75), &response(&second, 487, &[]));
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::Failed { call: c, code: 487, .. }] if *c == call
    ));
}

#[test]
fn hangup_before_the_challenge_is_not_retried() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, first) = dial(&mut ua, t0, credentials("s3cret", None));
    ua.hangup(t0 + ms(10), call).expect("hangup");
    let c = Challenge::new(REALM, "nonce-1", Algorithm::Md5);
    deliver(&mut ua, t0 + ms(40), &challenge(&first, 407, &c));
    assert_eq!(sent(&mut ua).method.as_str(), "ACK");
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::Failed { call: c, code: 407, .. }] if *c == call
    ));
}

#[test]
fn bye_after_an_authenticated_call_uses_the_one_handle() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, first) = dial(&mut ua, t0, credentials("s3cret", None));
    let c = Challenge::new(REALM, "nonce-1", Algorithm::Md5);
    let second = challenged(&mut ua, t0 + ms(40), &first, 407, &c);
    answered(&mut ua, t0 + ms(90), call, &second);
    ua.hangup(t0 + Duration::from_secs(5), call)
        .expect("hangup");
    let bye = sent(&mut ua);
    assert_eq!(bye.method.as_str(), "BYE");
    assert_eq!(
        bye.headers.call_id().expect("cid"),
        first.headers.call_id().expect("cid")
    );
    assert_eq!(bye.headers.get("CSeq"), Some("3 BYE"));
    deliver(
        &mut ua,
        t0 + Duration::from_secs(5) + ms(30),
        &response(&bye, 200, &[]),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::Ended {
            call,
            by_remote: false
        }]
    );
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn manual_reinvites_asked_before_the_challenge_hold_after_it() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, first) = dial(&mut ua, t0, credentials("s3cret", None));
    ua.answer_reinvites_manually(call).expect("known call");
    let c = Challenge::new(REALM, "nonce-1", Algorithm::Md5);
    let second = challenged(&mut ua, t0 + ms(40), &first, 407, &c);
    answered(&mut ua, t0 + ms(90), call, &second);
    // The trunk's re-INVITE in the dialog waits for our answer.
    let ours = second.headers.from().expect("from");
    let mut reinvite = Request::new(
        dialbridge_sip::message::Method::Invite,
        Uri::parse("sip:dialbridge@192.0.2.10:5060").expect("uri"),
    );
    reinvite
        .headers
        .push("Via", "SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bKre1");
    reinvite
        .headers
        .push("From", "<sip:+15551234@198.51.100.7>;tag=px1");
    reinvite.headers.push("To", ours.to_string());
    reinvite.headers.push(
        "Call-ID",
        second.headers.call_id().expect("cid").to_string(),
    );
    reinvite.headers.push("CSeq", "7 INVITE");
    reinvite
        .headers
        .push("Contact", "<sip:+15551234@198.51.100.7:5080>");
    reinvite.headers.push("Max-Forwards", "70");
    reinvite.set_body("application/sdp", ANSWER.as_bytes().to_vec());
    ua.handle_input(
        t0 + Duration::from_secs(2),
        Incoming {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr(TRUNK),
            message: &reinvite.to_bytes(),
        },
    );
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::ReInvite { call: c, .. }] if *c == call
    ));
    assert!(transmits(&mut ua).is_empty(), "waits for the leg's answer");
}
