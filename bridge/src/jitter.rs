//! Adaptive jitter buffer for one inbound leg.
//!
//! Packets are ordered by RTP sequence number; each packet is one frame (20 ms by default, the
//! packetization both sides of the bridge use). The caller pops one frame per tick of its
//! own clock and conceals on [`Playout::Missing`].
//!
//! Delay control works in frames of buffered depth, like pjmedia's jbuf, with the target taken
//! from the RFC 3550 interarrival jitter estimate: the buffer fills to the target before it
//! starts and at each talkspurt (marker bit); an underrun holds the playout position so a late
//! packet still plays (the delay grows by the spike); a buffer that stays deeper than the
//! target drops one frame per window until it is back on target, and one that never reaches
//! the target inserts one. Slots are a fixed ring whose payload buffers are reused, so a steady
//! stream allocates nothing per packet.

use std::time::{Duration, Instant};

/// Tuning of one jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the stream (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// Duration of one frame (= one packet).
    pub frame: Duration,
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay, and the bound on buffered depth.
    pub max_delay: Duration,
    /// Ring capacity in packets (rounded up to a power of two). Bounds reordering distance.
    pub max_packets: usize,
}

impl JitterConfig {
    /// 20 ms frames, 20..=200 ms delay, 64 slots.
    pub fn new(clock_rate: u32) -> JitterConfig {
        JitterConfig {
            clock_rate,
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_packets: 64,
        }
    }

    fn frames(&self, d: Duration) -> u16 {
        let f = self.frame.as_micros().max(1);
        d.as_micros().div_ceil(f).clamp(1, u16::MAX as u128) as u16
    }
}

/// What the caller plays this tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The next frame's payload.
    Frame(&'a [u8]),
    /// The frame due now is lost or late: conceal (for Opus, [`JitterBuffer::peek`] gives the
    /// next packet for FEC).
    Missing,
    /// Nothing is playing (before the first packet, while filling, or after the stream went
    /// quiet): play silence, nothing was lost.
    Empty,
}

/// What became of an inserted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Buffered for playout.
    Stored,
    /// Same sequence number is already buffered.
    Duplicate,
    /// Its playout time has passed.
    Late,
    /// Started a new stream (first packet, SSRC change or sequence restart) and was buffered.
    Restarted,
}

/// Counters since creation (cumulative across SSRC changes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets handed to `insert`.
    pub received: u64,
    /// Expected minus received (RFC 3550 cumulative loss, duplicates not counted as received).
    pub lost: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Packets received more than once.
    pub duplicates: u64,
    /// Frames returned as [`Playout::Missing`].
    pub concealed: u64,
    /// Buffered frames dropped to bound or shrink the delay.
    pub discarded: u64,
    /// Times the sender's SSRC changed.
    pub ssrc_changes: u64,
    /// Interarrival jitter now, in RTP clock units (RFC 3550).
    pub jitter: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    seq: u16,
    filled: bool,
    audio: bool,
    marker: bool,
    timestamp: u32,
    payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Buffering { since: Instant },
    Playing,
}

/// Sequence numbers further ahead than this restart the stream (RFC 3550 MAX_DROPOUT).
const MAX_DROPOUT: i32 = 3000;
/// Sequence numbers further behind than this restart the stream (RFC 3550 MAX_MISORDER).
const MAX_MISORDER: i32 = 100;
/// Pops per delay-adaptation window (500 ms at 20 ms frames).
const WINDOW: u16 = 25;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Vec<Slot>,
    mask: u16,
    state: State,
    ssrc: Option<u32>,
    cursor: u16,
    // Sequence after the last frame played or skipped: the start may never move before it.
    floor: Option<u16>,
    max_seq: u16,
    // RFC 3550 loss accounting (extended sequence numbers) for the current source.
    base_ext: u64,
    max_ext: u64,
    unique: u64,
    lost_before: u64,
    // RFC 3550 jitter, scaled by 16 as in appendix A.8.
    epoch: Option<Instant>,
    prev_transit: Option<u32>,
    jitter16: u32,
    starved: u16,
    win_pops: u16,
    win_min: u16,
    win_max: u16,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer; allocates its ring once.
    pub fn new(cfg: JitterConfig) -> JitterBuffer {
        let cap = cfg
            .max_packets
            .clamp(4, 1 << 12)
            .next_power_of_two()
            .max(cfg.frames(cfg.max_delay) as usize + 1)
            .min(1 << 12)
            .next_power_of_two();
        let slots = (0..cap)
            .map(|_| Slot {
                seq: 0,
                filled: false,
                audio: false,
                marker: false,
                timestamp: 0,
                payload: Vec::with_capacity(320),
            })
            .collect();
        JitterBuffer {
            cfg,
            slots,
            mask: (cap - 1) as u16,
            state: State::Idle,
            ssrc: None,
            cursor: 0,
            floor: None,
            max_seq: 0,
            base_ext: 0,
            max_ext: 0,
            unique: 0,
            lost_before: 0,
            epoch: None,
            prev_transit: None,
            jitter16: 0,
            starved: 0,
            win_pops: 0,
            win_min: u16::MAX,
            win_max: 0,
            stats: JitterStats::default(),
        }
    }

    /// Counters, with loss computed now.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats;
        s.lost = self.lost_before + self.lost_current();
        s.jitter = self.jitter();
        s
    }

    /// Interarrival jitter in RTP clock units (the RTCP report field).
    pub fn jitter(&self) -> u32 {
        self.jitter16 >> 4
    }

    /// Extended highest sequence number received (the RTCP report field).
    pub fn highest_ext_seq(&self) -> u32 {
        self.max_ext as u32
    }

    /// SSRC of the stream being received.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Interarrival jitter as a duration.
    pub fn jitter_duration(&self) -> Duration {
        let rate = self.cfg.clock_rate.max(1) as u64;
        Duration::from_micros(self.jitter() as u64 * 1_000_000 / rate)
    }

    /// Current target delay: four times the jitter estimate, within the configured bounds.
    pub fn target_delay(&self) -> Duration {
        (self.jitter_duration() * 4).clamp(self.cfg.min_delay, self.cfg.max_delay)
    }

    fn target_frames(&self) -> u16 {
        self.cfg.frames(self.target_delay())
    }

    fn max_frames(&self) -> u16 {
        self.cfg.frames(self.cfg.max_delay).min(self.mask)
    }

    fn lost_current(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        let expected = self.max_ext + 1 - self.base_ext;
        expected.saturating_sub(self.unique)
    }

    /// Frames from the playout position through the newest packet, holes included.
    fn depth(&self) -> u16 {
        let d = self.max_seq.wrapping_sub(self.cursor) as i16;
        if d < 0 {
            0
        } else {
            d as u16 + 1
        }
    }

    fn advance(&mut self) {
        self.cursor = self.cursor.wrapping_add(1);
        self.floor = Some(self.cursor);
    }

    fn slot_index(&self, seq: u16) -> usize {
        (seq & self.mask) as usize
    }

    fn flush(&mut self) {
        for s in &mut self.slots {
            s.filled = false;
        }
    }

    fn restart(&mut self, now: Instant, seq: u16) {
        self.lost_before += self.lost_current();
        self.flush();
        self.cursor = seq;
        self.floor = None;
        self.max_seq = seq;
        self.base_ext = seq as u64;
        self.max_ext = seq as u64;
        self.unique = 0;
        self.prev_transit = None;
        self.starved = 0;
        self.state = State::Buffering { since: now };
        self.reset_window();
    }

    fn reset_window(&mut self) {
        self.win_pops = 0;
        self.win_min = u16::MAX;
        self.win_max = 0;
    }

    fn update_jitter(&mut self, now: Instant, timestamp: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.duration_since(epoch).as_nanos() * self.cfg.clock_rate as u128
            / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(prev) = self.prev_transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            // A timestamp discontinuity is not network jitter: re-anchor instead.
            let jump = self
                .cfg
                .max_delay
                .saturating_mul(2)
                .max(Duration::from_millis(500));
            let jump_units = (jump.as_micros() as u64 * self.cfg.clock_rate as u64 / 1_000_000)
                .min(u32::MAX as u64) as u32;
            if d <= jump_units {
                self.jitter16 = self
                    .jitter16
                    .wrapping_add(d)
                    .wrapping_sub((self.jitter16 + 8) >> 4);
            }
        }
        self.prev_transit = Some(transit);
    }

    /// Buffers one RTP packet that arrived at `now`.
    pub fn insert(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        ssrc: u32,
        payload: &[u8],
    ) -> Inserted {
        self.insert_inner(now, seq, timestamp, marker, ssrc, Some(payload))
    }

    /// Accounts for a packet of the same stream that carries no audio (an RFC 4733
    /// telephone-event sent instead of audio): its sequence number is received, not lost, and
    /// its slot plays as [`Playout::Empty`] rather than being concealed. Its timestamp (the
    /// event's start, repeated) does not feed the jitter estimate.
    pub fn insert_no_audio(&mut self, now: Instant, seq: u16, ssrc: u32) -> Inserted {
        self.insert_inner(now, seq, 0, false, ssrc, None)
    }

    fn insert_inner(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        ssrc: u32,
        payload: Option<&[u8]>,
    ) -> Inserted {
        self.stats.received += 1;
        let mut outcome = Inserted::Stored;
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.stats.ssrc_changes += 1;
            }
            self.restart(now, seq);
            self.ssrc = Some(ssrc);
            outcome = Inserted::Restarted;
        }
        if payload.is_some() {
            self.update_jitter(now, timestamp);
        }

        let diff = seq.wrapping_sub(self.cursor) as i16 as i32;
        if outcome == Inserted::Stored && !(-MAX_MISORDER..MAX_DROPOUT).contains(&diff) {
            // The sender restarted its sequence without changing SSRC.
            self.restart(now, seq);
            outcome = Inserted::Restarted;
        } else if diff < 0 {
            let room = self.mask as i32 + 1 - self.depth() as i32;
            let after_floor = self.floor.is_none_or(|f| seq.wrapping_sub(f) as i16 >= 0);
            if matches!(self.state, State::Buffering { .. }) && -diff < room && after_floor {
                // Not started yet: an earlier packet just moves the start back.
                self.cursor = seq;
            } else {
                self.stats.late += 1;
                self.note_seq(seq, true);
                return Inserted::Late;
            }
        }

        let idx = self.slot_index(seq);
        if self.slots[idx].filled && self.slots[idx].seq == seq {
            self.stats.duplicates += 1;
            return Inserted::Duplicate;
        }
        self.note_seq(seq, true);

        // Bound the depth: drop the oldest frames so the newest fits within max delay.
        let ahead = seq.wrapping_sub(self.cursor) as i16 as i32;
        let max_frames = self.max_frames() as i32;
        if ahead >= max_frames {
            let drop = ahead - max_frames + 1;
            for _ in 0..drop {
                let i = self.slot_index(self.cursor);
                if self.slots[i].filled && self.slots[i].seq == self.cursor {
                    self.slots[i].filled = false;
                    self.stats.discarded += 1;
                }
                self.advance();
            }
        }

        let slot = &mut self.slots[idx];
        slot.seq = seq;
        slot.filled = true;
        slot.marker = marker;
        slot.timestamp = timestamp;
        slot.audio = payload.is_some();
        slot.payload.clear();
        slot.payload.extend_from_slice(payload.unwrap_or_default());

        match self.state {
            State::Idle => {
                self.cursor = seq;
                self.state = State::Buffering { since: now };
                self.reset_window();
            }
            State::Playing if marker && self.starved > 0 => {
                // A talkspurt starts while we were starved: refill to the target first.
                self.cursor = seq;
                self.state = State::Buffering { since: now };
                self.starved = 0;
                self.reset_window();
            }
            _ => {}
        }
        outcome
    }

    /// Extended sequence tracking for loss (RFC 3550 A.1, without probation).
    fn note_seq(&mut self, seq: u16, unique: bool) {
        let d = seq.wrapping_sub(self.max_ext as u16) as i16 as i64;
        if d > 0 {
            self.max_ext = self.max_ext.wrapping_add(d as u64);
            self.max_seq = seq;
        }
        if unique {
            self.unique += 1;
        }
    }

    /// The packet at the playout position, if buffered: after a `Missing`, the packet that
    /// follows the lost one (its Opus in-band FEC rebuilds the lost frame).
    pub fn peek(&self) -> Option<&[u8]> {
        let s = &self.slots[self.slot_index(self.cursor)];
        (s.filled && s.seq == self.cursor).then_some(s.payload.as_slice())
    }

    /// The frame to play for this tick. Call once per frame duration.
    pub fn pop(&mut self, now: Instant) -> Playout<'_> {
        let mut started = false;
        match self.state {
            State::Idle => return Playout::Empty,
            State::Buffering { since } => {
                let ready = self.depth() >= self.target_frames()
                    || now.saturating_duration_since(since) >= self.cfg.max_delay;
                if !ready {
                    return Playout::Empty;
                }
                self.state = State::Playing;
                self.starved = 0;
                self.reset_window();
                started = true;
            }
            State::Playing => {}
        }

        let depth = self.depth();
        if depth == 0 {
            // Nothing at or after the playout position: hold it, the packet may be late.
            self.starved += 1;
            if self.starved > self.max_frames() {
                self.state = State::Idle;
                return Playout::Empty;
            }
            self.stats.concealed += 1;
            return Playout::Missing;
        }
        if self.starved > 0 {
            // The frames concealed while holding stood in for packets that never came: skip
            // that many holes. Credit left over at a real packet means it was late, and the
            // delay has grown by that much.
            let mut credit = self.starved;
            while credit > 0 && self.depth() > 1 && self.peek().is_none() {
                self.advance();
                credit -= 1;
            }
            self.starved = 0;
        }

        self.win_pops += 1;
        self.win_min = self.win_min.min(depth);
        self.win_max = self.win_max.max(depth);
        if self.win_pops >= WINDOW {
            let target = self.target_frames();
            let (min, max) = (self.win_min, self.win_max);
            self.reset_window();
            if min > target {
                // Deeper than needed for a whole window: drop one frame.
                let i = self.slot_index(self.cursor);
                if self.slots[i].filled && self.slots[i].seq == self.cursor {
                    self.slots[i].filled = false;
                    self.stats.discarded += 1;
                }
                self.advance();
                if self.depth() == 0 {
                    self.stats.concealed += 1;
                    return Playout::Missing;
                }
            } else if max < target {
                // Never reached the target: hold one frame to grow the delay.
                self.stats.concealed += 1;
                return Playout::Missing;
            }
        }

        let idx = self.slot_index(self.cursor);
        let seq = self.cursor;
        if !(self.slots[idx].filled && self.slots[idx].seq == seq) {
            self.advance();
            self.stats.concealed += 1;
            return Playout::Missing;
        }
        let depth = self.depth();
        if self.slots[idx].marker && !started && depth < self.target_frames() {
            // Talkspurt start below target: wait here (silence) until the target is buffered.
            self.state = State::Buffering { since: now };
            return Playout::Empty;
        }
        self.advance();
        let slot = &mut self.slots[idx];
        slot.filled = false;
        if !slot.audio {
            return Playout::Empty;
        }
        Playout::Frame(&slot.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FRAME: Duration = Duration::from_millis(20);

    /// A sender of 20 ms G.711 packets whose payload carries its own sequence number, and a
    /// receiver ticking every 20 ms, both in virtual time.
    struct Sim {
        jb: JitterBuffer,
        t0: Instant,
        played: Vec<Option<u16>>,
    }

    fn payload(seq: u16) -> [u8; 2] {
        seq.to_be_bytes()
    }

    impl Sim {
        fn new() -> Sim {
            Sim::with(JitterConfig::new(8000))
        }
        fn with(cfg: JitterConfig) -> Sim {
            Sim {
                jb: JitterBuffer::new(cfg),
                t0: Instant::now(),
                played: Vec::new(),
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
        fn insert(&mut self, ms: u64, seq: u16, ts: u32, marker: bool, ssrc: u32) -> Inserted {
            let now = self.at(ms);
            self.jb.insert(now, seq, ts, marker, ssrc, &payload(seq))
        }
        /// Returns the sequence number played, None for Missing, and skips Empty.
        fn pop(&mut self, ms: u64) -> Option<Option<u16>> {
            let now = self.at(ms);
            let r = match self.jb.pop(now) {
                Playout::Frame(p) => Some(Some(u16::from_be_bytes([p[0], p[1]]))),
                Playout::Missing => Some(None),
                Playout::Empty => None,
            };
            if let Some(x) = r {
                self.played.push(x);
            }
            r
        }
        /// Runs packets `(send_ms_offset_from_arrival, seq)` given as (arrival_ms, seq, ts)
        /// against 20 ms ticks at `tick_phase + 20k` up to `end_ms`.
        fn run(&mut self, packets: &[(u64, u16, u32)], tick_phase: u64, end_ms: u64) {
            let mut pkts = packets.to_vec();
            pkts.sort_by_key(|p| p.0);
            let mut i = 0;
            let mut tick = tick_phase;
            while tick <= end_ms {
                while i < pkts.len() && pkts[i].0 <= tick {
                    let (ms, seq, ts) = pkts[i];
                    self.insert(ms, seq, ts, false, 7);
                    i += 1;
                }
                self.pop(tick);
                tick += 20;
            }
        }
        fn frames(&self) -> Vec<u16> {
            self.played.iter().flatten().copied().collect()
        }
    }

    fn stream(first_seq: u16, n: u16) -> Vec<(u64, u16, u32)> {
        (0..n)
            .map(|i| {
                (
                    i as u64 * 20,
                    first_seq.wrapping_add(i),
                    1000 + i as u32 * 160,
                )
            })
            .collect()
    }

    #[test]
    fn plays_in_order_stream_without_loss() {
        let mut sim = Sim::new();
        sim.run(&stream(100, 50), 5, 1000);
        assert_eq!(sim.frames(), (100..150).collect::<Vec<_>>());
        let s = sim.jb.stats();
        assert_eq!((s.received, s.lost, s.late, s.duplicates), (50, 0, 0, 0));
        assert_eq!(sim.jb.jitter(), 0);
    }

    #[test]
    fn reorders_within_the_delay() {
        let mut sim = Sim::new();
        let mut p = stream(0, 20);
        // Swap arrival of 5 and 6, and 10 arrives after 12 (within 40 ms).
        p[5].0 = 121;
        p[6].0 = 119;
        p[10].0 = 245;
        let cfg = JitterConfig {
            min_delay: Duration::from_millis(60),
            ..JitterConfig::new(8000)
        };
        sim.jb = JitterBuffer::new(cfg);
        sim.run(&p, 10, 430);
        assert_eq!(sim.frames(), (0..20).collect::<Vec<_>>());
        assert_eq!(sim.jb.stats().concealed, 0);
        assert_eq!(sim.jb.stats().late, 0);
    }

    #[test]
    fn loss_burst_is_concealed_and_counted() {
        let mut sim = Sim::new();
        let p: Vec<_> = stream(0, 30)
            .into_iter()
            .filter(|(_, s, _)| !(10..14).contains(s))
            .collect();
        sim.run(&p, 5, 585);
        let mut expect: Vec<Option<u16>> = (0..30).map(Some).collect();
        for e in &mut expect[10..14] {
            *e = None;
        }
        assert_eq!(sim.played, expect);
        let s = sim.jb.stats();
        assert_eq!((s.lost, s.concealed), (4, 4));
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut sim = Sim::new();
        let mut p = stream(0, 10);
        p.push((41, 2, 1000 + 2 * 160));
        p.push((42, 2, 1000 + 2 * 160));
        sim.run(&p, 5, 300);
        assert_eq!(sim.frames(), (0..10).collect::<Vec<_>>());
        let s = sim.jb.stats();
        assert_eq!((s.duplicates, s.lost, s.received), (2, 0, 12));
    }

    #[test]
    fn late_packet_is_dropped_and_concealed() {
        let mut sim = Sim::new();
        let mut p = stream(0, 10);
        p[4].0 = 150; // far after its tick; 5.. arrived meanwhile
        sim.run(&p, 5, 185);
        assert_eq!(
            sim.played,
            [
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                None,
                Some(5),
                Some(6),
                Some(7),
                Some(8),
                Some(9)
            ]
        );
        let s = sim.jb.stats();
        assert_eq!((s.late, s.lost, s.concealed), (1, 0, 1));
    }

    #[test]
    fn sequence_wraps_at_65535() {
        let mut sim = Sim::new();
        let mut p = stream(65530, 12);
        p.swap(5, 6); // 65535 and 0 arrive swapped
        p[5].0 = 100;
        p[6].0 = 101;
        sim.run(&p, 7, 400);
        let want: Vec<u16> = (0..12).map(|i| 65530u16.wrapping_add(i)).collect();
        assert_eq!(sim.frames(), want);
        assert_eq!(sim.jb.stats().lost, 0);
        assert_eq!(sim.jb.highest_ext_seq(), 65536 + 5);
    }

    #[test]
    fn timestamp_jump_keeps_playing_and_jitter_small() {
        let mut sim = Sim::new();
        let mut p = stream(0, 30);
        for x in &mut p[15..] {
            x.2 = x.2.wrapping_add(8000 * 60); // sender's clock jumps a minute
        }
        sim.run(&p, 5, 700);
        assert_eq!(sim.frames(), (0..30).collect::<Vec<_>>());
        assert_eq!(sim.jb.jitter(), 0);
    }

    #[test]
    fn ssrc_change_resets_stream() {
        let mut sim = Sim::new();
        for i in 0..5u16 {
            sim.insert(i as u64 * 20, i, i as u32 * 160, i == 0, 1);
            sim.pop(i as u64 * 20 + 5);
        }
        // New source at a totally different sequence number.
        for i in 0..5u16 {
            let ms = 100 + i as u64 * 20;
            let r = sim.insert(ms, 40000 + i, 999 + i as u32 * 160, i == 0, 2);
            assert_eq!(
                r,
                if i == 0 {
                    Inserted::Restarted
                } else {
                    Inserted::Stored
                }
            );
            sim.pop(ms + 5);
        }
        for i in 0..3 {
            sim.pop(205 + i * 20);
        }
        let frames = sim.frames();
        assert_eq!(
            frames,
            vec![0, 1, 2, 3, 4, 40000, 40001, 40002, 40003, 40004]
        );
        let s = sim.jb.stats();
        assert_eq!((s.ssrc_changes, s.lost, s.late), (1, 0, 0));
        assert_eq!(sim.jb.ssrc(), Some(2));
    }

    #[test]
    fn sequence_restart_without_ssrc_change() {
        let mut sim = Sim::new();
        let mut p = stream(100, 5);
        p.extend((0..5).map(|i| (100 + i as u64 * 20, 20000 + i, 50000 + i as u32 * 160)));
        sim.run(&p, 5, 400);
        let frames = sim.frames();
        assert_eq!(
            frames,
            vec![100, 101, 102, 103, 104, 20000, 20001, 20002, 20003, 20004]
        );
        assert_eq!(sim.jb.stats().lost, 0);
    }

    /// Deterministic pseudo-random jitter.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    #[test]
    fn adapts_delay_up_under_jitter_and_back_down_after() {
        let mut sim = Sim::new();
        let mut rng = 42u64;
        let n = 1000u16;
        // 0-4 s: no jitter; 4-12 s: up to 80 ms; 12-20 s: none.
        let p: Vec<_> = (0..n)
            .map(|i| {
                let send = i as u64 * 20;
                let j = if (200..600).contains(&i) {
                    lcg(&mut rng) % 80
                } else {
                    0
                };
                (send + j, i, i as u32 * 160)
            })
            .collect();
        let mut late_by_phase = [0u64; 4];
        let mut target_by_phase = [Duration::ZERO; 4];
        let mut jitter_by_phase = [Duration::ZERO; 4];
        let mut pkts = p.clone();
        pkts.sort_by_key(|x| x.0);
        let mut i = 0;
        let mut tick = 3u64;
        while tick <= 20_400 {
            // 0: steady, 1: jitter starts (adapting), 2: jitter (adapted), 3: steady again.
            let phase = (tick / 4000).min(3) as usize;
            while i < pkts.len() && pkts[i].0 <= tick {
                let (ms, seq, ts) = pkts[i];
                if sim.insert(ms, seq, ts, false, 9) == Inserted::Late {
                    late_by_phase[phase] += 1;
                }
                i += 1;
            }
            sim.pop(tick);
            if tick == 3983 || tick == 11_983 || tick == 20_383 {
                target_by_phase[phase] = sim.jb.target_delay();
                jitter_by_phase[phase] = sim.jb.jitter_duration();
            }
            tick += 20;
        }
        assert_eq!(target_by_phase[0], Duration::from_millis(20));
        assert!(
            target_by_phase[2] >= Duration::from_millis(80),
            "target under jitter {:?}",
            target_by_phase[2]
        );
        assert_eq!(target_by_phase[3], Duration::from_millis(20));
        // Uniform 0-80 ms delay: the mean |D| of RFC 3550 is 80/3 ms.
        let j = jitter_by_phase[2].as_secs_f64() * 1000.0;
        assert!((20.0..34.0).contains(&j), "jitter estimate {j} ms");
        // Late packets happen while adapting, then (nearly) stop once adapted.
        assert!(late_by_phase[1] > 0, "{late_by_phase:?}");
        assert!(
            late_by_phase[2] * 5 <= late_by_phase[1],
            "{late_by_phase:?}"
        );
        assert_eq!(late_by_phase[3], 0);
        // After the jitter ends, the buffer shrinks back to about one frame: the last packet
        // plays within 40 ms of its arrival.
        let last = sim.played.iter().rposition(|x| *x == Some(n - 1));
        assert!(last.is_some());
        let depth_at_end = sim.jb.depth();
        assert_eq!(depth_at_end, 0);
        let stats = sim.jb.stats();
        assert_eq!(stats.lost, 0);
        assert_eq!(stats.jitter, sim.jb.jitter());
        assert!(stats.discarded > 0, "shrinking drops frames: {stats:?}");
        // Everything was played once, in order, apart from late/discarded frames.
        let frames = sim.frames();
        assert!(frames.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn shrinks_after_a_delay_spike() {
        let mut sim = Sim::new();
        // A 120 ms spike on packets 50..56 (they all arrive together), then steady again.
        let p: Vec<_> = (0..400u16)
            .map(|i| {
                let send = i as u64 * 20;
                let arr = if (50..56).contains(&i) { 56 * 20 } else { send };
                (arr, i, i as u32 * 160)
            })
            .collect();
        // Play until after the spike and measure the delay of the last packet.
        sim.run(&p, 5, 400 * 20 + 200);
        let s = sim.jb.stats();
        assert_eq!(s.late, 0, "a held underrun lets late packets play: {s:?}");
        let frames = sim.frames();
        assert_eq!(frames.len() as u64 + s.discarded, 400);
        // Each frame played at most ~one frame after arrival at the end.
        assert!(sim.jb.depth() == 0);
        assert!(s.discarded >= 4, "delay shrank back: {s:?}");
    }

    /// Sender clock `ppm` parts per million off ours: packets every 20 ms of its clock.
    fn drift_run(ppm: i64, seconds: u64) -> (Sim, u16) {
        let mut sim = Sim::new();
        let n = (seconds * 50) as u16;
        let p: Vec<_> = (0..n)
            .map(|i| {
                let us = i as i64 * 20_000 * (1_000_000 - ppm) / 1_000_000;
                ((us / 1000) as u64, i, i as u32 * 160)
            })
            .collect();
        let mut max_depth = 0;
        let mut pkts = p.clone();
        pkts.sort_by_key(|x| x.0);
        let mut i = 0;
        let mut tick = 10u64;
        while tick < seconds * 1000 - 100 {
            while i < pkts.len() && pkts[i].0 <= tick {
                let (ms, seq, ts) = pkts[i];
                sim.insert(ms, seq, ts, false, 1);
                i += 1;
            }
            max_depth = max_depth.max(sim.jb.depth());
            sim.pop(tick);
            tick += 20;
        }
        (sim, max_depth)
    }

    #[test]
    fn fast_sender_clock_is_absorbed_by_dropping_frames() {
        // 1000 ppm fast over 60 s: 60 ms too much audio arrives.
        let (sim, max_depth) = drift_run(1000, 60);
        let s = sim.jb.stats();
        assert!(max_depth <= 3, "depth stays near target: {max_depth}");
        assert!((2..=4).contains(&s.discarded), "{s:?}");
        assert_eq!((s.late, s.lost), (0, 0));
    }

    #[test]
    fn slow_sender_clock_is_absorbed_by_holding() {
        // 1000 ppm slow over 60 s: 60 ms of audio never comes; each shortfall is one hold.
        let (sim, max_depth) = drift_run(-1000, 60);
        let s = sim.jb.stats();
        assert!(max_depth <= 3, "{max_depth}");
        assert!((2..=4).contains(&s.concealed), "{s:?}");
        assert_eq!((s.late, s.lost, s.discarded), (0, 0, 0));
        let frames = sim.frames();
        assert!(
            frames.windows(2).all(|w| w[1] == w[0] + 1),
            "nothing skipped"
        );
    }

    #[test]
    fn packets_without_audio_are_neither_lost_nor_concealed() {
        let mut sim = Sim::new();
        let mut out = Vec::new();
        for i in 0..20u16 {
            let ms = i as u64 * 20;
            if (8..13).contains(&i) {
                // A DTMF event replaces audio; its timestamp is the event start throughout.
                sim.jb.insert_no_audio(sim.at(ms), i, 7);
            } else {
                sim.insert(ms, i, i as u32 * 160, false, 7);
            }
            let r = match sim.jb.pop(sim.at(ms + 5)) {
                Playout::Frame(p) => Some(Some(u16::from_be_bytes([p[0], p[1]]))),
                Playout::Missing => Some(None),
                Playout::Empty => None,
            };
            out.push(r);
        }
        let mut want: Vec<_> = (0..20).map(|i| Some(Some(i))).collect();
        for w in &mut want[8..13] {
            *w = None;
        }
        assert_eq!(out, want);
        let s = sim.jb.stats();
        assert_eq!((s.lost, s.concealed, s.received), (0, 0, 20));
        assert_eq!(sim.jb.jitter(), 0);
    }

    #[test]
    fn depth_is_bounded() {
        let cfg = JitterConfig::new(8000);
        let mut jb = JitterBuffer::new(cfg);
        let t0 = Instant::now();
        // 100 packets arrive at once and nobody pops.
        for i in 0..100u16 {
            jb.insert(t0, i, i as u32 * 160, false, 1, &[0; 160]);
        }
        assert!(jb.depth() <= 10, "depth {}", jb.depth());
        assert_eq!(jb.stats().discarded, 90);
        // Plays the newest 10.
        let mut got = Vec::new();
        for k in 0..12 {
            if let Playout::Frame(_) = jb.pop(t0 + Duration::from_millis(200 + k * 20)) {
                got.push(k);
            }
        }
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn marker_restarts_buffering_after_silence() {
        let cfg = JitterConfig {
            min_delay: Duration::from_millis(40),
            ..JitterConfig::new(8000)
        };
        let mut sim = Sim::with(cfg);
        // Talkspurt 1: 0..10, silence of 2 s (no packets), talkspurt 2: 10..20 with marker.
        for i in 0..10u16 {
            sim.insert(i as u64 * 20, i, i as u32 * 160, i == 0, 3);
            sim.pop(i as u64 * 20 + 5);
        }
        let mut empties = 0;
        for k in 0..100u64 {
            if sim.pop(205 + k * 20).is_none() {
                empties += 1;
            }
        }
        assert!(empties > 80, "quiet period plays silence, not concealment");
        let base = 2205;
        let mut out = Vec::new();
        for i in 10..20u16 {
            let ms = base + (i - 10) as u64 * 20;
            sim.insert(ms, i, 50_000 + i as u32 * 160, i == 10, 3);
            out.push(sim.pop(ms + 5));
        }
        // The first tick after the marker waits (fills to 40 ms), then plays in order.
        assert_eq!(out[0], None);
        assert_eq!(out[1], Some(Some(10)));
        assert_eq!(out[2], Some(Some(11)));
        assert_eq!(sim.jb.stats().lost, 0);
    }

    #[test]
    fn peek_gives_the_packet_after_a_loss() {
        let mut jb = JitterBuffer::new(JitterConfig::new(48000));
        let t0 = Instant::now();
        jb.insert(t0, 1, 0, true, 5, b"one");
        assert_eq!(jb.pop(t0), Playout::Frame(b"one"));
        jb.insert(t0 + FRAME * 2, 3, 1920, false, 5, b"three");
        assert_eq!(jb.pop(t0 + FRAME), Playout::Missing);
        assert_eq!(jb.peek(), Some(&b"three"[..]));
        assert_eq!(jb.pop(t0 + FRAME * 2), Playout::Frame(b"three"));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_input(
            ops in proptest::collection::vec((any::<bool>(), any::<u16>(), any::<u32>(), any::<bool>(), 0u32..3, 0u64..50), 0..300)
        ) {
            let mut jb = JitterBuffer::new(JitterConfig::new(8000));
            let mut t = Instant::now();
            for (pop, seq, ts, marker, ssrc, dt) in ops {
                t += Duration::from_millis(dt);
                if pop {
                    let _ = jb.pop(t);
                } else {
                    jb.insert(t, seq, ts, marker, ssrc, &seq.to_be_bytes());
                }
                prop_assert!(jb.depth() <= jb.mask + 1);
            }
        }

        #[test]
        fn one_source_plays_in_order_and_never_twice(
            ops in proptest::collection::vec((any::<bool>(), 0u16..8, any::<bool>(), 0u64..50), 0..400),
            start: u16,
        ) {
            let mut jb = JitterBuffer::new(JitterConfig::new(8000));
            let mut t = Instant::now();
            let mut base = start;
            let mut last: Option<u16> = None;
            for (pop, off, marker, dt) in ops {
                t += Duration::from_millis(dt);
                if pop {
                    if let Playout::Frame(p) = jb.pop(t) {
                        let seq = u16::from_be_bytes([p[0], p[1]]);
                        if let Some(prev) = last {
                            prop_assert!((seq.wrapping_sub(prev) as i16) > 0, "{prev} then {seq}");
                        }
                        last = Some(seq);
                    }
                } else {
                    let seq = base.wrapping_add(off);
                    base = base.wrapping_add(1);
                    jb.insert(t, seq, seq as u32 * 160, marker, 1, &seq.to_be_bytes());
                }
            }
        }
    }
}
