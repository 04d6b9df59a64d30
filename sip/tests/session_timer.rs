//! Session timers (RFC 4028) in virtual time: our INVITE asks for one; as the refresher we send
//! UPDATE (or a re-INVITE with our SDP, ACKed, when the peer does not allow UPDATE) at half the
//! interval; when the peer refreshes and stops, we send BYE at the interval minus a third (at most
//! 32 s) and the call ends; an unanswered refresh ends it too; a 422 is retried once with its
//! Min-SE. As UAS we refuse too short an interval with 422 and Min-SE, answer with
//! Session-Expires and Require: timer, and a refresh by UPDATE restarts the session.

use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{Message, NameAddr, Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{
    Body, CallHandle, OutgoingCall, SessionTimerConfig, UaConfig, UaEvent, UserAgent,
};

mod common;
use common::{addr, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const PEER: &str = "198.51.100.7:5080";
const SDP: &str = "v=0\r\no=- 2 2 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn agent() -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        session_timer: Some(SessionTimerConfig {
            expires: secs(600),
            min_se: secs(90),
        }),
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

fn requests(messages: &[Message]) -> Vec<Request> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r.clone()),
            Message::Response(_) => None,
        })
        .collect()
}

fn responses(messages: &[Message]) -> Vec<Response> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r.clone()),
            Message::Request(_) => None,
        })
        .collect()
}

/// Runs the timers up to `to`; everything sent on the way.
fn advance(ua: &mut UserAgent, to: Instant) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(at) = ua.poll_timeout().filter(|at| *at <= to) {
        ua.handle_timeout(at);
        out.extend(sent(ua));
    }
    ua.handle_timeout(to);
    out.extend(sent(ua));
    out
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

fn header<'a>(req: &'a Request, name: &str) -> &'a str {
    req.headers.get(name).unwrap_or("")
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
                    addr: addr(PEER),
                },
                body: Some(Body::sdp("v=0\r\n")),
                headers: Vec::new(),
            },
        )
        .expect("invite");
    let [invite] = requests(&sent(ua)).try_into().expect("one INVITE");
    (call, invite)
}

/// The peer answers our INVITE with `headers`; our ACK goes out.
fn answer(ua: &mut UserAgent, now: Instant, invite: &Request, headers: &[(&str, &str)]) {
    let mut ok = Response::for_request(invite, 200, "OK");
    ok.set_to_tag("p1").expect("tag");
    ok.headers.push("Contact", "<sip:phone@198.51.100.7:5080>");
    for (name, value) in headers {
        ok.headers.push(name, *value);
    }
    ok.set_body("application/sdp", SDP.as_bytes().to_vec());
    deliver(ua, now, &ok.to_bytes());
    let ack = requests(&sent(ua));
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].method.as_str(), "ACK");
    assert!(matches!(events(ua).as_slice(), [UaEvent::Answered { .. }]));
}

fn ok_to(req: &Request, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = Response::for_request(req, 200, "OK");
    for (name, value) in headers {
        r.headers.push(name, *value);
    }
    r.headers.set("Content-Length", "0");
    r.to_bytes()
}

#[test]
fn our_invite_asks_for_a_session_timer() {
    let now = Instant::now();
    let mut ua = agent();
    let (_, invite) = dial(&mut ua, now);
    assert_eq!(header(&invite, "Supported"), "100rel, timer");
    assert_eq!(header(&invite, "Session-Expires"), "600");
    assert_eq!(header(&invite, "Min-SE"), "90");
}

#[test]
fn as_refresher_we_send_update_at_half_the_interval() {
    let now = Instant::now();
    let mut ua = agent();
    let (_, invite) = dial(&mut ua, now);
    answer(
        &mut ua,
        now,
        &invite,
        &[
            ("Session-Expires", "120;refresher=uac"),
            ("Allow", "INVITE, ACK, BYE, UPDATE"),
        ],
    );
    assert!(requests(&advance(&mut ua, now + secs(60) - Duration::from_millis(1))).is_empty());
    let at = now + secs(60);
    let [update] = requests(&advance(&mut ua, at))
        .try_into()
        .expect("one refresh");
    assert_eq!(update.method.as_str(), "UPDATE");
    assert_eq!(header(&update, "CSeq"), "2 UPDATE");
    assert_eq!(header(&update, "Session-Expires"), "120;refresher=uac");
    assert_eq!(header(&update, "Call-ID"), header(&invite, "Call-ID"));
    assert!(update.body.is_empty());
    // The peer shortens the interval in its 200: the next refresh follows that.
    deliver(
        &mut ua,
        at,
        &ok_to(&update, &[("Session-Expires", "100;refresher=uac")]),
    );
    assert!(requests(&advance(&mut ua, at + secs(50) - Duration::from_millis(1))).is_empty());
    let [again] = requests(&advance(&mut ua, at + secs(50)))
        .try_into()
        .expect("one refresh");
    assert_eq!(header(&again, "CSeq"), "3 UPDATE");
}

#[test]
fn without_update_the_refresh_is_a_reinvite_with_our_sdp_and_is_acked() {
    let now = Instant::now();
    let mut ua = agent();
    let (_, invite) = dial(&mut ua, now);
    answer(
        &mut ua,
        now,
        &invite,
        &[("Session-Expires", "120;refresher=uac")],
    );
    let at = now + secs(60);
    let [reinvite] = requests(&advance(&mut ua, at))
        .try_into()
        .expect("one refresh");
    assert_eq!(reinvite.method.as_str(), "INVITE");
    assert_eq!(header(&reinvite, "CSeq"), "2 INVITE");
    assert_eq!(reinvite.body, b"v=0\r\n", "our current SDP, unchanged");
    let mut ok = Response::for_request(&reinvite, 200, "OK");
    ok.headers.push("Session-Expires", "120;refresher=uac");
    ok.set_body("application/sdp", SDP.as_bytes().to_vec());
    deliver(&mut ua, at, &ok.to_bytes());
    let ack = requests(&sent(&mut ua));
    assert_eq!(ack.len(), 1, "{ack:?}");
    assert_eq!(ack[0].method.as_str(), "ACK");
    assert_eq!(header(&ack[0], "CSeq"), "2 ACK");
    assert!(events(&mut ua).is_empty(), "a refresh is no event");
}

#[test]
fn when_the_peer_stops_refreshing_we_send_bye_and_the_call_ends() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = dial(&mut ua, now);
    answer(
        &mut ua,
        now,
        &invite,
        &[("Session-Expires", "120;refresher=uas")],
    );
    // 120 s less min(32 s, 40 s).
    assert!(requests(&advance(&mut ua, now + secs(88) - Duration::from_millis(1))).is_empty());
    assert!(events(&mut ua).is_empty());
    let [bye] = requests(&advance(&mut ua, now + secs(88)))
        .try_into()
        .expect("a BYE");
    assert_eq!(bye.method.as_str(), "BYE");
    assert_eq!(header(&bye, "CSeq"), "2 BYE");
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::SessionExpired { call: c }] if *c == call
    ));
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn an_unanswered_refresh_ends_the_call() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = dial(&mut ua, now);
    answer(
        &mut ua,
        now,
        &invite,
        &[
            ("Session-Expires", "120;refresher=uac"),
            ("Allow", "UPDATE"),
        ],
    );
    let out = requests(&advance(&mut ua, now + secs(60) + secs(33)));
    assert_eq!(out[0].method.as_str(), "UPDATE");
    assert!(
        out.iter().any(|r| r.method.as_str() == "BYE"),
        "{:?}",
        out.iter().map(|r| r.method.as_str()).collect::<Vec<_>>()
    );
    assert!(events(&mut ua)
        .iter()
        .any(|e| matches!(e, UaEvent::SessionExpired { call: c } if *c == call)));
}

fn from_caller(method: &str, branch: &str, to_tag: Option<&str>, seq: u32, extra: &str) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let (ct, body) = if method == "INVITE" {
        ("Content-Type: application/sdp\r\n", SDP)
    } else {
        ("", "")
    };
    format!(
        "{method} sip:gw@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5080;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:carol@198.51.100.7>;tag=c1\r\n\
To: <sip:gw@192.0.2.10>{to_tag}\r\n\
Call-ID: st-1@198.51.100.7\r\n\
CSeq: {seq} {method}\r\n\
Contact: <sip:carol@198.51.100.7:5080>\r\n\
{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn too_short_an_interval_is_refused_with_422_and_our_min_se() {
    let now = Instant::now();
    let mut ua = agent();
    deliver(
        &mut ua,
        now,
        &from_caller("INVITE", "z9hG4bKs1", None, 1, "Session-Expires: 60\r\n"),
    );
    let out = responses(&sent(&mut ua));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].code, 422);
    assert_eq!(out[0].headers.get("Min-SE"), Some("90"));
    assert!(events(&mut ua).is_empty());
    assert_eq!(ua.call_count(), 0);
}

#[test]
fn as_uas_we_answer_with_the_timer_and_a_refresh_by_update_restarts_it() {
    let now = Instant::now();
    let mut ua = agent();
    deliver(
        &mut ua,
        now,
        &from_caller(
            "INVITE",
            "z9hG4bKs2",
            None,
            1,
            "Supported: timer\r\nSession-Expires: 120\r\n",
        ),
    );
    let call = match events(&mut ua).as_slice() {
        [UaEvent::IncomingCall { call, .. }] => *call,
        other => panic!("{other:?}"),
    };
    ua.respond(now, call, 200, "OK", Some(Body::sdp(SDP)))
        .expect("200");
    let [ok] = responses(&sent(&mut ua)).try_into().expect("one 200");
    assert_eq!(ok.headers.get("Session-Expires"), Some("120;refresher=uac"));
    assert_eq!(ok.headers.get("Require"), Some("timer"));
    let tag = ok.headers.to().expect("to").tag().expect("tag").to_string();
    deliver(
        &mut ua,
        now,
        &from_caller("ACK", "z9hG4bKs3", Some(&tag), 1, ""),
    );
    events(&mut ua);

    // The caller refreshes at 50 s: 200 with the interval, and the expiry moves on.
    let at = now + secs(50);
    assert!(requests(&advance(&mut ua, at)).is_empty());
    deliver(
        &mut ua,
        at,
        &from_caller(
            "UPDATE",
            "z9hG4bKs4",
            Some(&tag),
            2,
            "Session-Expires: 120;refresher=uac\r\n",
        ),
    );
    let [answer] = responses(&sent(&mut ua)).try_into().expect("one 200");
    assert_eq!(answer.code, 200);
    assert_eq!(
        answer.headers.get("Session-Expires"),
        Some("120;refresher=uac")
    );
    assert!(requests(&advance(&mut ua, at + secs(88) - Duration::from_millis(1))).is_empty());
    let bye = requests(&advance(&mut ua, at + secs(88)));
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].method.as_str(), "BYE");
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::SessionExpired { .. }]
    ));
}

#[test]
fn a_422_to_our_invite_is_retried_once_with_its_min_se() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = dial(&mut ua, now);
    let mut too_small = Response::for_request(&invite, 422, "Session Interval Too Small");
    too_small.set_to_tag("p1").expect("tag");
    too_small.headers.push("Min-SE", "1200");
    deliver(&mut ua, now, &too_small.to_bytes());
    let out = requests(&sent(&mut ua));
    let methods: Vec<&str> = out.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["ACK", "INVITE"]);
    let retry = &out[1];
    assert_eq!(header(retry, "CSeq"), "2 INVITE");
    assert_eq!(header(retry, "Session-Expires"), "1200");
    assert_eq!(header(retry, "Min-SE"), "1200");
    assert_eq!(header(retry, "Call-ID"), header(&invite, "Call-ID"));
    assert_eq!(header(retry, "From"), header(&invite, "From"));
    assert_ne!(
        retry.headers.top_via().expect("via").branch(),
        invite.headers.top_via().expect("via").branch()
    );
    assert!(events(&mut ua).is_empty(), "a 422 retried is no event");

    // Once only: a second 422 fails the call.
    let mut again = Response::for_request(retry, 422, "Session Interval Too Small");
    again.set_to_tag("p1").expect("tag");
    again.headers.push("Min-SE", "2400");
    deliver(&mut ua, now, &again.to_bytes());
    assert!(matches!(
        events(&mut ua).as_slice(),
        [UaEvent::Failed { call: c, code: 422, .. }] if *c == call
    ));
}
