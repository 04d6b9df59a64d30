//! Reliable provisional responses (RFC 3262) in virtual time. To our INVITEs: a 183 that
//! requires 100rel is PRACKed in its early dialog (RAck, CSeq after the INVITE's, its Contact and
//! route set), the PRACK is retransmitted until answered, a retransmitted or out-of-order 183 is
//! neither passed on nor PRACKed again, and the confirmed dialog goes on after the PRACK's CSeq.
//! From callers that support or require 100rel: our 18x goes out with Require and RSeq, is
//! retransmitted (T1, doubling) until its PRACK, holds a 2xx after early media until then, and
//! without a PRACK the call ends with 504.

use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{NameAddr, Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaConfig, UaEvent, UserAgent};

mod common;
use common::{addr, parse_request, parse_response, transmits};

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
                alternates: Vec::new(),
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

// Our own reliable provisional responses to callers.

const CALLER: &str = "198.51.100.20:5060";

fn from_caller(method: &str, branch: &str, to_tag: Option<&str>, seq: u32, extra: &str) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let (ct, body) = if method == "INVITE" {
        ("Content-Type: application/sdp\r\n", SDP)
    } else {
        ("", "")
    };
    format!(
        "{method} sip:gw@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.20:5060;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:carol@198.51.100.20>;tag=c1\r\n\
To: <sip:gw@192.0.2.10>{to_tag}\r\n\
Call-ID: rel-1@198.51.100.20\r\n\
CSeq: {seq} {method}\r\n\
Contact: <sip:carol@198.51.100.20:5060>\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn hear(ua: &mut UserAgent, now: Instant, bytes: &[u8]) {
    ua.handle_input(
        now,
        Incoming {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr(CALLER),
            message: bytes,
        },
    );
}

/// A caller's INVITE with `extra` headers; the call and the 100 Trying... nothing else sent.
fn incoming(ua: &mut UserAgent, now: Instant, extra: &str) -> CallHandle {
    hear(
        ua,
        now,
        &from_caller("INVITE", "z9hG4bKinv1", None, 5, extra),
    );
    match events(ua).as_slice() {
        [UaEvent::IncomingCall { call, .. }] => *call,
        other => panic!("{other:?}"),
    }
}

fn responses(ua: &mut UserAgent) -> Vec<Response> {
    transmits(ua)
        .iter()
        .map(|t| parse_response(&t.bytes))
        .collect()
}

fn one_response(ua: &mut UserAgent) -> Response {
    match responses(ua).as_slice() {
        [r] => r.clone(),
        other => panic!("expected one response, got {other:?}"),
    }
}

fn prack(to_tag: &str, branch: &str, seq: u32, rack: &str) -> Vec<u8> {
    from_caller(
        "PRACK",
        branch,
        Some(to_tag),
        seq,
        &format!("RAck: {rack}\r\n"),
    )
}

fn early_media() -> Option<Body> {
    Some(Body::sdp(SDP))
}

#[test]
fn our_183_with_early_media_is_reliable_for_a_caller_that_supports_100rel() {
    let now = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, now, "Supported: 100rel\r\n");
    ua.respond(now, call, 183, "Session Progress", early_media())
        .expect("183");
    let progress = one_response(&mut ua);
    assert_eq!(progress.code, 183);
    assert_eq!(progress.headers.get("Require"), Some("100rel"));
    let rseq = progress.headers.rseq().expect("RSeq parses").expect("RSeq");
    assert!((1..=0x7fff_ffff).contains(&rseq), "{rseq}");
    let tag = progress
        .headers
        .to()
        .expect("to")
        .tag()
        .expect("tag")
        .to_string();

    // Retransmitted at T1, 2*T1 (T1 = 500 ms), until the PRACK.
    ua.handle_timeout(now + Duration::from_millis(499));
    assert!(responses(&mut ua).is_empty());
    ua.handle_timeout(now + Duration::from_millis(500));
    assert_eq!(one_response(&mut ua).to_bytes(), progress.to_bytes());
    ua.handle_timeout(now + Duration::from_millis(1499));
    assert!(responses(&mut ua).is_empty());
    ua.handle_timeout(now + Duration::from_millis(1500));
    assert_eq!(one_response(&mut ua).to_bytes(), progress.to_bytes());

    // A 200 must wait for the PRACK of a reliable 1xx with SDP.
    let at = now + Duration::from_millis(1600);
    ua.respond(at, call, 200, "OK", early_media()).expect("200");
    assert!(responses(&mut ua).is_empty(), "the 200 waits for the PRACK");

    // A PRACK naming another RSeq is refused; the right one gets 200, then our 200 goes out.
    hear(
        &mut ua,
        at,
        &prack(
            &tag,
            "z9hG4bKpr1",
            6,
            &format!("{} 5 INVITE", rseq.wrapping_add(1)),
        ),
    );
    assert_eq!(one_response(&mut ua).code, 481);
    hear(
        &mut ua,
        at,
        &prack(&tag, "z9hG4bKpr2", 7, &format!("{rseq} 5 INVITE")),
    );
    let sent = responses(&mut ua);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].code, 200);
    assert_eq!(sent[0].headers.get("CSeq"), Some("7 PRACK"));
    assert_eq!(sent[1].code, 200);
    assert_eq!(sent[1].headers.get("CSeq"), Some("5 INVITE"));
    assert!(sent[1].headers.get("RSeq").is_none());

    // No retransmission of the 183 after its PRACK.
    let later: Vec<Response> = {
        ua.handle_timeout(at + Duration::from_secs(5));
        responses(&mut ua)
    };
    assert!(later.iter().all(|r| r.code == 200), "{later:?}");
}

#[test]
fn a_caller_that_requires_100rel_gets_a_reliable_180_and_the_200_at_once() {
    let now = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, now, "Require: 100rel\r\n");
    ua.respond(now, call, 180, "Ringing", None).expect("180");
    let ringing = one_response(&mut ua);
    assert_eq!(ringing.headers.get("Require"), Some("100rel"));
    let rseq = ringing.headers.rseq().expect("RSeq parses").expect("RSeq");
    let tag = ringing
        .headers
        .to()
        .expect("to")
        .tag()
        .expect("tag")
        .to_string();
    // A 180 without SDP does not hold the 200.
    ua.respond(now, call, 200, "OK", early_media())
        .expect("200");
    assert_eq!(one_response(&mut ua).code, 200);
    // The late PRACK still gets its 200; the 180 is no longer retransmitted.
    hear(
        &mut ua,
        now,
        &prack(&tag, "z9hG4bKpr1", 6, &format!("{rseq} 5 INVITE")),
    );
    assert_eq!(one_response(&mut ua).code, 200);
}

#[test]
fn a_caller_that_only_supports_100rel_gets_an_unreliable_180_without_sdp() {
    let now = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, now, "Supported: 100rel\r\n");
    ua.respond(now, call, 180, "Ringing", None).expect("180");
    let ringing = one_response(&mut ua);
    assert!(ringing.headers.get("Require").is_none());
    assert!(ringing.headers.get("RSeq").is_none());
    ua.handle_timeout(now + Duration::from_secs(1));
    assert!(responses(&mut ua).is_empty());
}

#[test]
fn without_a_prack_the_call_ends_with_504_after_64_t1() {
    let now = Instant::now();
    let mut ua = agent();
    let call = incoming(&mut ua, now, "Require: 100rel\r\n");
    ua.respond(now, call, 183, "Session Progress", early_media())
        .expect("183");
    let progress = one_response(&mut ua);
    let mut sent = Vec::new();
    let end = now + Duration::from_secs(32);
    while let Some(at) = ua.poll_timeout().filter(|at| *at <= end) {
        ua.handle_timeout(at);
        sent.extend(responses(&mut ua).into_iter().map(|r| (at - now, r)));
    }
    let retransmitted: Vec<Duration> = sent
        .iter()
        .filter(|(_, r)| r.to_bytes() == progress.to_bytes())
        .map(|(t, _)| *t)
        .collect();
    let ms = |n: u64| Duration::from_millis(n);
    assert_eq!(
        retransmitted,
        vec![ms(500), ms(1500), ms(3500), ms(7500), ms(15500), ms(31500)],
        "T1, then doubling"
    );
    let refusal = sent
        .iter()
        .find(|(_, r)| r.code == 504)
        .unwrap_or_else(|| panic!("no 504: {sent:?}"));
    assert_eq!(refusal.0, ms(32_000), "after 64*T1");
    assert!(events(&mut ua)
        .iter()
        .any(|e| matches!(e, UaEvent::Cancelled { call: c } if *c == call)));
}
