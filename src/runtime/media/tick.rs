//! The 20 ms tick: every mixing room's legs give a frame, get their mix back; phones in no
//! room hear their prompt or silence.

use std::time::{Duration, Instant};

use super::direct_path::SILENCE_8K;
use super::phone::phone_out;
use super::room::{Tap, TICK};
use super::shard::Shard;
use super::types::{participant, RecordingSink};
use super::web_leg::flush;
use crate::events::{RoomEvent, SpeakerLevel};

/// A tick this late is skipped rather than caught up (the thread was descheduled).
const MAX_LAG: Duration = Duration::from_millis(100);

impl Shard {
    /// Starts or stops recording a room on this shard; a recorded room leaves the direct path.
    pub(super) fn set_tap(&mut self, room_id: i64, sink: Option<RecordingSink>) {
        let starts = sink.is_some();
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.tap = sink.map(Tap::new);
            if starts {
                let phones = room.phones.clone();
                for id in phones {
                    self.tell_recorded(id);
                }
            }
        }
        self.update_direct(room_id);
    }

    /// One mixing tick for every room. Two-party rooms only keep their inbound jitter buffers
    /// in step and run their phone legs' timers and key presses: their audio went out as it
    /// came.
    pub(super) fn tick(&mut self, now: Instant) {
        if now.duration_since(self.next_tick) > MAX_LAG {
            tracing::debug!(
                late_ms = now.duration_since(self.next_tick).as_millis() as u64,
                "media ticks skipped"
            );
            self.next_tick = now;
        }
        self.next_tick += TICK;
        // Phone datagrams of mixing rooms are read once per tick: the jitter buffer absorbs
        // the wait.
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.phones.keys().copied());
        for id in &ready {
            self.read_phone(now, *id);
        }
        self.ready = ready;
        self.tick_lobby(now);
        for (room_id, room) in self.rooms.iter_mut() {
            let direct = room.direct.is_some();
            for id in &room.members {
                if let Some(slot) = self.legs.get_mut(id) {
                    if direct {
                        slot.leg.discard_frame(now);
                    } else {
                        let (pcm, _) = slot.leg.pull_frame(now);
                        if let Some(tap) = &mut room.tap {
                            if !room.mixer.muted(participant(*id)).is_some_and(|m| m.0) {
                                tap.add(pcm);
                            }
                        }
                        let _ = room.mixer.push(participant(*id), pcm);
                        let muted = room.mixer.muted(participant(*id)).is_some_and(|m| m.0);
                        room.levels.add(*id, pcm, muted);
                    }
                }
            }
            for id in &room.phones {
                if let Some(slot) = self.phones.get_mut(id) {
                    let (pcm, _) = slot.leg.tick(now);
                    if !direct {
                        slot.up.process(pcm, &mut slot.wide);
                        if let Some(tap) = &mut room.tap {
                            if !room.mixer.muted(participant(*id)).is_some_and(|m| m.0) {
                                tap.add(&slot.wide[..]);
                            }
                        }
                        let _ = room.mixer.push(participant(*id), &slot.wide[..]);
                        let muted = room.mixer.muted(participant(*id)).is_some_and(|m| m.0);
                        room.levels.add(*id, &slot.wide[..], muted);
                    }
                }
            }
            if let Some(tap) = &mut room.tap {
                tap.flush();
            }
            if !direct {
                room.mixer.mix();
                // A two-party room's page meters the other side's stream itself.
                if let Some(levels) = room.levels.tick() {
                    let levels = levels
                        .into_iter()
                        .filter_map(|(id, level)| {
                            let who = match self.legs.get(&id) {
                                Some(slot) => &slot.who,
                                None => self.phones.get(&id)?.who.as_ref()?,
                            };
                            Some(SpeakerLevel {
                                attendee_id: who.attendee_id,
                                session_id: who.session_id.clone(),
                                level: (level * 1000.0).round() / 1000.0,
                            })
                        })
                        .collect();
                    self.parts
                        .events
                        .publish(*room_id, None, RoomEvent::Levels { levels });
                }
            }
            for id in &room.phones {
                let Some(slot) = self.phones.get_mut(id) else {
                    continue;
                };
                // On a direct path the tick sends to the phone only while key presses or a
                // prompt replace its audio; the media clock runs on the same either way.
                let send = if direct {
                    slot.narrow = SILENCE_8K;
                    slot.tick_drives()
                } else {
                    match room.mixer.output(participant(*id)) {
                        Some(pcm) => {
                            slot.down.process(pcm, &mut slot.narrow);
                            true
                        }
                        None => false,
                    }
                };
                phone_out(now, *id, slot, send);
            }
            if direct {
                continue;
            }
            for id in &room.members {
                let (Some(slot), Some(pcm)) =
                    (self.legs.get_mut(id), room.mixer.output(participant(*id)))
                else {
                    continue;
                };
                if let Err(e) = slot.leg.push_frame(now, pcm) {
                    tracing::debug!(media = %id, error = %e, "frame not sent");
                }
                flush(
                    &self.parts.socket,
                    &self.parts.events,
                    *id,
                    slot,
                    &mut self.gone,
                    &mut self.keyframes,
                    &mut self.leg_deadline,
                );
            }
        }
    }

    /// Phones in no room: what they send is read (at the tick, with the others) and dropped
    /// (its key presses still count), what they hear is their prompt or silence.
    fn tick_lobby(&mut self, now: Instant) {
        for id in &self.lobby {
            if let Some(slot) = self.phones.get_mut(id) {
                let _ = slot.leg.tick(now);
                slot.narrow = SILENCE_8K;
                phone_out(now, *id, slot, true);
            }
        }
    }
}
