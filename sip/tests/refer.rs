//! Blind transfer as the transferor (RFC 3515) in virtual time: REFER in the established
//! dialog with Refer-To, its 202, the NOTIFYs of the peer's new call (message/sipfrag, answered
//! 200) up to the final one; a refused REFER; a REFER nobody answers fails after 64*T1; a
//! NOTIFY without a transfer of ours gets 481.

use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{Message, NameAddr, Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{
    sipfrag_status, Body, CallHandle, OutgoingCall, TransferProgress, UaConfig, UaEvent, UserAgent,
};

mod common;
use common::{addr, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const PEER: &str = "198.51.100.7:5080";
const SDP: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn agent() -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        session_timer: None,
        ..UaConfig::default()
    })
}

fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

fn sent(ua: &mut UserAgent) -> Vec<Message> {
    transmits(ua)
        .iter()
        .map(|t| Message::parse(&t.bytes).expect("parses"))
        .collect()
}

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

fn one_request(ua: &mut UserAgent) -> Request {
    match sent(ua).as_slice() {
        [Message::Request(r)] => r.clone(),
        other => panic!("expected one request, got {other:?}"),
    }
}

fn one_response(ua: &mut UserAgent) -> Response {
    match sent(ua).as_slice() {
        [Message::Response(r)] => r.clone(),
        other => panic!("expected one response, got {other:?}"),
    }
}

/// An answered call to the peer; returns the call and the INVITE.
fn call(ua: &mut UserAgent, now: Instant) -> (CallHandle, Request) {
    let call = ua
        .invite(
            now,
            OutgoingCall {
                request_uri: Uri::parse("sip:+15551234@198.51.100.7:5080").expect("uri"),
                from: NameAddr::parse("<sip:gw@192.0.2.10>").expect("from"),
                to: NameAddr::parse("<sip:+15551234@198.51.100.7>").expect("to"),
                alternates: Vec::new(),
                target: Target {
                    transport: Transport::Udp,
                    addr: addr(PEER),
                },
                body: Some(Body::sdp("v=0\r\n")),
                headers: Vec::new(),
            },
        )
        .expect("invite");
    let invite = one_request(ua);
    let mut ok = Response::for_request(&invite, 200, "OK");
    ok.set_to_tag("p1").expect("tag");
    ok.headers.push("Contact", "<sip:phone@198.51.100.7:5080>");
    ok.set_body("application/sdp", SDP.as_bytes().to_vec());
    deliver(ua, now, &ok.to_bytes());
    assert_eq!(one_request(ua).method.as_str(), "ACK");
    assert!(matches!(events(ua).as_slice(), [UaEvent::Answered { .. }]));
    (call, invite)
}

fn answer(req: &Request, code: u16, reason: &str) -> Vec<u8> {
    let mut r = Response::for_request(req, code, reason);
    r.headers.set("Content-Length", "0");
    r.to_bytes()
}

/// A NOTIFY from the peer in the dialog of `invite` (whose From is ours).
fn notify(invite: &Request, seq: u32, frag: &str, state: &str) -> Vec<u8> {
    let call_id = invite.headers.get("Call-ID").expect("Call-ID");
    let ours = invite.headers.get("From").expect("From");
    format!(
        "NOTIFY sip:gw@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bKn{seq}\r\nFrom: <sip:+15551234@198.51.100.7>;tag=p1\r\nTo: {ours}\r\nCall-ID: {call_id}\r\nCSeq: {seq} NOTIFY\r\nMax-Forwards: 70\r\nContact: <sip:phone@198.51.100.7:5080>\r\nEvent: refer\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag;version=2.0\r\nContent-Length: {}\r\n\r\n{frag}",
        frag.len()
    )
    .into_bytes()
}

fn transfer_events(ua: &mut UserAgent) -> Vec<TransferProgress> {
    events(ua)
        .into_iter()
        .filter_map(|e| match e {
            UaEvent::Transfer { progress, .. } => Some(progress),
            _ => None,
        })
        .collect()
}

#[test]
fn a_refer_is_accepted_and_its_notifies_report_the_new_call_to_the_end() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = call(&mut ua, now);
    let target = Uri::parse("sip:+15559999@198.51.100.7:5080").expect("uri");
    ua.refer(now, call, &target).expect("refer");
    let refer = one_request(&mut ua);
    assert_eq!(refer.method.as_str(), "REFER");
    assert_eq!(refer.uri.to_string(), "sip:phone@198.51.100.7:5080");
    assert_eq!(refer.headers.get("CSeq"), Some("2 REFER"));
    assert_eq!(refer.headers.get("Call-ID"), invite.headers.get("Call-ID"));
    assert_eq!(
        refer.headers.get("Refer-To"),
        Some("<sip:+15559999@198.51.100.7:5080>")
    );
    // One transfer at a time.
    assert!(ua.refer(now, call, &target).is_err());

    deliver(&mut ua, now, &answer(&refer, 202, "Accepted"));
    assert_eq!(transfer_events(&mut ua), [TransferProgress::Accepted]);

    deliver(
        &mut ua,
        now,
        &notify(&invite, 1, "SIP/2.0 100 Trying\r\n", "active;expires=60"),
    );
    assert_eq!(one_response(&mut ua).code, 200);
    deliver(
        &mut ua,
        now,
        &notify(&invite, 2, "SIP/2.0 180 Ringing\r\n", "active;expires=60"),
    );
    assert_eq!(one_response(&mut ua).code, 200);
    deliver(
        &mut ua,
        now,
        &notify(
            &invite,
            3,
            "SIP/2.0 200 OK\r\n",
            "terminated;reason=noresource",
        ),
    );
    assert_eq!(one_response(&mut ua).code, 200);
    assert_eq!(
        transfer_events(&mut ua),
        [
            TransferProgress::Status {
                code: 100,
                reason: "Trying".into(),
                done: false
            },
            TransferProgress::Status {
                code: 180,
                reason: "Ringing".into(),
                done: false
            },
            TransferProgress::Status {
                code: 200,
                reason: "OK".into(),
                done: true
            },
        ]
    );
    // The subscription is over: a late NOTIFY has none, and another transfer may start.
    deliver(
        &mut ua,
        now,
        &notify(&invite, 4, "SIP/2.0 200 OK\r\n", "terminated"),
    );
    assert_eq!(one_response(&mut ua).code, 481);
    ua.refer(now, call, &target).expect("a second transfer");
}

#[test]
fn a_refused_refer_ends_the_transfer_and_the_call_goes_on() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, _) = call(&mut ua, now);
    let target = Uri::parse("sip:+15559999@198.51.100.7").expect("uri");
    ua.refer(now, call, &target).expect("refer");
    let refer = one_request(&mut ua);
    deliver(&mut ua, now, &answer(&refer, 603, "Declined"));
    assert_eq!(
        transfer_events(&mut ua),
        [TransferProgress::Refused {
            code: 603,
            reason: "Declined".into()
        }]
    );
    // Still established: BYE works.
    ua.bye(now, call).expect("bye");
    assert_eq!(one_request(&mut ua).method.as_str(), "BYE");
}

#[test]
fn an_unanswered_refer_is_retransmitted_and_fails_after_64_t1() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, _) = call(&mut ua, now);
    let target = Uri::parse("sip:+15559999@198.51.100.7").expect("uri");
    ua.refer(now, call, &target).expect("refer");
    let refer = one_request(&mut ua);
    let mut retransmissions = 0;
    let end = now + Duration::from_secs(40);
    while let Some(at) = ua.poll_timeout().filter(|at| *at <= end) {
        ua.handle_timeout(at);
        for m in sent(&mut ua) {
            if let Message::Request(r) = m {
                assert_eq!(r.headers.get("CSeq"), refer.headers.get("CSeq"));
                retransmissions += 1;
            }
        }
        let progress = transfer_events(&mut ua);
        if !progress.is_empty() {
            assert_eq!(
                progress,
                [TransferProgress::Refused {
                    code: 408,
                    reason: "Request Timeout".into()
                }]
            );
            // Timer F: 64*T1 (32 s at T1 = 500 ms).
            assert_eq!(at.duration_since(now), Duration::from_secs(32));
            assert!(retransmissions >= 6, "{retransmissions}");
            return;
        }
    }
    panic!("the REFER never failed");
}

#[test]
fn a_notify_without_our_transfer_gets_481_and_a_bad_sipfrag_400() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = call(&mut ua, now);
    deliver(
        &mut ua,
        now,
        &notify(&invite, 1, "SIP/2.0 200 OK\r\n", "active"),
    );
    assert_eq!(one_response(&mut ua).code, 481);
    ua.refer(now, call, &Uri::parse("sip:x@198.51.100.7").expect("uri"))
        .expect("refer");
    let refer = one_request(&mut ua);
    deliver(&mut ua, now, &answer(&refer, 202, "Accepted"));
    deliver(&mut ua, now, &notify(&invite, 2, "hello\r\n", "active"));
    assert_eq!(one_response(&mut ua).code, 400);
    assert_eq!(transfer_events(&mut ua), [TransferProgress::Accepted]);
}

#[test]
fn sipfrag_status_lines() {
    assert_eq!(
        sipfrag_status(b"SIP/2.0 200 OK\r\n"),
        Some((200, "OK".into()))
    );
    assert_eq!(
        sipfrag_status(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n"),
        Some((486, "Busy Here".into()))
    );
    assert_eq!(sipfrag_status(b"SIP/2.0 100"), Some((100, String::new())));
    for bad in [
        &b""[..],
        b"SIP/2.0 99 x",
        b"SIP/2.0 2000 x",
        b"HTTP/1.1 200 OK",
        b"\xff\xfe",
    ] {
        assert_eq!(sipfrag_status(bad), None, "{bad:?}");
    }
}

/// A REFER from the peer in the dialog of `invite`, with CSeq `seq`.
fn peer_refer(invite: &Request, seq: u32) -> String {
    let call_id = invite.headers.get("Call-ID").expect("Call-ID");
    let ours = invite.headers.get("From").expect("From");
    format!(
        "REFER sip:gw@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bKr{seq}\r\nFrom: <sip:+15551234@198.51.100.7>;tag=p1\r\nTo: {ours}\r\nCall-ID: {call_id}\r\nCSeq: {seq} REFER\r\nMax-Forwards: 70\r\nContact: <sip:phone@198.51.100.7:5080>\r\nRefer-To: <sip:+15550000@198.51.100.7>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_refer_from_the_peer_is_refused_unless_its_trunk_allows_it() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = call(&mut ua, now);
    deliver(&mut ua, now, peer_refer(&invite, 1).as_bytes());
    let refused = one_response(&mut ua);
    assert_eq!(refused.code, 403);
    assert!(transfer_events(&mut ua).is_empty());
    // Allowed: past the policy, but we do not act as the transferee.
    ua.allow_peer_refer(call).expect("allow");
    deliver(&mut ua, now, peer_refer(&invite, 2).as_bytes());
    let refused = one_response(&mut ua);
    assert_eq!(refused.code, 501);
    assert!(!refused.headers.get("Allow").unwrap_or("").contains("REFER"));
    assert!(transfer_events(&mut ua).is_empty());
}
