//! Blind transfer as the transferor (RFC 3515) in virtual time: REFER in the established
//! dialog with Refer-To, its 202, the NOTIFYs of the peer's new call (message/sipfrag, answered
//! 200) up to the final one; a refused REFER; a REFER nobody answers fails after 64*T1; an
//! accepted REFER whose NOTIFYs do not come ends unreported (64*T1 for the first, the
//! subscription's expiry for the next); a NOTIFY without a transfer of ours gets 481. As the
//! transferee: the peer's REFER refused (403), not performed (501), or performed (202, NOTIFY
//! `100 Trying`, the new call's status lines up to a final one that ends the subscription).

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

/// A call with our REFER to +15559999 sent: the call, its INVITE, the target and the REFER.
fn refer_sent(ua: &mut UserAgent, now: Instant) -> (CallHandle, Request, Uri, Request) {
    let (call, invite) = call(ua, now);
    let target = Uri::parse("sip:+15559999@198.51.100.7").expect("uri");
    ua.refer(now, call, &target).expect("refer");
    let refer = one_request(ua);
    (call, invite, target, refer)
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
    let (call, _, _, refer) = refer_sent(&mut ua, now);
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
    let (_, _, _, refer) = refer_sent(&mut ua, now);
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

/// Runs the agent's timers up to `end`; returns when the first transfer event came, and it.
fn next_transfer_event(
    ua: &mut UserAgent,
    end: Instant,
) -> Option<(Instant, Vec<TransferProgress>)> {
    while let Some(at) = ua.poll_timeout().filter(|at| *at <= end) {
        ua.handle_timeout(at);
        sent(ua);
        let progress = transfer_events(ua);
        if !progress.is_empty() {
            return Some((at, progress));
        }
    }
    None
}

#[test]
fn an_accepted_refer_without_any_notify_ends_unreported_after_64_t1() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite, target, refer) = refer_sent(&mut ua, now);
    let accepted = now + Duration::from_secs(1);
    deliver(&mut ua, accepted, &answer(&refer, 202, "Accepted"));
    assert_eq!(transfer_events(&mut ua), [TransferProgress::Accepted]);
    assert!(
        ua.refer(accepted, call, &target).is_err(),
        "still under way"
    );

    let (at, progress) =
        next_transfer_event(&mut ua, now + Duration::from_secs(120)).expect("the transfer ends");
    assert_eq!(progress, [TransferProgress::Unreported]);
    // Timer N (RFC 6665): 64*T1 after the 2xx, 32 s at T1 = 500 ms.
    assert_eq!(at.duration_since(accepted), Duration::from_secs(32));
    // The subscription is gone: a late NOTIFY has none; the call goes on and may transfer again.
    deliver(
        &mut ua,
        at,
        &notify(&invite, 1, "SIP/2.0 200 OK\r\n", "terminated"),
    );
    assert_eq!(one_response(&mut ua).code, 481);
    assert!(transfer_events(&mut ua).is_empty());
    ua.refer(at, call, &target).expect("a second transfer");
    assert_eq!(one_request(&mut ua).method.as_str(), "REFER");
}

#[test]
fn a_subscription_that_expires_before_a_final_notify_ends_unreported() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite, target, refer) = refer_sent(&mut ua, now);
    deliver(&mut ua, now, &answer(&refer, 202, "Accepted"));
    // A NOTIFY 20 s in (within Timer N) moves the deadline to its subscription's expiry.
    let ringing = now + Duration::from_secs(20);
    deliver(
        &mut ua,
        ringing,
        &notify(&invite, 1, "SIP/2.0 180 Ringing\r\n", "active;expires=40"),
    );
    assert_eq!(one_response(&mut ua).code, 200);
    assert_eq!(
        transfer_events(&mut ua),
        [
            TransferProgress::Accepted,
            TransferProgress::Status {
                code: 180,
                reason: "Ringing".into(),
                done: false
            }
        ]
    );
    let (at, progress) =
        next_transfer_event(&mut ua, now + Duration::from_secs(300)).expect("the transfer ends");
    assert_eq!(progress, [TransferProgress::Unreported]);
    assert_eq!(at.duration_since(ringing), Duration::from_secs(40));
    ua.refer(at, call, &target).expect("a second transfer");
}

#[test]
fn a_final_notify_stops_the_wait_for_the_outcome() {
    let now = Instant::now();
    let mut ua = agent();
    let (_, invite, _, refer) = refer_sent(&mut ua, now);
    deliver(&mut ua, now, &answer(&refer, 202, "Accepted"));
    deliver(
        &mut ua,
        now,
        &notify(&invite, 1, "SIP/2.0 486 Busy Here\r\n", "terminated"),
    );
    assert_eq!(one_response(&mut ua).code, 200);
    assert_eq!(transfer_events(&mut ua).len(), 2);
    assert_eq!(
        next_transfer_event(&mut ua, now + Duration::from_secs(300)),
        None,
        "nothing more after the final NOTIFY"
    );
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
    // Allowed: past the policy, but not performed.
    ua.allow_peer_refer(call).expect("allow");
    deliver(&mut ua, now, peer_refer(&invite, 2).as_bytes());
    let refused = one_response(&mut ua);
    assert_eq!(refused.code, 501);
    assert!(!refused.headers.get("Allow").unwrap_or("").contains("REFER"));
    assert!(transfer_events(&mut ua).is_empty());
}

/// The NOTIFYs and responses the agent sent.
fn notifies_and_responses(ua: &mut UserAgent) -> (Vec<Request>, Vec<Response>) {
    let mut notifies = Vec::new();
    let mut responses = Vec::new();
    for m in sent(ua) {
        match m {
            Message::Request(r) if r.method.as_str() == "NOTIFY" => notifies.push(r),
            Message::Response(r) => responses.push(r),
            other => panic!("unexpected {other:?}"),
        }
    }
    (notifies, responses)
}

fn referred(ua: &mut UserAgent) -> Vec<(CallHandle, Uri)> {
    events(ua)
        .into_iter()
        .filter_map(|e| match e {
            UaEvent::Referred { call, refer_to } => Some((call, refer_to)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_performed_refer_is_accepted_and_our_notifies_report_the_new_call_to_the_end() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = call(&mut ua, now);
    ua.perform_peer_refer(call).expect("perform");
    deliver(&mut ua, now, peer_refer(&invite, 1).as_bytes());
    let (notifies, responses) = notifies_and_responses(&mut ua);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].code, 202);
    assert_eq!(
        referred(&mut ua),
        [(call, Uri::parse("sip:+15550000@198.51.100.7").expect("uri"))]
    );
    // The implicit subscription's first NOTIFY, in the dialog, to the peer's Contact.
    let [trying] = notifies.as_slice() else {
        panic!("one NOTIFY: {notifies:?}");
    };
    assert_eq!(trying.uri.to_string(), "sip:phone@198.51.100.7:5080");
    assert_eq!(trying.headers.get("Call-ID"), invite.headers.get("Call-ID"));
    assert_eq!(trying.headers.get("Event"), Some("refer;id=1"));
    assert_eq!(
        trying.headers.get("Subscription-State"),
        Some("active;expires=120")
    );
    assert_eq!(sipfrag_status(&trying.body), Some((100, "Trying".into())));
    assert!(trying
        .headers
        .get("Content-Type")
        .is_some_and(|t| t.starts_with("message/sipfrag")));
    deliver(&mut ua, now, &answer(trying, 200, "OK"));

    // One at a time: another REFER meanwhile waits.
    deliver(&mut ua, now, peer_refer(&invite, 2).as_bytes());
    assert_eq!(one_response(&mut ua).code, 491);
    assert!(referred(&mut ua).is_empty());

    ua.notify_transfer(now, call, 180, "Ringing")
        .expect("notify");
    let ringing = one_request(&mut ua);
    assert_eq!(sipfrag_status(&ringing.body), Some((180, "Ringing".into())));
    assert_eq!(
        ringing.headers.get("Subscription-State"),
        Some("active;expires=120")
    );
    deliver(&mut ua, now, &answer(&ringing, 200, "OK"));
    ua.notify_transfer(now, call, 200, "OK").expect("notify");
    let answered = one_request(&mut ua);
    assert_eq!(sipfrag_status(&answered.body), Some((200, "OK".into())));
    assert_eq!(
        answered.headers.get("Subscription-State"),
        Some("terminated;reason=noresource")
    );
    let seqs: Vec<&str> = [trying, &ringing, &answered]
        .iter()
        .filter_map(|n| n.headers.get("CSeq"))
        .collect();
    assert_eq!(seqs, ["2 NOTIFY", "3 NOTIFY", "4 NOTIFY"]);
    deliver(&mut ua, now, &answer(&answered, 200, "OK"));
    // The subscription is over: nothing more to report, and a new REFER may come.
    assert!(ua.notify_transfer(now, call, 200, "OK").is_err());
    deliver(&mut ua, now, peer_refer(&invite, 3).as_bytes());
    let (notifies, responses) = notifies_and_responses(&mut ua);
    assert_eq!(responses[0].code, 202);
    assert_eq!(notifies.len(), 1);
    assert_eq!(notifies[0].headers.get("Event"), Some("refer;id=3"));
}

#[test]
fn a_performed_refer_without_a_refer_to_is_a_bad_request() {
    let now = Instant::now();
    let mut ua = agent();
    let (call, invite) = call(&mut ua, now);
    ua.perform_peer_refer(call).expect("perform");
    let without = peer_refer(&invite, 1).replace("Refer-To: <sip:+15550000@198.51.100.7>\r\n", "");
    deliver(&mut ua, now, without.as_bytes());
    assert_eq!(one_response(&mut ua).code, 400);
    assert!(referred(&mut ua).is_empty());
    assert!(ua.notify_transfer(now, call, 100, "Trying").is_err());
}

/// A BYE asked for while our final NOTIFY is unanswered waits for that answer (or for the
/// NOTIFY's failure), so that it cannot overtake the NOTIFY on the way: a proxy's workers can
/// reorder UDP, and a peer whose dialog ends first never learns the outcome.
#[test]
fn a_bye_waits_for_the_answer_to_our_final_notify() {
    for answered in [true, false] {
        let now = Instant::now();
        let mut ua = agent();
        let (call, invite) = call(&mut ua, now);
        ua.perform_peer_refer(call).expect("perform");
        deliver(&mut ua, now, peer_refer(&invite, 1).as_bytes());
        let (notifies, _) = notifies_and_responses(&mut ua);
        deliver(&mut ua, now, &answer(&notifies[0], 200, "OK"));
        events(&mut ua);
        ua.notify_transfer(now, call, 200, "OK").expect("notify");
        let last = one_request(&mut ua);
        ua.bye(now, call).expect("bye");
        assert!(sent(&mut ua).is_empty(), "BYE before the NOTIFY's answer");

        let mut methods = Vec::new();
        if answered {
            deliver(&mut ua, now, &answer(&last, 200, "OK"));
            methods.extend(sent(&mut ua));
        } else {
            // The NOTIFY is retransmitted until Timer F (64*T1) ends it; then the BYE goes.
            while let Some(at) = ua.poll_timeout() {
                if at > now + Duration::from_secs(60) || methods.iter().any(is_bye) {
                    break;
                }
                ua.handle_timeout(at);
                methods.extend(sent(&mut ua));
            }
            assert!(methods.iter().take_while(|m| !is_bye(m)).count() >= 1);
        }
        let bye = methods.iter().find(|m| is_bye(m)).expect("the BYE");
        let Message::Request(bye) = bye else {
            unreachable!()
        };
        assert_eq!(bye.headers.get("Call-ID"), invite.headers.get("Call-ID"));
        let seq = |r: &Request| r.headers.cseq().expect("CSeq").seq;
        assert!(seq(bye) > seq(&last), "answered {answered}");
    }
}

fn is_bye(m: &Message) -> bool {
    matches!(m, Message::Request(r) if r.method.as_str() == "BYE")
}
