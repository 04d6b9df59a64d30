//! RTP port pairs from the configured range (`[media] rtp_ports`), released when the lease
//! drops. RTP gets the even port, RTCP the odd one above it (RFC 3550 section 11).
//!
//! Released pairs go to the back of the queue, so a port just freed is the last to be handed
//! out again: late packets of an ended call do not land in the next one. The driver binds the
//! sockets; when a bind fails (another program holds the port) it takes the next lease.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Shared pool of RTP/RTCP port pairs.
#[derive(Debug, Clone)]
pub struct RtpPortPool {
    free: Arc<Mutex<VecDeque<u16>>>,
    capacity: usize,
}

/// One RTP/RTCP port pair, returned to the pool on drop.
#[derive(Debug)]
pub struct PortLease {
    rtp: u16,
    free: Arc<Mutex<VecDeque<u16>>>,
}

fn lock(m: &Mutex<VecDeque<u16>>) -> MutexGuard<'_, VecDeque<u16>> {
    // A panic elsewhere while holding the lock leaves the queue itself intact.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RtpPortPool {
    /// All even ports `p` with `first <= p` and `p + 1 <= last`.
    pub fn new(first: u16, last: u16) -> RtpPortPool {
        let start = first.saturating_add(first % 2);
        let free: VecDeque<u16> = (start..last)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|q| q <= last))
            .collect();
        let capacity = free.len();
        RtpPortPool {
            free: Arc::new(Mutex::new(free)),
            capacity,
        }
    }

    /// Takes a pair, or `None` when every pair is in use.
    pub fn allocate(&self) -> Option<PortLease> {
        let rtp = lock(&self.free).pop_front()?;
        Some(PortLease {
            rtp,
            free: Arc::clone(&self.free),
        })
    }

    /// Pairs free now.
    pub fn available(&self) -> usize {
        lock(&self.free).len()
    }

    /// Pairs in the range.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl PortLease {
    /// The RTP port (even).
    pub fn rtp(&self) -> u16 {
        self.rtp
    }

    /// The RTCP port (RTP + 1).
    pub fn rtcp(&self) -> u16 {
        self.rtp + 1
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        lock(&self.free).push_back(self.rtp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hands_out_even_pairs_and_takes_them_back_last() {
        let pool = RtpPortPool::new(20000, 20007);
        assert_eq!(pool.capacity(), 4);
        let a = pool.allocate();
        let b = pool.allocate();
        assert_eq!(
            a.as_ref().map(|l| (l.rtp(), l.rtcp())),
            Some((20000, 20001))
        );
        assert_eq!(b.as_ref().map(PortLease::rtp), Some(20002));
        assert_eq!(pool.available(), 2);
        drop(a);
        assert_eq!(pool.available(), 3);
        // The freed pair comes back only after the others.
        let next: Vec<u16> = (0..3)
            .filter_map(|_| pool.allocate())
            .map(|l| {
                let p = l.rtp();
                std::mem::forget(l);
                p
            })
            .collect();
        assert_eq!(next, vec![20004, 20006, 20000]);
        assert!(pool.allocate().is_none());
    }

    #[test]
    fn odd_bounds_and_tiny_ranges() {
        assert_eq!(RtpPortPool::new(20001, 20006).capacity(), 2); // 20002, 20004
        assert_eq!(RtpPortPool::new(20000, 20000).capacity(), 0);
        assert_eq!(RtpPortPool::new(65534, 65535).capacity(), 1);
        assert_eq!(RtpPortPool::new(65535, 65535).capacity(), 0);
    }

    proptest! {
        #[test]
        fn every_pair_is_inside_the_range_and_unique(first in 1024u16..65535, len in 0u16..200) {
            let last = first.saturating_add(len);
            let pool = RtpPortPool::new(first, last);
            let leases: Vec<PortLease> = std::iter::from_fn(|| pool.allocate()).collect();
            prop_assert_eq!(leases.len(), pool.capacity());
            let mut seen = std::collections::HashSet::new();
            for l in &leases {
                prop_assert!(l.rtp() % 2 == 0 && l.rtp() >= first && l.rtcp() <= last);
                prop_assert!(seen.insert(l.rtp()));
            }
            drop(leases);
            prop_assert_eq!(pool.available(), pool.capacity());
        }
    }
}
