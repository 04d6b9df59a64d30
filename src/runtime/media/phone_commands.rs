//! A shard's phone legs coming and going: added, re-pointed, muted, moved from the lobby into
//! a room (handed to another shard when the room is there), removed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use dialbridge_bridge::resample::{Downsampler, Upsampler, FRAME_48K, FRAME_8K};
use dialbridge_bridge::rtp_leg::RtpLeg;
use tokio::net::UdpSocket;

use super::command::Command;
use super::phone::{phone_leg, phone_leg_config, send_phone, PhoneSlot};
use super::registry::SharedRegistry;
use super::room::enter_room;
use super::shard::Shard;
use super::srtp::Srtp;
use super::types::{participant, MediaId, PhoneMedia};
use crate::room::{MediaParticipant, PhoneMute};
use crate::sync::lock;

impl Shard {
    /// Commands for one phone leg. Those for a leg still on its way here from another shard
    /// wait for it.
    pub(super) fn phone_command(&mut self, command: Command) {
        let Some(id) = command.phone() else {
            return;
        };
        if !self.phones.contains_key(&id) {
            let registry = lock(&self.parts.registry);
            if registry.moving.contains(&id) {
                // Commands for a hand-over that failed on the way are dropped with it.
                self.stashed
                    .retain(|c| c.phone().is_some_and(|p| registry.moving.contains(&p)));
                self.stashed.push(command);
            }
            return;
        }
        match command {
            Command::UpdatePhone { id, remote } => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    let now = Instant::now();
                    let cfg = phone_leg_config(&remote, slot.media_timeout);
                    // The same stream runs on unless the law changed.
                    if !slot.leg.renegotiate(now, &cfg) {
                        slot.leg.close(now);
                        send_phone(id, slot);
                        slot.leg = RtpLeg::new(now, std::time::SystemTime::now(), cfg);
                        slot.leg.set_forwarding(slot.direct);
                    }
                    // New keys (a re-INVITE's offer) start new SRTP contexts.
                    if slot.srtp.as_ref().map(Srtp::keys) != remote.srtp {
                        slot.srtp = Srtp::for_keys(id, remote.srtp);
                    }
                    tracing::info!(media = %id, remote = %remote.rtp, sends = remote.receives, "phone leg re-pointed");
                }
            }
            Command::RemovePhone { id } => self.remove_phone(id, "call ended"),
            Command::PhoneDtmf { id, digits } => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    slot.dtmf.extend(digits.chars());
                }
            }
            Command::PhoneJoin { id, who } => self.join_phone(id, who),
            Command::PhonePrompt { id, prompt } => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    slot.prompt = prompt.map(|p| (p, 0));
                }
            }
            Command::PhoneMute { id, mute } => {
                let Some(slot) = self.phones.get_mut(&id) else {
                    return;
                };
                slot.mute = mute;
                if let Some(room) = slot.room_id().and_then(|r| self.rooms.get_mut(&r)) {
                    let _ = room.mixer.set_send_muted(participant(id), mute.speaking);
                    let _ = room.mixer.set_recv_muted(participant(id), mute.listening);
                }
                tracing::info!(media = %id, speaking = mute.speaking, listening = mute.listening, "phone leg mute changed");
            }
            _ => {}
        }
    }

    /// Plays the recording notice to phone `id` (unless a prompt of its own plays).
    pub(super) fn tell_recorded(&mut self, id: MediaId) {
        let Some(notice) = lock(&self.parts.registry).recording_notice else {
            return;
        };
        if let Some(slot) = self.phones.get_mut(&id) {
            if slot.prompt.is_none() {
                slot.prompt = Some((notice, 0));
                tracing::info!(media = %id, "phone told the call is recorded");
            }
        }
    }

    /// A phone that enters a recorded room hears that it is recorded.
    fn entered(&mut self, id: MediaId, room_id: i64) {
        if self.rooms.get(&room_id).is_some_and(|r| r.tap.is_some()) {
            self.tell_recorded(id);
        }
    }

    /// Puts a phone leg in no room into `who`'s room, on this shard.
    fn join_phone(&mut self, id: MediaId, who: MediaParticipant) {
        let room_id = who.room_id;
        let joined = match self.phones.get_mut(&id) {
            Some(slot)
                if slot.who.is_none()
                    && enter_room(
                        &mut self.rooms,
                        &self.parts.registry,
                        id,
                        room_id,
                        slot.mute,
                    ) =>
            {
                slot.who = Some(who);
                true
            }
            _ => false,
        };
        if joined {
            self.entered(id, room_id);
        }
        if !joined {
            tracing::warn!(media = %id, room_id, "phone leg not moved: it is in a room already");
            lock(&self.parts.registry).undo_join(id, room_id, self.parts.index);
            return;
        }
        self.lobby.retain(|m| *m != id);
        self.update_direct(room_id);
        tracing::info!(media = %id, room_id, shard = self.parts.index, "phone leg joined its room's mix");
    }

    /// Hands a phone leg in no room to the shard of the room it joins.
    pub(super) fn move_phone(&mut self, id: MediaId, who: MediaParticipant, to: usize) {
        let room_id = who.room_id;
        let slot = match self.phones.remove(&id) {
            Some(slot) if slot.who.is_none() => slot,
            other => {
                if let Some(slot) = other {
                    self.phones.insert(id, slot);
                }
                tracing::warn!(media = %id, room_id, "phone leg not moved: it is in a room already, or gone");
                lock(&self.parts.registry).undo_join(id, room_id, self.parts.index);
                return;
            }
        };
        self.lobby.retain(|m| *m != id);
        self.phone_wakers.remove(&id);
        self.parts.totals.phones.fetch_sub(1, Ordering::Relaxed);
        self.count();
        let slot = slot.map_sockets(|s| s.into_std().ok());
        let peer = self.parts.peers.get(to).and_then(|p| p.upgrade());
        match (slot, peer) {
            (Some(slot), Some(peer)) => {
                let slot = Box::new(slot);
                if peer.send(Command::PhoneAdopt { id, who, slot }).is_ok() {
                    return;
                }
            }
            _ => tracing::warn!(media = %id, "phone leg could not be handed over"),
        }
        // The leg is lost: its owner hears of it as silence, like any dead leg.
        let mut registry = lock(&self.parts.registry);
        registry.release(room_id);
        registry.phones.remove(&id);
        registry.moving.remove(&id);
    }

    /// A phone leg handed over by another shard: its sockets join this shard's reactor and it
    /// enters its room.
    pub(super) fn adopt_phone(
        &mut self,
        id: MediaId,
        who: MediaParticipant,
        slot: PhoneSlot<std::net::UdpSocket>,
    ) {
        let room_id = who.room_id;
        lock(&self.parts.registry).moving.remove(&id);
        let slot = slot.map_sockets(|s| {
            s.set_nonblocking(true).ok()?;
            UdpSocket::from_std(s).ok()
        });
        let Some(slot) = slot else {
            tracing::warn!(media = %id, "phone leg sockets unusable after hand-over");
            let mut registry = lock(&self.parts.registry);
            registry.release(room_id);
            registry.phones.remove(&id);
            return;
        };
        self.phones.insert(id, slot);
        self.lobby.push(id);
        self.parts.totals.phones.fetch_add(1, Ordering::Relaxed);
        self.count();
        self.join_phone(id, who);
        // Commands that came before the leg did.
        let (mine, others): (Vec<Command>, Vec<Command>) = std::mem::take(&mut self.stashed)
            .into_iter()
            .partition(|c| c.phone() == Some(id));
        self.stashed = others;
        for command in mine {
            self.phone_command(command);
        }
    }

    pub(super) fn add_phone(&mut self, id: MediaId, phone: PhoneMedia) {
        let PhoneMedia {
            who,
            rtp,
            rtcp,
            remote,
            media_timeout,
            events,
        } = phone;
        let now = Instant::now();
        let room_id = who.as_ref().map(|w| w.room_id);
        let refuse = |registry: &SharedRegistry| {
            let mut registry = lock(registry);
            match room_id {
                Some(room_id) => registry.release(room_id),
                None => registry.release_lobby(self.parts.index),
            }
            registry.phones.remove(&id);
        };
        if self.phones.contains_key(&id) {
            tracing::warn!(media = %id, "phone leg not added: the id is taken");
            refuse(&self.parts.registry);
            return;
        }
        let sockets = rtp
            .set_nonblocking(true)
            .and_then(|_| rtcp.set_nonblocking(true))
            .and_then(|_| Ok((UdpSocket::from_std(rtp)?, UdpSocket::from_std(rtcp)?)));
        let (rtp, rtcp) = match sockets {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(media = %id, ?room_id, error = %e, "phone leg not added");
                refuse(&self.parts.registry);
                return;
            }
        };
        match room_id {
            Some(room_id) => {
                if !enter_room(
                    &mut self.rooms,
                    &self.parts.registry,
                    id,
                    room_id,
                    PhoneMute::default(),
                ) {
                    tracing::warn!(media = %id, room_id, "phone leg not added: already in the mix");
                    refuse(&self.parts.registry);
                    return;
                }
            }
            None => self.lobby.push(id),
        }
        self.phones.insert(
            id,
            PhoneSlot {
                who,
                mute: PhoneMute::default(),
                prompt: None,
                rtp,
                rtcp,
                leg: phone_leg(now, &remote, media_timeout),
                srtp: Srtp::for_keys(id, remote.srtp),
                media_timeout,
                events,
                up: Upsampler::default(),
                down: Downsampler::default(),
                wide: Box::new([0; FRAME_48K]),
                narrow: [0; FRAME_8K],
                dtmf: Default::default(),
                dtmf_next: now,
                direct: false,
            },
        );
        self.parts.totals.phones.fetch_add(1, Ordering::Relaxed);
        self.count();
        if let Some(room_id) = room_id {
            self.entered(id, room_id);
            self.update_direct(room_id);
        }
        tracing::info!(media = %id, ?room_id, shard = self.parts.index, remote = %remote.rtp, "phone leg added");
    }

    pub(super) fn remove_phone(&mut self, id: MediaId, why: &str) {
        let Some(mut slot) = self.phones.remove(&id) else {
            return;
        };
        self.phone_wakers.remove(&id);
        slot.leg.close(Instant::now());
        send_phone(id, &mut slot);
        self.lobby.retain(|m| *m != id);
        let room_id = slot.room_id();
        if let Some(room_id) = room_id {
            if let Some(room) = self.rooms.get_mut(&room_id) {
                let _ = room.mixer.remove(participant(id));
                room.phones.retain(|m| *m != id);
                if room.members.is_empty() && room.phones.is_empty() {
                    self.rooms.remove(&room_id);
                }
            }
        }
        {
            let mut registry = lock(&self.parts.registry);
            match room_id {
                Some(room_id) => registry.release(room_id),
                None => registry.release_lobby(self.parts.index),
            }
            registry.phones.remove(&id);
        }
        self.parts.totals.phones.fetch_sub(1, Ordering::Relaxed);
        self.count();
        if let Some(room_id) = room_id {
            self.update_direct(room_id);
        }
        let st = slot.leg.inbound().jitter_stats();
        tracing::info!(media = %id, ?room_id, reason = why, lost = st.lost, "phone leg removed");
    }
}
