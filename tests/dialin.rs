//! Dial-in admission and routing against the real binary on loopback: SIPp plays the trunk (uac
//! scenarios in tests/sipp/), a small SIP client in this file plays callers whose silence or
//! cancelling matters, and a scan probes many numbers and users the way SIPVicious does.

mod common;

use common::{ports, telephony};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ports::Tp as Transport;
use common::sipp::Sipp;
use common::{Client, Gateway};
use dialbridge_sip::auth::{Challenge, DigestRequest};
use dialbridge_sip::message::{Message, Response};
use dialbridge_sip::transport::{Frame, StreamFramer};
use ports::free_port;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const ROOM_NUMBER: &str = "+4930123456";
const UNKNOWN_NUMBER: &str = "+4940999999";
/// How long to listen for an answer that must not come (silence can only pass, never flake).
const SILENCE: Duration = Duration::from_millis(1500);
const ANSWER: Duration = Duration::from_secs(10);

fn sip_addr(gw: &Gateway, transport: Transport) -> SocketAddr {
    match transport {
        Transport::Udp => gw.sip_udp.expect("SIP UDP address"),
        Transport::Tcp => gw.sip_tcp.expect("SIP TCP address"),
    }
}

/// Runs a uac scenario of tests/sipp/ against the gateway; returns success and SIPp's trace.
async fn sipp(
    gw: &Gateway,
    scenario: &str,
    transport: Transport,
    number: &str,
    user_agent: &str,
    extra: &[&str],
) -> (bool, String) {
    Sipp::uac(
        sip_addr(gw, transport),
        scenario,
        transport,
        number,
        user_agent,
        extra,
    )
    .finish()
    .await
}

/// A bare SIP peer: writes requests as text and reads whatever responses come back.
enum Wire {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, StreamFramer),
}

struct Peer {
    wire: Wire,
    local: SocketAddr,
    transport: Transport,
    seq: u32,
}

impl Peer {
    async fn connect(gw: &Gateway, transport: Transport) -> Peer {
        Peer::connect_from(gw, transport, "127.0.0.1").await
    }

    /// A peer on `source`, an address of 127.0.0.0/8 (UDP only).
    async fn connect_from(gw: &Gateway, transport: Transport, source: &str) -> Peer {
        let target = sip_addr(gw, transport);
        match transport {
            Transport::Udp => {
                let socket = UdpSocket::bind(format!("{source}:0")).await.expect("bind");
                let local = socket.local_addr().expect("local");
                Peer {
                    wire: Wire::Udp(socket, target),
                    local,
                    transport,
                    seq: 0,
                }
            }
            Transport::Tcp => {
                let stream = TcpStream::connect(target).await.expect("connect");
                let local = stream.local_addr().expect("local");
                Peer {
                    wire: Wire::Tcp(stream, StreamFramer::new(Default::default())),
                    local,
                    transport,
                    seq: 0,
                }
            }
        }
    }

    /// A request for `user` at the gateway, with a fresh branch and Call-ID unless given.
    fn request(
        &mut self,
        method: &str,
        user: &str,
        user_agent: &str,
        call_id: Option<&str>,
    ) -> (String, String) {
        self.seq += 1;
        let branch = format!("z9hG4bK-{}-{}", self.local.port(), self.seq);
        let call_id = call_id
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-{}@127.0.0.1", self.local.port(), self.seq));
        let t = if self.transport == Transport::Tcp {
            "TCP"
        } else {
            "UDP"
        };
        let text = format!(
            "{method} sip:{user}@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/{t} {local};branch={branch};rport\r\n\
             From: \"probe\" <sip:100@{local}>;tag=t{seq}\r\n\
             To: <sip:{user}@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:100@{local}>\r\n\
             Max-Forwards: 70\r\n\
             {user_agent_line}\
             Content-Length: 0\r\n\r\n",
            local = self.local,
            seq = self.seq,
            // Scanners that hide leave the header out.
            user_agent_line = if user_agent.is_empty() {
                String::new()
            } else {
                format!("User-Agent: {user_agent}\r\n")
            },
        );
        (text, branch)
    }

    async fn send(&mut self, text: &str) {
        match &mut self.wire {
            Wire::Udp(socket, target) => {
                socket
                    .send_to(text.as_bytes(), *target)
                    .await
                    .expect("send");
            }
            Wire::Tcp(stream, _) => stream.write_all(text.as_bytes()).await.expect("write"),
        }
    }

    /// The next response within `wait`, if any.
    async fn recv(&mut self, wait: Duration) -> Option<Response> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let bytes = match &mut self.wire {
                Wire::Udp(socket, _) => {
                    let mut buf = vec![0u8; 65535];
                    let (n, _) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
                        .await
                        .ok()?
                        .expect("recv");
                    buf.truncate(n);
                    buf
                }
                Wire::Tcp(stream, framer) => loop {
                    if let Some(frame) = framer.next_frame() {
                        match frame {
                            Ok(Frame::Message(bytes)) => break bytes,
                            Ok(Frame::Ping) => continue,
                            Err(e) => panic!("unframeable answer: {e}"),
                        }
                    }
                    let mut buf = vec![0u8; 16384];
                    let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
                        .await
                        .ok()?
                        .expect("read");
                    if n == 0 {
                        return None;
                    }
                    framer.push(&buf[..n]);
                },
            };
            if let Ok(Message::Response(r)) = Message::parse(&bytes) {
                return Some(r);
            }
        }
    }

    /// The first final response to `request` within `wait` (provisional ones are collected into
    /// `seen`). Answers to earlier requests (retransmitted finals over UDP) are skipped.
    async fn final_response(
        &mut self,
        request: &str,
        wait: Duration,
        seen: &mut Vec<u16>,
    ) -> Option<Response> {
        let call_id = request
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap_or_default()
            .to_string();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self.recv(left).await?;
            if r.headers.get("Call-ID") != Some(call_id.as_str()) {
                continue;
            }
            if r.code >= 200 {
                return Some(r);
            }
            seen.push(r.code);
        }
    }
}

/// What a scanner can compare between two answers: code, reason and header names.
fn shape(r: &Response) -> (u16, String, BTreeSet<String>) {
    (
        r.code,
        r.reason.clone(),
        r.headers
            .iter()
            .map(|h| h.name.to_ascii_lowercase())
            .collect(),
    )
}

fn inbound(extra: &str) -> String {
    format!("[[inbound]]\nname = \"carrier\"\n{extra}")
}

/// A room with the dial-in number `ROOM_NUMBER`; with `call`, alice is in its call.
async fn room_with_number(gw: &Gateway, call: bool) -> (Client, String) {
    let alice = gw.client("alice");
    let token = alice.create_room(2).await;
    alice
        .call(
            Method::PUT,
            &format!("/api/v1/rooms/{token}/dialin"),
            Some(json!({"number": ROOM_NUMBER})),
        )
        .await
        .expect(200);
    if call {
        alice.join_room(&token).await;
        alice.join_call(&token, 3).await;
    }
    (alice, token)
}

#[tokio::test]
async fn disallowed_source_is_refused_with_403_over_udp_and_tcp() {
    let gw = Gateway::start(&inbound("allowed_sources = [\"192.0.2.0/24\"]\n"));
    room_with_number(&gw, true).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let (ok, trace) = sipp(
            &gw,
            "uac_403.xml",
            transport,
            ROOM_NUMBER,
            "Carrier SBC",
            &[],
        )
        .await;
        assert!(ok, "{transport:?}: SIPp got 403 for its INVITE:\n{trace}");
        assert!(
            !trace.contains("SIP/2.0 180"),
            "no ringing before a refusal:\n{trace}"
        );
    }
    assert!(
        gw.log().contains("no inbound trunk allows the source"),
        "decision logged"
    );
}

#[tokio::test]
async fn a_refused_invite_gets_exactly_one_403_without_a_product_name() {
    // A short T1, so that a retransmitting transaction would show within the wait below.
    let gw = Gateway::start_with_sip(
        "t1 = \"100ms\"\n",
        &inbound("allowed_sources = [\"192.0.2.0/24\"]\n"),
    );
    let mut peer = Peer::connect(&gw, Transport::Udp).await;
    let (invite, _) = peer.request("INVITE", ROOM_NUMBER, "Carrier SBC", None);
    peer.send(&invite).await;
    let mut answers = Vec::new();
    // Timer G would retransmit after 0.1, 0.3, 0.7, 1.5 and 3.1 s.
    while let Some(r) = peer.recv(Duration::from_secs(4)).await {
        answers.push(r);
    }
    let codes: Vec<u16> = answers.iter().map(|r| r.code).collect();
    assert_eq!(codes, [403], "one answer, never retransmitted");
    assert!(answers[0].headers.get("Server").is_none());
    // Its ACK draws nothing either; OPTIONS shows no product name.
    let ack = invite
        .replacen("INVITE sip:", "ACK sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    peer.send(&ack).await;
    assert_eq!(peer.recv(SILENCE).await.map(|r| r.code), None);
    let (options, _) = peer.request("OPTIONS", "probe", "", None);
    peer.send(&options).await;
    let answer = peer.recv(ANSWER).await.expect("OPTIONS answered");
    assert_eq!(answer.code, 200);
    for name in ["Server", "User-Agent"] {
        assert!(answer.headers.get(name).is_none(), "{name}: {answer:?}");
    }
}

#[tokio::test]
async fn an_enumeration_learns_no_number_after_its_first_probes_and_joins_no_call() {
    let gw = Gateway::start(&format!(
        "{}[dialin]\nunknown_numbers_per_minute = 5\ninvites_per_second = 1000\ninvite_burst = 1000\n",
        inbound("allowed_sources = [\"127.0.0.0/8\"]\n")
    ));
    let (alice, token) = room_with_number(&gw, true).await;
    // The scanner, on 127.0.0.2, sends no User-Agent: made-up numbers, the room's number among
    // them after the first few probes, as svwar walks a range.
    let mut scanner = Peer::connect_from(&gw, Transport::Udp, "127.0.0.2").await;
    let mut numbers: Vec<String> = (0..8).map(|i| format!("+49301299{i:02}")).collect();
    numbers.push(ROOM_NUMBER.into());
    numbers.extend((8..20).map(|i| format!("+49301299{i:02}")));
    numbers.push(ROOM_NUMBER.into());
    let mut answers = Vec::new();
    for number in &numbers {
        let (invite, _) = scanner.request("INVITE", number, "", None);
        scanner.send(&invite).await;
        let mut provisional = Vec::new();
        let answer = scanner
            .final_response(&invite, ANSWER, &mut provisional)
            .await
            .map(|r| r.code);
        answers.push((number.clone(), answer, provisional));
    }
    // The first five learn that their numbers lead nowhere; from then on every number, the
    // room's included, gets the same single 403 and not even a 180.
    for (number, answer, provisional) in &answers[..5] {
        assert_eq!(*answer, Some(404), "{number}: {answers:?}");
        assert!(!provisional.contains(&180), "{number}");
    }
    for (number, answer, provisional) in &answers[5..] {
        assert_eq!(*answer, Some(403), "{number}: {answers:?}");
        assert!(provisional.is_empty(), "{number}: {provisional:?}");
    }
    // No probe reached the room.
    let participants = alice
        .talk(Method::GET, &format!("/room/{token}/participants"), None)
        .await
        .expect(200);
    let list = participants.data().as_array().expect("array").clone();
    assert!(list.iter().all(|p| p["actorType"] != "phones"), "{list:?}");
    let records = alice
        .call(Method::GET, &format!("/api/v1/rooms/{token}/calls"), None)
        .await
        .expect(200);
    assert!(
        records
            .data()
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["kind"] != "dialin"),
        "{records:?}"
    );
    assert!(gw.log().contains("source probes unknown numbers"));
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("dialbridge_dialin_scanners_detected_total 1"),
        "{metrics}"
    );
    // A caller from another source of the trunk still gets through (an offerless INVITE: the
    // gateway's offer comes in its 200).
    let mut caller = Peer::connect(&gw, Transport::Udp).await;
    let (invite, _) = caller.request("INVITE", ROOM_NUMBER, "Carrier SBC", None);
    caller.send(&invite).await;
    let mut provisional = Vec::new();
    let answer = caller
        .final_response(&invite, ANSWER, &mut provisional)
        .await;
    assert_eq!(answer.map(|r| r.code), Some(200), "{provisional:?}");
    assert!(provisional.contains(&180), "{provisional:?}");
}

#[tokio::test]
async fn silent_reject_answers_nothing_over_udp_and_tcp() {
    let gw = Gateway::start_with_sip(
        "silent_reject = true\n",
        &inbound("allowed_sources = [\"192.0.2.0/24\"]\n"),
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut peer = Peer::connect(&gw, transport).await;
        let (invite, _) = peer.request("INVITE", ROOM_NUMBER, "Carrier SBC", None);
        peer.send(&invite).await;
        if transport == Transport::Udp {
            // A retransmission is absorbed as silently.
            tokio::time::sleep(Duration::from_millis(500)).await;
            peer.send(&invite).await;
        }
        assert_eq!(
            peer.recv(SILENCE).await.map(|r| r.code),
            None,
            "{transport:?}: no answer, not even 100 Trying"
        );
        // The gateway is there for everything else.
        let (options, _) = peer.request("OPTIONS", "probe", "Carrier SBC", None);
        peer.send(&options).await;
        assert_eq!(
            peer.recv(ANSWER).await.map(|r| r.code),
            Some(200),
            "{transport:?}: OPTIONS answered"
        );
    }
    let log = gw.log();
    assert!(
        log.contains("Drop") && log.contains("no inbound trunk allows the source"),
        "decision logged:\n{log}"
    );
}

#[tokio::test]
async fn scanner_user_agents_are_refused_like_strangers() {
    let gw = Gateway::start(&inbound("allowed_sources = [\"127.0.0.1\"]\n"));
    room_with_number(&gw, true).await;
    for ua in ["friendly-scanner", "sipvicious", "sipcli/v1.8"] {
        let (ok, trace) = sipp(&gw, "uac_403.xml", Transport::Udp, ROOM_NUMBER, ua, &[]).await;
        assert!(
            ok,
            "{ua}: 403 even from an allowed source to a real number:\n{trace}"
        );
    }
    let silent = Gateway::start_with_sip(
        "silent_reject = true\n",
        &inbound("allowed_sources = [\"127.0.0.1\"]\n"),
    );
    let mut peer = Peer::connect(&silent, Transport::Udp).await;
    let (invite, _) = peer.request("INVITE", ROOM_NUMBER, "friendly-scanner", None);
    peer.send(&invite).await;
    assert_eq!(
        peer.recv(SILENCE).await.map(|r| r.code),
        None,
        "scanner gets silence"
    );
}

const DIGEST_TRUNK: &str =
    "allowed_sources = [\"127.0.0.0/8\"]\nusername = \"trunk\"\npassword = \"s3cret\"\n";
/// SIPp answers only the first challenge it reads and knows MD5 alone: offer MD5 first.
const MD5_FIRST: &str = "digest_algorithms = [\"MD5\", \"SHA-256\"]\n";

#[tokio::test]
async fn digest_trunk_is_challenged_then_admitted_over_udp_and_tcp() {
    let gw = Gateway::start(&format!("{}[dialin]\n{MD5_FIRST}", inbound(DIGEST_TRUNK)));
    room_with_number(&gw, true).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let (ok, trace) = sipp(
            &gw,
            "uac_auth_call.xml",
            transport,
            ROOM_NUMBER,
            "Carrier SBC",
            &["-au", "trunk", "-ap", "s3cret"],
        )
        .await;
        assert!(
            ok,
            "{transport:?}: 407, then the authenticated INVITE answered and hung up:\n{trace}"
        );
        let challenges: Vec<&str> = trace
            .lines()
            .filter(|l| l.starts_with("Proxy-Authenticate:"))
            .collect();
        assert!(
            challenges.iter().any(|c| c.contains("algorithm=SHA-256"))
                && challenges.iter().any(|c| c.contains("algorithm=MD5"))
                && challenges
                    .iter()
                    .all(|c| c.contains("realm=\"dialbridge\"") && c.contains("qop=\"auth\"")),
            "SHA-256 and MD5 offered: {challenges:?}"
        );
    }
    assert_eq!(
        gw.log().matches("caller joined the room").count(),
        2,
        "both callers joined"
    );
}

#[tokio::test]
async fn wrong_credentials_get_a_fresh_challenge_whatever_was_wrong() {
    let gw = Gateway::start(&inbound(DIGEST_TRUNK));
    room_with_number(&gw, true).await;
    let mut answers = Vec::new();
    for (user, password) in [
        ("trunk", "guess"),
        ("nobody", "s3cret"),
        ("trunk", "s3cret"),
    ] {
        let mut peer = Peer::connect(&gw, Transport::Udp).await;
        let (invite, _) = peer.request("INVITE", ROOM_NUMBER, "Carrier SBC", None);
        peer.send(&invite).await;
        let challenge = peer
            .final_response(&invite, ANSWER, &mut Vec::new())
            .await
            .expect("407");
        assert_eq!(challenge.code, 407);
        let offered: Vec<Challenge> = challenge
            .headers
            .get_all("Proxy-Authenticate")
            .map(|v| Challenge::parse(v).expect("a digest challenge"))
            .collect();
        let uri = format!("sip:{ROOM_NUMBER}@127.0.0.1");
        let credentials = offered[0]
            .respond(
                &DigestRequest::new("INVITE", &uri),
                user,
                password,
                "0a4f113b",
                1,
            )
            .to_string();
        let call_id = format!("retry-{user}-{password}@127.0.0.1");
        let (retry, _) = peer.request("INVITE", ROOM_NUMBER, "Carrier SBC", Some(&call_id));
        let retry = retry.replace(
            "Content-Length: 0",
            &format!("Proxy-Authorization: {credentials}\r\nContent-Length: 0"),
        );
        peer.send(&retry).await;
        let mut provisional = Vec::new();
        let answer = peer
            .final_response(&retry, Duration::from_secs(3), &mut provisional)
            .await;
        answers.push((user, password, provisional, answer));
    }
    // The right credentials pass (the room has a call: 180, then answered) ...
    let (_, _, provisional, answer) = &answers[2];
    assert!(provisional.contains(&180), "{provisional:?}");
    assert_eq!(answer.as_ref().map(|r| r.code), Some(200));
    // ... and both wrong ones get the same fresh challenge, not a word about which part was wrong.
    let again: Vec<_> = answers[..2]
        .iter()
        .map(|(user, _, provisional, answer)| {
            assert!(
                provisional.iter().all(|c| *c == 100),
                "{user}: {provisional:?}"
            );
            let answer = answer.as_ref().expect("an answer");
            let challenges: Vec<Challenge> = answer
                .headers
                .get_all("Proxy-Authenticate")
                .map(|v| {
                    let mut c = Challenge::parse(v).expect("challenge");
                    c.nonce.clear();
                    c
                })
                .collect();
            (shape(answer), challenges)
        })
        .collect();
    assert_eq!(again[0].0 .0, 407);
    assert_eq!(
        again[0], again[1],
        "unknown user and wrong password answered alike"
    );
}

#[tokio::test]
async fn unknown_number_is_404() {
    let gw = Gateway::start(&inbound("allowed_sources = [\"127.0.0.1\"]\n"));
    room_with_number(&gw, true).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let (ok, trace) = sipp(
            &gw,
            "uac_404.xml",
            transport,
            UNKNOWN_NUMBER,
            "Carrier SBC",
            &[],
        )
        .await;
        assert!(ok, "{transport:?}: 404 for a number no room has:\n{trace}");
    }
    assert_eq!(
        telephony::calls_ended(&gw, "dialin", "rejected", "invalid-number").await,
        2.0
    );
}

/// A trunk that takes one call at a time, a room with a number but no call (callers wait
/// `wait_for_call` seconds), and a first caller running `scenario` that holds the trunk's slot;
/// returns once the gateway's log says `until`.
async fn first_caller_holds_the_slot(
    wait_for_call: u32,
    scenario: &str,
    until: &str,
) -> (Gateway, Sipp) {
    let gw = Gateway::start(&format!(
        "{}[dialin]\nwait_for_call = {wait_for_call}\n",
        inbound("allowed_sources = [\"127.0.0.1\"]\nmax_concurrent_calls = 1\n")
    ));
    room_with_number(&gw, false).await;
    let media_port = free_port(Transport::Udp).to_string();
    let first = Sipp::uac(
        sip_addr(&gw, Transport::Udp),
        scenario,
        Transport::Udp,
        ROOM_NUMBER,
        "Carrier SBC",
        &["-set", "mhost", "127.0.0.1", "-set", "mport", &media_port],
    );
    telephony::wait_for(
        &format!("the gateway logging {until:?}"),
        || gw.log().contains(until),
        || gw.log(),
    )
    .await;
    (gw, first)
}

/// The trunk's next call, an INVITE without SDP over UDP: its provisional codes and its final
/// code, if one came within two seconds.
async fn next_call(gw: &Gateway) -> (Vec<u16>, Option<u16>) {
    let mut next = Peer::connect(gw, Transport::Udp).await;
    let (invite, _) = next.request("INVITE", ROOM_NUMBER, "Carrier SBC", None);
    next.send(&invite).await;
    let mut provisional = Vec::new();
    let answer = next
        .final_response(&invite, Duration::from_secs(2), &mut provisional)
        .await;
    (provisional, answer.map(|r| r.code))
}

#[tokio::test]
async fn trunk_concurrency_limit_is_503_with_retry_after_and_frees_when_a_call_ends() {
    // The first caller is answered and waits for the room's call, holding the trunk's one slot.
    let (gw, first) = first_caller_holds_the_slot(
        4,
        "uac_call_until_bye.xml",
        "caller waits for the room's call to start",
    )
    .await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let (ok, trace) = sipp(
            &gw,
            "uac_503.xml",
            transport,
            ROOM_NUMBER,
            "Carrier SBC",
            &[],
        )
        .await;
        assert!(
            ok,
            "{transport:?}: 503 with Retry-After beyond the limit:\n{trace}"
        );
    }
    // Nobody starts the call: goodbye and BYE end the first call, and its slot is free again.
    let (ok, trace) = first.finish().await;
    assert!(ok, "the first caller's wait ended with our BYE:\n{trace}");
    let mut answers = Vec::new();
    for _ in 0..10 {
        let (provisional, answer) = next_call(&gw).await;
        if provisional.contains(&180) {
            return;
        }
        answers.push((provisional, answer));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the slot was never given back: {answers:?}");
}

/// A trunk's slot is given back when our BYE goes out, not when it is answered: a trunk that
/// never answers it can still place its next call at once.
#[tokio::test]
async fn a_trunk_slot_is_free_again_as_soon_as_we_hang_up() {
    // The first caller waits, then hears goodbye and gets our BYE, which it never answers.
    let (gw, first) =
        first_caller_holds_the_slot(2, "uac_call_ignores_bye.xml", "hanging up inbound call").await;
    // Its leg still waits for the answer to the BYE.
    telephony::assert_one_call_pending(&gw, &["dialbridge_dialin_legs"]).await;
    let (provisional, answer) = next_call(&gw).await;
    assert!(
        provisional.contains(&180),
        "the next call is admitted, not refused: {provisional:?}, {answer:?}"
    );
    let (ok, trace) = first.finish().await;
    assert!(ok, "the first caller got our BYE:\n{trace}");
}

#[tokio::test]
async fn invites_per_source_are_rate_limited() {
    let gw = Gateway::start(&format!(
        "{}[dialin]\ninvites_per_second = 0.2\ninvite_burst = 2\n",
        inbound("allowed_sources = [\"127.0.0.1\"]\n")
    ));
    let mut peer = Peer::connect(&gw, Transport::Udp).await;
    let mut finals = Vec::new();
    for _ in 0..3 {
        let (invite, _) = peer.request("INVITE", UNKNOWN_NUMBER, "Carrier SBC", None);
        peer.send(&invite).await;
        let r = peer
            .final_response(&invite, ANSWER, &mut Vec::new())
            .await
            .expect("a final answer");
        finals.push((r.code, r.headers.get("Retry-After").map(str::to_string)));
    }
    assert_eq!(finals[0], (404, None));
    assert_eq!(finals[1], (404, None));
    assert_eq!(finals[2].0, 503);
    let retry: u32 = finals[2]
        .1
        .as_deref()
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=5).contains(&retry), "{retry}");
}

#[tokio::test]
async fn dialin_api_sets_numbers_and_shows_the_pin_to_moderators_only() {
    let gw = Gateway::start("[dialin]\npin_number = \"+4930123400\"\n");
    let alice = gw.client("alice");
    let bob = gw.client("bob");
    let token = alice.create_room(2).await;
    alice.add_user(&token, "bob").await;
    let path = format!("/api/v1/rooms/{token}/dialin");

    bob.call(Method::PUT, &path, Some(json!({"number": ROOM_NUMBER})))
        .await
        .expect(403);
    alice
        .call(
            Method::PUT,
            "/api/v1/rooms/nosuchrm/dialin",
            Some(json!({"number": ROOM_NUMBER})),
        )
        .await
        .expect(404);
    gw.anonymous()
        .call(Method::PUT, &path, Some(json!({"number": ROOM_NUMBER})))
        .await
        .expect(401);
    for bad in [
        json!({"number": "030123456"}),
        json!({"number": 4930123456u64}),
        json!({}),
    ] {
        alice
            .call(Method::PUT, &path, Some(bad.clone()))
            .await
            .expect(400);
    }
    alice
        .call(Method::PUT, &path, Some(json!({"number": "+4930123400"})))
        .await
        .expect(409);
    let set = alice
        .call(
            Method::PUT,
            &path,
            Some(json!({"number": ROOM_NUMBER, "waitForCall": false})),
        )
        .await
        .expect(200);
    assert_eq!(set.data()["number"], ROOM_NUMBER);
    assert_eq!(set.data()["waitForCall"], false);
    let pin = set.data()["pin"].as_str().expect("pin").to_string();
    assert!(
        pin.len() == 8 && pin.bytes().all(|b| b.is_ascii_digit()),
        "{pin}"
    );

    let other = alice.create_room(2).await;
    let other_path = format!("/api/v1/rooms/{other}/dialin");
    alice
        .call(
            Method::PUT,
            &other_path,
            Some(json!({"number": ROOM_NUMBER})),
        )
        .await
        .expect(409);

    let seen = alice
        .talk(Method::GET, &format!("/room/{token}"), None)
        .await
        .expect(200);
    assert_eq!(seen.data()["dialinNumber"], ROOM_NUMBER);
    assert_eq!(
        seen.data()["dialinPin"],
        pin.as_str(),
        "the PIN stays the same"
    );
    let hidden = bob
        .talk(Method::GET, &format!("/room/{token}"), None)
        .await
        .expect(200);
    assert!(hidden.data().get("dialinPin").is_none(), "{}", hidden.body);
    assert!(
        hidden.data().get("dialinNumber").is_none(),
        "{}",
        hidden.body
    );
    let other_pin = alice
        .talk(Method::GET, &format!("/room/{other}"), None)
        .await
        .expect(200);
    assert_ne!(
        other_pin.data()["dialinPin"],
        pin.as_str(),
        "each room has its own PIN"
    );

    let cleared = alice
        .call(Method::PUT, &path, Some(json!({"number": null})))
        .await
        .expect(200);
    assert!(cleared.data()["number"].is_null());
    alice
        .call(
            Method::PUT,
            &other_path,
            Some(json!({"number": ROOM_NUMBER})),
        )
        .await
        .expect(200);
}

#[tokio::test]
async fn a_room_that_refuses_waiting_callers_answers_480_at_once() {
    let gw = Gateway::start(&inbound("allowed_sources = [\"127.0.0.1\"]\n"));
    let (alice, token) = room_with_number(&gw, false).await;
    alice
        .call(
            Method::PUT,
            &format!("/api/v1/rooms/{token}/dialin"),
            Some(json!({"waitForCall": false})),
        )
        .await
        .expect(200);
    let mut peer = Peer::connect(&gw, Transport::Tcp).await;
    let (invite, _) = peer.request("INVITE", ROOM_NUMBER, "Carrier SBC", None);
    peer.send(&invite).await;
    let mut provisional = Vec::new();
    let r = peer
        .final_response(&invite, ANSWER, &mut provisional)
        .await
        .expect("answer");
    assert_eq!(r.code, 480);
    assert!(provisional.contains(&180), "{provisional:?}");
    assert!(gw.log().contains("does not let callers wait"));
}

/// Probes many extensions with OPTIONS, INVITE and REGISTER, as `sipvicious_svmap` and
/// `sipvicious_svwar` do; returns each method's answers per extension.
async fn scan(
    gw: &Gateway,
    transport: Transport,
    user_agent: &str,
    extensions: &[String],
) -> Vec<(String, String, Option<(u16, String, BTreeSet<String>)>)> {
    let mut peer = Peer::connect(gw, transport).await;
    let mut out = Vec::new();
    for method in ["OPTIONS", "INVITE", "REGISTER"] {
        for ext in extensions {
            let (request, _) = peer.request(method, ext, user_agent, None);
            peer.send(&request).await;
            let wait = if method == "INVITE" {
                ANSWER
            } else {
                Duration::from_secs(5)
            };
            let answer = peer.final_response(&request, wait, &mut Vec::new()).await;
            out.push((method.to_string(), ext.clone(), answer.as_ref().map(shape)));
        }
    }
    out
}

#[tokio::test]
async fn a_scan_cannot_tell_numbers_or_users_apart_and_calls_keep_working() {
    let gw = Gateway::start(&format!(
        "{}[dialin]\n{MD5_FIRST}pin_number = \"+4930123400\"\ninvites_per_second = 1000\ninvite_burst = 1000\n",
        inbound(DIGEST_TRUNK)
    ));
    room_with_number(&gw, true).await;
    // Real: the room's number, the PIN number, the trunk's user name. Made up: the rest.
    let mut extensions: Vec<String> =
        vec![ROOM_NUMBER.into(), "+4930123400".into(), "trunk".into()];
    extensions.extend((0..40).map(|i| format!("+49301234{i:02}")));
    extensions.extend(["100", "1000", "admin", "alice", "dialbridge"].map(String::from));
    let checker = gw.anonymous();
    for (transport, user_agent) in [
        (Transport::Udp, "friendly-scanner"),
        (Transport::Udp, "pplsip"),
        (Transport::Tcp, "Probe/1.0"),
    ] {
        // A real call is placed while the scan runs.
        let (answers, health, (call_ok, call_trace)) = tokio::join!(
            scan(&gw, transport, user_agent, &extensions),
            checker.request(Method::GET, "/healthz").send(),
            sipp(
                &gw,
                "uac_auth_call.xml",
                Transport::Udp,
                ROOM_NUMBER,
                "Carrier SBC",
                &["-au", "trunk", "-ap", "s3cret"],
            )
        );
        assert!(health
            .expect("healthz during the scan")
            .status()
            .is_success());
        assert!(call_ok, "a call during the scan:\n{call_trace}");
        for method in ["OPTIONS", "INVITE", "REGISTER"] {
            let of_method: Vec<_> = answers.iter().filter(|(m, _, _)| m == method).collect();
            let first = &of_method[0].2;
            assert!(
                first.is_some(),
                "{method} is answered ({transport:?}, {user_agent})"
            );
            for (_, ext, answer) in &of_method {
                assert_eq!(
                    answer, first,
                    "{method} to {ext} answered like {method} to {ROOM_NUMBER} ({transport:?}, {user_agent})"
                );
            }
        }
        let invite = &answers
            .iter()
            .find(|(m, _, _)| m == "INVITE")
            .expect("invite")
            .2;
        let expected = if user_agent == "Probe/1.0" { 407 } else { 403 };
        assert_eq!(invite.as_ref().map(|s| s.0), Some(expected), "{user_agent}");
    }
    // The gateway still serves: OPTIONS, the API, and an authenticated call.
    let mut peer = Peer::connect(&gw, Transport::Udp).await;
    let (options, _) = peer.request("OPTIONS", "probe", "Carrier SBC", None);
    peer.send(&options).await;
    assert_eq!(peer.recv(ANSWER).await.map(|r| r.code), Some(200));
    gw.client("alice")
        .talk(Method::GET, "/room", None)
        .await
        .expect(200);
    let (ok, trace) = sipp(
        &gw,
        "uac_auth_call.xml",
        Transport::Udp,
        ROOM_NUMBER,
        "Carrier SBC",
        &["-au", "trunk", "-ap", "s3cret"],
    )
    .await;
    assert!(ok, "a real call after the scan:\n{trace}");
}

/// Runs `sipvicious_svwar` (scripts/setup installs it) against `target`, bound to loopback.
fn svwar(target: SocketAddr, method: &str, dictionary: &std::path::Path) -> String {
    let port = free_port(Transport::Udp).to_string();
    let output = Command::new("sipvicious_svwar")
        .args(["--force", "-m", method, "-b", "127.0.0.1", "-P", &port])
        .args(["-p", &target.port().to_string(), "--maximumtime", "60"])
        .arg("-d")
        .arg(dictionary)
        .arg(target.ip().to_string())
        .stdin(Stdio::null())
        .output()
        .expect("sipvicious_svwar must be installed (scripts/setup installs sipvicious)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn sipvicious_finds_no_numbers_or_users() {
    let gw = Gateway::start(&format!(
        "{}[dialin]\n{MD5_FIRST}pin_number = \"+4930123400\"\ninvites_per_second = 1000\ninvite_burst = 1000\n",
        inbound(DIGEST_TRUNK)
    ));
    room_with_number(&gw, true).await;
    let dictionary = gw.dir.path().join("extensions.txt");
    let mut words = vec![
        ROOM_NUMBER.to_string(),
        "+4930123400".into(),
        "trunk".into(),
    ];
    // Enough made-up numbers that a call fits into the scan.
    words.extend((0..600).map(|i| format!("+4930129{i:03}")));
    words.extend(["100", "1000", "admin", "alice"].map(String::from));
    std::fs::write(&dictionary, words.join("\n")).expect("dictionary");
    for method in ["INVITE", "REGISTER", "OPTIONS"] {
        let target = sip_addr(&gw, Transport::Udp);
        let dict = dictionary.clone();
        let scan = tokio::task::spawn_blocking(move || svwar(target, method, &dict));
        // The API answers during the scan.
        let health = gw
            .anonymous()
            .request(Method::GET, "/healthz")
            .send()
            .await
            .expect("healthz during the scan");
        assert!(health.status().is_success());
        let report = scan.await.expect("svwar ran");
        // svwar lists what it tells apart from its probe of a made-up extension in a table.
        assert!(
            report.contains("found nothing") && !report.contains("| Extension"),
            "{method}: svwar must find no extension:\n{report}"
        );
    }
    // Still serving calls afterwards.
    let (ok, trace) = sipp(
        &gw,
        "uac_auth_call.xml",
        Transport::Udp,
        ROOM_NUMBER,
        "Carrier SBC",
        &["-au", "trunk", "-ap", "s3cret"],
    )
    .await;
    assert!(ok, "a real call after the scans:\n{trace}");
}
