//! The decision engine: a sans-IO state machine from demand, pool states and the wedding
//! calendar to scaling and admission decisions, each with its reasons.
//!
//! Drive it like quinn-proto: feed inputs with `handle_*(now, …)`, call
//! [`Engine::handle_timeout`] when [`Engine::poll_timeout`] says, and drain
//! [`Engine::poll_decision`]. It never reads a clock or does I/O, and the same inputs always give
//! the same decisions, so the daemon, the tests and the simulator run the same code.
//!
//! One round per pool:
//! 1. *Freshness*: no fresh demand for `stale_rounds` rounds → hold (never scale in blind).
//! 2. *Load*: a slow EWMA of demand; while a CUSUM spike is active (or before the detector has
//!    a baseline), the max of that and the
//!    mean of the last five samples (0.5 s at 10 Hz), and, when that mean has kept climbing
//!    across each quarter of the last 30 s (a ramp, not a step), projected one provisioning
//!    delay ahead at the slowest quarter's rate (at most 2×), so capacity asked for during a
//!    climb fits the demand when it arrives.
//! 3. *Target tracking*: `desired = ceil(load / (capacity per unit × target utilization))`,
//!    ignored while utilization is within the tolerance of the target.
//! 4. *Scale-up cap*: at most `max_scale_up_factor` × current per decision.
//! 5. *Scale-down*: only to the highest desired over the stabilization window, at most
//!    `max_scale_down_fraction` per step, at most once per cooldown. What was planned ahead of
//!    the measured load (a projected climb, a failover's clients not here yet) holds only while
//!    it goes on: a climb that stops releases what was bought for it, serving or on its way.
//!
//! Then every pool's proposal (target, placement, spot units, admission) goes to the round's
//! [`policy::RoundPolicy`] at once ([`Engine::handle_timeout_with`]; the daemon's policies are
//! the WASM plugins). Their changes apply in order and each is a [`Reason::Policy`] naming the
//! policy and its version; then:
//! 6. *Protection*: while a wedding is active in the region, never below the protected floor.
//! 7. *Clamp* to [min, max].
//! 8. *Admission*: when demand exceeds what available capacity serves, degrade classes in the
//!    configured order; wedding-critical is always admitted, and while protected the other
//!    classes may use at most `1 - wedding_critical_reserve` of capacity.
//! 9. *Cost*: split the target into reserved / on-demand / spot, wedding-critical never on spot.

pub mod decision;
pub mod detector;
pub mod forecast;
pub mod policy;
pub mod pool;

use crate::TrafficClass;
use crate::time::{Timestamp, duration_nanos};
use decision::{Admission, Decision, PurchaseMix, Reason};
use detector::{DetectorTuning, Spike, SpikeDetector};
use forecast::{ForecastError, Forecaster, SeasonalMultipliers, WeeklyProfile};
use jiff::tz::TimeZone;
use policy::{NoPolicy, PolicyAction, PolicyRound, PolicyVerdict, PoolProposal, RoundPolicy, VetoKind};
use pool::{PoolSpec, Wedding};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Engine-wide tuning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineSettings {
    /// Time between decision rounds.
    #[serde(with = "humantime_serde")]
    pub round_interval: Duration,
    /// Utilization within this fraction of the target causes no change.
    pub tolerance: f64,
    /// Scale-down waits until desired capacity stayed lower for this long.
    #[serde(with = "humantime_serde")]
    pub scale_down_stabilization: Duration,
    /// At least this long between two scale-downs of one pool.
    #[serde(with = "humantime_serde")]
    pub scale_down_cooldown: Duration,
    /// Largest fraction of capacity one scale-down removes.
    pub max_scale_down_fraction: f64,
    /// Largest factor one scale-up multiplies capacity by.
    pub max_scale_up_factor: u32,
    /// Rounds without fresh demand before holding.
    pub stale_rounds: u32,
    /// A wedding protects its region from this long before its start…
    #[serde(with = "humantime_serde")]
    pub wedding_lead: Duration,
    /// …until this long after its end.
    #[serde(with = "humantime_serde")]
    pub wedding_trail: Duration,
    /// Fraction of capacity kept for wedding-critical traffic while protected.
    pub wedding_critical_reserve: f64,
    /// Order in which classes are degraded (first is shed first). Never holds wedding-critical.
    pub degrade_order: Vec<TrafficClass>,
    /// Reserved capacity as a fraction of the pool's typical load.
    pub reserved_baseline_fraction: f64,
    /// Largest fraction of a target placed on spot.
    pub spot_max_fraction: f64,
    /// How far ahead the forecast looks (beyond each pool's provisioning delay) to pre-scale.
    #[serde(with = "humantime_serde")]
    pub forecast_horizon: Duration,
    /// Upper quantile of the forecast that pre-scaling provisions for (0.5 ..= 0.99; default
    /// 0.9): the forecast's uplift over the load now is taken at this quantile of the
    /// forecaster's own recent errors, so a predictable pool is padded little and a noisy one
    /// more.
    pub forecast_quantile: f64,
    /// Demand that jumps past this many times the larger of the pool's recent demand and what
    /// it serves now, within one round, is capped there and flagged ([`Engine::handle_demand`]):
    /// a few forged datagrams must not drive a pool to its max. 0: no cap.
    pub max_demand_jump: f64,
    /// Seasonal load multipliers, applied in each pool's local time.
    pub seasons: SeasonalMultipliers,
    /// Spike detector tuning.
    #[serde(skip)]
    pub detector: DetectorTuning,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            round_interval: Duration::from_millis(100),
            tolerance: 0.1,
            // Capacity within 1.3x of need 2 minutes after demand falls, even after a 50x
            // drop: a minute's window, then steps of at most three quarters every 15 s.
            scale_down_stabilization: Duration::from_secs(60),
            scale_down_cooldown: Duration::from_secs(15),
            max_scale_down_fraction: 0.75,
            max_scale_up_factor: 10,
            stale_rounds: 3,
            wedding_lead: Duration::from_secs(2 * 3600),
            wedding_trail: Duration::from_secs(3600),
            wedding_critical_reserve: 0.2,
            degrade_order: vec![
                TrafficClass::Background,
                TrafficClass::Media,
                TrafficClass::Registration,
                TrafficClass::WeddingPlanning,
            ],
            reserved_baseline_fraction: 0.3,
            spot_max_fraction: 0.7,
            forecast_horizon: Duration::from_secs(30 * 60),
            forecast_quantile: forecast::DEFAULT_QUANTILE,
            // A real 100x viral step passes in two rounds (0.2 s); one forged burst does not.
            max_demand_jump: 10.0,
            seasons: SeasonalMultipliers::default(),
            detector: DetectorTuning::default(),
        }
    }
}

/// Demand on a pool, requests/s per class (indexed like [`TrafficClass::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Demand(pub [f64; 5]);

impl Demand {
    /// Demand of one class.
    pub fn of(&self, class: TrafficClass) -> f64 {
        self.0[class_index(class)]
    }

    /// Sets the demand of one class.
    pub fn set(&mut self, class: TrafficClass, rps: f64) {
        self.0[class_index(class)] = rps;
    }

    /// Sum over classes.
    pub fn total(&self) -> f64 {
        self.0.iter().sum()
    }
}

fn class_index(class: TrafficClass) -> usize {
    TrafficClass::ALL.iter().position(|c| *c == class).unwrap_or(0)
}

/// Index of a pool in the engine (its position in the configuration).
pub type PoolIndex = usize;

/// What the engine believes about one pool, for the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolStatus {
    /// The pool (shared with the engine: a status, published every round, copies no spec).
    pub spec: Arc<PoolSpec>,
    /// Units believed serving now.
    pub available: u32,
    /// Units last asked for.
    pub target: u32,
    /// Load estimate used in the last round (requests/s).
    pub load: f64,
    /// Latest demand by class.
    pub demand: Demand,
    /// Whether a wedding protects the pool's region.
    pub protected: bool,
    /// Whether the pool is holding for lack of fresh metrics.
    pub holding_stale: bool,
    /// Whether a spike is being handled.
    pub spike_active: bool,
    /// Whether the last round's demand was read while input was being lost (a lower bound,
    /// [`Engine::handle_uncertain_demand`]).
    pub lossy_input: bool,
    /// Whether the latest demand reading jumped past [`EngineSettings::max_demand_jump`] and was
    /// capped.
    pub demand_capped: bool,
    /// Latest admission levels.
    pub admission: Vec<Admission>,
    /// The size last observed ([`Engine::handle_pool_state`]), in units.
    pub observed_units: Option<u32>,
    /// When it was observed.
    pub observed_at: Option<Timestamp>,
    /// Whether the engine waits for the pool's size before deciding anything for it (no size
    /// observed and none assumed).
    pub size_unknown: bool,
}

/// An observed size that differs from the target while no change is on its way, for longer
/// than the pool's provisioning delay plus this, is the pool's real size: the engine plans from
/// it (someone resized the pool, or an actuator failed).
pub const SIZE_SETTLE: Duration = Duration::from_secs(10);

/// A load within this many units of a whole number of units needs that number: rates summed in
/// floating point land a hair above a whole number (2000.0000000000082 for 2000).
const UNIT_EPSILON: f64 = 1e-6;

const RECENT_SAMPLES: usize = 5;
/// The climb detector keeps one recent-load sample per this step...
const CLIMB_STEP: Duration = Duration::from_secs(1);
/// ...over this window; a climb is growth across each of its quarters.
const CLIMB_WINDOW: Duration = Duration::from_secs(30);
/// A projected climb asks for at most this multiple of the recent load.
const CLIMB_MAX_FACTOR: f64 = 2.0;
/// Growth each quarter of the window must show over the one before to count as a climb (above
/// the noise of quarter means on a busy day).
const CLIMB_MIN_GROWTH: f64 = 1.03;
/// A climb is projected only while the newest this many samples (seconds) are above the ones
/// before them.
const CLIMB_NOW_SAMPLES: usize = 3;
/// Capacity planned for a projected climb is kept (against scale-down) only while the climb
/// goes on: once no round has projected one for this long, the climb has stopped, and what was
/// asked for it, serving or still on its way, may come down to what the load measured needs.
const CLIMB_STOPPED_AFTER: Duration = Duration::from_secs(10);
/// How long the fast load estimate stays in force after a spike.
const SPIKE_HOLD: Duration = Duration::from_secs(60);
/// Half-life of the slow load EWMA.
const SLOW_LOAD_HALF_LIFE_SAMPLES: f64 = 50.0;
/// Half-life of the "typical units" EWMA behind the reserved baseline (~1 h at 10 Hz).
const TYPICAL_HALF_LIFE_ROUNDS: f64 = 36_000.0;
/// Width of the weekly profile's buckets.
const PROFILE_BUCKET: Duration = forecast::DEFAULT_BUCKET;

/// Admission changes smaller than this do not make a new decision.
const ADMISSION_EPSILON: f64 = 0.05;

#[derive(Debug, Clone)]
struct PoolRuntime {
    spec: Arc<PoolSpec>, // shared: each round takes a cheap handle, not a deep copy
    detector: SpikeDetector,
    /// The slow load estimate and how many samples it has seen (capped).
    slow_load: Option<(f64, u32)>,
    recent: VecDeque<f64>,
    /// Recent-load samples, one per [`CLIMB_STEP`], over [`CLIMB_WINDOW`] (oldest first).
    climb: VecDeque<(Timestamp, f64)>,
    spike: Option<(Timestamp, Spike)>,
    latest: Option<Demand>,
    fresh: bool,
    /// This round's demand came from a window in which input was lost: its total (weighted), a
    /// lower bound of the real demand ([`Engine::handle_uncertain_demand`]).
    uncertain: Option<f64>,
    /// The totals of the latest run of such readings (the newest [`RECENT_SAMPLES`]).
    lossy_run: VecDeque<f64>,
    /// Whether the last round's demand was such a reading.
    lossy: bool,
    /// Whether the last reading was capped by [`EngineSettings::max_demand_jump`].
    capped: bool,
    stale_rounds: u32,
    holding: bool,
    /// Units serving now, and units arriving later (ready time, total units then).
    available: u32,
    arriving: Option<(Timestamp, u32)>,
    target: u32,
    desired_history: VecDeque<(Timestamp, u32)>,
    /// Desired units of rounds that planned ahead, for a projected climb or a failover's clients
    /// not here yet, kept for one provisioning delay (the time the projection looked ahead) and
    /// dropped once no round has planned ahead for [`CLIMB_STOPPED_AFTER`].
    projected_history: VecDeque<(Timestamp, u32)>,
    last_scale_down: Option<Timestamp>,
    admission: Vec<Admission>,
    typical_units: f64,
    last_load: f64,
    protected: bool,
    /// Whether the engine has decided for this pool yet.
    decided: bool,
    /// The pool's local time zone (seasons and the weekly profile are in local time).
    tz: TimeZone,
    /// Learned weekly demand profile with the current level and the forecast's error
    /// quantiles (5-minute buckets always make one; `None` only if not).
    forecaster: Option<Forecaster>,
    /// Load taken over from a failed region, while the fleet keeps confirming it.
    failover: Option<FailoverLoad>,
    /// The pool's own load estimate in the last round that had one (a failover's excluded).
    own_load: f64,
    /// The last failover this pool took, its own load when it began, and when.
    failover_began: Option<(String, f64, Timestamp)>,
    /// Failovers a policy vetoed: confirmations of them are ignored.
    vetoed_failovers: VecDeque<String>,
    /// The size last observed, and when.
    observed: Option<(u32, Timestamp)>,
    /// Whether the pool's size is known (observed, or assumed by its spec).
    size_known: bool,
    /// Whether the scale-down window holds the size the engine started from (Kubernetes'
    /// `recordInitialRecommendation`: no scale-down in the first window after a start).
    seeded: bool,
    /// When a decision last changed the target.
    changed_at: Option<Timestamp>,
}

/// Vetoed failover ids a pool remembers.
const MAX_VETOED_FAILOVERS: usize = 16;

/// Load a failed region hands to this pool, as the fleet view derives it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverLoad {
    /// The failover proposal's id.
    pub id: String,
    /// The failed region.
    pub from_region: String,
    /// Its load this pool takes (requests/s, already this node's share).
    pub load: f64,
    /// The pool's own load when the failover began. The failed region's clients reach this
    /// pool after the load balancer moves them, and from then on they are in the demand
    /// measured here: the pool plans for the larger of its load now and this plus `load`, so
    /// the same clients are not counted twice.
    pub own_load_before: f64,
    /// When the fleet view first handed it over.
    pub began_at: Timestamp,
    /// When the fleet view last confirmed it.
    pub confirmed_at: Timestamp,
}

/// A failover's load is planned for ahead of its clients for this long after it began: time for
/// the load balancer to move them. After it, the demand measured here rules: the clients are in
/// it, or they are not coming (sent elsewhere, or nowhere), and capacity held for them is idle.
pub const FAILOVER_ARRIVAL: Duration = Duration::from_secs(90);

impl FailoverLoad {
    /// The load to add to `own_load` for this failover at `now`: what the failed region hands
    /// over less what of it already arrived (the pool's load above its load before the
    /// failover), and nothing once [`FAILOVER_ARRIVAL`] has passed.
    pub fn added_to(&self, own_load: f64, now: Timestamp) -> f64 {
        if now.saturating_since(self.began_at) > FAILOVER_ARRIVAL {
            return 0.0;
        }
        (self.own_load_before + self.load - own_load).max(0.0)
    }
}

/// A failover's load stops counting when the fleet view has not confirmed it for this long
/// (the region recovered, or another region took it).
pub const FAILOVER_TTL: Duration = Duration::from_secs(10);

/// How the engine's rounds kept to their schedule (see [`Engine::rounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RoundCounts {
    /// Rounds run.
    pub run: u64,
    /// Rounds that ran, but started at least [`LATE_FRACTION`] of the round interval after
    /// their due time.
    pub late: u64,
    /// Round ticks that passed without a round: the driver woke a whole interval (or more)
    /// after a due time. The round runs once, on the freshest inputs; missed ticks are not
    /// replayed.
    pub skipped: u64,
}

/// A round that starts this fraction of the round interval (or more) after its due time
/// counts as late (10 ms at the default 10 Hz).
pub const LATE_FRACTION: f64 = 0.1;

/// The engine. See the module docs.
#[derive(Debug, Clone)]
pub struct Engine {
    settings: EngineSettings,
    pools: Vec<PoolRuntime>,
    weddings: BTreeMap<String, Wedding>,
    next_round: Option<Timestamp>,
    rounds: RoundCounts,
    out: VecDeque<Decision>,
}

fn full_admission(spec: &PoolSpec) -> Vec<Admission> {
    spec.classes.iter().map(|&class| Admission { class, admit: 1.0 }).collect()
}

impl Engine {
    /// An engine for these pools. A pool with an `assume_size` starts from it; any other
    /// waits for its size to be observed ([`Engine::handle_pool_state`]) before deciding.
    pub fn new(settings: EngineSettings, pools: Vec<PoolSpec>) -> Self {
        let pools = pools
            .into_iter()
            .map(|spec| {
                let start = spec.assume_size.unwrap_or(spec.min);
                PoolRuntime {
                    detector: SpikeDetector::new(settings.detector),
                    slow_load: None,
                    recent: VecDeque::with_capacity(RECENT_SAMPLES),
                    climb: VecDeque::new(),
                    spike: None,
                    latest: None,
                    fresh: false,
                    uncertain: None,
                    lossy_run: VecDeque::with_capacity(RECENT_SAMPLES),
                    lossy: false,
                    capped: false,
                    stale_rounds: 0,
                    holding: false,
                    available: start,
                    arriving: None,
                    target: start,
                    desired_history: VecDeque::new(),
                    projected_history: VecDeque::new(),
                    last_scale_down: None,
                    admission: full_admission(&spec),
                    typical_units: f64::from(start.clamp(spec.min, spec.max.max(spec.min))),
                    last_load: 0.0,
                    protected: false,
                    decided: false,
                    tz: forecast::time_zone(&spec.time_zone).unwrap_or(TimeZone::UTC),
                    forecaster: WeeklyProfile::new(PROFILE_BUCKET).ok().map(Forecaster::new),
                    failover: None,
                    own_load: 0.0,
                    failover_began: None,
                    vetoed_failovers: VecDeque::new(),
                    observed: None,
                    size_known: spec.assume_size.is_some(),
                    seeded: false,
                    changed_at: None,
                    spec: Arc::new(spec),
                }
            })
            .collect();
        Engine {
            settings,
            pools,
            weddings: BTreeMap::new(),
            next_round: None,
            rounds: RoundCounts::default(),
            out: VecDeque::new(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The pools, in configuration order.
    pub fn pools(&self) -> impl Iterator<Item = &PoolSpec> {
        self.pools.iter().map(|p| p.spec.as_ref())
    }

    /// The index of the pool named `name`.
    pub fn pool_index(&self, name: &str) -> Option<PoolIndex> {
        self.pools.iter().position(|p| p.spec.name == name)
    }

    /// The fleet view's input for a pool: the share of a failed region's load this node takes
    /// (from a failover proposal naming this pool's region). Call again to confirm it; it
    /// lapses [`FAILOVER_TTL`] after the last confirmation. Non-finite or negative loads are
    /// ignored.
    pub fn handle_failover(&mut self, now: Timestamp, pool: PoolIndex, id: &str, from_region: &str, load: f64) {
        let Some(p) = self.pools.get_mut(pool) else { return };
        if !(load.is_finite() && load >= 0.0) || p.vetoed_failovers.iter().any(|v| v == id) {
            return;
        }
        // A confirmation keeps the load the pool had when this failover began, even after a
        // lapse in the confirmations (by then its clients may be here already).
        let (own_load_before, began_at) = match &p.failover_began {
            Some((began, before, at)) if began == id => (*before, *at),
            _ => {
                p.failover_began = Some((id.to_owned(), p.own_load, now));
                (p.own_load, now)
            }
        };
        p.failover = Some(FailoverLoad {
            id: id.to_owned(),
            from_region: from_region.to_owned(),
            load,
            own_load_before,
            began_at,
            confirmed_at: now,
        });
    }

    /// The failover load a pool carries now, if any.
    pub fn failover(&self, pool: PoolIndex) -> Option<&FailoverLoad> {
        self.pools.get(pool).and_then(|p| p.failover.as_ref())
    }

    /// A demand sample for a pool (normally every 100 ms). Classes the pool does not serve are
    /// ignored; negative or non-finite figures count as zero.
    ///
    /// A reading past [`EngineSettings::max_demand_jump`] times the larger of the newest
    /// readings and what the pool serves now is scaled down to that bound (every class alike)
    /// and flagged ([`PoolStatus::demand_capped`]); the return value is then the reading's own
    /// total (weighted), for the caller to count and log. A real step still passes: the bound
    /// grows by the same factor each round.
    pub fn handle_demand(&mut self, now: Timestamp, pool: PoolIndex, demand: Demand) -> Option<f64> {
        let limit = self.settings.max_demand_jump;
        let p = self.pools.get_mut(pool)?;
        let mut cleaned = weighted(&p.spec, demand);
        let mut total = cleaned.total();
        let reference = p.recent.iter().copied().fold(f64::from(p.available) * p.spec.capacity_per_unit, f64::max);
        let capped = (limit > 0.0 && reference > 0.0 && total > limit * reference).then_some(total);
        if let Some(raw) = capped {
            let bound = limit * reference;
            for rps in &mut cleaned.0 {
                *rps *= bound / raw;
            }
            total = cleaned.total();
        }
        p.capped = capped.is_some();
        p.lossy_run.clear();
        if p.recent.len() == RECENT_SAMPLES {
            p.recent.pop_front();
        }
        p.recent.push_back(total);
        // A plain running mean until the EWMA's own weight takes over, so the estimate does not
        // hang on whichever sample happened to come first.
        let alpha = 1.0 - 0.5f64.powf(1.0 / SLOW_LOAD_HALF_LIFE_SAMPLES);
        p.slow_load = Some(match p.slow_load {
            None => (total, 1),
            Some((slow, seen)) => {
                let weight = alpha.max(1.0 / f64::from(seen + 1));
                (slow + weight * (total - slow), seen.saturating_add(1).min(u32::MAX / 2))
            }
        });
        let recent_mean = p.recent.iter().sum::<f64>() / p.recent.len() as f64;
        if p.climb.back().is_none_or(|(at, _)| now.saturating_since(*at) >= CLIMB_STEP) {
            p.climb.push_back((now, recent_mean));
            while p.climb.front().is_some_and(|(at, _)| now.saturating_since(*at) > CLIMB_WINDOW) {
                p.climb.pop_front();
            }
        }
        if let Some(spike) = p.detector.observe(total, || recent_mean) {
            p.spike = Some((now, spike));
        }
        p.latest = Some(cleaned);
        p.fresh = true;
        capped
    }

    /// Demand read over a window in which some of its input was lost (the daemon saw the kernel
    /// drop datagrams on a socket that carries the pool's demand). Such a reading is low by
    /// whatever was lost, and the recovery after it would look like a jump, so it moves nothing
    /// that reacts to change: no spike, no climb, no load estimate, no admission change, nothing
    /// learned. The pool stays fresh (input is arriving), and the readings are kept as lower
    /// bounds: when the least of the last five in a row exceeds what the pool serves now, the
    /// round plans for it ([`Reason::LossyInput`]) — a pool must not wait out a metrics storm
    /// while short of capacity, and one window in which readers caught up on a backlog (more
    /// than its share of datagrams) must not scale it.
    pub fn handle_uncertain_demand(&mut self, _now: Timestamp, pool: PoolIndex, demand: Demand) {
        let Some(p) = self.pools.get_mut(pool) else { return };
        let total = weighted(&p.spec, demand).total();
        if p.lossy_run.len() == RECENT_SAMPLES {
            p.lossy_run.pop_front();
        }
        p.lossy_run.push_back(total);
        let bound = if p.lossy_run.len() == RECENT_SAMPLES {
            p.lossy_run.iter().copied().fold(f64::INFINITY, f64::min)
        } else {
            0.0
        };
        p.uncertain = Some(bound);
        p.fresh = true;
    }

    /// The pool's real size, as observed by an orchestrator or actuator feedback; until the
    /// first one (or an `assume_size`), the engine decides nothing for the pool. The observed
    /// size becomes the target the engine plans from (`from`) before its first decision, at
    /// once when it is outside `[min, max]` (the next round corrects it: `clamped_to_min` /
    /// `clamped_to_max`), and whenever it has differed from the target for longer than the
    /// provisioning delay plus [`SIZE_SETTLE`] with no change on its way.
    pub fn handle_pool_state(&mut self, now: Timestamp, pool: PoolIndex, serving_units: u32) {
        let Some(p) = self.pools.get_mut(pool) else { return };
        p.observed = Some((serving_units, now));
        p.size_known = true;
        p.available = serving_units;
        if p.arriving.is_some_and(|(_, units)| units <= serving_units) {
            p.arriving = None;
        }
        let settled = p.arriving.is_none()
            && p.changed_at.is_none_or(|at| now.saturating_since(at) >= p.spec.provisioning_delay + SIZE_SETTLE);
        let outside = serving_units < p.spec.min || serving_units > p.spec.max;
        if !p.decided || outside || (serving_units != p.target && settled) {
            p.target = serving_units;
        }
        if !p.decided {
            p.typical_units = f64::from(serving_units.clamp(p.spec.min, p.spec.max.max(p.spec.min)));
        }
    }

    /// Adds or replaces a wedding on the calendar. Returns what is wrong with it, if anything.
    pub fn handle_wedding_upsert(&mut self, wedding: Wedding) -> Result<(), pool::WeddingError> {
        wedding.validate()?;
        if self.weddings.len() >= pool::MAX_WEDDINGS && !self.weddings.contains_key(&wedding.id) {
            return Err(pool::WeddingError::CalendarFull);
        }
        self.weddings.insert(wedding.id.clone(), wedding);
        Ok(())
    }

    /// Removes a wedding; returns whether it was there.
    pub fn handle_wedding_remove(&mut self, id: &str) -> bool {
        self.weddings.remove(id).is_some()
    }

    /// The calendar, ordered by id.
    pub fn weddings(&self) -> impl Iterator<Item = &Wedding> {
        self.weddings.values()
    }

    /// Units believed serving in a pool now (cheap: no copy of the pool).
    pub fn serving_units(&self, pool: PoolIndex) -> Option<u32> {
        self.pools.get(pool).map(|p| p.available)
    }

    /// Weddings active in `region` at `wall_ms`.
    pub fn active_weddings(&self, region: &str, wall_ms: i64) -> usize {
        let (lead, trail) = (self.settings.wedding_lead, self.settings.wedding_trail);
        self.weddings.values().filter(|w| w.region == region && w.is_active(wall_ms, lead, trail)).count()
    }

    /// When the engine next wants [`Engine::handle_timeout`]: `None` before the first round,
    /// which runs whenever it is first called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_round
    }

    /// Rounds run, late and skipped so far.
    pub fn rounds(&self) -> RoundCounts {
        self.rounds
    }

    /// The next decision, if any.
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.out.pop_front()
    }

    /// Runs a decision round if one is due at `now` (monotonic) / `wall_ms` (Unix ms); a call
    /// before [`Engine::poll_timeout`] does nothing. The first call runs the first round and
    /// fixes the schedule: round `k` is due at `first + k × round_interval`, however late each
    /// one actually ran, so a driver that wakes at [`Engine::poll_timeout`] runs every round.
    /// Missed rounds are not replayed: the round runs on the freshest inputs, once, and the
    /// ticks it passed are counted as skipped ([`Engine::rounds`]).
    pub fn handle_timeout(&mut self, now: Timestamp, wall_ms: i64) {
        self.handle_timeout_with(now, wall_ms, &mut NoPolicy);
    }

    /// [`Engine::handle_timeout`] with policies: `policy` sees every pool's proposal once per
    /// round and its changes apply before protection and clamps (see [`policy`]).
    pub fn handle_timeout_with(&mut self, now: Timestamp, wall_ms: i64, policy: &mut dyn RoundPolicy) {
        let interval = self.settings.round_interval;
        let due = match self.next_round {
            None => now,
            Some(due) if now < due => return,
            Some(due) => due,
        };
        let late_by = now.saturating_since(due);
        let skipped = u64::try_from(late_by.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u64::MAX);
        self.rounds.run += 1;
        self.rounds.skipped = self.rounds.skipped.saturating_add(skipped);
        if late_by.as_secs_f64() >= LATE_FRACTION * interval.as_secs_f64() {
            self.rounds.late += 1;
        }
        let epoch = now.as_nanos() / duration_nanos(self.settings.round_interval).max(1);
        let (proposals, pending): (Vec<PoolProposal>, Vec<Pending>) = (0..self.pools.len())
            .map(|index| {
                let active = self.active_weddings(&self.pools[index].spec.region, wall_ms);
                self.propose(index, now, wall_ms, active)
            })
            .unzip();
        let (lead, trail) = (self.settings.wedding_lead, self.settings.wedding_trail);
        let weddings: Vec<Wedding> = self
            .weddings
            .values()
            .filter(|w| w.is_active(wall_ms, lead, trail) && self.pools.iter().any(|p| p.spec.region == w.region))
            .cloned()
            .collect();
        let verdicts = policy.review(&PolicyRound { epoch, now, wall_ms, pools: &proposals, weddings: &weddings });
        for (proposal, pending) in proposals.iter().zip(pending) {
            if let Some(decision) = self.finish(proposal, pending, &verdicts, now, wall_ms, epoch) {
                self.out.push_back(decision);
            }
        }
        // The next tick after `now` on the fixed schedule.
        let ticks = u32::try_from(skipped.saturating_add(1)).unwrap_or(u32::MAX);
        self.next_round = Some(due.saturating_add(interval.saturating_mul(ticks)));
    }

    /// What the engine believes about each pool.
    pub fn status(&self) -> Vec<PoolStatus> {
        self.pools
            .iter()
            .map(|p| PoolStatus {
                spec: Arc::clone(&p.spec),
                available: p.available,
                target: p.target,
                load: p.last_load,
                demand: p.latest.unwrap_or_default(),
                protected: p.protected,
                holding_stale: p.holding,
                spike_active: p.spike.is_some(),
                lossy_input: p.lossy,
                demand_capped: p.capped,
                admission: p.admission.clone(),
                observed_units: p.observed.map(|(units, _)| units),
                observed_at: p.observed.map(|(_, at)| at),
                size_unknown: !p.size_known,
            })
            .collect()
    }

    /// The learned forecaster of a pool (weekly profile, level, error quantiles), encoded for
    /// storage.
    pub fn export_profile(&self, pool: PoolIndex) -> Option<Result<Vec<u8>, ForecastError>> {
        self.pools.get(pool).and_then(|p| p.forecaster.as_ref()).map(Forecaster::to_bytes)
    }

    /// Restores a pool's forecaster from storage (what [`Engine::export_profile`] gave, or a
    /// bare weekly profile stored by an older version: its level then starts afresh).
    pub fn import_profile(&mut self, pool: PoolIndex, bytes: &[u8]) -> Result<(), ForecastError> {
        let forecaster = Forecaster::from_bytes(bytes)?;
        if let Some(p) = self.pools.get_mut(pool) {
            p.forecaster = Some(forecaster);
        }
        Ok(())
    }

    /// The forecast peak demand (point forecast) of a pool over `horizon` from `wall_ms`, if the
    /// profile knows it.
    pub fn forecast_peak(&self, pool: PoolIndex, wall_ms: i64, horizon: Duration) -> Option<f64> {
        let p = self.pools.get(pool)?;
        let f = p.forecaster.as_ref()?;
        f.peak_over(wall_ms, horizon, self.settings.forecast_quantile, &p.tz, &self.settings.seasons).map(|f| f.point)
    }

    /// Phase one of a round for one pool: everything up to the proposal (freshness, load,
    /// target tracking, the scale-up cap, scale-down stabilization, prediction, admission and
    /// the purchase split), without committing the target.
    fn propose(
        &mut self,
        index: PoolIndex,
        now: Timestamp,
        wall_ms: i64,
        active_weddings: usize,
    ) -> (PoolProposal, Pending) {
        let s = &self.settings;
        let p = &mut self.pools[index];
        // Capacity that was on its way has arrived.
        if let Some((ready_at, units)) = p.arriving
            && now >= ready_at
        {
            p.available = units;
            p.arriving = None;
        }
        if p.spike.is_some_and(|(at, _)| now.saturating_since(at) > SPIKE_HOLD) {
            p.spike = None;
        }
        let spec = Arc::clone(&p.spec);
        let from = p.target;
        let mut reasons = Vec::new();

        // 1. Freshness.
        if p.fresh {
            p.stale_rounds = 0;
        } else {
            p.stale_rounds = p.stale_rounds.saturating_add(1);
        }
        p.fresh = false;
        let lower_bound = p.uncertain.take();
        p.lossy = lower_bound.is_some();
        let was_holding = p.holding;
        p.holding = p.stale_rounds >= s.stale_rounds || p.latest.is_none();
        p.protected = active_weddings > 0;

        let mut own_load = None;
        // The load seen, where `own_load` is a projection of it.
        let mut measured = None;
        if p.holding {
            reasons.push(Reason::StaleMetrics { rounds: p.stale_rounds });
        } else {
            // 2. Load.
            let slow = p.slow_load.map_or(0.0, |(slow, _)| slow);
            let recent = p.recent.iter().sum::<f64>() / p.recent.len().max(1) as f64;
            let load = match p.spike {
                Some((_, spike)) if recent > slow => {
                    reasons.push(Reason::Spike { baseline: spike.baseline, recent, sigma: spike.sigma });
                    match climb_projection(&p.climb, recent, spec.provisioning_delay) {
                        Some(climb) => {
                            let projected = climb.projected;
                            reasons.push(climb.reason());
                            measured = Some(recent);
                            projected
                        }
                        None => recent,
                    }
                }
                // Until the detector has a baseline it cannot call a jump a spike, and the slow
                // estimate started from one arbitrary sample: a pool that starts into a surge
                // follows the recent mean up rather than taking half-lives to catch it.
                _ if p.detector.warming_up() => slow.max(recent),
                _ => slow,
            };
            if p.failover.as_ref().is_some_and(|f| now.saturating_since(f.confirmed_at) > FAILOVER_TTL) {
                p.failover = None;
            }
            let load = match lower_bound {
                // Lossy input: only a lower bound above what serves now moves the load (up).
                Some(bound) => {
                    let servable = f64::from(p.available) * spec.capacity_per_unit;
                    if bound > servable && bound > load {
                        reasons.push(Reason::LossyInput { lower_bound: bound, servable });
                        bound
                    } else {
                        load
                    }
                }
                None => {
                    // The forecaster learns this region's own load; a failover's is borrowed. A
                    // lossy round teaches it nothing.
                    if let Some(forecaster) = p.forecaster.as_mut() {
                        forecaster.observe(wall_ms, &p.tz, load, &s.seasons);
                    }
                    load
                }
            };
            own_load = Some(load);
            p.own_load = load;
        }
        let failover = if p.holding { None } else { p.failover.clone() };
        if p.size_known && !p.seeded {
            p.seeded = true;
            p.desired_history.push_back((now, p.target));
        }
        let target = plan_target(p, s, now, wall_ms, (own_load, measured), failover.as_ref());

        // 8. Admission against what serves now.
        let demand = p.latest.unwrap_or_default();
        let servable = f64::from(p.available) * spec.capacity_per_unit;
        let (admission, degraded) = admit(&spec, s, demand, servable, p.protected);
        let wc_units =
            (demand.of(TrafficClass::WeddingCritical) / spec.target_load_per_unit().max(f64::MIN_POSITIVE)).ceil();
        let mix = purchase_mix(target.to, p.typical_units, wc_units, s);
        let proposal = PoolProposal {
            pool: index,
            from,
            to: target.to,
            serving: p.available,
            load: target.load,
            demand,
            protected: p.protected,
            spike: p.spike.is_some(),
            stale: p.holding,
            placement: placement_of(&spec, p.protected, mix).0,
            admission: admission_levels(&admission),
            spot_units: mix.spot,
            failover,
        };
        let pending = Pending {
            own_load,
            measured,
            target,
            reasons,
            admission,
            degraded,
            was_holding,
            servable,
            wc_units,
            active_weddings,
        };
        (proposal, pending)
    }

    /// Phase two: applies the policies' changes to the proposal, then protection, clamps,
    /// admission and cost, and commits the pool's new state. Returns the decision, if any.
    fn finish(
        &mut self,
        proposal: &PoolProposal,
        pending: Pending,
        verdicts: &[PolicyVerdict],
        now: Timestamp,
        wall_ms: i64,
        epoch: u64,
    ) -> Option<Decision> {
        let Pending {
            own_load,
            measured,
            mut target,
            mut reasons,
            mut admission,
            degraded,
            was_holding,
            servable,
            wc_units,
            active_weddings,
        } = pending;
        let index = proposal.pool;
        let s = &self.settings;
        let p = &mut self.pools[index];
        // A pool of unknown size is neither scaled nor admitted: nothing decided from a size the
        // engine made up reaches its actuators.
        if !p.size_known {
            return None;
        }
        let spec = Arc::clone(&p.spec);
        let from = proposal.from;

        // A vetoed failover does not count: plan again on this region's own load.
        if let Some(failover) = &proposal.failover
            && let Some((verdict, reason)) = verdicts.iter().find_map(|v| {
                v.actions.iter().find_map(|a| match a {
                    PolicyAction::VetoFailover { id, reason } if *id == failover.id => Some((v, reason)),
                    _ => None,
                })
            })
        {
            target = plan_target(p, s, now, wall_ms, (own_load, measured), None);
            reasons.push(Reason::Policy {
                policy: verdict.policy.clone(),
                version: verdict.version.clone(),
                change: format!("vetoed failover {}: {reason}", failover.id),
            });
            p.vetoed_failovers.push_back(failover.id.clone());
            while p.vetoed_failovers.len() > MAX_VETOED_FAILOVERS {
                p.vetoed_failovers.pop_front();
            }
            p.failover = None;
        }
        reasons.append(&mut target.reasons);
        if let Some(desired) = target.desired {
            p.desired_history.push_back((now, desired));
        }
        if let Some(projected) = target.projected_desired {
            p.projected_history.push_back((now, projected));
        }
        while p.projected_history.front().is_some_and(|(at, _)| now.saturating_since(*at) > spec.provisioning_delay) {
            p.projected_history.pop_front();
        }
        // A climb that has stopped no longer holds up what was bought for it: the projection
        // looked ahead for load that is not coming, and capacity still on its way can be cut
        // before it arrives (the measured load's own needs stay in the stabilization window).
        if p.projected_history.back().is_some_and(|(at, _)| now.saturating_since(*at) >= CLIMB_STOPPED_AFTER) {
            p.projected_history.clear();
        }
        while p.desired_history.front().is_some_and(|(at, _)| now.saturating_since(*at) > s.scale_down_stabilization) {
            p.desired_history.pop_front();
        }
        let mut to = target.to;
        let mut home_only = false;
        let mut spot_cap: Option<u32> = None;

        // Policies, in order. Each change that takes effect is a reason naming the policy.
        for verdict in verdicts {
            for action in verdict.actions.iter().filter(|a| a.pool() == Some(index)) {
                let change = match action {
                    PolicyAction::RaiseTarget { units, .. } if *units > to => {
                        to = *units;
                        Some(format!("raised the target to {units}"))
                    }
                    PolicyAction::PrescaleFloor { units, .. } if *units > to => {
                        to = *units;
                        Some(format!("pre-scale floor of {units}"))
                    }
                    PolicyAction::LowerTarget { units, .. } if *units < to => {
                        to = *units;
                        Some(format!("lowered the target to {units}"))
                    }
                    PolicyAction::Admit { class, share, .. }
                        if *class != TrafficClass::WeddingCritical && share.is_finite() =>
                    {
                        let share = share.clamp(0.0, 1.0);
                        admission.iter_mut().find(|a| a.class == *class && a.admit > share).map(|a| {
                            a.admit = share;
                            format!("admits at most {share:.2} of {class}")
                        })
                    }
                    PolicyAction::SpotCap { units, .. } => {
                        spot_cap = Some(spot_cap.map_or(*units, |cap| cap.min(*units)));
                        Some(format!("at most {units} units on spot"))
                    }
                    PolicyAction::Veto { kind: VetoKind::ScaleDown, reason, .. } if to < from => {
                        to = from;
                        Some(format!("vetoed the scale-down: {reason}"))
                    }
                    PolicyAction::Veto { kind: VetoKind::ScaleUp, reason, .. } if to > from && !p.protected => {
                        to = from;
                        Some(format!("vetoed the scale-up: {reason}"))
                    }
                    PolicyAction::Veto { kind: VetoKind::Placement, reason, .. } if !home_only => {
                        home_only = true;
                        Some(format!("kept the capacity in {}: {reason}", spec.region))
                    }
                    _ => None,
                };
                if let Some(change) = change {
                    reasons.push(Reason::Policy {
                        policy: verdict.policy.clone(),
                        version: verdict.version.clone(),
                        change,
                    });
                }
            }
        }

        // 6. Protection.
        if p.protected {
            let floor = spec.protected_floor.max(spec.min);
            if to < floor {
                to = floor;
                reasons.push(Reason::Protected {
                    active_weddings: u32::try_from(active_weddings).unwrap_or(u32::MAX),
                    floor,
                });
            }
        }
        // 7. Clamp.
        if to < spec.min {
            to = spec.min;
            reasons.push(Reason::ClampedToMin { min: spec.min });
        }
        if to > spec.max {
            reasons.push(Reason::ClampedToMax { max: spec.max, wanted: to });
            to = spec.max;
        }
        p.last_load = target.load;
        if let Some(reason) = degraded {
            reasons.push(reason);
        }

        // 9. Cost.
        let typical_alpha = 1.0 - 0.5f64.powf(1.0 / TYPICAL_HALF_LIFE_ROUNDS);
        p.typical_units += typical_alpha * (f64::from(to) - p.typical_units);
        let mut mix = purchase_mix(to, p.typical_units, wc_units, s);
        if let Some(cap) = spot_cap
            && mix.spot > cap
        {
            mix.on_demand += mix.spot - cap;
            mix.spot = cap;
        }
        let (placement, cost_per_hour) = placement_of(&spec, p.protected || home_only, mix);

        let admission_changed = admission
            .iter()
            .zip(&p.admission)
            .any(|(a, b)| (a.admit - b.admit).abs() > ADMISSION_EPSILON || (a.admit == 1.0) != (b.admit == 1.0));
        if admission_changed && !admission.iter().any(|a| a.admit < 1.0) {
            reasons.push(Reason::FullAdmission { demand: proposal.demand.total(), servable });
        }
        let hold_started = p.holding && !was_holding;
        if to == from && !admission_changed && !hold_started {
            return None;
        }
        if to < from {
            p.last_scale_down = Some(now);
            p.available = p.available.min(to);
            // Capacity still on its way is cut to the new target; what remains arrives on time.
            p.arriving = p.arriving.map(|(at, units)| (at, units.min(to))).filter(|(_, units)| *units > p.available);
        } else if to > from {
            p.arriving = Some((now.saturating_add(spec.provisioning_delay), to));
            if spec.provisioning_delay.is_zero() {
                p.available = to;
                p.arriving = None;
            }
        }
        if to != from {
            p.changed_at = Some(now);
        }
        p.target = to;
        p.decided = true;
        p.admission = admission.clone();
        Some(Decision {
            id: format!("{}:{epoch}:{to}", spec.name),
            pool: spec.name.clone(),
            region: spec.region.clone(),
            placement,
            epoch,
            at: now,
            from,
            to,
            mix,
            cost_per_hour,
            admission,
            reasons,
        })
    }
}

/// A pool's round between its proposal and its decision.
#[derive(Debug)]
struct Pending {
    own_load: Option<f64>,
    measured: Option<f64>,
    target: TargetPlan,
    reasons: Vec<Reason>,
    admission: Vec<Admission>,
    degraded: Option<Reason>,
    was_holding: bool,
    servable: f64,
    wc_units: f64,
    active_weddings: usize,
}

/// The target steps 2–5 and prediction arrive at.
#[derive(Debug)]
struct TargetPlan {
    to: u32,
    /// Desired units to remember for scale-down stabilization (none while holding): what the
    /// measured load needs.
    desired: Option<u32>,
    /// Desired units planned for a projected climb, remembered for one provisioning delay.
    projected_desired: Option<u32>,
    load: f64,
    reasons: Vec<Reason>,
}

/// Steps 2–5 and prediction for a pool on its own load (plus a failover's), without changing the
/// pool: a policy's failover veto plans again without the failover. `load.0` is the load planned
/// for; `load.1`, when set, the load measured that `load.0` projects ahead. Scale-down
/// stabilization remembers what the measured load needed for the whole window, and what a
/// projection needed for one provisioning delay (the time it looked ahead), so capacity bought
/// for a climb that stops is released sooner, but not in the middle of one.
/// A sustained climb, projected ahead.
struct Climb {
    growth_per_second: f64,
    projected: f64,
    ahead: Duration,
}

impl Climb {
    fn reason(&self) -> Reason {
        Reason::Climb {
            growth_per_minute: (self.growth_per_second * 60.0).exp(),
            projected: self.projected,
            ahead_seconds: self.ahead.as_secs_f64(),
        }
    }
}

/// The load `ahead` from now if it keeps climbing: only when each quarter of the climb window
/// grew by [`CLIMB_MIN_GROWTH`] over the one before (a ramp, not a one-off step, which the spike
/// path already follows), at the slowest of those rates, and at most [`CLIMB_MAX_FACTOR`] ×
/// `recent`.
fn climb_projection(samples: &VecDeque<(Timestamp, f64)>, recent: f64, ahead: Duration) -> Option<Climb> {
    let (&(t0, _), &(t_last, _)) = (samples.front()?, samples.back()?);
    let span = t_last.saturating_since(t0);
    if span < CLIMB_WINDOW.saturating_sub(CLIMB_STEP * 2) || !recent.is_finite() || recent <= 0.0 {
        return None;
    }
    // The window's samples (and the load now) in four consecutive quarters, each averaged: a
    // ramp raises every quarter over the one before; a one-off step raises at most two
    // neighbouring ones, so one of the three steps between quarters stays flat.
    // Runs every spike round: no allocation, the load now is the value after the samples.
    let len = samples.len() + 1;
    let value = |i: usize| samples.get(i).map_or(recent, |(_, v)| *v);
    let quarter = len / 4;
    if quarter == 0 {
        return None;
    }
    let mean = |start: usize| (start..start + quarter).map(value).sum::<f64>() / quarter as f64;
    let means = [mean(0), mean(quarter), mean(2 * quarter), mean(len - quarter)];
    let quarter_secs = span.as_secs_f64() / 4.0;
    let mut slowest = f64::INFINITY;
    for pair in means.windows(2) {
        if !(pair[0] > 0.0 && pair[1] >= pair[0] * CLIMB_MIN_GROWTH) {
            return None;
        }
        slowest = slowest.min((pair[1] / pair[0]).ln() / quarter_secs);
    }
    // Still climbing now: the last few samples (and the load now) above the few before them at
    // no less than the least growth a climb has. A climb that has stopped is not projected any
    // further: the quarters would go on showing it for half a window, and capacity bought for
    // load that never comes is what a surge costs most.
    let recent_span = CLIMB_NOW_SAMPLES.min(len / 2);
    if recent_span > 0 {
        let span_mean = |start: usize| (start..start + recent_span).map(value).sum::<f64>() / recent_span as f64;
        let (before, newest) = (span_mean(len - 2 * recent_span), span_mean(len - recent_span));
        let step_secs = quarter_secs * recent_span as f64 / quarter as f64;
        let least = CLIMB_MIN_GROWTH.powf(step_secs / quarter_secs);
        if !(before > 0.0 && newest >= before * least) {
            return None;
        }
    }
    let projected = (recent * (slowest * ahead.as_secs_f64()).exp()).min(recent * CLIMB_MAX_FACTOR);
    (projected.is_finite() && projected > recent).then_some(Climb { growth_per_second: slowest, projected, ahead })
}

fn plan_target(
    p: &PoolRuntime,
    s: &EngineSettings,
    now: Timestamp,
    wall_ms: i64,
    (own_load, measured): (Option<f64>, Option<f64>),
    failover: Option<&FailoverLoad>,
) -> TargetPlan {
    let spec = &p.spec;
    let from = p.target;
    let mut reasons = Vec::new();
    let mut to = from;
    let mut desired_kept = None;
    let mut projected_kept = None;
    let mut load_used = p.last_load;
    if let Some(own_load) = own_load {
        let mut load = own_load;
        let mut borrowed = 0.0;
        if let Some(f) = failover {
            borrowed = f.added_to(own_load, now);
            load += borrowed;
            if borrowed > 0.0 {
                reasons.push(Reason::Failover {
                    id: f.id.clone(),
                    from_region: f.from_region.clone(),
                    added_load: borrowed,
                });
            }
        }
        load_used = load;
        // 3. Target tracking.
        let per_unit = spec.target_load_per_unit().max(f64::MIN_POSITIVE);
        let desired = units_for(load, per_unit);
        let utilization = load / (f64::from(from.max(1)) * per_unit);
        let outside_tolerance = (utilization - 1.0).abs() > s.tolerance;
        let mut desired = if outside_tolerance || from == 0 { desired } else { from };
        if desired != from {
            reasons.push(Reason::TargetTracking { load, utilization_vs_target: utilization, desired });
        }
        // 4. Scale-up cap.
        let cap = from.max(1).saturating_mul(s.max_scale_up_factor.max(1));
        if desired > cap {
            reasons.push(Reason::ScaleUpCapped { factor: s.max_scale_up_factor, wanted: desired });
            desired = cap;
        }
        // What was planned ahead (a projected climb, a failover's clients not here yet) is
        // remembered apart from what the load measured here needs: it holds against a
        // scale-down only while it goes on.
        desired_kept = Some(match measured {
            Some(measured) => {
                projected_kept = Some(desired);
                desired.min(units_for(measured, per_unit))
            }
            None if borrowed > 0.0 => {
                projected_kept = Some(desired);
                desired.min(units_for(own_load, per_unit))
            }
            None => desired,
        });
        to = desired;
        // 5. Scale-down, against the desired capacity over the stabilization window.
        if desired < from {
            let highest = p
                .desired_history
                .iter()
                .filter(|(at, _)| now.saturating_since(*at) <= s.scale_down_stabilization)
                .chain(
                    p.projected_history.iter().filter(|(at, _)| now.saturating_since(*at) <= spec.provisioning_delay),
                )
                .map(|(_, d)| *d)
                .chain(std::iter::once(desired))
                .max()
                .unwrap_or(desired);
            let mut allowed = highest.min(from);
            if allowed < from {
                let cooled = p.last_scale_down.is_none_or(|at| now.saturating_since(at) >= s.scale_down_cooldown);
                let step_floor =
                    from.saturating_sub((f64::from(from) * s.max_scale_down_fraction).floor().max(1.0) as u32);
                if !cooled {
                    reasons.push(Reason::ScaleDownRateLimited { wanted: allowed });
                    allowed = from;
                } else if allowed < step_floor {
                    reasons.push(Reason::ScaleDownRateLimited { wanted: allowed });
                    allowed = step_floor;
                }
            }
            if highest > desired {
                reasons.push(Reason::Stabilized {
                    window_seconds: s.scale_down_stabilization.as_secs(),
                    highest_desired: highest,
                });
            }
            to = allowed;
        }

        // Prediction: pre-scale for the forecast peak over the provisioning delay plus the
        // horizon. It only ever raises the target: never a scale-in on a forecast alone. The
        // window starts at the next profile bucket, so it rests on past weeks only: the bucket
        // being filled now is the reactive path's business.
        let horizon = spec.provisioning_delay + s.forecast_horizon;
        let bucket_ms = i64::try_from(PROFILE_BUCKET.as_millis()).unwrap_or(i64::MAX);
        let ahead = wall_ms - wall_ms.rem_euclid(bucket_ms) + bucket_ms;
        let remaining = horizon.saturating_sub(Duration::from_millis(u64::try_from(ahead - wall_ms).unwrap_or(0)));
        // The forecast follows the current level (a day that runs below or above past weeks
        // forecasts that much less or more) and carries its own error quantiles.
        let quantile = if s.forecast_quantile.is_finite() { s.forecast_quantile } else { forecast::DEFAULT_QUANTILE };
        let forecast = p.forecaster.as_ref().and_then(|f| f.peak_over(ahead, remaining, quantile, &p.tz, &s.seasons));
        if let Some(forecast::PeakForecast { point: peak, upper }) = forecast {
            // The forecast's uplift over the load now is taken at the upper quantile: its error
            // margin (relative, from the forecaster's recent errors at that lead) applies to
            // what the forecast adds, so a flat load runs at the target utilization, a quiet,
            // predictable pool is padded little and a noisy one more.
            let margin = if peak > 0.0 { ((upper - peak) / peak).max(0.0) } else { 0.0 };
            let wanted = peak + margin * (peak - load).max(0.0);
            let units = units_for(wanted, per_unit);
            let units = units.min(from.max(1).saturating_mul(s.max_scale_up_factor.max(1)));
            if units > to {
                reasons.push(Reason::Predictive { forecast_peak: peak, horizon_seconds: horizon.as_secs(), units });
                to = units;
            }
        }
    }
    TargetPlan { to, desired: desired_kept, projected_desired: projected_kept, load: load_used, reasons }
}

/// Units needed to carry `load` at `per_unit` each: the ceiling, except that a load within
/// [`UNIT_EPSILON`] units of a whole number needs that number.
/// Demand in "average requests" for `spec`: only the classes it serves, each times its weight
/// (a class that costs twice as much counts twice); nothing negative or not finite.
fn weighted(spec: &PoolSpec, demand: Demand) -> Demand {
    let mut cleaned = Demand::default();
    for class in TrafficClass::ALL {
        let rps = demand.of(class);
        if spec.serves(class) && rps.is_finite() && rps > 0.0 {
            cleaned.set(class, rps * spec.class_weight(class));
        }
    }
    cleaned
}

fn units_for(load: f64, per_unit: f64) -> u32 {
    let ratio = load / per_unit.max(f64::MIN_POSITIVE);
    let whole = ratio.round();
    let units = if (ratio - whole).abs() <= UNIT_EPSILON { whole } else { ratio.ceil() };
    // NaN and negative loads need nothing; `as` saturates at u32::MAX.
    units.max(0.0) as u32
}

/// Admission levels per class in [`TrafficClass::ALL`] order (1.0 for classes not served).
fn admission_levels(admission: &[Admission]) -> [f64; 5] {
    let mut levels = [1.0; 5];
    for a in admission {
        levels[class_index(a.class)] = a.admit;
    }
    levels
}

/// Where `mix` goes and what it costs per hour: the cheapest allowed region, or the home region
/// when `home_only` (a protected region keeps its capacity: no disruptive moves).
fn placement_of(spec: &PoolSpec, home_only: bool, mix: PurchaseMix) -> (String, f64) {
    let price = |cost: &pool::UnitCost| {
        f64::from(mix.reserved) * cost.reserved
            + f64::from(mix.on_demand) * cost.on_demand
            + f64::from(mix.spot) * cost.spot
    };
    if home_only {
        return (spec.region.clone(), price(&spec.cost));
    }
    spec.placements.iter().fold((spec.region.clone(), price(&spec.cost)), |best, alt| {
        let cost = price(&alt.cost);
        if cost < best.1 { (alt.region.clone(), cost) } else { best }
    })
}

/// Per-class admission levels for `demand` against `servable` requests/s.
fn admit(
    spec: &PoolSpec,
    s: &EngineSettings,
    demand: Demand,
    servable: f64,
    protected: bool,
) -> (Vec<Admission>, Option<Reason>) {
    let total = demand.total();
    let critical = demand.of(TrafficClass::WeddingCritical);
    let reserve = if protected { servable * s.wedding_critical_reserve } else { 0.0 };
    // Wedding-critical is always admitted; others share what is left, less the reserve.
    let mut budget = (servable - critical).min(servable - reserve).max(0.0);
    let mut levels: BTreeMap<TrafficClass, f64> = BTreeMap::new();
    // Serve in priority order: the reverse of the degrade order.
    for class in s.degrade_order.iter().rev() {
        let want = demand.of(*class);
        let granted = want.min(budget);
        budget -= granted;
        levels.insert(*class, if want > 0.0 { granted / want } else { 1.0 });
    }
    let admission: Vec<Admission> = spec
        .classes
        .iter()
        .map(|&class| Admission {
            class,
            admit: if class == TrafficClass::WeddingCritical {
                1.0
            } else {
                levels.get(&class).copied().unwrap_or(1.0)
            },
        })
        .collect();
    let degraded = admission.iter().any(|a| a.admit < 1.0);
    let reason =
        degraded.then_some(Reason::Degraded { demand: total, servable, reserved_for_wedding_critical: reserve });
    (admission, reason)
}

/// Splits `units` into reserved, on-demand and spot.
fn purchase_mix(units: u32, typical_units: f64, wedding_critical_units: f64, s: &EngineSettings) -> PurchaseMix {
    let reserved = ((typical_units * s.reserved_baseline_fraction).ceil().max(0.0) as u32).min(units);
    // Wedding-critical capacity beyond the reserved baseline must be on demand.
    let critical_beyond_reserved =
        (wedding_critical_units.max(0.0).min(f64::from(units)) as u32).saturating_sub(reserved);
    let spot_cap = (f64::from(units) * s.spot_max_fraction).floor() as u32;
    let spot = spot_cap.min(units - reserved - critical_beyond_reserved.min(units - reserved));
    PurchaseMix { reserved, on_demand: units - reserved - spot, spot }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod testing {
    /// Deterministic uniform noise in [-1, 1] (xorshift), for reproducible noisy demand.
    pub(crate) struct Noise(pub(crate) u64);

    impl Noise {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }
}
