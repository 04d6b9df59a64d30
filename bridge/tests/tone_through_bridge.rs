//! A 440 Hz tone from a phone (PCMU RTP with 5 % loss and reordering) crosses the bridge to
//! Opus and back to G.711, in virtual time; the tone must be heard in every 100 ms window.

use std::time::{Duration, Instant};

use dialbridge_bridge::g711::G711;
use dialbridge_bridge::opus_codec::{OpusConfig, MAX_PACKET};
use dialbridge_bridge::testing::{rms, tone_ratio_blocks, Sine};
use dialbridge_bridge::transcode::{FrameSource, PhoneToWeb, RtpMeta, WebToPhone, FRAME_8K};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Debug)]
struct Outcome {
    windows_checked: usize,
    lost: usize,
    reordered: usize,
    longest_loss_burst: usize,
    sources: Vec<FrameSource>,
}

fn run(seed: u64, law: G711, seconds: u64) -> (Vec<i16>, Outcome) {
    let t0 = Instant::now();
    let mut rng = Lcg(seed);
    let mut gen = Sine::new(440.0, 8000, 12000);
    let packets = (seconds * 50) as u16;

    // The phone's packets with their arrival times after the network.
    let mut net = Vec::new();
    let (mut lost, mut reordered, mut burst, mut longest) = (0, 0, 0, 0);
    for i in 0..packets {
        let mut payload = [0u8; FRAME_8K];
        law.encode(&gen.take(FRAME_8K), &mut payload);
        if rng.chance(5) {
            lost += 1;
            burst += 1;
            longest = usize::max(longest, burst);
            continue;
        }
        burst = 0;
        let mut arrival = i as u64 * 20 + rng.next() % 8;
        if rng.chance(5) {
            // Overtaken by the next packet or two.
            arrival += 25 + rng.next() % 20;
            reordered += 1;
        }
        let seq = 65000u16.wrapping_add(i);
        let ts = 0xFFFF_0000u32.wrapping_add(i as u32 * 160);
        net.push((arrival, seq, ts, payload));
    }
    net.sort_by_key(|p| p.0);

    let mut up = PhoneToWeb::new(law, OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut down = WebToPhone::new(law).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let mut sources = Vec::new();
    let mut opus_pkt = [0u8; MAX_PACKET];
    let mut next = 0;
    let mut tick = 0u16;
    while (tick as u64) < packets as u64 + 20 {
        let now_ms = 7 + tick as u64 * 20;
        let now = t0 + Duration::from_millis(now_ms);
        while next < net.len() && net[next].0 <= now_ms {
            let (ms, seq, ts, payload) = &net[next];
            let meta = RtpMeta {
                seq: *seq,
                timestamp: *ts,
                marker: *seq == 65000,
                ssrc: 0xCAFE,
            };
            up.insert(t0 + Duration::from_millis(*ms), meta, payload);
            next += 1;
        }
        let (n, src) = up
            .tick(now, &mut opus_pkt)
            .unwrap_or_else(|e| panic!("{e}"));
        sources.push(src);
        // The Opus hop (to the browser and back) is clean; its clock is 48 kHz.
        let meta = RtpMeta {
            seq: tick,
            timestamp: tick as u32 * 960,
            marker: tick == 0,
            ssrc: 0xBEEF,
        };
        down.insert(now, meta, &opus_pkt[..n]);
        let mut g711 = [0u8; FRAME_8K];
        down.tick(now, &mut g711);
        let mut pcm = [0i16; FRAME_8K];
        law.decode(&g711, &mut pcm);
        out.extend_from_slice(&pcm);
        tick += 1;
    }
    (
        out,
        Outcome {
            windows_checked: 0,
            lost,
            reordered,
            longest_loss_burst: longest,
            sources,
        },
    )
}

fn check(seed: u64, law: G711) -> Outcome {
    let (out, mut o) = run(seed, law, 10);
    assert!(
        o.lost >= 15 && o.reordered >= 15,
        "the network did harm: {o:?}"
    );
    assert!(
        o.longest_loss_burst < 3,
        "pick a seed without bursts longer than the 60 ms fade: {o:?}"
    );
    // Skip the start-up (buffering, codec warm-up) and the drained tail.
    let start = 300 * 8;
    let end = out.len() - 25 * FRAME_8K;
    for (w, window) in out[start..end].chunks_exact(800).enumerate() {
        // 20 ms detector blocks: concealment shifts the tone's phase between frames.
        let hear = tone_ratio_blocks(window, 440.0, 8000, FRAME_8K);
        let other = tone_ratio_blocks(window, 1000.0, 8000, FRAME_8K);
        assert!(
            hear > 0.8 && other < 0.02 && rms(window) > 3000.0,
            "window {w} ({} ms): 440 Hz {hear:.3}, 1 kHz {other:.3}, rms {:.0}",
            300 + w * 100,
            rms(window)
        );
        o.windows_checked += 1;
    }
    // No 20 ms frame in that span is silent: concealment covered every loss.
    for (f, frame) in out[start..end].chunks_exact(FRAME_8K).enumerate() {
        assert!(rms(frame) > 1000.0, "frame {f} silent");
    }
    assert!(o.windows_checked >= 90);
    assert!(o.sources.contains(&FrameSource::Concealed));
    o
}

#[test]
fn pcmu_tone_survives_loss_reordering_and_opus_round_trip() {
    let o = check(7, G711::Pcmu);
    assert!(
        o.sources
            .iter()
            .filter(|s| **s == FrameSource::Concealed)
            .count()
            >= 15
    );
}

#[test]
fn pcma_tone_survives_loss_reordering_and_opus_round_trip() {
    check(11, G711::Pcma);
}
