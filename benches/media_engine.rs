//! Packet in -> packet out through the media engine's own code for a two-party room (the direct
//! path, no mixer tick): phone A's RTP datagram goes over loopback to its leg's socket, the
//! shard is woken by the socket's readiness as its loop is, reads it, transcodes it and sends
//! it to phone B, whose socket receives it. Loopback send and receive, the reactor wake and the
//! engine's work are all inside the measured time; no jitter buffer is in the path (the
//! receiver's own absorbs network jitter). p50/p99/max of the individual packets are printed;
//! the target is p99 under 1 ms.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-webrtc cargo bench -j2 --bench media_engine -- --warm-up-time 1 --measurement-time 3`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dialbridge::runtime::media::bench::TwoPhones;

fn percentiles(name: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    if samples.is_empty() {
        return;
    }
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{name}: {} packets, p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn direct_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let _entered = runtime.enter();
    let mut g = c.benchmark_group("engine");
    // The same packet with 250 more two-party rooms (500 phone legs) idle on the shard: a wake
    // must cost the leg that has data, not every leg.
    for (name, idle) in [
        ("two_party_phone_to_phone_packet", 0),
        ("two_party_phone_to_phone_packet_250_rooms_on_shard", 250),
    ] {
        one_room(&runtime, &mut g, name, idle);
    }
    g.finish();
}

fn one_room(
    runtime: &tokio::runtime::Runtime,
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    idle_rooms: usize,
) {
    let mut room = TwoPhones::new(false, idle_rooms).unwrap_or_else(|e| panic!("{e}"));
    assert!(room.is_direct());
    let mut samples = Vec::new();
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                runtime
                    .block_on(room.phone_a_sends())
                    .unwrap_or_else(|e| panic!("{e}"));
                room.phone_b_receives().unwrap_or_else(|e| panic!("{e}"));
                let took = start.elapsed();
                samples.push(took);
                total += took;
            }
            total
        })
    });
    percentiles(name, &mut samples);
}

criterion_group!(benches, direct_path);
criterion_main!(benches);
