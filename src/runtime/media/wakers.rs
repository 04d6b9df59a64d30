//! What wakes a shard for its direct-path phone legs: each leg's socket readiness queues the
//! leg and wakes the shard's loop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};

use tokio::sync::Notify;

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
    /// The waker for phone leg `id`: its socket's readiness queues the leg here.
    pub(super) fn waker(self: &Arc<Self>, id: MediaId) -> Waker {
        Waker::from(Arc::new(PhoneWaker {
            id,
            ready: self.clone(),
        }))
    }

    pub(super) fn ids(&self) -> MutexGuard<'_, Vec<MediaId>> {
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
