//! Reliable provisional responses to our INVITEs (RFC 3262) in virtual time: a 183 that requires
//! 100rel is PRACKed in its early dialog (RAck, CSeq after the INVITE's, its Contact and route
//! set), the PRACK is retransmitted until answered, a retransmitted or out-of-order 183 is
//! neither passed on nor PRACKed again, and the confirmed dialog goes on after the PRACK's CSeq.

use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{NameAddr, Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaConfig, UaEvent, UserAgent};

mod common;
use common::{addr, parse_request, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const PROXY: &str = "198.51.100.7:5080";
const PHONE_CONTACT: &str = "<sip:phone@198.51.100.9:5062>";
const SDP: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn agent() -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        ..UaConfig::default()
    })
}

fn dial(ua: &mut UserAgent, now: Instant) -> (CallHandle, Request) {
    let call = ua
        .invite(
            now,
            OutgoingCall {
                request_uri: Uri::parse("sip:+15551234@198.51.100.7:5080").expect("uri"),
                from: NameAddr::parse("<sip:gw@192.0.2.10>").expect("from"),
                to: NameAddr::parse("<sip:+15551234@198.51.100.7>").expect("to"),
                target: Target {
                    transport: Transport::Udp,
                    addr: addr(PROXY),
                },
                body: Some(Body::sdp("v=0\r\n")),
                headers: Vec::new(),
            },
        )
        .expect("invite");
    let invite = only(ua);
    (call, invite)
}

/// The one request the agent sent.
fn only(ua: &mut UserAgent) -> Request {
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
            remote: addr(PROXY),
            message: &r.to_bytes(),
        },
    );
}

fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

/// A reliable 18x to `invite` with `rseq` (from the phone, through a record-routing proxy).
fn reliable(invite: &Request, code: u16, rseq: u32) -> Response {
    let mut r = Response::for_request(invite, code, "Session Progress");
    r.set_to_tag("ph1").expect("tag");
    r.headers.push("Record-Route", "<sip:198.51.100.7:5080;lr>");
    r.headers.push("Contact", PHONE_CONTACT);
    r.headers.push("Require", "100rel");
    r.headers.push("RSeq", rseq.to_string());
    r.set_body("application/sdp", SDP.as_bytes().to_vec());
    r
}

fn header<'a>(req: &'a Request, name: &str) -> &'a str {
    req.headers.get(name).unwrap_or("")
}

fn progress_count(events: &[UaEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, UaEvent::Progress { .. }))
        .count()
}

#[test]
fn our_invite_announces_100rel() {
    let now = Instant::now();
    let mut ua = agent();
    let (_, invite) = dial(&mut ua, now);
    assert_eq!(header(&invite, "Supported"), "100rel");
}

#[test]
fn a_reliable_183_is_pracked_in_its_early_dialog_until_answered() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = dial(&mut ua, now);
    let progress = reliable(&invite, 183, 7);
    deliver(&mut ua, now, &progress);
    match events(&mut ua).as_slice() {
        [UaEvent::Progress {
            call: c,
            code: 183,
            body: Some(body),
            ..
        }] => {
            assert_eq!(*c, call);
            assert_eq!(body.bytes, SDP.as_bytes());
        }
        other => panic!("{other:?}"),
    }
    let prack = only(&mut ua);
    assert_eq!(prack.method.as_str(), "PRACK");
    assert_eq!(prack.uri.to_string(), "sip:phone@198.51.100.9:5062");
    assert_eq!(header(&prack, "Route"), "<sip:198.51.100.7:5080;lr>");
    assert_eq!(header(&prack, "RAck"), "7 1 INVITE");
    assert_eq!(header(&prack, "CSeq"), "2 PRACK");
    assert_eq!(header(&prack, "Call-ID"), header(&invite, "Call-ID"));
    assert_eq!(header(&prack, "From"), header(&invite, "From"));
    assert!(header(&prack, "To").contains("tag=ph1"));
    let rack = prack.headers.rack().expect("RAck parses").expect("RAck");
    assert_eq!((rack.rseq, rack.cseq), (7, 1));

    // Unanswered, the PRACK is retransmitted (Timer E: T1, then doubling).
    ua.handle_timeout(now + Duration::from_millis(499));
    assert!(transmits(&mut ua).is_empty());
    ua.handle_timeout(now + Duration::from_millis(500));
    let again = only(&mut ua);
    assert_eq!(again.to_bytes(), prack.to_bytes());
    ua.handle_timeout(now + Duration::from_millis(1500));
    assert_eq!(only(&mut ua).to_bytes(), prack.to_bytes());

    // The 183 comes again (the phone has not seen our PRACK): nothing is passed on or sent.
    let at = now + Duration::from_millis(1600);
    deliver(&mut ua, at, &progress);
    assert_eq!(progress_count(&events(&mut ua)), 0);
    assert!(transmits(&mut ua).is_empty());

    // The PRACK's 200 ends its retransmissions.
    let mut ok = Response::for_request(&prack, 200, "OK");
    ok.headers.set("Content-Length", "0");
    deliver(&mut ua, at, &ok);
    ua.handle_timeout(at + Duration::from_secs(10));
    assert!(transmits(&mut ua).is_empty(), "no PRACK after its 200");

    // The call is answered: the ACK keeps the INVITE's CSeq, the BYE follows the PRACK's.
    let mut answer = Response::for_request(&invite, 200, "OK");
    answer.set_to_tag("ph1").expect("tag");
    answer
        .headers
        .push("Record-Route", "<sip:198.51.100.7:5080;lr>");
    answer.headers.push("Contact", PHONE_CONTACT);
    answer.set_body("application/sdp", SDP.as_bytes().to_vec());
    deliver(&mut ua, at, &answer);
    let ack = only(&mut ua);
    assert_eq!(header(&ack, "CSeq"), "1 ACK");
    ua.bye(at, call).expect("bye");
    let bye = only(&mut ua);
    assert_eq!(header(&bye, "CSeq"), "3 BYE");
}

#[test]
fn reliable_responses_are_pracked_in_order_only() {
    let now = Instant::now();
    let mut ua = agent();
    let (_, invite) = dial(&mut ua, now);
    deliver(&mut ua, now, &reliable(&invite, 180, 1));
    assert_eq!(progress_count(&events(&mut ua)), 1);
    assert_eq!(header(&only(&mut ua), "RAck"), "1 1 INVITE");
    // RSeq 3 before 2 is out of order: dropped, not PRACKed.
    deliver(&mut ua, now, &reliable(&invite, 183, 3));
    assert_eq!(progress_count(&events(&mut ua)), 0);
    assert!(transmits(&mut ua).is_empty());
    deliver(&mut ua, now, &reliable(&invite, 183, 2));
    assert_eq!(progress_count(&events(&mut ua)), 1);
    let prack = only(&mut ua);
    assert_eq!(header(&prack, "RAck"), "2 1 INVITE");
    assert_eq!(header(&prack, "CSeq"), "3 PRACK");
}

#[test]
fn an_unreliable_provisional_is_not_pracked() {
    let now = Instant::now();
    let mut ua = agent();
    let (_, invite) = dial(&mut ua, now);
    let mut ringing = Response::for_request(&invite, 180, "Ringing");
    ringing.set_to_tag("ph1").expect("tag");
    ringing.headers.push("RSeq", "1");
    deliver(&mut ua, now, &ringing);
    assert_eq!(progress_count(&events(&mut ua)), 1);
    assert!(transmits(&mut ua).is_empty());
    // Require: 100rel without an RSeq cannot be PRACKed: passed on as unreliable.
    let mut broken = reliable(&invite, 183, 1);
    broken.headers.remove("RSeq");
    deliver(&mut ua, now, &broken);
    assert_eq!(progress_count(&events(&mut ua)), 1);
    assert!(transmits(&mut ua).is_empty());
}
