//! Cost of the SIP core alone: parsing a typical INVITE, and a whole call setup and teardown
//! (INVITE, 180, 200, ACK, BYE, 200) between two user agents in memory, both sides included.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dialbridge_sip::endpoint::{Config, Target};
use dialbridge_sip::message::{Limits, NameAddr, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, OutgoingCall, UaConfig, UaEvent, UserAgent};
use dialbridge_sip::validate::{check_datagram, Policy};

#[path = "../tests/common/mod.rs"]
mod common;
use common::pump;

const INVITE: &[u8] = b"INVITE sip:+15551234@192.0.2.2 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:+15551234@192.0.2.2>\r\n\
From: \"Alice\" <sip:alice@192.0.2.1>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@192.0.2.1\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.1:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 129\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n";

fn agent(addr: SocketAddr, seed: u64) -> UserAgent {
    UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, addr)],
            seed,
            ..Config::default()
        },
        ..UaConfig::default()
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip_core");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_and_validate_invite", |bch| {
        let (limits, policy) = (Limits::default(), Policy::default());
        bch.iter(|| check_datagram(std::hint::black_box(INVITE), &limits, &policy))
    });

    let a_addr: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
    let b_addr: SocketAddr = "192.0.2.2:5060".parse().expect("addr");
    let (mut a, mut b) = (agent(a_addr, 1), agent(b_addr, 2));
    let mut now = Instant::now();
    let uri = Uri::parse("sip:+15551234@192.0.2.2").expect("uri");
    let from = NameAddr::parse("<sip:alice@192.0.2.1>").expect("from");
    let to = NameAddr::parse("<sip:+15551234@192.0.2.2>").expect("to");
    let sdp = Body::sdp(&INVITE[INVITE.len() - 129..]);
    g.bench_function("call_setup_and_teardown_both_sides", |bch| {
        bch.iter(|| {
            let call = a
                .invite(
                    now,
                    OutgoingCall {
                        request_uri: uri.clone(),
                        from: from.clone(),
                        to: to.clone(),
                        alternates: Vec::new(),
                        target: Target {
                            transport: Transport::Udp,
                            addr: b_addr,
                        },
                        body: Some(sdp.clone()),
                        headers: Vec::new(),
                    },
                )
                .expect("invite");
            let (_, eb) = pump(now, &mut a, a_addr, &mut b, b_addr);
            let incoming = eb.into_iter().find_map(|e| match e {
                UaEvent::IncomingCall { call, .. } => Some(call),
                _ => None,
            });
            let incoming = incoming.expect("incoming call");
            b.respond(now, incoming, 180, "Ringing", None).expect("180");
            b.respond(now, incoming, 200, "OK", Some(sdp.clone()))
                .expect("200");
            pump(now, &mut a, a_addr, &mut b, b_addr);
            a.bye(now, call).expect("bye");
            pump(now, &mut a, a_addr, &mut b, b_addr);
            // Let finished transactions expire so state does not pile up.
            now += Duration::from_millis(100);
            a.handle_timeout(now);
            b.handle_timeout(now);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
