//! The SIP runtime (driver + sans-IO user agent) placing calls to SIPp acting as the far end, on
//! loopback, over UDP and TCP. SIPp's own exit status says whether every message it expected arrived
//! as its scenario (tests/sipp/*.xml) describes; the events say what the service would see.

mod common;

use common::{ports, sipp};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dialbridge::config::{SipListen, Transport as ConfigTransport};
use dialbridge::runtime::sip::{self, Credentials, SipHandle};
use dialbridge_sip::endpoint::Target;
use dialbridge_sip::message::{NameAddr, Uri};
use dialbridge_sip::sdp::{AudioConfig, Direction, LocalMedia, SdpSession};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaEvent};
use tokio::sync::{mpsc, watch};

use ports::Tp;
use sipp::Sipp;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// SIPp's listening address for `transport`.
fn target(sipp: &Sipp, transport: Transport) -> Target {
    Target {
        transport,
        addr: SocketAddr::new(LOOPBACK, sipp.port),
    }
}

/// SIPp as the far end over `transport`, running `scenario` for one call.
async fn far_end(scenario: &str, transport: Transport) -> Sipp {
    let tp = if transport == Transport::Tcp {
        Tp::Tcp
    } else {
        Tp::Udp
    };
    Sipp::uas(scenario, tp, &[]).await
}

struct Runtime {
    sip: SipHandle,
    events: mpsc::UnboundedReceiver<UaEvent>,
    _shutdown: watch::Sender<bool>,
}

async fn runtime() -> Runtime {
    let listen: Vec<SipListen> = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
        .iter()
        .map(|s| s.parse().expect("listen address"))
        .collect();
    assert_eq!(listen[1].transport, ConfigTransport::Tcp);
    let (events_tx, events) = mpsc::unbounded_channel();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let sip = sip::start(&listen, events_tx, shutdown_rx)
        .await
        .expect("SIP runtime starts");
    Runtime {
        sip,
        events,
        _shutdown: shutdown,
    }
}

fn offer() -> Body {
    let local = LocalMedia {
        address: LOOPBACK,
        port: 40000,
        direction: Direction::SendRecv,
    };
    let sdp = SdpSession::new(1).create_offer(&AudioConfig::default(), &local);
    Body::sdp(sdp.to_string().into_bytes())
}

fn call_to(target: Target) -> OutgoingCall {
    let transport = if target.transport == Transport::Tcp {
        ";transport=tcp"
    } else {
        ""
    };
    let uri = Uri::parse(&format!("sip:+4930123456@{}{transport}", target.addr)).expect("uri");
    let from = NameAddr::new(Uri::parse("sip:+4930999999@127.0.0.1").expect("from"));
    OutgoingCall {
        request_uri: uri.clone(),
        from,
        to: NameAddr::new(uri),
        alternates: Vec::new(),
        target,
        body: Some(offer()),
        headers: Vec::new(),
    }
}

impl Runtime {
    /// The next event of `call`, failing the test after 30 s.
    async fn next(&mut self, call: CallHandle) -> UaEvent {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
                .await
                .expect("an event within 30 s")
                .expect("runtime running");
            let of_call = match &event {
                UaEvent::Progress { call: c, .. }
                | UaEvent::Answered { call: c, .. }
                | UaEvent::Failed { call: c, .. }
                | UaEvent::Ended { call: c, .. } => *c == call,
                _ => false,
            };
            if of_call {
                return event;
            }
        }
    }

    /// Events until the call is answered; asserts 180 came first.
    async fn until_answered(&mut self, call: CallHandle) -> UaEvent {
        let mut rang = false;
        loop {
            match self.next(call).await {
                UaEvent::Progress { code: 180, .. } => rang = true,
                UaEvent::Progress { .. } => {}
                answered @ UaEvent::Answered { .. } => {
                    assert!(rang, "180 Ringing reported before the answer");
                    return answered;
                }
                other => panic!("expected the call to be answered, got {other:?}"),
            }
        }
    }

    async fn stats_settle(&self) {
        // Dialogs end at once; finished transactions linger only for their RFC wait timers.
        let stats = self.sip.stats().await.expect("stats");
        assert_eq!(stats.calls, 0, "no call left behind: {stats:?}");
    }
}

async fn answered_then_bye(transport: Transport) {
    let mut rt = runtime().await;
    let sipp = far_end("uas_answer.xml", transport).await;
    let call = rt
        .sip
        .invite(call_to(target(&sipp, transport)), None)
        .await
        .expect("invite");
    match rt.until_answered(call).await {
        UaEvent::Answered { response, body, .. } => {
            assert_eq!(response.code, 200);
            let sdp = String::from_utf8(body.expect("answer SDP").bytes).expect("utf8");
            assert!(sdp.contains("m=audio"), "{sdp}");
        }
        other => panic!("{other:?}"),
    }
    rt.sip.hangup(call).await.expect("hangup");
    assert!(matches!(
        rt.next(call).await,
        UaEvent::Ended {
            by_remote: false,
            ..
        }
    ));
    let (ok, trace) = sipp.finish().await;
    assert!(
        ok,
        "SIPp saw the scenario through (ACK, then BYE):\n{trace}"
    );
    rt.stats_settle().await;
}

async fn busy(transport: Transport) {
    let mut rt = runtime().await;
    let sipp = far_end("uas_busy.xml", transport).await;
    let call = rt
        .sip
        .invite(call_to(target(&sipp, transport)), None)
        .await
        .expect("invite");
    match rt.next(call).await {
        UaEvent::Failed { code, reason, .. } => {
            assert_eq!((code, reason.as_str()), (486, "Busy Here"));
        }
        other => panic!("expected 486, got {other:?}"),
    }
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp got the ACK for 486:\n{trace}");
    rt.stats_settle().await;
}

async fn challenged(transport: Transport) {
    let mut rt = runtime().await;
    let sipp = far_end("uas_auth.xml", transport).await;
    let credentials = Credentials {
        username: "trunk-user".into(),
        password: "trunk-secret".into(),
        realm: Some("sipp.test".into()),
    };
    let call = rt
        .sip
        .invite(call_to(target(&sipp, transport)), Some(credentials))
        .await
        .expect("invite");
    // The 407 is answered inside the runtime: the service sees ringing and the answer only.
    rt.until_answered(call).await;
    rt.sip.hangup(call).await.expect("hangup");
    assert!(matches!(rt.next(call).await, UaEvent::Ended { .. }));
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp saw credentials, then ACK and BYE:\n{trace}");
    check_digest(&trace, &sent_request_uri(&trace));
}

/// The Request-URI of the last INVITE in SIPp's trace, exactly as it was sent.
fn sent_request_uri(trace: &str) -> String {
    trace
        .lines()
        .filter_map(|l| l.strip_prefix("INVITE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .next_back()
        .expect("INVITE in trace")
        .to_string()
}

/// Recomputes the MD5 digest of the credentials SIPp received (RFC 2617 section 3.2.2), without
/// the project's auth module, and checks it against what was sent.
fn check_digest(trace: &str, request_uri: &str) {
    use md5::{Digest, Md5};
    let hex = |s: String| {
        Md5::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let header = trace
        .lines()
        .find_map(|l| l.strip_prefix("Proxy-Authorization: Digest "))
        .expect("credentials on the re-sent INVITE");
    let param = |name: &str| {
        header
            .split(',')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{name} missing in {header}"))
    };
    assert_eq!(param("username"), "trunk-user");
    assert_eq!(param("realm"), "sipp.test");
    assert_eq!(param("nonce"), "a7f3c9e1b2d4");
    assert_eq!(
        param("uri"),
        request_uri,
        "digest uri is the Request-URI as sent"
    );
    assert_eq!(param("qop"), "auth");
    let ha1 = hex("trunk-user:sipp.test:trunk-secret".to_string());
    let ha2 = hex(format!("INVITE:{request_uri}"));
    let expected = hex(format!(
        "{ha1}:a7f3c9e1b2d4:{}:{}:auth:{ha2}",
        param("nc"),
        param("cnonce")
    ));
    assert_eq!(param("response"), expected, "digest response of {header}");
}

async fn ringing_then_cancel(transport: Transport) {
    let mut rt = runtime().await;
    let sipp = far_end("uas_ring_cancel.xml", transport).await;
    let call = rt
        .sip
        .invite(call_to(target(&sipp, transport)), None)
        .await
        .expect("invite");
    assert!(matches!(
        rt.next(call).await,
        UaEvent::Progress { code: 180, .. }
    ));
    rt.sip.hangup(call).await.expect("cancel");
    match rt.next(call).await {
        UaEvent::Failed { code, .. } => assert_eq!(code, 487),
        other => panic!("expected 487 after CANCEL, got {other:?}"),
    }
    let (ok, trace) = sipp.finish().await;
    assert!(ok, "SIPp got CANCEL and the ACK for 487:\n{trace}");
    rt.stats_settle().await;
}

#[tokio::test]
async fn answered_call_and_bye_over_udp() {
    answered_then_bye(Transport::Udp).await;
}

#[tokio::test]
async fn answered_call_and_bye_over_tcp() {
    answered_then_bye(Transport::Tcp).await;
}

#[tokio::test]
async fn busy_over_udp() {
    busy(Transport::Udp).await;
}

#[tokio::test]
async fn busy_over_tcp() {
    busy(Transport::Tcp).await;
}

#[tokio::test]
async fn proxy_challenge_then_answer_over_udp() {
    challenged(Transport::Udp).await;
}

#[tokio::test]
async fn proxy_challenge_then_answer_over_tcp() {
    challenged(Transport::Tcp).await;
}

#[tokio::test]
async fn ringing_then_cancel_over_udp() {
    ringing_then_cancel(Transport::Udp).await;
}

#[tokio::test]
async fn ringing_then_cancel_over_tcp() {
    ringing_then_cancel(Transport::Tcp).await;
}

/// SIPp sits on our INVITE (so it is retransmitted) and loses its first 200: the call is answered
/// by the retransmitted 200, ACKed, and ended by SIPp's BYE. (Re-ACKing a retransmitted 200 is
/// covered in virtual time by sip/tests/dialogs.rs: SIPp takes a repeated ACK for a retransmission
/// of the first and replays its 200 forever.)
#[tokio::test]
async fn retransmissions_over_udp() {
    let mut rt = runtime().await;
    let sipp = far_end("uas_lost_200.xml", Transport::Udp).await;
    let call = rt
        .sip
        .invite(call_to(target(&sipp, Transport::Udp)), None)
        .await
        .expect("invite");
    rt.until_answered(call).await;
    // SIPp hangs up once the ACK arrived; a second Answered would fail here.
    assert!(matches!(
        rt.next(call).await,
        UaEvent::Ended {
            by_remote: true,
            ..
        }
    ));
    let (ok, trace) = sipp.finish().await;
    assert!(
        ok,
        "SIPp got the ACK for its 200 and the 200 for its BYE:\n{trace}"
    );
    let invites = trace
        .lines()
        .filter(|l| l.starts_with("INVITE sip:"))
        .count();
    assert!(
        invites >= 2,
        "our INVITE was retransmitted while unanswered:\n{trace}"
    );
}
