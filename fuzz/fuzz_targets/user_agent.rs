#![no_main]
//! Feeds datagrams (the input split at 0xFF bytes) to a user agent with a call in progress,
//! answers every incoming call, and runs its timers: nothing may panic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialbridge_sip::endpoint::{Config, Incoming, Target};
use dialbridge_sip::message::{Message, NameAddr, Uri};
use dialbridge_sip::transport::Transport;
use dialbridge_sip::ua::{Body, OutgoingCall, UaConfig, UaEvent, UserAgent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let local: SocketAddr = ([192, 0, 2, 10], 5060).into();
    let peer: SocketAddr = ([198, 51, 100, 7], 5060).into();
    let mut ua = UserAgent::new(UaConfig {
        endpoint: Config {
            local_addrs: vec![(Transport::Udp, local), (Transport::Tcp, local)],
            ..Config::default()
        },
        ..UaConfig::default()
    });
    let t0 = Instant::now();
    let (Ok(uri), Ok(from), Ok(to)) = (
        Uri::parse("sip:bob@198.51.100.7"),
        NameAddr::parse("<sip:alice@192.0.2.10>"),
        NameAddr::parse("<sip:bob@198.51.100.7>"),
    ) else {
        return;
    };
    let _ = ua.invite(
        t0,
        OutgoingCall {
            request_uri: uri,
            from,
            to,
            alternates: Vec::new(),
            target: Target { transport: Transport::Udp, addr: peer },
            body: Some(Body::sdp("v=0\r\n")),
            headers: Vec::new(),
        },
    );
    for (i, chunk) in data.split(|&b| b == 0xFF).enumerate() {
        let now = t0 + Duration::from_millis(100 * i as u64);
        let transport = if i % 2 == 0 { Transport::Udp } else { Transport::Tcp };
        ua.handle_input(now, Incoming { transport, local, remote: peer, message: chunk });
        while let Some(ev) = ua.poll_event() {
            if let UaEvent::IncomingCall { call, .. } = ev {
                let _ = ua.respond(now, call, 200, "OK", Some(Body::sdp("v=0\r\n")));
            }
            if let UaEvent::Answered { call, .. } = ev {
                let _ = ua.bye(now, call);
            }
        }
        // Whatever the agent sends must be well-formed SIP.
        while let Some(t) = ua.poll_transmit() {
            if let Err(e) = Message::parse(&t.bytes) {
                panic!("agent sent a malformed message ({e}): {:?}", String::from_utf8_lossy(&t.bytes));
            }
        }
    }
    while let Some(t) = ua.poll_timeout() {
        if t > t0 + Duration::from_secs(120) {
            break;
        }
        ua.handle_timeout(t);
        while ua.poll_event().is_some() {}
        // Whatever the agent sends must be well-formed SIP.
        while let Some(t) = ua.poll_transmit() {
            if let Err(e) = Message::parse(&t.bytes) {
                panic!("agent sent a malformed message ({e}): {:?}", String::from_utf8_lossy(&t.bytes));
            }
        }
    }
});
