//! Media path costs per 20 ms frame.
//!
//! - `transcode/bare_libopus`: libopus encode + decode of one 8 kHz frame, nothing else: the
//!   floor any G.711 <-> Opus bridge pays.
//! - `transcode/bridged_call`: both directions of one phone <-> browser call for one frame:
//!   G.711 packet in -> jitter buffer -> decode -> Opus encode, and that Opus packet in ->
//!   jitter buffer -> Opus decode -> G.711 encode. Target: within 1.25x of the bare loop.
//! - `latency/*`: packet in -> packet out through one direction of a two-party call (jitter
//!   buffer wait excluded: the packet is played on the tick it arrives); p50/p99/max of the
//!   individual iterations are printed, the target is p99 under 1 ms.
//! - `opus/*`: encode per complexity and decode alone, at the 8 kHz API rate.
//! - `parts/*`: G.711 per frame and a jitter buffer insert + pop.
//! - `mixer/*`: one mixer tick (push every participant's frame, mix); throughput is per
//!   participant.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bridge cargo bench -p dialbridge-bridge -j1 --bench media
//! -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::percentiles;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dialbridge_bridge::g711::G711;
use dialbridge_bridge::jitter::{JitterBuffer, JitterConfig};
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

/// The bare libopus loop: encode one frame, decode the packet.
struct Bare {
    enc: OpusEncoder,
    dec: OpusDecoder,
    pkt: [u8; MAX_PACKET],
    pcm: [i16; FRAME_8K],
}

impl Bare {
    fn new(cfg: OpusConfig) -> Bare {
        Bare {
            enc: OpusEncoder::new(cfg).unwrap_or_else(|e| panic!("{e}")),
            dec: OpusDecoder::new(8000, 20).unwrap_or_else(|e| panic!("{e}")),
            pkt: [0; MAX_PACKET],
            pcm: [0; FRAME_8K],
        }
    }
    fn step(&mut self, frame: &[i16]) {
        let n = self
            .enc
            .encode(black_box(frame), &mut self.pkt)
            .unwrap_or(0);
        let _ = self.dec.decode(black_box(&self.pkt[..n]), &mut self.pcm);
        black_box(&self.pcm);
    }
}

/// Both directions of a bridged call for one 20 ms tick, in virtual time.
struct Bridged {
    up: PhoneToWeb,
    down: WebToPhone,
    t0: Instant,
    k: u32,
    pkt: [u8; MAX_PACKET],
    out: [u8; FRAME_8K],
}

impl Bridged {
    fn new(cfg: OpusConfig) -> Bridged {
        Bridged {
            up: PhoneToWeb::new(G711::Pcmu, cfg).unwrap_or_else(|e| panic!("{e}")),
            down: WebToPhone::new(G711::Pcmu).unwrap_or_else(|e| panic!("{e}")),
            t0: Instant::now(),
            k: 0,
            pkt: [0; MAX_PACKET],
            out: [0; FRAME_8K],
        }
    }
    fn step(&mut self, g711: &[u8; FRAME_8K]) {
        let k = self.k;
        let now = self.t0 + Duration::from_millis(k as u64 * 20);
        let phone = RtpMeta {
            seq: k as u16,
            timestamp: k.wrapping_mul(160),
            marker: k == 0,
            ssrc: 1,
        };
        self.up.insert(now, phone, black_box(g711));
        let (n, _) = self
            .up
            .tick(now, &mut self.pkt)
            .unwrap_or((0, FrameSource::Silence));
        let web = RtpMeta {
            seq: k as u16,
            timestamp: k.wrapping_mul(960),
            marker: k == 0,
            ssrc: 2,
        };
        self.down.insert(now, web, black_box(&self.pkt[..n]));
        self.down.tick(now, &mut self.out);
        black_box(&self.out);
        self.k = k.wrapping_add(1);
    }
}

/// The phone's frames as G.711 payloads, and as the PCM the bridge encodes (decoded G.711),
/// so the bare loop codes the very same audio.
fn phone_audio() -> (Vec<[u8; FRAME_8K]>, Vec<Vec<i16>>) {
    let g711: Vec<[u8; FRAME_8K]> = audio()
        .iter()
        .map(|f| {
            let mut p = [0u8; FRAME_8K];
            G711::Pcmu.encode(f, &mut p);
            p
        })
        .collect();
    let pcm = g711
        .iter()
        .map(|p| {
            let mut f = vec![0i16; FRAME_8K];
            G711::Pcmu.decode(p, &mut f);
            f
        })
        .collect();
    (g711, pcm)
}

fn transcode(c: &mut Criterion) {
    let (g711, pcm) = phone_audio();
    let mut g = c.benchmark_group("transcode");
    g.throughput(Throughput::Elements(1));

    let mut bare = Bare::new(OpusConfig::default());
    let mut i = 0usize;
    g.bench_function("bare_libopus", |b| {
        b.iter(|| {
            bare.step(&pcm[i % pcm.len()]);
            i += 1;
        })
    });

    let mut bridged = Bridged::new(OpusConfig::default());
    let mut i = 0usize;
    g.bench_function("bridged_call", |b| {
        b.iter(|| {
            bridged.step(&g711[i % g711.len()]);
            i += 1;
        })
    });

    // Alternating the two per frame exposes both to the same machine load; the ratio of
    // their summed times is printed (target: at most 1.25). At the mix's complexity (5) and
    // at the direct path's default for a phone's audio (1), where the codec's share is smaller.
    for complexity in [5, 1] {
        let cfg = OpusConfig {
            complexity,
            ..OpusConfig::default()
        };
        let (mut bare, mut bridged) = (Bare::new(cfg), Bridged::new(cfg));
        let (mut t_bare, mut t_bridged) = (Duration::ZERO, Duration::ZERO);
        let mut i = 0usize;
        g.bench_with_input(
            BenchmarkId::new("bridged_call_interleaved", complexity),
            &complexity,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // Alternate which goes first, so neither always meets a cold cache.
                        let mut run_bare = || {
                            let start = Instant::now();
                            bare.step(&pcm[i % pcm.len()]);
                            start.elapsed()
                        };
                        let mut run_bridged = || {
                            let start = Instant::now();
                            bridged.step(&g711[i % g711.len()]);
                            start.elapsed()
                        };
                        let (a, d) = if i & 1 == 0 {
                            let a = run_bare();
                            (a, run_bridged())
                        } else {
                            let d = run_bridged();
                            (run_bare(), d)
                        };
                        t_bare += a;
                        t_bridged += d;
                        total += d;
                        i += 1;
                    }
                    total
                })
            },
        );
        eprintln!(
            "complexity {complexity}: bridged/bare over {i} interleaved frames: {:.3} ({:?} vs {:?} per frame)",
            t_bridged.as_secs_f64() / t_bare.as_secs_f64().max(1e-12),
            t_bridged / (i.max(1) as u32),
            t_bare / (i.max(1) as u32)
        );
    }
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

fn latency(c: &mut Criterion) {
    let frames = audio();
    let law = G711::Pcmu;
    let g711: Vec<[u8; FRAME_8K]> = frames
        .iter()
        .map(|f| {
            let mut p = [0u8; FRAME_8K];
            law.encode(f, &mut p);
            p
        })
        .collect();
    let mut g = c.benchmark_group("latency");
    let t0 = Instant::now();

    let mut up = PhoneToWeb::new(law, OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut pkt = [0u8; MAX_PACKET];
    let mut opus_packets = Vec::new();
    let mut k = 0u32;
    let mut samples = Vec::with_capacity(1 << 20);
    g.bench_function("phone_to_web_packet", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let now = t0 + Duration::from_millis(k as u64 * 20);
                let meta = RtpMeta {
                    seq: k as u16,
                    timestamp: k.wrapping_mul(160),
                    marker: k == 0,
                    ssrc: 1,
                };
                let start = Instant::now();
                up.insert(now, meta, &g711[k as usize % g711.len()]);
                let (n, _) = up.tick(now, &mut pkt).unwrap_or((0, FrameSource::Silence));
                black_box(&pkt[..n]);
                let d = start.elapsed();
                total += d;
                if samples.len() < samples.capacity() {
                    samples.push(d);
                }
                if opus_packets.len() < 50 {
                    opus_packets.push(pkt[..n].to_vec());
                }
                k = k.wrapping_add(1);
            }
            total
        })
    });
    percentiles("phone_to_web_packet", &mut samples);

    let mut down = WebToPhone::new(law).unwrap_or_else(|e| panic!("{e}"));
    let mut out = [0u8; FRAME_8K];
    let mut k = 0u32;
    samples.clear();
    g.bench_function("web_to_phone_packet", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let now = t0 + Duration::from_millis(k as u64 * 20);
                let meta = RtpMeta {
                    seq: k as u16,
                    timestamp: k.wrapping_mul(960),
                    marker: k == 0,
                    ssrc: 2,
                };
                let p = &opus_packets[k as usize % opus_packets.len()];
                let start = Instant::now();
                down.insert(now, meta, p);
                down.tick(now, &mut out);
                black_box(&out);
                let d = start.elapsed();
                total += d;
                if samples.len() < samples.capacity() {
                    samples.push(d);
                }
                k = k.wrapping_add(1);
            }
            total
        })
    });
    percentiles("web_to_phone_packet", &mut samples);
    g.finish();
}

/// What the encoder complexity costs (the bridge defaults to 5), and decode alone.
fn opus_parts(c: &mut Criterion) {
    let frames = audio();
    let mut g = c.benchmark_group("opus");
    let mut pkt = [0u8; MAX_PACKET];
    for complexity in [0, 1, 2, 3, 5, 8, 10] {
        let cfg = OpusConfig {
            complexity,
            ..OpusConfig::default()
        };
        let mut enc = OpusEncoder::new(cfg).unwrap_or_else(|e| panic!("{e}"));
        let mut i = 0usize;
        g.bench_with_input(
            BenchmarkId::new("encode_8k", complexity),
            &complexity,
            |b, _| {
                b.iter(|| {
                    let f = &frames[i % frames.len()];
                    i += 1;
                    black_box(enc.encode(black_box(f), &mut pkt).unwrap_or(0));
                })
            },
        );
    }
    let mut enc = OpusEncoder::new(OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let n = enc.encode(f, &mut pkt).unwrap_or(0);
            pkt[..n].to_vec()
        })
        .collect();
    let mut dec = OpusDecoder::new(8000, 20).unwrap_or_else(|e| panic!("{e}"));
    let mut pcm = [0i16; FRAME_8K];
    let mut i = 0usize;
    g.bench_function("decode_8k", |b| {
        b.iter(|| {
            let p = &packets[i % packets.len()];
            i += 1;
            black_box(dec.decode(black_box(p), &mut pcm).unwrap_or(0));
        })
    });
    g.finish();
}

/// The bridge's own per-frame work next to the codec: G.711 both ways and a jitter buffer
/// insert + pop.
fn parts(c: &mut Criterion) {
    let (g711, pcm) = phone_audio();
    let mut g = c.benchmark_group("parts");
    let mut out = [0u8; FRAME_8K];
    let mut i = 0usize;
    g.bench_function("g711_encode_frame", |b| {
        b.iter(|| {
            G711::Pcmu.encode(black_box(&pcm[i % pcm.len()]), &mut out);
            i += 1;
            black_box(&out);
        })
    });
    let mut frame = [0i16; FRAME_8K];
    g.bench_function("g711_decode_frame", |b| {
        b.iter(|| {
            G711::Pcmu.decode(black_box(&g711[i % g711.len()]), &mut frame);
            i += 1;
            black_box(&frame);
        })
    });
    let mut jb = JitterBuffer::new(JitterConfig::new(8000));
    let t0 = Instant::now();
    let mut k = 0u32;
    g.bench_function("jitter_insert_pop", |b| {
        b.iter(|| {
            let now = t0 + Duration::from_millis(k as u64 * 20);
            jb.insert(
                now,
                k as u16,
                k.wrapping_mul(160),
                false,
                1,
                &g711[k as usize % g711.len()],
            );
            black_box(jb.pop(now));
            k = k.wrapping_add(1);
        })
    });
    g.finish();
}

criterion_group!(benches, transcode, latency, mixer, opus_parts, parts);
criterion_main!(benches);
