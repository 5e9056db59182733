//! The current level on top of the learned week, and prediction intervals: [`Forecaster`].
//!
//! A [`WeeklyProfile`] knows the shape of a plain week from past weeks only; it never learns
//! that today runs 8% above last week, or that the last half hour came in hot. The forecaster
//! keeps, next to the profile, a small state updated once per completed bucket (O(1)):
//!
//! * **level** `L`: the load over what the profile expected, as the ratio of two exponentially
//!   decayed sums (`Σ load / Σ expected`, half-life [`SmoothingParams::level_half_life`]): a
//!   slow correction of the whole week's scale. What the profile expects may blend in the
//!   pooled daily shape ([`SmoothingParams::pooling`]: every day's same time of day, scaled by
//!   the day), far less noisy where the days share a shape;
//! * **deviation** `d`: how far the last buckets were from `L × profile`, relative to it,
//!   smoothed, with a damped trend, fading with the lead as `persistence^h`;
//! * **correction**: for each lead up to [`DIRECT_LEADS`] (3 hours), an online least-squares
//!   regression (forgetting over two weeks, ridge-damped) of the relative deviation that lead
//!   later on the last raw deviations, `d` and its trend. Where it has learned a lead it gives
//!   the deviation at that lead; beyond 3 hours its last lead's fades.
//!
//! A forecast `h` buckets ahead is `(L·s + c)·(1 + deviation(h)) - c`, with `s` the profile's
//! estimate of the target bucket from past weeks and `c` a small offset (a fraction of the mean
//! load) that keeps relative deviations finite where the load is near 0. The seasonal
//! multipliers stay outside: everything here is de-seasonalized.
//!
//! **Intervals.** For a set of leads (5 minutes to 48 hours) the forecaster remembers its point
//! forecasts and, when the bucket they were for completes, updates online quantile estimates of
//! its relative error (p50 … p99). [`Forecaster::fit`] starts them from the in-sample
//! errors; an engine that only observes starts them from a prior ([`PRIOR_SPREAD`]) that they
//! leave within hours. An upper quantile for any lead and level is interpolated.
//!
//! **Robust profile.** An observation teaches the profile no more than [`PROFILE_CLIP`] times
//! the level-adjusted expectation of its bucket (and no less than its inverse): a one-off viral
//! hour raises the level (which fades within hours) but moves the same hour next week by a few
//! percent of its excess only.

use super::{ForecastError, Locus, MAX_HORIZON, MS_PER_MINUTE, SeasonalMultipliers, TimeZone, WeeklyProfile};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Leads, in buckets, at which the forecaster tracks the quantiles of its own relative error.
pub const ANCHORS: [u32; 8] = [1, 3, 6, 12, 24, 72, 288, 576];
/// Quantile levels tracked at every anchor; others are interpolated (and clamped to this range).
pub const LEVELS: [f64; 5] = [0.5, 0.8, 0.9, 0.95, 0.99];
/// Default upper quantile that pre-scaling provisions for.
pub const DEFAULT_QUANTILE: f64 = 0.9;
/// Relative error spread assumed before any error has been seen (standard deviations of a
/// normal error: p90 starts at +19%).
pub const PRIOR_SPREAD: f64 = 0.15;
/// An observation teaches the profile at most this factor over its level-adjusted expectation.
pub const PROFILE_CLIP: f64 = 1.5;
/// Standard normal quantiles of [`LEVELS`], for the prior.
const PRIOR_Z: [f64; 5] = [0.0, 0.8416, 1.2816, 1.6449, 2.3263];
/// Half-life, in buckets, of the mean load that scales the offset (a day of 5-minute buckets).
const MEAN_HALF_LIFE: f64 = 288.0;
/// Step of the online quantile estimates, as a fraction of the error's mean magnitude.
const QUANTILE_RATE: f64 = 0.05;
/// Half-life, in updates, of the error's mean magnitude per anchor.
const SCALE_HALF_LIFE: f64 = 288.0;
/// The level never leaves this range (a profile that is off by more is relearned instead).
const LEVEL_RANGE: (f64, f64) = (0.2, 5.0);
/// Leads (buckets, up to 3 hours) for which the correction learns its own regression.
pub const DIRECT_LEADS: usize = 36;
/// Raw deviations kept (newest first).
const LAGS: usize = 7;
/// Which of them feed the correction (0 = the last bucket; 6 = half an hour before it).
const LAG_TAPS: [usize; 5] = [0, 1, 2, 3, 6];
/// Correction inputs: the taps, the smoothed deviation, its trend and a constant.
const FEATURES: usize = LAG_TAPS.len() + 3;
/// Half-life, in buckets, of an observation's weight in the correction (two weeks).
const CORRECTION_HALF_LIFE: f64 = 4032.0;
/// Observations a lead's regression needs before it replaces the smoothed deviation.
const CORRECTION_MIN_WEIGHT: f64 = 288.0;
/// A lead's coefficients are solved again after this many of its observations (hourly).
const CORRECTION_SOLVE_EVERY: u32 = 12;
/// Ridge on each input, relative to its own sum of squares.
const CORRECTION_RIDGE: f64 = 1e-3;
/// The pooled daily shape is brought up to date with the profile once per this many ms.
const POOL_REFRESH_MS: i64 = 6 * 3600 * 1000;
/// Version byte of [`Forecaster::to_bytes`] (version 1 is a bare [`WeeklyProfile`]).
pub const FORECASTER_FORMAT_VERSION: u8 = 2;

/// Tuning of the level, deviation and trend; [`Forecaster::fit`] picks them from history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SmoothingParams {
    /// Half-life of the level's memory, in buckets.
    pub level_half_life: f64,
    /// Weight (0..=1) of the pooled daily shape against the bucket's own weekly estimate: the
    /// pooled shape is `day total × time-of-day share` (every day's same time of day counts),
    /// far less noisy where the days share a shape.
    pub pooling: f64,
    /// Weight (0..=1] of a bucket's newest deviation against the deviation expected for it.
    pub deviation_smoothing: f64,
    /// How much of the last bucket's deviation remains one bucket later (0..=1).
    pub persistence: f64,
    /// Weight of the newest change in the deviation's trend (0 = no trend ..= 1).
    pub trend_smoothing: f64,
    /// How much of the trend remains one bucket later (0..1).
    pub trend_damping: f64,
    /// The offset `c` as a fraction of the mean load.
    pub offset_fraction: f64,
}

impl Default for SmoothingParams {
    /// What the engine runs with until a fit: a 12-hour level, a deviation that halves in
    /// about 6 hours, no trend (a step in the load is not a slope to extrapolate).
    fn default() -> Self {
        SmoothingParams {
            level_half_life: 144.0,
            pooling: 0.0,
            deviation_smoothing: 1.0,
            persistence: 0.99,
            trend_smoothing: 0.0,
            trend_damping: 0.9,
            offset_fraction: 0.05,
        }
    }
}

impl SmoothingParams {
    fn is_valid(&self) -> bool {
        self.level_half_life.is_finite()
            && self.level_half_life > 0.0
            && (0.0..=1.0).contains(&self.pooling)
            && self.deviation_smoothing > 0.0
            && self.deviation_smoothing <= 1.0
            && (0.0..=1.0).contains(&self.persistence)
            && (0.0..=1.0).contains(&self.trend_smoothing)
            && (0.0..1.0).contains(&self.trend_damping)
            && self.offset_fraction.is_finite()
            && self.offset_fraction > 0.0
    }

    /// `Σ_{i=1..h} trend_damping^i`.
    fn damped_sum(&self, h: f64) -> f64 {
        let phi = self.trend_damping;
        phi * (1.0 - phi.powf(h)) / (1.0 - phi)
    }
}

/// The level, deviation and trend after the last completed bucket (de-seasonalized units).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct Level {
    /// Decayed sum of the loads of buckets the profile knew.
    load_sum: f64,
    /// Decayed sum of what the profile expected for them.
    expected_sum: f64,
    /// Decayed mean load (all buckets); scales the offset. 0 = no bucket yet.
    mean: f64,
    /// Relative deviation of the last bucket from level × profile.
    deviation: f64,
    /// Damped trend of the deviation, per bucket.
    trend: f64,
    /// Raw relative deviations of the last buckets, newest first (the correction's inputs).
    lags: [f64; LAGS],
    /// Occurrence number of the last completed bucket; meaningful once `completed`.
    last: i64,
    /// Whether any bucket has completed.
    completed: bool,
}

impl Level {
    fn level(&self) -> f64 {
        if self.expected_sum > 0.0 {
            (self.load_sum / self.expected_sum).clamp(LEVEL_RANGE.0, LEVEL_RANGE.1)
        } else {
            1.0
        }
    }

    fn offset(&self, params: &SmoothingParams) -> f64 {
        (params.offset_fraction * self.mean).max(1e-9)
    }

    /// The state after the bucket `occurrence` completed with mean load `x`, the profile having
    /// expected `expected` for it (from past weeks; `None` where it knew nothing).
    fn step(&self, params: &SmoothingParams, occurrence: i64, x: f64, expected: Option<f64>) -> Level {
        let mut next = *self;
        // Buckets missed since the last one (no samples) age the state as if time passed.
        let gap = if self.completed { (occurrence - self.last).max(1) } else { 1 };
        // i64 → f64: gaps are far below 2^53.
        let gap = gap as f64;
        let keep = 0.5_f64.powf(gap / params.level_half_life);
        let mean_keep = 0.5_f64.powf(gap / MEAN_HALF_LIFE);
        next.mean = if self.completed { x + (self.mean - x) * mean_keep } else { x };
        next.last = occurrence;
        next.completed = true;
        match expected {
            Some(s) if s.is_finite() && s >= 0.0 => {
                next.load_sum = self.load_sum * keep + x;
                next.expected_sum = self.expected_sum * keep + s;
                let c = next.offset(params);
                let fitted = next.level() * s;
                let observed = ((x - fitted) / (fitted + c)).clamp(-1.0, 100.0);
                // Error correction (as in Holt's method): the deviation this state expected
                // now, moved toward the observed one; the trend takes a share of the surprise.
                let expected = self.deviation * params.persistence.powf(gap) + self.trend * params.damped_sum(gap);
                let surprise = params.deviation_smoothing * (observed - expected);
                next.deviation = (expected + surprise).clamp(-1.0, 100.0);
                next.trend = self.trend * params.trend_damping.powf(gap) + params.trend_smoothing * surprise / gap;
                next.push_lag(observed, gap);
            }
            _ => {
                next.load_sum = self.load_sum * keep;
                next.expected_sum = self.expected_sum * keep;
                next.deviation = 0.0;
                next.trend = 0.0;
                next.push_lag(0.0, gap);
            }
        }
        next
    }

    /// Shifts the lags by `gap` buckets (missed ones count as no deviation) and puts `newest` first.
    fn push_lag(&mut self, newest: f64, gap: f64) {
        // f64 → usize: gap ≥ 1, clamped to the lag count.
        let shift = (gap.min(LAGS as f64) as usize).max(1);
        self.lags.rotate_right(shift);
        self.lags.iter_mut().take(shift).for_each(|l| *l = 0.0);
        self.lags[0] = newest;
    }

    /// The correction's inputs: recent raw deviations at [`LAG_TAPS`], then a constant.
    fn features(&self) -> [f64; FEATURES] {
        let mut f = [1.0; FEATURES];
        for (x, &tap) in f.iter_mut().zip(&LAG_TAPS) {
            *x = self.lags.get(tap).copied().unwrap_or(0.0);
        }
        f[LAG_TAPS.len()] = self.deviation;
        f[LAG_TAPS.len() + 1] = self.trend;
        f
    }

    /// The forecast (de-seasonalized) `h ≥ 0` buckets after the last completed one, for a bucket
    /// the profile expects `s` for.
    fn predict(&self, params: &SmoothingParams, h: f64, s: f64) -> f64 {
        self.apply(params, s, self.smoothed_deviation(params, h))
    }

    /// The smoothed deviation (and trend) `h` buckets ahead.
    fn smoothed_deviation(&self, params: &SmoothingParams, h: f64) -> f64 {
        self.deviation * params.persistence.powf(h) + self.trend * params.damped_sum(h)
    }

    /// `(L·s + c)·(1 + deviation) - c`, never below 0.
    fn apply(&self, params: &SmoothingParams, s: f64, deviation: f64) -> f64 {
        self.apply_at(params, s, deviation, self.level())
    }

    /// [`Level::apply`] with the level `level`.
    fn apply_at(&self, params: &SmoothingParams, s: f64, deviation: f64, level: f64) -> f64 {
        let c = self.offset(params);
        ((level * s + c) * (1.0 + deviation.clamp(-1.0, 100.0)) - c).max(0.0)
    }
}

/// Entries of the upper triangle of a `FEATURES × FEATURES` matrix.
const TRIANGLE: usize = FEATURES * (FEATURES + 1) / 2;

/// A bucket as an origin of the correction: its inputs, and the level and offset then.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Origin {
    occurrence: i64,
    features: [f64; FEATURES],
    level: f64,
    offset: f64,
}

/// The short-term correction: for every lead up to [`DIRECT_LEADS`], a least-squares
/// regression (exponentially forgetting, ridge-damped) of the relative deviation that lead
/// later on the recent raw deviations, learned online from the forecaster's own history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Correction {
    /// Per lead: decayed `Σ f fᵀ` (upper triangle, row by row), leads one after another.
    xtx: Vec<f64>,
    /// Per lead: decayed `Σ f v`.
    xty: Vec<[f64; FEATURES]>,
    /// Per lead: decayed number of observations.
    weight: Vec<f64>,
    /// Observations since the coefficients were last solved (all leads alike).
    #[serde(skip)]
    unsolved: u32,
    /// Per lead: the solved coefficients (recomputed, not stored).
    #[serde(skip)]
    coef: Vec<Option<[f64; FEATURES]>>,
    /// The last [`DIRECT_LEADS`] origins, a ring by occurrence (not stored).
    #[serde(skip)]
    origins: Vec<Option<Origin>>,
}

impl Correction {
    fn new() -> Self {
        Correction {
            xtx: vec![0.0; TRIANGLE * DIRECT_LEADS],
            xty: vec![[0.0; FEATURES]; DIRECT_LEADS],
            weight: vec![0.0; DIRECT_LEADS],
            unsolved: 0,
            coef: vec![None; DIRECT_LEADS],
            origins: vec![None; DIRECT_LEADS],
        }
    }

    /// Validates decoded sums and solves them.
    fn checked(mut self) -> Result<Self, ForecastError> {
        let finite = self.xtx.iter().all(|v| v.is_finite())
            && self.xty.iter().all(|m| m.iter().all(|v| v.is_finite()))
            && self.weight.iter().all(|w| w.is_finite() && *w >= 0.0);
        if !finite
            || self.xtx.len() != TRIANGLE * DIRECT_LEADS
            || self.xty.len() != DIRECT_LEADS
            || self.weight.len() != DIRECT_LEADS
        {
            return Err(ForecastError::Corrupt("the short-term correction is not finite or of the wrong size"));
        }
        self.coef = (0..DIRECT_LEADS).map(|h| self.solve(h)).collect();
        self.origins = vec![None; DIRECT_LEADS];
        Ok(self)
    }

    /// Learns from the completed bucket `occurrence` (mean `x`, expected `s`) as the target of
    /// the origins before it, then remembers it as an origin.
    #[allow(clippy::needless_range_loop, reason = "a fixed-size triangle walked by row and column")]
    fn advance(&mut self, occurrence: i64, x: f64, s: Option<f64>, origin: Origin) {
        let keep = 0.5_f64.powf(1.0 / CORRECTION_HALF_LIFE);
        let ring = DIRECT_LEADS as i64;
        if let Some(s) = s.filter(|s| s.is_finite() && *s >= 0.0) {
            for h in 1..=DIRECT_LEADS {
                let from = occurrence - h as i64;
                let Some(slot) = usize::try_from(from.rem_euclid(ring)).ok() else { continue };
                let Some(Some(o)) = self.origins.get(slot).copied() else { continue };
                if o.occurrence != from {
                    continue;
                }
                let fitted = o.level * s;
                let v = ((x - fitted) / (fitted + o.offset)).clamp(-1.0, 100.0);
                let (Some(xtx), Some(xty), Some(w)) = (
                    self.xtx.get_mut((h - 1) * TRIANGLE..h * TRIANGLE),
                    self.xty.get_mut(h - 1),
                    self.weight.get_mut(h - 1),
                ) else {
                    continue;
                };
                let mut t = 0;
                for i in 0..FEATURES {
                    for j in i..FEATURES {
                        xtx[t] = xtx[t] * keep + o.features[i] * o.features[j];
                        t += 1;
                    }
                    xty[i] = xty[i] * keep + o.features[i] * v;
                }
                *w = *w * keep + 1.0;
            }
            self.unsolved += 1;
            // Solving every lead costs a few µs: hourly is often enough for a regression that
            // forgets over weeks, but a lead that has none yet gets one as soon as it can.
            let due = self.unsolved >= CORRECTION_SOLVE_EVERY;
            for k in 0..DIRECT_LEADS {
                if due || self.coef.get(k).is_some_and(Option::is_none) {
                    let coef = self.solve(k);
                    if let Some(c) = self.coef.get_mut(k) {
                        *c = coef;
                    }
                }
            }
            if due {
                self.unsolved = 0;
            }
        }
        if let Some(slot) = usize::try_from(occurrence.rem_euclid(ring)).ok().and_then(|i| self.origins.get_mut(i)) {
            *slot = Some(origin);
        }
    }

    /// Solves lead index `k`'s ridge-damped normal equations; `None` if too few observations
    /// or singular.
    #[allow(clippy::needless_range_loop, reason = "fixed-size Gaussian elimination reads best by index")]
    fn solve(&self, k: usize) -> Option<[f64; FEATURES]> {
        if *self.weight.get(k)? < CORRECTION_MIN_WEIGHT {
            return None;
        }
        let (xtx, xty) = (self.xtx.get(k * TRIANGLE..(k + 1) * TRIANGLE)?, self.xty.get(k)?);
        let mut a = [[0.0; FEATURES + 1]; FEATURES];
        let mut t = 0;
        for i in 0..FEATURES {
            for j in i..FEATURES {
                a[i][j] = xtx[t];
                a[j][i] = xtx[t];
                t += 1;
            }
            a[i][i] = a[i][i] * (1.0 + CORRECTION_RIDGE) + 1e-12;
            a[i][FEATURES] = xty[i];
        }
        // Gaussian elimination with partial pivoting.
        for col in 0..FEATURES {
            let pivot = (col..FEATURES).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
            a.swap(col, pivot);
            let p = a[col][col];
            if p.abs() < 1e-300 {
                return None;
            }
            for row in col + 1..FEATURES {
                let factor = a[row][col] / p;
                for j in col..=FEATURES {
                    a[row][j] -= factor * a[col][j];
                }
            }
        }
        let mut beta = [0.0; FEATURES];
        for i in (0..FEATURES).rev() {
            let tail: f64 = (i + 1..FEATURES).map(|j| a[i][j] * beta[j]).sum();
            beta[i] = (a[i][FEATURES] - tail) / a[i][i];
        }
        beta.iter().all(|b| b.is_finite()).then_some(beta)
    }

    /// The relative deviation `h` buckets ahead from the inputs `f`: the regression of that
    /// lead, or past [`DIRECT_LEADS`] the last one's fading with that half-life; at `h < 1` the
    /// last raw deviation. `None` where the lead has not learned enough.
    fn deviation(&self, f: &[f64; FEATURES], h: f64) -> Option<f64> {
        if h < 1.0 {
            return Some(f[0]);
        }
        // f64 → usize: h ≥ 1, clamped to the leads.
        let k = (h.round() as usize).clamp(1, DIRECT_LEADS) - 1;
        let beta = self.coef.get(k).copied().flatten()?;
        let d: f64 = beta.iter().zip(f).map(|(b, x)| b * x).sum();
        let beyond = (h - DIRECT_LEADS as f64).max(0.0);
        Some(d * 0.5_f64.powf(beyond / DIRECT_LEADS as f64))
    }
}

/// Online quantile estimates of the relative error at one anchor lead.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Quantiles {
    /// Estimates at [`LEVELS`].
    q: [f64; 5],
    /// Mean magnitude of the relative error (steps the estimates); 0 = none seen yet.
    scale: f64,
}

impl Quantiles {
    fn prior() -> Self {
        Quantiles { q: PRIOR_Z.map(|z| z * PRIOR_SPREAD), scale: 0.0 }
    }

    fn update(&mut self, r: f64) {
        let keep = 0.5_f64.powf(1.0 / SCALE_HALF_LIFE);
        self.scale = if self.scale > 0.0 { r.abs() + (self.scale - r.abs()) * keep } else { r.abs().max(1e-4) };
        let step = QUANTILE_RATE * self.scale.max(1e-4);
        for (q, p) in self.q.iter_mut().zip(LEVELS) {
            *q += step * if r <= *q { p - 1.0 } else { p };
        }
    }

    /// The estimate at level `p` (clamped to [`LEVELS`]' range), monotone in `p`.
    fn at(&self, p: f64) -> f64 {
        let mut sorted = self.q;
        for i in 1..sorted.len() {
            sorted[i] = sorted[i].max(sorted[i - 1]);
        }
        let p = p.clamp(LEVELS[0], LEVELS[LEVELS.len() - 1]);
        let i = LEVELS.iter().rposition(|&l| l <= p).unwrap_or(0).min(LEVELS.len() - 2);
        let w = ((p - LEVELS[i]) / (LEVELS[i + 1] - LEVELS[i])).clamp(0.0, 1.0);
        sorted[i] + w * (sorted[i + 1] - sorted[i])
    }
}

/// The bucket being accumulated: its occurrence, its mean so far and what the profile expected.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct Current {
    occurrence: i64,
    mean: f64,
    count: u32,
    /// The latest sample: what forecasts take as the bucket's value while it is incomplete.
    latest: f64,
    /// The profile's expectation from past weeks (de-seasonalized).
    expected: Option<Expected>,
}

/// Day and time-of-day sums of the profile's estimates, from which the pooled daily shape of a
/// bucket is `day sum × time-of-day sum / total`. A few buckets are refreshed per observation
/// (the whole week every [`POOL_REFRESH_MS`]), so an update stays O(1).
#[derive(Debug, Clone, PartialEq, Default)]
struct Pooled {
    cache: Vec<f64>,
    days: Vec<f64>,
    times: Vec<f64>,
    total: f64,
    next: usize,
    last_ms: Option<i64>,
}

impl Pooled {
    fn new(slots: usize, per_day: usize) -> Self {
        Pooled {
            cache: vec![0.0; slots],
            days: vec![0.0; slots.div_ceil(per_day.max(1))],
            times: vec![0.0; per_day.max(1)],
            total: 0.0,
            next: 0,
            last_ms: None,
        }
    }

    /// Refreshes the buckets due since the last observation (all of them on the first).
    fn on_observe(&mut self, profile: &WeeklyProfile, wall_ms: i64) {
        let slots = self.cache.len();
        let due = match self.last_ms {
            // i64 → usize: clamped to the slot count first.
            Some(last) => {
                let elapsed = i128::from(wall_ms.saturating_sub(last).max(0));
                let due = (elapsed * slots as i128 + i128::from(POOL_REFRESH_MS) - 1) / i128::from(POOL_REFRESH_MS);
                usize::try_from(due.clamp(1, slots as i128)).unwrap_or(slots)
            }
            None => slots,
        };
        self.last_ms = Some(wall_ms);
        self.refresh(profile, due);
    }

    fn refresh(&mut self, profile: &WeeklyProfile, count: usize) {
        let per_day = self.times.len();
        for _ in 0..count.min(self.cache.len()) {
            let i = self.next;
            let value = profile.estimate(i).unwrap_or(0.0);
            if let Some(cached) = self.cache.get_mut(i) {
                let delta = value - *cached;
                *cached = value;
                if let Some(d) = self.days.get_mut(i / per_day) {
                    *d += delta;
                }
                if let Some(t) = self.times.get_mut(i % per_day) {
                    *t += delta;
                }
                self.total += delta;
            }
            self.next += 1;
            if self.next >= self.cache.len() {
                self.next = 0;
                self.resum();
            }
        }
    }

    /// Recomputes the sums from the cache (rounding drift from the deltas goes away).
    fn resum(&mut self) {
        let per_day = self.times.len();
        self.days.iter_mut().for_each(|d| *d = 0.0);
        self.times.iter_mut().for_each(|t| *t = 0.0);
        for (i, v) in self.cache.iter().enumerate() {
            if let Some(d) = self.days.get_mut(i / per_day) {
                *d += v;
            }
            if let Some(t) = self.times.get_mut(i % per_day) {
                *t += v;
            }
        }
        self.total = self.cache.iter().sum();
    }

    /// The pooled shape of `slot`; `None` before anything was learned.
    fn at(&self, slot: usize) -> Option<f64> {
        let per_day = self.times.len();
        let (day, time) = (self.days.get(slot / per_day)?, self.times.get(slot % per_day)?);
        (self.total > 0.0).then(|| (day * time / self.total).max(0.0))
    }
}

/// What the profile expects for a bucket: its own weekly estimate and its pooled daily shape.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct Expected {
    weekly: f64,
    pooled: f64,
}

impl Expected {
    fn blend(&self, pooling: f64) -> f64 {
        if self.pooled >= 0.0 { self.weekly + pooling * (self.pooled - self.weekly) } else { self.weekly }
    }
}

/// A pending point forecast, remembered until its bucket completes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Pending {
    occurrence: i64,
    forecast: f64,
}

/// Weekly profile × current level and trend, with prediction intervals; see the
/// [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Forecaster {
    profile: WeeklyProfile,
    params: SmoothingParams,
    level: Level,
    current: Current,
    quantiles: [Quantiles; ANCHORS.len()],
    /// Per anchor, the point forecasts made that many buckets ahead (a ring by occurrence);
    /// not persisted: after a restart the interval estimates skip one lead's worth of updates.
    pending: Vec<Vec<Pending>>,
    /// Sums for the pooled daily shape; not persisted (rebuilt on the first observation).
    pooled: Pooled,
    /// The short-term correction.
    correction: Correction,
}

/// The encoded form, after the version byte.
#[derive(Serialize, Deserialize)]
struct StoredForecaster {
    profile: Vec<u8>,
    params: SmoothingParams,
    level: Level,
    current: Current,
    quantiles: [Quantiles; ANCHORS.len()],
    correction: Correction,
}

/// A forecast over a window: the highest point forecast and the highest upper quantile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakForecast {
    /// Highest point forecast in the window.
    pub point: f64,
    /// Highest upper-quantile forecast in the window (at the level asked for).
    pub upper: f64,
}

/// One completed bucket as [`Forecaster::fit`] replays it.
struct Record {
    occurrence: i64,
    x: f64,
    expected: Option<Expected>,
    /// The profile's estimate, when this bucket completed, of the bucket `ANCHORS[i]` later.
    ahead: [Option<Expected>; ANCHORS.len()],
}

fn empty_rings() -> Vec<Vec<Pending>> {
    ANCHORS.iter().map(|&a| vec![Pending { occurrence: i64::MIN, forecast: 0.0 }; a as usize]).collect()
}

impl Forecaster {
    /// A forecaster around `profile` with default parameters, a neutral level and prior
    /// intervals.
    pub fn new(profile: WeeklyProfile) -> Self {
        let per_day = (super::MINUTES_PER_DAY / profile.bucket_minutes.max(1)) as usize;
        let pooled = Pooled::new(profile.bucket_count(), per_day);
        Forecaster {
            pooled,
            profile,
            params: SmoothingParams::default(),
            level: Level::default(),
            current: Current { occurrence: i64::MIN, mean: 0.0, count: 0, latest: 0.0, expected: None },
            quantiles: [Quantiles::prior(); ANCHORS.len()],
            pending: empty_rings(),
            correction: Correction::new(),
        }
    }

    fn with_pooled(mut self) -> Self {
        let per_day = (super::MINUTES_PER_DAY / self.profile.bucket_minutes.max(1)) as usize;
        self.pooled = Pooled::new(self.profile.bucket_count(), per_day);
        self.pooled.refresh(&self.profile, self.profile.bucket_count());
        self
    }

    /// The same forecaster with other smoothing parameters.
    ///
    /// # Errors
    ///
    /// [`ForecastError::Corrupt`] when a parameter is out of its range.
    pub fn with_params(mut self, params: SmoothingParams) -> Result<Self, ForecastError> {
        if !params.is_valid() {
            return Err(ForecastError::Corrupt("smoothing parameters out of range"));
        }
        self.params = params;
        Ok(self)
    }

    /// The learned weekly profile.
    pub fn profile(&self) -> &WeeklyProfile {
        &self.profile
    }

    /// The smoothing parameters in use.
    pub fn params(&self) -> SmoothingParams {
        self.params
    }

    /// The current level: load over what the profile expected (1 = as past weeks).
    pub fn level(&self) -> f64 {
        self.snapshot().level()
    }

    /// Fits a forecaster from a history of `(wall_ms, load)` samples (e.g. 14 days at 5-minute
    /// resolution): learns the profile and level as [`Forecaster::observe`] would, picks the
    /// smoothing parameters that minimize the in-sample error 5 minutes to 2 hours ahead (a
    /// small grid), and starts the intervals from the in-sample error quantiles.
    ///
    /// # Errors
    ///
    /// [`ForecastError::InvalidBucket`] as for [`WeeklyProfile::new`].
    pub fn fit(
        history: &[(i64, f64)],
        bucket: Duration,
        tz: &TimeZone,
        seasons: &SeasonalMultipliers,
    ) -> Result<Self, ForecastError> {
        let mut f = Forecaster::new(WeeklyProfile::new(bucket)?);
        let mut records = Vec::with_capacity(history.len());
        let mut sorted;
        let history = if history.is_sorted_by_key(|s| s.0) {
            history
        } else {
            sorted = history.to_vec();
            sorted.sort_by_key(|s| s.0);
            &sorted
        };
        for &(wall_ms, load) in history {
            f.observe_inner(wall_ms, tz, load, seasons, Some(&mut records));
        }
        if let Some(params) = best_params(&records) {
            f.params = params;
            // Replay the level and the correction with the chosen parameters, and start the
            // intervals from the in-sample errors at every anchor.
            f.level = Level::default();
            f.correction = Correction::new();
            f.pending = empty_rings();
            let mut errors: Vec<Vec<f64>> = vec![Vec::new(); ANCHORS.len()];
            for r in &records {
                f.advance(r, Some(&mut errors), true);
            }
            for (q, mut e) in f.quantiles.iter_mut().zip(errors) {
                if e.len() < 20 {
                    continue;
                }
                e.sort_by(f64::total_cmp);
                // usize → f64 and back: lengths far below 2^53.
                let pick = |p: f64| e[((p * (e.len() - 1) as f64).round() as usize).min(e.len() - 1)];
                q.q = LEVELS.map(pick);
                q.scale = (e.iter().map(|r| r.abs()).sum::<f64>() / e.len() as f64).max(1e-4);
            }
        }
        Ok(f)
    }

    /// Learns one observation of `load` at Unix-ms `wall_ms` (see [`WeeklyProfile::observe`]):
    /// into the profile (clipped to [`PROFILE_CLIP`] times its level-adjusted expectation), and
    /// into the bucket whose completion updates the level, deviation, trend and intervals. O(1).
    pub fn observe(&mut self, wall_ms: i64, tz: &TimeZone, load: f64, seasons: &SeasonalMultipliers) {
        self.observe_inner(wall_ms, tz, load, seasons, None);
    }

    fn observe_inner(
        &mut self,
        wall_ms: i64,
        tz: &TimeZone,
        load: f64,
        seasons: &SeasonalMultipliers,
        records: Option<&mut Vec<Record>>,
    ) {
        if !load.is_finite() {
            return;
        }
        let Some(locus) = self.profile.locate(wall_ms, tz, seasons) else { return };
        let x = load.max(0.0) / locus.factor;
        if !x.is_finite() {
            return;
        }
        if self.current.count > 0 && locus.occurrence == self.current.occurrence {
            self.current.count = self.current.count.saturating_add(1);
            self.current.mean += (x - self.current.mean) / f64::from(self.current.count);
            self.current.latest = x;
        } else if self.current.count == 0 || locus.occurrence > self.current.occurrence {
            if self.current.count > 0 {
                self.complete(records);
            }
            let expected = self.expected(locus.slot, locus.occurrence);
            self.current = Current { occurrence: locus.occurrence, mean: x, count: 1, latest: x, expected };
        }
        // Late samples (an earlier bucket) still reach the profile, which decides on its own.
        let clip = self.level.completed.then(|| {
            let level = self.snapshot().level();
            (level, PROFILE_CLIP, self.level.offset(&self.params))
        });
        self.profile.learn(&locus, x, clip);
        self.pooled.on_observe(&self.profile, wall_ms);
    }

    /// What the profile expects for the bucket `slot` of occurrence `occurrence`, from past
    /// weeks; `None` where its own estimate is unknown.
    fn expected(&self, slot: usize, occurrence: i64) -> Option<Expected> {
        let weekly = self.profile.plain_before(slot, occurrence)?;
        Some(Expected { weekly, pooled: self.pooled.at(slot).unwrap_or(-1.0) })
    }

    /// The bucket being accumulated is complete: step the level, score the forecasts that were
    /// made for it, and remember new ones.
    fn complete(&mut self, records: Option<&mut Vec<Record>>) {
        let cur = self.current;
        let mut ahead = [None; ANCHORS.len()];
        for (k, &a) in ANCHORS.iter().enumerate() {
            let target = cur.occurrence + i64::from(a);
            ahead[k] = self.profile.slot_of(target).and_then(|(s, _)| self.expected(s, target));
        }
        let record = Record { occurrence: cur.occurrence, x: cur.mean, expected: cur.expected, ahead };
        let replaying = records.is_some();
        self.advance(&record, None, !replaying);
        if let Some(records) = records {
            records.push(record);
        }
    }

    /// Steps the level and the correction with a completed bucket, scores the forecasts made
    /// for it (into `errors` too, per anchor, when given), and remembers new ones.
    fn advance(&mut self, r: &Record, mut errors: Option<&mut Vec<Vec<f64>>>, correct: bool) {
        let pooling = self.params.pooling;
        let expected = r.expected.map(|e| e.blend(pooling));
        self.level = self.level.step(&self.params, r.occurrence, r.x, expected);
        let c = self.level.offset(&self.params);
        let origin =
            Origin { occurrence: r.occurrence, features: self.level.features(), level: self.level.level(), offset: c };
        if correct {
            self.correction.advance(r.occurrence, r.x, expected, origin);
        }
        for (k, &a) in ANCHORS.iter().enumerate() {
            let target = r.occurrence + i64::from(a);
            let forecast = r.ahead[k].map(|e| self.predict(&self.level, f64::from(a), e.blend(pooling)));
            let Some(slot) = usize::try_from(r.occurrence.rem_euclid(i64::from(a))).ok() else { continue };
            let Some(p) = self.pending.get_mut(k).and_then(|ring| ring.get_mut(slot)) else { continue };
            if p.occurrence == r.occurrence {
                let err = (r.x - p.forecast) / (p.forecast + c);
                if let Some(q) = self.quantiles.get_mut(k) {
                    q.update(err);
                }
                if let Some(e) = errors.as_deref_mut().and_then(|e| e.get_mut(k)) {
                    e.push(err);
                }
            }
            *p = match forecast {
                Some(forecast) => Pending { occurrence: target, forecast },
                None => Pending { occurrence: i64::MIN, forecast: 0.0 },
            };
        }
    }

    /// The forecast (de-seasonalized) `h ≥ 0` buckets after the last bucket of `level`, for a
    /// bucket the profile expects `s` for: the correction's where it has learned that lead,
    /// else the smoothed deviation's.
    fn predict(&self, level: &Level, h: f64, s: f64) -> f64 {
        self.predict_capped(level, h, s, true)
    }

    /// [`Forecaster::predict`], the level and the short-term deviation counted only downward
    /// unless `upward`.
    fn predict_capped(&self, level: &Level, h: f64, s: f64, upward: bool) -> f64 {
        let deviation = self
            .correction
            .deviation(&level.features(), h)
            .unwrap_or_else(|| level.smoothed_deviation(&self.params, h));
        if upward {
            level.apply(&self.params, s, deviation)
        } else {
            level.apply_at(&self.params, s, deviation.min(0.0), level.level().min(1.0))
        }
    }

    /// The level state with the bucket being accumulated counted as if complete: at its mean so
    /// far or at its latest sample, whichever deviates less upward. The mean is what the
    /// profile's estimate of the bucket compares with (the latest sample of a bucket that ramps
    /// up would overstate the deviation); the latest sample is the load now (after a fall within
    /// the bucket, the forecast falls at once).
    fn snapshot(&self) -> Level {
        if self.current.count == 0 {
            return self.level;
        }
        let expected = self.current.expected.map(|e| e.blend(self.params.pooling));
        let (occurrence, cur) = (self.current.occurrence, &self.current);
        let by_mean = self.level.step(&self.params, occurrence, cur.mean, expected);
        if cur.latest >= cur.mean {
            return by_mean;
        }
        let by_latest = self.level.step(&self.params, occurrence, cur.latest, expected);
        if by_latest.deviation < by_mean.deviation { by_latest } else { by_mean }
    }

    /// Point forecast and relative-error quantiles of one instant from a snapshot.
    fn forecast_with(
        &self,
        snap: &Level,
        wall_ms: i64,
        tz: &TimeZone,
        seasons: &SeasonalMultipliers,
        upward: bool,
    ) -> Option<(f64, f64, f64)> {
        let locus: Locus = self.profile.locate(wall_ms, tz, seasons)?;
        let s = self.expected(locus.slot, locus.occurrence)?.blend(self.params.pooling);
        // i64 → f64: leads are far below 2^53.
        let h = if snap.completed { (locus.occurrence - snap.last).max(0) as f64 } else { 0.0 };
        let point = self.predict_capped(snap, h, s, upward);
        Some((point * locus.factor, h, snap.offset(&self.params) * locus.factor))
    }

    /// Expected load at Unix-ms `wall_ms`: the profile's estimate × the current level, deviation
    /// and trend (faded with the lead) × the seasonal factor. `None` where the profile has no
    /// estimate.
    pub fn forecast_at(&self, wall_ms: i64, tz: &TimeZone, seasons: &SeasonalMultipliers) -> Option<f64> {
        self.forecast_with(&self.snapshot(), wall_ms, tz, seasons, true).map(|f| f.0)
    }

    /// The `p` quantile (e.g. 0.9; clamped to 0.5 ..= 0.99) of the load at Unix-ms `wall_ms`,
    /// from the forecaster's recent errors at that lead. `None` where the profile has no estimate.
    pub fn quantile_at(&self, wall_ms: i64, p: f64, tz: &TimeZone, seasons: &SeasonalMultipliers) -> Option<f64> {
        let (point, h, c) = self.forecast_with(&self.snapshot(), wall_ms, tz, seasons, true)?;
        Some(self.upper(point, h, c, p))
    }

    fn upper(&self, point: f64, h: f64, c: f64, p: f64) -> f64 {
        let q = self.relative_quantile(h, p);
        ((point + c) * (1.0 + q) - c).max(0.0)
    }

    /// The `p` quantile of the relative error `h` buckets ahead, interpolated in `ln h` between
    /// the anchors.
    fn relative_quantile(&self, h: f64, p: f64) -> f64 {
        let h = h.max(1.0);
        let at = |k: usize| self.quantiles.get(k).map_or(0.0, |q| q.at(p));
        let last = ANCHORS.len() - 1;
        let Some(k) = ANCHORS.iter().position(|&a| f64::from(a) >= h) else { return at(last) };
        if k == 0 {
            return at(0);
        }
        let (lo, hi) = (f64::from(ANCHORS[k - 1]), f64::from(ANCHORS[k]));
        let w = (h.ln() - lo.ln()) / (hi.ln() - lo.ln());
        at(k - 1) + w * (at(k) - at(k - 1))
    }

    /// The highest point and `p`-quantile forecasts over `[wall_ms, wall_ms + horizon]`
    /// (horizon clamped to [`MAX_HORIZON`]), for pre-scaling. `None` when the profile knows none
    /// of its buckets.
    ///
    /// The level and the short-term deviation count only downward: a load running below its
    /// profile lowers what is bought ahead, one running above is the reactive path's to follow
    /// (as it follows it now, rather than buying half an hour ahead of a growth the profile has
    /// not seen; and a relative deviation measured at the edge of a step, the load ramping a
    /// minute before the profile's bucket says, would multiply the coming peak).
    /// [`Forecaster::forecast_at`] and [`Forecaster::quantile_at`] count both ways.
    pub fn peak_over(
        &self,
        wall_ms: i64,
        horizon: Duration,
        p: f64,
        tz: &TimeZone,
        seasons: &SeasonalMultipliers,
    ) -> Option<PeakForecast> {
        let horizon_ms = i64::try_from(horizon.min(MAX_HORIZON).as_millis()).unwrap_or(i64::MAX);
        let step_ms = i64::from(self.profile.bucket_minutes) * MS_PER_MINUTE;
        let end = wall_ms.saturating_add(horizon_ms);
        let snap = self.snapshot();
        let steps = horizon_ms / step_ms + 1;
        (0..steps)
            .map(|k| wall_ms.saturating_add(k * step_ms))
            .chain(std::iter::once(end))
            .filter_map(|t| self.forecast_with(&snap, t, tz, seasons, false))
            .map(|(point, h, c)| PeakForecast { point, upper: self.upper(point, h, c, p) })
            .reduce(|a, b| PeakForecast { point: a.point.max(b.point), upper: a.upper.max(b.upper) })
    }

    /// Encodes the forecaster: [`FORECASTER_FORMAT_VERSION`], then postcard of the profile's
    /// own encoding, the parameters, the level state and the interval estimates.
    ///
    /// # Errors
    ///
    /// [`ForecastError::Encode`] if postcard fails (it does not for this type in practice).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ForecastError> {
        let stored = StoredForecaster {
            profile: self.profile.to_bytes()?,
            params: self.params,
            level: self.level,
            current: self.current,
            quantiles: self.quantiles,
            correction: self.correction.clone(),
        };
        postcard::to_extend(&stored, vec![FORECASTER_FORMAT_VERSION]).map_err(ForecastError::Encode)
    }

    /// Decodes what [`Forecaster::to_bytes`] wrote, or a bare [`WeeklyProfile`] (format version
    /// 1, from before the level existed: the level starts afresh). Never panics on bad input.
    ///
    /// # Errors
    ///
    /// As [`WeeklyProfile::from_bytes`]; [`ForecastError::Corrupt`] also for parameters or a
    /// level state out of range.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ForecastError> {
        let (&version, rest) = bytes.split_first().ok_or(ForecastError::Empty)?;
        if version == super::FORMAT_VERSION {
            return WeeklyProfile::from_bytes(bytes).map(Forecaster::new);
        }
        if version != FORECASTER_FORMAT_VERSION {
            return Err(ForecastError::UnsupportedVersion { found: version, supported: FORECASTER_FORMAT_VERSION });
        }
        let (stored, trailing): (StoredForecaster, _) =
            postcard::take_from_bytes(rest).map_err(ForecastError::Decode)?;
        if !trailing.is_empty() {
            return Err(ForecastError::Decode(postcard::Error::DeserializeBadEncoding));
        }
        let profile = WeeklyProfile::from_bytes(&stored.profile)?;
        if !stored.params.is_valid() {
            return Err(ForecastError::Corrupt("smoothing parameters out of range"));
        }
        let l = &stored.level;
        let sane = |v: f64| v.is_finite() && v >= 0.0;
        if !(sane(l.load_sum)
            && sane(l.expected_sum)
            && sane(l.mean)
            && l.deviation.is_finite()
            && l.trend.is_finite()
            && sane(stored.current.mean)
            && sane(stored.current.latest))
            || !stored.current.expected.is_none_or(|e| e.weekly.is_finite() && e.pooled.is_finite())
        {
            return Err(ForecastError::Corrupt("a level estimate is negative or not finite"));
        }
        // A relative error quantile beyond ±100 (a forecast off by a factor of 100) is corrupt.
        let bounded = |v: f64| v.is_finite() && v.abs() <= 100.0;
        if !stored.quantiles.iter().all(|q| q.q.iter().all(|v| bounded(*v)) && bounded(q.scale) && q.scale >= 0.0) {
            return Err(ForecastError::Corrupt("an interval estimate is out of range"));
        }
        Ok(Forecaster {
            profile,
            params: stored.params,
            level: stored.level,
            current: stored.current,
            quantiles: stored.quantiles,
            pending: empty_rings(),
            pooled: Pooled::new(0, 1),
            correction: stored.correction.checked()?,
        }
        .with_pooled())
    }
}

/// Mean in-sample absolute error of `params` at the given anchors (index into [`ANCHORS`]),
/// each lead weighted alike; `None` when no forecast could be scored.
fn in_sample_error(records: &[Record], params: &SmoothingParams, anchors: &[usize]) -> Option<f64> {
    let mut sums = vec![(0.0, 0_usize); anchors.len()];
    let mut level = Level::default();
    for (i, r) in records.iter().enumerate() {
        level = level.step(params, r.occurrence, r.x, r.expected.map(|e| e.blend(params.pooling)));
        for (sum, &k) in sums.iter_mut().zip(anchors) {
            let (Some(&lead), Some(Some(e))) = (ANCHORS.get(k), r.ahead.get(k)) else { continue };
            let Some(target) = records.get(i + lead as usize) else { continue };
            if target.occurrence == r.occurrence + i64::from(lead) {
                sum.0 += (target.x - level.predict(params, f64::from(lead), e.blend(params.pooling))).abs();
                sum.1 += 1;
            }
        }
    }
    let scored: Vec<f64> = sums.iter().filter(|s| s.1 > 0).map(|s| s.0 / s.1 as f64).collect();
    let err = scored.iter().sum::<f64>() / scored.len() as f64;
    (!scored.is_empty() && err.is_finite()).then_some(err)
}

/// The parameters with the least in-sample error, in two small grids: first the level's
/// half-life, the pooling and the offset on long leads (6 to 48 hours, where short-term
/// deviations have faded), then the smoothed deviation's persistence, smoothing and trend on
/// leads up to 2 hours (the correction's inputs; it learns its own coefficients after). `None`
/// when the records score no forecast (less than a week of history).
fn best_params(records: &[Record]) -> Option<SmoothingParams> {
    let long: Vec<usize> = (0..ANCHORS.len()).filter(|&k| ANCHORS[k] >= 72).collect();
    let short: Vec<usize> = (0..ANCHORS.len()).filter(|&k| ANCHORS[k] <= 24 && ANCHORS[k] != 3).collect();
    let pick = |candidates: &mut dyn Iterator<Item = SmoothingParams>, anchors: &[usize]| {
        candidates
            .filter_map(|p| in_sample_error(records, &p, anchors).map(|e| (e, p)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p)
    };
    let faded = SmoothingParams { persistence: 0.9, trend_smoothing: 0.0, ..SmoothingParams::default() };
    let mut first = [24.0, 144.0, 576.0].into_iter().flat_map(|level_half_life| {
        [0.0, 0.5, 1.0].into_iter().flat_map(move |pooling| {
            [0.02, 0.1].into_iter().map(move |offset_fraction| SmoothingParams {
                level_half_life,
                pooling,
                offset_fraction,
                ..faded
            })
        })
    });
    let base = pick(&mut first, &long)?;
    let mut second = [0.97, 0.99, 0.997, 1.0].into_iter().flat_map(|persistence| {
        [1.0, 0.5].into_iter().flat_map(move |deviation_smoothing| {
            [(0.0, 0.5), (0.3, 0.9), (1.0, 0.7), (1.0, 0.85), (0.6, 0.85)].into_iter().map(
                move |(trend_smoothing, trend_damping)| SmoothingParams {
                    persistence,
                    deviation_smoothing,
                    trend_smoothing,
                    trend_damping,
                    ..base
                },
            )
        })
    });
    pick(&mut second, &short)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::DEFAULT_BUCKET;
    use super::*;

    const MIN_MS: i64 = 60_000;
    const DAY_MS: i64 = 86_400_000;
    /// 2025-06-02T00:00:00Z, a Monday.
    const START: i64 = 1_748_822_400_000;

    struct XorShift(u64);
    impl XorShift {
        /// Roughly standard normal (sum of 12 uniforms).
        fn normal(&mut self) -> f64 {
            (0..12)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    (self.0 >> 11) as f64 / (1u64 << 53) as f64
                })
                .sum::<f64>()
                - 6.0
        }
    }

    /// A daily shape peaking at 20:00, 100 .. 300 rps.
    fn shape(t: i64) -> f64 {
        let day = (t.rem_euclid(DAY_MS)) as f64 / DAY_MS as f64;
        200.0 - 100.0 * (2.0 * std::f64::consts::PI * (day - 1.0 / 3.0)).cos()
    }

    /// `minutes` one-minute samples from `from`: the shape × a slow level × (1 + AR(1) noise of
    /// standard deviation `noise`).
    fn trace(from: i64, minutes: i64, noise: f64, seed: u64) -> Vec<(i64, f64)> {
        let mut rng = XorShift(seed);
        let mut ar = 0.0;
        (0..minutes)
            .map(|k| {
                let t = from + k * MIN_MS;
                ar = 0.95 * ar + (1.0 - 0.95_f64 * 0.95).sqrt() * noise * rng.normal();
                (t, shape(t) * (1.0 + ar))
            })
            .collect()
    }

    fn feed(f: &mut Forecaster, samples: &[(i64, f64)]) {
        let (utc, none) = (TimeZone::UTC, SeasonalMultipliers::none());
        for &(t, load) in samples {
            f.observe(t, &utc, load, &none);
        }
    }

    #[test]
    fn a_viral_hour_moves_the_same_hour_next_week_by_under_a_tenth_of_its_excess() {
        let (utc, none) = (TimeZone::UTC, SeasonalMultipliers::none());
        let history = trace(START, 14 * 1440, 0.03, 7);
        let mut plain = Forecaster::new(WeeklyProfile::new(DEFAULT_BUCKET).unwrap());
        feed(&mut plain, &history);
        let mut viral = plain.clone();
        // Day 15, 12:00-13:00: ten times the usual load (10 Hz for that hour, as the engine
        // feeds it), then the usual again for a week.
        let spike_at = START + 14 * DAY_MS + 12 * 60 * MIN_MS;
        let day = trace(START + 14 * DAY_MS, 7 * 1440, 0.03, 8);
        let mut excess = 0.0_f64;
        for &(t, load) in &day {
            plain.observe(t, &utc, load, &none);
            if (spike_at..spike_at + 60 * MIN_MS).contains(&t) {
                for tenth in 0..600 {
                    let t = t + tenth * 100;
                    viral.observe(t, &utc, 10.0 * shape(t), &none);
                    excess = excess.max(9.0 * shape(t));
                }
            } else {
                viral.observe(t, &utc, load, &none);
            }
        }
        // A week later, half an hour before the same hour: what each expects for it.
        let next = spike_at + 7 * DAY_MS;
        let (mut worst_point, mut worst_upper) = (0.0_f64, 0.0_f64);
        for k in 0..12 {
            let t = next + k * 5 * MIN_MS;
            let point = |f: &Forecaster| f.forecast_at(t, &utc, &none).unwrap();
            let upper = |f: &Forecaster| f.quantile_at(t, 0.9, &utc, &none).unwrap();
            worst_point = worst_point.max(point(&viral) - point(&plain));
            worst_upper = worst_upper.max(upper(&viral) - upper(&plain));
        }
        println!("excess {excess:.0} rps; a week later: point +{worst_point:.1}, p90 +{worst_upper:.1}");
        assert!(worst_point < 0.1 * excess, "point moved {worst_point:.1} of an excess of {excess:.0}");
        assert!(worst_upper < 0.1 * excess, "p90 moved {worst_upper:.1} of an excess of {excess:.0}");
        // Without the clip the same hour would have carried about a third of it.
        assert!(viral.profile().observed_buckets() == plain.profile().observed_buckets());
    }

    #[test]
    fn the_level_follows_a_day_that_runs_above_past_weeks() {
        let (utc, none) = (TimeZone::UTC, SeasonalMultipliers::none());
        let mut f = Forecaster::new(WeeklyProfile::new(DEFAULT_BUCKET).unwrap());
        feed(&mut f, &trace(START, 14 * 1440, 0.0, 1));
        // Day 15 runs 20% above: by its evening the forecast for the next hours follows.
        let today: Vec<(i64, f64)> =
            trace(START + 14 * DAY_MS, 18 * 60, 0.0, 1).into_iter().map(|(t, v)| (t, 1.2 * v)).collect();
        feed(&mut f, &today);
        let t = START + 14 * DAY_MS + 18 * 60 * MIN_MS + 30 * MIN_MS;
        let ratio = f.forecast_at(t, &utc, &none).unwrap() / shape(t);
        assert!((1.15..1.25).contains(&ratio), "forecast/past weeks {ratio:.3}");
        // The bare weekly profile still says 1.0.
        let profile = f.profile().forecast_at(t, &utc, &none).unwrap() / shape(t);
        assert!((0.97..1.03).contains(&profile), "{profile:.3}");
    }

    #[test]
    fn a_restart_resumes_the_level_without_relearning() {
        let (utc, none) = (TimeZone::UTC, SeasonalMultipliers::none());
        let mut f = Forecaster::new(WeeklyProfile::new(DEFAULT_BUCKET).unwrap());
        feed(&mut f, &trace(START, 14 * 1440, 0.02, 3));
        let today: Vec<(i64, f64)> =
            trace(START + 14 * DAY_MS, 10 * 60, 0.02, 4).into_iter().map(|(t, v)| (t, 0.7 * v)).collect();
        feed(&mut f, &today);
        // Ten hours at 70% against a 12-hour half-life: the level has moved most of the way.
        assert!((0.8..0.95).contains(&f.level()), "{}", f.level());
        let bytes = f.to_bytes().unwrap();
        assert_eq!(bytes[0], FORECASTER_FORMAT_VERSION);
        let back = Forecaster::from_bytes(&bytes).unwrap();
        assert_eq!(back.level(), f.level());
        assert_eq!(back.params(), f.params());
        let t = START + 14 * DAY_MS + 10 * 60 * MIN_MS + 20 * MIN_MS;
        // The same forecasts, up to what is rebuilt rather than stored: the pooled daily shape
        // (refreshed a few buckets at a time while running, all at once on loading) and the
        // correction's coefficients (solved hourly while running, on loading from its sums).
        let fresh = Forecaster::from_bytes(&f.profile().to_bytes().unwrap()).unwrap();
        for k in [0, 6, 24, 288] {
            let at = t + k * 5 * MIN_MS;
            let close = |a: Option<f64>, b: Option<f64>| (a.unwrap() / b.unwrap() - 1.0).abs() < 0.01;
            assert!(close(back.forecast_at(at, &utc, &none), f.forecast_at(at, &utc, &none)), "lead {k}");
            assert!(close(back.quantile_at(at, 0.9, &utc, &none), f.quantile_at(at, 0.9, &utc, &none)), "lead {k}");
            // Relearning from the profile alone would forecast ~15% higher.
            let relearnt = fresh.forecast_at(at, &utc, &none).unwrap() / f.forecast_at(at, &utc, &none).unwrap();
            assert!(relearnt > 1.05, "lead {k}: {relearnt:.3}");
        }
        assert_eq!(back.to_bytes().unwrap(), bytes);
        // A bare weekly profile (format 1, before the level existed) loads with a fresh level.
        assert_eq!(fresh.level(), 1.0);
        // Corrupt encodings are errors, never panics.
        for len in [1, 2, bytes.len() / 2, bytes.len() - 1] {
            assert!(Forecaster::from_bytes(&bytes[..len]).is_err(), "len {len}");
        }
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(Forecaster::from_bytes(&wrong), Err(ForecastError::UnsupportedVersion { .. })));
        assert_eq!(Forecaster::from_bytes(&[]), Err(ForecastError::Empty));
    }

    /// One-sided coverage of the p90 bound and the mean p90 margin (relative to the point) 30
    /// minutes ahead over a week after a 14-day fit.
    fn coverage(noise: f64, seed: u64) -> (f64, f64) {
        let (utc, none) = (TimeZone::UTC, SeasonalMultipliers::none());
        let five: Vec<(i64, f64)> = trace(START, 21 * 1440, noise, seed).into_iter().step_by(5).collect();
        let (history, test) = five.split_at(14 * 288);
        let mut f = Forecaster::fit(history, DEFAULT_BUCKET, &utc, &none).unwrap();
        let (mut covered, mut n, mut margin) = (0, 0, 0.0);
        for (i, &(t, load)) in test.iter().enumerate() {
            if let Some(&(target, actual)) = test.get(i + 6) {
                let point = f.forecast_at(target, &utc, &none).unwrap();
                let upper = f.quantile_at(target, 0.9, &utc, &none).unwrap();
                covered += usize::from(actual <= upper);
                margin += upper / point - 1.0;
                n += 1;
            }
            f.observe(t, &utc, load, &none);
        }
        (covered as f64 / n as f64, margin / n as f64)
    }

    #[test]
    fn p90_bounds_cover_about_90_percent_and_pad_a_noisy_pool_more() {
        let (quiet, quiet_margin) = coverage(0.02, 11);
        let (noisy, noisy_margin) = coverage(0.15, 12);
        println!(
            "p90 coverage 30 min ahead: quiet {quiet:.3} (margin {quiet_margin:.3}), noisy {noisy:.3} (margin {noisy_margin:.3})"
        );
        assert!((0.85..=0.95).contains(&quiet), "{quiet}");
        assert!((0.85..=0.95).contains(&noisy), "{noisy}");
        assert!(quiet_margin < 0.05, "a quiet pool is padded {quiet_margin:.3}");
        assert!(noisy_margin > 3.0 * quiet_margin, "{noisy_margin:.3} vs {quiet_margin:.3}");
    }

    #[test]
    fn the_fit_picks_parameters_and_starts_the_intervals_from_its_errors() {
        let (utc, none) = (TimeZone::UTC, SeasonalMultipliers::none());
        let five: Vec<(i64, f64)> = trace(START, 14 * 1440, 0.05, 5).into_iter().step_by(5).collect();
        let f = Forecaster::fit(&five, DEFAULT_BUCKET, &utc, &none).unwrap();
        assert_ne!(f.quantiles, [Quantiles::prior(); ANCHORS.len()]);
        assert!(f.params().is_valid());
        // Less than a week: nothing to score, the defaults stay.
        let short = Forecaster::fit(&five[..1000], DEFAULT_BUCKET, &utc, &none).unwrap();
        assert_eq!(short.params(), SmoothingParams::default());
        assert_eq!(short.quantiles, [Quantiles::prior(); ANCHORS.len()]);
        assert!(matches!(
            Forecaster::fit(&five, Duration::from_secs(7 * 60), &utc, &none),
            Err(ForecastError::InvalidBucket(_))
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

        #[test]
        fn from_bytes_never_panics_and_what_decodes_forecasts_finitely(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            flips in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                1..6,
            ),
        ) {
            let (utc, none) = (TimeZone::UTC, SeasonalMultipliers::none());
            let mut versioned = bytes;
            versioned.insert(0, FORECASTER_FORMAT_VERSION);
            let _ = Forecaster::from_bytes(&versioned);
            // A valid encoding, corrupted in a few places.
            let mut f = Forecaster::new(WeeklyProfile::new(Duration::from_secs(3600)).unwrap());
            feed(&mut f, &trace(START, 3 * 1440, 0.05, 9));
            let mut valid = f.to_bytes().unwrap();
            for (at, byte) in flips {
                let i = at.index(valid.len());
                valid[i] = byte;
            }
            if let Ok(f) = Forecaster::from_bytes(&valid) {
                let t = START + 3 * DAY_MS;
                if let Some(peak) = f.peak_over(t, Duration::from_secs(1800), 0.9, &utc, &none) {
                    proptest::prop_assert!(peak.point.is_finite() && peak.point >= 0.0, "{peak:?}");
                    proptest::prop_assert!(peak.upper.is_finite() && peak.upper >= 0.0, "{peak:?}");
                }
                proptest::prop_assert!(f.to_bytes().is_ok());
            }
        }
    }

    #[test]
    fn quantiles_interpolate_monotonically() {
        let q = Quantiles { q: [0.0, 0.1, 0.2, 0.15, 0.5], scale: 0.1 };
        assert_eq!(q.at(0.5), 0.0);
        assert!((q.at(0.85) - 0.15).abs() < 1e-12);
        // A crossing estimate (p95 below p90) reads as p90's.
        assert_eq!(q.at(0.95), 0.2);
        assert_eq!(q.at(0.99), 0.5);
        assert_eq!(q.at(1.5), 0.5);
        assert_eq!(q.at(0.1), 0.0);
    }
}
