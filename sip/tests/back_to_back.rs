//! Two user agents wired back to back in memory: a whole call over UDP and over TCP, each side
//! parsing what the other serialized.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialbridge_sip::dialog::Dialog;
use dialbridge_sip::endpoint::{Config, Target};
use dialbridge_sip::message::{NameAddr, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, CallHandle, OutgoingCall, UaConfig, UaEvent, UserAgent};

mod common;
use common::{addr, pump};

fn agent(addr: SocketAddr, seed: u64) -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr), (Transport::Tcp, addr)],
            seed,
            ..Config::default()
        },
        ..UaConfig::default()
    })
}

const A_ADDR: &str = "192.0.2.1:5060";
const B_ADDR: &str = "192.0.2.2:5060";

/// `a` calls `b` over `transport` at `t0`; `b` rings and answers one second later, `a` ACKs.
/// Returns the call's handle at `a` and at `b`.
fn answered_call(
    transport: Transport,
    a: &mut UserAgent,
    b: &mut UserAgent,
    t0: Instant,
) -> (CallHandle, CallHandle) {
    let (a_addr, b_addr) = (addr(A_ADDR), addr(B_ADDR));
    let call = a
        .invite(
            t0,
            OutgoingCall {
                request_uri: Uri::parse("sip:+15551234@192.0.2.2").expect("uri"),
                from: NameAddr::parse("\"Alice\" <sip:alice@192.0.2.1>").expect("from"),
                to: NameAddr::parse("<sip:+15551234@192.0.2.2>").expect("to"),
                alternates: Vec::new(),
                target: Target {
                    transport,
                    addr: b_addr,
                },
                body: Some(Body::sdp("v=0\r\nm=audio 4000 RTP/AVP 0\r\n")),
                headers: Vec::new(),
            },
        )
        .expect("invite");
    let (ea, eb) = pump(t0, a, a_addr, b, b_addr);
    assert!(ea.is_empty());
    let UaEvent::IncomingCall {
        call: incoming,
        request,
        transport: tr,
        ..
    } = &eb[0]
    else {
        panic!("{eb:?}")
    };
    assert_eq!(*tr, transport);
    assert_eq!(
        request.headers.from().expect("from").display.as_deref(),
        Some("Alice")
    );
    let incoming = *incoming;
    b.respond(t0, incoming, 180, "Ringing", None).expect("180");
    let (ea, _) = pump(t0, a, a_addr, b, b_addr);
    assert!(
        matches!(&ea[..], [UaEvent::Progress { code: 180, .. }]),
        "{ea:?}"
    );
    b.respond(
        t0 + Duration::from_secs(1),
        incoming,
        200,
        "OK",
        Some(Body::sdp("v=0\r\nm=audio 5000 RTP/AVP 0\r\n")),
    )
    .expect("200");
    let (ea, eb) = pump(t0 + Duration::from_secs(1), a, a_addr, b, b_addr);
    assert!(
        matches!(&ea[..], [UaEvent::Answered { body: Some(_), .. }]),
        "{ea:?}"
    );
    assert_eq!(
        eb,
        vec![UaEvent::Confirmed {
            call: incoming,
            body: None
        }]
    );
    (call, incoming)
}

fn whole_call(transport: Transport) {
    let (a_addr, b_addr) = (addr(A_ADDR), addr(B_ADDR));
    let (mut a, mut b) = (agent(a_addr, 1), agent(b_addr, 2));
    let t0 = Instant::now();
    let (call, incoming) = answered_call(transport, &mut a, &mut b, t0);
    a.bye(t0 + Duration::from_secs(10), call).expect("bye");
    let (ea, eb) = pump(t0 + Duration::from_secs(10), &mut a, a_addr, &mut b, b_addr);
    assert_eq!(
        ea,
        vec![UaEvent::Ended {
            call,
            by_remote: false
        }]
    );
    assert_eq!(
        eb,
        vec![UaEvent::Ended {
            call: incoming,
            by_remote: true
        }]
    );
    assert_eq!((a.call_count(), b.call_count()), (0, 0));
    // Every transaction winds down within 64*T1 and nothing is sent meanwhile.
    for ua in [&mut a, &mut b] {
        while let Some(t) = ua.poll_timeout() {
            ua.handle_timeout(t);
            assert!(ua.poll_transmit().is_none());
        }
        assert_eq!(ua.endpoint().transaction_count(), 0);
    }
}

#[test]
fn whole_call_over_udp() {
    whole_call(Transport::Udp);
}

#[test]
fn whole_call_over_tcp() {
    whole_call(Transport::Tcp);
}

/// A run of the service saved the dialog of its end of `call`, then died: the next run (a new
/// agent on the same address) restores it and hangs the peer up.
fn restarted_side_hangs_up(transport: Transport, gateway_calls: bool) {
    let (a_addr, b_addr) = (addr(A_ADDR), addr(B_ADDR));
    let (mut a, mut b) = (agent(a_addr, 1), agent(b_addr, 2));
    let t0 = Instant::now();
    // The gateway is `a` when it dialled out, `b` when the phone called in.
    let (gw_addr, phone_addr) = if gateway_calls {
        (a_addr, b_addr)
    } else {
        (b_addr, a_addr)
    };
    let (call_a, call_b) = answered_call(transport, &mut a, &mut b, t0);
    let (gateway, mut phone, gw_call, phone_call) = if gateway_calls {
        (a, b, call_a, call_b)
    } else {
        (b, a, call_b, call_a)
    };
    let saved = gateway.dialog(gw_call).expect("dialog").save();
    drop(gateway);

    let mut restarted = agent(gw_addr, 3);
    let dialog = Dialog::restore(&saved).expect("restore");
    let t1 = t0 + Duration::from_secs(30);
    let bye = restarted.bye_restored(t1, dialog).expect("bye");
    let (e_gw, e_phone) = pump(t1, &mut restarted, gw_addr, &mut phone, phone_addr);
    assert_eq!(
        e_phone,
        vec![UaEvent::Ended {
            call: phone_call,
            by_remote: true
        }]
    );
    assert_eq!(
        e_gw,
        vec![UaEvent::RestoredByeDone {
            call: bye,
            code: 200,
            reason: "OK".into()
        }]
    );
    assert_eq!(phone.call_count(), 0);
    while let Some(t) = restarted.poll_timeout() {
        restarted.handle_timeout(t);
        assert!(restarted.poll_event().is_none());
    }
    assert_eq!(restarted.endpoint().transaction_count(), 0);
}

#[test]
fn restored_dial_out_dialog_hangs_the_phone_up_over_udp_and_tcp() {
    restarted_side_hangs_up(Transport::Udp, true);
    restarted_side_hangs_up(Transport::Tcp, true);
}

#[test]
fn restored_dial_in_dialog_hangs_the_caller_up_over_udp_and_tcp() {
    restarted_side_hangs_up(Transport::Udp, false);
    restarted_side_hangs_up(Transport::Tcp, false);
}
