//! An INVITE with alternate next hops (the targets a trunk's DNS gave, RFC 3263 section 4.3),
//! in virtual time: a timeout, a transport error or a 503 moves the call to the next target as a
//! new transaction of the same call; a server that sent a provisional response beyond 100 owns
//! the call, and the last target's failure is the call's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{NameAddr, Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaConfig, UaEvent, UserAgent};

mod common;
use common::{addr, parse_request, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const FIRST: &str = "198.51.100.7:5060";
const SECOND: &str = "198.51.100.8:5060";
const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn agent() -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        ..UaConfig::default()
    })
}

fn udp(a: &str) -> Target {
    Target {
        transport: Transport::Udp,
        addr: addr(a),
    }
}

fn dial(ua: &mut UserAgent, now: Instant) -> (CallHandle, Request) {
    let call = ua
        .invite(
            now,
            OutgoingCall {
                request_uri: Uri::parse("sip:+15551234@trunk.example.net").expect("uri"),
                from: NameAddr::parse("<sip:dialbridge@192.0.2.10>").expect("from"),
                to: NameAddr::parse("<sip:+15551234@trunk.example.net>").expect("to"),
                target: udp(FIRST),
                alternates: vec![udp(SECOND)],
                body: Some(Body::sdp("v=0\r\n")),
                headers: Vec::new(),
            },
        )
        .expect("invite");
    let (invite, to) = one_sent(ua);
    assert_eq!(to, addr(FIRST), "the first target is tried first");
    (call, invite)
}

fn one_sent(ua: &mut UserAgent) -> (Request, SocketAddr) {
    let sent = transmits(ua);
    assert_eq!(sent.len(), 1, "one request");
    (parse_request(&sent[0].bytes), sent[0].destination)
}

fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

fn deliver(ua: &mut UserAgent, now: Instant, from: &str, r: &Response) {
    ua.handle_input(
        now,
        Incoming {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr(from),
            message: &r.to_bytes(),
        },
    );
}

fn response(req: &Request, code: u16) -> Response {
    let mut r = Response::for_request(req, code, "X");
    if code > 100 {
        r.set_to_tag("far1").expect("tag");
    }
    if code == 200 {
        r.headers.push("Contact", "<sip:+15551234@198.51.100.8>");
        r.set_body("application/sdp", ANSWER.as_bytes().to_vec());
    }
    r
}

fn cseq(req: &Request) -> u32 {
    req.headers.cseq().expect("cseq").seq
}

fn branch(req: &Request) -> String {
    req.headers
        .get("Via")
        .and_then(|v| v.split("branch=").nth(1))
        .map(|b| b.split(';').next().unwrap_or(b).to_string())
        .expect("branch")
}

/// The retry is the same call (Call-ID, From tag) in a new transaction (branch, next CSeq).
fn assert_same_call_new_transaction(first: &Request, retry: &Request) {
    assert_eq!(retry.method.as_str(), "INVITE");
    assert_eq!(retry.headers.call_id(), first.headers.call_id());
    assert_eq!(retry.headers.get("From"), first.headers.get("From"));
    assert_eq!(cseq(retry), cseq(first) + 1);
    assert_ne!(branch(retry), branch(first));
}

#[test]
fn a_target_that_never_answers_gives_way_to_the_next() {
    let mut ua = agent();
    let start = Instant::now();
    let (call, first) = dial(&mut ua, start);
    // Timer B (64 * T1): retransmissions to the first target, then the INVITE to the second.
    let mut now = start;
    let retry = loop {
        let at = ua.poll_timeout().expect("a timer runs");
        assert!(
            at < start + Duration::from_secs(40),
            "the second target is tried before 40 s"
        );
        now = at.max(now);
        ua.handle_timeout(now);
        let sent = transmits(&mut ua);
        if let Some(t) = sent.iter().find(|t| t.destination == addr(SECOND)) {
            break parse_request(&t.bytes);
        }
        assert!(
            sent.iter().all(|t| t.destination == addr(FIRST)),
            "retransmissions go to the first target"
        );
    };
    assert!(now >= start + Duration::from_secs(32), "only after Timer B");
    assert_same_call_new_transaction(&first, &retry);
    assert!(events(&mut ua).is_empty(), "a failover is no event");
    deliver(&mut ua, now, SECOND, &response(&retry, 200));
    match events(&mut ua).as_slice() {
        [UaEvent::Answered { call: c, .. }] => assert_eq!(*c, call),
        other => panic!("{other:?}"),
    }
    let (ack, to) = one_sent(&mut ua);
    assert_eq!(ack.method.as_str(), "ACK");
    assert_eq!(to, addr(SECOND));
}

#[test]
fn a_503_moves_the_call_on_and_the_last_503_ends_it() {
    let mut ua = agent();
    let now = Instant::now();
    let (call, first) = dial(&mut ua, now);
    deliver(&mut ua, now, FIRST, &response(&first, 100));
    deliver(&mut ua, now, FIRST, &response(&first, 503));
    let sent = transmits(&mut ua);
    assert_eq!(
        sent.len(),
        2,
        "ACK for the 503, then the INVITE to the next target"
    );
    assert_eq!(parse_request(&sent[0].bytes).method.as_str(), "ACK");
    assert_eq!(sent[0].destination, addr(FIRST));
    assert_eq!(sent[1].destination, addr(SECOND));
    let retry = parse_request(&sent[1].bytes);
    assert_same_call_new_transaction(&first, &retry);
    assert!(events(&mut ua).is_empty());
    deliver(&mut ua, now, SECOND, &response(&retry, 503));
    match events(&mut ua).as_slice() {
        [UaEvent::Failed { call: c, code, .. }] => {
            assert_eq!(*c, call);
            assert_eq!(*code, 503);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_transport_error_moves_the_call_on_at_once() {
    let mut ua = agent();
    let now = Instant::now();
    let (_call, first) = dial(&mut ua, now);
    ua.handle_transport_error(now, Transport::Udp, addr(FIRST), "connection refused");
    let (retry, to) = one_sent(&mut ua);
    assert_eq!(to, addr(SECOND));
    assert_same_call_new_transaction(&first, &retry);
    assert!(events(&mut ua).is_empty());
}

#[test]
fn a_server_that_rang_owns_the_call() {
    let mut ua = agent();
    let now = Instant::now();
    let (call, first) = dial(&mut ua, now);
    deliver(&mut ua, now, FIRST, &response(&first, 180));
    deliver(&mut ua, now, FIRST, &response(&first, 503));
    let sent = transmits(&mut ua);
    assert!(
        sent.iter().all(|t| t.destination == addr(FIRST)),
        "nothing goes to the second target after a ringing"
    );
    let events = events(&mut ua);
    assert!(
        matches!(events.last(), Some(UaEvent::Failed { call: c, code: 503, .. }) if *c == call),
        "{events:?}"
    );
}

#[test]
fn a_call_hung_up_while_its_first_target_is_silent_does_not_move_on() {
    let mut ua = agent();
    let start = Instant::now();
    let (call, _first) = dial(&mut ua, start);
    ua.cancel(start, call).expect("cancel");
    while let Some(at) = ua.poll_timeout() {
        if at > start + Duration::from_secs(60) {
            break;
        }
        ua.handle_timeout(at);
        assert!(
            transmits(&mut ua)
                .iter()
                .all(|t| t.destination == addr(FIRST)),
            "a cancelled call tries no other target"
        );
    }
    let events = events(&mut ua);
    assert!(
        matches!(events.last(), Some(UaEvent::Failed { call: c, code: 408, .. }) if *c == call),
        "{events:?}"
    );
}
