//! A challenged INVITE answered once with digest credentials (MD5 and SHA-256), through the user
//! agent and the digest client, checked by the server-side verifier; a rejected password ends
//! the call instead of looping.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialbridge_sip::auth::{
    Algorithm, Authorization, Challenge, ChallengeKind, DigestClient, DigestRequest, GiveUp,
    RetryDecision,
};
use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{Message, NameAddr, Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, OutgoingCall, UaConfig, UaEvent, UserAgent};

const LOCAL: &str = "192.0.2.10:5060";
const TRUNK: &str = "198.51.100.7:5080";
const URI: &str = "sip:+15551234@198.51.100.7:5080;transport=udp";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn outgoing(headers: Vec<(String, String)>) -> OutgoingCall {
    OutgoingCall {
        request_uri: Uri::parse(URI).expect("uri"),
        from: NameAddr::parse("<sip:trunkuser@192.0.2.10>").expect("from"),
        to: NameAddr::parse("<sip:+15551234@198.51.100.7>").expect("to"),
        target: Target {
            transport: Transport::Udp,
            addr: addr(TRUNK),
        },
        body: Some(Body::sdp("v=0\r\n")),
        headers,
    }
}

fn sent_request(ua: &mut UserAgent) -> Request {
    let t = ua.poll_transmit().expect("a transmit");
    match Message::parse(&t.bytes) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn deliver(ua: &mut UserAgent, now: Instant, r: &Response) {
    ua.handle_input(
        now,
        Incoming {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr(TRUNK),
            message: &r.to_bytes(),
        },
    );
}

fn challenge_response(invite: &Request, challenge: &Challenge) -> Response {
    let mut r = Response::for_request(invite, 407, "Proxy Authentication Required");
    r.set_to_tag("px1").expect("tag");
    r.headers.push("Proxy-Authenticate", challenge.to_string());
    r
}

fn challenged_call(algorithm: Algorithm) {
    let mut ua = UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        ..UaConfig::default()
    });
    let t0 = Instant::now();
    ua.invite(t0, outgoing(Vec::new())).expect("invite");
    let first = sent_request(&mut ua);
    let challenge = Challenge::new("trunk.example.net", "nonce-1", algorithm);
    deliver(
        &mut ua,
        t0 + Duration::from_millis(40),
        &challenge_response(&first, &challenge),
    );
    assert_eq!(sent_request(&mut ua).method.as_str(), "ACK");
    let resp = match std::iter::from_fn(|| ua.poll_event())
        .collect::<Vec<_>>()
        .as_slice()
    {
        [UaEvent::Failed {
            code: 407,
            response: Some(r),
            ..
        }] => r.clone(),
        other => panic!("{other:?}"),
    };

    let mut digest = DigestClient::new("trunkuser", "s3cret");
    let kind = ChallengeKind::from_status(resp.code).expect("407 is a challenge");
    let uri = first.uri.to_string();
    let decision = digest.on_challenge(
        kind,
        resp.headers.proxy_authenticate(),
        &DigestRequest::new("INVITE", &uri),
        "cnonce-1",
    );
    let RetryDecision::Retry(headers) = decision else {
        panic!("{decision:?}")
    };
    let headers = headers
        .into_iter()
        .map(|h| (h.name.to_string(), h.value))
        .collect();
    ua.invite_after_challenge(t0 + Duration::from_millis(50), &resp, outgoing(headers))
        .expect("retry");
    let second = sent_request(&mut ua);
    assert_eq!(second.headers.get("CSeq"), Some("2 INVITE"));
    assert_eq!(
        second.headers.call_id().expect("cid"),
        first.headers.call_id().expect("cid")
    );
    // The digest uri is the Request-URI exactly as sent, port and transport included.
    let creds = Authorization::parse(
        second
            .headers
            .get("Proxy-Authorization")
            .expect("credentials"),
    )
    .expect("parse credentials");
    assert_eq!(creds.uri, URI);
    assert_eq!(second.uri.to_string(), URI);
    creds
        .verify_against(&challenge, "INVITE", "s3cret", &second.body)
        .expect("the trunk accepts the credentials");

    // The same challenge again means the password is wrong: no third INVITE.
    deliver(
        &mut ua,
        t0 + Duration::from_millis(90),
        &challenge_response(&second, &challenge),
    );
    let resp = match std::iter::from_fn(|| ua.poll_event())
        .collect::<Vec<_>>()
        .as_slice()
    {
        [UaEvent::Failed {
            code: 407,
            response: Some(r),
            ..
        }] => r.clone(),
        other => panic!("{other:?}"),
    };
    let decision = digest.on_challenge(
        kind,
        resp.headers.proxy_authenticate(),
        &DigestRequest::new("INVITE", &uri),
        "cnonce-2",
    );
    assert!(
        matches!(
            decision,
            RetryDecision::GiveUp(GiveUp::CredentialsRejected { .. })
        ),
        "{decision:?}"
    );
}

#[test]
fn md5_challenge_is_answered_once() {
    challenged_call(Algorithm::Md5);
}

#[test]
fn sha256_challenge_is_answered_once() {
    challenged_call(Algorithm::Sha256);
}
