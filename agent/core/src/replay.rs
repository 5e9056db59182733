//! Trace replay: runs the decision engine over a recorded or synthetic demand trace against a
//! capacity model (capacity arrives after the pool's provisioning delay) and scores it.
//!
//! Trace format (CSV, `#` lines are metadata or comments):
//!
//! ```text
//! # name: viral-spike
//! # onset_s: 600                 # spike onset, for the onset-to-decision score
//! # start_unix_ms: 1780000000000 # wall clock of t = 0 (calendar and seasons)
//! # round_ms: 100                # engine round interval for this trace
//! # wedding: w-1,eu-west,3600,7200   # id,region,start_s,end_s (relative to t = 0)
//! t_s,wedding_critical,wedding_planning,registration,media,background
//! 0,200,100,500,300,100
//! 1,205,98,510,290,100
//! ```
//!
//! Demand is held from one row to the next (a step function).

use crate::TrafficClass;
use crate::engine::decision::Decision;
use crate::engine::pool::{PoolSpec, Wedding};
use crate::engine::{Demand, Engine, EngineSettings};
use crate::time::Timestamp;
use serde::Serialize;
use std::time::Duration;

/// A demand trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Its name.
    pub name: String,
    /// Rows: time in seconds from the start, demand by class.
    pub rows: Vec<(f64, Demand)>,
    /// Spike onset, seconds from the start.
    pub onset_s: Option<f64>,
    /// Wall clock of t = 0, Unix ms.
    pub start_unix_ms: i64,
    /// Engine round interval.
    pub round: Duration,
    /// Weddings on the calendar during the trace.
    pub weddings: Vec<Wedding>,
}

/// Why a trace could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace {name} line {line}: {reason}")]
pub struct TraceError {
    /// The trace's name.
    pub name: String,
    /// One-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

const HEADER: &str = "t_s,wedding_critical,wedding_planning,registration,media,background";

impl Trace {
    /// Parses a trace; every error names its line.
    pub fn parse(name: &str, text: &str) -> Result<Trace, TraceError> {
        let fail = |line: usize, reason: String| TraceError { name: name.to_owned(), line, reason };
        let mut trace = Trace {
            name: name.to_owned(),
            rows: Vec::new(),
            onset_s: None,
            start_unix_ms: 1_780_000_000_000,
            round: Duration::from_millis(100),
            weddings: Vec::new(),
        };
        let mut header_seen = false;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(meta) = line.strip_prefix('#') {
                let meta = meta.split(" #").next().unwrap_or_default().trim();
                let Some((key, value)) = meta.split_once(':') else { continue };
                let value = value.trim();
                let number =
                    |v: &str| v.parse::<f64>().map_err(|_| fail(line_no, format!("{key}: {v:?} is not a number")));
                match key.trim() {
                    "name" => trace.name = value.to_owned(),
                    "onset_s" => trace.onset_s = Some(number(value)?),
                    "start_unix_ms" => trace.start_unix_ms = number(value)? as i64,
                    "round_ms" => {
                        let ms = number(value)?;
                        if !(10.0..=60_000.0).contains(&ms) {
                            return Err(fail(line_no, format!("round_ms: {ms} is out of range (10 to 60000)")));
                        }
                        trace.round = Duration::from_millis(ms as u64);
                    }
                    "wedding" => {
                        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
                        let [id, region, start, end] = parts[..] else {
                            return Err(fail(line_no, "wedding: expected id,region,start_s,end_s".into()));
                        };
                        let at = |s: &str| -> Result<i64, TraceError> {
                            Ok(trace.start_unix_ms + (number(s)? * 1000.0) as i64)
                        };
                        let wedding = Wedding {
                            id: id.to_owned(),
                            region: region.to_owned(),
                            time_zone: "UTC".into(),
                            start_unix_ms: at(start)?,
                            end_unix_ms: at(end)?,
                            guests: 100,
                        };
                        wedding.validate().map_err(|reason| fail(line_no, format!("wedding: {reason}")))?;
                        trace.weddings.push(wedding);
                    }
                    _ => {}
                }
                continue;
            }
            if !header_seen {
                if line != HEADER {
                    return Err(fail(line_no, format!("expected the header {HEADER:?}")));
                }
                header_seen = true;
                continue;
            }
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != 6 {
                return Err(fail(line_no, format!("expected 6 fields, found {}", fields.len())));
            }
            let mut values = [0.0f64; 6];
            for (slot, field) in values.iter_mut().zip(&fields) {
                *slot = field
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| fail(line_no, format!("{field:?} is not a non-negative number")))?;
            }
            if trace.rows.last().is_some_and(|(t, _)| values[0] <= *t) {
                return Err(fail(line_no, format!("time {} does not increase", values[0])));
            }
            trace.rows.push((values[0], Demand([values[1], values[2], values[3], values[4], values[5]])));
        }
        if trace.rows.is_empty() {
            return Err(fail(text.lines().count(), "no rows".into()));
        }
        Ok(trace)
    }

    /// Demand at `t` seconds (held from one row to the next); `cursor` remembers the row for
    /// the next, later `t`.
    fn demand_at(&self, t: f64, cursor: &mut usize) -> Demand {
        while *cursor + 1 < self.rows.len() && self.rows[*cursor + 1].0 <= t {
            *cursor += 1;
        }
        self.rows.get(*cursor).map(|(_, d)| *d).unwrap_or_default()
    }

    /// Length in seconds (the last row's time).
    pub fn duration_s(&self) -> f64 {
        self.rows.last().map_or(0.0, |(t, _)| *t)
    }
}

/// Scores of one replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The trace.
    pub trace: String,
    /// Seconds from the spike onset to the first scale-up decision after it.
    pub onset_to_decision_s: Option<f64>,
    /// Seconds from the spike onset until serving capacity first carries the demand.
    pub onset_to_capacity_s: Option<f64>,
    /// ∫ max(0, units needed at full utilization − units serving) dt, in unit-seconds.
    pub under_provisioned_unit_seconds: f64,
    /// Cost of capacity beyond what the target utilization needs, at on-demand prices.
    pub over_provisioned_cost: f64,
    /// Total cost of the capacity held, by the decisions' purchase mixes (the baseline's at
    /// on-demand prices): information, each side priced its own way.
    pub total_cost: f64,
    /// Unit-hours of capacity held: units serving or on their way, over the run. Capacity is
    /// held from the moment it is asked for, as a cloud bills an instance from its launch.
    pub unit_hours: f64,
    /// The capacity held at one price list for every autoscaler: [`ReplayReport::unit_hours`]
    /// at the pool's on-demand price.
    pub same_price_cost: f64,
    /// The longest time from demand falling to capacity within [`NEED_MARGIN`] × need, seconds
    /// (0: capacity never stayed above it). Each round whose serving units exceed the units
    /// its demand allows ([`allowed_units`]: 1.3× need, the minimum, and while a wedding is
    /// active the protected floor and the wedding-critical reserve) counts from the last round
    /// whose demand allowed that many units while they served: the time since demand fell
    /// below what the capacity serving now is for. Capacity raised since demand last allowed it
    /// (bought ahead of a forecast, or for a climb that did not come) counts from its first
    /// round above the allowance, unless demand then rises to meet it (capacity bought ahead of
    /// load that came is not a fall); a stretch still open when the run ends counts to the end.
    pub fall_to_need_s: f64,
    /// Changes of scaling direction (up after down or down after up).
    pub direction_reversals: u32,
    /// Requests shed by admission control, per class (in [`TrafficClass::ALL`] order).
    pub shed_requests: [f64; 5],
    /// Wedding-critical requests beyond what serving capacity could carry (should be 0).
    pub wedding_critical_unserved: f64,
    /// Decisions taken.
    pub decisions: usize,
    /// Peak total demand, requests/s.
    pub peak_demand: f64,
    /// Peak serving units.
    pub peak_units: u32,
    /// Fewest serving units while a wedding protected the pool's region, counted once the
    /// protection has lasted the provisioning delay (capacity asked for at its start could not
    /// serve sooner). None: never protected that long.
    pub min_units_while_protected: Option<u32>,
    /// 99th percentile latency of each class's admitted requests, ms (in
    /// [`TrafficClass::ALL`] order; 0 for a class without requests), from a queueing model:
    /// 20 ms of service, an M/M/1 wait at the class's utilization, and the time to drain the
    /// backlog ahead of it.
    pub p99_latency_ms: [f64; 5],
}

impl ReplayReport {
    /// A report with nothing scored yet.
    fn empty(trace: &str) -> ReplayReport {
        ReplayReport {
            trace: trace.to_owned(),
            onset_to_decision_s: None,
            onset_to_capacity_s: None,
            under_provisioned_unit_seconds: 0.0,
            over_provisioned_cost: 0.0,
            total_cost: 0.0,
            unit_hours: 0.0,
            same_price_cost: 0.0,
            fall_to_need_s: 0.0,
            direction_reversals: 0,
            shed_requests: [0.0; 5],
            wedding_critical_unserved: 0.0,
            decisions: 0,
            peak_demand: 0.0,
            peak_units: 0,
            min_units_while_protected: None,
            p99_latency_ms: [0.0; 5],
        }
    }

    /// Requests of `class` shed.
    pub fn shed(&self, class: TrafficClass) -> f64 {
        self.shed_requests[TrafficClass::ALL.iter().position(|c| *c == class).unwrap_or(0)]
    }
}

/// The pool the shipped traces are written for: 100 requests/s per unit for every class at a
/// 70% target, all classes, a protected floor of 30 units (within `[min, max]`), default prices.
pub fn trace_pool(min: u32, max: u32, provisioning_delay: Duration) -> PoolSpec {
    PoolSpec {
        name: "web".into(),
        region: "eu-west".into(),
        min,
        max,
        capacity_per_unit: 100.0,
        class_capacity: [100.0; 5],
        target_utilization: 0.7,
        classes: TrafficClass::ALL.to_vec(),
        provisioning_delay,
        protected_floor: 30.min(max).max(min),
        time_zone: "UTC".into(),
        cost: crate::engine::pool::UnitCost::default(),
        placements: Vec::new(),
        assume_size: None,
    }
}

/// Runs the engine over `trace` for `pool` and scores it. Deterministic.
pub fn replay(trace: &Trace, pool: PoolSpec, mut settings: EngineSettings) -> (ReplayReport, Vec<Decision>) {
    settings.round_interval = trace.round;
    let round_s = trace.round.as_secs_f64();
    let mut engine = Engine::new(settings, vec![pool.clone()]);
    for wedding in &trace.weddings {
        // Parsed weddings are valid; an invalid one would simply not protect.
        let _ = engine.handle_wedding_upsert(wedding.clone());
    }
    // Warm start: the pool serves what the first row needs (and its floor, if protected), as a
    // running pool would; the engine learns that as its starting point.
    let first = trace.rows.first().map(|(_, d)| d.total()).unwrap_or(0.0);
    let mut serving = PoolModel::warm_units(&pool, first);
    if engine.active_weddings(&pool.region, trace.start_unix_ms) > 0 {
        serving = serving.max(pool.protected_floor).min(pool.max);
    }
    let region = pool.region.clone();
    let mut model = PoolModel::new(&trace.name, pool, serving, Serving::ByPriority, trace.onset_s);
    let mut decisions = Vec::new();
    let mut cursor = 0usize;
    let rounds = (trace.duration_s() / round_s).floor() as u64;
    for r in 0..=rounds {
        let t = r as f64 * round_s;
        let demand = trace.demand_at(t, &mut cursor);
        let now = Timestamp::from_nanos((t * 1e9) as u64);
        let wall = trace.start_unix_ms + (t * 1000.0) as i64;
        model.arrive(t);
        engine.handle_pool_state(now, 0, model.serving());
        engine.handle_demand(now, 0, demand);
        engine.handle_timeout(now, wall);
        while let Some(decision) = engine.poll_decision() {
            model.apply(t, &decision);
            decisions.push(decision);
        }
        let protected = engine.active_weddings(&region, wall) > 0;
        model.round(t, round_s, demand, protected);
    }
    (model.report(), decisions)
}

/// Capacity within this multiple of what demand needs at the target utilization is not held
/// after a fall ([`ReplayReport::fall_to_need_s`]).
pub const NEED_MARGIN: f64 = 1.3;

/// The most units a pool may hold for `weighted` requests/s (per-class costs applied) without
/// counting as capacity held after a fall: [`NEED_MARGIN`] × what the demand needs at the
/// target utilization (rounded up to whole units), and never less than the pool's minimum.
/// While a wedding protects the pool's region, its protected floor and the wedding-critical
/// reserve (the demand within `1 − reserve` of the capacity, the share the engine's admission
/// leaves the other classes while protected) are allowed too: capacity held above 1.3× need
/// only by them is protection, not a slow scale-down.
pub fn allowed_units(pool: &PoolSpec, weighted: f64, protected: bool, reserve: f64) -> u32 {
    let need = weighted.max(0.0) / pool.target_load_per_unit().max(f64::MIN_POSITIVE);
    // A hair above a whole number of units is that number (rates summed in floating point).
    let whole = |units: f64| (units - 1e-6).ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
    let mut allowed = whole(NEED_MARGIN * need).max(pool.min);
    if protected {
        let free = (1.0 - reserve).clamp(0.1, 1.0);
        let reserve_units = weighted.max(0.0) / (pool.capacity_per_unit * free).max(f64::MIN_POSITIVE);
        allowed = allowed.max(pool.protected_floor).max(whole(reserve_units));
    }
    allowed
}

/// How serving capacity is shared out when demand exceeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Wedding-critical first (the engine's admission control sheds the rest by class).
    ByPriority,
    /// Every class alike (an autoscaler without classes).
    Proportional,
}

/// One pool under simulation: its capacity (each scale-up arriving after the provisioning
/// delay), the admission levels and cost its autoscaler last set, and the scores so far. The
/// replays here and the fleet simulator step it the same way: [`PoolModel::arrive`], then
/// [`PoolModel::apply`] (or [`PoolModel::scale`]) for each decision, then [`PoolModel::round`].
#[derive(Debug)]
pub struct PoolModel {
    pool: PoolSpec,
    capacity: Capacity,
    scorer: Scorer,
    report: ReplayReport,
    onset_s: Option<f64>,
    admission: [f64; 5],
    cost_per_hour: Option<f64>,
}

impl PoolModel {
    /// A pool serving `serving` units, scored as `name`; `onset_s` is the spike onset (seconds
    /// from the start) the onset-to-decision and onset-to-capacity scores count from.
    pub fn new(name: &str, pool: PoolSpec, serving: u32, serving_rule: Serving, onset_s: Option<f64>) -> PoolModel {
        let capacity = Capacity::new(serving, pool.provisioning_delay);
        PoolModel {
            pool,
            capacity,
            scorer: Scorer::new(serving_rule),
            report: ReplayReport::empty(name),
            onset_s,
            admission: [1.0; 5],
            cost_per_hour: None,
        }
    }

    /// Units a running pool would serve for `demand` (requests/s) at its target utilization,
    /// within its bounds: the warm start of a replay.
    pub fn warm_units(pool: &PoolSpec, demand: f64) -> u32 {
        let units = (demand / pool.target_load_per_unit().max(f64::MIN_POSITIVE)).ceil();
        (units.clamp(0.0, f64::from(u32::MAX)) as u32).clamp(pool.min, pool.max)
    }

    /// The pool.
    pub fn pool(&self) -> &PoolSpec {
        &self.pool
    }

    /// Units serving now.
    pub fn serving(&self) -> u32 {
        self.capacity.serving
    }

    /// Units serving or on their way.
    pub fn asked(&self) -> u32 {
        self.capacity.asked()
    }

    /// Admission levels last set, per class (in [`TrafficClass::ALL`] order).
    pub fn admission(&self) -> [f64; 5] {
        self.admission
    }

    /// Capacity asked for by `t` that is ready comes into service.
    pub fn arrive(&mut self, t: f64) {
        self.capacity.arrive(t);
    }

    /// An engine decision at `t`: scales, and takes its admission levels and cost.
    pub fn apply(&mut self, t: f64, decision: &Decision) {
        self.capacity.scale(t, decision.from, decision.to, self.onset_s, &mut self.report);
        for a in &decision.admission {
            if let Some(i) = TrafficClass::ALL.iter().position(|c| *c == a.class) {
                self.admission[i] = a.admit;
            }
        }
        self.cost_per_hour = Some(decision.cost_per_hour);
        self.report.decisions += 1;
    }

    /// A scale from `from` to `to` units at `t` by an autoscaler without admission or purchase
    /// mix (its capacity is costed at on-demand prices).
    pub fn scale(&mut self, t: f64, from: u32, to: u32) {
        self.capacity.scale(t, from, to, self.onset_s, &mut self.report);
        self.report.decisions += 1;
    }

    /// Scores one round of `round_s` seconds at `t` with `demand`; `protected`: a wedding is
    /// active in the pool's region.
    pub fn round(&mut self, t: f64, round_s: f64, demand: Demand, protected: bool) {
        let serving = self.capacity.serving;
        let held = self.capacity.asked();
        let cost_per_hour = self.cost_per_hour.unwrap_or(f64::from(serving) * self.pool.cost.on_demand);
        let round = Round { t, round_s, demand, serving, held, admission: self.admission, cost_per_hour, protected };
        self.scorer.round(&mut self.report, &self.pool, self.onset_s, &round);
    }

    /// The scores so far, latency percentiles included.
    pub fn report(&self) -> ReplayReport {
        let mut report = self.report.clone();
        self.scorer.finish(&mut report);
        report
    }

    /// Adds this pool's latency samples to `into` (one histogram per class, in
    /// [`TrafficClass::ALL`] order, µs), so pools can be scored together.
    pub fn merge_latency(&self, into: &mut [hdrhistogram::Histogram<u64>]) {
        for (sum, own) in into.iter_mut().zip(&self.scorer.latency) {
            // Same bounds on both sides: adding cannot fail.
            let _ = sum.add(own);
        }
    }

    /// Each class's latency in the last round scored, ms (in [`TrafficClass::ALL`] order).
    pub fn latency_now_ms(&self) -> [f64; 5] {
        self.scorer.last_latency_s.map(|s| s * 1000.0)
    }

    /// Empty latency histograms with the bounds [`PoolModel::merge_latency`] expects.
    pub fn latency_histograms() -> Vec<hdrhistogram::Histogram<u64>> {
        Scorer::histograms()
    }
}

/// The pool's capacity as the replays model it: each scale-up's units serve once its own
/// provisioning delay has passed (a later, larger request does not hold back an earlier one, as
/// with a cloud provider); a scale-down takes effect at once on the units serving and cuts the
/// requests on their way to it.
#[derive(Debug)]
struct Capacity {
    serving: u32,
    /// Requests in flight, oldest first: (ready at, units serving from then).
    arriving: std::collections::VecDeque<(f64, u32)>,
    delay_s: f64,
    last_up: Option<bool>,
}

impl Capacity {
    fn new(serving: u32, delay: Duration) -> Capacity {
        Capacity { serving, arriving: std::collections::VecDeque::new(), delay_s: delay.as_secs_f64(), last_up: None }
    }

    /// Units asked for come into service.
    fn arrive(&mut self, t: f64) {
        while let Some(&(ready, units)) = self.arriving.front()
            && t >= ready
        {
            self.serving = units;
            self.arriving.pop_front();
        }
    }

    /// Units serving or on their way.
    fn asked(&self) -> u32 {
        self.arriving.back().map_or(self.serving, |(_, units)| *units)
    }

    /// A decision from `from` to `to` units at `t`; scores the onset-to-decision time and
    /// direction reversals.
    fn scale(&mut self, t: f64, from: u32, to: u32, onset_s: Option<f64>, report: &mut ReplayReport) {
        let up = match to.cmp(&from) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => return,
        };
        if up {
            if report.onset_to_decision_s.is_none() && onset_s.is_some_and(|onset| t >= onset) {
                report.onset_to_decision_s = onset_s.map(|onset| t - onset);
            }
            self.arriving.push_back((t + self.delay_s, to));
        } else {
            // Units serving above `to` stop at once; requests on their way are cut to `to` and
            // still arrive on time (a cloud cancels the instances not yet needed, not the rest).
            self.serving = self.serving.min(to);
            for (_, units) in &mut self.arriving {
                *units = (*units).min(to);
            }
            let serving = self.serving;
            self.arriving.retain(|(_, units)| *units > serving);
        }
        if self.last_up == Some(!up) {
            report.direction_reversals += 1;
        }
        self.last_up = Some(up);
    }
}

/// One round's facts, for [`Scorer::round`].
struct Round {
    t: f64,
    round_s: f64,
    demand: Demand,
    serving: u32,
    /// Units serving or on their way.
    held: u32,
    admission: [f64; 5],
    cost_per_hour: f64,
    protected: bool,
}

/// A stretch of rounds serving more than demand allows.
#[derive(Debug, Clone, Copy)]
struct Excess {
    /// Its first round, seconds.
    since: f64,
    /// From when it served capacity bought ahead: more than any demand allowed since the
    /// capacity was raised to it.
    unjustified_since: Option<f64>,
}

/// Service time of one request in the latency model.
const SERVICE_S: f64 = 0.02;
/// Latency recorded while a pool has no capacity at all.
const NO_CAPACITY_WAIT_S: f64 = 60.0;

/// Scores rounds into a report: the sums, the protection floor and, through per-class queues,
/// latency.
#[derive(Debug)]
struct Scorer {
    serving_rule: Serving,
    protected_since: Option<f64>,
    /// Admitted requests waiting, per class (in "average requests").
    backlog: [f64; 5],
    /// Latency of admitted requests per class, µs, weighted by requests.
    latency: Vec<hdrhistogram::Histogram<u64>>,
    /// Each class's latency in the last round, seconds.
    last_latency_s: [f64; 5],
    /// The wedding-critical reserve allowed while protected ([`allowed_units`]).
    reserve: f64,
    /// Past rounds' allowed units that no later round has matched, (time, units): the units fall
    /// from the first to the last, so the last round that allowed `n` units is found by
    /// bisection. At most one entry per distinct number of units.
    allowed_since: Vec<(f64, u32)>,
    /// The stretch of rounds serving more than allowed, if one is open.
    excess: Option<Excess>,
    /// Units serving in the last round scored.
    last_serving: u32,
    /// The last round in which the units serving rose, seconds.
    raised_at: f64,
    /// The end of the last round scored, seconds.
    end_s: f64,
}

impl Scorer {
    fn new(serving_rule: Serving) -> Scorer {
        Scorer {
            serving_rule,
            protected_since: None,
            backlog: [0.0; 5],
            latency: Scorer::histograms(),
            last_latency_s: [0.0; 5],
            reserve: EngineSettings::default().wedding_critical_reserve,
            allowed_since: Vec::new(),
            excess: None,
            last_serving: 0,
            raised_at: 0.0,
            end_s: 0.0,
        }
    }

    fn histograms() -> Vec<hdrhistogram::Histogram<u64>> {
        (0..5).filter_map(|_| hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).ok()).collect()
    }

    /// Adds one round to `report`.
    fn round(&mut self, report: &mut ReplayReport, pool: &PoolSpec, onset_s: Option<f64>, r: &Round) {
        let (t, round_s, demand, serving) = (r.t, r.round_s, r.demand, r.serving);
        let total = demand.total();
        report.peak_demand = report.peak_demand.max(total);
        // Capacity comparisons in "average requests" (per-class costs applied).
        let weighted: f64 = TrafficClass::ALL.iter().map(|c| demand.of(*c) * pool.class_weight(*c)).sum();
        report.peak_units = report.peak_units.max(serving);
        let capacity = f64::from(serving) * pool.capacity_per_unit;
        let needed_full = weighted / pool.capacity_per_unit;
        report.under_provisioned_unit_seconds += (needed_full - f64::from(serving)).max(0.0) * round_s;
        let needed_target = (weighted / pool.target_load_per_unit()).ceil();
        report.over_provisioned_cost +=
            (f64::from(serving) - needed_target).max(0.0) * pool.cost.on_demand * round_s / 3600.0;
        report.total_cost += r.cost_per_hour * round_s / 3600.0;
        report.unit_hours += f64::from(r.held) * round_s / 3600.0;
        report.same_price_cost += f64::from(r.held) * pool.cost.on_demand * round_s / 3600.0;
        self.excess(report, pool, weighted, r);
        for (i, class) in TrafficClass::ALL.iter().enumerate() {
            report.shed_requests[i] += demand.of(*class) * (1.0 - r.admission[i]) * round_s;
        }
        let critical = demand.of(TrafficClass::WeddingCritical) * pool.class_weight(TrafficClass::WeddingCritical);
        report.wedding_critical_unserved += match self.serving_rule {
            Serving::ByPriority => (critical - capacity).max(0.0),
            Serving::Proportional if weighted > capacity && weighted > 0.0 => critical * (1.0 - capacity / weighted),
            Serving::Proportional => 0.0,
        } * round_s;
        if report.onset_to_capacity_s.is_none()
            && let Some(onset) = onset_s.filter(|onset| t >= *onset)
        {
            let admitted: f64 = TrafficClass::ALL.iter().enumerate().map(|(i, c)| demand.of(*c) * r.admission[i]).sum();
            if capacity >= total || (capacity >= admitted && serving >= pool.max) {
                report.onset_to_capacity_s = Some(t - onset);
            }
        }
        if r.protected {
            let since = *self.protected_since.get_or_insert(t);
            if t - since >= pool.provisioning_delay.as_secs_f64() {
                report.min_units_while_protected =
                    Some(report.min_units_while_protected.map_or(serving, |m| m.min(serving)));
            }
        } else {
            self.protected_since = None;
        }
        let admitted: [f64; 5] = std::array::from_fn(|i| {
            let class = TrafficClass::ALL[i];
            demand.of(class) * pool.class_weight(class) * r.admission[i]
        });
        self.queue(&admitted, capacity, round_s);
    }

    /// Times how long capacity serving above what demand allows ([`allowed_units`]) outlasts
    /// the demand that allowed it (see [`ReplayReport::fall_to_need_s`]).
    fn excess(&mut self, report: &mut ReplayReport, pool: &PoolSpec, weighted: f64, r: &Round) {
        let allowed = allowed_units(pool, weighted, r.protected, self.reserve);
        while self.allowed_since.last().is_some_and(|(_, units)| *units <= allowed) {
            self.allowed_since.pop();
        }
        self.allowed_since.push((r.t, allowed));
        let serving = r.serving;
        if serving > self.last_serving {
            self.raised_at = r.t;
        }
        if serving > allowed {
            let excess = self.excess.get_or_insert(Excess { since: r.t, unjustified_since: None });
            // The last round whose demand allowed this many units, if they were serving then.
            let allowing = self.allowed_since.partition_point(|(_, units)| *units >= serving);
            match allowing.checked_sub(1).and_then(|i| self.allowed_since.get(i)) {
                Some((fell_at, _)) if *fell_at >= self.raised_at => {
                    report.fall_to_need_s = report.fall_to_need_s.max(r.t - fell_at);
                }
                // Raised since demand last allowed it: bought ahead, not held after a fall.
                _ => {
                    let since = excess.since.max(self.raised_at);
                    excess.unjustified_since.get_or_insert(since);
                }
            }
        } else if let Some(Excess { unjustified_since: Some(since), .. }) = self.excess.take()
            && serving < self.last_serving
        {
            // Capacity bought ahead of demand that did not come, ended by a scale-down: held
            // from its first round above the need.
            report.fall_to_need_s = report.fall_to_need_s.max(r.t - since);
        }
        self.last_serving = serving;
        self.end_s = r.t + r.round_s;
    }

    /// Serves this round's admitted requests (requests/s per class) from `capacity` and records
    /// their latency.
    fn queue(&mut self, admitted: &[f64; 5], capacity: f64, round_s: f64) {
        let budget = capacity * round_s;
        let wait_for = |backlog: f64, load: f64| {
            if capacity <= 0.0 {
                return NO_CAPACITY_WAIT_S;
            }
            let rho = (load / capacity).min(0.99);
            SERVICE_S * rho / (1.0 - rho) + backlog / capacity
        };
        let mut latency_s = [0.0; 5];
        match self.serving_rule {
            Serving::ByPriority => {
                // Most important class first: each waits for the classes ahead of it and itself.
                let mut left = budget;
                let (mut load_ahead, mut backlog_ahead) = (0.0, 0.0);
                for i in 0..5 {
                    let queued = self.backlog[i] + admitted[i] * round_s;
                    let served = queued.min(left);
                    left -= served;
                    self.backlog[i] = queued - served;
                    load_ahead += admitted[i];
                    backlog_ahead += self.backlog[i];
                    latency_s[i] = SERVICE_S + wait_for(backlog_ahead, load_ahead);
                }
            }
            Serving::Proportional => {
                // One queue: every class waits alike.
                let queued: f64 = (0..5).map(|i| self.backlog[i] + admitted[i] * round_s).sum();
                let kept = if queued > 0.0 { 1.0 - queued.min(budget) / queued } else { 0.0 };
                for (backlog, rate) in self.backlog.iter_mut().zip(admitted) {
                    *backlog = (*backlog + rate * round_s) * kept;
                }
                let wait = wait_for(self.backlog.iter().sum(), admitted.iter().sum());
                latency_s = [SERVICE_S + wait; 5];
            }
        }
        self.last_latency_s = latency_s;
        for (i, histogram) in self.latency.iter_mut().enumerate() {
            let requests = (admitted[i] * round_s).round();
            if requests >= 1.0 {
                let micros = (latency_s[i] * 1e6).clamp(1.0, 3.6e9) as u64;
                let _ = histogram.record_n(micros, requests as u64);
            }
        }
    }

    /// Writes the latency percentiles into `report`, and counts a stretch of excess capacity
    /// still open to the end of the run.
    fn finish(&self, report: &mut ReplayReport) {
        if let Some(since) = self.excess.as_ref().and_then(|e| e.unjustified_since) {
            report.fall_to_need_s = report.fall_to_need_s.max(self.end_s - since);
        }
        for (i, histogram) in self.latency.iter().enumerate() {
            if let Some(p99) = report.p99_latency_ms.get_mut(i)
                && !histogram.is_empty()
            {
                *p99 = histogram.value_at_quantile(0.99) as f64 / 1000.0;
            }
        }
    }
}

/// Runs the Kubernetes HPA baseline ([`crate::baseline::Hpa`]) over `trace` for `pool`, against
/// the same capacity model, and scores it the same way. Its capacity is all on demand (it has no
/// purchase mix), it has no admission control, and past capacity every class suffers alike.
/// Deterministic.
pub fn replay_hpa(trace: &Trace, pool: &PoolSpec, settings: crate::baseline::HpaSettings) -> ReplayReport {
    let round_s = trace.round.as_secs_f64();
    let mut hpa = crate::baseline::Hpa::new(settings, pool.min, pool.max, pool.target_utilization);
    let first = trace.rows.first().map(|(_, d)| d.total()).unwrap_or(0.0);
    let serving = PoolModel::warm_units(pool, first);
    let mut model = PoolModel::new(&trace.name, pool.clone(), serving, Serving::Proportional, trace.onset_s);
    let mut cursor = 0usize;
    let rounds = (trace.duration_s() / round_s).floor() as u64;
    for r in 0..=rounds {
        let t = r as f64 * round_s;
        let demand = trace.demand_at(t, &mut cursor);
        let wall = trace.start_unix_ms + (t * 1000.0) as i64;
        model.arrive(t);
        // Its metric covers the replicas serving; those on their way have none yet.
        let serving = model.serving();
        hpa.observe(t, serving, utilization(pool, demand, serving));
        // It sizes from what it asked for, as the HPA reads the workload's replica count.
        let asked = model.asked();
        if let Some(to) = hpa.sync(t, asked) {
            model.scale(t, asked, to);
        }
        let protected =
            trace.weddings.iter().any(|w| w.region == pool.region && w.start_unix_ms <= wall && wall < w.end_unix_ms);
        model.round(t, round_s, demand, protected);
    }
    model.report()
}

/// What the HPA's resource metric reads for `replicas` serving: demand over their capacity, 0
/// with none. Replicas still on their way are not in it: the HPA counts them as idle on a
/// scale-up and leaves them out on a scale-down, Kubernetes' rules for pods that are not ready
/// (see [`crate::baseline`]). Saturated replicas read above 100%, which flatters the baseline: a
/// real CPU metric caps.
pub fn utilization(pool: &PoolSpec, demand: Demand, replicas: u32) -> f64 {
    let weighted: f64 = TrafficClass::ALL.iter().map(|c| demand.of(*c) * pool.class_weight(*c)).sum();
    let servable = f64::from(replicas) * pool.capacity_per_unit;
    if servable > 0.0 { weighted / servable } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::pool::UnitCost;

    fn pool() -> PoolSpec {
        PoolSpec {
            name: "p".into(),
            region: "eu-west".into(),
            min: 2,
            max: 100,
            capacity_per_unit: 100.0,
            class_capacity: [100.0; 5],
            target_utilization: 0.7,
            classes: TrafficClass::ALL.to_vec(),
            provisioning_delay: Duration::from_secs(30),
            protected_floor: 10,
            time_zone: "UTC".into(),
            cost: UnitCost::default(),
            placements: Vec::new(),
            assume_size: None,
        }
    }

    #[test]
    fn queues_serve_wedding_critical_first_unless_there_are_no_classes() {
        // 200 rps of capacity; 100 rps wedding-critical and 300 rps media for a minute.
        let admitted = [100.0, 0.0, 0.0, 300.0, 0.0];
        let mut priority = Scorer::new(Serving::ByPriority);
        let mut shared = Scorer::new(Serving::Proportional);
        for _ in 0..600 {
            priority.queue(&admitted, 200.0, 0.1);
            shared.queue(&admitted, 200.0, 0.1);
        }
        let (mut a, mut b) = (ReplayReport::empty("p"), ReplayReport::empty("s"));
        priority.finish(&mut a);
        shared.finish(&mut b);
        // Wedding-critical sees half the capacity busy: 20 ms of service + 20 ms of waiting.
        assert!((a.p99_latency_ms[0] - 40.0).abs() < 2.0, "{:?}", a.p99_latency_ms);
        // Media queues behind it: 200 rps over for a minute, drained at 200 rps: up to a minute.
        assert!(a.p99_latency_ms[3] > 50_000.0, "{:?}", a.p99_latency_ms);
        // Without classes, wedding-critical waits in the same queue as media.
        assert!(b.p99_latency_ms[0] > 25_000.0, "{:?}", b.p99_latency_ms);
        assert_eq!(a.p99_latency_ms[1], 0.0, "no requests, no figure");
    }

    #[test]
    fn parses_metadata_rows_and_names_bad_lines() {
        let text = "# name: small\n# onset_s: 5\n# round_ms: 100\n# wedding: w-1,eu-west,0,60\nt_s,wedding_critical,wedding_planning,registration,media,background\n0,10,0,0,0,0\n5,20,0,0,0,0\n";
        let trace = Trace::parse("f", text).unwrap();
        assert_eq!(trace.name, "small");
        assert_eq!(trace.onset_s, Some(5.0));
        assert_eq!(trace.rows.len(), 2);
        assert_eq!(trace.weddings.len(), 1);
        let bad = Trace::parse("f", "t_s,wedding_critical,wedding_planning,registration,media,background\n0,1,2,3\n")
            .unwrap_err();
        assert_eq!(bad.line, 2);
        assert!(bad.to_string().contains("expected 6 fields"));
        let back = Trace::parse(
            "f",
            "t_s,wedding_critical,wedding_planning,registration,media,background\n5,1,1,1,1,1\n1,1,1,1,1,1\n",
        )
        .unwrap_err();
        assert!(back.reason.contains("does not increase"));
        assert!(Trace::parse("f", "a,b\n").unwrap_err().reason.contains("header"));
        assert!(
            Trace::parse("f", "t_s,wedding_critical,wedding_planning,registration,media,background\n0,-1,0,0,0,0\n")
                .is_err()
        );
    }

    #[test]
    fn a_scale_down_cuts_capacity_on_its_way_and_it_still_arrives_on_time() {
        let mut model = PoolModel::new("p", pool(), 5, Serving::ByPriority, None);
        model.scale(0.0, 5, 20);
        assert_eq!((model.serving(), model.asked()), (5, 20));
        // Before the 20 arrive (30 s), the target comes down to 12: 12 arrive at 30 s.
        model.scale(10.0, 20, 12);
        assert_eq!((model.serving(), model.asked()), (5, 12));
        model.arrive(29.9);
        assert_eq!(model.serving(), 5);
        model.arrive(30.0);
        assert_eq!(model.serving(), 12);
        // Below what serves: the serving units go at once and nothing is left on its way.
        model.scale(40.0, 12, 20);
        model.scale(41.0, 20, 3);
        assert_eq!((model.serving(), model.asked()), (3, 3));
    }

    #[test]
    fn allowed_units_are_need_with_the_margin_and_the_floors_only_while_protected() {
        let p = pool(); // 70 rps per unit at the target, min 2, protected floor 10
        // 700 rps needs 10 units; 1.3x is 13.
        assert_eq!(allowed_units(&p, 700.0, false, 0.2), 13);
        // A load a hair above whole units does not round up past them.
        assert_eq!(allowed_units(&p, 70.0 * 10.0 / 1.3 + 1e-9, false, 0.2), 10);
        assert_eq!(allowed_units(&p, 0.0, false, 0.2), 2, "the minimum");
        assert_eq!(allowed_units(&p, 0.0, true, 0.2), 10, "the protected floor");
        // The reserve: with half of capacity kept for wedding-critical, 700 rps may hold 14
        // units (700 in half of 100 a unit) while protected.
        assert_eq!(allowed_units(&p, 700.0, true, 0.5), 14);
        assert_eq!(allowed_units(&p, 700.0, false, 0.5), 13);
    }

    /// Scores `units(t)` against `demand(t)` (requests/s of background) for `seconds`, in
    /// rounds of 1 s, with a wedding active while `protected(t)`.
    fn score(
        seconds: u32,
        units: impl Fn(f64) -> u32,
        rps: impl Fn(f64) -> f64,
        protected: impl Fn(f64) -> bool,
    ) -> ReplayReport {
        let mut p = pool();
        p.provisioning_delay = Duration::ZERO;
        let mut model = PoolModel::new("p", p, units(0.0), Serving::ByPriority, None);
        for s in 0..seconds {
            let t = f64::from(s);
            let (from, to) = (model.asked(), units(t));
            model.scale(t, from, to);
            model.arrive(t);
            let mut demand = Demand::default();
            demand.set(TrafficClass::Background, rps(t));
            model.round(t, 1.0, demand, protected(t));
        }
        model.report()
    }

    #[test]
    fn unit_hours_and_the_same_price_cost_count_what_is_held() {
        // 10 units for an hour, then 20 for an hour.
        let report = score(7200, |t| if t < 3600.0 { 10 } else { 20 }, |_| 700.0, |_| false);
        assert!((report.unit_hours - 30.0).abs() < 1e-9, "{report:?}");
        assert!((report.same_price_cost - 30.0 * UnitCost::default().on_demand).abs() < 1e-9, "{report:?}");
    }

    #[test]
    fn the_time_from_demand_falling_counts_until_the_scale_down() {
        // 1,400 rps (20 units) until 100 s, then 350 rps (5 units; 1.3x is 7): the pool keeps 20
        // units until 190 s, then goes to 6.
        let report =
            score(400, |t| if t < 190.0 { 20 } else { 6 }, |t| if t < 100.0 { 1400.0 } else { 350.0 }, |_| false);
        assert_eq!(report.fall_to_need_s, 90.0, "{report:?}");
        // Never back within 1.3x need: the stretch counts to the end of the run.
        let report = score(400, |_| 20, |t| if t < 100.0 { 1400.0 } else { 350.0 }, |_| false);
        assert_eq!(report.fall_to_need_s, 300.0, "{report:?}");
        // Capacity bought ahead of demand that then comes is not a fall.
        let report = score(400, |_| 20, |t| if t < 100.0 { 350.0 } else { 1400.0 }, |_| false);
        assert_eq!(report.fall_to_need_s, 0.0, "{report:?}");
        // Nor is capacity raised again ahead of a rise after an earlier fall, though an earlier
        // demand once needed it: 20 units until 100 s, 6 while demand is low, 20 again from
        // 200 s ahead of the demand that comes at 260 s.
        let report = score(
            400,
            |t| if (100.0..200.0).contains(&t) { 6 } else { 20 },
            |t| if (100.0..260.0).contains(&t) { 350.0 } else { 1400.0 },
            |_| false,
        );
        assert_eq!(report.fall_to_need_s, 0.0, "{report:?}");
        // The same capacity bought ahead, when the demand does not come and it is released at
        // 300 s: held for the 100 s from its first round.
        let report = score(
            400,
            |t| if (100.0..200.0).contains(&t) || t >= 300.0 { 6 } else { 20 },
            |t| if t < 100.0 { 1400.0 } else { 350.0 },
            |_| false,
        );
        assert_eq!(report.fall_to_need_s, 100.0, "{report:?}");
        // Held by the protected floor (10) while a wedding is active: not counted; once the
        // wedding ends, the floor's units count from then.
        let report = score(400, |t| if t < 300.0 { 10 } else { 2 }, |_| 70.0, |t| t < 200.0);
        assert_eq!(report.fall_to_need_s, 100.0, "{report:?}");
    }

    #[test]
    fn a_step_is_scored() {
        let mut text =
            String::from("# onset_s: 60\nt_s,wedding_critical,wedding_planning,registration,media,background\n");
        for t in 0..180 {
            let media = if t < 60 { 300 } else { 3000 };
            text.push_str(&format!("{t},50,0,0,{media},0\n"));
        }
        let trace = Trace::parse("step", &text).unwrap();
        let (report, decisions) = replay(&trace, pool(), EngineSettings::default());
        assert!(report.onset_to_decision_s.unwrap() <= 1.0, "{report:?}");
        // Capacity arrives 30 s after the decision.
        let to_capacity = report.onset_to_capacity_s.unwrap();
        assert!((30.0..=32.0).contains(&to_capacity), "{report:?}");
        assert!(report.under_provisioned_unit_seconds > 0.0);
        assert_eq!(report.wedding_critical_unserved, 0.0);
        assert_eq!(report.shed(TrafficClass::WeddingCritical), 0.0);
        assert!(report.shed(TrafficClass::Media) > 0.0, "media waits for capacity: {report:?}");
        assert!(!decisions.is_empty());
        // Same trace, same scores.
        assert_eq!(replay(&trace, pool(), EngineSettings::default()).0, report);
    }
}
