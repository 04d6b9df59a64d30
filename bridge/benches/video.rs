//! Forwarding one video packet between two browsers, with the legs the engine uses: an SRTP
//! datagram of A's camera (a 1000-byte VP8 packet) into A's `WebRtcLeg`, taken out as it is,
//! written into B's slot, until B's SRTP datagram is ready to send. The same for the packet
//! sent on to two more receivers, as in a call of four.
//!
//! p50/p99/max of the individual packets are printed.
//!
//! Run: `cargo bench -p dialbridge-bridge -j2 --bench video -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::time::{Duration, Instant};

use common::{percentiles, Pair};
use criterion::{criterion_group, criterion_main, Criterion};
use str0m::format::Codec;
use str0m::media::MediaTime;
use str0m::Input;

/// A VP8 keyframe's first bytes and a body: the size of a typical packet of a 30 fps camera.
fn vp8_frame(i: u64) -> Vec<u8> {
    let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    frame.resize(1000, i as u8);
    frame
}

/// Brings `pair` to `now`: its client's and its leg's timers, what they send each other.
fn catch_up(pair: &mut Pair, now: Instant) {
    pair.now = now;
    let _ = pair.client.handle_input(Input::Timeout(now));
    if pair.leg.poll_timeout() <= now {
        pair.leg.handle_timeout(now);
    }
    pair.pump(None);
}

fn forward(c: &mut Criterion, receivers: usize) {
    let start = Instant::now();
    let mut sender = Pair::connect(start, true);
    let mut to: Vec<Pair> = (0..receivers).map(|_| Pair::connect(start, true)).collect();
    let now = to.iter().map(|p| p.now).fold(sender.now, Instant::max);
    let camera = sender
        .video_mid
        .unwrap_or_else(|| panic!("no video m-line"));
    let pt = sender
        .client
        .codec_config()
        .find(|p| p.spec().codec == Codec::Vp8)
        .map(|p| p.pt())
        .unwrap_or_else(|| panic!("no VP8"));
    catch_up(&mut sender, now);
    let mut i = 0u64;
    let mut samples = Vec::new();
    let name = format!("video_packet_to_{receivers}");
    c.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                // The camera's client packetizes and encrypts outside the measured time.
                let now = sender.now + Duration::from_millis(33);
                if let Some(w) = sender.client.writer(camera) {
                    let _ = w.write(pt, now, MediaTime::from_90khz(i * 3000), vp8_frame(i));
                }
                i += 1;
                let mut held = Vec::new();
                let _ = sender.client.handle_input(Input::Timeout(now));
                sender.pump(Some(&mut held));
                for d in held {
                    let begin = Instant::now();
                    let _ = sender
                        .leg
                        .handle_input(now, sender.client_addr, sender.server, &d);
                    let mut sent = 0;
                    while let Some(packet) = sender.leg.take_video() {
                        for r in to.iter_mut() {
                            r.leg.forward_video(now, 0, 1, &packet);
                            while let Some(t) = r.leg.poll_transmit() {
                                sent += t.contents.len();
                            }
                        }
                    }
                    let took = begin.elapsed();
                    if sent > 0 {
                        samples.push(took);
                        total += took;
                        done += 1;
                    }
                }
                catch_up(&mut sender, now);
                // What the timers brought (RTCP, nothing of the camera) is not forwarded.
                while sender.leg.take_video().is_some() {}
                for r in to.iter_mut() {
                    catch_up(r, now);
                }
            }
            total
        })
    });
    percentiles(&format!("video packet to {receivers}"), &mut samples);
}

fn video(c: &mut Criterion) {
    forward(c, 1);
    forward(c, 3);
}

criterion_group!(benches, video);
criterion_main!(benches);
