//! Media path costs per 20 ms frame.
//!
//! - `transcode/bare_libopus`: libopus encode + decode of one 8 kHz frame, nothing else: the
//!   floor any G.711 <-> Opus bridge pays.
//! - `transcode/bridged_call`: both directions of one phone <-> browser call for one frame:
//!   G.711 packet in -> jitter buffer -> decode -> Opus encode, and that Opus packet in ->
//!   jitter buffer -> Opus decode -> G.711 encode. Target: within 1.25x of the bare loop.
//! - `mixer/*`: one mixer tick (push every participant's frame, mix); throughput is per
//!   participant.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bridge cargo bench -p dialbridge-bridge -j1 --bench media
//! -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dialbridge_bridge::g711::G711;
use dialbridge_bridge::mixer::{Mixer, ParticipantId};
use dialbridge_bridge::opus_codec::{OpusConfig, OpusDecoder, OpusEncoder, MAX_PACKET};
use dialbridge_bridge::testing::Sine;
use dialbridge_bridge::transcode::{FrameSource, PhoneToWeb, RtpMeta, WebToPhone, FRAME_8K};

/// One second of a voice-band test signal (two tones), as 50 frames.
fn audio() -> Vec<Vec<i16>> {
    let mut a = Sine::new(440.0, 8000, 6000);
    let mut b = Sine::new(1230.0, 8000, 3000);
    (0..50)
        .map(|_| {
            a.take(FRAME_8K)
                .iter()
                .zip(b.take(FRAME_8K))
                .map(|(x, y)| x + y)
                .collect()
        })
        .collect()
}

fn transcode(c: &mut Criterion) {
    let frames = audio();
    let mut g = c.benchmark_group("transcode");
    g.throughput(Throughput::Elements(1));

    let cfg = OpusConfig::default();
    let mut enc = OpusEncoder::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut dec = OpusDecoder::new(8000, 20).unwrap_or_else(|e| panic!("{e}"));
    let mut pkt = [0u8; MAX_PACKET];
    let mut pcm = [0i16; FRAME_8K];
    let mut i = 0usize;
    g.bench_function("bare_libopus", |bench| {
        bench.iter(|| {
            let f = &frames[i % frames.len()];
            i += 1;
            let n = enc.encode(black_box(f), &mut pkt).unwrap_or(0);
            let _ = dec.decode(black_box(&pkt[..n]), &mut pcm);
            black_box(&pcm);
        })
    });

    let law = G711::Pcmu;
    let g711: Vec<[u8; FRAME_8K]> = frames
        .iter()
        .map(|f| {
            let mut p = [0u8; FRAME_8K];
            law.encode(f, &mut p);
            p
        })
        .collect();
    let mut up = PhoneToWeb::new(law, cfg).unwrap_or_else(|e| panic!("{e}"));
    let mut down = WebToPhone::new(law).unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    let mut k = 0u32;
    let mut out = [0u8; FRAME_8K];
    g.bench_function("bridged_call", |bench| {
        bench.iter(|| {
            // Virtual time: one 20 ms tick per iteration.
            let now = t0 + Duration::from_millis(k as u64 * 20);
            let seq = k as u16;
            let phone = RtpMeta {
                seq,
                timestamp: k.wrapping_mul(160),
                marker: k == 0,
                ssrc: 1,
            };
            up.insert(now, phone, black_box(&g711[k as usize % g711.len()]));
            let (n, _) = up.tick(now, &mut pkt).unwrap_or((0, FrameSource::Silence));
            let web = RtpMeta {
                seq,
                timestamp: k.wrapping_mul(960),
                marker: k == 0,
                ssrc: 2,
            };
            down.insert(now, web, black_box(&pkt[..n]));
            down.tick(now, &mut out);
            black_box(&out);
            k = k.wrapping_add(1);
        })
    });
    g.finish();
}

fn mixer(c: &mut Criterion) {
    let mut g = c.benchmark_group("mixer");
    for (rate, frame) in [("8k", 160usize), ("48k", 960)] {
        for n in [3u64, 10, 50] {
            let mut m = Mixer::new(frame);
            for i in 0..n {
                let _ = m.add(ParticipantId(i));
            }
            let input: Vec<Vec<i16>> = (0..n)
                .map(|i| Sine::new(200.0 + 50.0 * i as f64, 8000, 3000).take(frame))
                .collect();
            g.throughput(Throughput::Elements(n));
            g.bench_with_input(BenchmarkId::new(rate, n), &n, |bench, &n| {
                bench.iter(|| {
                    for i in 0..n {
                        let _ = m.push(ParticipantId(i), black_box(&input[i as usize]));
                    }
                    m.mix();
                    black_box(m.output(ParticipantId(0)));
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, transcode, mixer);
criterion_main!(benches);
