//! The per-packet hot path allocates nothing once a call is up: a counting allocator watches a
//! steady-state phone <-> browser call (RTP leg in and out, jitter buffers, G.711, Opus), and a
//! two-party room's direct path between two phone legs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use dialbridge_bridge::bypass::{Continuity, Reframer};
use dialbridge_bridge::g711::G711;
use dialbridge_bridge::opus_codec::{OpusConfig, MAX_PACKET};
use dialbridge_bridge::rtp_leg::{RtpLeg, RtpLegConfig, MAX_DATAGRAM};
use dialbridge_bridge::testing::Sine;
use dialbridge_bridge::transcode::{FrameSource, PhoneToWeb, RtpMeta, WebToPhone, FRAME_8K};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static WATCH: Cell<bool> = const { Cell::new(false) };
    /// Allocations seen on this thread while watching (tests run on threads of their own).
    static MINE: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if WATCH.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        MINE.with(|m| m.set(m.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rtp(seq: u16, ts: u32, payload: &[u8; FRAME_8K], out: &mut [u8; 12 + FRAME_8K]) {
    out[0] = 0x80;
    out[1] = 0; // PCMU
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&0x5151_5151u32.to_be_bytes());
    out[12..].copy_from_slice(payload);
}

#[test]
fn steady_state_call_allocates_nothing_per_packet() {
    let t0 = Instant::now();
    let phone: SocketAddr = "198.51.100.7:30000"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = RtpLegConfig {
        rtcp_interval: Duration::from_secs(3600),
        ..RtpLegConfig::new(G711::Pcmu, 42, phone)
    };
    let mut leg = RtpLeg::new(t0, SystemTime::now(), cfg);
    let mut up =
        PhoneToWeb::new(G711::Pcmu, OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut down = WebToPhone::new(G711::Pcmu).unwrap_or_else(|e| panic!("{e}"));
    let mut gen = Sine::new(440.0, 8000, 8000);
    let mut pcm = [0i16; FRAME_8K];
    let mut g711 = [0u8; FRAME_8K];
    let mut datagram = [0u8; 12 + FRAME_8K];
    let mut opus = [0u8; MAX_PACKET];
    let mut out = [0u8; MAX_DATAGRAM];
    let mut sent = 0;

    let mut frame = |k: u32, sent: &mut usize| {
        let now = t0 + Duration::from_millis(k as u64 * 20);
        gen.fill(&mut pcm);
        G711::Pcmu.encode(&pcm, &mut g711);
        rtp(k as u16, k * 160, &g711, &mut datagram);
        // Phone -> leg -> decoded frame -> Opus (the browser side).
        let _ = leg.handle_datagram(now, phone, &datagram);
        let (frame, _) = leg.tick(now);
        let frame = *frame;
        let meta = RtpMeta {
            seq: k as u16,
            timestamp: k * 160,
            marker: false,
            ssrc: 9,
        };
        up.insert(now, meta, &g711);
        let (n, _) = up.tick(now, &mut opus).unwrap_or((0, FrameSource::Silence));
        // Browser -> Opus -> G.711 -> leg -> datagram to the phone.
        let meta = RtpMeta {
            seq: k as u16,
            timestamp: k * 960,
            marker: false,
            ssrc: 10,
        };
        down.insert(now, meta, &opus[..n]);
        let mut to_phone = [0u8; FRAME_8K];
        down.tick(now, &mut to_phone);
        leg.send_audio(now, &frame);
        leg.handle_timeout(now);
        while let Some(t) = leg.poll_transmit(&mut out) {
            *sent += t.len;
        }
        while leg.poll_event().is_some() {}
    };

    for k in 0..50 {
        frame(k, &mut sent);
    }
    WATCH.with(|w| w.set(true));
    for k in 50..300 {
        frame(k, &mut sent);
    }
    WATCH.with(|w| w.set(false));
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on the hot path"
    );
    assert_eq!(
        sent,
        300 * (12 + FRAME_8K),
        "every tick sent a G.711 packet"
    );
    // The counter works: an allocation while watching is seen.
    WATCH.with(|w| w.set(true));
    let v = std::hint::black_box(vec![1u8; 10]);
    WATCH.with(|w| w.set(false));
    assert_eq!(v.len(), 10);
    assert_eq!(MINE.with(Cell::get), 1);
}

#[test]
fn direct_path_between_two_phone_legs_allocates_nothing_per_packet() {
    let t0 = Instant::now();
    let addr = |s: &str| -> SocketAddr { s.parse().unwrap_or_else(|e| panic!("{e}")) };
    let (phone_a, phone_b) = (addr("198.51.100.7:30000"), addr("198.51.100.8:30000"));
    let leg = |ssrc: u32, remote: SocketAddr| {
        let cfg = RtpLegConfig {
            rtcp_interval: Duration::from_secs(3600),
            ..RtpLegConfig::new(G711::Pcmu, ssrc, remote)
        };
        RtpLeg::new(t0, SystemTime::now(), cfg)
    };
    let (mut a, mut b) = (leg(1, phone_a), leg(2, phone_b));
    a.set_forwarding(true);
    let mut source = Continuity::default();
    let mut frames = Reframer::default();
    let mut gen = Sine::new(440.0, 8000, 8000);
    let mut pcm = [0i16; FRAME_8K];
    let mut g711 = [0u8; FRAME_8K];
    let mut datagram = [0u8; 12 + FRAME_8K];
    let mut out = [0u8; MAX_DATAGRAM];
    let mut sent = 0;
    let mut packet = |k: u32, sent: &mut usize| {
        let now = t0 + Duration::from_millis(k as u64 * 20);
        gen.fill(&mut pcm);
        G711::Pcmu.encode(&pcm, &mut g711);
        // Every tenth packet is lost.
        if k % 10 == 9 {
            return;
        }
        rtp(k as u16, k * 160, &g711, &mut datagram);
        let _ = a.handle_datagram(now, phone_a, &datagram);
        while let Some((meta, samples)) = a.take_forward() {
            let Some(gap) = source.admit(meta.ssrc, meta.timestamp, samples.len() as u32, 8000)
            else {
                continue;
            };
            if gap > 0 {
                frames.clear();
                b.skip_frames(gap / FRAME_8K as u32);
            }
            frames.push(samples);
            while let Some(frame) = frames.pop() {
                b.send_audio(now, frame);
            }
        }
        while let Some(t) = b.poll_transmit(&mut out) {
            *sent += t.len;
        }
        while a.poll_event().is_some() {}
    };
    for k in 0..50 {
        packet(k, &mut sent);
    }
    MINE.with(|m| m.set(0));
    WATCH.with(|w| w.set(true));
    for k in 50..300 {
        packet(k, &mut sent);
    }
    WATCH.with(|w| w.set(false));
    assert_eq!(MINE.with(Cell::get), 0, "allocations on the direct path");
    assert_eq!(sent, 270 * (12 + FRAME_8K), "one packet out per packet in");
}
