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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use dialbridge_bridge::bypass::{Continuity, Reframer};
use dialbridge_bridge::g711::G711;
use dialbridge_bridge::opus_codec::{OpusConfig, OpusEncoder, MAX_PACKET};
use dialbridge_bridge::rtp_leg::{RtpLeg, RtpLegConfig, MAX_DATAGRAM};
use dialbridge_bridge::testing::Sine;
use dialbridge_bridge::webrtc::{WebRtcLeg, WebRtcLegConfig};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

const FRAME_8K: usize = 160;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A browser-like client connected to a leg in memory.
struct Pair {
    now: Instant,
    client: Rtc,
    mid: Mid,
    leg: WebRtcLeg,
    client_addr: SocketAddr,
    server: SocketAddr,
}

impl Pair {
    fn connect() -> Pair {
        let now = Instant::now();
        let (client_addr, server) = (addr("127.0.0.1:5000"), addr("127.0.0.1:10000"));
        let mut client = Rtc::builder()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .clear_codecs()
            .enable_opus(true, false)
            .build(now);
        let candidate = Candidate::host(client_addr, "udp").unwrap_or_else(|e| panic!("{e}"));
        client.add_local_candidate(candidate);
        let mut change = client.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = change.apply().unwrap_or_else(|| panic!("no offer"));
        let cfg = WebRtcLegConfig::new(server, 48000);
        let (mut leg, answer) =
            WebRtcLeg::accept(now, &offer.to_sdp_string(), &cfg).unwrap_or_else(|e| panic!("{e}"));
        let answer = SdpAnswer::from_sdp_string(&answer).unwrap_or_else(|e| panic!("{e}"));
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .unwrap_or_else(|e| panic!("{e}"));
        leg.set_direct(true).unwrap_or_else(|e| panic!("{e}"));
        let mut pair = Pair {
            now,
            client,
            mid,
            leg,
            client_addr,
            server,
        };
        for _ in 0..500 {
            if pair.leg.is_connected() {
                return pair;
            }
            pair.step(Duration::from_millis(10));
        }
        panic!("no connection");
    }

    /// Client datagrams go to the leg (into `hold` instead, when given), leg datagrams to
    /// the client.
    fn pump(&mut self, hold: Option<&mut Vec<Vec<u8>>>) {
        let mut hold = hold;
        loop {
            match self.client.poll_output() {
                Ok(Output::Timeout(_)) => break,
                Ok(Output::Transmit(t)) => match hold.as_mut() {
                    Some(h) => h.push(t.contents.to_vec()),
                    None => {
                        let _ = self.leg.handle_input(
                            self.now,
                            self.client_addr,
                            self.server,
                            &t.contents,
                        );
                    }
                },
                Ok(Output::Event(Event::Connected)) | Ok(Output::Event(_)) => {}
                Err(e) => panic!("client: {e}"),
            }
        }
        self.deliver_to_client();
    }

    fn deliver_to_client(&mut self) {
        while let Some(t) = self.leg.poll_transmit() {
            let r = Receive::new(Protocol::Udp, self.server, self.client_addr, &t.contents)
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = self.client.handle_input(Input::Receive(self.now, r));
        }
    }

    fn step(&mut self, by: Duration) {
        self.pump(None);
        self.now += by;
        let _ = self.client.handle_input(Input::Timeout(self.now));
        if self.leg.poll_timeout() <= self.now {
            self.leg.handle_timeout(self.now);
        }
        self.pump(None);
    }
}

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

fn rtp(seq: u16, ts: u32, payload: &[u8; FRAME_8K], out: &mut [u8; 12 + FRAME_8K]) {
    out[0] = 0x80;
    out[1] = 0;
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&0x5151_5151u32.to_be_bytes());
    out[12..].copy_from_slice(payload);
}

fn direct(c: &mut Criterion) {
    let mut pair = Pair::connect();
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
