//! A baseline autoscaler to compare the engine with: Kubernetes' Horizontal Pod Autoscaler with
//! its documented defaults, sans-IO (the caller owns the clock and the capacity).
//!
//! What it does, as in `kube-controller-manager` and the `autoscaling/v2` defaults:
//! - every `sync_period` (15 s) it reads the utilization metric as it was `metrics_delay` (15 s)
//!   ago (the metrics pipeline's lag), and recommends
//!   `ceil(current × utilization / target)` replicas, unless the ratio is within `tolerance`
//!   (10%) of 1;
//! - scale-up is limited per `sync_period` to the larger of doubling and adding 4 replicas
//!   (`policies: Percent 100 / Pods 4 per 15 s, selectPolicy: Max`), with no stabilization;
//! - scale-down uses the highest recommendation of the last `scale_down_stabilization` (300 s);
//! - replicas stay within `[min, max]`.
//!
//! It has no prediction, no traffic classes and no admission control: past capacity, every class
//! suffers alike.

use std::collections::VecDeque;
use std::time::Duration;

/// The HPA's tunables; [`HpaSettings::default`] is Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaSettings {
    /// How often it recomputes (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// Ratios within this of 1 cause no change (`--horizontal-pod-autoscaler-tolerance`, 0.1).
    pub tolerance: f64,
    /// Age of the metric it acts on (the metrics pipeline: 15 s).
    pub metrics_delay: Duration,
    /// Scale-up per period: at most this factor of the current replicas (Percent 100 → 2.0)...
    pub scale_up_factor: f64,
    /// ...or this many more replicas (Pods 4), whichever allows more.
    pub scale_up_pods: u32,
    /// Scale-down acts on the highest recommendation of this window (300 s).
    pub scale_down_stabilization: Duration,
}

impl Default for HpaSettings {
    fn default() -> Self {
        HpaSettings {
            sync_period: Duration::from_secs(15),
            tolerance: 0.1,
            metrics_delay: Duration::from_secs(15),
            scale_up_factor: 2.0,
            scale_up_pods: 4,
            scale_down_stabilization: Duration::from_secs(300),
        }
    }
}

/// The autoscaler for one workload.
#[derive(Debug, Clone)]
pub struct Hpa {
    settings: HpaSettings,
    min: u32,
    max: u32,
    target_utilization: f64,
    /// Utilization samples, (seconds, value), kept for `metrics_delay`.
    samples: VecDeque<(f64, f64)>,
    /// Recommendations of the stabilization window, (seconds, replicas).
    recommendations: VecDeque<(f64, u32)>,
    next_sync: f64,
}

impl Hpa {
    /// An autoscaler keeping replicas in `[min, max]` at `target_utilization` (in (0, 1]).
    pub fn new(settings: HpaSettings, min: u32, max: u32, target_utilization: f64) -> Hpa {
        let target = if target_utilization > 0.0 && target_utilization <= 1.0 { target_utilization } else { 1.0 };
        Hpa {
            settings,
            min,
            max: max.max(min),
            target_utilization: target,
            samples: VecDeque::new(),
            recommendations: VecDeque::new(),
            next_sync: settings.sync_period.as_secs_f64(),
        }
    }

    /// Records the workload's utilization (load over serving capacity) at `t` seconds.
    pub fn observe(&mut self, t: f64, utilization: f64) {
        self.samples.push_back((t, if utilization.is_finite() { utilization.max(0.0) } else { 0.0 }));
        let keep = self.settings.metrics_delay.as_secs_f64() + self.settings.sync_period.as_secs_f64();
        while self.samples.front().is_some_and(|(at, _)| *at < t - keep) {
            self.samples.pop_front();
        }
    }

    /// At a sync (every `sync_period`), the replicas it wants given `current` ones; `None`
    /// between syncs, before it has a metric old enough, or when it wants no change.
    pub fn sync(&mut self, t: f64, current: u32) -> Option<u32> {
        if t < self.next_sync {
            return None;
        }
        self.next_sync = t + self.settings.sync_period.as_secs_f64();
        let seen_at = t - self.settings.metrics_delay.as_secs_f64();
        let utilization = self.samples.iter().rev().find(|(at, _)| *at <= seen_at).map(|(_, u)| *u)?;
        let ratio = utilization / self.target_utilization;
        let current_f = f64::from(current.max(1));
        let raw = if (ratio - 1.0).abs() <= self.settings.tolerance {
            current
        } else {
            let desired = (current_f * ratio).ceil();
            if desired >= f64::from(u32::MAX) { u32::MAX } else { desired as u32 }
        };
        let recommendation = raw.clamp(self.min, self.max);
        self.recommendations.push_back((t, recommendation));
        let window = self.settings.scale_down_stabilization.as_secs_f64();
        while self.recommendations.front().is_some_and(|(at, _)| *at < t - window) {
            self.recommendations.pop_front();
        }
        let desired = if recommendation < current {
            // Scale down only to the highest recommendation of the window.
            self.recommendations.iter().map(|(_, r)| *r).max().unwrap_or(current).min(current)
        } else {
            let by_factor = (current_f * self.settings.scale_up_factor).floor();
            let by_factor = if by_factor >= f64::from(u32::MAX) { u32::MAX } else { by_factor as u32 };
            let limit = by_factor.max(current.saturating_add(self.settings.scale_up_pods));
            recommendation.min(limit)
        };
        (desired != current).then_some(desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa() -> Hpa {
        Hpa::new(HpaSettings::default(), 2, 100, 0.5)
    }

    #[test]
    fn it_acts_on_the_metric_of_15_s_ago_every_15_s() {
        let mut h = hpa();
        for t in 0..=14 {
            h.observe(f64::from(t), 0.5);
        }
        assert_eq!(h.sync(14.0, 4), None, "not a sync yet");
        h.observe(15.0, 2.0);
        // At 15 s it sees the sample of 0 s (0.5 = target): no change, despite the new load.
        assert_eq!(h.sync(15.0, 4), None);
        for t in 16..=30 {
            h.observe(f64::from(t), 2.0);
        }
        assert_eq!(h.sync(20.0, 4), None, "between syncs");
        // At 30 s it sees 15 s: 4 × 2.0 / 0.5 = 16, limited to doubling (8).
        assert_eq!(h.sync(30.0, 4), Some(8));
    }

    #[test]
    fn scale_up_takes_the_larger_of_doubling_and_four_pods() {
        let mut h = hpa();
        for t in 0..=15 {
            h.observe(f64::from(t), 5.0);
        }
        // From 2: doubling allows 4, four pods allow 6.
        assert_eq!(h.sync(15.0, 2), Some(6));
    }

    #[test]
    fn tolerance_and_bounds_hold() {
        let mut h = hpa();
        for t in 0..=15 {
            h.observe(f64::from(t), 0.54);
        }
        assert_eq!(h.sync(15.0, 10), None, "within 10%");
        let mut h = Hpa::new(HpaSettings::default(), 2, 12, 0.5);
        for t in 0..=15 {
            h.observe(f64::from(t), 50.0);
        }
        assert_eq!(h.sync(15.0, 10), Some(12), "at most max");
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let mut h = hpa();
        let mut replicas = 20;
        let mut t = 0.0;
        // Busy for a minute, then idle.
        while t <= 600.0 {
            h.observe(t, if t < 60.0 { 0.5 } else { 0.05 });
            if let Some(r) = h.sync(t, replicas) {
                assert!(t >= 60.0 + 300.0, "scaled down to {r} at {t} s, inside the window");
                replicas = r;
            }
            t += 1.0;
        }
        assert_eq!(replicas, 2);
    }
}
