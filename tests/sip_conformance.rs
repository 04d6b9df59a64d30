//! RFC 4475 / RFC 5118 torture messages sent to the running binary, over UDP and (requests) over TCP;
//! each answer is checked against shared/conformance/EXPECTED.tsv, and the service keeps serving.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Gateway;
use dialbridge_sip::message::{Message, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const CONFORMANCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/conformance");
/// How long to wait for an answer that must come.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// How long to listen for an answer that must not come. Silence can only pass this check, so a
/// slow machine cannot make it fail; an unwanted answer arrives well within it.
const SILENCE_WAIT: Duration = Duration::from_millis(700);

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Accept,
    Code(u16),
    Drop,
    AcceptOr400,
}

struct Case {
    file: String,
    expect: Expect,
    bytes: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let table = std::fs::read_to_string(format!("{CONFORMANCE}/EXPECTED.tsv"))
        .expect("shared/conformance/EXPECTED.tsv must be beside the checkout");
    let cases: Vec<Case> = table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split('\t');
            let file = fields.next().expect("file").to_string();
            let expect = match fields.next().expect("expectation") {
                "accept" => Expect::Accept,
                "drop" => Expect::Drop,
                "accept-or-400" => Expect::AcceptOr400,
                code => Expect::Code(code.parse().expect("status code")),
            };
            let bytes = std::fs::read(format!("{CONFORMANCE}/{file}"))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            Case {
                file,
                expect,
                bytes,
            }
        })
        .collect();
    assert!(cases.len() >= 60, "the torture table lists every file");
    cases
}

fn is_response(bytes: &[u8]) -> bool {
    bytes.starts_with(b"SIP/")
}

/// Final (or only) responses the gateway sent back, provisional ones skipped.
fn final_of(responses: &[Response]) -> Option<&Response> {
    responses.iter().find(|r| r.code >= 200)
}

fn check(case: &Case, transport: &str, responses: &[Response]) {
    let name = format!("{} over {transport}", case.file);
    let request = !is_response(&case.bytes);
    let final_response = final_of(responses);
    match (&case.expect, request) {
        (_, false) | (Expect::Drop, _) => {
            assert!(
                responses.is_empty(),
                "{name}: expected silence, got {responses:?}"
            )
        }
        (Expect::Code(code), true) => {
            let r = final_response.unwrap_or_else(|| panic!("{name}: no answer, expected {code}"));
            assert_eq!(r.code, *code, "{name}");
            match code {
                420 => assert!(
                    r.headers.get("Unsupported").is_some(),
                    "{name}: 420 lists Unsupported"
                ),
                415 => assert!(
                    r.headers
                        .get("Accept")
                        .is_some_and(|a| a.split(',').any(|t| t.trim() == "application/sdp")),
                    "{name}: 415 names application/sdp in Accept"
                ),
                _ => {}
            }
        }
        (Expect::Accept, true) => {
            let r = final_response.unwrap_or_else(|| panic!("{name}: no answer"));
            assert_ne!(
                r.code, 400,
                "{name}: accepted message answered 400: {:?}",
                r.reason
            );
            // 403: an INVITE from a source no [[inbound]] trunk allows (the test configures none).
            assert!(
                matches!(r.code, 200 | 403 | 404 | 405 | 481 | 501),
                "{name}: unexpected answer {} {}",
                r.code,
                r.reason
            );
            if matches!(r.code, 405 | 501) {
                assert!(
                    r.headers.get("Allow").is_some(),
                    "{name}: {} carries Allow",
                    r.code
                );
            }
        }
        (Expect::AcceptOr400, true) => {
            assert!(final_response.is_some(), "{name}: no answer")
        }
    }
}

fn parse_responses(mut bytes: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = match find_message_end(bytes) {
            Some(end) => end,
            None => break,
        };
        match Message::parse(&bytes[..end]) {
            Ok(Message::Response(r)) => out.push(r),
            other => panic!("gateway sent something that is not a response: {other:?}"),
        }
        bytes = &bytes[end..];
    }
    out
}

/// End of the first message in a stream: head, blank line, Content-Length bytes.
fn find_message_end(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name == "l")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (bytes.len() >= head_end + length).then_some(head_end + length)
}

async fn over_udp(gateway: SocketAddr, case: &Case) -> Vec<Response> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.send_to(&case.bytes, gateway).await.expect("send");
    let mut responses = Vec::new();
    let mut buf = vec![0u8; 65_535];
    let wait_for_final = !is_response(&case.bytes) && case.expect != Expect::Drop;
    loop {
        let wait = if wait_for_final && final_of(&responses).is_none() {
            ANSWER_WAIT
        } else {
            SILENCE_WAIT
        };
        match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                assert_eq!(from, gateway, "answers come from the SIP port");
                responses.extend(parse_responses(&buf[..n]));
            }
            _ => return responses,
        }
        if final_of(&responses).is_some() {
            return responses;
        }
    }
}

async fn over_tcp(gateway: SocketAddr, case: &Case) -> Vec<Response> {
    let mut stream = TcpStream::connect(gateway).await.expect("connect");
    stream.write_all(&case.bytes).await.expect("send");
    let mut received = Vec::new();
    let mut buf = vec![0u8; 65_535];
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        let responses = parse_responses(&received);
        if final_of(&responses).is_some() {
            return responses;
        }
        let wait = if case.expect == Expect::Drop || case.file.ends_with("clerr.dat") {
            SILENCE_WAIT
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => return parse_responses(&received),
        }
    }
}

async fn still_serving(gw: &Gateway, udp: SocketAddr) {
    let options = format!(
        "OPTIONS sip:dialbridge@{udp} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKalive{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:dialbridge@{udp}>\r\n\
         Call-ID: alive-{}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        rand_suffix(),
        rand_suffix()
    );
    let case = Case {
        file: "OPTIONS probe".into(),
        expect: Expect::Code(200),
        bytes: options.into_bytes(),
    };
    let responses = over_udp(udp, &case).await;
    check(&case, "UDP", &responses);
    let health = reqwest::get(format!("{}/healthz", gw.base))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[tokio::test]
async fn torture_messages_over_udp() {
    let gw = Gateway::start("");
    let udp = gw.sip_udp.expect("UDP listener");
    for case in cases() {
        let responses = over_udp(udp, &case).await;
        check(&case, "UDP", &responses);
    }
    still_serving(&gw, udp).await;
    let log = gw.log();
    assert!(
        log.contains("SIP message discarded"),
        "malformed messages are logged:\n{log}"
    );
}

#[tokio::test]
async fn torture_requests_over_tcp() {
    let gw = Gateway::start("");
    let tcp = gw.sip_tcp.expect("TCP listener");
    for case in cases().into_iter().filter(|c| !is_response(&c.bytes)) {
        let responses = over_tcp(tcp, &case).await;
        if case.file.ends_with("clerr.dat") {
            // Over a stream, a Content-Length beyond the bytes sent means: wait for the rest.
            assert!(responses.is_empty(), "clerr.dat over TCP: {responses:?}");
            continue;
        }
        check(&case, "TCP", &responses);
    }
    still_serving(&gw, gw.sip_udp.expect("UDP listener")).await;
}
