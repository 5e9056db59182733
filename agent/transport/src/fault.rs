//! Simulated partitions, for tests and drills.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Drops frames to and from chosen peers, to simulate a partition.
///
/// A frame sent to a blocked address is dropped before it is queued; a frame received from a
/// blocked address is dropped before it is delivered. Both are counted in
/// [`TransportStats::dropped_fault`](crate::TransportStats::dropped_fault). Connections stay up
/// (QUIC keep-alives still flow): only frames are dropped, so healing takes effect at once.
#[derive(Debug, Default)]
pub struct FaultInjector {
    /// Fast path: false while nothing is blocked.
    active: AtomicBool,
    state: Mutex<Blocked>,
}

#[derive(Debug, Default)]
struct Blocked {
    all: bool,
    addrs: HashSet<SocketAddr>,
}

impl FaultInjector {
    /// Drops frames to and from `addr` until it is unblocked or healed.
    pub fn block(&self, addr: SocketAddr) {
        let mut state = self.lock();
        state.addrs.insert(addr);
        self.active.store(true, Ordering::Release);
    }

    /// Stops dropping frames of `addr` (a [`block_all`](Self::block_all) still applies).
    pub fn unblock(&self, addr: SocketAddr) {
        let mut state = self.lock();
        state.addrs.remove(&addr);
        self.active.store(state.all || !state.addrs.is_empty(), Ordering::Release);
    }

    /// Drops frames to and from every peer until [`heal`](Self::heal).
    pub fn block_all(&self) {
        self.lock().all = true;
        self.active.store(true, Ordering::Release);
    }

    /// Lifts every block.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.all = false;
        state.addrs.clear();
        self.active.store(false, Ordering::Release);
    }

    /// Whether frames to and from `addr` are dropped.
    pub fn is_blocked(&self, addr: SocketAddr) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let state = self.lock();
        state.all || state.addrs.contains(&addr)
    }

    fn lock(&self) -> MutexGuard<'_, Blocked> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_unblock_all_heal() {
        let f = FaultInjector::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(!f.is_blocked(a));
        f.block(a);
        assert!(f.is_blocked(a) && !f.is_blocked(b));
        f.unblock(a);
        assert!(!f.is_blocked(a));
        f.block_all();
        assert!(f.is_blocked(a) && f.is_blocked(b));
        f.block(a);
        f.unblock(a);
        assert!(f.is_blocked(a), "block_all still applies");
        f.heal();
        assert!(!f.is_blocked(a) && !f.is_blocked(b));
    }
}
