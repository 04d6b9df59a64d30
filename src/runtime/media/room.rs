//! A room on its shard: its mixer and who is in it.

use std::collections::HashMap;
use std::time::Duration;

use dialbridge_bridge::mixer::{soft_clip, Mixer};
use dialbridge_bridge::webrtc::FRAME_MS;

use super::direct_path::{Direct, End};
use super::registry::SharedRegistry;
use super::types::{participant, MediaId, RecordingSink, RECORD_FRAME};
use crate::room::PhoneMute;
use crate::sync::lock;

/// Sample rate rooms mix at: 48 kHz, the rate libopus decodes WebRTC participants' wideband
/// speech to natively. Phone legs are resampled 8 <-> 48 kHz at the mixer's edge.
pub(super) const MIX_RATE: u32 = 48_000;

/// One mixing tick.
pub(super) const TICK: Duration = Duration::from_millis(FRAME_MS as u64);

/// A room on its shard: its mixer, its WebRTC legs (`members`) and phone legs, and its direct
/// path while it has exactly two participants.
pub(super) struct Room {
    pub(super) mixer: Mixer,
    pub(super) members: Vec<MediaId>,
    pub(super) phones: Vec<MediaId>,
    pub(super) direct: Option<Box<Direct>>,
    pub(super) levels: Levels,
    /// The room's recording, while it is recorded (a recorded room always mixes).
    pub(super) tap: Option<Tap>,
    /// WebRTC legs sending their camera, in the order they came.
    pub(super) video_senders: Vec<MediaId>,
}

/// Ticks summed into one report of the participants' speech levels (200 ms).
const LEVEL_TICKS: u32 = 10;

/// Below this RMS (full scale 1) a participant counts as silent.
const SILENT: f64 = 0.001;

/// What each participant of a mixing room sent into the mix, summed until the next report.
#[derive(Default)]
pub(super) struct Levels {
    /// (participant, sum of squared samples, samples).
    sums: Vec<(MediaId, f64, u32)>,
    ticks: u32,
    /// Whether the last report had anyone above silence: one all-silent report follows the
    /// last loud one, then none until someone speaks.
    loud: bool,
}

impl Levels {
    /// Adds one frame a participant sent (silence when it is muted).
    pub(super) fn add(&mut self, id: MediaId, pcm: &[i16], muted: bool) {
        let energy = if muted {
            0.0
        } else {
            pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum()
        };
        match self.sums.iter_mut().find(|(p, _, _)| *p == id) {
            Some((_, sum, n)) => {
                *sum += energy;
                *n += pcm.len() as u32;
            }
            None => self.sums.push((id, energy, pcm.len() as u32)),
        }
    }

    /// Ends a tick; every `LEVEL_TICKS` ticks, each participant's RMS level (0 to 1) when it is
    /// worth reporting.
    pub(super) fn tick(&mut self) -> Option<Vec<(MediaId, f64)>> {
        self.ticks += 1;
        if self.ticks < LEVEL_TICKS {
            return None;
        }
        self.ticks = 0;
        let levels: Vec<(MediaId, f64)> = self
            .sums
            .drain(..)
            .map(|(id, sum, n)| (id, (sum / f64::from(n.max(1))).sqrt() / 32768.0))
            .collect();
        let loud = levels.iter().any(|(_, level)| *level >= SILENT);
        let report = loud || self.loud;
        self.loud = loud;
        report.then_some(levels)
    }
}

/// The sum of everyone's audio in one tick, sent to a recording.
pub(super) struct Tap {
    sink: RecordingSink,
    sum: Vec<i32>,
}

impl Tap {
    pub(super) fn new(sink: RecordingSink) -> Tap {
        Tap {
            sink,
            sum: vec![0; RECORD_FRAME],
        }
    }

    /// Adds one participant's frame of this tick.
    pub(super) fn add(&mut self, pcm: &[i16]) {
        for (sum, sample) in self.sum.iter_mut().zip(pcm) {
            *sum += i32::from(*sample);
        }
    }

    /// Sends the tick's sum and starts the next; a recording that falls behind loses the frame.
    pub(super) fn flush(&mut self) {
        let frame: Vec<i16> = self.sum.iter().map(|s| soft_clip(*s)).collect();
        self.sum.fill(0);
        if self.sink.try_send(frame).is_err() {
            metrics::counter!("dialbridge_recording_frames_dropped_total").increment(1);
        }
    }
}

impl Room {
    /// A room, recorded if the registry says so.
    pub(super) fn new(room_id: i64, registry: &SharedRegistry) -> Room {
        Room {
            mixer: Mixer::new((MIX_RATE * FRAME_MS / 1000) as usize),
            members: Vec::new(),
            phones: Vec::new(),
            direct: None,
            levels: Levels::default(),
            tap: lock(registry).taps.get(&room_id).cloned().map(Tap::new),
            video_senders: Vec::new(),
        }
    }

    /// The two participants, when there are exactly two (and the room is not recorded).
    pub(super) fn pair(&self) -> Option<(End, End)> {
        if self.tap.is_some() {
            return None;
        }
        match (self.members.as_slice(), self.phones.as_slice()) {
            ([a, b], []) => Some((End::Web(*a), End::Web(*b))),
            ([a], [b]) => Some((End::Web(*a), End::Phone(*b))),
            ([], [a, b]) => Some((End::Phone(*a), End::Phone(*b))),
            _ => None,
        }
    }
}

/// Puts a phone in a room's mix with its mute state; false if it is in that mix already.
pub(super) fn enter_room(
    rooms: &mut HashMap<i64, Room>,
    registry: &SharedRegistry,
    id: MediaId,
    room_id: i64,
    mute: PhoneMute,
) -> bool {
    let room = rooms
        .entry(room_id)
        .or_insert_with(|| Room::new(room_id, registry));
    if room.mixer.add(participant(id)).is_err() {
        return false;
    }
    let _ = room.mixer.set_send_muted(participant(id), mute.speaking);
    let _ = room.mixer.set_recv_muted(participant(id), mute.listening);
    room.phones.push(id);
    true
}
