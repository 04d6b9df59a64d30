//! Property tests: the parser never panics, serialization round-trips, and stream framing does not
//! depend on how the bytes are chunked.

use std::net::{Ipv4Addr, Ipv6Addr};

use dialbridge_sip::message::{Host, Limits, Message, Method, Request, Response, SipUri, Uri};
use dialbridge_sip::transport::{Frame, StreamFramer};
use dialbridge_sip::validate::{check_datagram, Policy};
use proptest::prelude::*;

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}".prop_map(Host::Domain),
        any::<u32>().prop_map(|a| Host::Ipv4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| Host::Ipv6(Ipv6Addr::from(a))),
    ]
}

fn sip_uri() -> impl Strategy<Value = SipUri> {
    (
        proptest::option::of("[a-zA-Z0-9 @:;%+._-]{1,12}"),
        host(),
        proptest::option::of(any::<u16>()),
        proptest::collection::vec(("[a-z]{1,6}", proptest::option::of("[a-z0-9]{1,6}")), 0..3),
    )
        .prop_map(|(user, host, port, params)| {
            let mut u = SipUri::new(host);
            if let Some(user) = user {
                u = u.with_user(&user);
            }
            u.port = port;
            for (n, v) in params {
                u = u.with_param(&n, v.as_deref());
            }
            u
        })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Options),
        "[A-Z][A-Z0-9_.!%*+`'~-]{0,10}".prop_map(|m| Method::parse(&m).expect("token")),
    ]
}

/// Extension headers: names that never collide with a known or compact header.
fn extra_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[!-~]([ -~]{0,30}[!-~])?"), 0..6)
}

fn common_headers(h: &mut dialbridge_sip::message::Headers, branch: &str, seq: u32, m: &Method) {
    h.push(
        "Via",
        format!("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{branch}"),
    );
    h.push("From", "<sip:alice@example.com>;tag=abc");
    h.push("To", "<sip:bob@example.com>");
    h.push("Call-ID", format!("{branch}@example.com"));
    h.push("CSeq", format!("{seq} {m}"));
}

fn request() -> impl Strategy<Value = Request> {
    (
        method(),
        sip_uri(),
        "[a-zA-Z0-9]{1,12}",
        0u32..(1 << 31),
        extra_headers(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(m, uri, branch, seq, extra, body)| {
            let mut r = Request::new(m.clone(), uri);
            common_headers(&mut r.headers, &branch, seq, &m);
            for (n, v) in extra {
                r.headers.push(&n, v);
            }
            r.set_body("application/octet-stream", body);
            r
        })
}

fn response() -> impl Strategy<Value = Response> {
    (
        100u16..700,
        "([!-~]([ -~]{0,20}[!-~])?)?",
        "[a-zA-Z0-9]{1,12}",
        0u32..(1 << 31),
        extra_headers(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(code, reason, branch, seq, extra, body)| {
            let mut r = Response::new(code, reason);
            common_headers(&mut r.headers, &branch, seq, &Method::Invite);
            for (n, v) in extra {
                r.headers.push(&n, v);
            }
            r.set_body("application/sdp", body);
            r
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        request().prop_map(Message::Request),
        response().prop_map(Message::Response)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::parse(&bytes);
        let _ = check_datagram(&bytes, &Limits::default(), &Policy::default());
        let mut f = StreamFramer::new(Limits::default());
        f.push(&bytes);
        for _ in f.by_ref() {}
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = m.to_bytes();
        for (pos, b) in edits {
            let len = bytes.len();
            if len > 0 {
                bytes[pos % len] = b;
            }
        }
        let _ = check_datagram(&bytes, &Limits::default(), &Policy::default());
    }

    #[test]
    fn serialize_then_parse_round_trips(m in message()) {
        let bytes = m.to_bytes();
        let parsed = Message::parse(&bytes).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&bytes))))?;
        prop_assert_eq!(&parsed, &m);
        prop_assert_eq!(parsed.to_bytes(), bytes);
    }

    #[test]
    fn uri_round_trips(u in sip_uri()) {
        let text = u.to_string();
        prop_assert_eq!(Uri::parse(&text), Ok(Uri::Sip(u)));
    }

    #[test]
    fn framing_is_independent_of_chunking(
        msgs in proptest::collection::vec(message(), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
        pings in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if pings[i] {
                stream.extend_from_slice(b"\r\n\r\n");
                expected.push(Frame::Ping);
            }
            let b = m.to_bytes();
            stream.extend_from_slice(&b);
            expected.push(Frame::Message(b));
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut f = StreamFramer::new(Limits::default());
        let mut got = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([stream.len()]) {
            f.push(&stream[prev..c]);
            prev = c;
            for frame in f.by_ref() {
                got.push(frame.map_err(|e| TestCaseError::fail(e.to_string()))?);
            }
        }
        prop_assert_eq!(got, expected);
    }
}

// The headers of reliable provisional responses and session timers: what is written parses back
// to the same values, and no value (any text) makes a parser panic.
proptest! {
    #[test]
    fn rseq_rack_session_expires_and_min_se_round_trip(
        rseq in any::<u32>(),
        cseq in 0u32..=0x7fff_ffff,
        seconds in any::<u32>(),
        refresher in proptest::option::of(prop_oneof![Just("uac"), Just("UAS")]),
    ) {
        let mut h = dialbridge_sip::message::Headers::new();
        h.push("RSeq", rseq.to_string());
        h.push("RAck", format!("{rseq} {cseq} INVITE"));
        let se = match refresher {
            Some(r) => format!("{seconds};refresher={r}"),
            None => seconds.to_string(),
        };
        h.push("Session-Expires", se);
        h.push("Min-SE", format!("{seconds};x=1"));
        prop_assert_eq!(h.rseq().expect("RSeq"), Some(rseq));
        let rack = h.rack().expect("RAck").expect("present");
        prop_assert_eq!((rack.rseq, rack.cseq, rack.method), (rseq, cseq, Method::Invite));
        let parsed = h.session_expires().expect("Session-Expires").expect("present");
        prop_assert_eq!(parsed.seconds, seconds);
        prop_assert_eq!(parsed.refresher, refresher.map(|r| r.to_ascii_lowercase()));
        prop_assert_eq!(h.min_se().expect("Min-SE"), Some(seconds));
    }

    #[test]
    fn timer_and_reliability_headers_never_panic(value in ".{0,64}") {
        let mut h = dialbridge_sip::message::Headers::new();
        for name in ["RSeq", "RAck", "Session-Expires", "Min-SE"] {
            h.push(name, value.clone());
        }
        let _ = h.rseq();
        let _ = h.rack();
        let _ = h.session_expires();
        let _ = h.min_se();
    }
}

fn crypto_line() -> impl Strategy<Value = dialbridge_sip::sdp::Crypto> {
    use dialbridge_sip::sdp::{Crypto, KEY_SALT_LEN};
    (
        0u32..1_000_000_000,
        prop_oneof![
            Just("AES_CM_128_HMAC_SHA1_80".to_string()),
            Just("AES_CM_128_HMAC_SHA1_32".to_string()),
            "[A-Z][A-Z0-9_]{0,20}",
        ],
        proptest::array::uniform30(any::<u8>()),
        proptest::option::of(prop_oneof![Just("2^31".to_string()), "[1-9][0-9]{0,8}"]),
        proptest::option::of("[1-9][0-9]{0,3}:[1-4]"),
        proptest::collection::vec("[A-Z][A-Z_=0-9]{0,12}", 0..3),
    )
        .prop_map(
            |(tag, suite_name, key_salt, lifetime, mki, session_params)| {
                let key_salt: [u8; KEY_SALT_LEN] = key_salt;
                Crypto {
                    tag,
                    suite: dialbridge_sip::sdp::CryptoSuite::from_name(&suite_name),
                    suite_name,
                    key_salt,
                    lifetime,
                    mki,
                    session_params,
                }
            },
        )
}

proptest! {
    #[test]
    fn crypto_attributes_round_trip(c in crypto_line()) {
        use dialbridge_sip::sdp::Crypto;
        let text = c.to_string();
        prop_assert_eq!(Crypto::parse(&text), Ok(c.clone()));
        // A usable key has a suite we know and nothing we do not implement.
        prop_assert_eq!(
            c.usable().is_some(),
            c.suite.is_some() && c.mki.is_none() && c.session_params.is_empty()
        );
    }

    #[test]
    fn crypto_attribute_parsing_never_panics(value in ".{0,96}") {
        let _ = dialbridge_sip::sdp::Crypto::parse(&value);
    }

    #[test]
    fn mutated_crypto_attributes_never_panic(
        c in crypto_line(),
        edits in proptest::collection::vec((any::<usize>(), any::<char>()), 1..6),
    ) {
        let mut chars: Vec<char> = c.to_string().chars().collect();
        for (at, ch) in edits {
            let len = chars.len().max(1);
            chars.insert(at % len, ch);
        }
        let text: String = chars.into_iter().collect();
        let _ = dialbridge_sip::sdp::Crypto::parse(&text);
    }
}

proptest! {
    #[test]
    fn sipfrag_status_never_panics_and_reads_what_it_is_given(
        code in 100u16..700,
        reason in "[A-Za-z ]{0,20}",
        junk in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let line = format!("SIP/2.0 {code} {reason}\r\n");
        prop_assert_eq!(
            dialbridge_sip::ua::sipfrag_status(line.as_bytes()),
            Some((code, reason.trim().to_string()))
        );
        let _ = dialbridge_sip::ua::sipfrag_status(&junk);
    }
}
