//! One deadline per call, with the earliest and the due ones found without scanning every call
//! (each event of the driver asks for the next deadline).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::CallHandle;

#[derive(Debug, Default)]
pub(super) struct Deadlines {
    by_call: HashMap<CallHandle, Instant>,
    order: BTreeSet<(Instant, CallHandle)>,
}

impl Deadlines {
    /// Sets (or moves) the deadline of `call`.
    pub(super) fn insert(&mut self, call: CallHandle, at: Instant) {
        if let Some(old) = self.by_call.insert(call, at) {
            self.order.remove(&(old, call));
        }
        self.order.insert((at, call));
    }

    pub(super) fn remove(&mut self, call: &CallHandle) {
        if let Some(old) = self.by_call.remove(call) {
            self.order.remove(&(old, *call));
        }
    }

    pub(super) fn contains_key(&self, call: &CallHandle) -> bool {
        self.by_call.contains_key(call)
    }

    pub(super) fn earliest(&self) -> Option<Instant> {
        self.order.first().map(|(at, _)| *at)
    }

    /// The calls whose deadline is `now` or earlier, earliest first.
    pub(super) fn due(&self, now: Instant) -> Vec<CallHandle> {
        self.order
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, call)| *call)
            .collect()
    }
}
