//! Virtual-time tests of the four transaction machines (RFC 3261 section 17, RFC 6026).

use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Endpoint, Event, Incoming, State, Target};
use dialbridge_sip::message::{Method, Request, Response, Uri};
use dialbridge_sip::transport::Transport;

mod common;
use common::{addr, parse_request, parse_response, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const PEER: &str = "198.51.100.7:5060";

fn endpoint() -> Endpoint {
    Endpoint::new(Config {
        local_addrs: vec![(Transport::Udp, addr(LOCAL)), (Transport::Tcp, addr(LOCAL))],
        ..Config::default()
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn request(method: Method) -> Request {
    let mut r = Request::new(
        method.clone(),
        Uri::parse("sip:bob@198.51.100.7").expect("uri"),
    );
    r.headers.push("From", "<sip:alice@192.0.2.10>;tag=a1");
    r.headers.push("To", "<sip:bob@198.51.100.7>");
    r.headers.push("Call-ID", "call-1@192.0.2.10");
    r.headers.push("CSeq", format!("1 {method}"));
    r.headers.push("Route", "<sip:proxy.example.com;lr>");
    r.headers.push("Contact", "<sip:alice@192.0.2.10>");
    r
}

fn target(transport: Transport) -> Target {
    Target {
        transport,
        addr: addr(PEER),
    }
}

fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

/// Runs timers up to `t0 + until`; returns (offset, bytes) of every transmit.
fn run(ep: &mut Endpoint, t0: Instant, until: Duration) -> Vec<(Duration, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_timeout() {
        if t > t0 + until {
            break;
        }
        ep.handle_timeout(t);
        for tx in transmits(ep) {
            out.push((t - t0, tx.bytes));
        }
    }
    out
}

/// A response to the request in `sent` as the peer would send it.
fn answer(sent: &[u8], code: u16, to_tag: Option<&str>) -> Vec<u8> {
    let req = parse_request(sent);
    let mut r = Response::for_request(&req, code, "X");
    if let Some(t) = to_tag {
        r.set_to_tag(t).expect("to");
    }
    r.to_bytes()
}

fn deliver(ep: &mut Endpoint, now: Instant, transport: Transport, bytes: &[u8]) {
    ep.handle_input(
        now,
        Incoming {
            transport,
            local: addr(LOCAL),
            remote: addr(PEER),
            message: bytes,
        },
    );
}

fn offsets(v: &[(Duration, Vec<u8>)]) -> Vec<u64> {
    v.iter().map(|(d, _)| d.as_millis() as u64).collect()
}

#[test]
fn invite_client_timer_a_doubles_and_timer_b_times_out() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Invite), target(Transport::Udp))
        .expect("send");
    let first = transmits(&mut ep);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].destination, addr(PEER));
    let sent = String::from_utf8(first[0].bytes.clone()).expect("utf8");
    assert!(sent.starts_with("INVITE sip:bob@198.51.100.7 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK"), "{sent}");
    assert!(sent.contains(";rport\r\n") && sent.contains("\r\nMax-Forwards: 70\r\n"));
    let retrans = run(&mut ep, t0, Duration::from_secs(40));
    // Timer A: T1, doubling without a cap; Timer B: 64*T1 = 32 s.
    assert_eq!(offsets(&retrans), vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert!(retrans.iter().all(|(_, b)| *b == first[0].bytes));
    assert_eq!(events(&mut ep), vec![Event::Timeout { id }]);
    assert_eq!(ep.state(id), None);
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn invite_client_over_tcp_never_retransmits() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Invite), target(Transport::Tcp))
        .expect("send");
    assert_eq!(transmits(&mut ep).len(), 1);
    assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    assert!(run(&mut ep, t0, Duration::from_secs(40)).is_empty());
    assert_eq!(events(&mut ep), vec![Event::Timeout { id }]);
}

#[test]
fn invite_client_acks_non_2xx_inside_the_transaction_and_waits_timer_d() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Invite), target(Transport::Udp))
        .expect("send");
    let invite = transmits(&mut ep).remove(0).bytes;
    let branch = parse_request(&invite)
        .headers
        .top_via()
        .expect("via")
        .branch()
        .expect("b")
        .to_string();
    let busy = answer(&invite, 486, Some("b7"));
    deliver(&mut ep, t0 + ms(100), Transport::Udp, &busy);
    let ack = transmits(&mut ep);
    assert_eq!(ack.len(), 1);
    let expected = format!(
        "ACK sip:bob@198.51.100.7 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@192.0.2.10>;tag=a1\r\n\
To: \"\" <sip:bob@198.51.100.7>;tag=b7\r\n\
Call-ID: call-1@192.0.2.10\r\n\
CSeq: 1 ACK\r\n\
Route: <sip:proxy.example.com;lr>\r\n\
Content-Length: 0\r\n\r\n"
    )
    .replace("To: \"\" <", "To: <");
    assert_eq!(
        String::from_utf8(ack[0].bytes.clone()).expect("utf8"),
        expected
    );
    let ev = events(&mut ep);
    assert!(
        matches!(&ev[..], [Event::Response { id: i, response }] if *i == id && response.code == 486)
    );
    assert_eq!(ep.state(id), Some(State::Completed));
    // A retransmitted 486 is answered with the same ACK and not passed up.
    deliver(&mut ep, t0 + ms(2000), Transport::Udp, &busy);
    assert_eq!(transmits(&mut ep)[0].bytes, ack[0].bytes);
    assert!(events(&mut ep).is_empty());
    // No INVITE retransmission after the final response; Timer D = 32 s.
    assert_eq!(
        ep.poll_timeout(),
        Some(t0 + ms(100) + Duration::from_secs(32))
    );
    assert!(run(&mut ep, t0, Duration::from_secs(40)).is_empty());
    assert_eq!(ep.state(id), None);
    assert!(events(&mut ep).is_empty(), "Timer D is silent");
    deliver(&mut ep, t0 + Duration::from_secs(41), Transport::Udp, &busy);
    assert!(matches!(&events(&mut ep)[..], [Event::Discarded { .. }]));
}

#[test]
fn invite_client_over_tcp_terminates_right_after_non_2xx() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Invite), target(Transport::Tcp))
        .expect("send");
    let invite = transmits(&mut ep).remove(0).bytes;
    deliver(
        &mut ep,
        t0 + ms(10),
        Transport::Tcp,
        &answer(&invite, 503, Some("x")),
    );
    let ack = transmits(&mut ep);
    assert_eq!(ack.len(), 1);
    assert!(ack[0].bytes.starts_with(b"ACK "));
    assert_eq!(ep.state(id), None, "Timer D is zero over TCP");
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn invite_client_passes_every_2xx_up_and_ends_on_timer_m() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Invite), target(Transport::Udp))
        .expect("send");
    let invite = transmits(&mut ep).remove(0).bytes;
    deliver(
        &mut ep,
        t0 + ms(300),
        Transport::Udp,
        &answer(&invite, 180, Some("t1")),
    );
    assert_eq!(ep.state(id), Some(State::Proceeding));
    // Proceeding: no retransmissions, no Timer B.
    assert_eq!(ep.poll_timeout(), None);
    deliver(
        &mut ep,
        t0 + ms(5000),
        Transport::Udp,
        &answer(&invite, 200, Some("t1")),
    );
    assert_eq!(ep.state(id), Some(State::Accepted));
    // A 2xx from another fork and a retransmission are both passed up; no ACK is generated here.
    deliver(
        &mut ep,
        t0 + ms(5100),
        Transport::Udp,
        &answer(&invite, 200, Some("t2")),
    );
    deliver(
        &mut ep,
        t0 + ms(5500),
        Transport::Udp,
        &answer(&invite, 200, Some("t1")),
    );
    deliver(
        &mut ep,
        t0 + ms(5600),
        Transport::Udp,
        &answer(&invite, 180, Some("t1")),
    );
    assert!(transmits(&mut ep).is_empty());
    let codes: Vec<u16> = events(&mut ep)
        .into_iter()
        .map(|e| match e {
            Event::Response { response, .. } => response.code,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, vec![180, 200, 200, 200]);
    assert_eq!(
        ep.poll_timeout(),
        Some(t0 + ms(5000) + Duration::from_secs(32))
    );
    run(&mut ep, t0, Duration::from_secs(40));
    assert_eq!(ep.state(id), None);
    assert!(events(&mut ep).is_empty());
}

#[test]
fn non_invite_client_timer_e_caps_at_t2_and_timer_f() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Options), target(Transport::Udp))
        .expect("send");
    transmits(&mut ep);
    let retrans = run(&mut ep, t0, Duration::from_secs(40));
    assert_eq!(
        offsets(&retrans),
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(events(&mut ep), vec![Event::Timeout { id }]);
}

#[test]
fn non_invite_client_in_proceeding_retransmits_every_t2() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Bye), target(Transport::Udp))
        .expect("send");
    let bye = transmits(&mut ep).remove(0).bytes;
    let retrans = run(&mut ep, t0, ms(600));
    assert_eq!(offsets(&retrans), vec![500]);
    deliver(
        &mut ep,
        t0 + ms(700),
        Transport::Udp,
        &answer(&bye, 100, None),
    );
    assert_eq!(ep.state(id), Some(State::Proceeding));
    let retrans = run(&mut ep, t0, Duration::from_secs(40));
    assert_eq!(
        offsets(&retrans),
        vec![1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500]
    );
    let ev = events(&mut ep);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1], Event::Timeout { id });
}

#[test]
fn non_invite_client_completed_absorbs_retransmissions_until_timer_k() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Options), target(Transport::Udp))
        .expect("send");
    let opt = transmits(&mut ep).remove(0).bytes;
    let ok = answer(&opt, 200, Some("z"));
    deliver(&mut ep, t0 + ms(1000), Transport::Udp, &ok);
    assert_eq!(events(&mut ep).len(), 1);
    assert_eq!(ep.state(id), Some(State::Completed));
    deliver(&mut ep, t0 + ms(1200), Transport::Udp, &ok);
    assert!(events(&mut ep).is_empty());
    // Timer K = T4 = 5 s; no retransmissions once completed.
    assert_eq!(ep.poll_timeout(), Some(t0 + ms(6000)));
    assert!(run(&mut ep, t0, Duration::from_secs(40)).is_empty());
    assert_eq!(ep.state(id), None);
}

#[test]
fn non_invite_client_over_tcp() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Options), target(Transport::Tcp))
        .expect("send");
    let opt = transmits(&mut ep).remove(0).bytes;
    assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    deliver(
        &mut ep,
        t0 + ms(50),
        Transport::Tcp,
        &answer(&opt, 200, Some("z")),
    );
    assert_eq!(events(&mut ep).len(), 1);
    assert_eq!(ep.state(id), None, "Timer K is zero over TCP");
    assert_eq!(ep.poll_timeout(), None);
}

fn incoming_invite(branch: &str) -> Vec<u8> {
    format!(
        "INVITE sip:gw@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:carol@198.51.100.7>;tag=c1\r\n\
To: <sip:gw@192.0.2.10>\r\n\
Call-ID: in-1@198.51.100.7\r\n\
CSeq: 7 INVITE\r\n\
Contact: <sip:carol@198.51.100.7>\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn incoming_ack(branch: &str, to_tag: &str) -> Vec<u8> {
    format!(
        "ACK sip:gw@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:carol@198.51.100.7>;tag=c1\r\n\
To: <sip:gw@192.0.2.10>;tag={to_tag}\r\n\
Call-ID: in-1@198.51.100.7\r\n\
CSeq: 7 ACK\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Delivers an INVITE and returns the server transaction and its request.
fn server_invite(
    ep: &mut Endpoint,
    now: Instant,
    transport: Transport,
) -> (dialbridge_sip::endpoint::TransactionId, Request) {
    deliver(ep, now, transport, &incoming_invite("z9hG4bKinv1"));
    match events(ep).as_slice() {
        [Event::Request {
            id,
            request,
            cancels: None,
            ..
        }] => (*id, request.clone()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn invite_server_sends_100_trying_after_200_ms_and_repeats_it() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let (id, _) = server_invite(&mut ep, t0, Transport::Udp);
    assert!(transmits(&mut ep).is_empty());
    assert_eq!(ep.poll_timeout(), Some(t0 + ms(200)));
    let sent = run(&mut ep, t0, ms(200));
    assert_eq!(offsets(&sent), vec![200]);
    assert_eq!(
        String::from_utf8(sent[0].1.clone()).expect("utf8"),
        "SIP/2.0 100 Trying\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKinv1\r\n\
From: <sip:carol@198.51.100.7>;tag=c1\r\n\
To: <sip:gw@192.0.2.10>\r\n\
Call-ID: in-1@198.51.100.7\r\n\
CSeq: 7 INVITE\r\n\
Content-Length: 0\r\n\r\n"
    );
    // A retransmitted INVITE is absorbed and answered with the last provisional.
    deliver(
        &mut ep,
        t0 + ms(500),
        Transport::Udp,
        &incoming_invite("z9hG4bKinv1"),
    );
    assert!(events(&mut ep).is_empty());
    assert_eq!(transmits(&mut ep)[0].bytes, sent[0].1);
    assert_eq!(ep.state(id), Some(State::Proceeding));
    assert_eq!(ep.poll_timeout(), None, "no timers in Proceeding");
}

#[test]
fn invite_server_skips_100_when_the_tu_answers_sooner() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let (id, req) = server_invite(&mut ep, t0, Transport::Udp);
    let mut ringing = Response::for_request(&req, 180, "Ringing");
    ringing.set_to_tag("g1").expect("tag");
    ep.send_response(t0 + ms(150), id, ringing).expect("send");
    let sent = transmits(&mut ep);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].bytes.starts_with(b"SIP/2.0 180 Ringing\r\n"));
    assert!(run(&mut ep, t0, Duration::from_secs(1)).is_empty());
}

#[test]
fn invite_server_retransmits_non_2xx_with_timer_g_until_timer_h() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let (id, req) = server_invite(&mut ep, t0, Transport::Udp);
    let mut busy = Response::for_request(&req, 486, "Busy Here");
    busy.set_to_tag("g1").expect("tag");
    ep.send_response(t0 + ms(100), id, busy).expect("send");
    let first = transmits(&mut ep).remove(0).bytes;
    let retrans = run(&mut ep, t0, Duration::from_secs(40));
    assert_eq!(
        offsets(&retrans),
        vec![600, 1600, 3600, 7600, 11600, 15600, 19600, 23600, 27600, 31600]
    );
    assert!(retrans.iter().all(|(_, b)| *b == first));
    // Timer H = 64*T1 after the final response: no ACK came.
    assert_eq!(events(&mut ep), vec![Event::Timeout { id }]);
    assert_eq!(ep.state(id), None);
}

#[test]
fn invite_server_ack_for_non_2xx_is_absorbed_and_timer_i_ends_it() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let (id, req) = server_invite(&mut ep, t0, Transport::Udp);
    let mut busy = Response::for_request(&req, 486, "Busy Here");
    busy.set_to_tag("g1").expect("tag");
    ep.send_response(t0, id, busy).expect("send");
    let first = transmits(&mut ep).remove(0).bytes;
    assert_eq!(offsets(&run(&mut ep, t0, ms(1000))), vec![500]);
    // A retransmitted INVITE in Completed gets the final response again.
    deliver(
        &mut ep,
        t0 + ms(1000),
        Transport::Udp,
        &incoming_invite("z9hG4bKinv1"),
    );
    assert_eq!(transmits(&mut ep)[0].bytes, first);
    deliver(
        &mut ep,
        t0 + ms(1200),
        Transport::Udp,
        &incoming_ack("z9hG4bKinv1", "g1"),
    );
    assert_eq!(ep.state(id), Some(State::Confirmed));
    deliver(
        &mut ep,
        t0 + ms(1300),
        Transport::Udp,
        &incoming_ack("z9hG4bKinv1", "g1"),
    );
    assert!(
        events(&mut ep).is_empty(),
        "ACK for a non-2xx is not passed up"
    );
    // Timer I = T4 after the ACK; no retransmissions meanwhile.
    assert_eq!(ep.poll_timeout(), Some(t0 + ms(6200)));
    assert!(run(&mut ep, t0, Duration::from_secs(40)).is_empty());
    assert_eq!(ep.state(id), None);
    assert!(events(&mut ep).is_empty());
}

#[test]
fn invite_server_over_tcp_has_no_timer_g_and_zero_timer_i() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let (id, req) = server_invite(&mut ep, t0, Transport::Tcp);
    let mut busy = Response::for_request(&req, 486, "Busy Here");
    busy.set_to_tag("g1").expect("tag");
    ep.send_response(t0, id, busy).expect("send");
    assert_eq!(transmits(&mut ep).len(), 1);
    assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    deliver(
        &mut ep,
        t0 + ms(100),
        Transport::Tcp,
        &incoming_ack("z9hG4bKinv1", "g1"),
    );
    assert_eq!(ep.state(id), None);
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn invite_server_retransmits_2xx_until_the_ack_then_timer_l() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let (id, req) = server_invite(&mut ep, t0, Transport::Udp);
    let mut ok = Response::for_request(&req, 200, "OK");
    ok.set_to_tag("g1").expect("tag");
    ep.send_response(t0, id, ok).expect("send");
    let first = transmits(&mut ep).remove(0).bytes;
    assert_eq!(ep.state(id), Some(State::Accepted));
    let retrans = run(&mut ep, t0, ms(2000));
    assert_eq!(offsets(&retrans), vec![500, 1500]);
    assert!(retrans.iter().all(|(_, b)| *b == first));
    // A retransmitted INVITE in Accepted is absorbed.
    deliver(
        &mut ep,
        t0 + ms(1700),
        Transport::Udp,
        &incoming_invite("z9hG4bKinv1"),
    );
    assert!(events(&mut ep).is_empty());
    assert!(transmits(&mut ep).is_empty());
    // The ACK for the 2xx has its own branch; it is matched by Call-ID, CSeq and From tag.
    deliver(
        &mut ep,
        t0 + ms(2000),
        Transport::Udp,
        &incoming_ack("z9hG4bKack9", "g1"),
    );
    match events(&mut ep).as_slice() {
        [Event::Ack { acked, request, .. }] => {
            assert_eq!(*acked, Some(id));
            assert_eq!(request.method, Method::Ack);
        }
        other => panic!("{other:?}"),
    }
    assert!(run(&mut ep, t0, Duration::from_secs(40)).is_empty());
    assert_eq!(ep.state(id), None, "Timer L ended it");
    assert!(events(&mut ep).is_empty(), "acknowledged: no timeout");
}

#[test]
fn invite_server_reports_an_unacknowledged_2xx_at_timer_l() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let (id, req) = server_invite(&mut ep, t0, Transport::Udp);
    let mut ok = Response::for_request(&req, 200, "OK");
    ok.set_to_tag("g1").expect("tag");
    ep.send_response(t0, id, ok).expect("send");
    transmits(&mut ep);
    let retrans = run(&mut ep, t0, Duration::from_secs(40));
    assert_eq!(
        offsets(&retrans),
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(events(&mut ep), vec![Event::Timeout { id }]);
    // A late ACK after the transaction is gone is still passed up, unmatched.
    deliver(
        &mut ep,
        t0 + Duration::from_secs(41),
        Transport::Udp,
        &incoming_ack("z9hG4bKack9", "g1"),
    );
    assert!(matches!(
        &events(&mut ep)[..],
        [Event::Ack { acked: None, .. }]
    ));
}

fn incoming_options(branch: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:gw@192.0.2.10 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\r\n\
From: <sip:carol@198.51.100.7>;tag=c1\r\n\
To: <sip:gw@192.0.2.10>\r\n\
Call-ID: opt-1@198.51.100.7\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn non_invite_server_absorbs_then_repeats_final_until_timer_j() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    deliver(&mut ep, t0, Transport::Udp, &incoming_options("z9hG4bKo1"));
    let (id, req) = match events(&mut ep).as_slice() {
        [Event::Request { id, request, .. }] => (*id, request.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(ep.poll_timeout(), None, "no 100 Trying for non-INVITE");
    deliver(
        &mut ep,
        t0 + ms(500),
        Transport::Udp,
        &incoming_options("z9hG4bKo1"),
    );
    assert!(events(&mut ep).is_empty());
    assert!(
        transmits(&mut ep).is_empty(),
        "Trying: retransmission absorbed"
    );
    let mut ok = Response::for_request(&req, 200, "OK");
    ok.set_to_tag("s1").expect("tag");
    ep.send_response(t0 + ms(600), id, ok).expect("send");
    let first = transmits(&mut ep).remove(0).bytes;
    deliver(
        &mut ep,
        t0 + ms(1500),
        Transport::Udp,
        &incoming_options("z9hG4bKo1"),
    );
    assert_eq!(transmits(&mut ep)[0].bytes, first);
    assert_eq!(
        ep.send_response(t0 + ms(1600), id, Response::for_request(&req, 500, "x")),
        Err(dialbridge_sip::endpoint::SendError::InvalidState(
            "final response already sent"
        ))
    );
    assert_eq!(
        ep.poll_timeout(),
        Some(t0 + ms(600) + Duration::from_secs(32))
    );
    assert!(run(&mut ep, t0, Duration::from_secs(40)).is_empty());
    assert_eq!(ep.state(id), None);
}

#[test]
fn non_invite_server_over_tcp_ends_at_once() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    deliver(&mut ep, t0, Transport::Tcp, &incoming_options("z9hG4bKo1"));
    let (id, req) = match events(&mut ep).as_slice() {
        [Event::Request { id, request, .. }] => (*id, request.clone()),
        other => panic!("{other:?}"),
    };
    ep.send_response(t0, id, Response::for_request(&req, 200, "OK"))
        .expect("send");
    assert_eq!(transmits(&mut ep).len(), 1);
    assert_eq!(ep.state(id), None, "Timer J is zero over TCP");
}

#[test]
fn stray_responses_are_dropped() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnothing\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    deliver(&mut ep, t0, Transport::Udp, stray.as_bytes());
    assert!(transmits(&mut ep).is_empty());
    match events(&mut ep).as_slice() {
        [Event::Discarded { reason, .. }] => assert!(reason.contains("stray 200"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Same branch, other method: not a match either (RFC 3261 17.1.3).
    let id = ep
        .send_request(t0, request(Method::Options), target(Transport::Udp))
        .expect("send");
    let opt = transmits(&mut ep).remove(0).bytes;
    let wrong = String::from_utf8(answer(&opt, 200, Some("z")))
        .expect("utf8")
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INFO");
    deliver(&mut ep, t0 + ms(10), Transport::Udp, wrong.as_bytes());
    assert!(matches!(&events(&mut ep)[..], [Event::Discarded { .. }]));
    assert_eq!(ep.state(id), Some(State::Trying));
}

#[test]
fn transport_error_fails_the_transaction() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let id = ep
        .send_request(t0, request(Method::Invite), target(Transport::Tcp))
        .expect("send");
    transmits(&mut ep);
    ep.handle_transport_error(t0 + ms(5), Transport::Tcp, addr(PEER), "connection refused");
    assert_eq!(
        events(&mut ep),
        vec![Event::TransportError {
            id,
            error: "connection refused".into()
        }]
    );
    assert_eq!(ep.state(id), None);
    assert_eq!(ep.poll_timeout(), None);
}

#[test]
fn cancel_is_matched_to_its_invite_server_transaction() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let (inv, _) = server_invite(&mut ep, t0, Transport::Udp);
    let cancel = String::from_utf8(incoming_invite("z9hG4bKinv1"))
        .expect("utf8")
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 7 INVITE", "CSeq: 7 CANCEL");
    deliver(&mut ep, t0 + ms(50), Transport::Udp, cancel.as_bytes());
    match events(&mut ep).as_slice() {
        [Event::Request {
            id,
            request,
            cancels,
            ..
        }] => {
            assert_eq!(request.method, Method::Cancel);
            assert_eq!(*cancels, Some(inv));
            assert_ne!(*id, inv);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc2543_requests_match_without_a_branch() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let old = String::from_utf8(incoming_invite("x"))
        .expect("utf8")
        .replace(";branch=x", "");
    deliver(&mut ep, t0, Transport::Udp, old.as_bytes());
    assert_eq!(events(&mut ep).len(), 1);
    deliver(&mut ep, t0 + ms(500), Transport::Udp, old.as_bytes());
    assert!(
        events(&mut ep).is_empty(),
        "retransmission matched by RFC 2543 rules"
    );
}

#[test]
fn malformed_request_is_answered_400_with_a_to_tag() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let bad = String::from_utf8(incoming_invite("z9hG4bKbad"))
        .expect("utf8")
        .replace("CSeq: 7 INVITE", "CSeq: 7 BYE");
    deliver(&mut ep, t0, Transport::Udp, bad.as_bytes());
    let sent = transmits(&mut ep);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].destination, addr(PEER));
    let resp = parse_response(&sent[0].bytes);
    assert_eq!(resp.code, 400);
    assert!(resp.headers.to().expect("to").tag().is_some());
    match events(&mut ep).as_slice() {
        [Event::Discarded { reason, .. }] => assert!(reason.contains("CSeq"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ep.transaction_count(), 0);
}

#[test]
fn responses_follow_rport_and_received() {
    let mut ep = endpoint();
    let t0 = Instant::now();
    let natted = String::from_utf8(incoming_options("z9hG4bKo1"))
        .expect("utf8")
        .replace("198.51.100.7:5060;branch", "10.0.0.5:5060;rport;branch");
    ep.handle_input(
        t0,
        Incoming {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr("203.0.113.9:40123"),
            message: natted.as_bytes(),
        },
    );
    let (id, req) = match events(&mut ep).as_slice() {
        [Event::Request { id, request, .. }] => (*id, request.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        req.headers.get("Via"),
        Some("SIP/2.0/UDP 10.0.0.5:5060;rport=40123;branch=z9hG4bKo1;received=203.0.113.9")
    );
    ep.send_response(t0, id, Response::for_request(&req, 200, "OK"))
        .expect("send");
    let sent = transmits(&mut ep);
    assert_eq!(sent[0].destination, addr("203.0.113.9:40123"));
    assert!(String::from_utf8(sent[0].bytes.clone())
        .expect("utf8")
        .contains(
            "Via: SIP/2.0/UDP 10.0.0.5:5060;rport=40123;branch=z9hG4bKo1;received=203.0.113.9\r\n"
        ));
}

#[test]
fn transaction_limit_answers_503_and_refuses_sends() {
    let mut ep = Endpoint::new(Config {
        local_addrs: vec![(Transport::Udp, addr(LOCAL))],
        max_transactions: 1,
        ..Config::default()
    });
    let t0 = Instant::now();
    deliver(&mut ep, t0, Transport::Udp, &incoming_options("z9hG4bKo1"));
    assert_eq!(events(&mut ep).len(), 1);
    deliver(&mut ep, t0, Transport::Udp, &incoming_options("z9hG4bKo2"));
    let sent = transmits(&mut ep);
    let busy = parse_response(&sent[0].bytes);
    assert_eq!(busy.code, 503);
    assert_eq!(busy.headers.get("Retry-After"), Some("5"));
    assert!(matches!(&events(&mut ep)[..], [Event::Discarded { .. }]));
    assert_eq!(
        ep.send_request(t0, request(Method::Options), target(Transport::Udp)),
        Err(dialbridge_sip::endpoint::SendError::TooManyTransactions)
    );
}

mod configurable_timers {
    use super::*;
    use dialbridge_sip::endpoint::Timers;
    use proptest::prelude::*;

    fn endpoint_with(timers: Timers) -> Endpoint {
        Endpoint::new(Config {
            timers,
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        })
    }

    /// The retransmission offsets RFC 3261 prescribes: intervals T1, 2*T1, ... capped at `cap`,
    /// stopping before the 64*T1 timeout.
    fn expected_offsets(t1: u64, cap: Option<u64>) -> Vec<u64> {
        let (mut out, mut at, mut interval) = (Vec::new(), 0, t1);
        loop {
            at += interval;
            if at >= 64 * t1 {
                return out;
            }
            out.push(at);
            interval = cap.map_or(interval * 2, |c| (interval * 2).min(c));
        }
    }

    proptest! {
        #[test]
        fn schedules_follow_t1_and_t2(t1 in 50u64..1000, t2_factor in 1u64..16) {
            let t2 = t1 * t2_factor;
            let timers = Timers { t1: ms(t1), t2: ms(t2), ..Timers::default() };
            let t0 = Instant::now();

            let mut ep = endpoint_with(timers);
            let id = ep.send_request(t0, request(Method::Invite), target(Transport::Udp)).expect("send");
            transmits(&mut ep);
            let sent = run(&mut ep, t0, ms(64 * t1 + 1));
            prop_assert_eq!(offsets(&sent), expected_offsets(t1, None));
            prop_assert_eq!(events(&mut ep), vec![Event::Timeout { id }]);

            let mut ep = endpoint_with(timers);
            let id = ep.send_request(t0, request(Method::Options), target(Transport::Udp)).expect("send");
            transmits(&mut ep);
            let sent = run(&mut ep, t0, ms(64 * t1 + 1));
            prop_assert_eq!(offsets(&sent), expected_offsets(t1, Some(t2)));
            prop_assert_eq!(events(&mut ep), vec![Event::Timeout { id }]);
        }
    }
}
