//! Ports for peers the tests start on loopback.

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

/// Where SIPp's media sockets go (`-mp`): SIPp binds four UDP ports from there (audio RTP and
/// RTCP, video RTP and RTCP) and retries only the first, so the block comes from 20000-29999,
/// below the ephemeral range and the test gateways' RTP windows (30000-59999), and every block is
/// handed out once per test process and checked free.
pub fn sipp_media_port() -> u16 {
    const FIRST: u16 = 20000;
    const BLOCKS: u16 = 2500;
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU16::new(rand::random::<u16>() % BLOCKS));
    for _ in 0..BLOCKS {
        let base = FIRST + (next.fetch_add(1, Ordering::Relaxed) % BLOCKS) * 4;
        let all_free = (base..base + 4).all(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free block of four UDP ports in 20000-29999 for SIPp's media");
}
