//! Virtual-time tests of dialogs and the user-agent API: early dialogs, ACK for 2xx and its
//! re-sending, BYE, CANCEL and the CANCEL/200 race, incoming calls, re-INVITE and OPTIONS.

use std::time::{Duration, Instant};

use dialbridge_sip::dialog::{Dialog, SavedDialog};
use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{NameAddr, Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaConfig, UaEvent, UserAgent};

mod common;
use common::{addr, parse_request, parse_response, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const PEER: &str = "198.51.100.7:5060";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn agent() -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL)), (Transport::Tcp, addr(LOCAL))],
            ..Config::default()
        },
        ..UaConfig::default()
    })
}

fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

fn dial(ua: &mut UserAgent, now: Instant, body: Option<Body>) -> (CallHandle, Request) {
    let call = ua
        .invite(
            now,
            OutgoingCall {
                request_uri: Uri::parse("sip:+15551234@198.51.100.7").expect("uri"),
                from: NameAddr::parse("<sip:alice@192.0.2.10>").expect("from"),
                to: NameAddr::parse("<sip:+15551234@198.51.100.7>").expect("to"),
                alternates: Vec::new(),
                target: Target {
                    transport: Transport::Udp,
                    addr: addr(PEER),
                },
                body,
                headers: vec![(
                    "P-Asserted-Identity".into(),
                    "<sip:+15550000@192.0.2.10>".into(),
                )],
            },
        )
        .expect("invite");
    let sent = transmits(ua);
    assert_eq!(sent.len(), 1);
    (call, parse_request(&sent[0].bytes))
}

/// The peer's response to `req`.
fn reply(
    req: &Request,
    code: u16,
    tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Vec<u8> {
    let mut r = Response::for_request(req, code, "X");
    if let Some(t) = tag {
        r.set_to_tag(t).expect("tag");
    }
    for (n, v) in extra {
        r.headers.push(n, *v);
    }
    if let Some(b) = body {
        r.set_body("application/sdp", b.as_bytes().to_vec());
    }
    r.to_bytes()
}

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

#[test]
fn outgoing_call_with_early_dialogs_ack_for_2xx_and_bye() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, invite) = dial(&mut ua, t0, Some(Body::sdp(OFFER)));
    assert_eq!(invite.body, OFFER.as_bytes());
    assert_eq!(invite.headers.get("Content-Type"), Some("application/sdp"));
    assert_eq!(
        invite.headers.get("Contact"),
        Some("<sip:dialbridge@192.0.2.10:5060>")
    );
    assert_eq!(
        invite.headers.get("P-Asserted-Identity"),
        Some("<sip:+15550000@192.0.2.10>")
    );
    assert!(invite.headers.from().expect("from").tag().is_some());

    deliver(
        &mut ua,
        t0 + ms(100),
        &reply(&invite, 180, Some("e1"), &[], None),
    );
    deliver(
        &mut ua,
        t0 + ms(200),
        &reply(&invite, 183, Some("e2"), &[], Some(ANSWER)),
    );
    let ev = events(&mut ua);
    assert_eq!(
        ev,
        vec![
            UaEvent::Progress {
                call,
                code: 180,
                reason: "X".into(),
                to_tag: Some("e1".into()),
                body: None
            },
            UaEvent::Progress {
                call,
                code: 183,
                reason: "X".into(),
                to_tag: Some("e2".into()),
                body: Some(Body::sdp(ANSWER))
            },
        ]
    );

    let ok = reply(
        &invite,
        200,
        Some("e2"),
        &[
            (
                "Record-Route",
                "<sip:p1.example.net;lr>, <sip:198.51.100.8;lr>",
            ),
            ("Contact", "<sip:callee@198.51.100.9:5070>"),
        ],
        Some(ANSWER),
    );
    deliver(&mut ua, t0 + ms(300), &ok);
    let sent = transmits(&mut ua);
    assert_eq!(sent.len(), 1, "one ACK");
    assert_eq!(
        sent[0].destination,
        addr("198.51.100.8:5060"),
        "first route of the reversed Record-Route"
    );
    let ack = parse_request(&sent[0].bytes);
    let ack_text = text(&sent[0].bytes);
    assert!(
        ack_text.starts_with("ACK sip:callee@198.51.100.9:5070 SIP/2.0\r\n"),
        "{ack_text}"
    );
    assert_eq!(
        ack.headers.get_all("Route").collect::<Vec<_>>(),
        vec!["<sip:198.51.100.8;lr>", "<sip:p1.example.net;lr>"]
    );
    assert_eq!(ack.headers.get("CSeq"), Some("1 ACK"));
    assert_eq!(ack.headers.to().expect("to").tag(), Some("e2"));
    assert_eq!(
        ack.headers.call_id().expect("cid"),
        invite.headers.call_id().expect("cid")
    );
    assert_ne!(
        ack.headers.top_via().expect("via").branch(),
        invite.headers.top_via().expect("via").branch(),
        "the ACK for a 2xx is a new transaction"
    );
    assert_eq!(ua.call_id(call), invite.headers.call_id().ok());
    let dialog = ua.dialog(call).expect("dialog");
    assert_eq!(dialog.id.remote_tag, "e2");
    assert_eq!(
        dialog.remote_target.to_string(),
        "sip:callee@198.51.100.9:5070"
    );
    match events(&mut ua).as_slice() {
        [UaEvent::Answered { call: c, body, .. }] => {
            assert_eq!(*c, call);
            assert_eq!(
                body.as_ref().map(|b| b.bytes.as_slice()),
                Some(ANSWER.as_bytes())
            );
        }
        other => panic!("{other:?}"),
    }

    // A retransmitted 200 gets the very same ACK again.
    deliver(&mut ua, t0 + ms(800), &ok);
    let again = transmits(&mut ua);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].bytes, sent[0].bytes);
    assert!(events(&mut ua).is_empty());

    ua.bye(t0 + ms(5000), call).expect("bye");
    let sent = transmits(&mut ua);
    assert_eq!(sent[0].destination, addr("198.51.100.8:5060"));
    let bye = parse_request(&sent[0].bytes);
    assert!(text(&sent[0].bytes).starts_with("BYE sip:callee@198.51.100.9:5070 SIP/2.0\r\n"));
    assert_eq!(bye.headers.get("CSeq"), Some("2 BYE"));
    assert_eq!(bye.headers.to().expect("to").tag(), Some("e2"));
    deliver(&mut ua, t0 + ms(5100), &reply(&bye, 200, None, &[], None));
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
fn cancel_waits_for_a_provisional_and_ends_with_487() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, invite) = dial(&mut ua, t0, Some(Body::sdp(OFFER)));
    ua.cancel(t0 + ms(10), call).expect("cancel");
    assert!(
        transmits(&mut ua).is_empty(),
        "no CANCEL before a provisional response"
    );
    deliver(&mut ua, t0 + ms(50), &reply(&invite, 100, None, &[], None));
    let sent = transmits(&mut ua);
    assert_eq!(sent.len(), 1);
    let cancel = parse_request(&sent[0].bytes);
    assert!(text(&sent[0].bytes).starts_with("CANCEL sip:+15551234@198.51.100.7 SIP/2.0\r\n"));
    assert_eq!(
        cancel.headers.get("Via"),
        invite.headers.get("Via"),
        "same branch as the INVITE"
    );
    assert_eq!(cancel.headers.get("CSeq"), Some("1 CANCEL"));
    assert_eq!(cancel.headers.get("To"), invite.headers.get("To"));
    deliver(
        &mut ua,
        t0 + ms(80),
        &reply(&cancel, 200, Some("zz"), &[], None),
    );
    deliver(
        &mut ua,
        t0 + ms(90),
        &reply(&invite, 487, Some("zz"), &[], None),
    );
    let sent = transmits(&mut ua);
    assert_eq!(sent.len(), 1);
    let ack = parse_request(&sent[0].bytes);
    assert_eq!(
        ack.headers.get("Via"),
        invite.headers.get("Via"),
        "ACK for a non-2xx reuses the branch"
    );
    match events(&mut ua).as_slice() {
        [UaEvent::Failed {
            call: c, code: 487, ..
        }] => assert_eq!(*c, call),
        other => panic!("{other:?}"),
    }
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn a_200_crossing_the_cancel_is_acked_then_hung_up() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, invite) = dial(&mut ua, t0, Some(Body::sdp(OFFER)));
    deliver(
        &mut ua,
        t0 + ms(100),
        &reply(&invite, 180, Some("t1"), &[], None),
    );
    events(&mut ua);
    ua.cancel(t0 + ms(200), call).expect("cancel");
    let cancel = parse_request(&transmits(&mut ua)[0].bytes);
    assert_eq!(cancel.method.as_str(), "CANCEL");
    deliver(
        &mut ua,
        t0 + ms(210),
        &reply(
            &invite,
            200,
            Some("t1"),
            &[("Contact", "<sip:callee@198.51.100.7>")],
            Some(ANSWER),
        ),
    );
    let sent = transmits(&mut ua);
    let methods: Vec<String> = sent
        .iter()
        .map(|t| parse_request(&t.bytes).method.to_string())
        .collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    let bye = parse_request(&sent[1].bytes);
    assert_eq!(bye.headers.get("CSeq"), Some("2 BYE"));
    assert!(
        events(&mut ua).is_empty(),
        "no Answered for a cancelled call"
    );
    deliver(
        &mut ua,
        t0 + ms(220),
        &reply(&cancel, 481, Some("t1"), &[], None),
    );
    deliver(&mut ua, t0 + ms(300), &reply(&bye, 200, None, &[], None));
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::Ended {
            call,
            by_remote: false
        }]
    );
}

#[test]
fn second_fork_answering_is_acked_and_hung_up() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, invite) = dial(&mut ua, t0, Some(Body::sdp(OFFER)));
    let contact = [("Contact", "<sip:callee@198.51.100.7>")];
    deliver(
        &mut ua,
        t0 + ms(100),
        &reply(&invite, 200, Some("f1"), &contact, Some(ANSWER)),
    );
    assert_eq!(transmits(&mut ua).len(), 1);
    deliver(
        &mut ua,
        t0 + ms(120),
        &reply(&invite, 200, Some("f2"), &contact, Some(ANSWER)),
    );
    let sent: Vec<Request> = transmits(&mut ua)
        .iter()
        .map(|t| parse_request(&t.bytes))
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[0].method.as_str(), sent[1].method.as_str()),
        ("ACK", "BYE")
    );
    assert_eq!(sent[1].headers.to().expect("to").tag(), Some("f2"));
    assert!(matches!(&events(&mut ua)[..], [UaEvent::Answered { call: c, .. }] if *c == call));
}

#[test]
fn offer_in_the_2xx_is_answered_in_the_ack() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, invite) = dial(&mut ua, t0, None);
    assert!(invite.body.is_empty());
    assert_eq!(invite.headers.get("Content-Length"), Some("0"));
    deliver(
        &mut ua,
        t0 + ms(100),
        &reply(
            &invite,
            200,
            Some("o1"),
            &[("Contact", "<sip:callee@198.51.100.7>")],
            Some(ANSWER),
        ),
    );
    assert!(
        transmits(&mut ua).is_empty(),
        "the ACK waits for our answer"
    );
    assert!(matches!(
        &events(&mut ua)[..],
        [UaEvent::Answered { body: Some(_), .. }]
    ));
    ua.ack(call, Some(Body::sdp(OFFER))).expect("ack");
    let sent = transmits(&mut ua);
    let ack = parse_request(&sent[0].bytes);
    assert_eq!(ack.method.as_str(), "ACK");
    assert_eq!(ack.body, OFFER.as_bytes());
    assert_eq!(ack.headers.get("Content-Type"), Some("application/sdp"));
}

#[test]
fn unanswered_invite_fails_with_408_at_timer_b() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, _) = dial(&mut ua, t0, Some(Body::sdp(OFFER)));
    while let Some(t) = ua.poll_timeout() {
        ua.handle_timeout(t);
    }
    match events(&mut ua).as_slice() {
        [UaEvent::Failed {
            call: c,
            code: 408,
            response: None,
            ..
        }] => assert_eq!(*c, call),
        other => panic!("{other:?}"),
    }
}

/// An incoming call answered at `t0` and ACKed 100 ms later, its events taken.
fn confirmed_incoming(ua: &mut UserAgent, t0: Instant) -> (CallHandle, String) {
    let (call, tag) = answered_incoming(ua, t0);
    deliver(
        ua,
        t0 + ms(100),
        &incoming("ACK", "z9hG4bKa1", Some(&tag), 8, "", ""),
    );
    events(ua);
    (call, tag)
}

fn incoming(
    method: &str,
    branch: &str,
    to_tag: Option<&str>,
    seq: u32,
    extra: &str,
    body: &str,
) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:gw@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:carol@198.51.100.7>;tag=c1\r\n\
To: <sip:gw@192.0.2.10>{to_tag}\r\n\
Call-ID: in-1@198.51.100.7\r\n\
CSeq: {seq} {method}\r\n\
Contact: <sip:carol@198.51.100.7:5070>\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Delivers an incoming INVITE, answers 180 then 200, and returns the call and our To tag.
fn answered_incoming(ua: &mut UserAgent, t0: Instant) -> (CallHandle, String) {
    deliver(ua, t0, &incoming("INVITE", "z9hG4bKi1", None, 8, "", OFFER));
    let call = match events(ua).as_slice() {
        [UaEvent::IncomingCall {
            call,
            request,
            remote,
            ..
        }] => {
            assert_eq!(request.body, OFFER.as_bytes());
            assert_eq!(*remote, addr(PEER));
            *call
        }
        other => panic!("{other:?}"),
    };
    ua.respond(t0 + ms(20), call, 180, "Ringing", None)
        .expect("180");
    let ringing = parse_response(&transmits(ua)[0].bytes);
    let tag = ringing
        .headers
        .to()
        .expect("to")
        .tag()
        .expect("tag")
        .to_string();
    assert_eq!(
        ringing.headers.get("Contact"),
        Some("<sip:dialbridge@192.0.2.10:5060>")
    );
    ua.respond(t0 + ms(40), call, 200, "OK", Some(Body::sdp(ANSWER)))
        .expect("200");
    let sent = transmits(ua);
    assert_eq!(sent[0].destination, addr(PEER));
    let ok = parse_response(&sent[0].bytes);
    assert_eq!(ok.code, 200);
    assert_eq!(
        ok.headers.to().expect("to").tag(),
        Some(tag.as_str()),
        "same tag as the 180"
    );
    assert_eq!(ok.body, ANSWER.as_bytes());
    assert!(ok.headers.get("Allow").is_some());
    (call, tag)
}

#[test]
fn incoming_call_answered_acked_and_hung_up_by_the_caller() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, tag) = answered_incoming(&mut ua, t0);
    // The 2xx is retransmitted until the ACK arrives.
    ua.handle_timeout(t0 + ms(540));
    assert_eq!(parse_response(&transmits(&mut ua)[0].bytes).code, 200);
    deliver(
        &mut ua,
        t0 + ms(600),
        &incoming("ACK", "z9hG4bKa1", Some(&tag), 8, "", ""),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::Confirmed { call, body: None }]
    );
    ua.handle_timeout(t0 + ms(5000));
    assert!(
        transmits(&mut ua).is_empty(),
        "no 2xx retransmission after the ACK"
    );
    deliver(
        &mut ua,
        t0 + ms(9000),
        &incoming("BYE", "z9hG4bKb1", Some(&tag), 9, "", ""),
    );
    let sent = transmits(&mut ua);
    let ok = parse_response(&sent[0].bytes);
    assert_eq!((ok.code, ok.headers.get("CSeq")), (200, Some("9 BYE")));
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::Ended {
            call,
            by_remote: true
        }]
    );
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn caller_cancels_an_incoming_call() {
    let mut ua = agent();
    let t0 = Instant::now();
    deliver(
        &mut ua,
        t0,
        &incoming("INVITE", "z9hG4bKi1", None, 8, "", OFFER),
    );
    let call = match events(&mut ua).as_slice() {
        [UaEvent::IncomingCall { call, .. }] => *call,
        other => panic!("{other:?}"),
    };
    ua.respond(t0 + ms(10), call, 180, "Ringing", None)
        .expect("180");
    transmits(&mut ua);
    let cancel = String::from_utf8(incoming("CANCEL", "z9hG4bKi1", None, 8, "", "")).expect("utf8");
    deliver(&mut ua, t0 + ms(500), cancel.as_bytes());
    let sent: Vec<Response> = transmits(&mut ua)
        .iter()
        .map(|t| parse_response(&t.bytes))
        .collect();
    let got: Vec<(u16, &str)> = sent
        .iter()
        .map(|r| (r.code, r.headers.get("CSeq").unwrap_or("")))
        .collect();
    assert_eq!(got, vec![(200, "8 CANCEL"), (487, "8 INVITE")]);
    assert_eq!(events(&mut ua), vec![UaEvent::Cancelled { call }]);
    assert_eq!(ua.call_count(), 0);
    assert!(ua.respond(t0 + ms(600), call, 200, "OK", None).is_err());
}

#[test]
fn reinvite_is_answered_with_the_current_sdp_and_refreshes_the_target() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, tag) = confirmed_incoming(&mut ua, t0);
    let hold = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let reinvite = String::from_utf8(incoming("INVITE", "z9hG4bKr1", Some(&tag), 9, "", &hold))
        .expect("utf8")
        .replace(
            "Contact: <sip:carol@198.51.100.7:5070>",
            "Contact: <sip:carol@198.51.100.20:5080>",
        );
    deliver(&mut ua, t0 + ms(2000), reinvite.as_bytes());
    let ok = parse_response(&transmits(&mut ua)[0].bytes);
    assert_eq!(ok.code, 200);
    assert_eq!(ok.body, ANSWER.as_bytes());
    assert_eq!(ok.headers.to().expect("to").tag(), Some(tag.as_str()));
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::ReInvite {
            call,
            body: Some(Body::sdp(hold))
        }]
    );
    // An old CSeq is refused.
    deliver(
        &mut ua,
        t0 + ms(2100),
        &incoming("INFO", "z9hG4bKx1", Some(&tag), 9, "", ""),
    );
    assert_eq!(parse_response(&transmits(&mut ua)[0].bytes).code, 500);
    assert!(events(&mut ua).is_empty());
    // INFO (DTMF relay) is answered and passed up.
    let info = String::from_utf8(incoming(
        "INFO",
        "z9hG4bKx2",
        Some(&tag),
        10,
        "",
        "Signal=5\r\nDuration=160\r\n",
    ))
    .expect("utf8")
    .replace(
        "Content-Type: application/sdp",
        "Content-Type: application/dtmf-relay",
    );
    deliver(&mut ua, t0 + ms(2200), info.as_bytes());
    assert_eq!(parse_response(&transmits(&mut ua)[0].bytes).code, 200);
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::Info {
            call,
            body: Some(Body {
                content_type: "application/dtmf-relay".into(),
                bytes: b"Signal=5\r\nDuration=160\r\n".to_vec()
            })
        }]
    );
    ua.bye(t0 + ms(3000), call).expect("bye");
    let sent = transmits(&mut ua);
    assert_eq!(sent[0].destination, addr("198.51.100.20:5080"));
    let bye = parse_request(&sent[0].bytes);
    assert_eq!(bye.headers.get("CSeq"), Some("1 BYE"));
    assert_eq!(bye.headers.from().expect("from").tag(), Some(tag.as_str()));
    assert_eq!(bye.headers.to().expect("to").tag(), Some("c1"));
}

#[test]
fn options_unknown_methods_and_unknown_dialogs() {
    let mut ua = agent();
    let t0 = Instant::now();
    deliver(
        &mut ua,
        t0,
        &incoming("OPTIONS", "z9hG4bKo1", None, 1, "", ""),
    );
    let ok = parse_response(&transmits(&mut ua)[0].bytes);
    assert_eq!(ok.code, 200);
    assert_eq!(
        ok.headers.get("Allow"),
        Some("INVITE, ACK, CANCEL, BYE, OPTIONS, INFO")
    );
    assert_eq!(ok.headers.get("Accept"), Some("application/sdp"));
    assert!(ok.headers.to().expect("to").tag().is_some());
    deliver(
        &mut ua,
        t0,
        &incoming("BYE", "z9hG4bKb1", Some("nope"), 2, "", ""),
    );
    assert_eq!(parse_response(&transmits(&mut ua)[0].bytes).code, 481);
    deliver(
        &mut ua,
        t0,
        &incoming("FROBNICATE", "z9hG4bKf1", None, 3, "", ""),
    );
    let r = parse_response(&transmits(&mut ua)[0].bytes);
    assert_eq!(r.code, 501);
    assert!(r.headers.get("Allow").is_some());
    deliver(
        &mut ua,
        t0,
        &incoming("REGISTER", "z9hG4bKr1", None, 4, "", ""),
    );
    assert_eq!(parse_response(&transmits(&mut ua)[0].bytes).code, 405);
    assert!(events(&mut ua).is_empty());
}

#[test]
fn unacknowledged_2xx_ends_the_call_with_bye() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, _) = answered_incoming(&mut ua, t0);
    while let Some(t) = ua.poll_timeout() {
        if t > t0 + Duration::from_secs(33) {
            break;
        }
        ua.handle_timeout(t);
    }
    let sent = transmits(&mut ua);
    let last = sent.last().expect("something sent");
    let bye = parse_request(&last.bytes);
    assert_eq!(bye.method.as_str(), "BYE");
    assert_eq!(last.destination, addr("198.51.100.7:5070"));
    deliver(
        &mut ua,
        t0 + Duration::from_secs(34),
        &reply(&bye, 200, None, &[], None),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::Ended {
            call,
            by_remote: false
        }]
    );
}

#[test]
fn reinvite_answered_by_the_application_and_glare_gets_491() {
    let mut ua = UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        auto_answer_reinvite: false,
        ..UaConfig::default()
    });
    let t0 = Instant::now();
    let (call, tag) = confirmed_incoming(&mut ua, t0);
    let hold = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    deliver(
        &mut ua,
        t0 + ms(1000),
        &incoming("INVITE", "z9hG4bKr1", Some(&tag), 9, "", &hold),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::ReInvite {
            call,
            body: Some(Body::sdp(hold.clone()))
        }]
    );
    assert!(transmits(&mut ua).is_empty(), "waits for the application");
    deliver(
        &mut ua,
        t0 + ms(1100),
        &incoming("INVITE", "z9hG4bKr2", Some(&tag), 10, "", &hold),
    );
    assert_eq!(parse_response(&transmits(&mut ua)[0].bytes).code, 491);
    let held = ANSWER.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
    ua.respond_reinvite(
        t0 + ms(1200),
        call,
        200,
        "OK",
        Some(Body::sdp(held.clone())),
    )
    .expect("answer");
    let ok = parse_response(&transmits(&mut ua)[0].bytes);
    assert_eq!((ok.code, ok.headers.get("CSeq")), (200, Some("9 INVITE")));
    assert_eq!(ok.body, held.as_bytes());
    assert!(ua
        .respond_reinvite(t0 + ms(1300), call, 200, "OK", None)
        .is_err());
}

#[test]
fn one_call_can_answer_its_reinvites_itself_while_others_are_auto_answered() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, tag) = confirmed_incoming(&mut ua, t0);
    ua.answer_reinvites_manually(call).expect("known call");
    let hold = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    deliver(
        &mut ua,
        t0 + ms(1000),
        &incoming("INVITE", "z9hG4bKr1", Some(&tag), 9, "", &hold),
    );
    assert_eq!(events(&mut ua).len(), 1);
    assert!(transmits(&mut ua).is_empty(), "waits for the owner");
    let held = ANSWER.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
    ua.respond_reinvite(
        t0 + ms(1100),
        call,
        200,
        "OK",
        Some(Body::sdp(held.clone())),
    )
    .expect("answer");
    let ok = parse_response(&transmits(&mut ua)[0].bytes);
    assert_eq!((ok.code, ok.headers.get("CSeq")), (200, Some("9 INVITE")));
    assert_eq!(ok.body, held.as_bytes());
}

/// A re-INVITE without an offer: the owner's 200 carries our offer, and the ACK's answer is
/// passed up; an ACK without a body is not.
#[test]
fn offerless_reinvite_gets_our_offer_and_the_acks_answer_is_passed_up() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, tag) = confirmed_incoming(&mut ua, t0);
    ua.answer_reinvites_manually(call).expect("known call");
    deliver(
        &mut ua,
        t0 + ms(1000),
        &incoming("INVITE", "z9hG4bKr1", Some(&tag), 9, "", ""),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::ReInvite { call, body: None }]
    );
    ua.respond_reinvite(t0 + ms(1100), call, 200, "OK", Some(Body::sdp(OFFER)))
        .expect("answer");
    let ok = parse_response(&transmits(&mut ua)[0].bytes);
    assert_eq!((ok.code, ok.body.as_slice()), (200, OFFER.as_bytes()));
    deliver(
        &mut ua,
        t0 + ms(1200),
        &incoming("ACK", "z9hG4bKa2", Some(&tag), 9, "", ANSWER),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::ReInviteAck {
            call,
            body: Body::sdp(ANSWER)
        }]
    );
    deliver(
        &mut ua,
        t0 + ms(1300),
        &incoming("ACK", "z9hG4bKa3", Some(&tag), 9, "", ""),
    );
    assert!(events(&mut ua).is_empty());
}

#[test]
fn cancelled_invite_without_a_final_response_times_out_after_64_t1() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, invite) = dial(&mut ua, t0, Some(Body::sdp(OFFER)));
    deliver(
        &mut ua,
        t0 + ms(100),
        &reply(&invite, 180, Some("t1"), &[], None),
    );
    events(&mut ua);
    ua.cancel(t0 + ms(1000), call).expect("cancel");
    let cancel = parse_request(&transmits(&mut ua)[0].bytes);
    deliver(
        &mut ua,
        t0 + ms(1050),
        &reply(&cancel, 200, Some("t1"), &[], None),
    );
    // The peer never sends 487: the INVITE gives up 64*T1 after the CANCEL.
    let mut seen = Vec::new();
    while let Some(t) = ua.poll_timeout() {
        ua.handle_timeout(t);
        seen.extend(events(&mut ua).into_iter().map(|e| (t - t0, e)));
    }
    match seen.as_slice() {
        [(
            at,
            UaEvent::Failed {
                call: c, code: 408, ..
            },
        )] => {
            assert_eq!(*c, call);
            assert_eq!(*at, ms(1000) + Duration::from_secs(32));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn bye_before_the_ack_waits_for_it() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (call, tag) = answered_incoming(&mut ua, t0);
    ua.bye(t0 + ms(100), call).expect("bye");
    assert!(transmits(&mut ua).is_empty(), "no BYE before the ACK");
    deliver(
        &mut ua,
        t0 + ms(200),
        &incoming("ACK", "z9hG4bKa1", Some(&tag), 8, "", ""),
    );
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::Confirmed { call, body: None }]
    );
    let sent = transmits(&mut ua);
    assert_eq!(sent.len(), 1);
    assert_eq!(parse_request(&sent[0].bytes).method.as_str(), "BYE");
}

/// An outgoing call answered through two record-routing proxies; the agent's dialog of it.
fn answered_outgoing(ua: &mut UserAgent, t0: Instant) -> (Request, Dialog) {
    let (call, invite) = dial(ua, t0, Some(Body::sdp(OFFER)));
    let ok = reply(
        &invite,
        200,
        Some("e2"),
        &[
            (
                "Record-Route",
                "<sip:p1.example.net;lr>, <sip:198.51.100.8;lr>",
            ),
            ("Contact", "<sip:callee@198.51.100.9:5070>"),
        ],
        Some(ANSWER),
    );
    deliver(ua, t0 + ms(100), &ok);
    transmits(ua);
    events(ua);
    (invite, ua.dialog(call).expect("dialog").clone())
}

#[test]
fn saved_dialog_restores_to_the_same_dialog() {
    let mut ua = agent();
    let (_, dialog) = answered_outgoing(&mut ua, Instant::now());
    let saved = dialog.save();
    assert_eq!(
        saved.route_set,
        vec!["<sip:198.51.100.8;lr>", "<sip:p1.example.net;lr>"]
    );
    assert_eq!(saved.remote_target, "sip:callee@198.51.100.9:5070");
    assert_eq!(saved.local_seq, 1);
    assert_eq!(Dialog::restore(&saved), Ok(dialog));
    // An incoming call's dialog too (its peer's CSeq is not kept: the restored one only sends).
    let (call, _) = confirmed_incoming(&mut ua, Instant::now());
    let dialog = ua.dialog(call).expect("dialog").clone();
    let restored = Dialog::restore(&dialog.save()).expect("restore");
    assert_eq!(restored.remote_seq, None);
    assert_eq!(
        restored,
        Dialog {
            remote_seq: None,
            ..dialog
        }
    );
}

#[test]
fn restored_dialog_bye_is_retransmitted_until_answered() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (invite, dialog) = answered_outgoing(&mut ua, t0);
    let saved = dialog.save();
    drop(ua);

    // The next run of the service: a fresh agent.
    let mut ua = agent();
    let t1 = t0 + Duration::from_secs(60);
    let call = ua
        .bye_restored(t1, Dialog::restore(&saved).expect("restore"))
        .expect("bye");
    let sent = transmits(&mut ua);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].destination,
        addr("198.51.100.8:5060"),
        "first route"
    );
    assert!(text(&sent[0].bytes).starts_with("BYE sip:callee@198.51.100.9:5070 SIP/2.0\r\n"));
    let bye = parse_request(&sent[0].bytes);
    assert_eq!(bye.headers.get("CSeq"), Some("2 BYE"));
    assert_eq!(bye.headers.call_id(), invite.headers.call_id());
    assert_eq!(
        bye.headers.from().expect("from").tag(),
        invite.headers.from().expect("from").tag()
    );
    assert_eq!(bye.headers.to().expect("to").tag(), Some("e2"));
    assert_eq!(
        bye.headers.get_all("Route").collect::<Vec<_>>(),
        vec!["<sip:198.51.100.8;lr>", "<sip:p1.example.net;lr>"]
    );
    // UDP: again after T1, then 2*T1.
    ua.handle_timeout(t1 + ms(500));
    assert_eq!(transmits(&mut ua)[0].bytes, sent[0].bytes);
    ua.handle_timeout(t1 + ms(1000));
    assert!(transmits(&mut ua).is_empty());
    ua.handle_timeout(t1 + ms(1500));
    assert_eq!(transmits(&mut ua)[0].bytes, sent[0].bytes);
    assert!(events(&mut ua).is_empty());
    deliver(&mut ua, t1 + ms(1600), &reply(&bye, 200, None, &[], None));
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::RestoredByeDone {
            call,
            code: 200,
            reason: "X".into()
        }]
    );
    ua.handle_timeout(t1 + ms(10_000));
    assert!(
        transmits(&mut ua).is_empty(),
        "no retransmission once answered"
    );
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn restored_dialog_bye_reports_a_refusal_or_no_answer() {
    let mut ua = agent();
    let t0 = Instant::now();
    let (_, dialog) = answered_outgoing(&mut ua, t0);
    let mut ua = agent();
    // The phone forgot the call already.
    let call = ua.bye_restored(t0, dialog.clone()).expect("bye");
    let bye = parse_request(&transmits(&mut ua)[0].bytes);
    deliver(&mut ua, t0 + ms(50), &reply(&bye, 481, None, &[], None));
    assert_eq!(
        events(&mut ua),
        vec![UaEvent::RestoredByeDone {
            call,
            code: 481,
            reason: "X".into()
        }]
    );
    // The phone is gone: retransmissions at most T2 apart, then Timer F at 64*T1.
    let call = ua.bye_restored(t0, dialog).expect("bye");
    let mut last = t0;
    let mut sends = transmits(&mut ua).len();
    while let Some(at) = ua.poll_timeout() {
        ua.handle_timeout(at);
        let now_sent = transmits(&mut ua).len();
        if now_sent > 0 {
            assert!(at - last <= Duration::from_secs(4), "{:?}", at - last);
            last = at;
            sends += now_sent;
        }
        if let Some(event) = ua.poll_event() {
            assert_eq!(at - t0, Duration::from_secs(32), "Timer F");
            assert_eq!(
                event,
                UaEvent::RestoredByeDone {
                    call,
                    code: 408,
                    reason: "Request Timeout".into()
                }
            );
            break;
        }
    }
    assert_eq!(sends, 11, "T1, 2T1, 4T1, then every T2 until 32 s");
    assert_eq!(ua.endpoint().transaction_count(), 0);
}

#[test]
fn corrupt_saved_dialogs_are_refused_with_the_field_named() {
    let mut ua = agent();
    let (_, dialog) = answered_outgoing(&mut ua, Instant::now());
    let good = dialog.save();
    let broken = |change: &dyn Fn(&mut SavedDialog)| {
        let mut saved = good.clone();
        change(&mut saved);
        Dialog::restore(&saved).expect_err("corrupt").to_string()
    };
    assert!(broken(&|s| s.remote_target = "not a uri".into()).starts_with("remote target:"));
    assert!(broken(&|s| s.local = "<sip:x@y".into()).starts_with("local:"));
    assert!(broken(&|s| s.route_set.push("<<>".into())).starts_with("route set:"));
    assert!(broken(&|s| s.id.local_tag = "other".into()).starts_with("local:"));
    assert!(broken(&|s| s.id.remote_tag.clear()).starts_with("remote:"));
    assert!(broken(&|s| s.id.call_id = "a\r\nX-Injected: 1".into()).starts_with("call id:"));
    assert!(broken(&|s| s.id.call_id.clear()).starts_with("call id:"));
}
