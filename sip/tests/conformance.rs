//! RFC 4475 / RFC 5118 torture messages against the table in the shared conformance data.

use dialbridge_sip::message::{Limits, Message};
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

#[test]
fn torture_messages_match_expected_table() {
    let table = std::fs::read_to_string(format!("{DIR}EXPECTED.tsv"))
        .expect("shared/conformance/EXPECTED.tsv must be present beside the checkout");
    let mut checked = 0;
    let mut failures = Vec::new();
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
        let verdict = check_datagram(&bytes, &Limits::default(), &Policy::default());
        let ok = match (expected, &verdict) {
            ("accept", Verdict::Accept(_)) => true,
            ("drop", Verdict::Drop { .. }) => true,
            ("accept-or-400", Verdict::Accept(_)) => true,
            ("accept-or-400", Verdict::Reject { response, .. }) => response.code == 400,
            (code, Verdict::Reject { response, .. }) => code == response.code.to_string(),
            _ => false,
        };
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
