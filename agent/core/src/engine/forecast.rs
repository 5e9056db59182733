//! Predictive scaling: a learned weekly load profile, seasonal multipliers and forecast accuracy.
//!
//! A [`WeeklyProfile`] keeps one estimate per *local* time-of-week bucket (by default 5 minutes,
//! 2016 buckets). Each observation is divided by the [`SeasonalMultipliers`] factor of its local
//! time before it is learned, and a forecast multiplies the factor of the target time back in:
//! the profile holds the load of a "plain week", so a profile learned in March still forecasts a
//! May Saturday (× 1.4 × 4.0 with the defaults).
//!
//! Learning is O(1) per observation and meant to be fed at the engine's rate (10 Hz per pool):
//!
//! * Samples that fall into the same *occurrence* of a bucket (the same 5 minutes of the same
//!   week) are averaged into a pending mean, so 3000 samples of one 5-minute bucket count once.
//! * When a sample lands in a later occurrence of that bucket (a week later), the pending mean
//!   is folded into the long-term estimate as a weighted mean whose older weight decays by
//!   `0.5^(weeks since the last fold / half_life_weeks)`: recent weeks count more, and a bucket
//!   that went unseen for months is relearned quickly.
//! * Forecasts include the pending mean as if it were folded, so last week's data is used before
//!   this week's occurrence of the bucket arrives.
//!
//! The profile is sans-IO like the rest of the core: wall time (Unix milliseconds) and the time
//! zone are always passed in. Persisting it is the daemon's job; [`WeeklyProfile::to_bytes`] and
//! [`WeeklyProfile::from_bytes`] give a versioned postcard encoding for that.
//!
//! The engine forecasts with a [`Forecaster`]: the profile × the pool's current level, a
//! short-term correction and the quantiles of its own errors (see its module, `smoothing`).
//! Pre-scaling never goes below the reactive load: a forecast alone never scales in.

use jiff::Timestamp as WallTime;
use jiff::civil::{DateTime, Weekday};
use jiff::tz::Offset;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A time zone from the bundled IANA database; see [`time_zone`].
pub use jiff::tz::TimeZone;

mod smoothing;
pub use smoothing::{
    ANCHORS, DEFAULT_QUANTILE, DIRECT_LEADS, FORECASTER_FORMAT_VERSION, Forecaster, LEVELS, PRIOR_SPREAD, PROFILE_CLIP,
    PeakForecast, SmoothingParams,
};

/// Default bucket width of a [`WeeklyProfile`].
pub const DEFAULT_BUCKET: Duration = Duration::from_secs(5 * 60);
/// Default half-life, in weeks, of an observation's weight in a [`WeeklyProfile`].
pub const DEFAULT_HALF_LIFE_WEEKS: f64 = 2.0;
/// Default look-ahead for pre-scaling.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(30 * 60);
/// Longest horizon [`WeeklyProfile::peak_over`] looks at; longer horizons are clamped to it.
pub const MAX_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);
/// Version byte that starts every [`WeeklyProfile::to_bytes`] encoding.
pub const FORMAT_VERSION: u8 = 1;

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;
const MS_PER_MINUTE: i64 = 60_000;
/// 1970-01-01 was a Thursday: Monday-based weekday 3.
const EPOCH_WEEKDAY_FROM_MONDAY: i64 = 3;

/// Everything that can go wrong building, encoding or decoding a forecast profile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    /// The time zone name is not in the bundled IANA time zone database.
    #[error("unknown time zone {name:?}: {reason}")]
    UnknownTimeZone {
        /// The name that was looked up.
        name: String,
        /// Why the lookup failed.
        reason: String,
    },
    /// The bucket width is not a whole number of minutes dividing a day (1 min ..= 24 h).
    #[error("forecast bucket {0:?} is not a whole number of minutes that divides a day")]
    InvalidBucket(Duration),
    /// The half-life is not a finite number of weeks above zero.
    #[error("forecast half-life {0} weeks is not a finite number above zero")]
    InvalidHalfLife(f64),
    /// The buffer to decode is empty.
    #[error("forecast profile buffer is empty")]
    Empty,
    /// The buffer was written by a format version this build does not read.
    #[error("forecast profile format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version byte found in the buffer.
        found: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// Encoding the profile failed.
    #[error("encoding forecast profile: {0}")]
    Encode(#[source] postcard::Error),
    /// The buffer is not a valid encoding (truncated, corrupt or trailing bytes).
    #[error("decoding forecast profile: {0}")]
    Decode(#[source] postcard::Error),
    /// The buffer decoded but its contents are inconsistent; the message says what.
    #[error("forecast profile is corrupt: {0}")]
    Corrupt(&'static str),
}

/// Looks an IANA time zone name (e.g. `Europe/London`) up in the bundled time zone database.
///
/// # Errors
///
/// [`ForecastError::UnknownTimeZone`], naming the zone, when the name is not in the database.
pub fn time_zone(name: &str) -> Result<TimeZone, ForecastError> {
    TimeZone::get(name).map_err(|e| ForecastError::UnknownTimeZone { name: name.to_owned(), reason: e.to_string() })
}

/// Seasonal load multipliers, applied in the pool's region's local time.
///
/// The factor of a local time is `(1 + peak_uplift if its month is a peak month) ×
/// (1 + saturday_uplift if it is a Saturday)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeasonalMultipliers {
    /// Months (1 = January ..= 12 = December) of the peak season. Default April–October.
    pub peak_months: Vec<u8>,
    /// Extra load in peak months, as a fraction (0.4 = +40%). Default 0.4.
    pub peak_uplift: f64,
    /// Extra load on Saturdays, as a fraction (3.0 = +300%). Default 3.0.
    pub saturday_uplift: f64,
}

impl Default for SeasonalMultipliers {
    fn default() -> Self {
        SeasonalMultipliers { peak_months: (4..=10).collect(), peak_uplift: 0.4, saturday_uplift: 3.0 }
    }
}

/// What is wrong with seasonal multipliers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeasonsError {
    /// A peak month outside 1..=12.
    #[error("peak_months: {0} is not a month (1..=12)")]
    NotAMonth(u8),
    /// An uplift that is not a finite number above -1.
    #[error("{field}: {value} is not a finite number above -1")]
    BadUplift {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
}

impl SeasonalMultipliers {
    /// No seasonality: every factor is 1.
    pub fn none() -> Self {
        SeasonalMultipliers { peak_months: Vec::new(), peak_uplift: 0.0, saturday_uplift: 0.0 }
    }

    /// Checks that months are in 1..=12 and that both uplifts are finite and above -1 (so every
    /// factor is positive).
    ///
    /// # Errors
    ///
    /// The offending field and value.
    pub fn validate(&self) -> Result<(), SeasonsError> {
        if let Some(&month) = self.peak_months.iter().find(|m| !(1..=12).contains(*m)) {
            return Err(SeasonsError::NotAMonth(month));
        }
        for (field, value) in [("peak_uplift", self.peak_uplift), ("saturday_uplift", self.saturday_uplift)] {
            if !value.is_finite() || value <= -1.0 {
                return Err(SeasonsError::BadUplift { field, value });
            }
        }
        Ok(())
    }

    /// The load factor at a local (civil) time.
    pub fn factor(&self, local: &DateTime) -> f64 {
        self.month_factor(local.month()) * self.weekday_factor(local.weekday() == Weekday::Saturday)
    }

    fn month_factor(&self, month: i8) -> f64 {
        if self.peak_months.iter().any(|&m| i16::from(m) == i16::from(month)) { 1.0 + self.peak_uplift } else { 1.0 }
    }

    fn weekday_factor(&self, saturday: bool) -> f64 {
        if saturday { 1.0 + self.saturday_uplift } else { 1.0 }
    }
}

/// The load to provision for: `max(reactive, forecast_peak × (1 + headroom))`.
///
/// Never below `reactive`, so a forecast can only pre-scale out, never scale in. A missing or
/// non-finite forecast, or a headroom that is not a finite number ≥ 0, leaves `reactive` as is.
pub fn prescale_load(reactive: f64, forecast_peak: Option<f64>, headroom: f64) -> f64 {
    match forecast_peak {
        Some(f) if f.is_finite() && headroom.is_finite() && headroom >= 0.0 => reactive.max(f * (1.0 + headroom)),
        _ => reactive,
    }
}

/// Mean absolute scaled error: `mean |actual - forecast| / mean |actual - naive|`.
///
/// Below 1 the forecast beats the naive one (e.g. weekly seasonal-naive: the value one week
/// earlier). `None` when the slices are empty or of different lengths, when a value is not
/// finite, or when the naive forecast is perfect (zero denominator).
pub fn mase(actual: &[f64], forecast: &[f64], naive: &[f64]) -> Option<f64> {
    if actual.is_empty() || actual.len() != forecast.len() || actual.len() != naive.len() {
        return None;
    }
    let (mut err, mut naive_err) = (0.0, 0.0);
    for ((a, f), n) in actual.iter().zip(forecast).zip(naive) {
        err += (a - f).abs();
        naive_err += (a - n).abs();
    }
    let ratio = err / naive_err;
    (naive_err > 0.0 && ratio.is_finite()).then_some(ratio)
}

/// One time-of-week bucket: a long-term estimate plus the mean of its current occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct Bucket {
    /// Long-term de-seasonalized load: the decayed weighted mean of folded occurrences.
    level: f64,
    /// Decayed number of folded occurrences; 0 = nothing folded yet.
    weight: f64,
    /// Occurrence number of the last fold.
    folded_occurrence: i64,
    /// Occurrence number the pending mean belongs to.
    pending_occurrence: i64,
    /// Mean of the de-seasonalized samples of the pending occurrence.
    pending_mean: f64,
    /// Samples in the pending mean; 0 = none pending.
    pending_count: u32,
}

impl Bucket {
    fn is_observed(&self) -> bool {
        self.weight > 0.0 || self.pending_count > 0
    }

    /// `(level, weight)` after folding the pending mean in (without changing the bucket).
    fn folded(&self, half_life_weeks: f64, occurrences_per_week: f64) -> (f64, f64) {
        if self.pending_count == 0 {
            return (self.level, self.weight);
        }
        let decay = if self.weight > 0.0 {
            // i64 → f64: occurrence gaps are far below 2^53.
            let weeks = (self.pending_occurrence - self.folded_occurrence) as f64 / occurrences_per_week;
            0.5_f64.powf(weeks.max(0.0) / half_life_weeks)
        } else {
            0.0
        };
        let weight = self.weight * decay + 1.0;
        (self.level + (self.pending_mean - self.level) / weight, weight)
    }
}

/// Where an instant falls: its bucket, its occurrence and its seasonal factor.
struct Locus {
    slot: usize,
    occurrence: i64,
    factor: f64,
}

/// A learned weekly load profile by local time of week; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct WeeklyProfile {
    bucket_minutes: u32,
    half_life_weeks: f64,
    buckets: Vec<Bucket>,
}

/// The encoded form, after the version byte.
#[derive(Serialize, Deserialize)]
struct Stored {
    bucket_minutes: u32,
    half_life_weeks: f64,
    buckets: Vec<Bucket>,
}

fn bucket_minutes(bucket: Duration) -> Option<u32> {
    let secs = bucket.as_secs();
    if bucket.subsec_nanos() != 0 || !secs.is_multiple_of(60) {
        return None;
    }
    let minutes = u32::try_from(secs / 60).ok()?;
    (minutes > 0 && MINUTES_PER_DAY.is_multiple_of(minutes)).then_some(minutes)
}

impl WeeklyProfile {
    /// An empty profile with buckets of `bucket` width and the default half-life
    /// ([`DEFAULT_HALF_LIFE_WEEKS`]).
    ///
    /// # Errors
    ///
    /// [`ForecastError::InvalidBucket`] unless `bucket` is a whole number of minutes that
    /// divides a day (e.g. 1, 5, 15 or 60 minutes).
    pub fn new(bucket: Duration) -> Result<Self, ForecastError> {
        let minutes = bucket_minutes(bucket).ok_or(ForecastError::InvalidBucket(bucket))?;
        let slots = (MINUTES_PER_WEEK / minutes) as usize;
        Ok(WeeklyProfile {
            bucket_minutes: minutes,
            half_life_weeks: DEFAULT_HALF_LIFE_WEEKS,
            buckets: vec![Bucket::default(); slots],
        })
    }

    /// The same profile with another half-life (in weeks) for the weight of past weeks.
    ///
    /// # Errors
    ///
    /// [`ForecastError::InvalidHalfLife`] unless `weeks` is finite and above zero.
    pub fn with_half_life_weeks(mut self, weeks: f64) -> Result<Self, ForecastError> {
        if !weeks.is_finite() || weeks <= 0.0 {
            return Err(ForecastError::InvalidHalfLife(weeks));
        }
        self.half_life_weeks = weeks;
        Ok(self)
    }

    /// Fits a profile from a history of `(wall_ms, load)` samples (e.g. 14 days at 5-minute
    /// resolution), in any order. Equivalent to [`WeeklyProfile::new`] followed by
    /// [`WeeklyProfile::observe`] of every sample in time order.
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
        let mut profile = WeeklyProfile::new(bucket)?;
        if history.is_sorted_by_key(|s| s.0) {
            profile.observe_all(history, tz, seasons);
        } else {
            let mut sorted = history.to_vec();
            sorted.sort_by_key(|s| s.0);
            profile.observe_all(&sorted, tz, seasons);
        }
        Ok(profile)
    }

    /// Learns every `(wall_ms, load)` sample in slice order (see [`WeeklyProfile::observe`]).
    pub fn observe_all(&mut self, samples: &[(i64, f64)], tz: &TimeZone, seasons: &SeasonalMultipliers) {
        for &(wall_ms, load) in samples {
            self.observe(wall_ms, tz, load, seasons);
        }
    }

    /// Learns one observation of `load` at Unix-ms `wall_ms`, bucketed by local time in `tz`.
    ///
    /// The load is divided by `seasons`' factor at that local time before it is learned. O(1).
    /// Non-finite loads, instants outside jiff's range and observations older than the
    /// bucket's current occurrence (more than a week late) are ignored; negative loads count
    /// as 0.
    pub fn observe(&mut self, wall_ms: i64, tz: &TimeZone, load: f64, seasons: &SeasonalMultipliers) {
        if !load.is_finite() {
            return;
        }
        let Some(locus) = self.locate(wall_ms, tz, seasons) else { return };
        let x = load.max(0.0) / locus.factor;
        if !x.is_finite() {
            return;
        }
        self.learn(&locus, x, None);
    }

    /// Learns the de-seasonalized observation `x` into the bucket of `locus`. With
    /// `clip = (scale, factor, slack)`, an observation of a bucket that has learned past weeks
    /// counts as no more than `expected × scale × factor + slack` and no less than
    /// `expected × scale / factor - slack`, where `expected` is the bucket's long-term estimate.
    fn learn(&mut self, locus: &Locus, x: f64, clip: Option<(f64, f64, f64)>) {
        let (half_life, per_week) = (self.half_life_weeks, self.occurrences_per_week());
        let Some(b) = self.buckets.get_mut(locus.slot) else { return };
        let x = match clip {
            Some((scale, factor, slack)) if b.weight > 0.0 && factor >= 1.0 && slack >= 0.0 => {
                let expected = b.level * scale;
                x.min(expected * factor + slack).max(expected / factor - slack).max(0.0)
            }
            _ => x,
        };
        if b.pending_count > 0 {
            if locus.occurrence == b.pending_occurrence {
                b.pending_count = b.pending_count.saturating_add(1);
                b.pending_mean += (x - b.pending_mean) / f64::from(b.pending_count);
                return;
            }
            if locus.occurrence < b.pending_occurrence {
                return;
            }
            (b.level, b.weight) = b.folded(half_life, per_week);
            b.folded_occurrence = b.pending_occurrence;
        } else if b.weight > 0.0 && locus.occurrence <= b.folded_occurrence {
            return;
        }
        b.pending_occurrence = locus.occurrence;
        b.pending_mean = x;
        b.pending_count = 1;
    }

    /// Expected load at Unix-ms `wall_ms`: the bucket's de-seasonalized estimate times the
    /// seasonal factor of that local time. `None` where the bucket has never been observed.
    pub fn forecast_at(&self, wall_ms: i64, tz: &TimeZone, seasons: &SeasonalMultipliers) -> Option<f64> {
        let locus = self.locate(wall_ms, tz, seasons)?;
        let b = self.buckets.get(locus.slot)?;
        if !b.is_observed() {
            return None;
        }
        let (level, _) = b.folded(self.half_life_weeks, self.occurrences_per_week());
        Some(level * locus.factor)
    }

    /// Expected load at Unix-ms `wall_ms` from the past occurrences of its bucket only (the
    /// occurrence `wall_ms` falls in, while it is being learned, left out): what the profile
    /// expected before it saw the load now. `None` where no past occurrence has been learned.
    pub fn expected_before(&self, wall_ms: i64, tz: &TimeZone, seasons: &SeasonalMultipliers) -> Option<f64> {
        let locus = self.locate(wall_ms, tz, seasons)?;
        let b = self.buckets.get(locus.slot)?;
        let (level, weight) = if b.pending_count > 0 && b.pending_occurrence >= locus.occurrence {
            (b.level, b.weight)
        } else {
            b.folded(self.half_life_weeks, self.occurrences_per_week())
        };
        (weight > 0.0).then_some(level * locus.factor)
    }

    /// The de-seasonalized estimate of the bucket at `slot` with its pending occurrence folded
    /// in; `None` if never observed.
    fn estimate(&self, slot: usize) -> Option<f64> {
        let b = self.buckets.get(slot).filter(|b| b.is_observed())?;
        Some(b.folded(self.half_life_weeks, self.occurrences_per_week()).0)
    }

    /// The de-seasonalized estimate of the bucket at `slot` for its occurrence `occurrence`
    /// from past occurrences only (as [`WeeklyProfile::expected_before`]); `None` if unlearned.
    fn plain_before(&self, slot: usize, occurrence: i64) -> Option<f64> {
        let b = self.buckets.get(slot)?;
        let (level, weight) = if b.pending_count > 0 && b.pending_occurrence >= occurrence {
            (b.level, b.weight)
        } else {
            b.folded(self.half_life_weeks, self.occurrences_per_week())
        };
        (weight > 0.0).then_some(level)
    }

    /// The highest expected load over `[wall_ms, wall_ms + horizon]` (horizon clamped to
    /// [`MAX_HORIZON`]), over the buckets that have been observed. `None` when none of the
    /// buckets in the window has been observed.
    pub fn peak_over(
        &self,
        wall_ms: i64,
        horizon: Duration,
        tz: &TimeZone,
        seasons: &SeasonalMultipliers,
    ) -> Option<f64> {
        let horizon_ms = i64::try_from(horizon.min(MAX_HORIZON).as_millis()).unwrap_or(i64::MAX);
        let step_ms = i64::from(self.bucket_minutes) * MS_PER_MINUTE;
        let end = wall_ms.saturating_add(horizon_ms);
        if let Some(peak) = self.peak_within_one_offset_and_month(wall_ms, end, tz, seasons) {
            return peak;
        }
        // Stepping by one bucket width visits every bucket the window touches (also across a
        // DST change, which moves local time by whole buckets); the end point adds the last.
        let steps = horizon_ms / step_ms + 1;
        (0..steps)
            .map(|k| wall_ms.saturating_add(k * step_ms))
            .chain(std::iter::once(end))
            .filter_map(|t| self.forecast_at(t, tz, seasons))
            .reduce(f64::max)
    }

    /// Number of buckets that have been observed at least once.
    pub fn observed_buckets(&self) -> usize {
        self.buckets.iter().filter(|b| b.is_observed()).count()
    }

    /// Number of buckets in a week (2016 for 5-minute buckets).
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Width of one bucket.
    pub fn bucket(&self) -> Duration {
        Duration::from_secs(u64::from(self.bucket_minutes) * 60)
    }

    /// Half-life, in weeks, of a past week's weight.
    pub fn half_life_weeks(&self) -> f64 {
        self.half_life_weeks
    }

    /// Encodes the profile: [`FORMAT_VERSION`], then the postcard encoding of the profile.
    ///
    /// # Errors
    ///
    /// [`ForecastError::Encode`] if postcard fails (it does not for this type in practice).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ForecastError> {
        let stored = Stored {
            bucket_minutes: self.bucket_minutes,
            half_life_weeks: self.half_life_weeks,
            buckets: self.buckets.clone(),
        };
        postcard::to_extend(&stored, vec![FORMAT_VERSION]).map_err(ForecastError::Encode)
    }

    /// Decodes a profile written by [`WeeklyProfile::to_bytes`]. Never panics on bad input.
    ///
    /// # Errors
    ///
    /// [`ForecastError::Empty`] for an empty buffer, [`ForecastError::UnsupportedVersion`] for
    /// another format version, [`ForecastError::Decode`] for a truncated or corrupt buffer or
    /// trailing bytes, and [`ForecastError::Corrupt`] for contents that decode but are
    /// inconsistent (wrong bucket count, non-finite or negative estimates, …).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ForecastError> {
        let (&version, rest) = bytes.split_first().ok_or(ForecastError::Empty)?;
        if version != FORMAT_VERSION {
            return Err(ForecastError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
        }
        let (stored, trailing): (Stored, _) = postcard::take_from_bytes(rest).map_err(ForecastError::Decode)?;
        if !trailing.is_empty() {
            return Err(ForecastError::Decode(postcard::Error::DeserializeBadEncoding));
        }
        let minutes = stored.bucket_minutes;
        if minutes == 0 || !MINUTES_PER_DAY.is_multiple_of(minutes) {
            return Err(ForecastError::Corrupt("bucket width does not divide a day"));
        }
        if stored.buckets.len() != (MINUTES_PER_WEEK / minutes) as usize {
            return Err(ForecastError::Corrupt("bucket count does not match the bucket width"));
        }
        if !stored.half_life_weeks.is_finite() || stored.half_life_weeks <= 0.0 {
            return Err(ForecastError::Corrupt("half-life is not a finite number above zero"));
        }
        let sane = |v: f64| v.is_finite() && v >= 0.0;
        if !stored.buckets.iter().all(|b| sane(b.level) && sane(b.weight) && sane(b.pending_mean)) {
            return Err(ForecastError::Corrupt("an estimate is negative or not finite"));
        }
        Ok(WeeklyProfile { bucket_minutes: minutes, half_life_weeks: stored.half_life_weeks, buckets: stored.buckets })
    }

    fn occurrences_per_week(&self) -> f64 {
        f64::from(MINUTES_PER_WEEK / self.bucket_minutes)
    }

    /// The common case of [`WeeklyProfile::peak_over`], without a time zone lookup per bucket:
    /// when `start` and `end` have the same UTC offset and local month, local time inside the
    /// window is plain arithmetic and only the Saturday factor varies. `None` when that does not
    /// hold (a DST change or a month boundary in the window), to take the general path.
    fn peak_within_one_offset_and_month(
        &self,
        start: i64,
        end: i64,
        tz: &TimeZone,
        seasons: &SeasonalMultipliers,
    ) -> Option<Option<f64>> {
        let (first, offset, local) = local_clock(start, tz)?;
        let (last, end_offset, end_local) = local_clock(end, tz)?;
        if offset != end_offset || local.month() != end_local.month() {
            return None;
        }
        let month_factor = seasons.month_factor(local.month());
        let minutes = i64::from(self.bucket_minutes);
        let (per_week, half_life) = (self.occurrences_per_week(), self.half_life_weeks);
        let peak = (first.div_euclid(minutes)..=last.div_euclid(minutes))
            .filter_map(|occurrence| {
                let (slot, saturday) = self.slot_of(occurrence)?;
                let b = self.buckets.get(slot).filter(|b| b.is_observed())?;
                let factor = month_factor * seasons.weekday_factor(saturday);
                (factor.is_finite() && factor > 0.0).then(|| b.folded(half_life, per_week).0 * factor)
            })
            .reduce(f64::max);
        Some(peak)
    }

    /// The bucket of an occurrence, and whether it lies on a Saturday.
    fn slot_of(&self, occurrence: i64) -> Option<(usize, bool)> {
        let minutes = i64::from(self.bucket_minutes);
        let minute_of_week = (occurrence.checked_mul(minutes)?
            + EPOCH_WEEKDAY_FROM_MONDAY * i64::from(MINUTES_PER_DAY))
        .rem_euclid(i64::from(MINUTES_PER_WEEK));
        let saturday = minute_of_week / i64::from(MINUTES_PER_DAY) == 5;
        Some((usize::try_from(minute_of_week / minutes).ok()?, saturday))
    }

    /// The bucket, occurrence and seasonal factor of an instant; `None` outside jiff's range
    /// or for a factor that is not a positive finite number (unvalidated multipliers).
    fn locate(&self, wall_ms: i64, tz: &TimeZone, seasons: &SeasonalMultipliers) -> Option<Locus> {
        let (local_minute, _, local) = local_clock(wall_ms, tz)?;
        let occurrence = local_minute.div_euclid(i64::from(self.bucket_minutes));
        let (slot, _) = self.slot_of(occurrence)?;
        let factor = seasons.factor(&local);
        (factor.is_finite() && factor > 0.0).then_some(Locus { slot, occurrence, factor })
    }
}

/// Local minutes since the Unix epoch (as if local time were UTC), the UTC offset and the local
/// civil time of an instant; `None` outside jiff's range.
fn local_clock(wall_ms: i64, tz: &TimeZone) -> Option<(i64, Offset, DateTime)> {
    let ts = WallTime::from_millisecond(wall_ms).ok()?;
    let offset = tz.to_offset(ts);
    let local_ms = wall_ms.checked_add(i64::from(offset.seconds()) * 1000)?;
    Some((local_ms.div_euclid(MS_PER_MINUTE), offset, offset.to_datetime(ts)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    const FIVE_MIN_MS: i64 = 5 * 60_000;
    const WEEK_SAMPLES: usize = 7 * 288;

    fn tz(name: &str) -> TimeZone {
        time_zone(name).unwrap()
    }

    /// Unix ms of a local civil time in a zone.
    fn wall(tz: &TimeZone, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> i64 {
        date(y, mo, d).at(h, mi, 0, 0).to_zoned_datetime(tz.clone()).unwrap().timestamp().as_millisecond()
    }

    struct XorShift(u64);
    impl XorShift {
        /// Uniform in [0, 1).
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A seasonal trace at 5-minute resolution from `start_ms`: a daily sinusoid peaking at 20:00
    /// local × the seasonal multipliers × Sunday 1.5 × ±15% noise.
    fn trace(
        start_ms: i64,
        samples: usize,
        tz: &TimeZone,
        seasons: &SeasonalMultipliers,
        seed: u64,
    ) -> Vec<(i64, f64)> {
        let mut rng = XorShift(seed);
        (0..samples)
            .map(|i| {
                let t = start_ms + i as i64 * FIVE_MIN_MS;
                let local = tz.to_datetime(WallTime::from_millisecond(t).unwrap());
                let hour = f64::from(local.hour()) + f64::from(local.minute()) / 60.0;
                let daily = 100.0 + 80.0 * (2.0 * std::f64::consts::PI * (hour - 14.0) / 24.0).sin();
                let weekly = if local.weekday() == Weekday::Sunday { 1.5 } else { 1.0 };
                let noise = 1.0 + 0.3 * (rng.next() - 0.5);
                (t, daily * weekly * seasons.factor(&local) * noise)
            })
            .collect()
    }

    /// Fits on the first 14 days, forecasts the next 48 h; returns (MASE, forecasts, actuals).
    fn evaluate(full: &[(i64, f64)], tz: &TimeZone, seasons: &SeasonalMultipliers) -> (f64, Vec<f64>, Vec<f64>) {
        let history = &full[..2 * WEEK_SAMPLES];
        let profile = WeeklyProfile::fit(history, DEFAULT_BUCKET, tz, seasons).unwrap();
        assert_eq!(profile.observed_buckets(), profile.bucket_count());
        let horizon = 2 * WEEK_SAMPLES..2 * WEEK_SAMPLES + 2 * 288;
        let actual: Vec<f64> = full[horizon.clone()].iter().map(|s| s.1).collect();
        let forecast: Vec<f64> =
            full[horizon.clone()].iter().map(|s| profile.forecast_at(s.0, tz, seasons).unwrap()).collect();
        let naive: Vec<f64> = horizon.map(|i| full[i - WEEK_SAMPLES].1).collect();
        (mase(&actual, &forecast, &naive).unwrap(), forecast, actual)
    }

    #[test]
    fn seasonal_factor_of_saturday_in_may_and_tuesday_in_january() {
        let s = SeasonalMultipliers::default();
        assert!(s.validate().is_ok());
        let may_saturday = date(2025, 5, 3).at(12, 0, 0, 0);
        assert!((s.factor(&may_saturday) - 1.4 * 4.0).abs() < 1e-12);
        let january_tuesday = date(2025, 1, 7).at(12, 0, 0, 0);
        assert_eq!(s.factor(&january_tuesday), 1.0);
        let may_tuesday = date(2025, 5, 6).at(12, 0, 0, 0);
        assert!((s.factor(&may_tuesday) - 1.4).abs() < 1e-12);
        assert_eq!(SeasonalMultipliers::none().factor(&may_saturday), 1.0);
    }

    #[test]
    fn seasonal_factor_depends_on_the_time_zone() {
        let s = SeasonalMultipliers::default();
        // 2025-05-02T20:00Z: Saturday 01:30 in Kolkata, Friday 13:00 in Los Angeles.
        let ts = WallTime::from_second(1_746_216_000).unwrap();
        let kolkata = tz("Asia/Kolkata").to_datetime(ts);
        let los_angeles = tz("America/Los_Angeles").to_datetime(ts);
        assert_eq!(kolkata.weekday(), Weekday::Saturday);
        assert_eq!(los_angeles.weekday(), Weekday::Friday);
        assert!((s.factor(&kolkata) - 5.6).abs() < 1e-12);
        assert!((s.factor(&los_angeles) - 1.4).abs() < 1e-12);
    }

    #[test]
    fn validation_rejects_bad_multipliers_buckets_and_zones() {
        let bad_month = SeasonalMultipliers { peak_months: vec![0, 4], ..SeasonalMultipliers::default() };
        assert!(bad_month.validate().unwrap_err().to_string().contains("peak_months"));
        let bad_uplift = SeasonalMultipliers { saturday_uplift: -1.0, ..SeasonalMultipliers::default() };
        assert!(bad_uplift.validate().unwrap_err().to_string().contains("saturday_uplift"));
        let nan = SeasonalMultipliers { peak_uplift: f64::NAN, ..SeasonalMultipliers::default() };
        assert!(nan.validate().unwrap_err().to_string().contains("peak_uplift"));

        for bad in
            [Duration::ZERO, Duration::from_secs(90), Duration::from_secs(7 * 60), Duration::from_secs(2 * 86_400)]
        {
            assert_eq!(WeeklyProfile::new(bad), Err(ForecastError::InvalidBucket(bad)));
        }
        assert_eq!(WeeklyProfile::new(DEFAULT_BUCKET).unwrap().bucket_count(), 2016);
        assert_eq!(WeeklyProfile::new(Duration::from_secs(3600)).unwrap().bucket_count(), 168);
        let profile = WeeklyProfile::new(DEFAULT_BUCKET).unwrap();
        assert!(matches!(profile.clone().with_half_life_weeks(0.0), Err(ForecastError::InvalidHalfLife(_))));
        assert_eq!(profile.with_half_life_weeks(4.0).unwrap().half_life_weeks(), 4.0);

        let err = time_zone("Mars/Olympus_Mons").unwrap_err();
        assert!(matches!(&err, ForecastError::UnknownTimeZone { name, .. } if name == "Mars/Olympus_Mons"));
        assert!(err.to_string().contains("Mars/Olympus_Mons"));
        assert!(time_zone("Europe/London").is_ok());
    }

    #[test]
    fn forecast_beats_weekly_seasonal_naive_on_a_seasonal_trace() {
        let london = tz("Europe/London");
        let seasons = SeasonalMultipliers::default();
        // From Friday 2025-06-06: 14 days of history, then Friday and Saturday to forecast.
        let start = wall(&london, 2025, 6, 6, 0, 0);
        let mut results = Vec::new();
        for seed in [0x9E37_79B9, 1, 2, 3, 4] {
            let full = trace(start, 2 * WEEK_SAMPLES + 2 * 288, &london, &seasons, seed);
            let (m, _, _) = evaluate(&full, &london, &seasons);
            results.push(m);
            assert!(m < 1.0, "seed {seed}: MASE {m:.3} against weekly seasonal-naive must be below 1");
        }
        println!("MASE (June, 48 h incl. Saturday), 5 noise seeds: {results:.3?}");
    }

    #[test]
    fn deseasonalizing_carries_march_history_into_april() {
        let london = tz("Europe/London");
        let seasons = SeasonalMultipliers::default();
        // History 2025-03-17 .. 03-31 (all off-season, crossing the DST start on 03-30), then
        // 31 March and 1 April, the first day of the peak season.
        let start = wall(&london, 2025, 3, 17, 0, 0);
        let samples = ((wall(&london, 2025, 4, 2, 0, 0) - start) / FIVE_MIN_MS) as usize;
        let full = trace(start, samples, &london, &seasons, 0x1234_5678);
        assert_eq!(samples - 2 * WEEK_SAMPLES, 2 * 288 - 12, "the DST start removes one hour");
        let history = &full[..2 * WEEK_SAMPLES];
        let profile = WeeklyProfile::fit(history, DEFAULT_BUCKET, &london, &seasons).unwrap();
        let horizon = 2 * WEEK_SAMPLES..samples;
        let actual: Vec<f64> = full[horizon.clone()].iter().map(|s| s.1).collect();
        let forecast: Vec<f64> =
            full[horizon.clone()].iter().map(|s| profile.forecast_at(s.0, &london, &seasons).unwrap()).collect();
        let naive: Vec<f64> = horizon.clone().map(|i| full[i - WEEK_SAMPLES].1).collect();
        let m = mase(&actual, &forecast, &naive).unwrap();
        assert!(m < 1.0, "MASE {m:.3} across the start of the peak season must be below 1");
        // On 1 April alone, the forecast's level must match the actual's (× 1.4 applied).
        let april = full.iter().position(|s| s.0 >= wall(&london, 2025, 4, 1, 0, 0)).unwrap() - 2 * WEEK_SAMPLES;
        let ratio = forecast[april..].iter().sum::<f64>() / actual[april..].iter().sum::<f64>();
        assert!((0.95..1.05).contains(&ratio), "1 April forecast/actual {ratio:.3} must be within 5%");
        // Without de-seasonalizing (the same history learned and forecast with no multipliers),
        // 1 April would come out about 1/1.4 too low.
        let none = SeasonalMultipliers::none();
        let plain = WeeklyProfile::fit(history, DEFAULT_BUCKET, &london, &none).unwrap();
        let plain_sum: f64 =
            full[2 * WEEK_SAMPLES + april..].iter().map(|s| plain.forecast_at(s.0, &london, &none).unwrap()).sum();
        let plain_ratio = plain_sum / actual[april..].iter().sum::<f64>();
        assert!((0.65..0.77).contains(&plain_ratio), "{plain_ratio:.3}");
        println!(
            "MASE (March history → 1 April): {m:.3}, 1 April forecast/actual {ratio:.3} (without seasons {plain_ratio:.3})"
        );
    }

    #[test]
    fn samples_within_one_bucket_average_and_weeks_decay_by_half_life() {
        let utc = TimeZone::UTC;
        let none = SeasonalMultipliers::none();
        let mut p = WeeklyProfile::new(DEFAULT_BUCKET).unwrap();
        let t0 = wall(&utc, 2025, 1, 6, 10, 0);
        // 3000 samples at 10 Hz in one 5-minute bucket: 100 and 300 alternating.
        for i in 0..3000_i64 {
            p.observe(t0 + i * 100, &utc, if i % 2 == 0 { 100.0 } else { 300.0 }, &none);
        }
        assert_eq!(p.observed_buckets(), 1);
        assert!((p.forecast_at(t0, &utc, &none).unwrap() - 200.0).abs() < 1e-9);
        // The next week's occurrence folds week 1 in; with a 2-week half-life week 1 keeps
        // weight 2^-0.5 against week 2's 1.
        let week_ms = 7 * 86_400_000;
        p.observe(t0 + week_ms, &utc, 400.0, &none);
        let d = 0.5_f64.sqrt();
        let expected = (200.0 * d + 400.0) / (d + 1.0);
        assert!((p.forecast_at(t0 + 2 * week_ms, &utc, &none).unwrap() - expected).abs() < 1e-9);
        // A sample more than a week late is ignored.
        p.observe(t0 - week_ms, &utc, 10_000.0, &none);
        assert!((p.forecast_at(t0, &utc, &none).unwrap() - expected).abs() < 1e-9);
        // Non-finite loads are ignored, negative ones count as 0.
        p.observe(t0 + week_ms + 1, &utc, f64::NAN, &none);
        p.observe(t0 + week_ms + 2, &utc, f64::INFINITY, &none);
        assert!((p.forecast_at(t0, &utc, &none).unwrap() - expected).abs() < 1e-9);
        p.observe(t0 + week_ms + 3, &utc, -400.0, &none);
        let expected = (200.0 * d + 200.0) / (d + 1.0);
        assert!((p.forecast_at(t0, &utc, &none).unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn peak_over_takes_the_max_across_the_horizon_and_unobserved_is_none() {
        let utc = TimeZone::UTC;
        let none = SeasonalMultipliers::none();
        let mut p = WeeklyProfile::new(DEFAULT_BUCKET).unwrap();
        let t0 = wall(&utc, 2025, 1, 6, 10, 0); // a Monday
        assert_eq!(p.forecast_at(t0, &utc, &none), None);
        assert_eq!(p.peak_over(t0, DEFAULT_HORIZON, &utc, &none), None);
        // 10:00 .. 10:55 learned as 10, 20, …, 120.
        for k in 0..12_i64 {
            p.observe(t0 + k * FIVE_MIN_MS, &utc, 10.0 * (k + 1) as f64, &none);
        }
        assert_eq!(p.forecast_at(t0 + 11 * FIVE_MIN_MS, &utc, &none), Some(120.0));
        assert_eq!(p.forecast_at(t0 + 12 * FIVE_MIN_MS, &utc, &none), None);
        // [10:00, 10:30] ends in the 10:30 bucket (70).
        assert_eq!(p.peak_over(t0, DEFAULT_HORIZON, &utc, &none), Some(70.0));
        // An unaligned start: [10:02, 10:32] still reaches the 10:30 bucket.
        assert_eq!(p.peak_over(t0 + 120_000, DEFAULT_HORIZON, &utc, &none), Some(70.0));
        // Only partly observed windows use what they know; beyond is None.
        assert_eq!(p.peak_over(t0 + 40 * 60_000, Duration::from_secs(3600), &utc, &none), Some(120.0));
        assert_eq!(p.peak_over(t0 + 3_600_000, DEFAULT_HORIZON, &utc, &none), None);
        // A week later the same profile applies, and a huge horizon is clamped, not looped.
        assert_eq!(p.peak_over(t0 + 7 * 86_400_000, DEFAULT_HORIZON, &utc, &none), Some(70.0));
        assert_eq!(p.peak_over(t0 + 3_600_000, Duration::MAX, &utc, &none), Some(120.0));
        // Seasons multiply the forecast: on a Saturday in May the same bucket is × 5.6.
        let seasons = SeasonalMultipliers::default();
        let mut p = WeeklyProfile::new(DEFAULT_BUCKET).unwrap();
        let march_saturday = wall(&utc, 2025, 3, 1, 10, 0);
        p.observe(march_saturday, &utc, 400.0, &seasons);
        let may_saturday = wall(&utc, 2025, 5, 3, 10, 0);
        let f = p.peak_over(may_saturday, DEFAULT_HORIZON, &utc, &seasons).unwrap();
        assert!((f - 560.0).abs() < 1e-9, "{f}");
    }

    #[test]
    fn prescale_never_goes_below_reactive() {
        assert_eq!(prescale_load(100.0, Some(200.0), 0.2), 240.0);
        assert_eq!(prescale_load(100.0, Some(50.0), 0.2), 100.0);
        assert_eq!(prescale_load(100.0, None, 0.2), 100.0);
        assert_eq!(prescale_load(100.0, Some(f64::NAN), 0.2), 100.0);
        assert_eq!(prescale_load(100.0, Some(200.0), -0.5), 100.0);
    }

    #[test]
    fn mase_edge_cases() {
        assert_eq!(mase(&[], &[], &[]), None);
        assert_eq!(mase(&[1.0], &[1.0, 2.0], &[1.0]), None);
        assert_eq!(mase(&[1.0, 2.0], &[1.0, 2.0], &[1.0, 2.0]), None, "perfect naive");
        assert_eq!(mase(&[1.0, 2.0], &[2.0, 2.0], &[3.0, 2.0]), Some(0.5));
        assert_eq!(mase(&[1.0, f64::NAN], &[2.0, 2.0], &[3.0, 2.0]), None);
    }

    #[test]
    fn bytes_round_trip() {
        let london = tz("Europe/London");
        let seasons = SeasonalMultipliers::default();
        let full = trace(wall(&london, 2025, 6, 6, 0, 0), 2 * WEEK_SAMPLES + 7, &london, &seasons, 42);
        let p =
            WeeklyProfile::fit(&full, DEFAULT_BUCKET, &london, &seasons).unwrap().with_half_life_weeks(3.0).unwrap();
        let bytes = p.to_bytes().unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back = WeeklyProfile::from_bytes(&bytes).unwrap();
        assert_eq!(back, p);
        let t = full[100].0 + 7 * 86_400_000;
        assert_eq!(back.forecast_at(t, &london, &seasons), p.forecast_at(t, &london, &seasons));
        // An empty profile round-trips too.
        let empty = WeeklyProfile::new(Duration::from_secs(3600)).unwrap();
        assert_eq!(WeeklyProfile::from_bytes(&empty.to_bytes().unwrap()).unwrap(), empty);
    }

    #[test]
    fn bad_buffers_are_errors() {
        let p = WeeklyProfile::new(Duration::from_secs(3600)).unwrap();
        let bytes = p.to_bytes().unwrap();
        assert_eq!(WeeklyProfile::from_bytes(&[]), Err(ForecastError::Empty));
        let mut wrong_version = bytes.clone();
        wrong_version[0] = FORMAT_VERSION + 1;
        assert_eq!(
            WeeklyProfile::from_bytes(&wrong_version),
            Err(ForecastError::UnsupportedVersion { found: FORMAT_VERSION + 1, supported: FORMAT_VERSION })
        );
        for len in [1, 2, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(WeeklyProfile::from_bytes(&bytes[..len]), Err(ForecastError::Decode(_))), "len {len}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(WeeklyProfile::from_bytes(&trailing), Err(ForecastError::Decode(_))));
        // Bucket width 7 minutes does not divide a day.
        let mut bad_width = bytes.clone();
        bad_width[1] = 7;
        assert!(WeeklyProfile::from_bytes(&bad_width).is_err());
        // A bucket count that does not match the width.
        let mut wrong_count = p.clone();
        wrong_count.buckets.pop();
        let err = WeeklyProfile::from_bytes(&wrong_count.to_bytes().unwrap()).unwrap_err();
        assert!(matches!(err, ForecastError::Corrupt(_)), "{err}");
        // A negative estimate.
        let mut negative = p.clone();
        negative.buckets[3].level = -1.0;
        let err = WeeklyProfile::from_bytes(&negative.to_bytes().unwrap()).unwrap_err();
        assert!(matches!(err, ForecastError::Corrupt(_)), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn estimates_stay_finite_and_non_negative(
            steps in proptest::collection::vec((0_i64..3 * 86_400_000, 0.0_f64..1e12), 1..200),
            start in 1_600_000_000_000_i64..1_800_000_000_000,
            zone in prop::sample::select(vec!["UTC", "Europe/London", "Asia/Kolkata", "America/Los_Angeles"]),
        ) {
            let tz = time_zone(zone).unwrap();
            let seasons = SeasonalMultipliers::default();
            let mut p = WeeklyProfile::new(DEFAULT_BUCKET).unwrap();
            let mut t = start;
            for (dt, load) in steps {
                t += dt;
                p.observe(t, &tz, load, &seasons);
                let f = p.forecast_at(t, &tz, &seasons);
                prop_assert!(f.is_some_and(|f| f.is_finite() && f >= 0.0), "{f:?}");
            }
            for b in &p.buckets {
                prop_assert!(b.level.is_finite() && b.level >= 0.0);
                prop_assert!(b.weight.is_finite() && b.weight >= 0.0);
                prop_assert!(b.pending_mean.is_finite() && b.pending_mean >= 0.0);
            }
            let peak = p.peak_over(t, DEFAULT_HORIZON, &tz, &seasons);
            prop_assert!(peak.is_some_and(|f| f.is_finite() && f >= 0.0));
            prop_assert_eq!(WeeklyProfile::from_bytes(&p.to_bytes().unwrap()).unwrap(), p);
        }

        #[test]
        fn peak_over_is_the_max_of_forecasts_over_the_window(
            around in prop::sample::select(vec![
                (2025_i16, 3_i8, 30_i8), // London's DST start
                (2025, 10, 26),          // London's DST end
                (2025, 5, 31),           // a Saturday at the start of June
                (2025, 9, 17),           // a plain Wednesday
            ]),
            shift_min in -1_500_i64..1_500,
            horizon_min in 0_u64..1_440,
            seed in 1_u64..u64::MAX,
        ) {
            let london = tz("Europe/London");
            let seasons = SeasonalMultipliers::default();
            let start = wall(&london, around.0, around.1, around.2, 0, 0) + shift_min * 60_000 + 7_000;
            let mut rng = XorShift(seed);
            let mut p = WeeklyProfile::new(Duration::from_secs(15 * 60)).unwrap();
            // A week of history with holes (a third of the buckets never observed).
            for k in 0..(7 * 96) {
                let load = 1000.0 * rng.next();
                if rng.next() < 0.66 {
                    p.observe(start - 7 * 86_400_000 + k * 900_000, &london, load, &seasons);
                }
            }
            let horizon = Duration::from_secs(horizon_min * 60);
            let end = start + horizon_min as i64 * 60_000;
            let brute = (0..=horizon_min as i64)
                .map(|m| start + m * 60_000)
                .chain(std::iter::once(end))
                .filter_map(|t| p.forecast_at(t, &london, &seasons))
                .reduce(f64::max);
            prop_assert_eq!(p.peak_over(start, horizon, &london, &seasons), brute);
        }

        #[test]
        fn from_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let _ = WeeklyProfile::from_bytes(&bytes);
            let mut versioned = bytes;
            versioned.insert(0, FORMAT_VERSION);
            let _ = WeeklyProfile::from_bytes(&versioned);
            // Corrupt a valid encoding in a few places.
            let mut valid = WeeklyProfile::new(Duration::from_secs(3600)).unwrap().to_bytes().unwrap();
            for (at, byte) in flips {
                let i = at.index(valid.len());
                valid[i] = byte;
            }
            if let Ok(p) = WeeklyProfile::from_bytes(&valid) {
                prop_assert_eq!(p.bucket_count() * p.bucket().as_secs() as usize, 7 * 86_400);
            }
        }
    }
}
