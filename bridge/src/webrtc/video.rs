//! Video on a WebRTC leg: forwarded as it is, never transcoded (an SFU's job).
//!
//! A leg sends its camera on one m-line (its *send m-line*) and receives other participants'
//! cameras on the m-lines we may send on (its *slots*, in offer order). Each slot carries one
//! source at a time; the driver says which. A slot rewrites the source's sequence numbers and
//! timestamps into its own continuous stream, so that a source switch looks to the browser like
//! one stream going on. Losses are repaired per hop by str0m (NACK and RTX on each side); keyframe
//! requests (PLI, FIR) from a receiver are the driver's to pass to the source.

use std::collections::VecDeque;
use std::sync::Arc;

use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, Mid};
use str0m::rtp::VideoOrientation;

/// Received video packets a leg holds until the driver takes them (it takes them after each
/// datagram; a burst of repaired packets may bring several).
const VIDEO_QUEUE: usize = 64;

/// RTP timestamp step (90 kHz) put between a slot's last frame and a new source's first: one
/// frame at 30 fps.
const SWITCH_GAP: u32 = 3000;

/// One received video packet, ready to be forwarded to other legs.
#[derive(Debug, Clone)]
pub struct VideoPacket {
    /// The codec, for the receivers' payload type.
    pub codec: VideoCodec,
    /// Extended RTP sequence number (str0m's, with rollovers counted).
    pub seq: u64,
    /// RTP timestamp (90 kHz).
    pub timestamp: u32,
    pub marker: bool,
    /// Shared, not copied, by every receiver.
    pub payload: Arc<[u8]>,
    /// The camera's rotation (RFC 7742 CVO), passed on.
    pub orientation: Option<VideoOrientation>,
}

/// The forwarded codecs: what every browser decodes in hardware or software.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    /// H.264 with its packetization mode (0 or 1): receivers need the same one.
    H264 {
        packetization_mode: u8,
    },
}

impl VideoCodec {
    pub(crate) fn of(codec: Codec, packetization_mode: Option<u8>) -> Option<VideoCodec> {
        match codec {
            Codec::Vp8 => Some(VideoCodec::Vp8),
            Codec::H264 => Some(VideoCodec::H264 {
                packetization_mode: packetization_mode.unwrap_or(0),
            }),
            _ => None,
        }
    }
}

/// A keyframe request a receiver sent for one of its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotKeyframeRequest {
    pub slot: usize,
    pub kind: KeyframeRequestKind,
}

/// Received packets waiting for the driver; a full queue drops its oldest.
#[derive(Debug, Default)]
pub(crate) struct VideoInbox {
    queue: VecDeque<VideoPacket>,
    pub(crate) received: u64,
    pub(crate) dropped: u64,
}

impl VideoInbox {
    pub(crate) fn push(&mut self, packet: VideoPacket) {
        if self.queue.len() == VIDEO_QUEUE {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.received += 1;
        self.queue.push_back(packet);
    }

    pub(crate) fn pop(&mut self) -> Option<VideoPacket> {
        self.queue.pop_front()
    }
}

/// One m-line we send other participants' video on.
#[derive(Debug)]
pub(crate) struct VideoSlot {
    pub(crate) mid: Mid,
    rewrite: Rewrite,
}

impl VideoSlot {
    pub(crate) fn new(mid: Mid, first_seq: u64, first_timestamp: u32) -> VideoSlot {
        VideoSlot {
            mid,
            rewrite: Rewrite::new(first_seq, first_timestamp),
        }
    }

    /// The slot's sequence number and timestamp for `packet` from `source`; `None` for a packet
    /// older than the slot's stream of that source (a late repair from before a switch).
    pub(crate) fn map(&mut self, source: u64, packet: &VideoPacket) -> Option<(u64, u32)> {
        self.rewrite.map(source, packet.seq, packet.timestamp)
    }
}

/// Sequence number and timestamp rewriting of one outbound stream fed by changing sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rewrite {
    source: Option<u64>,
    /// Added to a source's extended sequence numbers.
    seq_delta: i64,
    /// Added (wrapping) to a source's timestamps.
    ts_delta: u32,
    /// The first sequence number of the current source's stretch: nothing maps below it.
    floor: u64,
    /// One past the highest sequence number sent.
    next_seq: u64,
    /// The newest timestamp sent.
    last_ts: u32,
}

impl Rewrite {
    pub(crate) fn new(first_seq: u64, first_timestamp: u32) -> Rewrite {
        Rewrite {
            source: None,
            seq_delta: 0,
            ts_delta: 0,
            floor: first_seq,
            next_seq: first_seq,
            last_ts: first_timestamp.wrapping_sub(SWITCH_GAP),
        }
    }

    pub(crate) fn map(&mut self, source: u64, seq: u64, timestamp: u32) -> Option<(u64, u32)> {
        if self.source != Some(source) {
            // A new source continues the stream right after what was sent.
            self.source = Some(source);
            self.seq_delta = self.next_seq as i64 - seq as i64;
            self.ts_delta = self
                .last_ts
                .wrapping_add(SWITCH_GAP)
                .wrapping_sub(timestamp);
            self.floor = self.next_seq;
        }
        let out = u64::try_from(seq as i64 + self.seq_delta).ok()?;
        if out < self.floor {
            return None;
        }
        let ts = timestamp.wrapping_add(self.ts_delta);
        if out >= self.next_seq {
            self.next_seq = out + 1;
            self.last_ts = ts;
        }
        Some((out, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_keeps_its_spacing_and_repairs_map_back_in_place() {
        let mut r = Rewrite::new(100, 5000);
        assert_eq!(r.map(1, 7000, 90_000), Some((100, 5000)));
        assert_eq!(r.map(1, 7002, 93_000), Some((102, 8000)));
        // The repair of the lost 7001 comes late and takes its own place.
        assert_eq!(r.map(1, 7001, 90_000), Some((101, 5000)));
        assert_eq!(r.map(1, 7003, 96_000), Some((103, 11_000)));
    }

    #[test]
    fn a_new_source_continues_the_stream_without_a_gap() {
        let mut r = Rewrite::new(100, 5000);
        r.map(1, 7000, 90_000);
        r.map(1, 7001, 93_000);
        // Source 2 numbers its packets far away; the slot's stream goes on at 102.
        assert_eq!(r.map(2, 40, 1_000_000), Some((102, 8000 + SWITCH_GAP)));
        assert_eq!(r.map(2, 41, 1_003_000), Some((103, 11_000 + SWITCH_GAP)));
        // A late repair of source 2 from before its stretch is dropped.
        assert_eq!(r.map(2, 39, 997_000), None);
    }

    #[test]
    fn timestamps_wrap_and_sources_can_come_back() {
        let mut r = Rewrite::new(10, u32::MAX - 1000);
        assert_eq!(r.map(1, 0, 0), Some((10, u32::MAX - 1000)));
        assert_eq!(r.map(1, 1, 3000), Some((11, 1999)));
        assert_eq!(r.map(2, 500, 77), Some((12, 1999 + SWITCH_GAP)));
        assert_eq!(r.map(1, 2, 6000), Some((13, 1999 + 2 * SWITCH_GAP)));
    }

    #[test]
    fn a_full_inbox_drops_its_oldest() {
        let mut inbox = VideoInbox::default();
        for seq in 0..(VIDEO_QUEUE as u64 + 3) {
            inbox.push(VideoPacket {
                codec: VideoCodec::Vp8,
                seq,
                timestamp: 0,
                marker: false,
                payload: Arc::from(&[0u8][..]),
                orientation: None,
            });
        }
        assert_eq!(inbox.dropped, 3);
        assert_eq!(inbox.pop().map(|p| p.seq), Some(3));
    }
}
