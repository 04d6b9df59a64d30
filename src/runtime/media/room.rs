//! A room on its shard: its mixer and who is in it.

use std::collections::HashMap;
use std::time::Duration;

use dialbridge_bridge::mixer::Mixer;
use dialbridge_bridge::webrtc::FRAME_MS;

use super::direct_path::{Direct, End};
use super::types::{participant, MediaId};
use crate::room::PhoneMute;

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
}

impl Room {
    pub(super) fn new() -> Room {
        Room {
            mixer: Mixer::new((MIX_RATE * FRAME_MS / 1000) as usize),
            members: Vec::new(),
            phones: Vec::new(),
            direct: None,
        }
    }

    /// The two participants, when there are exactly two.
    pub(super) fn pair(&self) -> Option<(End, End)> {
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
    id: MediaId,
    room_id: i64,
    mute: PhoneMute,
) -> bool {
    let room = rooms.entry(room_id).or_insert_with(Room::new);
    if room.mixer.add(participant(id)).is_err() {
        return false;
    }
    let _ = room.mixer.set_send_muted(participant(id), mute.speaking);
    let _ = room.mixer.set_recv_muted(participant(id), mute.listening);
    room.phones.push(id);
    true
}
