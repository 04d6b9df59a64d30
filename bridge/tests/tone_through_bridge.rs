//! A 440 Hz tone from a phone (G.711 RTP with 5 % loss and reordering) crosses the bridge to
//! Opus, in virtual time; the tone must be heard in every 100 ms window: back on the phone side
//! after an Opus round trip, and on the browser side at 48 kHz through the real RTP leg.

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

/// The phone side through the real RTP leg (datagrams with 5 % loss and reordering, parsed,
/// latched, buffered, concealed), encoded to Opus, and decoded at 48 kHz as a browser hears it.
#[test]
fn rtp_leg_to_browser_at_48k_hears_the_tone_throughout() {
    use dialbridge_bridge::jitter::JitterConfig;
    use dialbridge_bridge::opus_codec::{OpusEncoder, OPUS_RTP_CLOCK};
    use dialbridge_bridge::rtp_leg::{RtpLeg, RtpLegConfig};
    use dialbridge_bridge::transcode::OpusInbound;
    use std::net::SocketAddr;
    use std::time::SystemTime;

    let t0 = Instant::now();
    let phone: SocketAddr = "198.51.100.20:40000"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = RtpLegConfig::new(G711::Pcmu, 77, "192.0.2.9:40000".parse().unwrap_or(phone));
    let mut leg = RtpLeg::new(t0, SystemTime::now(), cfg);
    let mut enc = OpusEncoder::new(OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut browser = OpusInbound::with_rate(48000, JitterConfig::new(OPUS_RTP_CLOCK))
        .unwrap_or_else(|e| panic!("{e}"));

    let mut rng = Lcg(23);
    let mut gen = Sine::new(440.0, 8000, 12000);
    let mut net: Vec<(u64, Vec<u8>)> = Vec::new();
    let (mut lost, mut burst, mut longest) = (0, 0, 0);
    for i in 0..500u32 {
        let mut payload = [0u8; FRAME_8K];
        G711::Pcmu.encode(&gen.take(FRAME_8K), &mut payload);
        if rng.chance(5) {
            lost += 1;
            burst += 1;
            longest = usize::max(longest, burst);
            continue;
        }
        burst = 0;
        let mut arrival = i as u64 * 20 + rng.next() % 8;
        if rng.chance(5) {
            arrival += 25 + rng.next() % 20;
        }
        let seq = (30_000 + i) as u16;
        let mut d = vec![0x80, if i == 0 { 0x80 } else { 0 }];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&(i * 160).to_be_bytes());
        d.extend_from_slice(&0xFACEu32.to_be_bytes());
        d.extend_from_slice(&payload);
        net.push((arrival, d));
    }
    net.sort_by_key(|p| p.0);
    assert!(
        lost >= 15 && longest < 3,
        "lost {lost}, longest burst {longest}"
    );

    let mut heard = Vec::new();
    let mut next = 0;
    let mut opus = [0u8; MAX_PACKET];
    for tick in 0..520u32 {
        let now_ms = 3 + tick as u64 * 20;
        let now = t0 + Duration::from_millis(now_ms);
        while next < net.len() && net[next].0 <= now_ms {
            let at = t0 + Duration::from_millis(net[next].0);
            assert_eq!(leg.handle_datagram(at, phone, &net[next].1), Ok(()));
            next += 1;
        }
        let (pcm, _) = leg.tick(now);
        let n = enc.encode(pcm, &mut opus).unwrap_or_else(|e| panic!("{e}"));
        let meta = RtpMeta {
            seq: tick as u16,
            timestamp: tick * 960,
            marker: tick == 0,
            ssrc: 5,
        };
        browser.insert(now, meta, &opus[..n]);
        heard.extend_from_slice(browser.tick(now).0);
    }
    let s = leg.inbound().jitter_stats();
    assert_eq!(s.lost, lost as u64, "{s:?}");
    assert!(leg.inbound().decode_stats().concealed >= lost as u64);
    // 48 kHz: 4800 samples per 100 ms window, 960 per 20 ms detector block.
    let start = 300 * 48;
    let end = heard.len() - 25 * 960;
    let mut windows = 0;
    for (w, window) in heard[start..end].chunks_exact(4800).enumerate() {
        let hear = tone_ratio_blocks(window, 440.0, 48000, 960);
        let other = tone_ratio_blocks(window, 1000.0, 48000, 960);
        assert!(
            hear > 0.8 && other < 0.02 && rms(window) > 3000.0,
            "window {w}: 440 Hz {hear:.3}, 1 kHz {other:.3}, rms {:.0}",
            rms(window)
        );
        windows += 1;
    }
    assert!(windows >= 90);
}
