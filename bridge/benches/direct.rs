//! Packet in -> packet out on a two-party room's direct path (no mixer tick, no jitter buffer
//! of ours), per direction, with the legs the engine uses:
//!
//! - phone -> web: a G.711 RTP datagram into the phone's `RtpLeg`, decoded, Opus-encoded from
//!   8 kHz and written to a connected `WebRtcLeg` until its SRTP datagram is ready to send.
//! - web -> phone: an SRTP datagram from a browser-like str0m client into the `WebRtcLeg`,
//!   Opus-decoded to 8 kHz and sent by the phone's `RtpLeg` until its datagram is ready.
//!
//! p50/p99/max of the individual packets are printed; the target is p99 under 1 ms.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-webrtc cargo bench -p dialbridge-bridge -j2 --bench direct
//! -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{addr, percentiles, Pair};
use criterion::{criterion_group, criterion_main, Criterion};
use dialbridge_bridge::bypass::{Continuity, Reframer};
use dialbridge_bridge::g711::G711;
use dialbridge_bridge::opus_codec::{OpusConfig, OpusEncoder, MAX_PACKET};
use dialbridge_bridge::rtp_leg::{RtpLeg, RtpLegConfig, MAX_DATAGRAM};
use dialbridge_bridge::testing::Sine;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};
use str0m::Input;

const FRAME_8K: usize = 160;

fn rtp(seq: u16, ts: u32, payload: &[u8; FRAME_8K], out: &mut [u8; 12 + FRAME_8K]) {
    out[0] = 0x80;
    out[1] = 0;
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&0x5151_5151u32.to_be_bytes());
    out[12..].copy_from_slice(payload);
}

fn direct(c: &mut Criterion) {
    let mut pair = Pair::connect(Instant::now(), false);
    pair.leg.set_direct(true).unwrap_or_else(|e| panic!("{e}"));
    let phone_addr = addr("198.51.100.7:30000");
    let cfg = RtpLegConfig {
        rtcp_interval: Duration::from_secs(3600),
        ..RtpLegConfig::new(G711::Pcmu, 42, phone_addr)
    };
    let mut phone = RtpLeg::new(pair.now, SystemTime::now(), cfg);
    phone.set_forwarding(true);
    let mut g = c.benchmark_group("direct");

    // Phone -> web.
    let mut gen = Sine::new(440.0, 8000, 8000);
    let mut pcm = [0i16; FRAME_8K];
    let mut g711 = [0u8; FRAME_8K];
    let mut datagram = [0u8; 12 + FRAME_8K];
    let (mut source, mut frames) = (Continuity::default(), Reframer::default());
    let mut k = 0u32;
    let mut samples = Vec::new();
    g.bench_function("phone_to_web_packet", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                k = k.wrapping_add(1);
                gen.fill(&mut pcm);
                G711::Pcmu.encode(&pcm, &mut g711);
                rtp(k as u16, k.wrapping_mul(160), &g711, &mut datagram);
                pair.now += Duration::from_millis(20);
                let start = Instant::now();
                let _ = phone.handle_datagram(pair.now, phone_addr, &datagram);
                let mut out = 0;
                while let Some((meta, samples)) = phone.take_forward() {
                    if source
                        .admit(meta.ssrc, meta.timestamp, samples.len() as u32, 8000)
                        .is_some()
                    {
                        frames.push(samples);
                    }
                }
                while let Some(frame) = frames.pop() {
                    let _ = pair.leg.send_direct_pcm(pair.now, frame);
                }
                while let Some(t) = pair.leg.poll_transmit() {
                    out += t.contents.len();
                }
                let took = start.elapsed();
                assert!(out > 0, "an SRTP packet out");
                samples.push(took);
                total += took;
                let _ = pair.client.handle_input(Input::Timeout(pair.now));
                pair.pump(None);
                while phone.poll_event().is_some() {}
            }
            total
        })
    });
    percentiles("direct phone->web packet", &mut samples);

    // Web -> phone.
    let mut enc = OpusEncoder::new(OpusConfig {
        sample_rate: 48000,
        ..OpusConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let mut wide = Sine::new(1000.0, 48000, 8000);
    let pt = pair
        .client
        .codec_config()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt())
        .unwrap_or_else(|| panic!("opus pt"));
    let mut packet = [0u8; MAX_PACKET];
    let mut out = [0u8; MAX_DATAGRAM];
    let mut source = Continuity::default();
    let mut frames = Reframer::default();
    let mut i = 0u64;
    let mut samples = Vec::new();
    g.bench_function("web_to_phone_packet", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                // The client encrypts and paces outside the measured time.
                let n = enc
                    .encode(&wide.take(960), &mut packet)
                    .unwrap_or_else(|e| panic!("{e}"));
                if let Some(w) = pair.client.writer(pair.mid) {
                    let time = MediaTime::new(i * 960, Frequency::FORTY_EIGHT_KHZ);
                    let _ = w.write(pt, pair.now, time, &packet[..n]);
                }
                i += 1;
                pair.now += Duration::from_millis(20);
                let _ = pair.client.handle_input(Input::Timeout(pair.now));
                let mut held = Vec::new();
                pair.pump(Some(&mut held));
                for d in held {
                    let start = Instant::now();
                    let _ = pair
                        .leg
                        .handle_input(pair.now, pair.client_addr, pair.server, &d);
                    let mut sent = 0;
                    while let Some((meta, pcm)) = pair.leg.take_direct_pcm() {
                        let units = pcm.len() as u32 * 6;
                        if source
                            .admit(meta.ssrc, meta.timestamp, units, 48000)
                            .is_some()
                        {
                            frames.push(pcm);
                        }
                        while let Some(frame) = frames.pop() {
                            phone.send_audio(pair.now, frame);
                        }
                    }
                    while let Some(t) = phone.poll_transmit(&mut out) {
                        sent += t.len;
                    }
                    let took = start.elapsed();
                    if sent > 0 {
                        samples.push(took);
                        total += took;
                        done += 1;
                    }
                }
                pair.deliver_to_client();
            }
            total
        })
    });
    percentiles("direct web->phone packet", &mut samples);
    g.finish();
}

criterion_group!(benches, direct);
criterion_main!(benches);
