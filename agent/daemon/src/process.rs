//! The agent's own process (CPU and memory), read through sysinfo at a slow cadence.
//!
//! Only our own pid is refreshed, so a sample costs a few reads under `/proc/self` plus the
//! `/proc/stat` read sysinfo does for CPU accounting.

use serde::Serialize;
use std::time::Instant;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One reading of the agent's own process.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcessSample {
    /// CPU time used since the previous sample, as a fraction of one core (above 1 when several
    /// threads ran at once); 0 on the first sample.
    pub cpu_fraction: f64,
    /// Resident set size.
    pub resident_bytes: u64,
    /// Virtual memory size.
    pub virtual_bytes: u64,
}

/// Samples the agent's own process.
#[derive(Debug)]
pub struct ProcessSampler {
    /// `None` when sysinfo cannot work on this platform: every sample is then all zeros.
    system: Option<System>,
    pid: Option<Pid>,
    /// Wall clock and accumulated CPU milliseconds at the previous sample.
    last: Option<(Instant, u64)>,
}

impl ProcessSampler {
    /// A sampler for the current process.
    pub fn new() -> Self {
        Self { system: System::new().ok(), pid: sysinfo::get_current_pid().ok(), last: None }
    }

    /// CPU % of one core since the previous call, resident and virtual memory, thread count if available.
    ///
    /// The CPU fraction is the process's accumulated CPU time over the wall time between the
    /// two calls, so it does not depend on sysinfo's minimum CPU refresh interval. It is 0 on
    /// the first call. Thread count is not reported: [`ProcessSample`] has no field for it.
    /// When the process cannot be read, every field is 0.
    pub fn sample(&mut self) -> ProcessSample {
        let (Some(system), Some(pid)) = (self.system.as_mut(), self.pid) else {
            return ProcessSample::default();
        };
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let now = Instant::now();
        let Some(process) = system.process(pid) else {
            return ProcessSample::default();
        };
        let cpu_ms = process.accumulated_cpu_time();
        let cpu_fraction = match self.last {
            Some((then, then_ms)) => {
                let secs = now.saturating_duration_since(then).as_secs_f64();
                if secs > 0.0 { cpu_ms.saturating_sub(then_ms) as f64 / 1000.0 / secs } else { 0.0 }
            }
            None => 0.0,
        };
        self.last = Some((now, cpu_ms));
        ProcessSample { cpu_fraction, resident_bytes: process.memory(), virtual_bytes: process.virtual_memory() }
    }
}

impl Default for ProcessSampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_own_memory_and_cpu() {
        let mut sampler = ProcessSampler::new();
        let first = sampler.sample();
        assert!(first.resident_bytes > 0, "{first:?}");
        assert!(first.virtual_bytes >= first.resident_bytes, "{first:?}");
        assert_eq!(first.cpu_fraction, 0.0);
        // Burn some CPU so the second sample has something to see.
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 60 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        let second = sampler.sample();
        assert!(second.resident_bytes > 0);
        assert!(second.cpu_fraction.is_finite() && second.cpu_fraction >= 0.0, "{second:?}");
    }
}
