//! Test aids: a sine generator and a Goertzel tone detector, so tests can assert what a
//! participant hears ("440 Hz, not 1000 Hz") rather than count packets. Not used on the media
//! path; compiled for this crate's tests and, with the `testing` feature, for other crates'.

use std::f64::consts::TAU;

/// Phase-continuous sine generator producing i16 samples.
#[derive(Debug, Clone)]
pub struct Sine {
    phase: f64,
    step: f64,
    amplitude: f64,
}

impl Sine {
    /// A tone of `freq` Hz at `sample_rate`, peak `amplitude` (0..=32767).
    pub fn new(freq: f64, sample_rate: u32, amplitude: i16) -> Sine {
        Sine {
            phase: 0.0,
            step: TAU * freq / sample_rate.max(1) as f64,
            amplitude: amplitude as f64,
        }
    }

    /// Fills `out` with the next samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            *s = (self.phase.sin() * self.amplitude).round() as i16;
            self.phase = (self.phase + self.step) % TAU;
        }
    }

    /// The next `n` samples.
    pub fn take(&mut self, n: usize) -> Vec<i16> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Power of `freq` in `samples` (Goertzel), relative to the block's total power: about 1.0 for
/// a pure tone at `freq`, about 0.0 when the tone is absent or the block is silent.
pub fn tone_ratio(samples: &[i16], freq: f64, sample_rate: u32) -> f64 {
    let n = samples.len();
    if n == 0 {
        return 0.0;
    }
    let total: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    if total < 1e-9 {
        return 0.0;
    }
    let coeff = 2.0 * (TAU * freq / sample_rate.max(1) as f64).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // |X(f)|^2 of a sine of amplitude A over n samples is (A n / 2)^2, its energy A^2 n / 2.
    (2.0 * power / (n as f64 * total)).min(1.0)
}

/// Like [`tone_ratio`], but Goertzel runs on each `block`-sample block and the tone powers are
/// added (non-coherent integration): a tone whose phase jumps between blocks, as it does
/// around concealed frames, still counts as fully present.
pub fn tone_ratio_blocks(samples: &[i16], freq: f64, sample_rate: u32, block: usize) -> f64 {
    let total: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    if total < 1e-9 || block == 0 {
        return 0.0;
    }
    let tone: f64 = samples
        .chunks(block)
        .map(|b| {
            let e: f64 = b.iter().map(|&s| (s as f64) * (s as f64)).sum();
            tone_ratio(b, freq, sample_rate) * e
        })
        .sum();
    (tone / total).min(1.0)
}

/// Root-mean-square level of `samples`.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let e: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    (e / samples.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_tone_it_is_given() {
        let tone = Sine::new(440.0, 8000, 8000).take(800);
        assert!(tone_ratio(&tone, 440.0, 8000) > 0.9);
        assert!(tone_ratio(&tone, 1000.0, 8000) < 0.01);
        let both: Vec<i16> = tone
            .iter()
            .zip(Sine::new(1000.0, 8000, 8000).take(800))
            .map(|(a, b)| a / 2 + b / 2)
            .collect();
        assert!((tone_ratio(&both, 440.0, 8000) - 0.5).abs() < 0.05);
        assert!((tone_ratio(&both, 1000.0, 8000) - 0.5).abs() < 0.05);
        assert_eq!(tone_ratio(&[0; 160], 440.0, 8000), 0.0);
        // A phase flip between blocks cancels much of a coherent Goertzel, not the block-wise one.
        let mut flipped = Sine::new(500.0, 8000, 8000).take(800);
        for s in &mut flipped[480..] {
            *s = -*s;
        }
        assert!(tone_ratio(&flipped, 500.0, 8000) < 0.1);
        assert!(tone_ratio_blocks(&flipped, 500.0, 8000, 160) > 0.9);
        assert!(tone_ratio_blocks(&flipped, 1000.0, 8000, 160) < 0.01);
        assert!((rms(&tone) - 8000.0 / 2f64.sqrt()).abs() < 10.0);
    }

    #[test]
    fn generator_is_phase_continuous_across_calls() {
        let mut a = Sine::new(1000.0, 48000, 1000);
        let mut whole = Sine::new(1000.0, 48000, 1000);
        let mut parts = a.take(100);
        parts.extend(a.take(860));
        assert_eq!(parts, whole.take(960));
    }
}
