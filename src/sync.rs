//! Locking shared by the whole crate.

use std::sync::{Mutex, MutexGuard};

/// Locks `m` even if a thread panicked while holding it: the rest of the service goes on with
/// the data as that thread left it instead of panicking in turn.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
