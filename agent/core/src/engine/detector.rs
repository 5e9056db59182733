//! Spike detection on a 10 Hz demand series: a one-sided CUSUM against a slowly tracked baseline.
//!
//! Tuning (defaults): reference `k = 1.5σ` and threshold `h = 6σ`. A sustained step of 3σ adds
//! about 1.5σ per sample, so it crosses `h` in 4–5 samples (under 0.5 s at 10 Hz). Under
//! stationary noise the in-control average run length of this CUSUM is of the order of 10^7
//! samples (Siegmund's approximation, `e^{2kh}/(2k²)` in σ units), i.e. weeks at 10 Hz, which keeps
//! false alarms under one a day. Bounded noise (±15% uniform is ±1.73σ) can never push a single
//! increment past 0.23σ, so it almost never accumulates.

/// Detector tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorTuning {
    /// Reference value, in baseline standard deviations.
    pub k_sigma: f64,
    /// Decision threshold, in baseline standard deviations.
    pub h_sigma: f64,
    /// Samples the baseline must have seen before the detector may fire.
    pub warmup_samples: u32,
    /// Weight of each new sample in the baseline mean and variance (small: slow baseline).
    pub baseline_alpha: f64,
    /// Lower bound on σ as a fraction of the baseline mean (a flat series must not make any
    /// wiggle a "spike").
    pub min_sigma_fraction: f64,
}

impl Default for DetectorTuning {
    fn default() -> Self {
        DetectorTuning {
            k_sigma: 1.5,
            h_sigma: 6.0,
            warmup_samples: 50,
            // ~30 s half-life at 10 Hz.
            baseline_alpha: 1.0 - 0.5f64.powf(1.0 / 300.0),
            min_sigma_fraction: 0.02,
        }
    }
}

/// A detected upward shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    /// The baseline mean before the shift.
    pub baseline: f64,
    /// The baseline standard deviation used.
    pub sigma: f64,
    /// The CUSUM statistic when it crossed the threshold.
    pub cusum: f64,
}

/// One-sided (upward) CUSUM detector with an EWMA baseline.
#[derive(Debug, Clone)]
pub struct SpikeDetector {
    tuning: DetectorTuning,
    mean: f64,
    variance: f64,
    seen: u32,
    cusum: f64,
}

impl SpikeDetector {
    /// A detector that has seen nothing yet.
    pub fn new(tuning: DetectorTuning) -> Self {
        SpikeDetector { tuning, mean: 0.0, variance: 0.0, seen: 0, cusum: 0.0 }
    }

    /// The baseline mean.
    pub fn baseline(&self) -> f64 {
        self.mean
    }

    /// Whether the baseline has seen too few samples for the detector to fire yet.
    pub fn warming_up(&self) -> bool {
        self.seen < self.tuning.warmup_samples
    }

    /// The σ used for detection (with its floor).
    pub fn sigma(&self) -> f64 {
        self.variance.sqrt().max(self.mean.abs() * self.tuning.min_sigma_fraction).max(1e-9)
    }

    /// Feeds one sample; returns a spike when the statistic crosses the threshold. After a spike
    /// the baseline jumps to `level_after` (the caller's estimate of the new level) and the
    /// statistic restarts, so one shift is reported once.
    pub fn observe(&mut self, sample: f64, level_after: impl FnOnce() -> f64) -> Option<Spike> {
        if !sample.is_finite() {
            return None;
        }
        if self.seen == 0 {
            self.mean = sample;
            self.seen = 1;
            return None;
        }
        let sigma = self.sigma();
        let mut spike = None;
        if self.seen >= self.tuning.warmup_samples {
            self.cusum = (self.cusum + (sample - self.mean) / sigma - self.tuning.k_sigma).max(0.0);
            if self.cusum > self.tuning.h_sigma {
                spike = Some(Spike { baseline: self.mean, sigma, cusum: self.cusum });
                self.cusum = 0.0;
                self.mean = level_after();
                return spike;
            }
        }
        // The baseline follows every sample, slowly: a real shift is caught within a few samples,
        // long before it can drag a ~30 s baseline; skipping samples would bias σ low.
        let a = self.tuning.baseline_alpha.max(1.0 / f64::from(self.seen + 1));
        let delta = sample - self.mean;
        self.mean += a * delta;
        self.variance = (1.0 - a) * (self.variance + a * delta * delta);
        self.seen = self.seen.saturating_add(1);
        spike
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::Noise;

    #[test]
    fn three_sigma_step_is_caught_within_a_second() {
        let mut detector = SpikeDetector::new(DetectorTuning::default());
        let mut noise = Noise(42);
        let sigma = 0.15 / 3f64.sqrt() * 1000.0; // ±15% uniform around 1000
        for _ in 0..3000 {
            assert!(detector.observe(1000.0 * (1.0 + 0.15 * noise.next()), || 0.0).is_none());
        }
        let step = 1000.0 + 3.0 * sigma;
        let caught = (0..10).position(|_| detector.observe(step + 150.0 * noise.next(), || step).is_some());
        let samples = caught.expect("3σ step detected") + 1;
        assert!(samples <= 10, "detected after {samples} samples");
    }

    #[test]
    fn stationary_noise_raises_no_alarm_for_a_simulated_day() {
        let mut detector = SpikeDetector::new(DetectorTuning::default());
        let mut noise = Noise(7);
        // One day at 10 Hz.
        let alarms = (0..864_000)
            .filter(|_| detector.observe(1000.0 * (1.0 + 0.15 * noise.next()), || 1000.0).is_some())
            .count();
        assert!(alarms <= 1, "{alarms} false alarms in a day");
    }

    #[test]
    fn flat_series_needs_a_real_move() {
        let mut detector = SpikeDetector::new(DetectorTuning::default());
        for _ in 0..100 {
            detector.observe(500.0, || 0.0);
        }
        // 1% wiggle is below the σ floor's reach.
        assert!((0..100).all(|_| detector.observe(505.0, || 505.0).is_none()));
        assert!((0..5).any(|_| detector.observe(600.0, || 600.0).is_some()));
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        let mut detector = SpikeDetector::new(DetectorTuning::default());
        assert!(detector.observe(f64::NAN, || 0.0).is_none());
        assert!(detector.observe(f64::INFINITY, || 0.0).is_none());
        assert_eq!(detector.baseline(), 0.0);
    }
}
