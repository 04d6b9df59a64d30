//! The two-party direct path: a room of exactly two skips the mixer, and each packet goes to
//! the other participant as it arrives, transcoded as needed.

use std::task::Context as TaskContext;
use std::time::Instant;

use dialbridge_bridge::resample::FRAME_8K;

use super::direct_path::{to_phone, Direct, End, OPUS_CLOCK, RTP_FRAME_48K, SILENCE_8K};
use super::phone::send_phone;
use super::shard::Shard;
use super::types::{participant, MediaId};

impl Shard {
    /// Switches a room between its direct path (exactly two participants) and the mixer.
    /// Outbound streams keep their sequence numbers and timestamps across the switch, and
    /// inbound jitter buffers stay fed, so neither side hears a gap.
    pub(super) fn update_direct(&mut self, room_id: i64) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let pair = room.pair();
        let current = room.direct.as_ref().map(|d| (d.a, d.b));
        if pair == current {
            return;
        }
        let mut switch = |end: End, on: bool| match end {
            End::Web(id) => {
                if let Some(slot) = self.legs.get_mut(&id) {
                    if let Err(e) = slot.leg.set_direct(on) {
                        tracing::warn!(media = %id, error = %e, "direct path unavailable");
                    }
                }
            }
            End::Phone(id) => {
                if let Some(slot) = self.phones.get_mut(&id) {
                    slot.direct = on;
                    slot.leg.set_forwarding(on);
                }
            }
        };
        if let Some((a, b)) = current {
            switch(a, false);
            switch(b, false);
        }
        room.direct = pair.map(|(a, b)| {
            switch(a, true);
            switch(b, true);
            Box::new(Direct::new(a, b))
        });
        tracing::debug!(room_id, direct = room.direct.is_some(), "room media path");
        if let Some((a, b)) = pair {
            for end in [a, b] {
                if let End::Phone(id) = end {
                    self.arm(id);
                }
            }
        }
    }

    /// The direct path: what `from` just received goes to the other participant of its
    /// two-party room now, transcoded as needed, in place of the mix.
    pub(super) fn forward(&mut self, now: Instant, room_id: i64, from: MediaId) {
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        let Some(direct) = room.direct.as_mut() else {
            return;
        };
        let (src, dst, path) = if direct.a.id() == from {
            (direct.a, direct.b, &mut direct.a_to_b)
        } else if direct.b.id() == from {
            (direct.b, direct.a, &mut direct.b_to_a)
        } else {
            return;
        };
        let send_muted = room.mixer.muted(participant(src.id())).is_some_and(|m| m.0);
        let recv_muted = room.mixer.muted(participant(dst.id())).is_some_and(|m| m.1);
        let muted = send_muted || recv_muted;
        match (src, dst) {
            (End::Phone(s), End::Phone(d)) => {
                let [Some(sp), Some(dp)] = self.phones.get_disjoint_mut([&s, &d]) else {
                    return;
                };
                while let Some((meta, pcm)) = sp.leg.take_forward() {
                    if let Some(gap) =
                        path.source
                            .admit(meta.ssrc, meta.timestamp, pcm.len() as u32, 8000)
                    {
                        to_phone(now, path, dp, gap / FRAME_8K as u32, pcm, muted);
                    }
                }
                send_phone(d, dp);
            }
            (End::Phone(s), End::Web(d)) => {
                let (Some(sp), Some(dw)) = (self.phones.get_mut(&s), self.legs.get_mut(&d)) else {
                    return;
                };
                while let Some((meta, pcm)) = sp.leg.take_forward() {
                    let Some(gap) =
                        path.source
                            .admit(meta.ssrc, meta.timestamp, pcm.len() as u32, 8000)
                    else {
                        continue;
                    };
                    if gap > 0 {
                        path.frames.clear();
                        dw.leg.skip(gap * (OPUS_CLOCK / 8000));
                    }
                    path.frames.push(pcm);
                    while let Some(frame) = path.frames.pop() {
                        let frame = if muted { &SILENCE_8K } else { frame };
                        if let Err(e) = dw.leg.send_direct_pcm(now, frame) {
                            tracing::debug!(media = %d, error = %e, "frame not sent");
                        }
                    }
                }
                self.flush(d);
            }
            (End::Web(s), End::Phone(d)) => {
                let (Some(sw), Some(dp)) = (self.legs.get_mut(&s), self.phones.get_mut(&d)) else {
                    return;
                };
                while let Some((meta, pcm)) = sw.leg.take_direct_pcm() {
                    let units = pcm.len() as u32 * (OPUS_CLOCK / 8000);
                    if let Some(gap) =
                        path.source
                            .admit(meta.ssrc, meta.timestamp, units, OPUS_CLOCK)
                    {
                        to_phone(
                            now,
                            path,
                            dp,
                            gap / (FRAME_8K as u32 * (OPUS_CLOCK / 8000)),
                            pcm,
                            muted,
                        );
                    }
                }
                send_phone(d, dp);
            }
            (End::Web(s), End::Web(d)) => {
                let [Some(sw), Some(dw)] = self.legs.get_disjoint_mut([&s, &d]) else {
                    return;
                };
                while let Some((meta, payload, units)) = sw.leg.take_direct_opus() {
                    let Some(gap) = path
                        .source
                        .admit(meta.ssrc, meta.timestamp, units, OPUS_CLOCK)
                    else {
                        continue;
                    };
                    dw.leg.skip(gap);
                    if muted {
                        for _ in 0..units.div_ceil(RTP_FRAME_48K) {
                            let _ = dw.leg.send_direct_pcm(now, &SILENCE_8K);
                        }
                    } else {
                        // Browser to browser: the packet goes on as it is.
                        dw.leg.send_direct_opus(now, payload, units);
                    }
                }
                self.flush(d);
            }
        }
    }

    /// Registers a direct-path phone leg's waker with its RTP socket, so that its next packet
    /// queues it; if data is waiting already, queues it now. Mixing rooms' phones are read at
    /// the tick instead.
    pub(super) fn arm(&mut self, id: MediaId) {
        let Some(slot) = self.phones.get(&id) else {
            return;
        };
        if !slot.direct {
            return;
        }
        let ready = &self.ready_phones;
        let waker = self
            .phone_wakers
            .entry(id)
            .or_insert_with(|| ready.waker(id));
        if slot
            .rtp
            .poll_recv_ready(&mut TaskContext::from_waker(waker))
            .is_ready()
        {
            waker.wake_by_ref();
        }
    }
}
