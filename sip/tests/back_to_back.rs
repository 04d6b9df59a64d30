//! Two user agents wired back to back in memory: a whole call over UDP and over TCP, each side
//! parsing what the other serialized.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{NameAddr, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, OutgoingCall, UaConfig, UaEvent, UserAgent};

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

/// Delivers everything each side sends to the other until both are quiet; returns the events.
fn pump(
    now: Instant,
    a: &mut UserAgent,
    a_addr: SocketAddr,
    b: &mut UserAgent,
    b_addr: SocketAddr,
) -> (Vec<UaEvent>, Vec<UaEvent>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            assert_eq!(t.destination, b_addr);
            b.handle_input(
                now,
                Incoming {
                    transport: t.transport,
                    local: b_addr,
                    remote: a_addr,
                    message: &t.bytes,
                },
            );
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            assert_eq!(t.destination, a_addr);
            a.handle_input(
                now,
                Incoming {
                    transport: t.transport,
                    local: a_addr,
                    remote: b_addr,
                    message: &t.bytes,
                },
            );
            moved = true;
        }
        ea.extend(std::iter::from_fn(|| a.poll_event()));
        eb.extend(std::iter::from_fn(|| b.poll_event()));
        if !moved {
            return (ea, eb);
        }
    }
}

fn whole_call(transport: Transport) {
    let a_addr: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
    let b_addr: SocketAddr = "192.0.2.2:5060".parse().expect("addr");
    let (mut a, mut b) = (agent(a_addr, 1), agent(b_addr, 2));
    let t0 = Instant::now();
    let call = a
        .invite(
            t0,
            OutgoingCall {
                request_uri: Uri::parse("sip:+15551234@192.0.2.2").expect("uri"),
                from: NameAddr::parse("\"Alice\" <sip:alice@192.0.2.1>").expect("from"),
                to: NameAddr::parse("<sip:+15551234@192.0.2.2>").expect("to"),
                target: Target {
                    transport,
                    addr: b_addr,
                },
                body: Some(Body::sdp("v=0\r\nm=audio 4000 RTP/AVP 0\r\n")),
                headers: Vec::new(),
            },
        )
        .expect("invite");
    let (ea, eb) = pump(t0, &mut a, a_addr, &mut b, b_addr);
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
    let (ea, _) = pump(t0, &mut a, a_addr, &mut b, b_addr);
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
    let (ea, eb) = pump(t0 + Duration::from_secs(1), &mut a, a_addr, &mut b, b_addr);
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
