//! The decision thread: the one owner of the decision engine.
//!
//! It sleeps until the engine's [`Engine::poll_timeout`] (as quinn's driver sleeps until
//! `quinn-proto`'s), taking [`EngineCommand`]s from the API and the mesh as they come. Each
//! round it reads every pool's demand from the metric store, runs the engine with the plugins,
//! hands decisions to the actuators, the audit trail and the decision log, and publishes an
//! [`crate::engine::EngineView`] for everyone who reads. Rounds run, late and skipped are the
//! engine's own counts, exported as metrics with each round's duration.

use crate::actuators::Actuators;
use crate::audit::AuditHandle;
use crate::calendar::StateDb;
use crate::clock::{Clock, lock, wall_ms};
use crate::config::DemandSource;
use crate::engine::{EngineCommand, EngineHandle, EngineInbox};
use crate::logging::RateLimiter;
use crate::store::{AllShards, ShardedWatch, Store};
use crate::telemetry::{counter, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wedsync_core::engine::decision::{Decision, Direction, Reason};
use wedsync_core::engine::{Demand, Engine, RoundCounts};
use wedsync_core::statsd::MetricKind;
use wedsync_core::{Timestamp, TrafficClass};

/// Most recent decisions kept for `/v1/decisions`.
pub const KEPT_DECISIONS: usize = 1000;

/// A pool's demand is the median of the rates of this many completed 100 ms slots: a slot that
/// lost datagrams, or one in which readers caught up on a backlog, cannot move it, and a real
/// step shows within three slots.
const DEMAND_SLOTS: usize = 5;

/// A socket's drops make its pools' demand uncertain for this long after a round saw them: the
/// slots the demand median reads, and the one being filled.
const LOSS_SHADOW: Duration = Duration::from_millis(100 * (DEMAND_SLOTS as u64 + 1));

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

/// Demand counts as missing when no matching series was written for this long: a silent
/// application must not read as zero demand (that would scale in blind).
pub const DEMAND_FRESHNESS: Duration = Duration::from_secs(2);

/// Where a pool's demand comes from, and the store's watch of those series (so a round reads
/// only them, never the whole store).
#[derive(Debug, Clone)]
pub struct DemandWatch {
    /// The pool's demand source.
    pub source: DemandSource,
    watch: ShardedWatch,
    /// The pool's size gauge, when it has one.
    size: Option<ShardedWatch>,
}

impl DemandWatch {
    /// Registers the source's series with `store`: request pools watch `source.metric`
    /// counters from clients; CPU pools watch `source.metric` gauges, the agent's own
    /// (`host.cpu.busy`) included.
    pub fn new(store: &Store, source: DemandSource) -> DemandWatch {
        let tags: Vec<&str> = source.tags.iter().map(|t| &**t).collect();
        let watch = if source.cpu {
            store.watch(&source.metric, MetricKind::Gauge, &tags, true)
        } else {
            store.watch(&source.metric, MetricKind::Counter, &tags, false)
        };
        let size = source.size.as_ref().map(|(metric, tags)| {
            let tags: Vec<&str> = tags.iter().map(|t| &**t).collect();
            store.watch(metric, MetricKind::Gauge, &tags, false)
        });
        DemandWatch { source, watch, size }
    }
}

/// A pool's demand as read in one round, and the inputs that carried it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolDemand {
    /// Requests/s by class.
    pub demand: Demand,
    /// The StatsD sockets whose lines wrote its series (bits of `SeriesInfo::sources`).
    pub sources: u8,
}

/// A pool's demand. Request pools: the per-second rate of `source.metric` counters carrying all
/// of `source.tags`, split by their `class:` tag, each class the median over the newest
/// [`DEMAND_SLOTS`] completed 100 ms slots of its series' summed rates. CPU pools: the mean of
/// `source.metric` gauges (utilization 0–1) × the units serving × capacity per unit, so target
/// tracking computes `ceil(current × utilization / target)`. `None` when no matching series was
/// written within [`DEMAND_FRESHNESS`] (an idle agent's own `host.cpu.busy` is always fresh).
pub fn pool_demand(
    store: &AllShards<'_>,
    now: Timestamp,
    demand: &DemandWatch,
    serving_units: u32,
    capacity_per_unit: f64,
) -> Option<PoolDemand> {
    let source = &demand.source;
    if source.cpu {
        return cpu_demand(store, now, demand, serving_units, capacity_per_unit);
    }
    let mut slots = [[0.0f64; DEMAND_SLOTS]; TrafficClass::ALL.len()];
    let mut series_slots = [0.0f64; DEMAND_SLOTS];
    let (mut fresh, mut sources) = (false, 0u8);
    for view in store.watched(&demand.watch, now) {
        let info = view.info();
        fresh |= now.saturating_since(info.last_seen) <= DEMAND_FRESHNESS;
        sources |= info.sources;
        let class = info.class.unwrap_or(source.untagged_class);
        if view.slot_rates(&mut series_slots)
            && let Some(sum) = TrafficClass::ALL.iter().position(|c| *c == class).and_then(|i| slots.get_mut(i))
        {
            for (sum, rate) in sum.iter_mut().zip(series_slots) {
                *sum += rate;
            }
        }
    }
    let mut total = Demand::default();
    for (class, mut rates) in TrafficClass::ALL.into_iter().zip(slots) {
        rates.sort_unstable_by(f64::total_cmp);
        total.set(class, rates[DEMAND_SLOTS / 2]);
    }
    fresh.then_some(PoolDemand { demand: total, sources })
}

/// A pool's size gauge counts only while written within this long (a platform pushes it every
/// few seconds); an older one is not a size.
pub const SIZE_FRESHNESS: Duration = Duration::from_secs(60);

/// A pool's size from its gauge: the sum of the matching series written within
/// [`SIZE_FRESHNESS`] (one per zone or node group, say), and when the newest was written.
/// `None` without a gauge, a fresh series or a whole, non-negative value.
pub fn pool_size(store: &AllShards<'_>, now: Timestamp, demand: &DemandWatch) -> Option<(u32, Timestamp)> {
    let watch = demand.size.as_ref()?;
    let (mut sum, mut newest, mut any) = (0.0, Timestamp::ZERO, false);
    for view in store.watched(watch, now) {
        let seen = view.info().last_seen;
        if now.saturating_since(seen) > SIZE_FRESHNESS {
            continue;
        }
        sum += view.total();
        newest = newest.max(seen);
        any = true;
    }
    let units = sum.round();
    (any && units.is_finite() && units >= 0.0 && units <= f64::from(u32::MAX)).then_some((units as u32, newest))
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

/// Each pool's learned weekly profile, encoded for the database.
fn export_profiles(engine: &Engine) -> Vec<(String, Vec<u8>)> {
    engine
        .pools()
        .enumerate()
        .filter_map(|(i, pool)| engine.export_profile(i).and_then(Result::ok).map(|bytes| (pool.name.clone(), bytes)))
        .collect()
}

/// Writes learned profiles to the database.
fn save_profiles(db: &StateDb, profiles: &[(String, Vec<u8>)]) {
    if let Err(e) = db.put_profiles(profiles) {
        tracing::warn!(error = %e, "cannot save learned profiles");
    }
}

/// The decision thread's own metrics: rounds run, late and skipped (the engine's counts), each
/// round's duration, and commands refused for a full queue.
#[derive(Debug, Clone)]
pub struct RoundMetrics {
    /// Rounds run.
    pub run: Counter,
    /// Rounds that started late (see [`wedsync_core::engine::LATE_FRACTION`]).
    pub late: Counter,
    /// Round ticks that passed without a round.
    pub skipped: Counter,
    /// Each round's duration: demand, engine, plugins, hand-out.
    pub seconds: Histogram,
    /// Commands refused because the engine's queue was full, by command.
    pub commands_refused: prometheus_client::metrics::family::Family<crate::engine::CommandLabel, Counter>,
    /// Rounds whose demand was read while a socket carrying it was losing datagrams, by pool.
    pub uncertain: prometheus_client::metrics::family::Family<Vec<(String, String)>, Counter>,
    /// Demand readings capped for jumping past `engine.max_demand_jump`, by pool.
    pub capped: prometheus_client::metrics::family::Family<Vec<(String, String)>, Counter>,
}

impl RoundMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> RoundMetrics {
        let metrics = RoundMetrics {
            run: Counter::default(),
            late: Counter::default(),
            skipped: Counter::default(),
            // 10 µs to 84 ms, in steps of 1.5x: fine enough to read a p99 against 200 µs.
            seconds: Histogram::new(exponential_buckets(0.000_01, 1.5, 23)),
            commands_refused: Default::default(),
            uncertain: Default::default(),
            capped: Default::default(),
        };
        registry.register("wedsync_decision_rounds", "Decision rounds run", metrics.run.clone());
        registry.register(
            "wedsync_decision_rounds_late",
            "Decision rounds that started a tenth of the round interval or more after their due time",
            metrics.late.clone(),
        );
        registry.register(
            "wedsync_decision_rounds_skipped",
            "Decision round ticks that passed without a round (the decision thread woke a whole interval late)",
            metrics.skipped.clone(),
        );
        registry.register(
            "wedsync_decision_round_seconds",
            "Time one decision round took: demand, engine, plugins and hand-out",
            metrics.seconds.clone(),
        );
        registry.register(
            "wedsync_engine_commands_refused",
            "Commands to the decision engine refused because its queue was full, by command",
            metrics.commands_refused.clone(),
        );
        registry.register(
            "wedsync_demand_uncertain_rounds",
            "Rounds whose demand was read while a StatsD socket carrying it was losing datagrams (a lower bound: no spike, climb or admission change on it), by pool",
            metrics.uncertain.clone(),
        );
        registry.register(
            "wedsync_demand_capped_rounds",
            "Demand readings that jumped past engine.max_demand_jump times the pool's recent demand (or what it serves) within one round, capped there, by pool",
            metrics.capped.clone(),
        );
        metrics
    }

    /// Brings the counters up to the engine's `counts`, given what they showed `before`;
    /// returns the difference.
    fn advance(&self, before: RoundCounts, counts: RoundCounts) -> RoundCounts {
        let delta = RoundCounts {
            run: counts.run.saturating_sub(before.run),
            late: counts.late.saturating_sub(before.late),
            skipped: counts.skipped.saturating_sub(before.skipped),
        };
        self.run.inc_by(delta.run);
        self.late.inc_by(delta.late);
        self.skipped.inc_by(delta.skipped);
        delta
    }
}

/// The engine's pools and decisions in `/metrics`, read from the published view and the log.
#[derive(Debug)]
pub struct EngineCollector {
    /// The engine's view.
    pub engine: EngineHandle,
    /// The decision log.
    pub log: Arc<Mutex<DecisionLog>>,
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let view = self.engine.view();
        let pools = &view.pools;
        let names: Vec<&str> = pools.iter().map(|p| p.spec.name.as_str()).collect();
        let per_pool = |f: &dyn Fn(&wedsync_core::engine::PoolStatus) -> f64| {
            pools.iter().zip(&names).map(|(p, name)| ([("pool", *name)], f(p))).collect::<Vec<_>>()
        };
        gauge(&mut encoder, "wedsync_pool_target_units", "Units last asked for", per_pool(&|p| f64::from(p.target)))?;
        gauge(
            &mut encoder,
            "wedsync_pool_available_units",
            "Units believed serving",
            per_pool(&|p| f64::from(p.available)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_pool_load_rps",
            "Load estimate of the last round, requests/s",
            per_pool(&|p| p.load),
        )?;
        gauge(
            &mut encoder,
            "wedsync_pool_forecast_peak_rps",
            "Forecast peak demand over the forecast horizon, from the learned weekly profile and current level",
            names.iter().zip(&view.forecasts).filter_map(|(name, f)| f.map(|f| ([("pool", *name)], f))),
        )?;
        gauge(
            &mut encoder,
            "wedsync_pool_protected",
            "1 while a wedding is active in the pool's region",
            per_pool(&|p| f64::from(u8::from(p.protected))),
        )?;
        gauge(
            &mut encoder,
            "wedsync_pool_holding_stale",
            "1 while the pool holds for lack of fresh demand metrics",
            per_pool(&|p| f64::from(u8::from(p.holding_stale))),
        )?;
        gauge(
            &mut encoder,
            "wedsync_pool_max_serves_rps",
            "Requests/s the pool's max serves (max units x capacity per unit): what a forecast must stay under",
            per_pool(&|p| f64::from(p.spec.max) * p.spec.capacity_per_unit),
        )?;
        gauge(
            &mut encoder,
            "wedsync_pool_admission_ratio",
            "Fraction of each class's demand admitted",
            pools.iter().zip(&names).flat_map(|(p, name)| {
                p.admission.iter().map(move |a| ([("pool", *name), ("class", a.class.as_str())], a.admit))
            }),
        )?;
        // A copy under a short lock: encoding happens after it is released.
        let (counts, latest) = {
            let log = lock(&self.log);
            let counts = log.counts.clone();
            let latest: Vec<(&str, f64)> = names
                .iter()
                .filter_map(|name| log.newest(1, Some(name)).first().map(|d| (*name, d.decision.cost_per_hour)))
                .collect();
            (counts, latest)
        };
        counter(
            &mut encoder,
            "wedsync_decisions",
            "Decisions taken, by pool and direction",
            counts
                .iter()
                .map(|((pool, direction), count)| ([("pool", pool.as_str()), ("direction", *direction)], *count)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_pool_cost_per_hour",
            "Estimated cost per hour of the pool's latest decision",
            latest.into_iter().map(|(name, cost)| ([("pool", name)], cost)),
        )?;
        Ok(())
    }
}

/// Longest the decision thread sleeps at once, so a stop is noticed within it.
const MAX_NAP: Duration = Duration::from_millis(100);

/// How often the forecasts in the view are refreshed.
const FORECAST_PERIOD: Duration = Duration::from_secs(1);

/// The decision thread: the engine and everything a round reads from and hands decisions to.
#[derive(Debug)]
pub struct Driver {
    /// The agent's clock.
    pub clock: Clock,
    /// Demand comes from here.
    pub store: Arc<Store>,
    /// The engine, owned by this thread alone.
    pub engine: Engine,
    /// Commands in, views out.
    pub inbox: EngineInbox,
    /// Where each pool's demand comes from.
    pub sources: Vec<DemandSource>,
    /// What the StatsD sockets' readers see of the kernel's drops, in source order.
    pub input_losses: Vec<Arc<crate::ingest::InputLoss>>,
    /// Recent decisions, for the API.
    pub log: Arc<Mutex<DecisionLog>>,
    /// The audit trail, when enabled.
    pub audit: Option<AuditHandle>,
    /// exec / webhook actuators.
    pub actuators: Arc<Actuators>,
    /// Learned profiles are saved here.
    pub db: Arc<StateDb>,
    /// Rounds run, late and skipped; round durations.
    pub metrics: RoundMetrics,
    /// The alert rules, evaluated after every round (`None`: alerts are off).
    pub alerts: Option<crate::alerts::AlertLoop>,
}

fn cpu_demand(
    store: &AllShards<'_>,
    now: Timestamp,
    demand: &DemandWatch,
    serving_units: u32,
    capacity_per_unit: f64,
) -> Option<PoolDemand> {
    let (mut sum, mut n, mut sources) = (0.0, 0u32, 0u8);
    for view in store.watched(&demand.watch, now) {
        if now.saturating_since(view.info().last_seen) > DEMAND_FRESHNESS {
            continue;
        }
        sum += view.total().clamp(0.0, 1.0);
        n += 1;
        sources |= view.info().sources;
    }
    if n == 0 {
        return None;
    }
    let mut total = Demand::default();
    total.set(demand.source.untagged_class, sum / f64::from(n) * f64::from(serving_units.max(1)) * capacity_per_unit);
    Some(PoolDemand { demand: total, sources })
}

/// Whether each StatsD socket has been losing datagrams lately, from what its readers saw of the
/// kernel's drop count ([`crate::ingest::InputLoss`]).
#[derive(Debug)]
struct LossWatch {
    inputs: Vec<(Arc<crate::ingest::InputLoss>, u32, Option<Timestamp>)>,
}

impl LossWatch {
    /// The sources (bits) whose sockets dropped datagrams within [`LOSS_SHADOW`] of `now`, and
    /// the sockets that started dropping this round.
    fn lossy(&mut self, now: Timestamp) -> (u8, Vec<&'static str>) {
        let (mut mask, mut started) = (0u8, Vec::new());
        for (input, last, changed) in &mut self.inputs {
            let drops = input.drops();
            if drops != *last {
                if changed.is_none_or(|at| now.saturating_since(at) > LOSS_SHADOW) {
                    started.push(input.name);
                }
                *last = drops;
                *changed = Some(now);
            }
            if changed.is_some_and(|at| now.saturating_since(at) <= LOSS_SHADOW) {
                mask |= 1u8.checked_shl(u32::from(input.source)).unwrap_or(0);
            }
        }
        (mask, started)
    }
}

/// The decision thread's loop state besides the [`Driver`].
struct Loop {
    driver: Driver,
    demand: Vec<DemandWatch>,
    /// When each pool's size gauge was last written, as fed to the engine.
    sizes_fed: Vec<Option<Timestamp>>,
    counted: RoundCounts,
    next_forecast: Instant,
    next_save: Instant,
    saver: Option<std::thread::JoinHandle<()>>,
    skips_logged: RateLimiter,
    caps_logged: RateLimiter,
    losses: LossWatch,
    /// Rounds in a row each pool's demand has been uncertain.
    uncertain_rounds: Vec<u64>,
    pool_names: Vec<String>,
}

impl Loop {
    /// Applies one command; answers its sender after the view shows the change.
    fn apply(&mut self, command: EngineCommand) {
        let engine = &mut self.driver.engine;
        match command {
            EngineCommand::UpsertWedding { wedding, reply } => {
                let outcome = engine.handle_wedding_upsert(wedding);
                if outcome.is_ok() {
                    self.publish(None, true);
                }
                let _ = reply.send(outcome);
            }
            EngineCommand::RemoveWedding { id, reply } => {
                let removed = engine.handle_wedding_remove(&id);
                if removed {
                    self.publish(None, true);
                }
                let _ = reply.send(removed);
            }
            EngineCommand::PoolSize { pool, units, at } => {
                if let Some(index) = engine.pool_index(&pool) {
                    engine.handle_pool_state(at, index, units);
                }
            }
            EngineCommand::AckAlert { fingerprint, by, reply } => {
                let acked = self.driver.alerts.as_mut().and_then(|a| a.acknowledge(&fingerprint, &by));
                let _ = reply.send(acked);
            }
            EngineCommand::Failover { at, shares } => {
                for share in shares {
                    if let Some(index) = engine.pool_index(&share.pool) {
                        engine.handle_failover(at, index, &share.id, &share.failed_region, share.load);
                    }
                }
            }
        }
    }

    fn publish(&self, forecasts: Option<Vec<Option<f64>>>, calendar_changed: bool) {
        let view = self.driver.inbox.latest().next(&self.driver.engine, forecasts, calendar_changed);
        self.driver.inbox.publish(view);
    }

    /// Sleeps at most `timeout`, or until a command comes (and is applied).
    fn wait(&mut self, timeout: Duration) {
        match self.driver.inbox.commands.recv_timeout(timeout) {
            Ok(command) => self.apply(command),
            Err(RecvTimeoutError::Timeout) => {}
            // Every sender gone (only in tests): nothing can wake the thread but time.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(timeout),
        }
    }

    /// One round: demand in, engine and plugins, decisions out, view published.
    fn round(&mut self, mut plugins: Option<&mut crate::plugins::PluginStage>) {
        let started = Instant::now();
        let d = &mut self.driver;
        let now = d.clock.at(started);
        let wall = wall_ms();
        let (lossy, started_losing) = self.losses.lossy(now);
        for socket in started_losing {
            tracing::warn!(
                socket,
                "the kernel is dropping datagrams on a StatsD socket: pools whose demand it carries read it as uncertain (a lower bound; no spike, climb or admission change on it)"
            );
        }
        let demands: Vec<Option<PoolDemand>> = {
            let store = d.store.lock_all();
            // A size gauge written since the last round is an observation; it comes first, so a
            // CPU pool's utilization is of the units serving now.
            for ((pool, source), fed) in self.demand.iter().enumerate().zip(self.sizes_fed.iter_mut()) {
                if let Some((units, seen)) = pool_size(&store, now, source)
                    && fed.is_none_or(|fed| seen > fed)
                {
                    d.engine.handle_pool_state(seen, pool, units);
                    *fed = Some(seen);
                }
            }
            self.demand
                .iter()
                .zip(d.engine.pools())
                .enumerate()
                .map(|(i, (source, pool))| {
                    pool_demand(&store, now, source, d.engine.serving_units(i).unwrap_or(0), pool.capacity_per_unit)
                })
                .collect()
        };
        for ((pool, demand), uncertain) in demands.into_iter().enumerate().zip(self.uncertain_rounds.iter_mut()) {
            let name = || self.pool_names.get(pool).cloned().unwrap_or_default();
            match demand {
                Some(PoolDemand { demand, sources }) if sources & lossy != 0 => {
                    d.engine.handle_uncertain_demand(now, pool, demand);
                    d.metrics.uncertain.get_or_create(&vec![("pool".to_owned(), name())]).inc();
                    *uncertain += 1;
                }
                Some(PoolDemand { demand, .. }) => {
                    if *uncertain > 0 {
                        tracing::info!(pool = %name(), rounds = *uncertain, "demand input complete again; the pool's demand is read as certain");
                        *uncertain = 0;
                    }
                    if let Some(raw) = d.engine.handle_demand(now, pool, demand) {
                        d.metrics.capped.get_or_create(&vec![("pool".to_owned(), name())]).inc();
                        if let Some(suppressed) = self.caps_logged.admit(started) {
                            let factor = d.engine.settings().max_demand_jump;
                            tracing::warn!(pool = %name(), reading = raw, factor, suppressed, "demand jumped past its bound within one round: capped (a real step passes within a few rounds; a burst of forged datagrams does not)");
                        }
                    }
                }
                None => {}
            }
        }
        match plugins.as_deref_mut() {
            Some(stage) => d.engine.handle_timeout_with(now, wall, stage),
            None => d.engine.handle_timeout(now, wall),
        }
        while let Some(decision) = d.engine.poll_decision() {
            act(&decision);
            let served = ServedDecision { at_unix_ms: wall, direction: decision.direction(), decision };
            // Audited before it is carried out: when the trail cannot take it (its queue full
            // for a second: a stalled disk) the decision is not sent (the handle counts and
            // logs the refusal), and the next round decides again.
            let audited = match &d.audit {
                Some(audit) => {
                    audit.record(wall, "decision", serde_json::to_value(&served).unwrap_or_default()).is_ok()
                }
                None => true,
            };
            // Never blocks: a slow actuator sees only the newest decision for its pool. A hold
            // (no fresh demand, no change) is logged and audited, never sent as a target.
            if audited
                && !is_hold(&served.decision)
                && let Ok(json) = serde_json::to_vec(&served)
            {
                d.actuators.dispatch(&served.decision.pool, &served.decision.id, json);
            }
            lock(&d.log).push(served);
        }
        let counts = d.engine.rounds();
        let delta = d.metrics.advance(self.counted, counts);
        self.counted = counts;
        if delta.skipped > 0 {
            if let Some(suppressed) = self.skips_logged.admit(started) {
                tracing::warn!(
                    skipped = delta.skipped,
                    total = counts.skipped,
                    suppressed,
                    "decision round ticks skipped: the decision thread woke a whole interval late"
                );
            }
            if let Some(stage) = plugins.as_deref_mut() {
                stage.rounds_missed(delta.skipped);
            }
        }
        let forecasts = (started >= self.next_forecast).then(|| {
            self.next_forecast = started + FORECAST_PERIOD;
            let horizon = self.driver.engine.settings().forecast_horizon;
            (0..self.driver.engine.pools().count())
                .map(|i| self.driver.engine.forecast_peak(i, wall, horizon))
                .collect()
        });
        self.publish(forecasts, false);
        if let Some(alerts) = &mut self.driver.alerts {
            alerts.evaluate(&self.driver.inbox.latest(), now, wall, &self.driver.actuators);
        }
        if started >= self.next_save {
            self.next_save = started + PROFILE_SAVE_PERIOD;
            self.save_in_background();
        }
        let took = started.elapsed();
        self.driver.metrics.seconds.observe(took.as_secs_f64());
        if let Some(stage) = plugins {
            stage.round_finished(took, self.driver.engine.settings().round_interval);
        }
    }

    /// Saves the learned profiles on a thread of their own: a database commit (and its fsync)
    /// must not delay a round.
    fn save_in_background(&mut self) {
        if self.saver.as_ref().is_some_and(|saver| !saver.is_finished()) {
            tracing::warn!("the previous profile save is still running; this one is skipped");
            return;
        }
        let profiles = export_profiles(&self.driver.engine);
        let db = self.driver.db.clone();
        match std::thread::Builder::new().name("wedsync-profiles".into()).spawn(move || save_profiles(&db, &profiles)) {
            Ok(saver) => self.saver = Some(saver),
            Err(e) => tracing::warn!(error = %e, "cannot start the profile saver; profiles are saved at stop"),
        }
    }
}

/// Runs the decision thread until `stop`, on the calling thread (the daemon gives it one of its
/// own, never the async reactor): sleeps until the engine's next round, taking commands as they
/// come; reloaded plugins are installed between rounds. Learned profiles are saved every
/// [`PROFILE_SAVE_PERIOD`] and at the end.
pub fn run(driver: Driver, mut plugins: Option<crate::plugins::PluginStage>, stop: CancellationToken) {
    let demand: Vec<DemandWatch> =
        driver.sources.iter().map(|source| DemandWatch::new(&driver.store, source.clone())).collect();
    let (driver_losses, pools) = (driver.input_losses.clone(), demand.len());
    let pool_names = driver.engine.pools().map(|p| p.name.clone()).collect();
    let counted = driver.engine.rounds();
    let now = Instant::now();
    let mut state = Loop {
        driver,
        sizes_fed: vec![None; demand.len()],
        demand,
        counted,
        next_forecast: now,
        next_save: now + PROFILE_SAVE_PERIOD,
        saver: None,
        skips_logged: RateLimiter::new(1),
        caps_logged: RateLimiter::new(1),
        losses: LossWatch { inputs: driver_losses.into_iter().map(|l| (l, 0, None)).collect() },
        uncertain_rounds: vec![0; pools],
        pool_names,
    };
    while !stop.is_cancelled() {
        if let Some(stage) = plugins.as_mut() {
            // Between rounds: a reloaded plugin never changes under a round in flight.
            stage.apply_reloads();
        }
        if let Some(due) = state.driver.engine.poll_timeout() {
            let (wake, now) = (state.driver.clock.instant_of(due), Instant::now());
            if wake > now {
                state.wait((wake - now).min(MAX_NAP));
                continue;
            }
        }
        // Commands already queued go in before the round.
        while let Ok(command) = state.driver.inbox.commands.try_recv() {
            state.apply(command);
        }
        state.round(plugins.as_mut());
    }
    // What was learned must survive the stop.
    if let Some(saver) = state.saver.take()
        && saver.join().is_err()
    {
        tracing::warn!("the profile saver panicked");
    }
    save_profiles(&state.driver.db, &export_profiles(&state.driver.engine));
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

/// Whether a decision only says that the pool holds for lack of fresh demand.
pub fn is_hold(decision: &Decision) -> bool {
    decision.to == decision.from && decision.reasons.iter().any(|r| matches!(r, Reason::StaleMetrics { .. }))
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
        let store = Store::new(StoreLimits::default(), 4);
        let source = DemandSource {
            metric: "requests".into(),
            tags: vec!["service:checkout".into()],
            untagged_class: TrafficClass::Registration,
            cpu: false,
            size: None,
        };
        // Watched before its series exist: they are indexed as they are made.
        let checkout = DemandWatch::new(&store, source.clone());
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
        let demand = pool_demand(&store.lock_all(), Timestamp::from_millis(1000), &checkout, 1, 100.0)
            .expect("fresh demand")
            .demand;
        assert!((demand.of(TrafficClass::WeddingCritical) - 100.0).abs() < 1e-9, "{demand:?}");
        assert!((demand.of(TrafficClass::Registration) - 50.0).abs() < 1e-9, "{demand:?}");
        assert_eq!(demand.of(TrafficClass::Media), 0.0);
        // Ten seconds of silence: demand is missing, not zero.
        assert_eq!(pool_demand(&store.lock_all(), Timestamp::from_millis(11_000), &checkout, 1, 100.0), None);
        // Watched after its series exist: found by the watch's first scan.
        let search = DemandWatch::new(&store, DemandSource { tags: vec!["service:search".into()], ..source.clone() });
        let demand = pool_demand(&store.lock_all(), Timestamp::from_millis(1000), &search, 1, 100.0)
            .expect("fresh demand")
            .demand;
        assert!((demand.of(TrafficClass::Media) - 70.0).abs() < 1e-9, "{demand:?}");
        let absent = DemandWatch::new(&store, DemandSource { metric: "nothing".into(), ..source });
        assert_eq!(pool_demand(&store.lock_all(), Timestamp::from_millis(1000), &absent, 1, 100.0), None);
    }

    /// The untagged `requests` counter as media demand, with an optional size gauge.
    fn media_requests(size: Option<(String, Vec<String>)>) -> DemandSource {
        DemandSource { metric: "requests".into(), tags: vec![], untagged_class: TrafficClass::Media, cpu: false, size }
    }

    #[test]
    fn demand_is_the_median_of_slots_so_one_lost_or_crowded_slot_does_not_move_it() {
        let store = Store::new(StoreLimits::default(), 4);
        let watch = DemandWatch::new(&store, media_requests(None));
        // 50 a slot (500/s), but slot 7 lost most of its lines and slot 8 caught up on a backlog;
        // two series, one from each input.
        for tick in 0..10u64 {
            let count = match tick {
                7 => 5,
                8 => 140,
                _ => 50,
            };
            let now = Timestamp::from_millis(tick * 100 + 10);
            let text = format!("requests:{}|c|#zone:a", count - 10);
            let a = parse_line(text.as_bytes()).unwrap();
            let b = parse_line(b"requests:10|c|#zone:b").unwrap();
            store.record_from(now, &a, 0).unwrap();
            store.record_from(now, &b, 1).unwrap();
        }
        let read = pool_demand(&store.lock_all(), Timestamp::from_millis(1000), &watch, 1, 100.0).expect("fresh");
        assert_eq!(read.demand.of(TrafficClass::Media), 500.0, "{read:?}");
        assert_eq!(read.sources, 0b11);
        // A real step shows within three slots.
        for tick in 10..13u64 {
            let line = parse_line(b"requests:100|c|#zone:a").unwrap();
            store.record_from(Timestamp::from_millis(tick * 100 + 10), &line, 0).unwrap();
        }
        let read = pool_demand(&store.lock_all(), Timestamp::from_millis(1300), &watch, 1, 100.0).expect("fresh");
        assert_eq!(read.demand.of(TrafficClass::Media), 1000.0, "{read:?}");
    }

    #[test]
    fn a_socket_that_drops_makes_its_sources_lossy_for_the_demand_window() {
        let udp = Arc::new(crate::ingest::InputLoss::new("udp", 0));
        let demand = Arc::new(crate::ingest::InputLoss::new("demand", 1));
        let mut watch = LossWatch { inputs: vec![(udp.clone(), 0, None), (demand.clone(), 0, None)] };
        let at = Timestamp::from_millis;
        assert_eq!(watch.lossy(at(0)), (0, vec![]));
        udp.saw(17);
        assert_eq!(watch.lossy(at(100)), (0b01, vec!["udp"]));
        // Still dropping: lossy, but not a new start.
        udp.saw(40);
        assert_eq!(watch.lossy(at(200)), (0b01, vec![]));
        // No new drops: lossy until the demand window has passed them.
        assert_eq!(watch.lossy(at(200 + 600)).0, 0b01);
        assert_eq!(watch.lossy(at(200 + 700)).0, 0);
        demand.saw(1);
        assert_eq!(watch.lossy(at(1000)), (0b10, vec!["demand"]));
    }

    #[test]
    fn a_pools_size_is_its_fresh_gauges_summed() {
        let store = Store::new(StoreLimits::default(), 4);
        let source = media_requests(Some(("k8s.ready".into(), vec!["deployment:api".into()])));
        let watch = DemandWatch::new(&store, source.clone());
        let record =
            |at: u64, line: &str| store.record(Timestamp::from_millis(at), &parse_line(line.as_bytes()).unwrap());
        assert_eq!(pool_size(&store.lock_all(), Timestamp::from_millis(0), &watch), None, "no gauge yet");
        // One gauge per zone: summed. Another deployment's is not the pool's.
        record(1_000, "k8s.ready:4|g|#deployment:api,zone:a").unwrap();
        record(2_000, "k8s.ready:3|g|#deployment:api,zone:b").unwrap();
        record(2_000, "k8s.ready:50|g|#deployment:web").unwrap();
        let now = Timestamp::from_millis(3_000);
        assert_eq!(pool_size(&store.lock_all(), now, &watch), Some((7, Timestamp::from_millis(2_000))));
        // A zone silent for longer than the freshness no longer counts; then none does.
        record(62_000, "k8s.ready:5|g|#deployment:api,zone:b").unwrap();
        assert_eq!(
            pool_size(&store.lock_all(), Timestamp::from_millis(62_000), &watch),
            Some((5, Timestamp::from_millis(62_000)))
        );
        assert_eq!(pool_size(&store.lock_all(), Timestamp::from_millis(200_000), &watch), None);
        // A pool without a size gauge has none.
        let plain = DemandWatch::new(&store, DemandSource { size: None, ..source });
        assert_eq!(pool_size(&store.lock_all(), now, &plain), None);
    }

    #[test]
    fn cpu_demand_is_utilization_times_serving_capacity() {
        let store = Store::new(StoreLimits::default(), 4);
        let now = Timestamp::from_millis(500);
        store.set_internal_gauge(now, "host.cpu.busy", "", 0.9);
        store.record(now, &parse_line(b"pool.cpu:0.5|g|#service:api").unwrap()).unwrap();
        store.record(now, &parse_line(b"pool.cpu:0.7|g|#service:api").unwrap()).unwrap();
        let host = DemandSource {
            metric: "host.cpu.busy".into(),
            tags: vec![],
            untagged_class: TrafficClass::Media,
            cpu: true,
            size: None,
        };
        let host = DemandWatch::new(&store, host);
        let demand = pool_demand(&store.lock_all(), now, &host, 4, 1.0).unwrap().demand;
        assert!((demand.of(TrafficClass::Media) - 3.6).abs() < 1e-9, "{demand:?}");
        let pool = DemandWatch::new(
            &store,
            DemandSource { metric: "pool.cpu".into(), tags: vec!["service:api".into()], ..host.source.clone() },
        );
        // The last value set wins for a gauge: 0.7 × 10 units.
        let demand = pool_demand(&store.lock_all(), now, &pool, 10, 1.0).unwrap().demand;
        assert!((demand.total() - 7.0).abs() < 1e-9, "{demand:?}");
        assert_eq!(pool_demand(&store.lock_all(), Timestamp::from_millis(10_000), &pool, 10, 1.0), None);
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
