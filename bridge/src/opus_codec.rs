//! Opus encoder and decoder per leg, through libopus 1.6 (`opus` crate, bundled build).
//!
//! Phone audio is 8 kHz, and libopus accepts 8 kHz at its API (it codes narrowband and the
//! decoder renders any packet at 8 kHz), so the G.711 <-> Opus path has no resampler. The RTP
//! clock of Opus stays 48000 whatever the API rate (RFC 7587).

use opus::{Application, Bitrate, Channels, Signal};

/// Opus RTP clock rate (RFC 7587), whatever the rate the codec runs at.
pub const OPUS_RTP_CLOCK: u32 = 48000;

/// Largest Opus packet we produce (RFC 6716 limit for one frame is 1275 bytes).
pub const MAX_PACKET: usize = 1275;

/// Errors from libopus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpusError {
    /// libopus reported an error.
    #[error("opus: {0}")]
    Codec(String),
    /// The API rate is not one libopus supports (8, 12, 16, 24 or 48 kHz).
    #[error("unsupported Opus sample rate {0}")]
    Rate(u32),
    /// The PCM slice is not exactly one frame.
    #[error("expected {expected} samples, got {got}")]
    FrameSize {
        /// Samples in one frame.
        expected: usize,
        /// Samples given.
        got: usize,
    },
}

impl From<opus::Error> for OpusError {
    fn from(e: opus::Error) -> OpusError {
        OpusError::Codec(e.to_string())
    }
}

/// Complexity for a phone's narrowband audio encoded towards a browser: a fraction of the cost
/// of the default for mixed audio, for a small loss in PESQ (docs/decisions.md).
pub const PHONE_COMPLEXITY: i32 = 1;

/// Encoder settings; the defaults suit speech on a bridged call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// API sample rate: 8000 for phone audio, 48000 for WebRTC mixing.
    pub sample_rate: u32,
    /// Frame duration in milliseconds (20 on both sides of the bridge).
    pub frame_ms: u32,
    /// 0..=10; 5 keeps the cost per call low with little loss in speech quality.
    pub complexity: i32,
    /// Target bitrate in bit/s.
    pub bitrate: i32,
    /// In-band FEC (LBRR): each packet carries a coarse copy of the previous frame.
    pub fec: bool,
    /// Loss the encoder plans FEC for, in percent (FEC is only emitted when this is > 0).
    pub expected_loss_percent: i32,
    /// Discontinuous transmission during silence.
    pub dtx: bool,
}

impl Default for OpusConfig {
    fn default() -> OpusConfig {
        OpusConfig {
            sample_rate: 8000,
            frame_ms: 20,
            complexity: 5,
            bitrate: 28_000,
            fec: true,
            expected_loss_percent: 10,
            dtx: false,
        }
    }
}

impl OpusConfig {
    /// Samples per channel in one frame at the API rate.
    pub fn frame_samples(&self) -> usize {
        (self.sample_rate * self.frame_ms / 1000) as usize
    }

    fn check_rate(rate: u32) -> Result<(), OpusError> {
        match rate {
            8000 | 12000 | 16000 | 24000 | 48000 => Ok(()),
            r => Err(OpusError::Rate(r)),
        }
    }
}

/// Mono voice encoder for one leg.
pub struct OpusEncoder {
    enc: opus::Encoder,
    frame: usize,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("frame", &self.frame)
            .finish()
    }
}

impl OpusEncoder {
    /// Creates an encoder (VOIP application, voice signal) with `cfg`.
    pub fn new(cfg: OpusConfig) -> Result<OpusEncoder, OpusError> {
        OpusConfig::check_rate(cfg.sample_rate)?;
        let mut enc = opus::Encoder::new(cfg.sample_rate, Channels::Mono, Application::Voip)?;
        enc.set_complexity(cfg.complexity.clamp(0, 10))?;
        enc.set_bitrate(Bitrate::Bits(cfg.bitrate))?;
        enc.set_signal(Signal::Voice)?;
        enc.set_inband_fec(cfg.fec)?;
        enc.set_packet_loss_perc(cfg.expected_loss_percent.clamp(0, 100))?;
        enc.set_dtx(cfg.dtx)?;
        Ok(OpusEncoder {
            enc,
            frame: cfg.frame_samples(),
        })
    }

    /// Samples per frame.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Encodes one frame into `out`; returns the packet length. With DTX, a length of 1 or 2
    /// means "silence, nothing worth sending".
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        if pcm.len() != self.frame {
            return Err(OpusError::FrameSize {
                expected: self.frame,
                got: pcm.len(),
            });
        }
        Ok(self.enc.encode(pcm, out)?)
    }

    /// The complexity libopus is running at.
    pub fn complexity(&mut self) -> Result<i32, OpusError> {
        Ok(self.enc.get_complexity()?)
    }

    /// The target bitrate libopus is running at, in bit/s.
    pub fn bitrate(&mut self) -> Result<i32, OpusError> {
        match self.enc.get_bitrate()? {
            Bitrate::Bits(b) => Ok(b),
            other => Err(OpusError::Codec(format!("bitrate {other:?}"))),
        }
    }

    /// Updates the loss the FEC is planned for (from RTCP receiver reports).
    pub fn set_expected_loss(&mut self, percent: i32) -> Result<(), OpusError> {
        Ok(self.enc.set_packet_loss_perc(percent.clamp(0, 100))?)
    }
}

/// Mono decoder for one leg with FEC and PLC.
pub struct OpusDecoder {
    dec: opus::Decoder,
    frame: usize,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("frame", &self.frame)
            .finish()
    }
}

impl OpusDecoder {
    /// A decoder rendering at `sample_rate` with `frame_ms` frames.
    pub fn new(sample_rate: u32, frame_ms: u32) -> Result<OpusDecoder, OpusError> {
        OpusConfig::check_rate(sample_rate)?;
        Ok(OpusDecoder {
            dec: opus::Decoder::new(sample_rate, Channels::Mono)?,
            frame: (sample_rate * frame_ms / 1000) as usize,
        })
    }

    /// Samples per frame.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    fn out<'a>(&self, out: &'a mut [i16]) -> Result<&'a mut [i16], OpusError> {
        let got = out.len();
        out.get_mut(..self.frame).ok_or(OpusError::FrameSize {
            expected: self.frame,
            got,
        })
    }

    /// Decodes a received packet into one frame; returns samples written. A packet longer
    /// than one frame is an error rather than a buffer overrun.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        let out = self.out(out)?;
        Ok(self.dec.decode(packet, out, false)?)
    }

    /// Rebuilds the lost frame before `next_packet` from its in-band FEC (falls back to PLC
    /// inside libopus when the packet carries none).
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<usize, OpusError> {
        let out = self.out(out)?;
        Ok(self.dec.decode(next_packet, out, true)?)
    }

    /// Packet loss concealment for one frame.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, OpusError> {
        let out = self.out(out)?;
        Ok(self.dec.decode(&[], out, false)?)
    }
}

/// Version string of the linked libopus.
pub fn libopus_version() -> &'static str {
    opus::version()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rms, tone_ratio, Sine};

    proptest::proptest! {
        #[test]
        fn decoder_survives_arbitrary_packets(
            packets in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..20)
        ) {
            let mut dec = OpusDecoder::new(8000, 20).unwrap_or_else(|e| panic!("{e}"));
            let mut out = [0i16; 160];
            for p in &packets {
                if let Ok(n) = dec.decode(p, &mut out) {
                    proptest::prop_assert!(n <= 160);
                }
                if let Ok(n) = dec.decode_fec(p, &mut out) {
                    proptest::prop_assert!(n <= 160);
                }
            }
            proptest::prop_assert_eq!(dec.conceal(&mut out), Ok(160));
        }
    }

    #[test]
    fn links_libopus_1_6() {
        assert!(libopus_version().contains("1.6"), "{}", libopus_version());
    }

    #[test]
    fn round_trip_at_8k_keeps_the_tone() {
        let mut enc = OpusEncoder::new(OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut dec = OpusDecoder::new(8000, 20).unwrap_or_else(|e| panic!("{e}"));
        let mut gen = Sine::new(440.0, 8000, 10000);
        let mut pkt = [0u8; MAX_PACKET];
        let mut out = Vec::new();
        for _ in 0..50 {
            let n = enc.encode(&gen.take(160), &mut pkt).unwrap_or(0);
            assert!(
                n > 2 && n < 120,
                "28 kbit/s is ~70 bytes per 20 ms, got {n}"
            );
            let mut pcm = [0i16; 160];
            assert_eq!(dec.decode(&pkt[..n], &mut pcm), Ok(160));
            out.extend_from_slice(&pcm);
        }
        // Skip the codec's start-up; the rest is the tone.
        let tail = &out[1600..];
        assert!(tone_ratio(tail, 440.0, 8000) > 0.8);
        assert!(tone_ratio(tail, 1000.0, 8000) < 0.01);
        assert!(rms(tail) > 4000.0);
    }

    #[test]
    fn fec_rebuilds_a_lost_frame_better_than_plc() {
        let mut enc = OpusEncoder::new(OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut gen = Sine::new(700.0, 8000, 10000);
        let mut packets = Vec::new();
        let mut pcm = Vec::new();
        let mut buf = [0u8; MAX_PACKET];
        for _ in 0..30 {
            let frame = gen.take(160);
            let n = enc.encode(&frame, &mut buf).unwrap_or(0);
            packets.push(buf[..n].to_vec());
            pcm.push(frame);
        }
        // Frame 20 is lost: rebuild it by FEC from packet 21, or by PLC.
        let run = |use_fec: bool| {
            let mut dec = OpusDecoder::new(8000, 20).unwrap_or_else(|e| panic!("{e}"));
            let mut out = [0i16; 160];
            for p in &packets[..20] {
                let _ = dec.decode(p, &mut out);
            }
            let r = if use_fec {
                dec.decode_fec(&packets[21], &mut out)
            } else {
                dec.conceal(&mut out)
            };
            assert_eq!(r, Ok(160));
            out
        };
        let fec = run(true);
        let plc = run(false);
        assert!(tone_ratio(&fec, 700.0, 8000) > 0.8);
        assert!(
            rms(&fec) > 3000.0,
            "FEC frame carries the tone: {}",
            rms(&fec)
        );
        assert!(tone_ratio(&plc, 700.0, 8000) > 0.5);
        assert_ne!(fec, plc, "the FEC path decoded the redundant copy");
    }

    #[test]
    fn rejects_bad_sizes_and_garbage() {
        let mut enc = OpusEncoder::new(OpusConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut pkt = [0u8; MAX_PACKET];
        assert_eq!(
            enc.encode(&[0; 100], &mut pkt),
            Err(OpusError::FrameSize {
                expected: 160,
                got: 100
            })
        );
        assert!(matches!(
            OpusEncoder::new(OpusConfig {
                sample_rate: 44100,
                ..OpusConfig::default()
            }),
            Err(OpusError::Rate(44100))
        ));
        let mut dec = OpusDecoder::new(8000, 20).unwrap_or_else(|e| panic!("{e}"));
        let mut out = [0i16; 160];
        // A 60 ms packet does not fit a 20 ms frame: an error, not an overrun.
        let mut long_enc = OpusEncoder::new(OpusConfig {
            frame_ms: 60,
            ..OpusConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let n = long_enc.encode(&[0; 480], &mut pkt).unwrap_or(0);
        assert!(dec.decode(&pkt[..n], &mut out).is_err());
        assert!(dec.decode(&[0xFF, 0xFF, 0xFF], &mut out).is_err());
        assert!(dec.decode(&[], &mut [0i16; 10]).is_err());
    }
}
