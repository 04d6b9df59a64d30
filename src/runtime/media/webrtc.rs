//! A shard's WebRTC legs: added and removed, fed their datagrams, their timers fired, dropped
//! when their peer is gone.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dialbridge_bridge::webrtc::WebRtcLeg;

use super::reader::{Datagram, Route};
use super::room::Room;
use super::shard::Shard;
use super::types::{participant, MediaId};
use super::web_leg::{flush, Slot};
use crate::room::MediaParticipant;
use crate::sync::lock;

/// A leg whose peer never completes ICE and DTLS within this is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected leg that receives nothing for this long is dropped (ICE consent lapsed).
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

impl Shard {
    /// Puts a new leg in its room, in place of the session's earlier leg.
    pub(super) fn add_leg(&mut self, id: MediaId, who: MediaParticipant, leg: Box<WebRtcLeg>) {
        let room_id = who.room_id;
        let replaced: Vec<MediaId> = self
            .legs
            .iter()
            .filter(|(_, s)| s.who.room_id == room_id && s.who.session_id == who.session_id)
            .map(|(id, _)| *id)
            .collect();
        for old in replaced {
            self.remove(old, "replaced by a new offer");
        }
        let registry = &self.parts.registry;
        let room = self
            .rooms
            .entry(room_id)
            .or_insert_with(|| Room::new(room_id, registry));
        if room.mixer.add(participant(id)).is_ok() {
            room.members.push(id);
            let now = Instant::now();
            self.legs.insert(
                id,
                Slot {
                    who,
                    leg,
                    created: now,
                    last_rx: now,
                    addrs: Vec::new(),
                    video_sources: Vec::new(),
                    keyframe_asked: None,
                    own: None,
                    own_refused: None,
                },
            );
            self.parts.totals.webrtc.fetch_add(1, Ordering::Relaxed);
            self.flush(id);
            self.count();
            self.update_direct(room_id);
            self.video_joined(room_id, id);
            tracing::info!(media = %id, room_id, shard = self.parts.index, "WebRTC leg added");
        } else {
            let _ = self.parts.routes.send(Route::Forget {
                ufrag: leg.ufrag().to_string(),
            });
            let mut registry = lock(&self.parts.registry);
            registry.release(room_id);
            if leg.sends_video() {
                registry.release_video(room_id);
            }
        }
    }

    /// Ends leg `id` if it is one of `sessions` in room `room_id`; whether it was.
    pub(super) fn remove_owned(&mut self, id: MediaId, room_id: i64, sessions: &[String]) -> bool {
        let owned = self
            .legs
            .get(&id)
            .is_some_and(|s| s.who.room_id == room_id && sessions.contains(&s.who.session_id));
        if owned {
            self.remove(id, "ended by the client");
        }
        owned
    }

    /// Ends the legs of these sessions (they left the call).
    pub(super) fn end_sessions(&mut self, room_id: i64, sessions: &[String]) {
        let ending: Vec<MediaId> = self
            .legs
            .iter()
            .filter(|(_, s)| s.who.room_id == room_id && sessions.contains(&s.who.session_id))
            .map(|(id, _)| *id)
            .collect();
        for id in ending {
            self.remove(id, "session left the call");
        }
    }

    /// A datagram the reader passed on from the shared socket.
    pub(super) fn datagram(&mut self, now: Instant, d: Box<Datagram>) {
        self.web_input(now, d.from, d.len, &d.buf, false);
        // The buffer goes back to the reader's pool.
        let _ = self.parts.pool.try_send(d);
    }

    /// A datagram from `from`, read from the leg's own socket or (`own_socket` false) from the
    /// shared one.
    pub(super) fn web_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        n: usize,
        buf: &[u8],
        own_socket: bool,
    ) {
        let Some(bytes) = buf.get(..n) else {
            return;
        };
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            // A new peer address starts with an ICE check (STUN, first byte 0-3 by RFC 7983).
            None if bytes.first().is_some_and(|b| *b > 3) => {
                tracing::trace!(%from, "non-STUN datagram from an unknown address");
                return;
            }
            None => {
                let found = self
                    .legs
                    .iter()
                    .find(|(_, s)| s.leg.accepts(now, from, self.parts.local, bytes))
                    .map(|(id, _)| *id);
                match found {
                    Some(id) => {
                        self.by_addr.insert(from, id);
                        if let Some(slot) = self.legs.get_mut(&id) {
                            slot.addrs.push(from);
                        }
                        id
                    }
                    None => {
                        tracing::trace!(%from, "datagram for no leg");
                        return;
                    }
                }
            }
        };
        let Some(slot) = self.legs.get_mut(&id) else {
            return;
        };
        slot.last_rx = now;
        let room_id = slot.who.room_id;
        if let Err(e) = slot.leg.handle_input(now, from, self.parts.local, bytes) {
            tracing::debug!(media = %id, %from, error = %e, "datagram refused");
        }
        // Media (not an ICE check: RFC 7983's first byte) from a connected peer, on the shared
        // socket: the peer's next datagrams can come on a socket of the leg's own.
        if !own_socket
            && self.parts.demux.is_some()
            && slot.leg.is_connected()
            && bytes.first().is_some_and(|b| *b > 3)
            && slot.own.as_ref().is_none_or(|o| o.peer != from)
            && slot.own_refused != Some(from)
            && !self.peer_sockets_wanted.contains(&(id, from))
        {
            self.peer_sockets_wanted.push((id, from));
        }
        self.flush(id);
        self.forward(now, room_id, id);
        self.forward_video(now, room_id, id);
        self.pass_keyframe_requests();
    }

    /// Fires the legs' due timers and recomputes the earliest deadline.
    pub(super) fn timeouts(&mut self, now: Instant) {
        let mut earliest = now + SILENCE_TIMEOUT;
        for (id, slot) in self.legs.iter_mut() {
            if slot.leg.poll_timeout() <= now {
                slot.leg.handle_timeout(now);
                flush(
                    &self.parts.socket,
                    &self.parts.events,
                    *id,
                    slot,
                    &mut self.gone,
                    &mut self.keyframes,
                    &mut earliest,
                );
            }
            earliest = earliest.min(slot.leg.poll_timeout());
        }
        self.pass_keyframe_requests();
        // A leg whose timer stays due (a closed one) must not make the loop spin.
        self.leg_deadline = earliest.max(now + Duration::from_millis(1));
    }

    /// Drops legs whose peer is gone or never came, or went silent.
    pub(super) fn reap(&mut self, now: Instant) {
        for (id, slot) in &self.legs {
            let stale = if slot.leg.is_connected() {
                now.duration_since(slot.last_rx) > SILENCE_TIMEOUT
            } else {
                now.duration_since(slot.created) > CONNECT_TIMEOUT
            };
            if stale && !self.gone.contains(id) {
                self.gone.push(*id);
            }
        }
        while let Some(id) = self.gone.pop() {
            self.remove(id, "peer gone");
        }
    }

    pub(super) fn remove(&mut self, id: MediaId, why: &str) {
        let Some(mut slot) = self.legs.remove(&id) else {
            return;
        };
        slot.leg.close();
        while let Some(t) = slot.leg.poll_transmit() {
            let _ = self.parts.socket.send_to(&t.contents, t.destination);
        }
        for addr in &slot.addrs {
            self.by_addr.remove(addr);
        }
        if slot.own.is_some() {
            self.parts
                .totals
                .peer_sockets
                .fetch_sub(1, Ordering::Relaxed);
        }
        let _ = self.parts.routes.send(Route::Forget {
            ufrag: slot.leg.ufrag().to_string(),
        });
        let room_id = slot.who.room_id;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            let _ = room.mixer.remove(participant(id));
            room.members.retain(|m| *m != id);
            self.video_left(room_id, id);
        }
        if self
            .rooms
            .get(&room_id)
            .is_some_and(|room| room.members.is_empty() && room.phones.is_empty())
        {
            self.rooms.remove(&room_id);
        }
        {
            let mut registry = lock(&self.parts.registry);
            registry.release(room_id);
            if slot.leg.sends_video() {
                registry.release_video(room_id);
            }
        }
        self.parts.totals.webrtc.fetch_sub(1, Ordering::Relaxed);
        self.count();
        self.update_direct(room_id);
        let st = slot.leg.stats();
        // Totals are added when a leg ends: nothing is counted per packet on the media thread.
        metrics::counter!("dialbridge_webrtc_packets_received_total").increment(st.opus_received);
        metrics::counter!("dialbridge_webrtc_packets_lost_total").increment(st.jitter.lost);
        metrics::counter!("dialbridge_webrtc_frames_concealed_total")
            .increment(st.decode.concealed);
        tracing::info!(
            media = %id,
            room_id,
            reason = why,
            received = st.opus_received,
            video_received = st.video_received,
            video_sent = st.video_sent,
            sent = st.sent,
            lost = st.jitter.lost,
            late = st.jitter.late,
            fec = st.decode.fec,
            concealed = st.decode.concealed,
            "WebRTC leg removed"
        );
    }
}
