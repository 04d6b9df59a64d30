//! What a two-party room's direct path is made of: its two ends, the state of each direction,
//! and the step that sends audio on to a phone.

use std::time::Instant;

use dialbridge_bridge::bypass::{Continuity, Reframer};
use dialbridge_bridge::resample::FRAME_8K;
use dialbridge_bridge::webrtc::FRAME_MS;

use super::phone::PhoneSlot;
use super::types::MediaId;

/// 20 ms of 8 kHz silence: what a muted participant is heard as on a direct path.
pub(super) const SILENCE_8K: [i16; FRAME_8K] = [0; FRAME_8K];

/// Opus RTP clock.
pub(super) const OPUS_CLOCK: u32 = 48_000;
/// 20 ms at the Opus clock.
pub(super) const RTP_FRAME_48K: u32 = OPUS_CLOCK / 1000 * FRAME_MS;

/// One participant of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    Web(MediaId),
    Phone(MediaId),
}

impl End {
    pub(super) fn id(self) -> MediaId {
        match self {
            End::Web(id) | End::Phone(id) => id,
        }
    }
}

/// One direction of a direct path.
#[derive(Default)]
pub(super) struct Path {
    pub(super) source: Continuity,
    pub(super) frames: Reframer,
}

/// A two-party room's direct path.
pub(super) struct Direct {
    pub(super) a: End,
    pub(super) b: End,
    pub(super) a_to_b: Path,
    pub(super) b_to_a: Path,
}

impl Direct {
    pub(super) fn new(a: End, b: End) -> Direct {
        Direct {
            a,
            b,
            a_to_b: Path::default(),
            b_to_a: Path::default(),
        }
    }
}

/// Direct path into a phone: skips `lost` frames on its media clock, then sends every
/// complete 20 ms of `pcm` at once (silence when muted). While key presses replace the phone's
/// audio the tick drives its stream, and this audio is dropped.
pub(super) fn to_phone(
    now: Instant,
    path: &mut Path,
    dp: &mut PhoneSlot,
    lost: u32,
    pcm: &[i16],
    muted: bool,
) {
    if lost > 0 {
        path.frames.clear();
        if !dp.tick_drives() {
            dp.leg.skip_frames(lost);
        }
    }
    path.frames.push(pcm);
    while let Some(frame) = path.frames.pop() {
        if dp.tick_drives() {
            continue;
        }
        let frame = if muted { &SILENCE_8K } else { frame };
        dp.leg.send_audio(now, frame);
    }
}
