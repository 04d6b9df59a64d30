//! Room placement: which shard serves each room and each phone leg.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::types::{MediaId, RecordingSink};

/// Which shard serves each room (least loaded at its first leg) and each phone leg, and how many
/// legs each holds. Touched on joins and leaves only, never per packet.
#[derive(Debug, Default)]
pub(super) struct Registry {
    pub(super) rooms: HashMap<i64, Placement>,
    pub(super) phones: HashMap<MediaId, usize>,
    /// Phone legs on their way from the lobby of one shard to the room on another.
    pub(super) moving: HashSet<MediaId>,
    pub(super) load: Vec<usize>,
    /// Rooms being recorded, whichever shard serves them (or will).
    pub(super) taps: HashMap<i64, RecordingSink>,
    /// What a phone hears when the room it is in is recorded (as recording starts, or as it
    /// enters the recorded room).
    pub(super) recording_notice: Option<&'static [i16]>,
    /// Participants sending video, by room (places taken before their leg is made).
    pub(super) video_senders: HashMap<i64, usize>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    pub(super) shard: usize,
    pub(super) legs: usize,
}

impl Registry {
    pub(super) fn new(shards: usize) -> Registry {
        Registry {
            load: vec![0; shards],
            ..Registry::default()
        }
    }

    /// The room's shard, choosing the least loaded one for a new room, counting one more leg.
    pub(super) fn place(&mut self, room_id: i64) -> usize {
        let shard = match self.rooms.get_mut(&room_id) {
            Some(p) => {
                p.legs += 1;
                p.shard
            }
            None => {
                let shard = self.least_loaded();
                self.rooms.insert(room_id, Placement { shard, legs: 1 });
                shard
            }
        };
        if let Some(l) = self.load.get_mut(shard) {
            *l += 1;
        }
        shard
    }

    /// One leg of the room is gone; the room is forgotten with its last.
    pub(super) fn release(&mut self, room_id: i64) {
        let Some(p) = self.rooms.get_mut(&room_id) else {
            return;
        };
        p.legs = p.legs.saturating_sub(1);
        let shard = p.shard;
        if p.legs == 0 {
            self.rooms.remove(&room_id);
        }
        if let Some(l) = self.load.get_mut(shard) {
            *l = l.saturating_sub(1);
        }
    }

    /// A shard for a phone leg in no room: the least loaded.
    pub(super) fn place_lobby(&mut self) -> usize {
        let shard = self.least_loaded();
        if let Some(l) = self.load.get_mut(shard) {
            *l += 1;
        }
        shard
    }

    /// A phone leg in no room on `shard` is gone (or went into a room).
    pub(super) fn release_lobby(&mut self, shard: usize) {
        if let Some(l) = self.load.get_mut(shard) {
            *l = l.saturating_sub(1);
        }
    }

    /// Takes back a [`MediaHandle::join_phone`] the shard refused (the leg is in a room
    /// already, or gone).
    pub(super) fn undo_join(&mut self, id: MediaId, room_id: i64, from: usize) {
        self.release(room_id);
        if let Some(l) = self.load.get_mut(from) {
            *l += 1;
        }
        self.phones.insert(id, from);
        self.moving.remove(&id);
    }

    /// The shard with the fewest legs (the first of those).
    fn least_loaded(&self) -> usize {
        (0..self.load.len())
            .min_by_key(|i| self.load.get(*i).copied().unwrap_or(usize::MAX))
            .unwrap_or(0)
    }

    /// Takes one of the room's `cap` video sender places; false when all are taken.
    pub(super) fn reserve_video(&mut self, room_id: i64, cap: usize) -> bool {
        let taken = self.video_senders.entry(room_id).or_insert(0);
        if *taken >= cap {
            if *taken == 0 {
                self.video_senders.remove(&room_id);
            }
            return false;
        }
        *taken += 1;
        true
    }

    /// Gives back a video sender place.
    pub(super) fn release_video(&mut self, room_id: i64) {
        if let Some(taken) = self.video_senders.get_mut(&room_id) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                self.video_senders.remove(&room_id);
            }
        }
    }

    pub(super) fn shard_of(&self, room_id: i64) -> Option<usize> {
        self.rooms.get(&room_id).map(|p| p.shard)
    }
}

pub(super) type SharedRegistry = Arc<Mutex<Registry>>;
