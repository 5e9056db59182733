//! The metric store: bounded ring buffers per series, windowed queries, a cardinality cap.
//!
//! Sans-IO: every call takes the caller's [`Timestamp`]. Memory is bounded whatever clients send:
//! at most [`StoreLimits::max_series`] application series (and at most
//! [`StoreLimits::max_histogram_series`] of them with histograms); past either cap a new series is
//! refused and counted, never silently dropped. Series idle for longer than the TTL are expired by
//! [`MetricStore::expire_idle`], which frees room for new ones.
//!
//! Resolution: counts and gauge levels are kept in 100 ms slots for the last 10 s and in 1 s slots
//! for the last 60 s; histograms in 1 s slots for the last 10 s and 10 s slots for the last 60 s.
//! Rates use completed slots only (so a rate lags by at most one slot); percentiles include the
//! slot being filled, and cover at least the window asked for (at most one slot more).

use crate::TrafficClass;
use crate::statsd::{GaugeUpdate, Line, MetricKind};
use crate::time::{Timestamp, duration_nanos};
use hashbrown::HashTable;
use hdrhistogram::Histogram;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const FINE_SLOT_NS: u64 = 100_000_000;
const FINE_SLOTS: usize = 101;
const COARSE_SLOT_NS: u64 = 1_000_000_000;
const COARSE_SLOTS: usize = 61;
const HIST_FINE_SLOT_NS: u64 = 1_000_000_000;
const HIST_FINE_SLOTS: usize = 11;
const HIST_COARSE_SLOT_NS: u64 = 10_000_000_000;
const HIST_COARSE_SLOTS: usize = 7;
const SET_WINDOW_NS: u64 = 10_000_000_000;
/// Histogram values are kept in thousandths of their unit (microseconds for `ms` timers).
const HIST_SCALE: f64 = 1000.0;
const HIST_SIGFIG: u8 = 2;

/// Longest window a rate or percentile query covers.
pub const MAX_WINDOW: Duration = Duration::from_secs(60);

/// Limits that keep the store's memory bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most application series (all kinds) held at once.
    pub max_series: usize,
    /// Most application series with histograms (timers, histograms, distributions) held at once.
    pub max_histogram_series: usize,
    /// Most distinct members tracked per set series per 10 s window.
    pub max_set_members: usize,
    /// Half-life of the exponentially weighted moving averages.
    pub ewma_half_life: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_series: 10_000,
            max_histogram_series: 1_000,
            max_set_members: 10_000,
            ewma_half_life: Duration::from_secs(5),
        }
    }
}

/// Why a sample was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The series is new and the store already holds `max_series` application series.
    #[error("series limit reached ({limit} series): new series refused")]
    SeriesLimit {
        /// The configured limit.
        limit: usize,
    },
    /// The series is new, has a histogram, and the store already holds `max_histogram_series`.
    #[error("histogram series limit reached ({limit} series): new series refused")]
    HistogramSeriesLimit {
        /// The configured limit.
        limit: usize,
    },
    /// An existing series was sent with a value its kind cannot take.
    #[error("value cannot be recorded for this series")]
    BadValue,
}

impl RecordError {
    /// A short snake_case name, used as a metric label.
    pub const fn label(self) -> &'static str {
        match self {
            RecordError::SeriesLimit { .. } => "series_limit",
            RecordError::HistogramSeriesLimit { .. } => "histogram_series_limit",
            RecordError::BadValue => "bad_value",
        }
    }
}

/// Counts of what the store refused or expired, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// New series refused at the series limit.
    pub refused_series: u64,
    /// New series refused at the histogram series limit.
    pub refused_histogram_series: u64,
    /// Series removed for being idle longer than the TTL.
    pub expired_series: u64,
    /// Set members not tracked because a set's window was full.
    pub set_members_dropped: u64,
}

/// Index of a series; valid until the next [`MetricStore::expire_idle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(u32);

/// A fixed number of time slots, the newest at `head`.
#[derive(Debug, Clone)]
struct Ring<T> {
    slots: Box<[T]>,
    slot_ns: u64,
    head: u64,
}

impl<T> Ring<T> {
    fn new(len: usize, slot_ns: u64, now: Timestamp, fill: impl FnMut() -> T) -> Self {
        let slots: Vec<T> = std::iter::repeat_with(fill).take(len).collect();
        Ring { slots: slots.into_boxed_slice(), slot_ns, head: now.as_nanos() / slot_ns }
    }

    fn epoch(&self, now: Timestamp) -> u64 {
        now.as_nanos() / self.slot_ns
    }

    fn index(&self, epoch: u64) -> usize {
        (epoch % self.slots.len() as u64) as usize
    }

    fn oldest(&self) -> u64 {
        self.head.saturating_sub(self.slots.len() as u64 - 1)
    }

    /// Moves the head forward to `epoch`, resetting every slot that is reused.
    fn advance(&mut self, epoch: u64, mut reset: impl FnMut(&mut T)) {
        if epoch <= self.head {
            return;
        }
        let steps = (epoch - self.head).min(self.slots.len() as u64);
        for e in (epoch + 1 - steps)..=epoch {
            let i = self.index(e);
            reset(&mut self.slots[i]);
        }
        self.head = epoch;
    }

    /// The slot being filled (a late sample from before the head lands in the head slot).
    fn head_mut(&mut self) -> &mut T {
        let i = self.index(self.head);
        &mut self.slots[i]
    }

    fn get(&self, epoch: u64) -> Option<&T> {
        (epoch <= self.head && epoch >= self.oldest()).then(|| &self.slots[self.index(epoch)])
    }

    /// Slots for epochs `from..=to` that the ring still holds.
    fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &T> {
        let from = from.max(self.oldest());
        let to = to.min(self.head);
        (from..=to).filter(move |_| from <= to).map(move |e| &self.slots[self.index(e)])
    }
}

/// An exponentially weighted moving average fed once per fine slot.
#[derive(Debug, Clone, Copy)]
struct Ewma {
    value: Option<f64>,
    keep: f64,
}

impl Ewma {
    fn new(half_life: Duration) -> Self {
        let half_life_ns = duration_nanos(half_life).max(1) as f64;
        let keep = 0.5f64.powf(FINE_SLOT_NS as f64 / half_life_ns);
        Ewma { value: None, keep }
    }

    /// One slot closed with `sample`, then `idle` slots passed that all read `idle_sample`.
    fn feed(&self, sample: f64, idle: u64, idle_sample: f64) -> Option<f64> {
        let after_one = match self.value {
            None => sample,
            Some(v) => v * self.keep + sample * (1.0 - self.keep),
        };
        let decay = self.keep.powi(i32::try_from(idle).unwrap_or(i32::MAX));
        Some(idle_sample + (after_one - idle_sample) * decay)
    }
}

#[derive(Debug, Clone)]
struct Counts {
    total: f64,
    fine: Ring<f64>,
    coarse: Ring<f64>,
    ewma: Ewma,
}

impl Counts {
    fn new(now: Timestamp, half_life: Duration) -> Self {
        Counts {
            total: 0.0,
            fine: Ring::new(FINE_SLOTS, FINE_SLOT_NS, now, || 0.0),
            coarse: Ring::new(COARSE_SLOTS, COARSE_SLOT_NS, now, || 0.0),
            ewma: Ewma::new(half_life),
        }
    }

    fn advance(&mut self, now: Timestamp) {
        let epoch = self.fine.epoch(now);
        if epoch > self.fine.head {
            let closed = *self.fine.head_mut() / (FINE_SLOT_NS as f64 / 1e9);
            self.ewma.value = self.ewma.feed(closed, epoch - self.fine.head - 1, 0.0);
            self.fine.advance(epoch, |v| *v = 0.0);
        }
        let coarse_epoch = self.coarse.epoch(now);
        self.coarse.advance(coarse_epoch, |v| *v = 0.0);
    }

    fn add(&mut self, now: Timestamp, amount: f64) {
        self.advance(now);
        self.total += amount;
        *self.fine.head_mut() += amount;
        *self.coarse.head_mut() += amount;
    }

    /// Per-second rates of the newest `out.len()` completed 100 ms slots, oldest first (at most
    /// the ring's length; the rest are left as they are).
    fn slot_rates(&self, now: Timestamp, out: &mut [f64]) {
        let current = self.fine.epoch(now);
        let n = out.len().min(FINE_SLOTS - 1);
        let per_second = 1e9 / FINE_SLOT_NS as f64;
        for (back, slot) in (1..=n as u64).rev().zip(out.iter_mut()) {
            // Slots past the head were never written (nothing arrived since).
            *slot = current.checked_sub(back).and_then(|e| self.fine.get(e)).map_or(0.0, |v| v * per_second);
        }
    }

    /// Per-second rate over completed slots covering `window`.
    fn rate(&self, now: Timestamp, window: Duration) -> f64 {
        let window_ns = duration_nanos(window.min(MAX_WINDOW)).max(FINE_SLOT_NS);
        let (ring, slot_ns) = if window_ns <= FINE_SLOT_NS * (FINE_SLOTS as u64 - 1) {
            (&self.fine, FINE_SLOT_NS)
        } else {
            (&self.coarse, COARSE_SLOT_NS)
        };
        let slots = window_ns.div_ceil(slot_ns);
        let current = ring.epoch(now);
        let sum: f64 = ring.range(current.saturating_sub(slots), current.saturating_sub(1)).sum();
        sum / (slots * slot_ns) as f64 * 1e9
    }

    fn ewma(&self, now: Timestamp) -> f64 {
        let epoch = self.fine.epoch(now);
        if epoch <= self.fine.head {
            return self.ewma.value.unwrap_or(0.0);
        }
        let closed = self.fine.get(self.fine.head).copied().unwrap_or(0.0) / (FINE_SLOT_NS as f64 / 1e9);
        self.ewma.feed(closed, epoch - self.fine.head - 1, 0.0).unwrap_or(0.0)
    }
}

#[derive(Debug, Clone)]
struct GaugeData {
    value: f64,
    /// Last value set in each fine slot (NaN where none was).
    fine: Ring<f64>,
    ewma: Ewma,
}

impl GaugeData {
    fn set(&mut self, now: Timestamp, value: f64) {
        let epoch = self.fine.epoch(now);
        if epoch > self.fine.head {
            let closed = *self.fine.head_mut();
            let closed = if closed.is_nan() { self.value } else { closed };
            self.ewma.value = self.ewma.feed(closed, epoch - self.fine.head - 1, self.value);
            self.fine.advance(epoch, |v| *v = f64::NAN);
        }
        self.value = value;
        *self.fine.head_mut() = value;
    }

    fn ewma(&self, now: Timestamp) -> f64 {
        let epoch = self.fine.epoch(now);
        if epoch <= self.fine.head {
            return self.ewma.value.unwrap_or(self.value);
        }
        self.ewma.feed(self.value, epoch - self.fine.head - 1, self.value).unwrap_or(self.value)
    }

    fn mean(&self, now: Timestamp, window: Duration) -> Option<f64> {
        let slots = duration_nanos(window.min(Duration::from_secs(10))).div_ceil(FINE_SLOT_NS).max(1);
        let current = self.fine.epoch(now);
        let (sum, n) = self
            .fine
            .range(current.saturating_sub(slots - 1), current)
            .filter(|v| !v.is_nan())
            .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }
}

#[derive(Debug, Clone)]
struct HistogramData {
    counts: Counts,
    sum: f64,
    fine: Ring<Option<Histogram<u32>>>,
    coarse: Ring<Option<Histogram<u32>>>,
}

fn new_histogram() -> Option<Histogram<u32>> {
    // 2 significant figures, auto-resizing from a small range: memory grows only with the
    // spread of values actually seen.
    Histogram::new(HIST_SIGFIG).ok()
}

fn record_into(ring: &mut Ring<Option<Histogram<u32>>>, now: Timestamp, scaled: u64, n: u64) {
    let epoch = ring.epoch(now);
    ring.advance(epoch, |h| {
        if let Some(h) = h {
            h.reset();
        }
    });
    let slot = ring.head_mut();
    if slot.is_none() {
        *slot = new_histogram();
    }
    if let Some(h) = slot {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        // `record_n` grows an auto-resizing histogram; saturate only if growth is impossible.
        if h.record_n(scaled, n).is_err() {
            h.saturating_record_n(scaled, n);
        }
    }
}

impl HistogramData {
    fn record(&mut self, now: Timestamp, value: f64, sample_rate: f64) {
        let weight = 1.0 / sample_rate;
        self.counts.add(now, weight);
        self.sum += value * weight;
        let scaled = (value * HIST_SCALE).round().clamp(0.0, u64::MAX as f64) as u64;
        let n = (weight.round() as u64).max(1);
        record_into(&mut self.fine, now, scaled, n);
        record_into(&mut self.coarse, now, scaled, n);
    }

    fn quantiles(&self, now: Timestamp, window: Duration, qs: &[f64]) -> Option<Vec<f64>> {
        let window_ns = duration_nanos(window.min(MAX_WINDOW));
        let ring =
            if window_ns <= HIST_FINE_SLOT_NS * (HIST_FINE_SLOTS as u64 - 1) { &self.fine } else { &self.coarse };
        let slots = window_ns.div_ceil(ring.slot_ns).max(1);
        let current = ring.epoch(now);
        let mut merged: Option<Histogram<u32>> = None;
        for h in ring.range(current.saturating_sub(slots), current).flatten() {
            if h.is_empty() {
                continue;
            }
            match merged.as_mut() {
                None => merged = Some(h.clone()),
                Some(m) => {
                    // Both auto-resize, so adding cannot fail for lack of range.
                    let _ = m.add(h);
                }
            }
        }
        let merged = merged?;
        // The middle of the bucket holding the quantile: unbiased within the histogram's precision.
        Some(qs.iter().map(|q| merged.median_equivalent(merged.value_at_quantile(*q)) as f64 / HIST_SCALE).collect())
    }
}

#[derive(Debug, Clone)]
struct SetData {
    window: u64,
    members: hashbrown::HashSet<u64, foldhash::fast::FixedState>,
    last_window_unique: u64,
}

impl SetData {
    fn insert(&mut self, now: Timestamp, hash: u64, cap: usize) -> bool {
        let window = now.as_nanos() / SET_WINDOW_NS;
        if window > self.window {
            self.last_window_unique = if window == self.window + 1 { self.members.len() as u64 } else { 0 };
            self.members.clear();
            self.window = window;
        }
        if self.members.len() >= cap && !self.members.contains(&hash) {
            return false;
        }
        self.members.insert(hash);
        true
    }

    fn unique(&self, now: Timestamp) -> u64 {
        let window = now.as_nanos() / SET_WINDOW_NS;
        match window.saturating_sub(self.window) {
            0 => self.last_window_unique.max(self.members.len() as u64),
            1 => self.members.len() as u64,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
enum SeriesData {
    Counter(Counts),
    Gauge(GaugeData),
    Histogram(Box<HistogramData>),
    Set(Box<SetData>),
}

/// Identity and labels of one series.
#[derive(Debug, Clone)]
pub struct SeriesInfo {
    /// Metric name (shared: a copy for `/metrics` costs a reference count, not an allocation).
    pub name: Arc<str>,
    /// What it measures.
    pub kind: MetricKind,
    /// Tags, sorted and without duplicates, each as sent (`key:value` or `key`).
    pub tags: Arc<[Box<str>]>,
    /// From the `class:` tag, when it names a traffic class.
    pub class: Option<TrafficClass>,
    /// From the `wedding:` tag.
    pub wedding: Option<Box<str>>,
    /// From the `region:` tag.
    pub region: Option<Box<str>>,
    /// Made by the agent itself (host metrics), not by a client; exempt from the series cap.
    pub internal: bool,
    /// When the series was made.
    pub created: Timestamp,
    /// When it was last written.
    pub last_seen: Timestamp,
    /// The inputs that have written it, one bit each in the caller's numbering
    /// ([`MetricStore::record_keyed_from`]): the daemon's listeners, so that a reader of the
    /// series knows whose losses it shares.
    pub sources: u8,
}

impl SeriesInfo {
    /// The tags as `(key, value)`; a bare tag has an empty value.
    pub fn tag_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|t| t.split_once(':').unwrap_or((t, "")))
    }
}

#[derive(Debug, Clone)]
struct Series {
    hash: u64,
    /// The tags exactly as the line that made the series sent them: clients send the same
    /// order every time, so one comparison usually finds the series.
    sent_tags: Box<str>,
    info: SeriesInfo,
    data: SeriesData,
}

/// A read-only view of one series at a moment.
#[derive(Debug, Clone, Copy)]
pub struct SeriesView<'a> {
    series: &'a Series,
    id: SeriesId,
    now: Timestamp,
}

impl<'a> SeriesView<'a> {
    /// The series's id.
    pub fn id(&self) -> SeriesId {
        self.id
    }

    /// Identity and labels.
    pub fn info(&self) -> &'a SeriesInfo {
        &self.series.info
    }

    /// Counters: sum of all increments (scaled by sample rate). Timers, histograms and
    /// distributions: number of values. Gauges: current value. Sets: distinct members in the
    /// latest complete 10 s window (or the current one, if larger).
    pub fn total(&self) -> f64 {
        match &self.series.data {
            SeriesData::Counter(c) => c.total,
            SeriesData::Gauge(g) => g.value,
            SeriesData::Histogram(h) => h.counts.total,
            SeriesData::Set(s) => s.unique(self.now) as f64,
        }
    }

    /// Events per second over `window` (at most 60 s): counter increments, or histogram values.
    /// `None` for gauges and sets.
    pub fn rate(&self, window: Duration) -> Option<f64> {
        match &self.series.data {
            SeriesData::Counter(c) => Some(c.rate(self.now, window)),
            SeriesData::Histogram(h) => Some(h.counts.rate(self.now, window)),
            SeriesData::Gauge(_) | SeriesData::Set(_) => None,
        }
    }

    /// Counters and histograms: the event rate of each of the newest `out.len()` completed 100 ms
    /// slots, oldest first, written into `out` (at most 100 slots; a slot with nothing is 0).
    /// Returns whether it did: gauges and sets have no rates.
    pub fn slot_rates(&self, out: &mut [f64]) -> bool {
        match &self.series.data {
            SeriesData::Counter(c) => c.slot_rates(self.now, out),
            SeriesData::Histogram(h) => h.counts.slot_rates(self.now, out),
            SeriesData::Gauge(_) | SeriesData::Set(_) => return false,
        }
        true
    }

    /// The moving average of the event rate (counters, histograms) or of the level (gauges),
    /// fed every 100 ms, with the store's half-life. `None` for sets.
    pub fn ewma(&self) -> Option<f64> {
        match &self.series.data {
            SeriesData::Counter(c) => Some(c.ewma(self.now)),
            SeriesData::Histogram(h) => Some(h.counts.ewma(self.now)),
            SeriesData::Gauge(g) => Some(g.ewma(self.now)),
            SeriesData::Set(_) => None,
        }
    }

    /// Gauges: the mean of the levels set over `window` (at most 10 s).
    pub fn gauge_mean(&self, window: Duration) -> Option<f64> {
        match &self.series.data {
            SeriesData::Gauge(g) => g.mean(self.now, window),
            _ => None,
        }
    }

    /// Histograms: the values at quantiles `qs` (each in 0..=1) over at least `window` (at most
    /// 60 s), in the unit sent (milliseconds for timers). `None` when no value fell in the window.
    pub fn quantiles(&self, window: Duration, qs: &[f64]) -> Option<Vec<f64>> {
        match &self.series.data {
            SeriesData::Histogram(h) => h.quantiles(self.now, window, qs),
            _ => None,
        }
    }

    /// Histograms: sum of all values (scaled by sample rate).
    pub fn sum(&self) -> Option<f64> {
        match &self.series.data {
            SeriesData::Histogram(h) => Some(h.sum),
            _ => None,
        }
    }
}

/// A standing query of the store ([`MetricStore::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchId(u32);

/// Series of one name and kind that carry every one of some tags, kept up to date as series
/// are made and expired, so that reading them never walks the whole store.
#[derive(Debug, Clone)]
struct Watch {
    name: Box<str>,
    kind: MetricKind,
    tags: Box<[Box<str>]>,
    internal: bool,
    members: Vec<u32>,
}

impl Watch {
    fn matches(&self, info: &SeriesInfo) -> bool {
        info.kind == self.kind
            && *info.name == *self.name
            && (self.internal || !info.internal)
            && self.tags.iter().all(|t| info.tags.binary_search(t).is_ok())
    }
}

/// The series caps of a store split into shards ([`MetricStore::with_quota`]): each shard holds
/// its own series and counts them here, so [`StoreLimits::max_series`] and
/// [`StoreLimits::max_histogram_series`] hold across all the shards together.
#[derive(Debug, Default)]
pub struct SeriesQuota {
    app: AtomicUsize,
    histogram: AtomicUsize,
}

impl SeriesQuota {
    /// Application series held by every store that shares this quota.
    pub fn app_series(&self) -> usize {
        self.app.load(Ordering::Relaxed)
    }

    /// Application series with histograms held by every store that shares this quota.
    pub fn histogram_series(&self) -> usize {
        self.histogram.load(Ordering::Relaxed)
    }

    /// Takes one place under `limit`; `false` when none is left.
    fn take(counter: &AtomicUsize, limit: usize) -> bool {
        counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    fn give_back(counter: &AtomicUsize, n: usize) {
        if n > 0 {
            counter.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// The seed of every store's identity hash, so that a [`SeriesKey`] is the same in every store.
const IDENTITY_SEED: u64 = 0x5eed_ed6e;

/// Tags a line may carry before hashing its identity allocates.
const INLINE_TAGS: usize = 16;

/// The store. See the module docs.
#[derive(Debug)]
pub struct MetricStore {
    limits: StoreLimits,
    hasher: foldhash::fast::FixedState,
    table: HashTable<u32>,
    series: Vec<Series>,
    watches: Vec<Watch>,
    /// Application series held here (a shard counts only its own).
    app_series: usize,
    histogram_series: usize,
    /// The caps, shared with the other shards of the same store, if any.
    quota: Arc<SeriesQuota>,
    stats: StoreStats,
    /// Bumped whenever series are renumbered ([`MetricStore::expire_idle`] removed some).
    generation: u64,
}

const TAG_MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// A series identity, hashed once: the same whatever the order or repetition of the tags, so a
/// line is found without sorting them, and a store split into shards picks the shard by it and
/// hands it on ([`MetricStore::record_keyed`]) instead of hashing twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesKey {
    hash: u64,
    /// Distinct tags.
    distinct: usize,
}

impl SeriesKey {
    /// The key of the series named `name` of `kind` with `tags` (a StatsD tag list).
    pub fn of(name: &str, kind: MetricKind, tags: &str) -> SeriesKey {
        let hasher = foldhash::fast::FixedState::with_seed(IDENTITY_SEED);
        let mut h = hasher.build_hasher();
        name.hash(&mut h);
        kind.hash(&mut h);
        let mut combined = h.finish();
        let mut inline = [(0u64, ""); INLINE_TAGS];
        let mut spill: Vec<(u64, &str)> = Vec::new();
        let mut n = 0usize;
        for tag in raw_tags(tags) {
            let entry = (hasher.hash_one(tag), tag);
            match inline.get_mut(n) {
                Some(slot) => *slot = entry,
                None => {
                    if spill.is_empty() {
                        spill.extend_from_slice(&inline);
                    }
                    spill.push(entry);
                }
            }
            n += 1;
        }
        let entries = if n <= INLINE_TAGS { &mut inline[..n] } else { &mut spill[..] };
        if n > INLINE_TAGS {
            // Equal tags sort next to each other (by hash, then text).
            entries.sort_unstable();
        }
        let mut distinct = 0usize;
        for (i, &entry) in entries.iter().enumerate() {
            // A repeated tag counts once: a few comparisons of hashes for the usual handful of
            // tags, neighbours only once sorted.
            let seen = if n > INLINE_TAGS {
                i > 0 && entries.get(i - 1) == Some(&entry)
            } else {
                entries[..i].iter().any(|e| e.0 == entry.0 && e.1 == entry.1)
            };
            if seen {
                continue;
            }
            distinct += 1;
            // Wrapping addition of independent tag hashes is order-independent.
            combined = combined.wrapping_add(entry.0.rotate_left(17) ^ TAG_MIX);
        }
        SeriesKey { hash: combined, distinct }
    }

    /// The identity's hash, the same in every store.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

fn raw_tags(tags: &str) -> impl Iterator<Item = &str> + Clone {
    crate::statsd::fields(tags, b',').filter(|t| !t.is_empty())
}

/// The indexes of the series `watch` matches.
fn matching(series: &[Series], watch: &Watch) -> Vec<u32> {
    series
        .iter()
        .enumerate()
        .filter(|(_, s)| watch.matches(&s.info))
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect()
}

impl MetricStore {
    /// An empty store with these limits.
    pub fn new(limits: StoreLimits) -> Self {
        Self::with_quota(limits, Arc::default())
    }

    /// An empty shard of a larger store: its series count against `quota`, which the other
    /// shards share, so the caps in `limits` hold for all of them together.
    pub fn with_quota(limits: StoreLimits, quota: Arc<SeriesQuota>) -> Self {
        MetricStore {
            limits,
            hasher: foldhash::fast::FixedState::with_seed(IDENTITY_SEED),
            table: HashTable::new(),
            series: Vec::new(),
            watches: Vec::new(),
            app_series: 0,
            histogram_series: 0,
            quota,
            stats: StoreStats::default(),
            generation: 0,
        }
    }

    /// The limits the store enforces.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Refusal and expiry counts.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Number of series held (application and internal).
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether the store holds no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Number of application (client-sent) series held here (a shard: its own only).
    pub fn app_series(&self) -> usize {
        self.app_series
    }

    /// Records one parsed StatsD line.
    pub fn record(&mut self, now: Timestamp, line: &Line<'_>) -> Result<SeriesId, RecordError> {
        self.record_keyed(now, line, SeriesKey::of(line.name, line.kind, line.tags))
    }

    /// [`MetricStore::record_keyed`], noting in the series's [`SeriesInfo::sources`] that input
    /// `source` (0–7) wrote it.
    pub fn record_keyed_from(
        &mut self,
        now: Timestamp,
        line: &Line<'_>,
        key: SeriesKey,
        source: u8,
    ) -> Result<SeriesId, RecordError> {
        let id = self.record_keyed(now, line, key)?;
        if let Some(series) = self.series.get_mut(id.0 as usize) {
            series.info.sources |= 1u8.checked_shl(u32::from(source)).unwrap_or(0);
        }
        Ok(id)
    }

    /// Records one parsed StatsD line whose key the caller already has: `key` must be
    /// [`SeriesKey::of`] the line's name, kind and tags.
    pub fn record_keyed(&mut self, now: Timestamp, line: &Line<'_>, key: SeriesKey) -> Result<SeriesId, RecordError> {
        debug_assert_eq!(key, SeriesKey::of(line.name, line.kind, line.tags));
        let id = self.find_or_create(now, key, line.name, line.kind, line.tags, false)?;
        let members_cap = self.limits.max_set_members;
        let series = &mut self.series[id.0 as usize];
        series.info.last_seen = series.info.last_seen.max(now);
        match &mut series.data {
            SeriesData::Counter(c) => {
                let amount: f64 = line.numbers().sum();
                c.add(now, amount / line.sample_rate);
            }
            SeriesData::Gauge(g) => {
                let value = match line.gauge_update() {
                    GaugeUpdate::Set(v) => v,
                    GaugeUpdate::Delta(d) => g.value + d,
                };
                if !value.is_finite() {
                    return Err(RecordError::BadValue);
                }
                g.set(now, value);
            }
            SeriesData::Histogram(h) => {
                for value in line.numbers() {
                    h.record(now, value, line.sample_rate);
                }
            }
            SeriesData::Set(s) => {
                let hash = self.hasher.hash_one(line.values);
                if !s.insert(now, hash, members_cap) {
                    self.stats.set_members_dropped += 1;
                }
            }
        }
        Ok(id)
    }

    /// Sets an internal gauge (the agent's own measurements, such as host metrics).
    /// `tags` is a StatsD-style tag list (`core:3,device:eth0`). Internal series do not count
    /// against the series cap.
    pub fn set_internal_gauge(&mut self, now: Timestamp, name: &str, tags: &str, value: f64) -> Option<SeriesId> {
        if !value.is_finite() {
            return None;
        }
        let key = SeriesKey::of(name, MetricKind::Gauge, tags);
        let id = self.find_or_create(now, key, name, MetricKind::Gauge, tags, true).ok()?;
        let series = &mut self.series[id.0 as usize];
        series.info.last_seen = series.info.last_seen.max(now);
        if let SeriesData::Gauge(g) = &mut series.data {
            g.set(now, value);
        }
        Some(id)
    }

    fn find_or_create(
        &mut self,
        now: Timestamp,
        key: SeriesKey,
        name: &str,
        kind: MetricKind,
        tags: &str,
        internal: bool,
    ) -> Result<SeriesId, RecordError> {
        if let Some(id) = self.find(key, name, kind, tags) {
            return Ok(id);
        }
        let hash = key.hash;
        let mut canonical: Vec<&str> = raw_tags(tags).collect();
        canonical.sort_unstable();
        canonical.dedup();
        let Ok(index) = u32::try_from(self.series.len()) else {
            self.stats.refused_series += 1;
            return Err(RecordError::SeriesLimit { limit: self.limits.max_series });
        };
        if !internal {
            if !SeriesQuota::take(&self.quota.app, self.limits.max_series) {
                self.stats.refused_series += 1;
                return Err(RecordError::SeriesLimit { limit: self.limits.max_series });
            }
            if kind.is_histogram() && !SeriesQuota::take(&self.quota.histogram, self.limits.max_histogram_series) {
                SeriesQuota::give_back(&self.quota.app, 1);
                self.stats.refused_histogram_series += 1;
                return Err(RecordError::HistogramSeriesLimit { limit: self.limits.max_histogram_series });
            }
        }
        let tag_of =
            |key: &str| canonical.iter().find_map(|t| t.split_once(':').filter(|(k, _)| *k == key).map(|(_, v)| v));
        let info = SeriesInfo {
            name: name.into(),
            kind,
            tags: canonical.iter().map(|t| Box::<str>::from(*t)).collect(),
            class: tag_of("class").and_then(|c| c.parse().ok()),
            wedding: tag_of("wedding").map(Box::from),
            region: tag_of("region").map(Box::from),
            internal,
            created: now,
            last_seen: now,
            sources: 0,
        };
        let half_life = self.limits.ewma_half_life;
        let data = match kind {
            MetricKind::Counter => SeriesData::Counter(Counts::new(now, half_life)),
            MetricKind::Gauge => SeriesData::Gauge(GaugeData {
                value: 0.0,
                fine: Ring::new(FINE_SLOTS, FINE_SLOT_NS, now, || f64::NAN),
                ewma: Ewma::new(half_life),
            }),
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => {
                SeriesData::Histogram(Box::new(HistogramData {
                    counts: Counts::new(now, half_life),
                    sum: 0.0,
                    fine: Ring::new(HIST_FINE_SLOTS, HIST_FINE_SLOT_NS, now, || None),
                    coarse: Ring::new(HIST_COARSE_SLOTS, HIST_COARSE_SLOT_NS, now, || None),
                }))
            }
            MetricKind::Set => SeriesData::Set(Box::new(SetData {
                window: now.as_nanos() / SET_WINDOW_NS,
                members: hashbrown::HashSet::with_hasher(foldhash::fast::FixedState::with_seed(7)),
                last_window_unique: 0,
            })),
        };
        for watch in &mut self.watches {
            if watch.matches(&info) {
                watch.members.push(index);
            }
        }
        self.series.push(Series { hash, sent_tags: tags.into(), info, data });
        let series = &self.series;
        self.table.insert_unique(hash, index, |&i| series[i as usize].hash);
        if !internal {
            self.app_series += 1;
            if kind.is_histogram() {
                self.histogram_series += 1;
            }
        }
        Ok(SeriesId(index))
    }

    fn find(&self, key: SeriesKey, name: &str, kind: MetricKind, tags: &str) -> Option<SeriesId> {
        self.table
            .find(key.hash, |&i| {
                let s = &self.series[i as usize];
                s.hash == key.hash
                    && s.info.kind == kind
                    && s.info.tags.len() == key.distinct
                    && &*s.info.name == name
                    && (*s.sent_tags == *tags
                        || raw_tags(tags).all(|t| s.info.tags.binary_search_by(|probe| (**probe).cmp(t)).is_ok()))
            })
            .map(|&i| SeriesId(i))
    }

    /// Looks a series up by name, kind and tags (in any order).
    pub fn lookup(&self, name: &str, kind: MetricKind, tags: &str) -> Option<SeriesId> {
        self.find(SeriesKey::of(name, kind, tags), name, kind, tags)
    }

    /// A view of one series as of `now`.
    pub fn view(&self, id: SeriesId, now: Timestamp) -> Option<SeriesView<'_>> {
        self.series.get(id.0 as usize).map(|series| SeriesView { series, id, now })
    }

    /// Changes whenever [`SeriesId`]s are renumbered (series expired). Series are only ever
    /// appended otherwise, so a reader that walks the store in several short visits
    /// ([`MetricStore::iter_from`]) sees each series once if the generation did not change
    /// between its visits.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// At most `count` series from index `start` (in [`MetricStore::iter`]'s order), as of
    /// `now`.
    pub fn iter_from(&self, now: Timestamp, start: usize, count: usize) -> impl Iterator<Item = SeriesView<'_>> {
        let end = start.saturating_add(count).min(self.series.len());
        let range = self.series.get(start..end).unwrap_or_default();
        range.iter().zip(start..).map(move |(series, i)| SeriesView { series, id: SeriesId(i as u32), now })
    }

    /// Every series as of `now`, in no particular order.
    pub fn iter(&self, now: Timestamp) -> impl Iterator<Item = SeriesView<'_>> {
        self.series.iter().enumerate().map(move |(i, series)| SeriesView { series, id: SeriesId(i as u32), now })
    }

    /// Starts watching the series named `name` of `kind` that carry every tag in `tags` (each
    /// as sent, `key:value` or `key`), internal ones too when `internal`: the store indexes
    /// them as they are made (and expired), so [`MetricStore::watched`] reads them without
    /// walking the store. Watching the same thing twice gives the same id.
    pub fn watch(&mut self, name: &str, kind: MetricKind, tags: &[&str], internal: bool) -> WatchId {
        let mut tags: Vec<Box<str>> = tags.iter().map(|t| Box::from(*t)).collect();
        tags.sort_unstable();
        tags.dedup();
        let found = self
            .watches
            .iter()
            .position(|w| *w.name == *name && w.kind == kind && w.internal == internal && *w.tags == *tags.as_slice());
        let index = found.unwrap_or_else(|| {
            let mut watch =
                Watch { name: name.into(), kind, tags: tags.into_boxed_slice(), internal, members: Vec::new() };
            watch.members = matching(&self.series, &watch);
            self.watches.push(watch);
            self.watches.len() - 1
        });
        WatchId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// The series a watch holds now, as of `now` (none for an id from another store).
    pub fn watched(&self, watch: WatchId, now: Timestamp) -> impl Iterator<Item = SeriesView<'_>> {
        let members = self.watches.get(watch.0 as usize).map_or(&[][..], |w| w.members.as_slice());
        members
            .iter()
            .filter_map(move |&i| self.series.get(i as usize).map(|series| SeriesView { series, id: SeriesId(i), now }))
    }

    /// The `n` application series with the highest event rate over the last 10 s, busiest first.
    pub fn busiest(&self, now: Timestamp, n: usize) -> Vec<(SeriesView<'_>, f64)> {
        let mut ranked: Vec<(SeriesView<'_>, f64)> = self
            .iter(now)
            .filter(|v| !v.info().internal)
            .filter_map(|v| v.rate(Duration::from_secs(10)).map(|r| (v, r)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(n);
        ranked
    }

    /// Removes series not written for longer than `ttl`; returns how many were removed.
    /// Invalidates every [`SeriesId`] handed out before.
    pub fn expire_idle(&mut self, now: Timestamp, ttl: Duration) -> usize {
        let before = self.series.len();
        self.series.retain(|s| now.saturating_since(s.info.last_seen) <= ttl);
        let removed = before - self.series.len();
        if removed > 0 {
            self.table.clear();
            let series = &self.series;
            for (i, s) in series.iter().enumerate() {
                self.table.insert_unique(s.hash, i as u32, |&j| series[j as usize].hash);
            }
            for watch in &mut self.watches {
                watch.members = matching(series, watch);
            }
            let app_series = series.iter().filter(|s| !s.info.internal).count();
            let histogram_series = series.iter().filter(|s| !s.info.internal && s.info.kind.is_histogram()).count();
            SeriesQuota::give_back(&self.quota.app, self.app_series - app_series);
            SeriesQuota::give_back(&self.quota.histogram, self.histogram_series - histogram_series);
            self.app_series = app_series;
            self.histogram_series = histogram_series;
            self.stats.expired_series += removed as u64;
            self.generation += 1;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::parse_line;
    use proptest::prelude::*;

    fn ms(millis: u64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    fn record(store: &mut MetricStore, now: Timestamp, text: &str) -> Result<SeriesId, RecordError> {
        let line = parse_line(text.as_bytes()).expect("test line parses");
        store.record(now, &line)
    }

    #[test]
    fn counter_rates_over_windows() {
        let mut store = MetricStore::new(StoreLimits::default());
        // 10 increments per 100 ms for 61 s: 100/s.
        let mut id = None;
        for tick in 0..610 {
            id = Some(record(&mut store, ms(tick * 100), "req:10|c|#class:media").unwrap());
        }
        let view = store.view(id.unwrap(), ms(61_000)).unwrap();
        for window in [1, 10, 60] {
            let rate = view.rate(Duration::from_secs(window)).unwrap();
            assert!((rate - 100.0).abs() < 1e-9, "rate over {window}s = {rate}");
        }
        assert_eq!(view.total(), 6100.0);
        assert_eq!(view.info().class, Some(TrafficClass::Media));
        // The EWMA of a steady rate is that rate.
        assert!((view.ewma().unwrap() - 100.0).abs() < 1.0, "{:?}", view.ewma());
        // Ten quiet seconds later the short windows are empty and the EWMA decays by 2^-2.
        let later = store.view(id.unwrap(), ms(71_000)).unwrap();
        assert_eq!(later.rate(Duration::from_secs(1)), Some(0.0));
        assert_eq!(later.rate(Duration::from_secs(10)), Some(0.0));
        let ewma = later.ewma().unwrap();
        assert!((ewma - 25.0).abs() < 1.5, "ewma after 2 half-lives: {ewma}");
    }

    #[test]
    fn slot_rates_are_each_completed_slots_rate_oldest_first() {
        let mut store = MetricStore::new(StoreLimits::default());
        // Slots of 100 ms: 1, 2, 3, 4 increments, then nothing for two slots.
        let mut id = None;
        for (slot, n) in [1u64, 2, 3, 4].iter().enumerate() {
            for _ in 0..*n {
                id = Some(record(&mut store, ms(slot as u64 * 100 + 10), "req:1|c").unwrap());
            }
        }
        let id = id.unwrap();
        let mut out = [f64::NAN; 6];
        // At 650 ms the slots 0–5 are complete (4 and 5 empty; nothing advanced the ring there).
        assert!(store.view(id, ms(650)).unwrap().slot_rates(&mut out));
        assert_eq!(out, [10.0, 20.0, 30.0, 40.0, 0.0, 0.0]);
        // The slot being filled is not read: at 350 ms the newest is slot 2.
        let mut three = [f64::NAN; 3];
        assert!(store.view(id, ms(350)).unwrap().slot_rates(&mut three));
        assert_eq!(three, [10.0, 20.0, 30.0]);
        // Before the first slot: zeros, not garbage.
        let mut early = [f64::NAN; 4];
        assert!(store.view(id, ms(150)).unwrap().slot_rates(&mut early));
        assert_eq!(early, [0.0, 0.0, 0.0, 10.0]);
        let gauge = record(&mut store, ms(0), "level:1|g").unwrap();
        assert!(!store.view(gauge, ms(650)).unwrap().slot_rates(&mut out));
    }

    #[test]
    fn a_series_remembers_the_inputs_that_wrote_it() {
        let mut store = MetricStore::new(StoreLimits::default());
        let line = parse_line(b"req:1|c").unwrap();
        let key = SeriesKey::of(line.name, line.kind, line.tags);
        let id = store.record_keyed_from(ms(0), &line, key, 0).unwrap();
        assert_eq!(store.view(id, ms(0)).unwrap().info().sources, 0b01);
        store.record_keyed_from(ms(1), &line, key, 1).unwrap();
        store.record_keyed(ms(2), &line, key).unwrap();
        assert_eq!(store.view(id, ms(2)).unwrap().info().sources, 0b11);
        // An input number past the mask's eight bits marks nothing (and does not panic).
        store.record_keyed_from(ms(3), &line, key, 200).unwrap();
        assert_eq!(store.view(id, ms(3)).unwrap().info().sources, 0b11);
    }

    #[test]
    fn sample_rate_scales_counts() {
        let mut store = MetricStore::new(StoreLimits::default());
        let id = record(&mut store, ms(0), "req:1|c|@0.1").unwrap();
        assert_eq!(store.view(id, ms(0)).unwrap().total(), 10.0);
        let id = record(&mut store, ms(0), "lat:5|ms|@0.5").unwrap();
        assert_eq!(store.view(id, ms(0)).unwrap().total(), 2.0);
    }

    #[test]
    fn timer_quantiles_over_windows() {
        let mut store = MetricStore::new(StoreLimits::default());
        let mut id = None;
        // 1..=100 ms every second for 30 s, then 1000 ms values for the last 5 s.
        for second in 0..35u64 {
            for v in 1..=100u64 {
                let value = if second >= 30 { 1000 } else { v };
                id = Some(record(&mut store, ms(second * 1000 + v), &format!("lat:{value}|ms")).unwrap());
            }
        }
        let view = store.view(id.unwrap(), ms(35_000)).unwrap();
        let long = view.quantiles(Duration::from_secs(60), &[0.5, 0.99]).unwrap();
        // The 1750th of 3500 values: rank 1750 of the 3000 uniform ones, 58.3 ms (2 significant figures).
        assert!((long[0] - 58.3).abs() <= 1.0, "p50 over 60s {long:?}");
        assert!((long[1] - 1000.0).abs() <= 10.0, "p99 over 60s {long:?}");
        let short = view.quantiles(Duration::from_secs(5), &[0.5]).unwrap();
        assert!((short[0] - 1000.0).abs() <= 10.0, "p50 over 5s {short:?}");
        assert_eq!(view.total(), 3500.0);
        assert!((view.sum().unwrap() - (30.0 * 5050.0 + 5.0 * 100_000.0)).abs() < 1e-6);
        // Two minutes later nothing is in any window.
        let quiet = store.view(id.unwrap(), ms(160_000)).unwrap();
        assert_eq!(quiet.quantiles(Duration::from_secs(60), &[0.5]), None);
    }

    #[test]
    fn fractional_timer_values_keep_precision() {
        let mut store = MetricStore::new(StoreLimits::default());
        let id = record(&mut store, ms(0), "lat:0.25|ms").unwrap();
        let q = store.view(id, ms(0)).unwrap().quantiles(Duration::from_secs(1), &[0.5]).unwrap();
        assert!((q[0] - 0.25).abs() < 0.01, "{q:?}");
    }

    #[test]
    fn gauges_set_and_delta() {
        let mut store = MetricStore::new(StoreLimits::default());
        record(&mut store, ms(0), "queue:10|g").unwrap();
        record(&mut store, ms(50), "queue:+5|g").unwrap();
        let id = record(&mut store, ms(150), "queue:-3|g").unwrap();
        let view = store.view(id, ms(150)).unwrap();
        assert_eq!(view.total(), 12.0);
        assert_eq!(view.rate(Duration::from_secs(1)), None);
        let mean = view.gauge_mean(Duration::from_millis(200)).unwrap();
        assert!((mean - 13.5).abs() < 1e-9, "mean of 15 and 12: {mean}");
    }

    #[test]
    fn sets_count_distinct_members_per_window() {
        let mut store = MetricStore::new(StoreLimits::default());
        let mut id = None;
        for user in ["a", "b", "a", "c", "b"] {
            id = Some(record(&mut store, ms(1_000), &format!("users:{user}|s")).unwrap());
        }
        assert_eq!(store.view(id.unwrap(), ms(2_000)).unwrap().total(), 3.0);
        // In the next window the last complete window's count is reported.
        assert_eq!(store.view(id.unwrap(), ms(12_000)).unwrap().total(), 3.0);
        assert_eq!(store.view(id.unwrap(), ms(25_000)).unwrap().total(), 0.0);
    }

    #[test]
    fn set_members_are_capped() {
        let limits = StoreLimits { max_set_members: 2, ..StoreLimits::default() };
        let mut store = MetricStore::new(limits);
        let mut id = None;
        for user in ["a", "b", "c", "d"] {
            id = Some(record(&mut store, ms(0), &format!("users:{user}|s")).unwrap());
        }
        assert_eq!(store.view(id.unwrap(), ms(0)).unwrap().total(), 2.0);
        assert_eq!(store.stats().set_members_dropped, 2);
    }

    #[test]
    fn tag_order_and_duplicates_do_not_split_series() {
        let mut store = MetricStore::new(StoreLimits::default());
        let a = record(&mut store, ms(0), "req:1|c|#region:eu,class:media").unwrap();
        let b = record(&mut store, ms(0), "req:1|c|#class:media,region:eu").unwrap();
        let c = record(&mut store, ms(0), "req:1|c|#class:media,region:eu,class:media").unwrap();
        let d = record(&mut store, ms(0), "req:1|c|#class:media").unwrap();
        let e = record(&mut store, ms(0), "req:1|g|#class:media").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_ne!(a, d);
        assert_ne!(d, e);
        assert_eq!(store.len(), 3);
        assert_eq!(store.view(a, ms(0)).unwrap().total(), 3.0);
        assert_eq!(store.lookup("req", MetricKind::Counter, "region:eu,class:media"), Some(a));
        let info = store.view(a, ms(0)).unwrap().info();
        assert_eq!(info.region.as_deref(), Some("eu"));
        assert_eq!(&*info.tags, &["class:media".into(), "region:eu".into()] as &[Box<str>]);
    }

    #[test]
    fn series_keys_ignore_tag_order_and_repetition() {
        let h = |tags: &str| SeriesKey::of("req", MetricKind::Counter, tags);
        assert_eq!(h("region:eu,class:media"), h("class:media,region:eu"));
        assert_eq!(h("region:eu,class:media"), h("class:media,,region:eu,class:media"));
        assert_ne!(h("region:eu,class:media"), h("class:media"));
        assert_ne!(h(""), SeriesKey::of("req", MetricKind::Gauge, ""));
        // Twenty tags (past the inline ones) in two orders, one repeated.
        let tags: Vec<String> = (0..20).map(|i| format!("t{i}:v")).collect();
        let mut reversed = tags.clone();
        reversed.reverse();
        reversed.push("t3:v".into());
        assert_eq!(h(&tags.join(",")), h(&reversed.join(",")));
        let mut store = MetricStore::new(StoreLimits::default());
        let a = record(&mut store, ms(0), &format!("req:1|c|#{}", tags.join(","))).unwrap();
        let b = record(&mut store, ms(0), &format!("req:1|c|#{}", reversed.join(","))).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn shards_sharing_a_quota_hold_the_caps_together() {
        let limits = StoreLimits { max_series: 3, max_histogram_series: 1, ..StoreLimits::default() };
        let quota = Arc::new(SeriesQuota::default());
        let mut one = MetricStore::with_quota(limits, quota.clone());
        let mut two = MetricStore::with_quota(limits, quota.clone());
        record(&mut one, ms(0), "a:1|c").unwrap();
        record(&mut two, ms(0), "b:1|ms").unwrap();
        assert_eq!(
            record(&mut one, ms(0), "c:1|h"),
            Err(RecordError::HistogramSeriesLimit { limit: 1 }),
            "the other shard holds the only histogram series"
        );
        // The refused histogram did not keep its place under the series cap.
        record(&mut one, ms(0), "c:1|c").unwrap();
        assert_eq!(record(&mut two, ms(0), "d:1|c"), Err(RecordError::SeriesLimit { limit: 3 }));
        assert_eq!((quota.app_series(), quota.histogram_series()), (3, 1));
        assert_eq!((one.app_series(), two.app_series()), (2, 1));
        // Internal series never count.
        assert!(two.set_internal_gauge(ms(0), "host.cpu.busy", "", 0.5).is_some());
        // Expiry in one shard gives its places back to all.
        assert_eq!(two.expire_idle(ms(120_000), Duration::from_secs(60)), 2);
        assert_eq!((quota.app_series(), quota.histogram_series()), (2, 0));
        record(&mut one, ms(120_000), "e:1|ms").unwrap();
        assert_eq!(one.stats().refused_histogram_series, 1);
        assert_eq!(two.stats().refused_series, 1);
    }

    #[test]
    fn cardinality_cap_refuses_and_counts() {
        let limits = StoreLimits { max_series: 3, max_histogram_series: 1, ..StoreLimits::default() };
        let mut store = MetricStore::new(limits);
        record(&mut store, ms(0), "a:1|c").unwrap();
        record(&mut store, ms(0), "lat:1|ms").unwrap();
        assert_eq!(record(&mut store, ms(0), "lat2:1|h"), Err(RecordError::HistogramSeriesLimit { limit: 1 }));
        record(&mut store, ms(0), "b:1|c").unwrap();
        assert_eq!(record(&mut store, ms(0), "c:1|c"), Err(RecordError::SeriesLimit { limit: 3 }));
        // Existing series still take samples at the cap.
        assert!(record(&mut store, ms(0), "a:1|c").is_ok());
        // Internal series are exempt.
        assert!(store.set_internal_gauge(ms(0), "host.cpu.busy", "", 0.5).is_some());
        assert_eq!(store.stats().refused_series, 1);
        assert_eq!(store.stats().refused_histogram_series, 1);
        assert_eq!(store.app_series(), 3);
    }

    #[test]
    fn idle_series_expire_and_free_room() {
        let limits = StoreLimits { max_series: 2, ..StoreLimits::default() };
        let mut store = MetricStore::new(limits);
        record(&mut store, ms(0), "old:1|c").unwrap();
        record(&mut store, ms(50_000), "fresh:1|c").unwrap();
        assert!(record(&mut store, ms(50_000), "new:1|c").is_err());
        assert_eq!(store.expire_idle(ms(61_000), Duration::from_secs(30)), 1);
        let id = record(&mut store, ms(61_000), "new:1|c").unwrap();
        assert_eq!(&*store.view(id, ms(61_000)).unwrap().info().name, "new");
        // Lookups still work after re-indexing.
        let fresh = store.lookup("fresh", MetricKind::Counter, "").unwrap();
        assert_eq!(&*store.view(fresh, ms(61_000)).unwrap().info().name, "fresh");
        assert_eq!(store.stats().expired_series, 1);
    }

    #[test]
    fn busiest_ranks_by_rate() {
        let mut store = MetricStore::new(StoreLimits::default());
        for tick in 0..20 {
            record(&mut store, ms(tick * 100), "hot:100|c").unwrap();
            record(&mut store, ms(tick * 100), "warm:10|c").unwrap();
            record(&mut store, ms(tick * 100), "level:10|g").unwrap();
        }
        let busiest = store.busiest(ms(2_000), 2);
        let names: Vec<&str> = busiest.iter().map(|(v, _)| &*v.info().name).collect();
        assert_eq!(names, vec!["hot", "warm"]);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut store = MetricStore::new(StoreLimits::default());
        record(&mut store, ms(10_000), "a:1|c").unwrap();
        let id = record(&mut store, ms(5_000), "a:1|c").unwrap();
        assert_eq!(store.view(id, ms(10_000)).unwrap().total(), 2.0);
    }

    #[test]
    fn a_watch_holds_exactly_the_matching_series_through_creation_and_expiry() {
        let mut store = MetricStore::new(StoreLimits::default());
        let names = |store: &MetricStore, watch: WatchId| {
            let mut seen: Vec<String> =
                store.watched(watch, ms(0)).map(|v| format!("{}|{}", v.info().name, v.info().tags.join(","))).collect();
            seen.sort();
            seen
        };
        // Made before the watch: found by its first scan.
        record(&mut store, ms(0), "req:1|c|#service:checkout,class:media").unwrap();
        record(&mut store, ms(0), "req:1|c|#service:search").unwrap();
        record(&mut store, ms(0), "req:1|g|#service:checkout").unwrap();
        let watch = store.watch("req", MetricKind::Counter, &["service:checkout"], false);
        assert_eq!(names(&store, watch), ["req|class:media,service:checkout"]);
        // Made after: indexed as it is made, whatever the order of its tags.
        record(&mut store, ms(1_000), "req:1|c|#class:wedding-critical,service:checkout").unwrap();
        record(&mut store, ms(1_000), "other:1|c|#service:checkout").unwrap();
        assert_eq!(
            names(&store, watch),
            ["req|class:media,service:checkout", "req|class:wedding-critical,service:checkout"]
        );
        // The same query twice is one watch; internal series only when asked for.
        assert_eq!(store.watch("req", MetricKind::Counter, &["service:checkout", "service:checkout"], false), watch);
        store.set_internal_gauge(ms(1_000), "host.cpu.busy", "", 0.5);
        let app_only = store.watch("host.cpu.busy", MetricKind::Gauge, &[], false);
        let with_internal = store.watch("host.cpu.busy", MetricKind::Gauge, &[], true);
        assert_eq!(store.watched(app_only, ms(0)).count(), 0);
        assert_eq!(store.watched(with_internal, ms(0)).count(), 1);
        // Expiry renumbers series: the watch follows, and the generation tells readers.
        let generation = store.generation();
        assert_eq!(store.iter_from(ms(0), 1, 2).count(), 2);
        assert_eq!(store.iter_from(ms(0), 5, 10).count(), 1);
        assert_eq!(store.iter_from(ms(0), 60, 10).count(), 0);
        assert_eq!(store.expire_idle(ms(20_000), Duration::from_secs(60)), 0);
        assert_eq!(store.generation(), generation);
        assert_eq!(store.expire_idle(ms(20_000), Duration::from_secs(19)), 3);
        assert_ne!(store.generation(), generation);
        assert_eq!(names(&store, watch), ["req|class:wedding-critical,service:checkout"]);
        assert_eq!(store.watched(with_internal, ms(0)).count(), 1);
        // A watch's view is the series's own: the same figures as a lookup.
        let id = store.lookup("req", MetricKind::Counter, "service:checkout,class:wedding-critical").unwrap();
        assert_eq!(store.watched(watch, ms(1_000)).next().map(|v| v.id()), Some(id));
        assert_eq!(store.watched(WatchId(99), ms(0)).count(), 0);
    }

    proptest! {
        #[test]
        fn memory_stays_bounded_whatever_is_sent(
            lines in proptest::collection::vec(("[a-d]{1,2}", 0u32..1000, prop::sample::select(vec!["c", "g", "ms", "h", "d", "s"]), "[a-c]{0,2}"), 1..200),
            step_ms in 0u64..5_000,
        ) {
            let limits = StoreLimits { max_series: 8, max_histogram_series: 3, ..StoreLimits::default() };
            let mut store = MetricStore::new(limits);
            let mut accepted = 0u64;
            let mut refused = 0u64;
            for (i, (name, value, kind, tag)) in lines.iter().enumerate() {
                let text = if tag.is_empty() { format!("{name}:{value}|{kind}") } else { format!("{name}:{value}|{kind}|#t:{tag}") };
                match record(&mut store, ms(i as u64 * step_ms), &text) {
                    Ok(_) => accepted += 1,
                    Err(RecordError::SeriesLimit { .. } | RecordError::HistogramSeriesLimit { .. }) => refused += 1,
                    Err(RecordError::BadValue) => {}
                }
                prop_assert!(store.app_series() <= 8);
            }
            let stats = store.stats();
            prop_assert_eq!(stats.refused_series + stats.refused_histogram_series, refused);
            let now = ms(lines.len() as u64 * step_ms);
            for view in store.iter(now) {
                if let Some(rate) = view.rate(Duration::from_secs(10)) {
                    prop_assert!(rate.is_finite() && rate >= 0.0);
                }
                if let Some(q) = view.quantiles(Duration::from_secs(60), &[0.5, 0.99]) {
                    prop_assert!(q[0] <= q[1]);
                }
            }
            prop_assert!(accepted + refused == lines.len() as u64);
        }
    }
}
