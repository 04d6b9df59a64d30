//! RFC 4733 telephone-event: payload format, a sender and a receiver.
//!
//! The RTP clock rate is the leg's: 8000 on phone (RTP) legs, 48000 on WebRTC legs. Sequence
//! numbers and SSRC belong to the leg; this module decides timestamps, markers and payloads.

use std::time::{Duration, Instant};

/// Errors from parsing or sending telephone-events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A telephone-event payload is exactly four bytes (we read the first four).
    #[error("telephone-event payload too short: {0} bytes, need 4")]
    TooShort(usize),
    /// Only 0-9, *, #, A-D have DTMF event codes.
    #[error("not a DTMF digit: {0:?}")]
    NotADigit(char),
}

/// One telephone-event payload (RFC 4733 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code; 0-15 are the DTMF digits.
    pub event: u8,
    /// E bit: this is (a retransmission of) the final packet of the event.
    pub end: bool,
    /// Power level in -dBm0, 0..=63.
    pub volume: u8,
    /// Duration so far, in RTP clock units since the event's timestamp.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first four bytes; the R bit is ignored as the RFC requires.
    pub fn parse(bytes: &[u8]) -> Result<EventPayload, DtmfError> {
        match bytes {
            [event, flags, d0, d1, ..] => Ok(EventPayload {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(DtmfError::TooShort(bytes.len())),
        }
    }

    /// Serializes to the four wire bytes (R bit zero, volume masked to six bits).
    pub fn to_bytes(self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        let flags = if self.end { 0x80 } else { 0 } | (self.volume & 0x3F);
        [self.event, flags, d0, d1]
    }

    /// The DTMF digit, if the event is one.
    pub fn digit(self) -> Option<char> {
        event_to_digit(self.event)
    }
}

const DIGITS: &[u8; 16] = b"0123456789*#ABCD";

/// DTMF digit -> RFC 4733 event code (lower-case a-d accepted).
pub fn digit_to_event(digit: char) -> Option<u8> {
    let d = digit.to_ascii_uppercase();
    DIGITS.iter().position(|&c| c as char == d).map(|p| p as u8)
}

/// RFC 4733 event code -> DTMF digit.
pub fn event_to_digit(event: u8) -> Option<char> {
    DIGITS.get(event as usize).map(|&c| c as char)
}

/// One packet the sender wants on the wire now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// RTP marker bit: set on the first packet of an event.
    pub marker: bool,
    /// RTP timestamp: the event's start, the same for every packet of it.
    pub timestamp: u32,
    /// The payload to send.
    pub payload: EventPayload,
}

#[derive(Debug, Clone, Copy)]
struct Sending {
    event: u8,
    timestamp: u32,
    started: Instant,
    total: u16,
    next: u32,
    ends_sent: u8,
}

/// How many times the final packet is sent (RFC 4733 section 2.5.1.4).
pub const END_REPEATS: u8 = 3;

/// Produces the packet sequence of one event at a time: a marked start packet, an update every
/// `interval`, then the end packet three times, all with the event's start timestamp.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    clock_rate: u32,
    interval: Duration,
    volume: u8,
    sending: Option<Sending>,
}

impl DtmfSender {
    /// `clock_rate` is the telephone-event RTP clock (8000 or 48000); `interval` the update
    /// period (20 ms or 50 ms are usual; zero is treated as 20 ms, and it is kept within
    /// 1 ms..=1 s).
    pub fn new(clock_rate: u32, interval: Duration) -> DtmfSender {
        let interval = if interval.is_zero() {
            Duration::from_millis(20)
        } else {
            interval.clamp(Duration::from_millis(1), Duration::from_secs(1))
        };
        DtmfSender {
            clock_rate,
            interval,
            volume: 10,
            sending: None,
        }
    }

    /// Volume for subsequent events, in -dBm0 (clamped to 63).
    pub fn set_volume(&mut self, volume: u8) {
        self.volume = volume.min(63);
    }

    /// Whether an event is still being sent (the leg should not send audio meanwhile).
    pub fn is_active(&self) -> bool {
        self.sending.is_some()
    }

    fn units(&self, d: Duration) -> u64 {
        d.as_micros() as u64 * self.clock_rate as u64 / 1_000_000
    }

    /// Starts sending `digit` for `duration` at RTP `timestamp` (the leg's current media
    /// timestamp). A duration beyond the 16-bit field is clamped. Replaces an event in flight.
    pub fn start(
        &mut self,
        now: Instant,
        digit: char,
        duration: Duration,
        timestamp: u32,
    ) -> Result<(), DtmfError> {
        let event = digit_to_event(digit).ok_or(DtmfError::NotADigit(digit))?;
        let total = self.units(duration).clamp(1, u16::MAX as u64) as u16;
        self.sending = Some(Sending {
            event,
            timestamp,
            started: now,
            total,
            next: 0,
            ends_sent: 0,
        });
        Ok(())
    }

    /// When the next packet is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sending
            .as_ref()
            .map(|s| s.started + self.interval * s.next)
    }

    /// The next packet if it is due at `now`. Call until it returns `None`.
    pub fn poll_packet(&mut self, now: Instant) -> Option<EventPacket> {
        let interval = self.interval;
        let step = self.units(interval);
        let volume = self.volume;
        let s = self.sending.as_mut()?;
        if now < s.started + interval * s.next {
            return None;
        }
        // Packet k reports the duration elapsed at its send time, never past the total.
        let elapsed = step * s.next as u64;
        let (duration, end) = if elapsed >= s.total as u64 {
            (s.total, true)
        } else {
            (elapsed as u16, false)
        };
        let packet = EventPacket {
            marker: s.next == 0,
            timestamp: s.timestamp,
            payload: EventPayload {
                event: s.event,
                end,
                volume,
                duration,
            },
        };
        s.next += 1;
        if end {
            s.ends_sent += 1;
            if s.ends_sent >= END_REPEATS {
                self.sending = None;
            }
        }
        Some(packet)
    }
}

/// One key press, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// Event code (0-15 for digits; other codes are reported too).
    pub event: u8,
    /// RTP timestamp identifying the press.
    pub timestamp: u32,
}

impl DtmfDigit {
    /// The digit character, if the event is a DTMF digit.
    pub fn digit(self) -> Option<char> {
        event_to_digit(self.event)
    }
}

const REMEMBERED: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Seen {
    timestamp: u32,
    event: u8,
    max_duration: u16,
}

/// Turns telephone-event packets into one report per key press. Packets are keyed by RTP
/// timestamp, so repeated end packets, retransmits, reordering and a lost start packet all
/// fold into the press they belong to.
#[derive(Debug, Clone, Default)]
pub struct DtmfReceiver {
    seen: [Option<Seen>; REMEMBERED],
    next_slot: usize,
    newest: Option<u32>,
}

impl DtmfReceiver {
    /// A receiver with no history.
    pub fn new() -> DtmfReceiver {
        DtmfReceiver::default()
    }

    /// Forgets history (call on SSRC change: timestamps restart from a new random base).
    pub fn reset(&mut self) {
        *self = DtmfReceiver::default();
    }

    /// Handles one telephone-event packet's RTP timestamp and payload. Returns the press if
    /// this packet is the first one seen of it.
    pub fn handle_packet(
        &mut self,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<DtmfDigit>, DtmfError> {
        let p = EventPayload::parse(payload)?;
        if let Some(seen) = self
            .seen
            .iter_mut()
            .flatten()
            .find(|s| s.timestamp == timestamp)
        {
            seen.max_duration = seen.max_duration.max(p.duration);
            return Ok(None);
        }
        if let Some(newest) = self.newest {
            // Older than the newest press and not remembered: a straggler of a press long gone.
            if (timestamp.wrapping_sub(newest) as i32) < 0 {
                return Ok(None);
            }
        }
        let continuation = self.seen.iter().flatten().any(|s| {
            s.event == p.event
                && s.max_duration == u16::MAX
                && s.timestamp.wrapping_add(u16::MAX as u32) == timestamp
        });
        self.seen[self.next_slot] = Some(Seen {
            timestamp,
            event: p.event,
            max_duration: p.duration,
        });
        self.next_slot = (self.next_slot + 1) % REMEMBERED;
        self.newest = Some(timestamp);
        if continuation {
            // A long event's next segment (RFC 4733 section 2.5.1.3): same press.
            return Ok(None);
        }
        Ok(Some(DtmfDigit {
            event: p.event,
            timestamp,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn payload_round_trips(event: u8, end: bool, volume in 0u8..64, duration: u16) {
            let p = EventPayload { event, end, volume, duration };
            prop_assert_eq!(EventPayload::parse(&p.to_bytes()), Ok(p));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            match EventPayload::parse(&bytes) {
                Ok(p) => {
                    prop_assert!(bytes.len() >= 4);
                    prop_assert_eq!(p.event, bytes[0]);
                    prop_assert_eq!(p.duration, u16::from_be_bytes([bytes[2], bytes[3]]));
                }
                Err(e) => prop_assert_eq!(e, DtmfError::TooShort(bytes.len())),
            }
        }

        #[test]
        fn receiver_never_panics(packets in proptest::collection::vec(
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..8)), 0..32)) {
            let mut rx = DtmfReceiver::new();
            for (ts, bytes) in packets {
                let _ = rx.handle_packet(ts, &bytes);
            }
        }
    }

    #[test]
    fn payload_wire_format() {
        // RFC 4733 figure: event 5, E set, volume 10, duration 800.
        let p = EventPayload::parse(&[5, 0x8A, 0x03, 0x20]);
        assert_eq!(
            p,
            Ok(EventPayload {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            })
        );
        // R bit ignored.
        assert_eq!(
            EventPayload::parse(&[1, 0x40 | 7, 0, 160]).map(|p| (p.end, p.volume)),
            Ok((false, 7))
        );
        assert_eq!(EventPayload::parse(&[1, 2, 3]), Err(DtmfError::TooShort(3)));
    }

    #[test]
    fn digit_codes() {
        let all: String = (0..16).filter_map(event_to_digit).collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(digit_to_event('#'), Some(11));
        assert_eq!(digit_to_event('d'), Some(15));
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(event_to_digit(16), None);
    }

    fn send_all(rate: u32, interval_ms: u64, dur_ms: u64, ts: u32) -> Vec<(u64, EventPacket)> {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(rate, Duration::from_millis(interval_ms));
        assert_eq!(tx.start(t0, '7', Duration::from_millis(dur_ms), ts), Ok(()));
        let mut out = Vec::new();
        let mut ms = 0;
        while tx.is_active() && ms < 10_000 {
            let now = t0 + Duration::from_millis(ms);
            while let Some(p) = tx.poll_packet(now) {
                out.push((ms, p));
            }
            ms += 1;
        }
        assert!(!tx.is_active());
        out
    }

    #[test]
    fn sender_sequence_at_8000() {
        let pkts = send_all(8000, 20, 100, 1234);
        let summary: Vec<(u64, bool, bool, u16)> = pkts
            .iter()
            .map(|(ms, p)| (*ms, p.marker, p.payload.end, p.payload.duration))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, true, false, 0),
                (20, false, false, 160),
                (40, false, false, 320),
                (60, false, false, 480),
                (80, false, false, 640),
                (100, false, true, 800),
                (120, false, true, 800),
                (140, false, true, 800),
            ]
        );
        assert!(pkts
            .iter()
            .all(|(_, p)| p.timestamp == 1234 && p.payload.event == 7 && p.payload.volume == 10));
    }

    #[test]
    fn sender_sequence_at_48000_with_50ms_updates() {
        let pkts = send_all(48000, 50, 120, u32::MAX - 10);
        let summary: Vec<(u64, bool, bool, u16)> = pkts
            .iter()
            .map(|(ms, p)| (*ms, p.marker, p.payload.end, p.payload.duration))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, true, false, 0),
                (50, false, false, 2400),
                (100, false, false, 4800),
                (150, false, true, 5760),
                (200, false, true, 5760),
                (250, false, true, 5760),
            ]
        );
        assert!(pkts.iter().all(|(_, p)| p.timestamp == u32::MAX - 10));
    }

    #[test]
    fn sender_rejects_non_digits_and_clamps_long_events() {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(48000, Duration::from_millis(20));
        assert_eq!(
            tx.start(t0, 'x', Duration::from_millis(100), 0),
            Err(DtmfError::NotADigit('x'))
        );
        assert!(!tx.is_active());
        assert_eq!(tx.start(t0, '1', Duration::from_secs(5), 0), Ok(()));
        let mut last = None;
        let mut now = t0;
        while tx.is_active() {
            while let Some(p) = tx.poll_packet(now) {
                last = Some(p.payload);
            }
            now = tx.poll_timeout().unwrap_or(now);
        }
        assert_eq!(last.map(|p| (p.end, p.duration)), Some((true, u16::MAX)));
    }

    fn bytes(event: u8, end: bool, duration: u16) -> [u8; 4] {
        EventPayload {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    fn digits(rx: &mut DtmfReceiver, packets: &[(u32, [u8; 4])]) -> String {
        packets
            .iter()
            .filter_map(|(ts, b)| rx.handle_packet(*ts, b).ok().flatten())
            .filter_map(|d| d.digit())
            .collect()
    }

    #[test]
    fn receiver_one_report_per_press_with_three_end_packets() {
        let mut rx = DtmfReceiver::new();
        let pkts: Vec<(u32, [u8; 4])> = send_all(8000, 20, 100, 5000)
            .into_iter()
            .map(|(_, p)| (p.timestamp, p.payload.to_bytes()))
            .collect();
        assert_eq!(digits(&mut rx, &pkts), "7");
    }

    #[test]
    fn receiver_ignores_retransmits_and_reordering() {
        let mut rx = DtmfReceiver::new();
        let pkts = [
            (100, bytes(1, false, 160)), // update arrives before start
            (100, bytes(1, false, 0)),
            (100, bytes(1, false, 160)), // retransmit
            (100, bytes(1, true, 320)),
            (100, bytes(1, true, 320)),
            (1000, bytes(2, false, 0)),
            (100, bytes(1, true, 320)), // late end packet of the previous press
            (1000, bytes(2, true, 480)),
        ];
        assert_eq!(digits(&mut rx, &pkts), "12");
    }

    #[test]
    fn receiver_reports_press_whose_start_was_lost() {
        let mut rx = DtmfReceiver::new();
        let pkts = [
            (800, bytes(11, false, 320)),
            (800, bytes(11, true, 800)),
            (800, bytes(11, true, 800)),
        ];
        assert_eq!(digits(&mut rx, &pkts), "#");
        // Even when only an end packet survives.
        let pkts = [(4000, bytes(3, true, 800))];
        assert_eq!(digits(&mut rx, &pkts), "3");
    }

    #[test]
    fn receiver_counts_repeated_same_digit_and_handles_wrap() {
        let mut rx = DtmfReceiver::new();
        let a = u32::MAX - 100;
        let b = a.wrapping_add(2000);
        let pkts = [
            (a, bytes(5, false, 0)),
            (a, bytes(5, true, 800)),
            (b, bytes(5, false, 0)),
            (a, bytes(5, true, 800)),
            (b, bytes(5, true, 800)),
            (b, bytes(5, true, 800)),
        ];
        assert_eq!(digits(&mut rx, &pkts), "55");
    }

    #[test]
    fn receiver_joins_long_event_segments() {
        let mut rx = DtmfReceiver::new();
        let pkts = [
            (10, bytes(0, false, 0)),
            (10, bytes(0, false, u16::MAX)),
            (10 + u16::MAX as u32, bytes(0, false, 1000)),
            (10 + u16::MAX as u32, bytes(0, true, 2000)),
        ];
        assert_eq!(digits(&mut rx, &pkts), "0");
    }

    #[test]
    fn receiver_reset_forgets_history() {
        let mut rx = DtmfReceiver::new();
        assert_eq!(digits(&mut rx, &[(10, bytes(4, false, 0))]), "4");
        rx.reset();
        assert_eq!(digits(&mut rx, &[(10, bytes(4, false, 0))]), "4");
        assert_eq!(
            rx.handle_packet(10, &[1, 2]),
            Err(DtmfError::TooShort(2)),
            "short payloads are errors, not panics"
        );
    }
}
