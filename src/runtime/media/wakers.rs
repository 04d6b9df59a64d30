//! What wakes a shard for legs read as their datagrams arrive (phone legs on a direct path,
//! WebRTC legs with a socket of their own): each leg's socket readiness queues the leg and wakes
//! the shard's loop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};

use tokio::sync::Notify;

use super::types::MediaId;
use crate::sync::lock;

/// Legs whose socket became readable. Their wakers fill it from the shard's own reactor (a
/// current-thread runtime), so the lock is never contended.
#[derive(Default)]
pub(super) struct ReadySockets {
    ids: Mutex<Vec<MediaId>>,
    pub(super) notify: Notify,
}

impl ReadySockets {
    /// The waker for leg `id`: its socket's readiness queues the leg here.
    pub(super) fn waker(self: &Arc<Self>, id: MediaId) -> Waker {
        Waker::from(Arc::new(LegWaker {
            id,
            ready: self.clone(),
        }))
    }

    pub(super) fn ids(&self) -> MutexGuard<'_, Vec<MediaId>> {
        lock(&self.ids)
    }
}

/// What a leg's socket wakes: it queues that leg and wakes the loop.
struct LegWaker {
    id: MediaId,
    ready: Arc<ReadySockets>,
}

impl Wake for LegWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.ids().push(self.id);
        self.ready.notify.notify_one();
    }
}
