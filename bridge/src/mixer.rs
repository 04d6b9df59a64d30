//! N-1 mixer for one room: everyone hears everyone but themselves.
//!
//! Frames are 20 ms of mono i16 at the room's mixing rate. The service mixes every room at
//! 48 kHz (960 samples), so browsers keep wideband speech with each other; a phone leg is
//! resampled from and to 8 kHz at the mixer's edge ([`crate::resample`]). The mixer itself is
//! rate-agnostic (its tests run at 8 kHz).
//!
//! Per tick: every contributor's frame is added once into an i32 sum, and each listener gets
//! the sum minus its own contribution, soft-clipped to i16: O(N) work, not O(N^2). A listener
//! who hears exactly one other contributor (the two-party case) gets a plain copy of that
//! frame, with no arithmetic at all.

/// Frames above this magnitude are compressed towards full scale instead of wrapping.
pub const SOFT_CLIP_KNEE: i32 = 24576;

/// Caller-chosen participant identifier (unique within a room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

/// Errors from room membership changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MixerError {
    /// `add` with an id already present.
    #[error("participant {0:?} is already in the mix")]
    Exists(ParticipantId),
    /// An id not in the mix.
    #[error("participant {0:?} is not in the mix")]
    Unknown(ParticipantId),
    /// A pushed frame of the wrong length.
    #[error("frame of {got} samples, mixer runs at {expected}")]
    FrameSize {
        /// Samples per frame of this mixer.
        expected: usize,
        /// Samples given.
        got: usize,
    },
}

#[derive(Debug, Clone)]
struct Participant {
    id: ParticipantId,
    input: Vec<i16>,
    has_input: bool,
    send_muted: bool,
    recv_muted: bool,
    output: Vec<i16>,
}

/// `out = soft_clip(sum - own)` (`own` empty: nothing to subtract). The plain pass has no
/// per-sample branch, so it vectorizes; only a frame whose peak passes the knee (rare: loud
/// talkers at once) takes the clipping pass.
fn mix_out(out: &mut [i16], sum: &[i32], own: &[i16]) {
    let mut peak = 0u32;
    if own.is_empty() {
        for (o, &s) in out.iter_mut().zip(sum) {
            peak = peak.max(s.unsigned_abs());
            *o = s as i16;
        }
    } else {
        for ((o, &s), &x) in out.iter_mut().zip(sum).zip(own) {
            let v = s - x as i32;
            peak = peak.max(v.unsigned_abs());
            *o = v as i16;
        }
    }
    if peak > SOFT_CLIP_KNEE as u32 {
        if own.is_empty() {
            for (o, &s) in out.iter_mut().zip(sum) {
                *o = soft_clip(s);
            }
        } else {
            for ((o, &s), &x) in out.iter_mut().zip(sum).zip(own) {
                *o = soft_clip(s - x as i32);
            }
        }
    }
}

/// Copies participant `src`'s input into participant `dst`'s output (`src != dst`).
fn copy_input(parts: &mut [Participant], src: usize, dst: usize) {
    if src < dst {
        let (a, b) = parts.split_at_mut(dst);
        if let (Some(s), Some(d)) = (a.get(src), b.first_mut()) {
            d.output.copy_from_slice(&s.input);
        }
    } else if dst < src {
        let (a, b) = parts.split_at_mut(src);
        if let (Some(d), Some(s)) = (a.get_mut(dst), b.first()) {
            d.output.copy_from_slice(&s.input);
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Mixer {
    frame: usize,
    parts: Vec<Participant>,
    sum: Vec<i32>,
}

/// Soft clipping: identity up to the knee, then a rational curve with slope 1 at the knee
/// that approaches full scale and never reaches past it.
#[inline]
pub fn soft_clip(x: i32) -> i16 {
    let a = x.unsigned_abs() as i64;
    let knee = SOFT_CLIP_KNEE as i64;
    if a <= knee {
        return x as i16;
    }
    let room = i16::MAX as i64 - knee;
    let e = a - knee;
    let y = (knee + room * e / (e + room)) as i16;
    if x < 0 {
        -y
    } else {
        y
    }
}

impl Mixer {
    /// A mixer for frames of `frame_samples` samples.
    pub fn new(frame_samples: usize) -> Mixer {
        Mixer {
            frame: frame_samples,
            parts: Vec::new(),
            sum: vec![0; frame_samples],
        }
    }

    /// Samples per frame.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Participants in the mix.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the room is empty.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The two participants when the room has exactly two: the driver can forward between
    /// them directly (transcoding only) and skip the mixer tick.
    pub fn two_party(&self) -> Option<(ParticipantId, ParticipantId)> {
        match self.parts.as_slice() {
            [a, b] => Some((a.id, b.id)),
            _ => None,
        }
    }

    fn index(&self, id: ParticipantId) -> Result<usize, MixerError> {
        self.parts
            .iter()
            .position(|p| p.id == id)
            .ok_or(MixerError::Unknown(id))
    }

    /// Adds a participant (allocates its frame buffers once).
    pub fn add(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        if self.index(id).is_ok() {
            return Err(MixerError::Exists(id));
        }
        self.parts.push(Participant {
            id,
            input: vec![0; self.frame],
            has_input: false,
            send_muted: false,
            recv_muted: false,
            output: vec![0; self.frame],
        });
        Ok(())
    }

    /// Removes a participant; its audio leaves everyone's mix from the next tick.
    pub fn remove(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        let i = self.index(id)?;
        self.parts.swap_remove(i);
        Ok(())
    }

    /// Mutes what `id` sends: nobody hears it.
    pub fn set_send_muted(&mut self, id: ParticipantId, muted: bool) -> Result<(), MixerError> {
        let i = self.index(id)?;
        self.parts[i].send_muted = muted;
        Ok(())
    }

    /// Mutes what `id` receives: it hears silence.
    pub fn set_recv_muted(&mut self, id: ParticipantId, muted: bool) -> Result<(), MixerError> {
        let i = self.index(id)?;
        self.parts[i].recv_muted = muted;
        Ok(())
    }

    /// Whether `id` is muted for sending and for receiving.
    pub fn muted(&self, id: ParticipantId) -> Option<(bool, bool)> {
        let p = self.parts.get(self.index(id).ok()?)?;
        Some((p.send_muted, p.recv_muted))
    }

    /// Hands in `id`'s decoded (or concealed) frame for this tick. A participant that pushes
    /// nothing in a tick contributes silence.
    pub fn push(&mut self, id: ParticipantId, frame: &[i16]) -> Result<(), MixerError> {
        if frame.len() != self.frame {
            return Err(MixerError::FrameSize {
                expected: self.frame,
                got: frame.len(),
            });
        }
        let i = self.index(id)?;
        let p = &mut self.parts[i];
        p.input.copy_from_slice(frame);
        p.has_input = true;
        Ok(())
    }

    /// Mixes this tick: afterwards [`Mixer::output`] holds what each participant hears, and
    /// the inputs are consumed.
    pub fn mix(&mut self) {
        let contributes = |p: &Participant| p.has_input && !p.send_muted;
        let mut count = 0usize;
        let mut first_two = [0usize; 2];
        for (i, p) in self.parts.iter().enumerate() {
            if contributes(p) {
                if let Some(slot) = first_two.get_mut(count) {
                    *slot = i;
                }
                count += 1;
            }
        }
        if count >= 2 {
            self.sum.fill(0);
            for p in self.parts.iter().filter(|p| contributes(p)) {
                for (s, &x) in self.sum.iter_mut().zip(&p.input) {
                    *s += x as i32;
                }
            }
        }
        for i in 0..self.parts.len() {
            let own = contributes(&self.parts[i]);
            let others = count - own as usize;
            if self.parts[i].recv_muted || others == 0 {
                self.parts[i].output.fill(0);
            } else if others == 1 {
                // Hears exactly one other (the two-party case): a plain copy, no mixing.
                let src = if first_two[0] == i {
                    first_two[1]
                } else {
                    first_two[0]
                };
                copy_input(&mut self.parts, src, i);
            } else {
                let p = &mut self.parts[i];
                let own_input: &[i16] = if own { &p.input } else { &[] };
                mix_out(&mut p.output, &self.sum, own_input);
            }
        }
        for p in &mut self.parts {
            p.has_input = false;
        }
    }

    /// What `id` hears after the last [`Mixer::mix`].
    pub fn output(&self, id: ParticipantId) -> Option<&[i16]> {
        self.index(id).ok().map(|i| self.parts[i].output.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> ParticipantId {
        ParticipantId(n)
    }

    fn room(n: u64, frame: usize) -> Mixer {
        let mut m = Mixer::new(frame);
        for i in 0..n {
            assert_eq!(m.add(id(i)), Ok(()));
        }
        m
    }

    fn out(m: &Mixer, i: u64) -> Vec<i16> {
        m.output(id(i)).map(<[i16]>::to_vec).unwrap_or_default()
    }

    #[test]
    fn n_minus_one_sums_are_exact() {
        let mut m = room(4, 4);
        let frames: [[i16; 4]; 4] = [
            [100, -200, 300, 0],
            [1000, 2000, -3000, 7],
            [-5, 5, -5, 5],
            [20000, -20000, 1, -1],
        ];
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(m.push(id(i as u64), f), Ok(()));
        }
        m.mix();
        assert_eq!(out(&m, 0), vec![20995, -17995, -3004, 11]);
        assert_eq!(out(&m, 1), vec![20095, -20195, 296, 4]);
        assert_eq!(out(&m, 2), vec![21100, -18200, -2699, 6]);
        assert_eq!(out(&m, 3), vec![1095, 1805, -2705, 12]);
    }

    #[test]
    fn two_party_is_a_plain_copy() {
        let mut m = room(2, 3);
        assert_eq!(m.two_party(), Some((id(0), id(1))));
        let _ = m.push(id(0), &[1, 2, 3]);
        let _ = m.push(id(1), &[32767, -32768, 5]);
        m.mix();
        assert_eq!(out(&m, 0), vec![32767, -32768, 5]);
        assert_eq!(out(&m, 1), vec![1, 2, 3]);
    }

    #[test]
    fn single_talker_is_heard_by_everyone_else_unaltered() {
        let mut m = room(3, 2);
        let _ = m.push(id(1), &[-32768, 32767]);
        m.mix();
        assert_eq!(out(&m, 0), vec![-32768, 32767]);
        assert_eq!(out(&m, 1), vec![0, 0]);
        assert_eq!(out(&m, 2), vec![-32768, 32767]);
        // Inputs are consumed: the next tick without pushes is silent.
        m.mix();
        assert_eq!(out(&m, 0), vec![0, 0]);
    }

    #[test]
    fn mutes_send_and_receive() {
        let mut m = room(3, 1);
        assert_eq!(m.set_send_muted(id(0), true), Ok(()));
        assert_eq!(m.set_recv_muted(id(2), true), Ok(()));
        for i in 0..3 {
            let _ = m.push(id(i), &[10 * (i as i16 + 1)]);
        }
        m.mix();
        assert_eq!(out(&m, 0), vec![50]); // hears 1 and 2
        assert_eq!(out(&m, 1), vec![30]); // hears 2 only (0 send-muted)
        assert_eq!(out(&m, 2), vec![0]); // receive-muted
        assert_eq!(
            m.set_send_muted(id(9), true),
            Err(MixerError::Unknown(id(9)))
        );
    }

    #[test]
    fn leaving_stops_audio_in_others_mix() {
        let mut m = room(3, 1);
        for i in 0..3 {
            let _ = m.push(id(i), &[1 << i]);
        }
        m.mix();
        assert_eq!(out(&m, 0), vec![6]);
        assert_eq!(m.remove(id(2)), Ok(()));
        assert_eq!(m.remove(id(2)), Err(MixerError::Unknown(id(2))));
        for i in 0..2 {
            let _ = m.push(id(i), &[1 << i]);
        }
        m.mix();
        assert_eq!(out(&m, 0), vec![2]);
        assert_eq!(out(&m, 1), vec![1]);
        assert_eq!(m.output(id(2)), None);
    }

    #[test]
    fn membership_and_frame_errors() {
        let mut m = room(1, 160);
        assert_eq!(m.add(id(0)), Err(MixerError::Exists(id(0))));
        assert_eq!(
            m.push(id(0), &[0; 10]),
            Err(MixerError::FrameSize {
                expected: 160,
                got: 10
            })
        );
        assert_eq!(m.push(id(5), &[0; 160]), Err(MixerError::Unknown(id(5))));
        assert_eq!(m.two_party(), None);
    }

    #[test]
    fn loud_sums_are_soft_clipped_not_wrapped() {
        let mut m = room(4, 1);
        for i in 0..4 {
            let _ = m.push(id(i), &[30000]);
        }
        m.mix();
        let y = out(&m, 0)[0];
        assert!(y > SOFT_CLIP_KNEE as i16 && y < i16::MAX, "{y}");
        assert_eq!(soft_clip(SOFT_CLIP_KNEE), SOFT_CLIP_KNEE as i16);
        assert_eq!(soft_clip(-SOFT_CLIP_KNEE), -SOFT_CLIP_KNEE as i16);
        let y = soft_clip(SOFT_CLIP_KNEE + 1000);
        assert_eq!(y, SOFT_CLIP_KNEE as i16 + 891); // 8191 * 1000 / 9191
        assert_eq!(soft_clip(i32::MAX), 32766);
        assert_eq!(soft_clip(i32::MIN), -32766);
    }

    #[test]
    fn everyone_hears_the_others_tones_and_not_their_own() {
        use crate::testing::{tone_ratio_blocks, Sine};
        let tones = [440.0, 1000.0, 1500.0];
        let mut gens: Vec<Sine> = tones.iter().map(|&f| Sine::new(f, 8000, 8000)).collect();
        let mut m = room(3, 160);
        let mut heard: Vec<Vec<i16>> = vec![Vec::new(); 3];
        for tick in 0..10 {
            if tick == 5 {
                // Participant 2 leaves half way.
                assert_eq!(m.remove(id(2)), Ok(()));
            }
            for (i, g) in gens.iter_mut().enumerate() {
                let _ = m.push(id(i as u64), &g.take(160));
            }
            m.mix();
            for (i, h) in heard.iter_mut().enumerate() {
                h.extend_from_slice(m.output(id(i as u64)).unwrap_or(&[0; 160]));
            }
        }
        let ratio = |who: usize, half: usize, f: f64| {
            tone_ratio_blocks(&heard[who][half * 800..(half + 1) * 800], f, 8000, 160)
        };
        // First half: each hears the other two (half the power each), not itself.
        for who in 0..3 {
            for (other, &f) in tones.iter().enumerate() {
                let r = ratio(who, 0, f);
                if other == who {
                    assert!(r < 0.01, "{who} hears itself: {r}");
                } else {
                    assert!((r - 0.5).abs() < 0.05, "{who} hears {f} Hz at {r}");
                }
            }
        }
        // Second half: 0 and 1 hear only each other; 2's tone is gone.
        assert!(ratio(0, 1, 1000.0) > 0.95 && ratio(0, 1, 1500.0) < 0.01);
        assert!(ratio(1, 1, 440.0) > 0.95 && ratio(1, 1, 1500.0) < 0.01);
    }

    proptest! {
        #[test]
        fn matches_naive_n_minus_one(
            frames in proptest::collection::vec(proptest::collection::vec(any::<i16>(), 8), 0..8),
            muted in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let mut m = room(8, 8);
            for (i, f) in frames.iter().enumerate() {
                let _ = m.push(id(i as u64), f);
                let _ = m.set_send_muted(id(i as u64), muted[i]);
            }
            m.mix();
            for listener in 0..8 {
                let others = frames
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != listener && !muted[*i])
                    .count();
                for k in 0..8 {
                    let naive: i32 = frames
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != listener && !muted[*i])
                        .map(|(_, f)| f[k] as i32)
                        .sum();
                    // One other talker is copied untouched; sums of several are soft-clipped.
                    let want = if others == 1 { naive as i16 } else { soft_clip(naive) };
                    prop_assert_eq!(out(&m, listener as u64)[k], want);
                }
            }
        }

        #[test]
        fn soft_clip_is_monotonic_and_bounded(a: i32, b: i32) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(soft_clip(lo) <= soft_clip(hi));
            prop_assert!(soft_clip(a) > i16::MIN);
        }
    }
}
