//! Pieces of a two-party room's direct path: each packet from one participant is transcoded and
//! sent to the other as it arrives, with no mixer tick. The receiver's jitter buffer absorbs
//! network jitter; these keep the outbound stream's timing honest.
//!
//! - [`Continuity`]: tells, from the source's RTP timestamps, how many frames were lost before a
//!   packet (the outbound stream skips as many, so the receiver conceals them) and drops late or
//!   duplicate packets (forwarding them would send timestamps backwards).
//! - [`Reframer`]: cuts 8 kHz audio of any packet length into 20 ms frames.

/// Samples in 20 ms at 8 kHz.
pub const FRAME_8K: usize = 160;

/// Gaps longer than this many source clock units are a new start, not loss (2 s at 8 kHz).
const MAX_GAP_8K_UNITS: u32 = 16_000;

/// Where a source's next packet is expected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Continuity {
    next: Option<(u32, u32)>,
}

impl Continuity {
    /// Admits a packet of `ssrc` with `timestamp` lasting `duration` clock units; `clock` is the
    /// source's RTP clock rate. Returns the clock units missing before it (0 when it follows
    /// on), or `None` for a late or duplicate packet, which is not forwarded. A new SSRC or a
    /// jump of more than 2 s starts over.
    pub fn admit(&mut self, ssrc: u32, timestamp: u32, duration: u32, clock: u32) -> Option<u32> {
        let max_gap = MAX_GAP_8K_UNITS.saturating_mul(clock / 8000);
        let gap = match self.next {
            Some((s, expected)) if s == ssrc => {
                let d = timestamp.wrapping_sub(expected) as i32;
                if d < 0 && d.unsigned_abs() <= max_gap {
                    return None;
                }
                if d < 0 || d as u32 > max_gap {
                    0
                } else {
                    d as u32
                }
            }
            _ => 0,
        };
        self.next = Some((ssrc, timestamp.wrapping_add(duration)));
        Some(gap)
    }

    /// Forgets the source (the next packet starts over).
    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// Collects 8 kHz samples and hands them out in 20 ms frames.
#[derive(Debug, Clone)]
pub struct Reframer {
    buf: [i16; FRAME_8K * 8],
    len: usize,
    frame: [i16; FRAME_8K],
}

impl Default for Reframer {
    fn default() -> Reframer {
        Reframer {
            buf: [0; FRAME_8K * 8],
            len: 0,
            frame: [0; FRAME_8K],
        }
    }
}

impl Reframer {
    /// Appends samples; what does not fit (more than 160 ms pending) is dropped.
    pub fn push(&mut self, samples: &[i16]) {
        let room = self.buf.len() - self.len;
        let n = samples.len().min(room);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.len..self.len + n), samples.get(..n))
        {
            dst.copy_from_slice(src);
            self.len += n;
        }
    }

    /// Drops samples waiting for the rest of their frame (before a gap).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Samples waiting.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// The next complete frame, if there is one.
    pub fn pop(&mut self) -> Option<&[i16; FRAME_8K]> {
        if self.len < FRAME_8K {
            return None;
        }
        self.frame.copy_from_slice(&self.buf[..FRAME_8K]);
        self.buf.copy_within(FRAME_8K..self.len, 0);
        self.len -= FRAME_8K;
        Some(&self.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_counts_gaps_drops_late_packets_and_restarts() {
        let mut c = Continuity::default();
        assert_eq!(c.admit(7, 1000, 160, 8000), Some(0));
        assert_eq!(c.admit(7, 1160, 160, 8000), Some(0));
        // Two packets lost.
        assert_eq!(c.admit(7, 1640, 160, 8000), Some(320));
        // A late one and a duplicate.
        assert_eq!(c.admit(7, 1320, 160, 8000), None);
        assert_eq!(c.admit(7, 1640, 160, 8000), None);
        assert_eq!(c.admit(7, 1800, 160, 8000), Some(0));
        // New SSRC, and a jump far ahead: a new start.
        assert_eq!(c.admit(8, 5, 160, 8000), Some(0));
        assert_eq!(c.admit(8, 5 + 160 + 100_000, 160, 8000), Some(0));
        // Wrapping timestamps at 48 kHz.
        let mut w = Continuity::default();
        assert_eq!(w.admit(1, u32::MAX - 100, 960, 48000), Some(0));
        assert_eq!(w.admit(1, 859, 960, 48000), Some(0));
        assert_eq!(w.admit(1, 859 + 2 * 960, 960, 48000), Some(960));
    }

    #[test]
    fn reframer_cuts_any_packet_length_into_20_ms() {
        let mut r = Reframer::default();
        let ten: Vec<i16> = (0..80).collect();
        r.push(&ten);
        assert!(r.pop().is_none());
        r.push(&ten);
        let frame = r.pop().map(|f| f.to_vec());
        assert_eq!(
            frame.as_deref().map(|f| (f[0], f[79], f[80])),
            Some((0, 79, 0))
        );
        let thirty: Vec<i16> = (0..240).collect();
        r.push(&thirty);
        assert!(r.pop().is_some());
        assert_eq!(r.pending(), 80);
        r.clear();
        assert!(r.pop().is_none());
    }
}
