//! RFC 4475 / RFC 5118 torture messages against the table in the shared conformance data.

use dialbridge_sip::message::{Limits, Message};
use dialbridge_sip::transport::{Frame, StreamFramer};
use dialbridge_sip::validate::{check_datagram, Policy, Verdict};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/conformance/");

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Accept(Message::Request(r)) => format!("accept (request {})", r.method),
        Verdict::Accept(Message::Response(r)) => format!("accept (response {})", r.code),
        Verdict::Reject { response, error } => format!("{} ({error})", response.code),
        Verdict::Drop { error } => format!("drop ({error})"),
        Verdict::KeepAlive => "keep-alive".into(),
    }
}

/// (file, expectation) for every line of the table; panics if the table or a file is missing.
fn table() -> Vec<(String, String, Vec<u8>)> {
    let table = std::fs::read_to_string(format!("{DIR}EXPECTED.tsv"))
        .expect("shared/conformance/EXPECTED.tsv must be present beside the checkout");
    let mut out = Vec::new();
    for line in table.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(file), Some(expected)) = (cols.next(), cols.next()) else {
            panic!("malformed table line {line:?}");
        };
        let bytes = std::fs::read(format!("{DIR}{file}"))
            .unwrap_or_else(|e| panic!("{file} listed in EXPECTED.tsv is missing: {e}"));
        out.push((file.to_string(), expected.to_string(), bytes));
    }
    out
}

fn matches(expected: &str, verdict: &Verdict) -> bool {
    match (expected, verdict) {
        ("accept", Verdict::Accept(_)) => true,
        ("drop", Verdict::Drop { .. }) => true,
        ("accept-or-400", Verdict::Accept(_)) => true,
        ("accept-or-400", Verdict::Reject { response, .. }) => response.code == 400,
        (code, Verdict::Reject { response, .. }) => code == response.code.to_string(),
        _ => false,
    }
}

/// Over TCP the same messages, framed by Content-Length, get the same answers, except that a
/// Content-Length larger than what follows makes the framer wait for more bytes.
#[test]
fn torture_messages_over_a_stream() {
    let mut failures = Vec::new();
    for (file, expected, bytes) in table() {
        let mut framer = StreamFramer::new(Limits::default());
        framer.push(&bytes);
        match framer.next_frame() {
            None if file.ends_with("clerr.dat") => {}
            Some(Ok(Frame::Message(m))) => {
                let verdict = check_datagram(&m, &Limits::default(), &Policy::default());
                if !matches(&expected, &verdict) {
                    failures.push(format!(
                        "{file}: expected {expected}, got {}",
                        describe(&verdict)
                    ));
                }
            }
            other => failures.push(format!("{file}: framer gave {other:?}")),
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn torture_messages_match_expected_table() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (file, expected, bytes) in table() {
        let expected = expected.as_str();
        let verdict = check_datagram(&bytes, &Limits::default(), &Policy::default());
        let ok = matches(expected, &verdict);
        // Every rejection and drop must say what was wrong.
        let explained = match &verdict {
            Verdict::Reject { error, .. } | Verdict::Drop { error } => !error.message.is_empty(),
            _ => true,
        };
        if !ok || !explained {
            failures.push(format!(
                "{file}: expected {expected}, got {}",
                describe(&verdict)
            ));
        }
        checked += 1;
    }
    assert_eq!(checked, 61, "EXPECTED.tsv should list 61 messages");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn rejections_carry_required_headers() {
    let read = |f: &str| std::fs::read(format!("{DIR}{f}")).expect("conformance file");
    let policy = Policy::default();
    let limits = Limits::default();
    let Verdict::Reject { response, .. } =
        check_datagram(&read("rfc4475/bext01.dat"), &limits, &policy)
    else {
        panic!("bext01 not rejected")
    };
    assert_eq!(response.code, 420);
    assert_eq!(
        response.headers.get("Unsupported"),
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
    let Verdict::Reject { response, .. } =
        check_datagram(&read("rfc4475/invut.dat"), &limits, &policy)
    else {
        panic!("invut not rejected")
    };
    assert_eq!(response.code, 415);
    assert!(response
        .headers
        .get("Accept")
        .is_some_and(|a| a.contains("application/sdp")));
    // The 400 for a bad request line still copies the request's Via, Call-ID and CSeq.
    let Verdict::Reject { response, .. } =
        check_datagram(&read("rfc4475/lwsstart.dat"), &limits, &policy)
    else {
        panic!("lwsstart not rejected")
    };
    let text = String::from_utf8(response.to_bytes()).expect("utf8");
    assert!(text.starts_with("SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923\r\n"), "{text}");
    assert!(text.contains("\r\nCall-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com\r\n"));
    assert!(text.contains("\r\nCSeq: 1893884 INVITE\r\n"));
}

/// Through the endpoint: the table's status codes go out on the wire to the sender, drops and
/// accepted messages send nothing by themselves, and the endpoint keeps serving afterwards.
#[test]
fn torture_messages_through_the_endpoint() {
    use dialbridge_sip::endpoint::{Config, Endpoint, Event, Incoming};
    use dialbridge_sip::transport::Transport;
    let local: std::net::SocketAddr = "192.0.2.10:5060".parse().expect("addr");
    let remote: std::net::SocketAddr = "192.0.2.99:5999".parse().expect("addr");
    let mut ep = Endpoint::new(Config::default());
    let now = std::time::Instant::now();
    let mut failures = Vec::new();
    for (file, expected, bytes) in table() {
        ep.handle_input(
            now,
            Incoming {
                transport: Transport::Udp,
                local,
                remote,
                message: &bytes,
            },
        );
        let sent: Vec<_> = std::iter::from_fn(|| ep.poll_transmit()).collect();
        let codes: Vec<u16> = sent
            .iter()
            .filter_map(|t| match Message::parse(&t.bytes) {
                Ok(Message::Response(r)) => Some(r.code),
                _ => None,
            })
            .collect();
        let ok = match expected.as_str() {
            "accept" | "drop" => codes.is_empty(),
            "accept-or-400" => codes.is_empty() || codes == [400],
            code => codes.len() == 1 && code == codes[0].to_string(),
        };
        // Responses to rejected requests go back to where the request came from (rport-less
        // requests from a sent-by that is not the source get `received`, so the source IP).
        let routed = sent.iter().all(|t| t.destination.ip() == remote.ip());
        if !ok || !routed {
            failures.push(format!(
                "{file}: expected {expected}, sent {codes:?} to {:?}",
                sent.iter().map(|t| t.destination).collect::<Vec<_>>()
            ));
        }
        while ep.poll_event().is_some() {}
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    let options = b"OPTIONS sip:gw@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.99:5999;branch=z9hG4bKafter\r\n\
From: <sip:a@192.0.2.99>;tag=1\r\nTo: <sip:gw@192.0.2.10>\r\nCall-ID: after\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    ep.handle_input(
        now,
        Incoming {
            transport: Transport::Udp,
            local,
            remote,
            message: options,
        },
    );
    assert!(
        matches!(ep.poll_event(), Some(Event::Request { .. })),
        "still serving"
    );
}
