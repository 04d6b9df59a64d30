//! Loads the voice prompts of `assets/prompts/`: RIFF WAV, PCM signed 16-bit little-endian, mono,
//! 8000 Hz (the G.711 rate, so playing one needs no resampling). Anything else is refused with a
//! reason, never guessed at.

use std::path::Path;
use std::sync::OnceLock;

use super::pin::Prompt;

/// The only sample rate prompts may have.
pub const PROMPT_RATE: u32 = 8000;
/// Largest prompt accepted (about 2 minutes at 8 kHz), so a stray file cannot take the memory.
const MAX_SAMPLES: usize = 8000 * 120;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("not a RIFF WAVE file")]
    NotWave,
    #[error("the `{0}` chunk is cut short")]
    Truncated(&'static str),
    #[error("no `fmt ` chunk before the `data` chunk")]
    NoFormat,
    #[error("no `data` chunk")]
    NoData,
    #[error("format {0} is not PCM (1): prompts must be 16-bit PCM")]
    NotPcm(u16),
    #[error("{0} channels: prompts must be mono")]
    Channels(u16),
    #[error("{0} Hz: prompts must be 8000 Hz")]
    Rate(u32),
    #[error("{0} bits per sample: prompts must be 16-bit")]
    Bits(u16),
    #[error("the data chunk holds an odd number of bytes")]
    OddData,
    #[error("longer than {MAX_SAMPLES} samples")]
    TooLong,
}

/// The prompts of `assets/prompts/`, embedded in the binary and parsed on first use.
pub fn prompt(which: Prompt) -> Result<&'static [i16], WavError> {
    static PARSED: OnceLock<[Result<Vec<i16>, WavError>; 5]> = OnceLock::new();
    let all = PARSED.get_or_init(|| {
        [
            parse(include_bytes!("../../assets/prompts/welcome.wav")),
            parse(include_bytes!("../../assets/prompts/wrong_pin.wav")),
            parse(include_bytes!("../../assets/prompts/waiting.wav")),
            parse(include_bytes!("../../assets/prompts/goodbye.wav")),
            parse(include_bytes!("../../assets/prompts/recorded.wav")),
        ]
    });
    let index = match which {
        Prompt::Welcome => 0,
        Prompt::WrongPin => 1,
        Prompt::Waiting => 2,
        Prompt::Goodbye => 3,
        Prompt::Recorded => 4,
    };
    all[index].as_ref().map(Vec::as_slice).map_err(Clone::clone)
}

/// Reads and checks a prompt file.
pub fn load(path: &Path) -> Result<Vec<i16>, WavError> {
    let bytes = std::fs::read(path).map_err(|e| WavError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&bytes)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a WAV image into 8 kHz mono samples.
pub fn parse(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut at = 12;
    let mut format_seen = false;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4).ok_or(WavError::Truncated("chunk"))? as usize;
        let body_start = at + 8;
        let body = bytes
            .get(body_start..body_start.saturating_add(size))
            .ok_or(WavError::Truncated(if id == b"data" {
                "data"
            } else {
                "chunk"
            }))?;
        match id {
            b"fmt " => {
                let field = |o| u16_at(body, o).ok_or(WavError::Truncated("fmt "));
                let format = field(0)?;
                let channels = field(2)?;
                let rate = u32_at(body, 4).ok_or(WavError::Truncated("fmt "))?;
                let bits = field(14)?;
                // WAVE_FORMAT_EXTENSIBLE carries the real format in its sub-format GUID.
                let format = if format == 0xFFFE {
                    u16_at(body, 24).ok_or(WavError::Truncated("fmt "))?
                } else {
                    format
                };
                if format != 1 {
                    return Err(WavError::NotPcm(format));
                }
                if channels != 1 {
                    return Err(WavError::Channels(channels));
                }
                if rate != PROMPT_RATE {
                    return Err(WavError::Rate(rate));
                }
                if bits != 16 {
                    return Err(WavError::Bits(bits));
                }
                format_seen = true;
            }
            b"data" => {
                if !format_seen {
                    return Err(WavError::NoFormat);
                }
                if body.len() % 2 != 0 {
                    return Err(WavError::OddData);
                }
                if body.len() / 2 > MAX_SAMPLES {
                    return Err(WavError::TooLong);
                }
                return Ok(body
                    .chunks_exact(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]]))
                    .collect());
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        at = body_start + size + (size & 1);
    }
    Err(WavError::NoData)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wav(format: u16, channels: u16, rate: u32, bits: u16, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(channels) * u32::from(bits) / 8).to_le_bytes());
        out.extend_from_slice(&(channels * bits / 8).to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn shipped_prompts_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/prompts");
        for name in ["welcome.wav", "wrong_pin.wav", "waiting.wav", "goodbye.wav"] {
            let samples = load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(samples.len() > 4000, "{name}: at least half a second");
            assert!(
                samples.iter().any(|s| s.unsigned_abs() > 3000),
                "{name}: not silent"
            );
        }
    }

    #[test]
    fn embedded_prompts_match_the_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/prompts");
        for p in [
            Prompt::Welcome,
            Prompt::WrongPin,
            Prompt::Waiting,
            Prompt::Goodbye,
            Prompt::Recorded,
        ] {
            let embedded = prompt(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            assert_eq!(
                embedded,
                load(&dir.join(p.file_name())).expect("file").as_slice()
            );
        }
    }

    #[test]
    fn other_formats_are_refused_with_the_reason() {
        let s = [1i16, -2, 3];
        assert_eq!(parse(&wav(1, 1, 8000, 16, &s)), Ok(s.to_vec()));
        assert_eq!(parse(&wav(3, 1, 8000, 16, &s)), Err(WavError::NotPcm(3)));
        assert_eq!(parse(&wav(1, 2, 8000, 16, &s)), Err(WavError::Channels(2)));
        assert_eq!(parse(&wav(1, 1, 16000, 16, &s)), Err(WavError::Rate(16000)));
        assert_eq!(parse(&wav(1, 1, 8000, 8, &s)), Err(WavError::Bits(8)));
        assert_eq!(parse(b"RIFF\0\0\0\0AVI "), Err(WavError::NotWave));
        let mut cut = wav(1, 1, 8000, 16, &s);
        cut.truncate(cut.len() - 1);
        assert_eq!(parse(&cut), Err(WavError::Truncated("data")));
        assert!(load(Path::new("/nonexistent/prompt.wav"))
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }

    #[test]
    fn unknown_chunks_are_skipped_with_padding() {
        let mut w = wav(1, 1, 8000, 16, &[7, 8]);
        let list = b"LIST\x03\0\0\0abc\0";
        let fmt_end = 12 + 8 + 16;
        w.splice(fmt_end..fmt_end, list.iter().copied());
        assert_eq!(parse(&w), Ok(vec![7, 8]));
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parser_never_panics_on_damaged_wavs(
            samples in proptest::collection::vec(any::<i16>(), 0..50),
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
            cut in 0usize..200,
        ) {
            let mut w = wav(1, 1, 8000, 16, &samples);
            for (at, v) in flips {
                if let Some(b) = w.get_mut(at) { *b = v; }
            }
            w.truncate(cut.max(1).min(w.len()));
            let _ = parse(&w);
        }

        #[test]
        fn valid_wavs_round_trip(samples in proptest::collection::vec(any::<i16>(), 0..500)) {
            prop_assert_eq!(parse(&wav(1, 1, 8000, 16, &samples)), Ok(samples));
        }
    }
}
