//! Narrowband Opus at each encoder complexity: encodes an 8 kHz 16-bit mono WAV (a file of
//! `assets/prompts/`, say) as the direct path does (20 ms frames, the bridge's voice defaults),
//! decodes it at 8 kHz, and writes `OUT_DIR/c{complexity}.wav`, aligned to the input, for a
//! perceptual score (`scripts/opus-quality` runs ITU-T P.862 PESQ on them). Prints the bitrate
//! each complexity reached.
//!
//! ```sh
//! opus_quality INPUT.wav OUT_DIR
//! ```

use dialbridge_bridge::opus_codec::{OpusConfig, OpusDecoder, OpusEncoder, MAX_PACKET};

type Error = Box<dyn std::error::Error>;

const FRAME: usize = 160;
const HEADER: usize = 44;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(out_dir)) = (args.next(), args.next()) else {
        return Err("usage: opus_quality INPUT.wav OUT_DIR".into());
    };
    let wav = std::fs::read(&input)?;
    // The prompts are plain 44-byte-header PCM WAVs (assets/prompts/README.md).
    let header = wav.get(..HEADER).ok_or("not a WAV file")?;
    let pcm: Vec<i16> = wav[HEADER..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    for complexity in [0, 1, 2, 3, 5, 8, 10] {
        let mut enc = OpusEncoder::new(OpusConfig {
            complexity,
            ..OpusConfig::default()
        })?;
        let mut dec = OpusDecoder::new(8000, 20)?;
        let (mut decoded, mut bytes) = (Vec::with_capacity(pcm.len()), 0usize);
        let mut packet = [0u8; MAX_PACKET];
        let mut frame = [0i16; FRAME];
        for chunk in pcm.chunks_exact(FRAME) {
            let n = enc.encode(chunk, &mut packet)?;
            bytes += n;
            dec.decode(&packet[..n], &mut frame)?;
            decoded.extend_from_slice(&frame);
        }
        let lag = best_lag(&pcm, &decoded);
        let aligned = &decoded[lag..];
        let mut out = header.to_vec();
        for s in aligned {
            out.extend_from_slice(&s.to_le_bytes());
        }
        let data = (aligned.len() * 2) as u32;
        out[4..8].copy_from_slice(&(data + 36).to_le_bytes());
        out[40..44].copy_from_slice(&data.to_le_bytes());
        std::fs::write(format!("{out_dir}/c{complexity}.wav"), out)?;
        let seconds = pcm.len() as f64 / 8000.0;
        println!(
            "complexity {complexity}: {:.1} kbit/s, codec delay {lag} samples",
            bytes as f64 * 8.0 / seconds / 1000.0
        );
    }
    Ok(())
}

/// The codec's delay: the shift that best matches output to input.
fn best_lag(input: &[i16], output: &[i16]) -> usize {
    (0..400)
        .map(|lag| {
            let error: f64 = input
                .iter()
                .zip(output.iter().skip(lag))
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum();
            (lag, error)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(lag, _)| lag)
}
