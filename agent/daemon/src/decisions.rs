//! Drives the decision engine: every round it reads each pool's demand from the metric store,
//! runs the engine, hands decisions to the log actuator, and keeps the recent ones for the API
//! and `/metrics`.

use crate::actuators::Actuators;
use crate::audit::AuditHandle;
use crate::calendar::StateDb;
use crate::telemetry::{Clock, lock};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use wedsync_core::config::DemandSource;
use wedsync_core::engine::decision::{Decision, Direction};
use wedsync_core::engine::{Demand, Engine};
use wedsync_core::statsd::MetricKind;
use wedsync_core::store::MetricStore;
use wedsync_core::{Timestamp, TrafficClass};

/// Most recent decisions kept for `/v1/decisions`.
pub const KEPT_DECISIONS: usize = 1000;

/// The window demand rates are read over: one 10 Hz slot.
const DEMAND_WINDOW: Duration = Duration::from_millis(100);

/// A decision as served: the engine's decision plus the wall-clock time it was taken.
#[derive(Debug, Clone, Serialize)]
pub struct ServedDecision {
    /// Unix milliseconds.
    pub at_unix_ms: i64,
    /// Up, down or hold.
    pub direction: Direction,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
}

/// Decisions taken so far and counts by pool and direction.
#[derive(Debug, Default)]
pub struct DecisionLog {
    recent: VecDeque<ServedDecision>,
    /// Decisions taken, by (pool, direction).
    pub counts: std::collections::BTreeMap<(String, &'static str), u64>,
}

impl DecisionLog {
    /// Records a decision.
    pub fn push(&mut self, served: ServedDecision) {
        let direction = match served.direction {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Hold => "hold",
        };
        *self.counts.entry((served.decision.pool.clone(), direction)).or_default() += 1;
        if self.recent.len() == KEPT_DECISIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(served);
    }

    /// The newest `limit` decisions, newest first, optionally for one pool.
    pub fn newest(&self, limit: usize, pool: Option<&str>) -> Vec<ServedDecision> {
        self.recent.iter().rev().filter(|d| pool.is_none_or(|p| d.decision.pool == p)).take(limit).cloned().collect()
    }
}

/// Unix milliseconds now.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Demand counts as missing when no matching series was written for this long: a silent
/// application must not read as zero demand (that would scale in blind).
pub const DEMAND_FRESHNESS: Duration = Duration::from_secs(2);

/// A pool's demand. Request pools: the per-second rate of `source.metric` counters carrying all
/// of `source.tags`, over the last completed 100 ms, split by their `class:` tag. CPU pools: the
/// mean of `source.metric` gauges (utilization 0–1) × the units serving × capacity per unit, so
/// target tracking computes `ceil(current × utilization / target)`. `None` when no matching
/// series was written within [`DEMAND_FRESHNESS`] (an idle agent's own `host.cpu.busy` is
/// always fresh).
pub fn pool_demand(
    store: &MetricStore,
    now: Timestamp,
    source: &DemandSource,
    serving_units: u32,
    capacity_per_unit: f64,
) -> Option<Demand> {
    if source.cpu {
        return cpu_demand(store, now, source, serving_units, capacity_per_unit);
    }
    let mut demand = Demand::default();
    let mut fresh = false;
    for view in store.iter(now) {
        let info = view.info();
        if info.kind != MetricKind::Counter || info.internal || *info.name != *source.metric {
            continue;
        }
        if !source.tags.iter().all(|t| info.tags.iter().any(|have| **have == **t)) {
            continue;
        }
        fresh |= now.saturating_since(info.last_seen) <= DEMAND_FRESHNESS;
        let class = info.class.unwrap_or(source.untagged_class);
        let rate = view.rate(DEMAND_WINDOW).unwrap_or(0.0);
        demand.set(class, demand.of(class) + rate);
    }
    fresh.then_some(demand)
}

/// How often learned profiles are written to the database.
pub const PROFILE_SAVE_PERIOD: Duration = Duration::from_secs(300);

/// Loads each pool's stored weekly profile into the engine.
pub fn load_profiles(db: &StateDb, engine: &mut Engine) {
    let names: Vec<String> = engine.pools().map(|p| p.name.clone()).collect();
    for (index, name) in names.iter().enumerate() {
        match db.profile(name) {
            Ok(Some(bytes)) => match engine.import_profile(index, &bytes) {
                Ok(()) => tracing::info!(pool = %name, "learned weekly profile restored"),
                Err(e) => tracing::warn!(pool = %name, error = %e, "stored profile unusable; learning afresh"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(pool = %name, error = %e, "cannot read the stored profile"),
        }
    }
}

/// Writes every pool's weekly profile to the database.
pub fn save_profiles(db: &StateDb, engine: &Mutex<Engine>) {
    let profiles: Vec<(String, Vec<u8>)> = {
        let engine = lock(engine);
        let names: Vec<String> = engine.pools().map(|p| p.name.clone()).collect();
        names
            .into_iter()
            .enumerate()
            .filter_map(|(i, name)| engine.export_profile(i).and_then(Result::ok).map(|bytes| (name, bytes)))
            .collect()
    };
    if let Err(e) = db.put_profiles(&profiles) {
        tracing::warn!(error = %e, "cannot save learned profiles");
    }
}

/// What the engine driver reads from and hands decisions to.
#[derive(Debug)]
pub struct Driver {
    /// The agent's clock.
    pub clock: Clock,
    /// Demand comes from here.
    pub store: Arc<Mutex<MetricStore>>,
    /// The engine.
    pub engine: Arc<Mutex<Engine>>,
    /// Where each pool's demand comes from.
    pub sources: Vec<DemandSource>,
    /// Recent decisions, for the API.
    pub log: Arc<Mutex<DecisionLog>>,
    /// The audit trail, when enabled.
    pub audit: Option<AuditHandle>,
    /// exec / webhook actuators.
    pub actuators: Arc<Actuators>,
    /// Learned profiles are saved here.
    pub db: Arc<StateDb>,
    /// Counts round ticks skipped because the previous round (or the host) ran late.
    pub missed_rounds: prometheus_client::metrics::counter::Counter,
}

fn cpu_demand(
    store: &MetricStore,
    now: Timestamp,
    source: &DemandSource,
    serving_units: u32,
    capacity_per_unit: f64,
) -> Option<Demand> {
    let (mut sum, mut n) = (0.0, 0u32);
    for view in store.iter(now) {
        let info = view.info();
        if info.kind != MetricKind::Gauge || *info.name != *source.metric {
            continue;
        }
        if !source.tags.iter().all(|t| info.tags.iter().any(|have| **have == **t)) {
            continue;
        }
        if now.saturating_since(info.last_seen) > DEMAND_FRESHNESS {
            continue;
        }
        sum += view.total().clamp(0.0, 1.0);
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let mut demand = Demand::default();
    demand.set(source.untagged_class, sum / f64::from(n) * f64::from(serving_units.max(1)) * capacity_per_unit);
    Some(demand)
}

/// Runs engine rounds (and the plugins they call) until `stop`, on the calling thread: the
/// daemon gives it a thread of its own, never the async reactor. Learned profiles are saved
/// periodically and at the end. Missed ticks are skipped, not replayed.
pub fn run(driver: Driver, mut plugins: Option<crate::plugins::PluginStage>, stop: CancellationToken) {
    let Driver { clock, store, engine, sources, log, audit, actuators, db, missed_rounds } = driver;
    let (interval, capacity_per_unit): (Duration, Vec<f64>) = {
        let engine = lock(&engine);
        (engine.settings().round_interval, engine.pools().map(|p| p.capacity_per_unit).collect())
    };
    let mut next_round = std::time::Instant::now();
    let mut next_save = next_round + PROFILE_SAVE_PERIOD;
    while !stop.is_cancelled() {
        if let Some(stage) = plugins.as_mut() {
            // Between rounds: a reloaded plugin never changes under a round in flight.
            stage.apply_reloads();
        }
        let started = std::time::Instant::now();
        if started < next_round {
            // Short naps so a stop (or a staged reload) is noticed quickly.
            std::thread::sleep((next_round - started).min(Duration::from_millis(50)));
            continue;
        }
        let missed = missed_ticks(started.saturating_duration_since(next_round), interval);
        if missed > 0 {
            missed_rounds.inc_by(missed);
            tracing::warn!(missed, "decision round ticks skipped: the previous round ran past them");
            if let Some(stage) = plugins.as_mut() {
                stage.rounds_missed(missed);
            }
        }
        next_round = (next_round + interval).max(started);
        if started >= next_save {
            save_profiles(&db, &engine);
            next_save = started + PROFILE_SAVE_PERIOD;
        }
        let now = clock.now();
        let serving: Vec<u32> = {
            let engine = lock(&engine);
            (0..sources.len()).map(|i| engine.serving_units(i).unwrap_or(0)).collect()
        };
        let demands: Vec<Option<Demand>> = {
            let store = lock(&store);
            sources
                .iter()
                .zip(serving.iter().zip(&capacity_per_unit))
                .map(|(source, (serving, per_unit))| pool_demand(&store, now, source, *serving, *per_unit))
                .collect()
        };
        let wall = wall_ms();
        let decisions: Vec<Decision> = {
            let mut engine = lock(&engine);
            for (pool, demand) in demands.into_iter().enumerate() {
                if let Some(demand) = demand {
                    engine.handle_demand(now, pool, demand);
                }
            }
            match plugins.as_mut() {
                Some(stage) => engine.handle_timeout_with(now, wall, stage),
                None => engine.handle_timeout(now, wall),
            }
            std::iter::from_fn(|| engine.poll_decision()).collect()
        };
        for decision in decisions {
            act(&decision);
            let served = ServedDecision { at_unix_ms: wall, direction: decision.direction(), decision };
            // Never blocks: a slow actuator sees only the newest decision for its pool.
            if let Ok(json) = serde_json::to_vec(&served) {
                actuators.dispatch(&served.decision.pool, &served.decision.id, json);
            }
            if let Some(audit) = &audit {
                audit.record(wall, "decision", serde_json::to_value(&served).unwrap_or_default());
            }
            lock(&log).push(served);
        }
        if let Some(stage) = plugins.as_mut() {
            stage.round_finished(started.elapsed(), interval);
        }
    }
    // What was learned must survive the stop.
    save_profiles(&db, &engine);
}

/// Ticks (after the one due `lateness` ago) whose time passed before the round started: they
/// are skipped, not replayed.
fn missed_ticks(lateness: Duration, interval: Duration) -> u64 {
    let interval = interval.as_nanos().max(1);
    u64::try_from(lateness.as_nanos().saturating_sub(1) / interval).unwrap_or(u64::MAX)
}

/// The `log` actuator: every decision as one structured log line.
fn act(decision: &Decision) {
    let admission: Vec<String> =
        decision.admission.iter().filter(|a| a.admit < 1.0).map(|a| format!("{}={:.2}", a.class, a.admit)).collect();
    let reasons = serde_json::to_string(&decision.reasons).unwrap_or_default();
    tracing::info!(
        target: "wedsync_agent::actuator::log",
        id = %decision.id,
        pool = %decision.pool,
        from = decision.from,
        to = decision.to,
        cost_per_hour = decision.cost_per_hour,
        degraded = %admission.join(","),
        reasons = %reasons,
        "decision"
    );
}

/// Admission level of `class` in `decision`, if the pool serves it.
pub fn admission_of(decision: &Decision, class: TrafficClass) -> Option<f64> {
    decision.admission.iter().find(|a| a.class == class).map(|a| a.admit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wedsync_core::statsd::parse_line;
    use wedsync_core::store::StoreLimits;

    #[test]
    fn demand_is_split_by_class_and_filtered_by_tags() {
        let mut store = MetricStore::new(StoreLimits::default());
        for tick in 0..10u64 {
            let now = Timestamp::from_millis(tick * 100);
            for line in [
                "requests:10|c|#service:checkout,class:wedding-critical",
                "requests:5|c|#service:checkout",
                "requests:7|c|#service:search,class:media",
                "other:100|c|#service:checkout",
            ] {
                store.record(now, &parse_line(line.as_bytes()).unwrap()).unwrap();
            }
        }
        let source = DemandSource {
            metric: "requests".into(),
            tags: vec!["service:checkout".into()],
            untagged_class: TrafficClass::Registration,
            cpu: false,
        };
        let demand = pool_demand(&store, Timestamp::from_millis(1000), &source, 1, 100.0).expect("fresh demand");
        assert!((demand.of(TrafficClass::WeddingCritical) - 100.0).abs() < 1e-9, "{demand:?}");
        assert!((demand.of(TrafficClass::Registration) - 50.0).abs() < 1e-9, "{demand:?}");
        assert_eq!(demand.of(TrafficClass::Media), 0.0);
        // Ten seconds of silence: demand is missing, not zero.
        assert_eq!(pool_demand(&store, Timestamp::from_millis(11_000), &source, 1, 100.0), None);
        let absent = DemandSource { metric: "nothing".into(), ..source };
        assert_eq!(pool_demand(&store, Timestamp::from_millis(1000), &absent, 1, 100.0), None);
    }

    #[test]
    fn cpu_demand_is_utilization_times_serving_capacity() {
        let mut store = MetricStore::new(StoreLimits::default());
        let now = Timestamp::from_millis(500);
        store.set_internal_gauge(now, "host.cpu.busy", "", 0.9);
        store.record(now, &parse_line(b"pool.cpu:0.5|g|#service:api").unwrap()).unwrap();
        store.record(now, &parse_line(b"pool.cpu:0.7|g|#service:api").unwrap()).unwrap();
        let host = DemandSource {
            metric: "host.cpu.busy".into(),
            tags: vec![],
            untagged_class: TrafficClass::Media,
            cpu: true,
        };
        let demand = pool_demand(&store, now, &host, 4, 1.0).unwrap();
        assert!((demand.of(TrafficClass::Media) - 3.6).abs() < 1e-9, "{demand:?}");
        let pool = DemandSource { metric: "pool.cpu".into(), tags: vec!["service:api".into()], ..host };
        // The last value set wins for a gauge: 0.7 × 10 units.
        let demand = pool_demand(&store, now, &pool, 10, 1.0).unwrap();
        assert!((demand.total() - 7.0).abs() < 1e-9, "{demand:?}");
        assert_eq!(pool_demand(&store, Timestamp::from_millis(10_000), &pool, 10, 1.0), None);
    }

    #[test]
    fn ticks_passed_while_late_count_as_missed() {
        let ms = Duration::from_millis;
        assert_eq!(missed_ticks(Duration::ZERO, ms(100)), 0);
        assert_eq!(missed_ticks(ms(99), ms(100)), 0);
        // The next tick is exactly now: it runs, nothing was missed.
        assert_eq!(missed_ticks(ms(100), ms(100)), 0);
        assert_eq!(missed_ticks(ms(101), ms(100)), 1);
        assert_eq!(missed_ticks(ms(250), ms(100)), 2);
    }

    #[test]
    fn log_keeps_the_newest_and_counts_all() {
        let mut log = DecisionLog::default();
        let decision = |i: u32| Decision {
            id: format!("p:{i}:{i}"),
            pool: "p".into(),
            region: "r".into(),
            placement: "r".into(),
            epoch: u64::from(i),
            at: Timestamp::ZERO,
            from: i,
            to: i + 1,
            mix: Default::default(),
            cost_per_hour: 0.0,
            admission: vec![],
            reasons: vec![],
        };
        for i in 0..(KEPT_DECISIONS as u32 + 5) {
            log.push(ServedDecision { at_unix_ms: 0, direction: Direction::Up, decision: decision(i) });
        }
        let newest = log.newest(2, Some("p"));
        assert_eq!(newest[0].decision.epoch, KEPT_DECISIONS as u64 + 4);
        assert_eq!(log.newest(usize::MAX, None).len(), KEPT_DECISIONS);
        assert_eq!(log.counts[&("p".to_owned(), "up")], KEPT_DECISIONS as u64 + 5);
        assert!(log.newest(5, Some("q")).is_empty());
    }
}
