//! The epoch ticker: interrupts a plugin call that runs past its deadline, at no cost at rest.
//!
//! wasmtime's epoch interruption traps guest code once the engine's epoch passes the store's
//! deadline. Instead of ticking the epoch at a fixed rate forever, the host sets each store's
//! deadline to "the next epoch" just before a call and *arms* the ticker with the call's
//! wall-clock deadline. A single thread sleeps until the armed deadline; if the same call is
//! still running then, it bumps the epoch once, which interrupts that call. While nothing is
//! armed the thread is parked with no timeout (no wake-ups at all at rest). Arming and disarming
//! take an uncontended mutex; the thread is only unparked when it is parked with nothing to
//! wait for (or waits past the new deadline), so back-to-back calls cost no system call.
//!
//! A bump only ever happens while the call that armed it is still in flight (it is decided and
//! done under the mutex that disarming takes), so a bump never reaches a later call.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::Instant;
use wasmtime::Engine;

struct State {
    /// The armed call: its sequence number and deadline.
    armed: Option<(u64, Instant)>,
    /// When the thread will wake next (`None`: parked without a timeout).
    wake_at: Option<Instant>,
    next_seq: u64,
    /// Epoch bumps made (calls interrupted).
    fired: u64,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    engine: Engine,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The ticker thread and its shared state; stops the thread on drop.
pub(crate) struct Ticker {
    shared: Arc<Shared>,
    thread: Thread,
    handle: Option<JoinHandle<()>>,
}

/// Disarms the ticker when dropped (the call is over).
pub(crate) struct Armed<'a> {
    ticker: &'a Ticker,
    seq: u64,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let mut st = self.ticker.shared.lock();
        if matches!(st.armed, Some((seq, _)) if seq == self.seq) {
            st.armed = None;
        }
    }
}

impl Ticker {
    /// Starts the ticker thread for `engine`.
    pub(crate) fn start(engine: Engine) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { armed: None, wake_at: None, next_seq: 0, fired: 0, shutdown: false }),
            engine,
        });
        let thread_shared = Arc::clone(&shared);
        let handle =
            std::thread::Builder::new().name("wedsync-plugin-epoch".into()).spawn(move || run(&thread_shared))?;
        Ok(Ticker { shared, thread: handle.thread().clone(), handle: Some(handle) })
    }

    /// Arms the ticker for a call that must end by `deadline`. The store's epoch deadline must
    /// already be set to one tick beyond the current epoch.
    pub(crate) fn arm(&self, deadline: Instant) -> Armed<'_> {
        let mut st = self.shared.lock();
        let seq = st.next_seq;
        st.next_seq = st.next_seq.wrapping_add(1);
        st.armed = Some((seq, deadline));
        let wake = match st.wake_at {
            None => true,
            Some(at) => at > deadline,
        };
        drop(st);
        if wake {
            self.thread.unpark();
        }
        Armed { ticker: self, seq }
    }

    /// Epoch bumps made so far (calls interrupted at their deadline).
    pub(crate) fn fired(&self) -> u64 {
        self.shared.lock().fired
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.thread.unpark();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let mut st = shared.lock();
        if st.shutdown {
            return;
        }
        match st.armed {
            Some((_, deadline)) => {
                let now = Instant::now();
                if now >= deadline {
                    shared.engine.increment_epoch();
                    st.fired = st.fired.wrapping_add(1);
                    st.armed = None;
                    continue;
                }
                st.wake_at = Some(deadline);
                drop(st);
                std::thread::park_timeout(deadline - now);
            }
            None => {
                st.wake_at = None;
                drop(st);
                std::thread::park();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).unwrap()
    }

    #[test]
    fn fires_once_for_an_overdue_call_and_never_for_a_finished_one() {
        let ticker = Ticker::start(engine()).unwrap();
        {
            let _armed = ticker.arm(Instant::now() + Duration::from_millis(2));
            let start = Instant::now();
            while ticker.fired() == 0 && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(ticker.fired(), 1);
        for _ in 0..100 {
            let _armed = ticker.arm(Instant::now() + Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(ticker.fired(), 1);
    }
}
