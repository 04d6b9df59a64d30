//! Reading phone legs' sockets: at the tick in mixing rooms, as packets arrive (woken by the
//! socket's readiness) on a direct path.

use std::io::ErrorKind;
use std::time::Instant;

use super::phone::phone_events;
use super::shard::Shard;
use super::types::MediaId;

impl Shard {
    /// Reads the phone legs of two-party rooms whose RTP socket has data (only those: a wake
    /// costs the legs that have something, not every leg of the shard), and asks to hear of
    /// their next packets.
    pub(super) fn read_ready_phones(&mut self, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        // The queue keeps the emptied list: no allocation once both have grown.
        std::mem::swap(&mut *self.ready_phones.ids(), &mut ready);
        for id in &ready {
            self.read_phone(now, *id);
            self.arm(*id);
        }
        self.ready = ready;
    }

    /// Until `id` is among the legs queued for reading (tests and benchmarks).
    #[cfg(any(test, feature = "bench-hooks"))]
    pub(super) async fn wait_queued(&self, id: MediaId) {
        while !self.ready_phones.ids().contains(&id) {
            self.ready_phones.notify.notified().await;
        }
    }

    /// Reads every datagram waiting on a phone leg's sockets into the leg; on a direct path
    /// each audio packet goes on to the other participant at once.
    pub(super) fn read_phone(&mut self, now: Instant, id: MediaId) {
        for rtcp in [false, true] {
            // Bounded, so a flood on one leg cannot hold up the others.
            for _ in 0..64 {
                let Some(slot) = self.phones.get_mut(&id) else {
                    return;
                };
                let socket = if rtcp { &slot.rtcp } else { &slot.rtp };
                match socket.try_recv_from(&mut self.buf) {
                    Ok((n, from)) => {
                        let Some(bytes) = self.buf.get(..n) else {
                            continue;
                        };
                        let opened;
                        let bytes = match slot.srtp.as_mut() {
                            Some(srtp) => match srtp.unprotect(id, from, rtcp, bytes) {
                                Some(packet) => {
                                    opened = packet;
                                    Some(&opened[..])
                                }
                                None => None,
                            },
                            None => Some(bytes),
                        };
                        if let Some(bytes) = bytes {
                            if let Err(e) = slot.leg.handle_datagram(now, from, bytes) {
                                tracing::trace!(%from, error = %e, "phone datagram refused");
                            }
                        }
                        if let (true, Some(room_id)) = (slot.direct, slot.room_id()) {
                            self.forward(now, room_id, id);
                            if let Some(slot) = self.phones.get_mut(&id) {
                                phone_events(id, slot);
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "phone socket read failed");
                        break;
                    }
                }
            }
        }
    }
}
