//! The fleet under a scenario: one decision engine per node (with the node's round policy, the
//! daemon's WASM plugins), gossiping over a mesh, fed by the load model, answered by the
//! capacity model; and beside it, the same traffic under the Kubernetes HPA baseline.
//!
//! Each node runs its region's pool for its share of the region's traffic. Every round: the
//! load model routes each region's clients (a dead region's move to its `failover_to` regions
//! after the failover delay), each node's engine sees its share and the capacity serving now,
//! decides, and its pool model scores the round. The mesh carries each node's state; when a
//! whole region is down its coordinator's failover proposal hands each node of the target
//! region its share of the dead region's load, as the daemon does.

use crate::load::{LoadModel, Rates};
use crate::mesh::{FleetMesh, VirtualMesh};
use crate::scenario::{Event, Scenario, ScenarioError};
use std::time::Duration;
use wedsync_core::baseline::{Hpa, HpaSettings};
use wedsync_core::engine::decision::{Decision, Reason};
use wedsync_core::engine::forecast::{self, Forecaster, SeasonalMultipliers};
use wedsync_core::engine::policy::{NoPolicy, RoundPolicy};
use wedsync_core::engine::pool::{PoolSpec, UnitCost};
use wedsync_core::engine::{Demand, Engine, EngineSettings};
use wedsync_core::replay::{PoolModel, ReplayReport, Serving, utilization};
use wedsync_core::{Timestamp, TrafficClass};
use wedsync_mesh::{MeshConfig, Profile};

/// The name of every node's pool.
pub const POOL_NAME: &str = "web";
/// How often nodes publish their state to the mesh and take failover shares from it.
const MESH_PERIOD_S: f64 = 1.0;
/// How far ahead of an onset a predictive scale-up counts as the answer to it.
const PREDICTION_WINDOW_S: f64 = 3600.0;
/// Most points kept per plotted series.
const MAX_POINTS: f64 = 1500.0;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The scenario is not usable.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A node's round policy (its plugins) could not start.
    #[error("node {node}: round policy: {reason}")]
    Policy {
        /// The node.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// The mesh could not start.
    #[error("mesh: {0}")]
    Mesh(String),
    /// The engine refused a scenario's wedding.
    #[error("wedding {id}: {reason}")]
    Wedding {
        /// The wedding's id.
        id: String,
        /// Why.
        #[source]
        reason: wedsync_core::engine::pool::WeddingError,
    },
}

/// One node of the fleet, as handed to a [`PolicyFactory`].
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Index in the fleet.
    pub index: usize,
    /// Node id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// Its region's time zone.
    pub time_zone: String,
    /// Its pool.
    pub pool: PoolSpec,
    /// Every region of the fleet with its time zone.
    pub regions: Vec<(String, String)>,
}

/// Makes each node's round policy (the daemon: its plugin stage).
pub type PolicyFactory<'a> = dyn FnMut(&NodeSpec) -> Result<Box<dyn RoundPolicy>, String> + 'a;

/// What a [`MeshFactory`] is asked to build.
#[derive(Debug, Clone)]
pub struct MeshPlan {
    /// The members, node `i` first as (node id, region).
    pub members: Vec<(String, String)>,
    /// The mesh's timings (the WAN profile sized for the fleet).
    pub config: MeshConfig,
    /// Seeds the mesh's probes (and a virtual network's jitter).
    pub seed: u64,
    /// The nodes every node announces itself to at start: the first of each region.
    pub seeds: Vec<usize>,
}

/// Builds the mesh a run gossips over.
pub type MeshFactory<'a> = dyn FnMut(&MeshPlan) -> Result<Box<dyn FleetMesh>, String> + 'a;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seeds the mesh (its probes and the network's jitter).
    pub seed: u64,
    /// Scale the scenario's node counts to about this many nodes.
    pub nodes: Option<u32>,
    /// Progress every this much scenario time (None: no progress).
    pub progress_every: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { seed: 1, nodes: None, progress_every: None }
    }
}

/// A moment of the run, for live progress.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Scenario seconds done.
    pub t: f64,
    /// Scenario seconds in all.
    pub duration: f64,
    /// Per region: name, demand (requests/s), engine capacity, HPA capacity (requests/s),
    /// nodes alive.
    pub regions: Vec<(String, f64, f64, f64, usize)>,
}

/// A time series of one region: (minutes, value).
pub type Points = Vec<(f64, f64)>;

/// What was recorded of one region over the run.
#[derive(Debug, Clone, Default)]
pub struct RegionSeries {
    /// Demand routed to the region, requests/s.
    pub demand: Points,
    /// Serving capacity under the engine, requests/s.
    pub capacity: Points,
    /// Serving capacity under the HPA baseline, requests/s.
    pub hpa_capacity: Points,
    /// Engine latency per class now, ms (worst node).
    pub latency: [Points; 5],
    /// HPA latency per class now, ms (worst node).
    pub hpa_latency: [Points; 5],
    /// Minutes at which a node of the region decided to scale (up: true).
    pub decisions: Vec<(f64, bool)>,
}

/// One autoscaler's figures for one region.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RegionFigures {
    /// Peak demand routed to the region, requests/s.
    pub peak_demand: f64,
    /// Peak serving capacity, requests/s.
    pub peak_capacity: f64,
    /// Seconds from the region's onset to the first scale-up decision after it, or before it
    /// (negative) when the forecast scaled up ahead of it.
    pub onset_to_decision_s: Option<f64>,
    /// Seconds from the onset until the region's capacity carried its demand for good (0: it
    /// never fell short).
    pub onset_to_capacity_s: Option<f64>,
    /// Unit-seconds of capacity short of demand at full utilization.
    pub under_provisioned_unit_seconds: f64,
    /// Fraction of each class's requests shed (in [`TrafficClass::ALL`] order).
    pub shed_fraction: [f64; 5],
    /// Wedding-critical requests beyond what serving capacity carried.
    pub wedding_critical_unserved: f64,
    /// 99th percentile latency per class, ms (0: no requests).
    pub p99_latency_ms: [f64; 5],
    /// Cost of the capacity held, each autoscaler at its own prices (the engine's purchase mix,
    /// the baseline on demand): information.
    pub cost: f64,
    /// Unit-hours of capacity held (serving or on its way), summed over the region's nodes.
    pub unit_hours: f64,
    /// The capacity held at the pools' on-demand prices, the same price list for both sides.
    pub same_price_cost: f64,
    /// The longest time on any of the region's nodes from demand falling to capacity within
    /// 1.3× need, outside protected floors, seconds
    /// ([`wedsync_core::replay::ReplayReport::fall_to_need_s`]).
    pub fall_to_need_s: f64,
    /// Scaling decisions taken.
    pub decisions: usize,
}

/// A region's result.
#[derive(Debug, Clone)]
pub struct RegionResult {
    /// Its name.
    pub name: String,
    /// Nodes.
    pub nodes: usize,
    /// When its demand departed from its usual shape, seconds.
    pub onset_s: Option<f64>,
    /// When it went down, seconds.
    pub down_at_s: Option<f64>,
    /// Under the engine.
    pub engine: RegionFigures,
    /// Under the HPA baseline.
    pub hpa: RegionFigures,
    /// Over time.
    pub series: RegionSeries,
}

/// What the mesh showed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FleetFigures {
    /// Nodes.
    pub nodes: usize,
    /// What the mesh was: virtual time, or real QUIC endpoints and at what speed.
    pub mesh: String,
    /// How far the run, or the real mesh's tasks, fell behind the mesh's clock at worst,
    /// scenario seconds (0 in virtual time): a run that cannot keep up measures a slower fleet
    /// than it simulates.
    pub max_lag_s: f64,
    /// Seconds from everyone joining at t = 0 to every node seeing every other alive.
    pub join_convergence_s: Option<f64>,
    /// Per outage: seconds from the kill until every surviving node saw every killed node down.
    pub failure_detection_s: Vec<Option<f64>>,
    /// Per outage: seconds from the kill until the first failover share reached an engine.
    pub failover_applied_s: Vec<Option<f64>>,
    /// Per outage: seconds from the kill until membership converged again.
    pub reconvergence_s: Vec<Option<f64>>,
    /// Times a region's coordinator changed, as the first surviving node saw it.
    pub coordinator_changes: u32,
    /// Fraction of checks at which every node computed the same coordinators.
    pub coordinator_agreement: f64,
    /// Mesh bytes sent per node per second (QUIC, UDP and IP headers included).
    pub bytes_per_node_per_s: f64,
    /// Requests with no region to go to (a dead region's, before its clients moved or with
    /// nowhere allowed): the same under both autoscalers.
    pub unroutable_requests: f64,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct FleetResult {
    /// The scenario as run (node counts scaled).
    pub scenario: Scenario,
    /// Per region.
    pub regions: Vec<RegionResult>,
    /// The mesh's figures.
    pub fleet: FleetFigures,
    /// Whether each node ran a round policy (the daemon: its plugins).
    pub policies: bool,
    /// Wall-clock seconds the run took.
    pub elapsed_s: f64,
}

struct Node {
    spec: NodeSpec,
    region: usize,
    engine: Engine,
    policy: Box<dyn RoundPolicy>,
    model: PoolModel,
    hpa: Hpa,
    hpa_model: PoolModel,
    alive: bool,
}

/// The mesh a run of `scenario` with `options` needs: its members in node order (each region's
/// nodes `{region}-1`, `{region}-2`, ...), the WAN profile sized for them, the seed, and the
/// first node of each region as everyone's seed. [`run_on`] hands its factory exactly this, so
/// a caller can bind a real mesh's endpoints before the run (its plugins can then see it).
pub fn mesh_plan(scenario: &Scenario, options: &RunOptions) -> MeshPlan {
    let scenario = match options.nodes {
        Some(n) => scenario.clone().with_nodes(n),
        None => scenario.clone(),
    };
    let mut members = Vec::new();
    let mut seeds = Vec::new();
    for region in &scenario.regions {
        if region.nodes > 0 {
            seeds.push(members.len());
        }
        for k in 0..region.nodes {
            members.push((format!("{}-{}", region.name, k + 1), region.name.clone()));
        }
    }
    let config = MeshConfig::new(Profile::Wan, u32::try_from(members.len()).unwrap_or(u32::MAX));
    MeshPlan { members, config, seed: options.seed, seeds }
}

/// Runs `scenario` over the virtual mesh; `policies` makes each node's round policy (None: no
/// policy).
pub fn run(
    scenario: &Scenario,
    options: &RunOptions,
    policies: Option<&mut PolicyFactory<'_>>,
    progress: impl FnMut(&Progress),
) -> Result<FleetResult, FleetError> {
    let mut virtual_mesh = |plan: &MeshPlan| -> Result<Box<dyn FleetMesh>, String> {
        Ok(Box::new(VirtualMesh::new(&plan.members, plan.config.clone(), plan.seed, &plan.seeds)))
    };
    run_on(scenario, options, policies, &mut virtual_mesh, progress)
}

/// Runs `scenario` over the mesh `make_mesh` builds; `policies` makes each node's round policy
/// (None: no policy).
pub fn run_on(
    scenario: &Scenario,
    options: &RunOptions,
    mut policies: Option<&mut PolicyFactory<'_>>,
    make_mesh: &mut MeshFactory<'_>,
    mut progress: impl FnMut(&Progress),
) -> Result<FleetResult, FleetError> {
    let started = std::time::Instant::now();
    let with_policies = policies.is_some();
    let scenario = match options.nodes {
        Some(n) => scenario.clone().with_nodes(n),
        None => scenario.clone(),
    };
    let load = LoadModel::new(&scenario)?;
    let round = scenario.round;
    let round_s = round.as_secs_f64();
    let settings = EngineSettings { round_interval: round, ..EngineSettings::default() };
    let weddings = load.weddings();
    let regions: Vec<(String, String)> =
        scenario.regions.iter().map(|r| (r.name.clone(), r.time_zone.clone())).collect();

    // The fleet.
    let mut nodes: Vec<Node> = Vec::new();
    let plan = mesh_plan(&scenario, &RunOptions { nodes: None, ..options.clone() });
    for (r, region) in scenario.regions.iter().enumerate() {
        let onset = load.onset_s(r);
        for _ in 0..region.nodes {
            let pool = pool_spec(&scenario, r);
            let spec = NodeSpec {
                index: nodes.len(),
                id: plan.members[nodes.len()].0.clone(),
                region: region.name.clone(),
                time_zone: region.time_zone.clone(),
                pool: pool.clone(),
                regions: regions.clone(),
            };
            let mut engine = Engine::new(settings.clone(), vec![pool.clone()]);
            for w in &weddings {
                engine
                    .handle_wedding_upsert(w.clone())
                    .map_err(|reason| FleetError::Wedding { id: w.id.clone(), reason })?;
            }
            if let Some(history) = &scenario.history {
                teach(&mut engine, &load, r, region.nodes, history.duration, &region.time_zone, &settings.seasons);
            }
            let share = 1.0 / f64::from(region.nodes);
            let first: f64 = load.routed(0.0).0[r].iter().sum::<f64>() * share;
            let mut serving = PoolModel::warm_units(&pool, first);
            if load.active_weddings(r, 0.0) > 0 {
                serving = serving.max(pool.protected_floor).min(pool.max);
            }
            engine.handle_pool_state(Timestamp::ZERO, 0, serving);
            let model = PoolModel::new(&spec.id, pool.clone(), serving, Serving::ByPriority, onset);
            let hpa = Hpa::new(HpaSettings::default(), pool.min, pool.max, pool.target_utilization);
            let hpa_model = PoolModel::new(&spec.id, pool.clone(), serving, Serving::Proportional, onset);
            let policy: Box<dyn RoundPolicy> = match policies.as_mut() {
                Some(make) => make(&spec).map_err(|reason| FleetError::Policy { node: spec.id.clone(), reason })?,
                None => Box::new(NoPolicy),
            };
            nodes.push(Node { spec, region: r, engine, policy, model, hpa, hpa_model, alive: true });
        }
    }
    let n = nodes.len();
    // Every node announces itself to the first node of every region, as configured seeds.
    let seeds = plan.seeds.clone();
    let mut mesh = make_mesh(&plan).map_err(FleetError::Mesh)?;

    let outages: Vec<(usize, f64)> = scenario
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Outage { region, at, .. } => scenario.region_index(region).map(|r| (r, at.as_secs_f64())),
            _ => None,
        })
        .collect();
    let mut fleet = FleetFigures {
        nodes: n,
        mesh: mesh.describe(),
        failure_detection_s: vec![None; outages.len()],
        failover_applied_s: vec![None; outages.len()],
        reconvergence_s: vec![None; outages.len()],
        ..FleetFigures::default()
    };
    let mut tracker = RegionTracker::new(&scenario, &load);
    let mut coordinators: Option<Vec<(String, String)>> = None;
    let (mut agreement_checks, mut agreeing) = (0u64, 0u64);
    let mut last_mesh_t = f64::NEG_INFINITY;
    let sample_every = (scenario.duration_s() / MAX_POINTS).max(round_s);
    let mut next_sample = 0.0;
    let progress_every = options.progress_every.map(|d| d.as_secs_f64());
    let mut next_progress = 0.0;
    let rounds = (scenario.duration_s() / round_s).floor() as u64;
    // Per outage: its index, the scenario second of the kill, the mesh's clock then, the victims.
    let mut killed: Vec<Kill> = Vec::new();

    for step in 0..=rounds {
        let t = step as f64 * round_s;
        let now = Timestamp::from_nanos((t * 1e9) as u64);
        let wall = scenario.wall_ms(t);
        mesh.advance(now);

        // Deaths and recoveries.
        for (k, (r, at)) in outages.iter().enumerate() {
            if t >= *at && !killed.iter().any(|kill| kill.outage == k) {
                let victims: Vec<usize> = (0..n).filter(|i| nodes[*i].region == *r).collect();
                let mesh_at = mesh.now();
                for &v in &victims {
                    mesh.kill(v);
                    nodes[v].alive = false;
                }
                killed.push(Kill { outage: k, at: t, mesh_at, victims });
            }
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            if !node.alive && !load.is_down(node.region, t) {
                // Rejoin through any seed but itself.
                let seed = seeds.iter().copied().find(|s| *s != i).unwrap_or(0);
                mesh.restart(i, seed);
                node.alive = true;
            }
        }

        // Demand.
        let (routed, lost) = load.routed(t);
        fleet.unroutable_requests += lost.iter().sum::<f64>() * round_s;
        let alive_per_region = alive_counts(&nodes, scenario.regions.len());

        // The mesh: publish states, take failover shares.
        let mesh_due = t - last_mesh_t >= MESH_PERIOD_S - 1e-9;
        // A failover share needs the node's fleet view, O(nodes) to build: every second up to
        // 100 nodes, every five above (the daemon takes them once a second).
        let failover_due = mesh_due && (n <= 100 || (t.round() as u64).is_multiple_of(5));
        for (i, node) in nodes.iter_mut().enumerate() {
            if !node.alive {
                continue;
            }
            let alive = alive_per_region[node.region].max(1) as f64;
            let share: Rates = routed[node.region].map(|v| v / alive);
            let demand = demand_of(&share);
            node.model.arrive(t);
            node.engine.handle_pool_state(now, 0, node.model.serving());
            node.engine.handle_demand(now, 0, demand);
            if failover_due {
                for failover in mesh.failover_shares(i) {
                    if failover.pool == POOL_NAME {
                        node.engine.handle_failover(now, 0, &failover.id, &failover.failed_region, failover.load);
                        for (k, Kill { at: killed_at, .. }) in killed.iter().enumerate() {
                            if fleet.failover_applied_s[k].is_none() {
                                fleet.failover_applied_s[k] = Some(t - killed_at);
                            }
                        }
                    }
                }
            }
            node.engine.handle_timeout_with(now, wall, node.policy.as_mut());
            while let Some(decision) = node.engine.poll_decision() {
                node.model.apply(t, &decision);
                tracker.decision(node.region, t, &decision);
            }
            let protected = node.engine.active_weddings(&node.spec.region, wall) > 0;
            node.model.round(t, round_s, demand, protected);

            // The baseline, on the same share.
            node.hpa_model.arrive(t);
            let serving = node.hpa_model.serving();
            node.hpa.observe(t, serving, utilization(node.hpa_model.pool(), demand, serving));
            let asked = node.hpa_model.asked();
            if let Some(to) = node.hpa.sync(t, asked) {
                node.hpa_model.scale(t, asked, to);
            }
            node.hpa_model.round(t, round_s, demand, protected);
            if mesh_due {
                let active = node.engine.active_weddings(&node.spec.region, wall);
                mesh.offer_state(i, wedsync_mesh::node_state(&node.engine.status(), active));
            }
        }
        if mesh_due {
            last_mesh_t = t;
            // Whole-fleet checks cost O(nodes²): every second up to 100 nodes, then every ten.
            let check_every = if n > 100 { 10 } else { 1 };
            if (t.round() as u64).is_multiple_of(check_every) || fleet.join_convergence_s.is_none() {
                observe_mesh(
                    mesh.as_ref(),
                    &mut fleet,
                    &mut coordinators,
                    &mut agreement_checks,
                    &mut agreeing,
                    t,
                    &killed,
                );
            }
        }
        tracker.round(t, round_s, &routed, &nodes);
        if t >= next_sample {
            tracker.sample(t, &routed, &nodes);
            next_sample += sample_every;
        }
        if let Some(every) = progress_every
            && t >= next_progress
        {
            progress(&tracker.progress(t, scenario.duration_s(), &routed, &nodes));
            next_progress += every;
        }
    }

    if progress_every.is_some() {
        let (routed, _) = load.routed(scenario.duration_s());
        progress(&tracker.progress(scenario.duration_s(), scenario.duration_s(), &routed, &nodes));
    }
    mesh.finish();
    fleet.max_lag_s = mesh.max_lag_s();
    for (k, kill) in killed.iter().enumerate() {
        let since = kill.mesh_at;
        let detected = kill.victims.iter().map(|v| mesh.down_by_all_at(*v, since)).collect::<Option<Vec<_>>>();
        fleet.failure_detection_s[k] =
            detected.and_then(|d| d.into_iter().max()).map(|ts| ts.saturating_since(since).as_secs_f64());
    }
    fleet.coordinator_agreement = if agreement_checks == 0 { 1.0 } else { agreeing as f64 / agreement_checks as f64 };
    let bytes: u64 = (0..n).map(|i| mesh.bytes_sent(i)).sum();
    fleet.bytes_per_node_per_s = bytes as f64 / n.max(1) as f64 / scenario.duration_s().max(1.0);
    let regions = tracker.finish(&nodes);
    Ok(FleetResult { scenario, regions, fleet, policies: with_policies, elapsed_s: started.elapsed().as_secs_f64() })
}

/// A region's nodes killed by an outage.
struct Kill {
    /// Which outage of the scenario.
    outage: usize,
    /// Scenario second of the kill.
    at: f64,
    /// The mesh's clock at the kill (ahead of `at` when a real mesh's run fell behind).
    mesh_at: Timestamp,
    victims: Vec<usize>,
}

fn alive_counts(nodes: &[Node], regions: usize) -> Vec<usize> {
    let mut counts = vec![0; regions];
    for node in nodes.iter().filter(|n| n.alive) {
        counts[node.region] += 1;
    }
    counts
}

fn demand_of(rates: &Rates) -> Demand {
    let mut demand = Demand::default();
    for (class, rps) in TrafficClass::ALL.iter().zip(rates) {
        demand.set(*class, *rps);
    }
    demand
}

/// Each node's pool in region `r`.
pub fn pool_spec(scenario: &Scenario, r: usize) -> PoolSpec {
    let region = &scenario.regions[r];
    let p = &region.pool;
    PoolSpec {
        name: POOL_NAME.into(),
        region: region.name.clone(),
        min: p.min,
        max: p.max,
        capacity_per_unit: p.capacity_per_unit,
        class_capacity: [p.capacity_per_unit; 5],
        target_utilization: p.target_utilization,
        classes: TrafficClass::ALL.to_vec(),
        provisioning_delay: p.provisioning_delay,
        protected_floor: p.protected_floor.clamp(p.min, p.max),
        time_zone: region.time_zone.clone(),
        cost: UnitCost::default(),
        placements: Vec::new(),
        assume_size: None,
    }
}

/// Teaches `engine`'s forecaster the node's share of region `r`'s load over the history (one
/// sample per profile bucket), as weeks of running would have: the weekly profile, the level,
/// the short-term correction and the error quantiles.
#[allow(clippy::too_many_arguments)]
fn teach(
    engine: &mut Engine,
    load: &LoadModel,
    r: usize,
    nodes: u32,
    history: Duration,
    tz: &str,
    seasons: &SeasonalMultipliers,
) {
    let step = forecast::DEFAULT_BUCKET.as_secs_f64();
    let span = history.as_secs_f64();
    let samples: Vec<(i64, f64)> = (0..(span / step) as u64)
        .map(|k| {
            let t = -span + k as f64 * step;
            (load.scenario().wall_ms(t), load.own_demand(r, t).iter().sum::<f64>() / f64::from(nodes.max(1)))
        })
        .collect();
    let Ok(zone) = forecast::time_zone(tz) else { return };
    // Learned as the engine learns: divided by the seasonal factor it will multiply back.
    let fitted = Forecaster::fit(&samples, forecast::DEFAULT_BUCKET, &zone, seasons);
    if let Ok(bytes) = fitted.and_then(|p| p.to_bytes()) {
        // The bytes were just made by the same code: importing cannot fail but for a bug.
        let _ = engine.import_profile(0, &bytes);
    }
}

#[allow(clippy::too_many_arguments)]
fn observe_mesh(
    mesh: &dyn FleetMesh,
    fleet: &mut FleetFigures,
    coordinators: &mut Option<Vec<(String, String)>>,
    checks: &mut u64,
    agreeing: &mut u64,
    t: f64,
    killed: &[Kill],
) {
    let converged = mesh.converged();
    if fleet.join_convergence_s.is_none() && killed.is_empty() && converged {
        fleet.join_convergence_s = Some(t);
    }
    for (k, kill) in killed.iter().enumerate() {
        if fleet.reconvergence_s[k].is_none() && converged && t > kill.at {
            fleet.reconvergence_s[k] = Some(t - kill.at);
        }
    }
    if fleet.join_convergence_s.is_none() {
        return;
    }
    *checks += 1;
    if mesh.coordinators_agree() {
        *agreeing += 1;
    }
    let Some(now) = mesh.coordinators() else { return };
    if let Some(before) = coordinators.as_ref() {
        for (region, coordinator) in &now {
            if let Some((_, old)) = before.iter().find(|(r, _)| r == region)
                && old != coordinator
            {
                fleet.coordinator_changes += 1;
            }
        }
    }
    *coordinators = Some(now);
}

/// Region-level sums over the run.
struct RegionTracker {
    names: Vec<String>,
    onset: Vec<Option<f64>>,
    down_at: Vec<Option<f64>>,
    peak_demand: Vec<f64>,
    peak_capacity: Vec<f64>,
    peak_hpa_capacity: Vec<f64>,
    first_up: Vec<Option<f64>>,
    /// Last time since the onset the region's capacity was short of its demand: (engine, HPA).
    last_short: Vec<(Option<f64>, Option<f64>)>,
    round_s: f64,
    requests: Vec<[f64; 5]>,
    series: Vec<RegionSeries>,
}

impl RegionTracker {
    fn new(scenario: &Scenario, load: &LoadModel) -> RegionTracker {
        let n = scenario.regions.len();
        RegionTracker {
            names: scenario.regions.iter().map(|r| r.name.clone()).collect(),
            onset: (0..n).map(|r| load.onset_s(r)).collect(),
            down_at: (0..n).map(|r| load.outage_start(r)).collect(),
            peak_demand: vec![0.0; n],
            peak_capacity: vec![0.0; n],
            peak_hpa_capacity: vec![0.0; n],
            first_up: vec![None; n],
            last_short: vec![(None, None); n],
            round_s: scenario.round.as_secs_f64(),
            requests: vec![[0.0; 5]; n],
            series: vec![RegionSeries::default(); n],
        }
    }

    fn decision(&mut self, r: usize, t: f64, decision: &Decision) {
        let up = decision.to > decision.from;
        if decision.to != decision.from {
            self.series[r].decisions.push((t / 60.0, up));
        }
        // A predictive scale-up up to an hour ahead of the onset counts (negative: ahead).
        let predicted = decision.reasons.iter().any(|reason| matches!(reason, Reason::Predictive { .. }));
        let window = if predicted { PREDICTION_WINDOW_S } else { 0.0 };
        if up && self.first_up[r].is_none() && self.onset[r].is_some_and(|o| t >= o - window) {
            self.first_up[r] = Some(t);
        }
    }

    fn capacities(r: usize, nodes: &[Node]) -> (f64, f64) {
        nodes.iter().filter(|n| n.region == r && n.alive).fold((0.0, 0.0), |(a, b), n| {
            let per_unit = n.model.pool().capacity_per_unit;
            (a + f64::from(n.model.serving()) * per_unit, b + f64::from(n.hpa_model.serving()) * per_unit)
        })
    }

    fn round(&mut self, t: f64, round_s: f64, routed: &[Rates], nodes: &[Node]) {
        for (r, demand) in routed.iter().enumerate() {
            let total: f64 = demand.iter().sum();
            self.peak_demand[r] = self.peak_demand[r].max(total);
            for (sum, rps) in self.requests[r].iter_mut().zip(demand) {
                *sum += rps * round_s;
            }
            let (engine, hpa) = Self::capacities(r, nodes);
            if self.onset[r].is_some_and(|o| t >= o) && total > 0.0 {
                if engine < total {
                    self.last_short[r].0 = Some(t);
                }
                if hpa < total {
                    self.last_short[r].1 = Some(t);
                }
            }
            self.peak_capacity[r] = self.peak_capacity[r].max(engine);
            self.peak_hpa_capacity[r] = self.peak_hpa_capacity[r].max(hpa);
        }
    }

    fn sample(&mut self, t: f64, routed: &[Rates], nodes: &[Node]) {
        let minutes = t / 60.0;
        for (r, demand) in routed.iter().enumerate() {
            let (engine, hpa) = Self::capacities(r, nodes);
            let s = &mut self.series[r];
            s.demand.push((minutes, demand.iter().sum()));
            s.capacity.push((minutes, engine));
            s.hpa_capacity.push((minutes, hpa));
            let mut worst = [0.0f64; 5];
            let mut worst_hpa = [0.0f64; 5];
            for node in nodes.iter().filter(|n| n.region == r && n.alive) {
                for (w, l) in worst.iter_mut().zip(node.model.latency_now_ms()) {
                    *w = w.max(l);
                }
                for (w, l) in worst_hpa.iter_mut().zip(node.hpa_model.latency_now_ms()) {
                    *w = w.max(l);
                }
            }
            for c in 0..5 {
                if demand[c] > 0.0 {
                    s.latency[c].push((minutes, worst[c]));
                    s.hpa_latency[c].push((minutes, worst_hpa[c]));
                }
            }
        }
    }

    fn progress(&self, t: f64, duration: f64, routed: &[Rates], nodes: &[Node]) -> Progress {
        let regions = routed
            .iter()
            .enumerate()
            .map(|(r, demand)| {
                let (engine, hpa) = Self::capacities(r, nodes);
                let alive = nodes.iter().filter(|n| n.region == r && n.alive).count();
                (self.names[r].clone(), demand.iter().sum(), engine, hpa, alive)
            })
            .collect();
        Progress { t, duration, regions }
    }

    fn finish(self, nodes: &[Node]) -> Vec<RegionResult> {
        let mut out = Vec::new();
        for (r, name) in self.names.iter().enumerate() {
            let members: Vec<&Node> = nodes.iter().filter(|n| n.region == r).collect();
            let engine_reports: Vec<ReplayReport> = members.iter().map(|n| n.model.report()).collect();
            let hpa_reports: Vec<ReplayReport> = members.iter().map(|n| n.hpa_model.report()).collect();
            let mut engine = figures(&engine_reports, &self.requests[r], members.iter().map(|n| &n.model));
            let mut hpa = figures(&hpa_reports, &self.requests[r], members.iter().map(|n| &n.hpa_model));
            engine.peak_demand = self.peak_demand[r];
            hpa.peak_demand = self.peak_demand[r];
            engine.peak_capacity = self.peak_capacity[r];
            hpa.peak_capacity = self.peak_hpa_capacity[r];
            engine.onset_to_decision_s = self.onset[r].zip(self.first_up[r]).map(|(o, t)| t - o);
            // Capacity has carried the demand since the last round it fell short (0: never did).
            let carried =
                |short: Option<f64>| self.onset[r].map(|o| short.map_or(0.0, |s| (s + self.round_s - o).max(0.0)));
            engine.onset_to_capacity_s = carried(self.last_short[r].0);
            hpa.onset_to_capacity_s = carried(self.last_short[r].1);
            out.push(RegionResult {
                name: name.clone(),
                nodes: members.len(),
                onset_s: self.onset[r],
                down_at_s: self.down_at[r],
                engine,
                hpa,
                series: self.series[r].clone(),
            });
        }
        out
    }
}

/// A region's figures from its nodes' reports.
fn figures<'a>(
    reports: &[ReplayReport],
    requests: &[f64; 5],
    models: impl Iterator<Item = &'a PoolModel>,
) -> RegionFigures {
    let mut histograms = PoolModel::latency_histograms();
    for model in models {
        model.merge_latency(&mut histograms);
    }
    let mut f = RegionFigures::default();
    for (i, h) in histograms.iter().enumerate() {
        if !h.is_empty() {
            f.p99_latency_ms[i] = h.value_at_quantile(0.99) as f64 / 1000.0;
        }
    }
    f.onset_to_decision_s = reports.iter().filter_map(|r| r.onset_to_decision_s).reduce(f64::min);
    for report in reports {
        f.under_provisioned_unit_seconds += report.under_provisioned_unit_seconds;
        f.wedding_critical_unserved += report.wedding_critical_unserved;
        f.cost += report.total_cost;
        f.unit_hours += report.unit_hours;
        f.same_price_cost += report.same_price_cost;
        f.fall_to_need_s = f.fall_to_need_s.max(report.fall_to_need_s);
        f.decisions += report.decisions;
        for (i, shed) in report.shed_requests.iter().enumerate() {
            f.shed_fraction[i] += shed;
        }
    }
    for (fraction, total) in f.shed_fraction.iter_mut().zip(requests) {
        *fraction = if *total > 0.0 { *fraction / total } else { 0.0 };
    }
    f
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn quick() -> FleetResult {
        run(&Scenario::load("quick").unwrap(), &RunOptions::default(), None, |_| {}).unwrap()
    }

    #[test]
    fn the_quick_scenario_beats_the_baseline_and_the_fleet_sees_the_outage() {
        let result = quick();
        let names: Vec<&str> = result.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["eu-west", "eu-central", "us-east"]);
        let west = &result.regions[0];
        assert_eq!(west.onset_s, Some(30.0));
        let (engine, hpa) = (&west.engine, &west.hpa);
        assert!(engine.onset_to_capacity_s.unwrap() < hpa.onset_to_capacity_s.unwrap(), "{engine:?} {hpa:?}");
        assert!(engine.onset_to_decision_s.unwrap() < hpa.onset_to_decision_s.unwrap());
        assert_eq!(engine.wedding_critical_unserved, 0.0);
        assert_eq!(engine.shed_fraction[0], 0.0);
        assert!(hpa.wedding_critical_unserved > 0.0, "the baseline has no classes: {hpa:?}");
        assert!(engine.p99_latency_ms[0] < hpa.p99_latency_ms[0]);
        // eu-central dies at 90 s; its clients reach eu-west 10 s later.
        let central = &result.regions[1];
        assert_eq!(central.down_at_s, Some(90.0));
        assert_eq!(result.regions[0].series.demand.iter().map(|(_, d)| *d).fold(0.0, f64::max), engine.peak_demand);
        let fleet = &result.fleet;
        assert_eq!(fleet.nodes, 3);
        assert!(fleet.join_convergence_s.is_some_and(|s| s <= 10.0), "{fleet:?}");
        assert!(fleet.failure_detection_s[0].is_some_and(|s| s > 0.0 && s < 30.0), "{fleet:?}");
        assert!(fleet.failover_applied_s[0].is_some(), "{fleet:?}");
        assert!(fleet.reconvergence_s[0].is_some(), "{fleet:?}");
        assert!(fleet.unroutable_requests > 0.0, "eu-central's clients during the failover delay");
        assert!(fleet.bytes_per_node_per_s > 0.0);
        assert!(crate::report::verdict(&result).won, "{:?}", crate::report::verdict(&result));
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let (a, b) = (quick(), quick());
        for (x, y) in a.regions.iter().zip(&b.regions) {
            assert_eq!(format!("{:?}", x.engine), format!("{:?}", y.engine));
            assert_eq!(format!("{:?}", x.hpa), format!("{:?}", y.hpa));
        }
        assert_eq!(format!("{:?}", a.fleet), format!("{:?}", b.fleet));
    }

    #[test]
    fn node_counts_scale_and_the_mesh_still_converges() {
        let options = RunOptions { nodes: Some(30), ..RunOptions::default() };
        let mut updates = 0;
        let options = RunOptions { progress_every: Some(Duration::from_secs(30)), ..options };
        let result = run(&Scenario::load("quick").unwrap(), &options, None, |p| {
            updates += 1;
            assert_eq!(p.regions.len(), 3);
        })
        .unwrap();
        assert_eq!(result.fleet.nodes, 30);
        assert_eq!(result.regions.iter().map(|r| r.nodes).sum::<usize>(), 30);
        assert!(result.fleet.join_convergence_s.is_some(), "{:?}", result.fleet);
        assert!(result.fleet.failure_detection_s[0].is_some(), "{:?}", result.fleet);
        assert!((11..=13).contains(&updates), "{updates} progress updates over 5 minutes");
    }

    #[test]
    fn a_policy_that_fails_to_start_names_the_node() {
        let mut failing = |node: &NodeSpec| -> Result<Box<dyn RoundPolicy>, String> {
            Err(format!("no plugins for {}", node.region))
        };
        let err = run(&Scenario::load("quick").unwrap(), &RunOptions::default(), Some(&mut failing), |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("eu-west-1") && err.contains("no plugins for eu-west"), "{err}");
    }
}
