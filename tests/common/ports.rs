//! Ports for peers the tests start on loopback.

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tp {
    Udp,
    Tcp,
}

/// A port the system has just handed out as free (for a peer that binds it right away).
pub fn free_port(tp: Tp) -> u16 {
    match tp {
        Tp::Udp => UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
        Tp::Tcp => TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
    }
    .expect("free port")
    .port()
}

/// Where one SIPp listens and sends its media.
#[derive(Clone, Copy, Debug)]
pub struct SippPorts {
    /// SIP, free over UDP and TCP.
    pub sip: u16,
    /// `-mp`: SIPp binds four UDP ports from here (audio RTP and RTCP, video RTP and RTCP)
    /// and retries only the first.
    pub media: u16,
}

/// Ports for one SIPp, from 20000-29999: below the ephemeral range (where ports the system
/// hands out could be taken between the check and SIPp's bind) and the test gateways' RTP
/// windows (30000-59999). Each block of eight is handed out once per test process and checked
/// free.
pub fn sipp_ports() -> SippPorts {
    const FIRST: u16 = 20000;
    const BLOCK: u16 = 8;
    const BLOCKS: u16 = 1250;
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU16::new(rand::random::<u16>() % BLOCKS));
    for _ in 0..BLOCKS {
        let base = FIRST + (next.fetch_add(1, Ordering::Relaxed) % BLOCKS) * BLOCK;
        let udp_free = (base..base + BLOCK).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if udp_free && TcpListener::bind(("127.0.0.1", base)).is_ok() {
            return SippPorts {
                sip: base,
                media: base + 2,
            };
        }
    }
    panic!("no free block of eight ports in 20000-29999 for SIPp");
}
