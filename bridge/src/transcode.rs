//! Per-leg audio paths between RTP payloads and 20 ms PCM frames, and the two directions of a
//! phone <-> browser call built from them.
//!
//! Inbound: jitter buffer -> decode -> concealment, one PCM frame per tick. Outbound: PCM ->
//! encode. All PCM here is 8 kHz (the phone's rate; Opus runs at its 8 kHz API rate), so a
//! two-party call needs no mixer and no resampler: [`PhoneToWeb`] and [`WebToPhone`].

use std::time::Instant;

use crate::g711::G711;
use crate::jitter::{Inserted, JitterBuffer, JitterConfig, JitterStats, Playout};
use crate::opus_codec::{OpusConfig, OpusDecoder, OpusEncoder, OpusError, OPUS_RTP_CLOCK};
use crate::plc::Concealer;

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_8K: usize = 160;

/// RTP header fields the audio path needs, as parsed by the leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpMeta {
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit (talkspurt start).
    pub marker: bool,
    /// Sender's SSRC.
    pub ssrc: u32,
}

/// How a tick's frame came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// Decoded from the packet due now.
    Decoded,
    /// Rebuilt from the next packet's in-band FEC (Opus).
    Fec,
    /// Concealed (Opus PLC or G.711 repeat-and-fade).
    Concealed,
    /// Nothing is playing: silence.
    Silence,
}

/// Counts of how frames were produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames decoded from their own packet.
    pub decoded: u64,
    /// Frames rebuilt by FEC.
    pub fec: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Packets the decoder rejected (concealed instead).
    pub corrupt: u64,
}

/// Inbound G.711 leg: jitter buffer, table decode, repeat-and-fade concealment.
#[derive(Debug, Clone)]
pub struct G711Inbound {
    law: G711,
    jb: JitterBuffer,
    plc: Concealer,
    pcm: [i16; FRAME_8K],
    stats: DecodeStats,
}

impl G711Inbound {
    /// An inbound leg speaking `law` with default jitter settings.
    pub fn new(law: G711) -> G711Inbound {
        G711Inbound::with_jitter(law, JitterConfig::new(8000))
    }

    /// An inbound leg with explicit jitter buffer settings.
    pub fn with_jitter(law: G711, cfg: JitterConfig) -> G711Inbound {
        G711Inbound {
            law,
            jb: JitterBuffer::new(cfg),
            plc: Concealer::new(8000),
            pcm: [0; FRAME_8K],
            stats: DecodeStats::default(),
        }
    }

    /// Buffers a received RTP payload.
    pub fn insert(&mut self, now: Instant, rtp: RtpMeta, payload: &[u8]) -> Inserted {
        self.jb
            .insert(now, rtp.seq, rtp.timestamp, rtp.marker, rtp.ssrc, payload)
    }

    /// Accounts for a telephone-event packet sent in place of audio (see
    /// [`JitterBuffer::insert_no_audio`]).
    pub fn insert_no_audio(&mut self, now: Instant, rtp: RtpMeta) -> Inserted {
        self.jb.insert_no_audio(now, rtp.seq, rtp.ssrc)
    }

    /// Produces this tick's 8 kHz frame.
    pub fn tick(&mut self, now: Instant) -> (&[i16; FRAME_8K], FrameSource) {
        let source = match self.jb.pop(now) {
            Playout::Frame(p) => {
                let n = self.law.decode(p, &mut self.pcm);
                // A short packet's tail is silence rather than stale samples.
                self.pcm[n..].fill(0);
                self.plc.good(&mut self.pcm);
                self.stats.decoded += 1;
                FrameSource::Decoded
            }
            Playout::Missing => {
                self.plc.conceal(&mut self.pcm);
                self.stats.concealed += 1;
                FrameSource::Concealed
            }
            Playout::Empty => {
                self.pcm.fill(0);
                FrameSource::Silence
            }
        };
        (&self.pcm, source)
    }

    /// Jitter buffer counters.
    pub fn jitter_stats(&self) -> JitterStats {
        self.jb.stats()
    }

    /// Decode counters.
    pub fn decode_stats(&self) -> DecodeStats {
        self.stats
    }

    /// The jitter buffer (for RTCP report fields).
    pub fn jitter_buffer(&self) -> &JitterBuffer {
        &self.jb
    }
}

/// Inbound Opus leg: jitter buffer (48 kHz RTP clock), decoder at the output rate (8 kHz for
/// a phone or an 8 kHz room, 48 kHz for a wideband room), FEC from the next packet when it is
/// already buffered, PLC otherwise.
#[derive(Debug)]
pub struct OpusInbound {
    jb: JitterBuffer,
    dec: OpusDecoder,
    pcm: Vec<i16>,
    stats: DecodeStats,
}

impl OpusInbound {
    /// An inbound leg decoding to 8 kHz with default jitter settings.
    pub fn new() -> Result<OpusInbound, OpusError> {
        OpusInbound::with_rate(8000, JitterConfig::new(OPUS_RTP_CLOCK))
    }

    /// An inbound leg decoding 20 ms frames at `sample_rate` (8000 to 48000), with explicit
    /// jitter settings (their clock rate must be 48000).
    pub fn with_rate(sample_rate: u32, cfg: JitterConfig) -> Result<OpusInbound, OpusError> {
        let dec = OpusDecoder::new(sample_rate, 20)?;
        Ok(OpusInbound {
            jb: JitterBuffer::new(cfg),
            pcm: vec![0; dec.frame_samples()],
            dec,
            stats: DecodeStats::default(),
        })
    }

    /// Buffers a received RTP payload.
    pub fn insert(&mut self, now: Instant, rtp: RtpMeta, payload: &[u8]) -> Inserted {
        self.jb
            .insert(now, rtp.seq, rtp.timestamp, rtp.marker, rtp.ssrc, payload)
    }

    /// Produces this tick's frame (20 ms at the output rate).
    pub fn tick(&mut self, now: Instant) -> (&[i16], FrameSource) {
        let source = match self.jb.pop(now) {
            Playout::Frame(p) => match self.dec.decode(p, &mut self.pcm) {
                Ok(_) => {
                    self.stats.decoded += 1;
                    FrameSource::Decoded
                }
                Err(_) => {
                    self.stats.corrupt += 1;
                    conceal(&mut self.dec, &mut self.pcm, &mut self.stats)
                }
            },
            Playout::Missing => match self.jb.peek() {
                Some(next) if self.dec.decode_fec(next, &mut self.pcm).is_ok() => {
                    self.stats.fec += 1;
                    FrameSource::Fec
                }
                _ => conceal(&mut self.dec, &mut self.pcm, &mut self.stats),
            },
            Playout::Empty => {
                self.pcm.fill(0);
                FrameSource::Silence
            }
        };
        (&self.pcm, source)
    }

    /// Jitter buffer counters.
    pub fn jitter_stats(&self) -> JitterStats {
        self.jb.stats()
    }

    /// Decode counters.
    pub fn decode_stats(&self) -> DecodeStats {
        self.stats
    }

    /// The jitter buffer (for RTCP report fields).
    pub fn jitter_buffer(&self) -> &JitterBuffer {
        &self.jb
    }
}

fn conceal(dec: &mut OpusDecoder, pcm: &mut [i16], stats: &mut DecodeStats) -> FrameSource {
    stats.concealed += 1;
    if dec.conceal(pcm).is_err() {
        pcm.fill(0);
    }
    FrameSource::Concealed
}

/// Phone -> browser direction of a two-party call: G.711 RTP in, Opus payloads out.
#[derive(Debug)]
pub struct PhoneToWeb {
    inbound: G711Inbound,
    enc: OpusEncoder,
}

impl PhoneToWeb {
    /// A path from a `law` phone leg to an Opus encoder with `cfg` (8 kHz API rate).
    pub fn new(law: G711, cfg: OpusConfig) -> Result<PhoneToWeb, OpusError> {
        Ok(PhoneToWeb {
            inbound: G711Inbound::new(law),
            enc: OpusEncoder::new(OpusConfig {
                sample_rate: 8000,
                frame_ms: 20,
                ..cfg
            })?,
        })
    }

    /// Buffers a G.711 packet from the phone.
    pub fn insert(&mut self, now: Instant, rtp: RtpMeta, payload: &[u8]) -> Inserted {
        self.inbound.insert(now, rtp, payload)
    }

    /// Encodes this tick's frame into `out` (at least [`crate::opus_codec::MAX_PACKET`]
    /// bytes is always enough); returns the payload length and how the frame came about.
    pub fn tick(
        &mut self,
        now: Instant,
        out: &mut [u8],
    ) -> Result<(usize, FrameSource), OpusError> {
        let (pcm, source) = self.inbound.tick(now);
        let n = self.enc.encode(pcm, out)?;
        Ok((n, source))
    }

    /// The inbound half (stats, jitter buffer).
    pub fn inbound(&self) -> &G711Inbound {
        &self.inbound
    }
}

/// Browser -> phone direction of a two-party call: Opus RTP in, G.711 payloads out.
#[derive(Debug)]
pub struct WebToPhone {
    inbound: OpusInbound,
    law: G711,
}

impl WebToPhone {
    /// A path from an Opus leg to a `law` phone leg.
    pub fn new(law: G711) -> Result<WebToPhone, OpusError> {
        Ok(WebToPhone {
            inbound: OpusInbound::new()?,
            law,
        })
    }

    /// Buffers an Opus packet from the browser.
    pub fn insert(&mut self, now: Instant, rtp: RtpMeta, payload: &[u8]) -> Inserted {
        self.inbound.insert(now, rtp, payload)
    }

    /// Produces this tick's 160-byte G.711 payload.
    pub fn tick(&mut self, now: Instant, out: &mut [u8; FRAME_8K]) -> FrameSource {
        let law = self.law;
        let (pcm, source) = self.inbound.tick(now);
        law.encode(pcm, out);
        source
    }

    /// The inbound half (stats, jitter buffer).
    pub fn inbound(&self) -> &OpusInbound {
        &self.inbound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opus_codec::MAX_PACKET;
    use crate::testing::{tone_ratio, Sine};
    use std::time::Duration;

    fn meta(seq: u16, timestamp: u32) -> RtpMeta {
        RtpMeta {
            seq,
            timestamp,
            marker: seq == 0,
            ssrc: 0x1234,
        }
    }

    #[test]
    fn opus_inbound_uses_fec_for_a_single_loss_and_plc_for_a_burst() {
        let mut enc = OpusEncoder::new(OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut inbound = OpusInbound::new().unwrap_or_else(|e| panic!("{e}"));
        let mut gen = Sine::new(500.0, 8000, 8000);
        let t0 = Instant::now();
        let mut sources = Vec::new();
        let mut pkt = [0u8; MAX_PACKET];
        for i in 0..40u16 {
            let n = enc.encode(&gen.take(160), &mut pkt).unwrap_or(0);
            let now = t0 + Duration::from_millis(i as u64 * 20);
            // Lose packet 10, and 20 and 21.
            if ![10, 20, 21].contains(&i) {
                inbound.insert(now, meta(i, i as u32 * 960), &pkt[..n]);
            }
            // One frame of buffering, so the packet after a loss is there in time for FEC.
            if i > 0 {
                let (pcm, src) = inbound.tick(now);
                if i > 5 && src != FrameSource::Concealed {
                    assert!(tone_ratio(pcm, 500.0, 8000) > 0.5, "frame {i} {src:?}");
                }
                sources.push(src);
            }
        }
        // sources[k] is the frame of packet k. 10: FEC from 11. 20: nothing buffered after
        // it yet, PLC. 21: FEC from 22.
        assert_eq!(sources[10], FrameSource::Fec, "{sources:?}");
        assert_eq!(sources[20], FrameSource::Concealed, "{sources:?}");
        assert_eq!(sources[21], FrameSource::Fec, "{sources:?}");
        assert_eq!(
            sources
                .iter()
                .filter(|s| **s == FrameSource::Decoded)
                .count(),
            39 - 3
        );
        let st = inbound.decode_stats();
        assert_eq!((st.fec, st.concealed, st.corrupt), (2, 1, 0));
    }

    /// A browser encodes at 48 kHz: the phone side decodes its packets straight to 8 kHz, a
    /// wideband room to 48 kHz.
    #[test]
    fn browser_packets_decode_at_8k_and_48k() {
        let mut enc = OpusEncoder::new(OpusConfig {
            sample_rate: 48000,
            bitrate: 32_000,
            ..OpusConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let mut narrow = OpusInbound::new().unwrap_or_else(|e| panic!("{e}"));
        let mut wide = OpusInbound::with_rate(48000, JitterConfig::new(OPUS_RTP_CLOCK))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut gen = Sine::new(1000.0, 48000, 10000);
        let mut pkt = [0u8; MAX_PACKET];
        let t0 = Instant::now();
        let (mut out8, mut out48) = (Vec::new(), Vec::new());
        for i in 0..25u16 {
            let n = enc.encode(&gen.take(960), &mut pkt).unwrap_or(0);
            let now = t0 + Duration::from_millis(i as u64 * 20);
            narrow.insert(now, meta(i, i as u32 * 960), &pkt[..n]);
            wide.insert(now, meta(i, i as u32 * 960), &pkt[..n]);
            out8.extend_from_slice(narrow.tick(now).0);
            out48.extend_from_slice(wide.tick(now).0);
        }
        assert_eq!((out8.len(), out48.len()), (25 * 160, 25 * 960));
        assert!(tone_ratio(&out8[1600..], 1000.0, 8000) > 0.8);
        assert!(tone_ratio(&out48[9600..], 1000.0, 48000) > 0.8);
        assert!(tone_ratio(&out8[1600..], 440.0, 8000) < 0.01);
    }

    #[test]
    fn corrupt_opus_packet_is_concealed_not_fatal() {
        let mut inbound = OpusInbound::new().unwrap_or_else(|e| panic!("{e}"));
        let t0 = Instant::now();
        inbound.insert(t0, meta(0, 0), &[0xFF, 0xFF, 0xFF]);
        let (_, src) = inbound.tick(t0);
        assert_eq!(src, FrameSource::Concealed);
        assert_eq!(inbound.decode_stats().corrupt, 1);
    }

    #[test]
    fn g711_inbound_decodes_conceals_and_idles() {
        let mut inbound = G711Inbound::new(G711::Pcma);
        let t0 = Instant::now();
        let (pcm, src) = inbound.tick(t0);
        assert_eq!((pcm, src), (&[0; FRAME_8K], FrameSource::Silence));
        let mut tone = [0u8; FRAME_8K];
        G711::Pcma.encode(&Sine::new(1000.0, 8000, 9000).take(160), &mut tone);
        inbound.insert(t0, meta(0, 0), &tone);
        let (pcm, src) = inbound.tick(t0);
        assert_eq!(src, FrameSource::Decoded);
        assert!(tone_ratio(pcm, 1000.0, 8000) > 0.9);
        inbound.insert(t0, meta(2, 320), &tone);
        let (pcm, src) = inbound.tick(t0 + Duration::from_millis(20));
        assert_eq!(src, FrameSource::Concealed);
        assert!(tone_ratio(pcm, 1000.0, 8000) > 0.8);
        // A short packet decodes what it has and pads with silence.
        inbound.insert(t0, meta(3, 480), &tone[..80]);
        let _ = inbound.tick(t0 + Duration::from_millis(40));
        let (pcm, src) = inbound.tick(t0 + Duration::from_millis(60));
        assert_eq!(src, FrameSource::Decoded);
        assert_eq!(pcm[80..], [0; 80]);
    }
}
