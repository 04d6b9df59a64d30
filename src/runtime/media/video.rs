//! Video in a room: each sender's camera goes to the other browsers' slots as it is (never
//! transcoded, never to phones), and a receiver's keyframe request goes back to the sender.

use std::time::{Duration, Instant};

use dialbridge_bridge::webrtc::KeyframeRequestKind;

use super::shard::Shard;
use super::types::MediaId;
use crate::events::{RoomEvent, VideoSender};

/// A sender is asked for a keyframe at most this often: several receivers losing the picture
/// at once (or joining) need one keyframe, not one each, and every keyframe costs the sender's
/// bitrate for a moment.
const KEYFRAME_ASK_GAP: Duration = Duration::from_millis(300);

/// Whether a sender last asked at `last` may be asked again at `now`.
fn keyframe_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_ASK_GAP)
}

/// What each of `member`'s `slots` carries: the senders other than itself, in their order.
fn slot_sources(senders: &[MediaId], member: MediaId, slots: usize) -> Vec<Option<MediaId>> {
    let mut sources: Vec<Option<MediaId>> = senders
        .iter()
        .filter(|s| **s != member)
        .take(slots)
        .map(|s| Some(*s))
        .collect();
    sources.resize(slots, None);
    sources
}

impl Shard {
    /// Leg `id` joined its room: a sender takes its place in the order of senders.
    pub(super) fn video_joined(&mut self, room_id: i64, id: MediaId) {
        let sends = self.legs.get(&id).is_some_and(|s| s.leg.sends_video());
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        if sends {
            room.video_senders.push(id);
        }
        let watches = self.legs.get(&id).is_some_and(|s| s.leg.video_slots() > 0);
        if sends || watches {
            self.route_video(room_id);
        }
    }

    /// Leg `id` (gone from the shard's legs) left its room.
    pub(super) fn video_left(&mut self, room_id: i64, id: MediaId) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let before = room.video_senders.len();
        room.video_senders.retain(|s| *s != id);
        if room.video_senders.len() != before {
            self.route_video(room_id);
        }
    }

    /// Fills each member's slots with the senders other than itself, in the senders' order;
    /// a sender new to a slot is asked for a keyframe, so the receiver can start decoding.
    /// The senders are published to the room (`video-senders`), so pages know whose camera each
    /// slot shows.
    fn route_video(&mut self, room_id: i64) {
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let mut fresh: Vec<MediaId> = Vec::new();
        for member in &room.members {
            let Some(slot) = self.legs.get_mut(member) else {
                continue;
            };
            let sources = slot_sources(&room.video_senders, *member, slot.leg.video_slots());
            for (i, source) in sources.iter().enumerate() {
                if let Some(source) = source {
                    if slot.video_sources.get(i) != Some(&Some(*source)) && !fresh.contains(source)
                    {
                        fresh.push(*source);
                    }
                }
            }
            slot.video_sources = sources;
        }
        let senders: Vec<VideoSender> = room
            .video_senders
            .iter()
            .filter_map(|s| self.legs.get(s))
            .map(|s| VideoSender {
                attendee_id: s.who.attendee_id,
                actor_type: s.who.actor_type.clone(),
                actor_id: s.who.actor_id.clone(),
                session_id: s.who.session_id.clone(),
            })
            .collect();
        for source in fresh {
            self.ask_keyframe(source, KeyframeRequestKind::Pli);
        }
        tracing::debug!(room_id, senders = senders.len(), "video senders");
        self.parts
            .events
            .publish(room_id, None, RoomEvent::VideoSenders { senders });
    }

    /// The video `from` just received goes to every slot that carries it.
    pub(super) fn forward_video(&mut self, now: Instant, room_id: i64, from: MediaId) {
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let mut any = false;
        while let Some(packet) = self.legs.get_mut(&from).and_then(|s| s.leg.take_video()) {
            any = true;
            for member in &room.members {
                if *member == from {
                    continue;
                }
                let Some(receiver) = self.legs.get_mut(member) else {
                    continue;
                };
                for slot in 0..receiver.video_sources.len() {
                    if receiver.video_sources.get(slot) == Some(&Some(from)) {
                        receiver.leg.forward_video(now, slot, from.0, &packet);
                    }
                }
            }
        }
        if !any {
            return;
        }
        for i in 0.. {
            let Some(member) = self
                .rooms
                .get(&room_id)
                .and_then(|room| room.members.get(i))
                .copied()
            else {
                break;
            };
            let carries = self
                .legs
                .get(&member)
                .is_some_and(|r| r.video_sources.contains(&Some(from)));
            if carries {
                self.flush(member);
            }
        }
    }

    /// Passes the keyframe requests the legs' peers sent to the senders of their slots.
    pub(super) fn pass_keyframe_requests(&mut self) {
        while let Some((receiver, req)) = self.keyframes.pop() {
            let source = self
                .legs
                .get(&receiver)
                .and_then(|r| r.video_sources.get(req.slot).copied().flatten());
            if let Some(source) = source {
                self.ask_keyframe(source, req.kind);
            }
        }
    }

    fn ask_keyframe(&mut self, source: MediaId, kind: KeyframeRequestKind) {
        let now = Instant::now();
        let Some(sender) = self.legs.get_mut(&source) else {
            return;
        };
        if !keyframe_due(sender.keyframe_asked, now) {
            return;
        }
        sender.keyframe_asked = Some(now);
        sender.leg.request_keyframe(kind);
        tracing::trace!(media = %source, ?kind, "keyframe requested");
        self.flush(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_is_asked_for_a_keyframe_at_most_every_gap() {
        let start = Instant::now();
        assert!(keyframe_due(None, start));
        assert!(!keyframe_due(Some(start), start));
        assert!(!keyframe_due(Some(start), start + KEYFRAME_ASK_GAP / 2));
        assert!(keyframe_due(Some(start), start + KEYFRAME_ASK_GAP));
    }

    #[test]
    fn each_member_sees_the_other_senders_in_their_order() {
        let [a, b, c, viewer] = [1, 2, 3, 4].map(MediaId);
        let senders = [a, b, c];
        assert_eq!(slot_sources(&senders, a, 3), vec![Some(b), Some(c), None]);
        assert_eq!(slot_sources(&senders, b, 2), vec![Some(a), Some(c)]);
        assert_eq!(slot_sources(&senders, viewer, 2), vec![Some(a), Some(b)]);
        // A one-to-one call: one slot each, the other's camera.
        assert_eq!(slot_sources(&[a, b], a, 1), vec![Some(b)]);
        assert_eq!(slot_sources(&[a], a, 1), vec![None]);
        assert_eq!(slot_sources(&senders, c, 0), Vec::<Option<MediaId>>::new());
    }
}
