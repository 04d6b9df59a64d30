//! Helpers shared by the virtual-time tests (and the bench): draining a core's transmits,
//! parsing what it sent, and pumping two user agents wired back to back.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Instant;

use dialbridge_sip::endpoint::{Endpoint, Incoming, Transmit};
use dialbridge_sip::message::{Message, Request, Response};
use dialbridge_sip::ua::{UaEvent, UserAgent};

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// A sans-IO core with an outbound queue: a [`UserAgent`] or a bare [`Endpoint`].
pub trait Outbound {
    fn next_transmit(&mut self) -> Option<Transmit>;
}

impl Outbound for UserAgent {
    fn next_transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit()
    }
}

impl Outbound for Endpoint {
    fn next_transmit(&mut self) -> Option<Transmit> {
        self.poll_transmit()
    }
}

/// Everything the core has queued to send.
pub fn transmits(core: &mut impl Outbound) -> Vec<Transmit> {
    std::iter::from_fn(|| core.next_transmit()).collect()
}

pub fn parse_request(bytes: &[u8]) -> Request {
    match Message::parse(bytes) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

pub fn parse_response(bytes: &[u8]) -> Response {
    match Message::parse(bytes) {
        Ok(Message::Response(r)) => r,
        other => panic!("not a response: {other:?}"),
    }
}

/// Delivers everything each side sends to the other until both are quiet; returns the events.
pub fn pump(
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
