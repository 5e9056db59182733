//! Time and shared-state helpers every part of the daemon uses; a leaf module, importing
//! nothing from the rest of the crate.
//!
//! * [`Clock`]: the agent's monotonic time as the core's [`Timestamp`] (what every sans-IO
//!   state machine takes), at the wall clock's pace or, in the fleet simulator, faster.
//! * [`wall_ms`]: Unix milliseconds, for the calendar, decisions and the audit trail.
//! * [`lock`], [`read`], [`write`]: lock guards that survive a poisoned lock (a panic elsewhere
//!   must not stop the API or metrics).

use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wedsync_core::Timestamp;

/// Monotonic time since the agent started, as the core's [`Timestamp`]. The agent's runs at the
/// wall clock's pace; the fleet simulator's runs `speed` times faster.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    speed: f64,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Self {
        Clock { origin: Instant::now(), speed: 1.0 }
    }

    /// A clock whose origin is now and that runs `speed` times faster than the wall clock (a
    /// speed that is not a positive number is taken as 1).
    pub fn with_speed(speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 { speed } else { 1.0 };
        Clock { origin: Instant::now(), speed }
    }

    /// How many times faster than the wall clock this clock runs.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The timestamp of `instant`.
    pub fn at(&self, instant: Instant) -> Timestamp {
        let elapsed = instant.saturating_duration_since(self.origin);
        let elapsed = if self.speed == 1.0 {
            elapsed
        } else {
            Duration::try_from_secs_f64(elapsed.as_secs_f64() * self.speed).unwrap_or(Duration::MAX)
        };
        Timestamp::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }

    /// How long `d` of this clock's time lasts on the wall clock (at least a millisecond, so a
    /// period made from it is never zero).
    pub fn wall(&self, d: Duration) -> Duration {
        self.unscaled(d).max(Duration::from_millis(1))
    }

    /// The wall-clock instant at which this clock reads `at`.
    pub fn instant_of(&self, at: Timestamp) -> Instant {
        let since = self.unscaled(Duration::from_nanos(at.as_nanos()));
        self.origin.checked_add(since).unwrap_or(self.origin)
    }

    fn unscaled(&self, d: Duration) -> Duration {
        if self.speed == 1.0 {
            d
        } else {
            Duration::try_from_secs_f64(d.as_secs_f64() / self.speed).unwrap_or(Duration::MAX)
        }
    }

    /// Time since the origin.
    pub fn uptime(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Unix milliseconds now (0 before 1970, `i64::MAX` past its range).
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Locks a mutex, recovering from poisoning: a panic elsewhere must not stop metrics.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads an `RwLock`, recovering from poisoning.
pub fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes an `RwLock`, recovering from poisoning.
pub fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_clock_runs_its_speed_times_the_wall_and_maps_back_to_instants() {
        let clock = Clock::with_speed(50.0);
        let later = clock.origin + Duration::from_millis(100);
        assert_eq!(clock.at(later), Timestamp::from_nanos(5_000_000_000));
        assert_eq!(clock.instant_of(Timestamp::from_nanos(5_000_000_000)), later);
        assert_eq!(clock.wall(Duration::from_secs(1)), Duration::from_millis(20));
        // A period never comes out zero, however fast the clock.
        assert_eq!(clock.wall(Duration::from_micros(10)), Duration::from_millis(1));
        let real = Clock::start();
        assert_eq!(real.wall(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(real.at(real.origin + Duration::from_nanos(1)), Timestamp::from_nanos(1));
        for nonsense in [0.0, -2.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Clock::with_speed(nonsense).speed(), 1.0, "{nonsense}");
        }
    }
}
