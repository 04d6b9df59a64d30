//! Reading phone legs' sockets: at the tick in mixing rooms, as packets arrive (woken by the
//! socket's readiness) on a direct path.

use std::io::ErrorKind;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Wake, Waker};
use std::time::Instant;

use tokio::sync::Notify;

use super::phone::phone_events;
use super::shard::Shard;
use super::types::MediaId;
use crate::sync::lock;

/// Phone legs whose RTP socket became readable. Their wakers fill it from the shard's own
/// reactor (a current-thread runtime), so the lock is never contended.
#[derive(Default)]
pub(super) struct ReadyPhones {
    ids: Mutex<Vec<MediaId>>,
    pub(super) notify: Notify,
}

impl ReadyPhones {
    fn ids(&self) -> MutexGuard<'_, Vec<MediaId>> {
        lock(&self.ids)
    }
}

/// What a direct-path phone leg's RTP socket wakes: it queues that leg and wakes the loop.
struct PhoneWaker {
    id: MediaId,
    ready: Arc<ReadyPhones>,
}

impl Wake for PhoneWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.ids().push(self.id);
        self.ready.notify.notify_one();
    }
}

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
        let waker = self.phone_wakers.entry(id).or_insert_with(|| {
            Waker::from(Arc::new(PhoneWaker {
                id,
                ready: ready.clone(),
            }))
        });
        if slot
            .rtp
            .poll_recv_ready(&mut TaskContext::from_waker(waker))
            .is_ready()
        {
            waker.wake_by_ref();
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
                        if let Some(bytes) = self.buf.get(..n) {
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
