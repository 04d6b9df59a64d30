//! Packet loss concealment for codecs without their own (G.711): repeat and fade.
//!
//! The last good frame's final pitch period is repeated (whole frame when no clear period is
//! found), so a voiced sound or tone continues without a phase jump at every period, and the
//! gain ramps linearly to zero over [`FADE_FRAMES`] frames (60 ms at 20 ms): after that a long
//! gap is silence rather than a buzzing loop. The first good frame after a gap is cross-faded
//! from the continuing concealment over 4 ms, so the switch back does not click.

/// Concealed frames over which the repeat fades to silence.
pub const FADE_FRAMES: u32 = 3;

/// Longest frame handled (20 ms at 48 kHz).
pub const MAX_FRAME: usize = 960;

/// Repeat-and-fade concealer for one decoded stream.
#[derive(Debug, Clone)]
pub struct Concealer {
    sample_rate: u32,
    history: [i16; MAX_FRAME],
    len: usize,
    period: usize,
    pos: usize,
    lost: u32,
    frame_len: usize,
}

/// Longest cross-fade (4 ms at 48 kHz).
const MAX_OVERLAP: usize = 192;

impl Concealer {
    /// A concealer for frames at `sample_rate` Hz.
    pub fn new(sample_rate: u32) -> Concealer {
        Concealer {
            sample_rate,
            history: [0; MAX_FRAME],
            len: 0,
            period: 0,
            pos: 0,
            lost: 0,
            frame_len: 0,
        }
    }

    /// Frames concealed since the last good one.
    pub fn lost_in_a_row(&self) -> u32 {
        self.lost
    }

    /// Takes a good decoded frame (call for every frame that was really received): after a
    /// gap its start is cross-faded from the concealment, then it is remembered.
    pub fn good(&mut self, pcm: &mut [i16]) {
        if self.lost > 0 {
            let overlap = (self.sample_rate as usize / 250)
                .min(MAX_OVERLAP)
                .min(pcm.len());
            let mut tail = [0i16; MAX_OVERLAP];
            let tail = &mut tail[..overlap];
            self.render(tail);
            let w = overlap as i32 + 1;
            for (i, (p, &c)) in pcm.iter_mut().zip(tail.iter()).enumerate() {
                let a = i as i32 + 1;
                *p = ((*p as i32 * a + c as i32 * (w - a)) / w) as i16;
            }
        }
        let n = pcm.len().min(MAX_FRAME);
        self.history[..n].copy_from_slice(&pcm[pcm.len() - n..]);
        self.len = n;
        self.lost = 0;
        self.period = 0;
    }

    /// Writes a concealment frame into `out`.
    pub fn conceal(&mut self, out: &mut [i16]) {
        if self.lost == 0 && self.len > 0 {
            self.period = self.find_period();
            self.pos = 0;
            self.frame_len = out.len();
        }
        self.render(out);
        self.lost = self.lost.saturating_add(1);
    }

    /// Continues the faded repetition into `out` from where the last concealed frame ended.
    fn render(&mut self, out: &mut [i16]) {
        let lost = self.lost;
        if self.len == 0 || self.period == 0 || lost >= FADE_FRAMES {
            out.fill(0);
            return;
        }
        // Gain falls linearly from 1 to 0 across FADE_FRAMES frames, in Q15.
        let n = self.frame_len.max(1) as i64;
        let span = n * FADE_FRAMES as i64;
        let start = self.len - self.period;
        for (i, o) in out.iter_mut().enumerate() {
            let k = (lost as i64 * n + i as i64).min(span);
            let gain = ((span - k) << 15) / span;
            let s = self.history[start + self.pos] as i64;
            *o = ((s * gain) >> 15) as i16;
            self.pos += 1;
            if self.pos == self.period {
                self.pos = 0;
            }
        }
    }

    /// Pitch period of the remembered frame by normalized autocorrelation over 2.5-15 ms
    /// lags, or the whole frame when nothing correlates well.
    fn find_period(&self) -> usize {
        let x = &self.history[..self.len];
        let min_lag = (self.sample_rate as usize / 400).max(1);
        let max_lag = (self.sample_rate as usize * 15 / 1000).min(self.len / 2);
        let mut best = (0.0f64, self.len);
        for lag in min_lag..=max_lag {
            let (a, b) = (&x[lag..], &x[..self.len - lag]);
            let (mut xy, mut yy) = (0i64, 0i64);
            for (p, q) in a.iter().zip(b) {
                xy += *p as i64 * *q as i64;
                yy += *q as i64 * *q as i64;
            }
            let xx: i64 = a.iter().map(|&p| p as i64 * p as i64).sum();
            if xy <= 0 || xx == 0 || yy == 0 {
                continue;
            }
            let c = xy as f64 / ((xx as f64) * (yy as f64)).sqrt();
            // Prefer the shortest lag that is nearly as good as the best (avoid multiples).
            if c > best.0 + 0.02 {
                best = (c, lag);
            }
        }
        if best.0 > 0.7 {
            best.1
        } else {
            self.len
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rms, tone_ratio, Sine};

    #[test]
    fn continues_a_tone_then_fades_to_silence() {
        let mut gen = Sine::new(440.0, 8000, 10000);
        let mut plc = Concealer::new(8000);
        for _ in 0..3 {
            plc.good(&mut gen.take(160));
        }
        let mut frames = Vec::new();
        for _ in 0..5 {
            let mut f = [0i16; 160];
            plc.conceal(&mut f);
            frames.push(f);
        }
        assert!(tone_ratio(&frames[0], 440.0, 8000) > 0.8);
        assert!(tone_ratio(&frames[1], 440.0, 8000) > 0.8);
        assert!(rms(&frames[0]) > rms(&frames[1]));
        assert!(rms(&frames[1]) > rms(&frames[2]));
        assert!(rms(&frames[0]) > 4000.0);
        assert_eq!(frames[3], [0; 160]);
        assert_eq!(frames[4], [0; 160]);
        assert_eq!(plc.lost_in_a_row(), 5);
    }

    #[test]
    fn repetition_is_phase_continuous_for_a_periodic_signal() {
        // 400 Hz at 8 kHz: period of exactly 20 samples.
        let mut gen = Sine::new(400.0, 8000, 10000);
        let mut plc = Concealer::new(8000);
        plc.good(&mut gen.take(160));
        let mut f = [0i16; 160];
        plc.conceal(&mut f);
        let truth = gen.take(160);
        // The concealment is the true continuation under the fade ramp.
        let span = 160 * FADE_FRAMES as i32;
        for i in 0..160 {
            let want = truth[i] as i32 * (span - i as i32) / span;
            assert!(
                (f[i] as i32 - want).abs() < 20,
                "sample {i}: {} vs {want}",
                f[i]
            );
        }
    }

    #[test]
    fn return_to_good_frames_is_cross_faded() {
        // 400 Hz: the concealment stays in phase, so the blend is seamless.
        let mut gen = Sine::new(400.0, 8000, 10000);
        let mut plc = Concealer::new(8000);
        plc.good(&mut gen.take(160));
        let mut lost = [0i16; 160];
        plc.conceal(&mut lost);
        let mut back = gen.take(160);
        let truth = back.clone();
        plc.good(&mut back);
        // The blend starts at the concealment's level (faded by a third) and reaches the
        // true signal after 32 samples.
        let faded = |i: usize| truth[i] as i32 * (480 - 160 - i as i32) / 480;
        assert!(
            (back[0] as i32 - faded(0)).abs() < 400,
            "{} vs {}",
            back[0],
            faded(0)
        );
        assert_eq!(back[32..], truth[32..]);
        // After a long gap the frame fades in from silence instead of starting at full level.
        for _ in 0..5 {
            plc.conceal(&mut lost);
        }
        let mut back = Sine::new(400.0, 8000, 10000).take(160);
        back[0] = 10000;
        plc.good(&mut back);
        assert!(back[0].abs() < 400, "{}", back[0]);
        assert_eq!(plc.lost_in_a_row(), 0);
    }

    #[test]
    fn good_frame_resets_and_silence_without_history() {
        let mut plc = Concealer::new(8000);
        let mut f = [1i16; 160];
        plc.conceal(&mut f);
        assert_eq!(f, [0; 160]);
        let tone = Sine::new(1000.0, 8000, 5000).take(160);
        for _ in 0..4 {
            plc.conceal(&mut f);
        }
        plc.good(&mut tone.clone());
        assert_eq!(plc.lost_in_a_row(), 0);
        plc.conceal(&mut f);
        assert!(tone_ratio(&f, 1000.0, 8000) > 0.8);
    }
}
