//! Registration as a client in virtual time: the REGISTER on the wire, the digest retry checked
//! by the server-side verifier, the refresh before expiry on one Call-ID with rising CSeq, the
//! back-off after failures (doubling, capped, reset by a success, stretched by Retry-After),
//! a 423 answered with Min-Expires, and the removal with `Expires: 0`.

use std::time::{Duration, Instant};

use dialbridge_sip::auth::{Algorithm, Authorization, Challenge, Credentials};
use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{Request, Response, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{
    Registration, RegistrationHandle, RegistrationState, UaConfig, UaEvent, UserAgent,
};

mod common;
use common::{addr, parse_request, transmits};

const LOCAL: &str = "192.0.2.10:5060";
const REGISTRAR: &str = "198.51.100.7:5080";
const REALM: &str = "registrar.example.net";
const PASSWORD: &str = "s3cret";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn agent() -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr(LOCAL))],
            ..Config::default()
        },
        ..UaConfig::default()
    })
}

fn registration(password: &str) -> Registration {
    Registration {
        registrar: Uri::parse("sip:198.51.100.7:5080").expect("uri"),
        aor: Uri::parse("sip:gw@198.51.100.7").expect("aor"),
        target: Target {
            transport: Transport::Udp,
            addr: addr(REGISTRAR),
        },
        contact_user: "gw".into(),
        credentials: Some(Credentials {
            username: "gw".into(),
            password: password.into(),
            realm: None,
        }),
        expires: secs(600),
        retry_min: secs(10),
        retry_max: secs(60),
    }
}

fn events(ua: &mut UserAgent) -> Vec<UaEvent> {
    std::iter::from_fn(|| ua.poll_event()).collect()
}

fn states(ua: &mut UserAgent) -> Vec<RegistrationState> {
    events(ua)
        .into_iter()
        .filter_map(|e| match e {
            UaEvent::Registration { state, .. } => Some(state),
            _ => None,
        })
        .collect()
}

/// The one request the agent sent.
fn sent(ua: &mut UserAgent) -> Request {
    match transmits(ua).as_slice() {
        [t] => {
            assert_eq!(t.destination, addr(REGISTRAR));
            parse_request(&t.bytes)
        }
        other => panic!("expected one request, got {}", other.len()),
    }
}

fn deliver(ua: &mut UserAgent, now: Instant, r: &Response) {
    ua.handle_input(
        now,
        Incoming {
            transport: Transport::Udp,
            local: addr(LOCAL),
            remote: addr(REGISTRAR),
            message: &r.to_bytes(),
        },
    );
}

fn response(req: &Request, code: u16, headers: &[(&str, String)]) -> Response {
    let mut r = Response::for_request(req, code, "X");
    r.set_to_tag("reg1").expect("tag");
    for (name, value) in headers {
        r.headers.push(name, value.clone());
    }
    r
}

fn challenge(nonce: &str) -> (&'static str, String) {
    (
        "WWW-Authenticate",
        Challenge::new(REALM, nonce, Algorithm::Md5).to_string(),
    )
}

fn header<'a>(req: &'a Request, name: &str) -> &'a str {
    req.headers.get(name).unwrap_or("")
}

/// Runs the agent's timers up to `to` (transaction timers included); the requests it sent.
fn advance(ua: &mut UserAgent, to: Instant) -> Vec<Request> {
    let mut out = Vec::new();
    while let Some(at) = ua.poll_timeout().filter(|at| *at <= to) {
        ua.handle_timeout(at);
        out.extend(transmits(ua).iter().map(|t| parse_request(&t.bytes)));
    }
    ua.handle_timeout(to);
    out.extend(transmits(ua).iter().map(|t| parse_request(&t.bytes)));
    out
}

fn cseq(req: &Request) -> u32 {
    req.headers.cseq().expect("cseq").seq
}

/// Registers through a 401 and a 200 granting `granted` seconds; the REGISTERs as sent.
fn registered(ua: &mut UserAgent, now: Instant, granted: u64) -> (RegistrationHandle, Request) {
    let handle = ua.register(now, registration(PASSWORD)).expect("register");
    let first = sent(ua);
    deliver(ua, now, &response(&first, 401, &[challenge("n1")]));
    let second = sent(ua);
    let contact = header(&second, "Contact").to_string();
    deliver(
        ua,
        now,
        &response(
            &second,
            200,
            &[("Contact", format!("{contact};expires={granted}"))],
        ),
    );
    assert_eq!(
        states(ua),
        vec![RegistrationState::Registered {
            expires: secs(granted)
        }]
    );
    (handle, second)
}

#[test]
fn register_answers_the_challenge_and_binds_our_contact() {
    let now = Instant::now();
    let mut ua = agent();
    ua.register(now, registration(PASSWORD)).expect("register");
    let first = sent(&mut ua);
    assert_eq!(first.method.as_str(), "REGISTER");
    assert_eq!(first.uri.to_string(), "sip:198.51.100.7:5080");
    assert_eq!(header(&first, "To"), "<sip:gw@198.51.100.7>");
    assert!(header(&first, "From").starts_with("<sip:gw@198.51.100.7>;tag="));
    assert_eq!(header(&first, "Contact"), "<sip:gw@192.0.2.10:5060>");
    assert_eq!(header(&first, "Expires"), "600");
    assert!(first.headers.get("Authorization").is_none());

    deliver(&mut ua, now, &response(&first, 401, &[challenge("n1")]));
    let second = sent(&mut ua);
    assert_eq!(cseq(&second), cseq(&first) + 1);
    assert_eq!(header(&second, "Call-ID"), header(&first, "Call-ID"));
    assert_eq!(header(&second, "From"), header(&first, "From"));
    let auth = Authorization::parse(header(&second, "Authorization")).expect("authorization");
    assert_eq!(auth.username, "gw");
    assert_eq!(auth.uri, "sip:198.51.100.7:5080");
    auth.verify_against(
        &Challenge::new(REALM, "n1", Algorithm::Md5),
        "REGISTER",
        PASSWORD,
        b"",
    )
    .expect("the digest verifies");
    assert!(states(&mut ua).is_empty(), "a challenge is no failure");

    // The registrar grants less than we asked: its Contact expires wins over our Expires.
    deliver(
        &mut ua,
        now,
        &response(
            &second,
            200,
            &[
                ("Contact", "<sip:gw@192.0.2.10:5060>;expires=300".into()),
                ("Expires", "999".into()),
            ],
        ),
    );
    assert_eq!(
        states(&mut ua),
        vec![RegistrationState::Registered { expires: secs(300) }]
    );
}

#[test]
fn a_binding_is_refreshed_before_it_expires_on_the_same_call_id() {
    let now = Instant::now();
    let mut ua = agent();
    let (_, second) = registered(&mut ua, now, 300);
    // A minute before a 300 s binding ends; a short binding halfway.
    assert!(advance(&mut ua, now + secs(240) - Duration::from_millis(1)).is_empty());
    let at = now + secs(240);
    let [refresh] = advance(&mut ua, at).try_into().expect("one refresh");
    assert_eq!(header(&refresh, "Call-ID"), header(&second, "Call-ID"));
    assert_eq!(header(&refresh, "From"), header(&second, "From"));
    assert_eq!(cseq(&refresh), cseq(&second) + 1);
    // A new round: the old nonce is not replayed; the registrar challenges again.
    assert!(refresh.headers.get("Authorization").is_none());
    deliver(&mut ua, at, &response(&refresh, 401, &[challenge("n2")]));
    let answered = sent(&mut ua);
    assert!(header(&answered, "Authorization").contains("nonce=\"n2\""));
    deliver(
        &mut ua,
        at,
        &response(&answered, 200, &[("Expires", "40".into())]),
    );
    assert_eq!(
        states(&mut ua),
        vec![RegistrationState::Registered { expires: secs(40) }]
    );
    assert!(advance(&mut ua, at + secs(20) - Duration::from_millis(1)).is_empty());
    assert_eq!(advance(&mut ua, at + secs(20)).len(), 1);
}

#[test]
fn failures_back_off_doubling_up_to_the_cap_and_a_success_resets_it() {
    let now = Instant::now();
    let mut ua = agent();
    ua.register(now, registration(PASSWORD)).expect("register");
    let mut at = now;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let req = sent(&mut ua);
        deliver(&mut ua, at, &response(&req, 403, &[]));
        match states(&mut ua).as_slice() {
            [RegistrationState::Failed { code, retry_in, .. }] => {
                assert_eq!(*code, 403);
                waits.push(retry_in.as_secs());
                let early = advance(&mut ua, at + *retry_in - Duration::from_millis(1));
                assert!(early.is_empty(), "no retry before the back-off");
                at += *retry_in;
                ua.handle_timeout(at);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, vec![10, 20, 40, 60]);

    // A success resets the back-off; a Retry-After longer than it wins.
    let req = sent(&mut ua);
    deliver(
        &mut ua,
        at,
        &response(&req, 200, &[("Expires", "600".into())]),
    );
    assert_eq!(
        states(&mut ua),
        vec![RegistrationState::Registered { expires: secs(600) }]
    );
    at += secs(540);
    let [refresh] = advance(&mut ua, at).try_into().expect("one refresh");
    deliver(
        &mut ua,
        at,
        &response(&refresh, 503, &[("Retry-After", "25".into())]),
    );
    assert!(matches!(
        states(&mut ua).as_slice(),
        [RegistrationState::Failed { code: 503, retry_in, .. }] if *retry_in == secs(25)
    ));
}

#[test]
fn a_refused_password_fails_with_the_challenge_instead_of_looping() {
    let now = Instant::now();
    let mut ua = agent();
    ua.register(now, registration("wrong")).expect("register");
    let first = sent(&mut ua);
    deliver(&mut ua, now, &response(&first, 401, &[challenge("n1")]));
    let second = sent(&mut ua);
    deliver(&mut ua, now, &response(&second, 401, &[challenge("n1")]));
    assert!(transmits(&mut ua).is_empty());
    assert!(matches!(
        states(&mut ua).as_slice(),
        [RegistrationState::Failed { code: 401, retry_in, .. }] if *retry_in == secs(10)
    ));
}

#[test]
fn an_unanswered_register_fails_with_408_after_timer_f_and_is_retried() {
    let now = Instant::now();
    let mut ua = agent();
    ua.register(now, registration(PASSWORD)).expect("register");
    let first = sent(&mut ua);
    let mut at = now;
    // Retransmissions until Timer F (64 * T1).
    while let Some(next) = ua.poll_timeout() {
        if next > now + secs(32) {
            break;
        }
        at = next;
        ua.handle_timeout(at);
        for t in transmits(&mut ua) {
            assert_eq!(
                parse_request(&t.bytes).headers.get("CSeq"),
                first.headers.get("CSeq")
            );
        }
    }
    assert!(matches!(
        states(&mut ua).as_slice(),
        [RegistrationState::Failed { code: 408, retry_in, .. }] if *retry_in == secs(10)
    ));
    ua.handle_timeout(at + secs(10));
    let retry = sent(&mut ua);
    assert_eq!(cseq(&retry), cseq(&first) + 1);
}

#[test]
fn interval_too_brief_is_answered_with_min_expires() {
    let now = Instant::now();
    let mut ua = agent();
    let mut reg = registration(PASSWORD);
    reg.credentials = None;
    reg.expires = secs(30);
    ua.register(now, reg).expect("register");
    let first = sent(&mut ua);
    assert_eq!(header(&first, "Expires"), "30");
    deliver(
        &mut ua,
        now,
        &response(&first, 423, &[("Min-Expires", "120".into())]),
    );
    let second = sent(&mut ua);
    assert_eq!(header(&second, "Expires"), "120");
    assert!(states(&mut ua).is_empty());
}

#[test]
fn unregister_sends_expires_zero_and_forgets_the_registration() {
    let now = Instant::now();
    let mut ua = agent();
    let (handle, second) = registered(&mut ua, now, 300);
    ua.unregister(now, handle).expect("unregister");
    let removal = sent(&mut ua);
    assert_eq!(header(&removal, "Expires"), "0");
    assert_eq!(header(&removal, "Call-ID"), header(&second, "Call-ID"));
    assert_eq!(cseq(&removal), cseq(&second) + 1);
    // A registrar may challenge a new round with a nonce answered before: it is answered again.
    deliver(&mut ua, now, &response(&removal, 401, &[challenge("n1")]));
    let answered = sent(&mut ua);
    assert_eq!(header(&answered, "Expires"), "0");
    assert!(header(&answered, "Authorization").contains("nonce=\"n1\""));
    deliver(&mut ua, now, &response(&answered, 200, &[]));
    assert_eq!(states(&mut ua), vec![RegistrationState::Unregistered]);
    assert_eq!(ua.registration_count(), 0);
    // No refresh is left behind.
    assert!(advance(&mut ua, now + secs(86_400)).is_empty());
}

#[test]
fn unregister_without_a_binding_sends_nothing() {
    let now = Instant::now();
    let mut ua = agent();
    let handle = ua.register(now, registration(PASSWORD)).expect("register");
    let first = sent(&mut ua);
    deliver(&mut ua, now, &response(&first, 403, &[]));
    assert_eq!(states(&mut ua).len(), 1);
    ua.unregister(now, handle).expect("unregister");
    assert!(transmits(&mut ua).is_empty());
    assert_eq!(states(&mut ua), vec![RegistrationState::Unregistered]);
    assert_eq!(ua.registration_count(), 0);
}

#[test]
fn unregister_while_registering_waits_for_the_answer() {
    let now = Instant::now();
    let mut ua = agent();
    let mut reg = registration(PASSWORD);
    reg.credentials = None;
    let handle = ua.register(now, reg).expect("register");
    let first = sent(&mut ua);
    ua.unregister(now, handle).expect("unregister");
    assert!(transmits(&mut ua).is_empty());
    deliver(
        &mut ua,
        now,
        &response(&first, 200, &[("Expires", "60".into())]),
    );
    let removal = sent(&mut ua);
    assert_eq!(header(&removal, "Expires"), "0");
    deliver(&mut ua, now, &response(&removal, 200, &[]));
    assert_eq!(states(&mut ua), vec![RegistrationState::Unregistered]);
}
