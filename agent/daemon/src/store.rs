//! The metric store, split into shards so that StatsD readers on several cores record at once.
//!
//! Each series lives in one shard, picked by the hash of its identity
//! ([`SeriesKey`]), behind a lock of its own; the shards share one
//! [`SeriesQuota`], so the configured caps hold for the store as a whole. Writers lock the one
//! shard a line belongs to; readers that need every series (a round's demand, `/v1/status`) take
//! [`Store::lock_all`], and `/metrics` visits the shards one at a time. Locks are only ever
//! taken one at a time or all in index order, so they cannot deadlock.
//!
//! A leaf module: it imports nothing from the rest of the crate.

use std::sync::Arc;
use std::time::Duration;
use wedsync_core::Timestamp;
use wedsync_core::statsd::{Line, MetricKind};
use wedsync_core::store::{
    MetricStore, RecordError, SeriesId, SeriesKey, SeriesQuota, SeriesView, StoreLimits, StoreStats, WatchId,
};

/// Most shards a store is split into.
pub const MAX_SHARDS: usize = 64;

/// One shard's lock. `parking_lot`'s, for `unlock_fair`: a scrape that copies a shard in several
/// short visits hands the lock to a waiting reader between them. Aligned so that two shards'
/// locks never share a cache line (writers on two cores would slow each other for nothing).
#[derive(Debug)]
#[repr(align(128))]
struct Shard(parking_lot::Mutex<MetricStore>);

/// A shard's lock guard.
pub type ShardGuard<'a> = parking_lot::MutexGuard<'a, MetricStore>;

/// The metric store: [`MetricStore`] shards under one quota.
#[derive(Debug)]
pub struct Store {
    shards: Box<[Shard]>,
    /// `shards.len() - 1` (a power of two).
    mask: usize,
    quota: Arc<SeriesQuota>,
    limits: StoreLimits,
}

/// A standing query on every shard ([`Store::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedWatch(Box<[WatchId]>);

impl Store {
    /// An empty store with these caps, split into at least `shards` shards (rounded up to a
    /// power of two, at most [`MAX_SHARDS`]).
    pub fn new(limits: StoreLimits, shards: usize) -> Store {
        let count = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        let quota = Arc::new(SeriesQuota::default());
        let shards = (0..count)
            .map(|_| Shard(parking_lot::Mutex::new(MetricStore::with_quota(limits, quota.clone()))))
            .collect();
        Store { shards, mask: count - 1, quota, limits }
    }

    /// How many shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The caps the store enforces.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// The shard that holds (or will hold) the series with `key`.
    pub fn shard_of(&self, key: SeriesKey) -> usize {
        // Bits the shards' own hash tables do not index by (they use the low ones).
        (key.hash() >> 32) as usize & self.mask
    }

    /// Locks shard `index` (which must be below [`Store::shard_count`]; past it, the last).
    pub fn lock_shard(&self, index: usize) -> ShardGuard<'_> {
        self.shard(index).0.lock()
    }

    /// Locks shard `index` if no one holds it.
    pub fn try_lock_shard(&self, index: usize) -> Option<ShardGuard<'_>> {
        self.shard(index).0.try_lock()
    }

    fn shard(&self, index: usize) -> &Shard {
        let last = self.shards.len() - 1;
        &self.shards[index.min(last)]
    }

    /// Records one parsed StatsD line in its shard.
    pub fn record(&self, now: Timestamp, line: &Line<'_>) -> Result<SeriesId, RecordError> {
        let key = SeriesKey::of(line.name, line.kind, line.tags);
        self.lock_shard(self.shard_of(key)).record_keyed(now, line, key)
    }

    /// Records one line as written by input `source` (see [`MetricStore::record_keyed_from`]).
    pub fn record_from(&self, now: Timestamp, line: &Line<'_>, source: u8) -> Result<SeriesId, RecordError> {
        let key = SeriesKey::of(line.name, line.kind, line.tags);
        self.lock_shard(self.shard_of(key)).record_keyed_from(now, line, key, source)
    }

    /// Sets an internal gauge (see [`MetricStore::set_internal_gauge`]).
    pub fn set_internal_gauge(&self, now: Timestamp, name: &str, tags: &str, value: f64) {
        let shard = self.shard_of(SeriesKey::of(name, MetricKind::Gauge, tags));
        self.lock_shard(shard).set_internal_gauge(now, name, tags, value);
    }

    /// Starts watching a query on every shard (see [`MetricStore::watch`]).
    pub fn watch(&self, name: &str, kind: MetricKind, tags: &[&str], internal: bool) -> ShardedWatch {
        ShardedWatch(self.shards.iter().map(|s| s.0.lock().watch(name, kind, tags, internal)).collect())
    }

    /// Removes series idle for longer than `ttl` from every shard; returns how many.
    pub fn expire_idle(&self, now: Timestamp, ttl: Duration) -> usize {
        self.shards.iter().map(|s| s.0.lock().expire_idle(now, ttl)).sum()
    }

    /// Application series held, across the shards.
    pub fn app_series(&self) -> usize {
        self.quota.app_series()
    }

    /// Every shard, locked (in index order) until the guard drops: for readers that need every
    /// series at one moment. Keep it short: every writer waits.
    pub fn lock_all(&self) -> AllShards<'_> {
        AllShards { guards: self.shards.iter().map(|s| s.0.lock()).collect(), limits: self.limits }
    }
}

/// Every shard of a [`Store`], locked.
pub struct AllShards<'a> {
    guards: Vec<ShardGuard<'a>>,
    limits: StoreLimits,
}

impl AllShards<'_> {
    /// Every series as of `now`, shard by shard.
    pub fn iter(&self, now: Timestamp) -> impl Iterator<Item = SeriesView<'_>> {
        self.guards.iter().flat_map(move |g| g.iter(now))
    }

    /// The series a watch holds now (none for a watch from another store).
    pub fn watched<'s>(&'s self, watch: &'s ShardedWatch, now: Timestamp) -> impl Iterator<Item = SeriesView<'s>> {
        self.guards.iter().zip(watch.0.iter()).flat_map(move |(g, w)| g.watched(*w, now))
    }

    /// The series named `name` of `kind` with exactly `tags` (in any order).
    pub fn lookup(&self, name: &str, kind: MetricKind, tags: &str, now: Timestamp) -> Option<SeriesView<'_>> {
        self.guards.iter().find_map(|g| g.lookup(name, kind, tags).and_then(|id| g.view(id, now)))
    }

    /// The `n` application series with the highest event rate over the last 10 s, busiest first.
    pub fn busiest(&self, now: Timestamp, n: usize) -> Vec<(SeriesView<'_>, f64)> {
        let mut ranked: Vec<(SeriesView<'_>, f64)> = self.guards.iter().flat_map(|g| g.busiest(now, n)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(n);
        ranked
    }

    /// Series held (application and internal).
    pub fn len(&self) -> usize {
        self.guards.iter().map(|g| g.len()).sum()
    }

    /// Whether the store holds no series.
    pub fn is_empty(&self) -> bool {
        self.guards.iter().all(|g| g.is_empty())
    }

    /// Application series held.
    pub fn app_series(&self) -> usize {
        self.guards.iter().map(|g| g.app_series()).sum()
    }

    /// Refusal and expiry counts, summed over the shards.
    pub fn stats(&self) -> StoreStats {
        self.guards.iter().map(|g| g.stats()).fold(StoreStats::default(), |a, b| StoreStats {
            refused_series: a.refused_series + b.refused_series,
            refused_histogram_series: a.refused_histogram_series + b.refused_histogram_series,
            expired_series: a.expired_series + b.expired_series,
            set_members_dropped: a.set_members_dropped + b.set_members_dropped,
        })
    }

    /// The caps the store enforces.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wedsync_core::statsd::parse_line;

    fn record(store: &Store, now: Timestamp, text: &str) -> Result<SeriesId, RecordError> {
        store.record(now, &parse_line(text.as_bytes()).unwrap())
    }

    #[test]
    fn series_spread_over_the_shards_and_read_back_as_one_store() {
        let store = Store::new(StoreLimits::default(), 5);
        assert_eq!(store.shard_count(), 8);
        let now = Timestamp::from_millis(0);
        for i in 0..400 {
            record(&store, now, &format!("req:1|c|#service:s{i},class:media")).unwrap();
        }
        record(&store, now, "req:1|c|#class:media,service:s7").unwrap();
        let filled = (0..8).filter(|&i| !store.lock_shard(i).is_empty()).count();
        assert_eq!(filled, 8, "400 series must reach every shard");
        let watch = store.watch("req", MetricKind::Counter, &["class:media"], false);
        let all = store.lock_all();
        assert_eq!(all.len(), 400);
        assert_eq!(all.app_series(), 400);
        assert_eq!(all.watched(&watch, now).count(), 400);
        assert_eq!(all.watched(&watch, now).map(|v| v.total()).sum::<f64>(), 401.0);
        let seven = all.lookup("req", MetricKind::Counter, "service:s7,class:media", now).unwrap();
        assert_eq!(seven.total(), 2.0);
        assert_eq!(all.iter(now).count(), 400);
        drop(all);
        assert_eq!(store.app_series(), 400);
    }

    #[test]
    fn caps_hold_across_shards() {
        let limits = StoreLimits { max_series: 10, ..StoreLimits::default() };
        let store = Store::new(limits, 4);
        let now = Timestamp::from_millis(0);
        let refused = (0..50).filter(|i| record(&store, now, &format!("s{i}:1|c")).is_err()).count();
        assert_eq!(refused, 40);
        let all = store.lock_all();
        assert_eq!(all.app_series(), 10);
        assert_eq!(all.stats().refused_series, 40);
        drop(all);
        store.set_internal_gauge(now, "host.cpu.busy", "", 0.5);
        assert_eq!(store.expire_idle(Timestamp::from_millis(600_000), Duration::from_secs(60)), 11);
        assert_eq!(store.app_series(), 0);
        record(&store, Timestamp::from_millis(600_000), "fresh:1|c").unwrap();
    }
}
