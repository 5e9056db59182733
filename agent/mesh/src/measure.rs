//! Scenarios measured in the simulator: cold start, crash detection, false downs under loss,
//! state dissemination, traffic and viral-content detection. The bench (`benches/benches/mesh_sim.rs`) runs them at
//! 1,000 nodes; the tests run them on small fleets.

use crate::sim::{Network, Simulator, percentile};
use crate::{CLASSES, MeshConfig, NodeState, PoolFigures};
use rand::RngExt;
use rand::rngs::SmallRng;
use std::collections::BTreeSet;
use std::time::Duration;
use wedsync_core::Timestamp;
use wedsync_core::content::ViralConfig;

/// A fleet to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes.
    pub nodes: usize,
    /// Regions (nodes are spread round-robin).
    pub regions: usize,
    /// Timings every node uses.
    pub config: MeshConfig,
    /// The network.
    pub network: Network,
    /// Seed of the run.
    pub seed: u64,
    /// Nodes every other node announces itself to at start.
    pub seeds: usize,
}

/// Background node-state publication: every node offers a new state every `every`
/// (the mesh's state budget decides what is passed on).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// How often each node publishes (the daemon's state interval); `None`: no state traffic.
    pub every: Option<Duration>,
    /// Pools per state.
    pub pools: usize,
}

impl Workload {
    /// No node-state traffic.
    pub const NONE: Workload = Workload { every: None, pools: 0 };
}

/// The detector settings the content measurements use (the daemon's defaults).
pub fn viral_config() -> ViralConfig {
    ViralConfig {
        interval_ms: 1000,
        min_rate_per_s: 50.0,
        growth_factor: 3.0,
        baseline_intervals: 10,
        hint_ttl_ms: 30_000,
        max_hints: 100,
    }
}

/// Content traffic of a generation of keys: key `k` (`{generation}-{k}`, 300 keys) is asked for
/// `per_node × (300 − k)` times a second on each of four nodes, so fleet-wide rates are distinct
/// and the true top 100 is keys 0–99. `per_node` 0 stops the generation.
pub fn set_key_generation(sim: &mut Simulator, generation: &str, per_node: u64) {
    let n = sim.len().max(1);
    for k in 0..300usize {
        for j in 0..4 {
            let node = (k * 7 + j * 53) % n;
            sim.set_content_rate(node, &format!("{generation}-{k}"), per_node * (300 - k as u64));
        }
    }
}

/// The true top 100 of a generation set by [`set_key_generation`].
pub fn generation_top(generation: &str) -> BTreeSet<String> {
    (0..100).map(|k| format!("{generation}-{k}")).collect()
}

/// The fleet top 100 as node `i` knows it.
pub fn known_top(sim: &Simulator, i: usize) -> BTreeSet<String> {
    sim.content(i).map(|c| c.top(100).into_iter().map(|k| k.key).collect()).unwrap_or_default()
}

/// Virtual time until `check` holds for every running node, polling every 50 ms; `None` if not
/// within `limit`.
pub fn time_until_all(
    sim: &mut Simulator,
    limit: Duration,
    check: impl Fn(&Simulator, usize) -> bool,
) -> Option<Duration> {
    let start = sim.now();
    while sim.now().saturating_since(start) <= limit {
        if sim.running().all(|i| check(sim, i)) {
            return Some(sim.now().saturating_since(start));
        }
        sim.run_for(Duration::from_millis(50));
    }
    None
}

/// Whether node `i` hints `key`.
pub fn hints_key(sim: &Simulator, i: usize, key: &str) -> bool {
    sim.content(i).is_some_and(|c| c.hints().iter().any(|h| h.key == key))
}

/// A node state as a busy node would publish it.
pub fn sample_state(rng: &mut SmallRng, pools: usize) -> NodeState {
    const NAMES: [&str; 6] = ["checkout-api", "photo-upload", "vendor-sync", "guest-portal", "timeline", "search"];
    let pools: Vec<PoolFigures> = (0..pools)
        .map(|i| {
            let capacity = f64::from(rng.random_range(100..5000_u32));
            let load = capacity * rng.random_range(0.1..0.9);
            let mut class_load = [0f32; CLASSES];
            for slot in &mut class_load {
                *slot = (load / CLASSES as f64 * rng.random_range(0.5..1.5)) as f32;
            }
            let name = NAMES.get(i).map_or_else(|| format!("pool-{i}"), |n| (*n).to_owned());
            PoolFigures { pool: name, capacity, load, class_load }
        })
        .collect();
    NodeState {
        node: String::new(),
        region: String::new(),
        version: 0,
        capacity: pools.iter().map(|p| p.capacity).sum(),
        load: pools.iter().map(|p| p.load).sum(),
        healthy: true,
        active_weddings: rng.random_range(0..40),
        pools,
    }
}

/// Drives `sim` for `duration` while nodes publish states per `workload` (each at its own
/// phase). Nodes in `quiet` never publish.
pub fn run_with_workload(
    sim: &mut Simulator,
    duration: Duration,
    workload: Workload,
    quiet: &[usize],
    rng: &mut SmallRng,
) {
    let end = sim.now().saturating_add(duration);
    let Some(every) = workload.every.filter(|e| !e.is_zero()) else {
        sim.run_until(end);
        return;
    };
    // Node i publishes at i/n of the way through each period.
    let n = sim.len().max(1) as u128;
    let period = every.as_nanos().max(1);
    let step = Duration::from_millis(20);
    while sim.now() < end {
        let from = sim.now().as_nanos() as u128;
        let next = sim.now().saturating_add(step).min(end);
        let to = next.as_nanos() as u128;
        // Publications falling in [from, to).
        for i in 0..sim.len() {
            let phase = period * i as u128 / n;
            let k = (from.saturating_sub(phase)).div_ceil(period);
            let at = phase + k * period;
            if at >= from && at < to && !quiet.contains(&i) && sim.is_running(i) {
                let state = sample_state(rng, workload.pools);
                sim.publish(i, state);
            }
        }
        sim.run_until(next);
    }
}

/// Builds the fleet and starts every node at once, announcing to the first `seeds` nodes.
/// Returns the simulator and how long until every node knew every other (if within `limit`).
pub fn cold_start(s: &Scenario, limit: Duration) -> (Simulator, Option<Duration>) {
    let mut sim = Simulator::with_config(s.nodes, s.regions, s.config.clone(), s.network, s.seed);
    let seeds: Vec<usize> = (0..s.seeds.clamp(1, s.nodes.max(1))).collect();
    sim.join_all_by_addr(&seeds);
    let took = sim.run_until_converged(Duration::from_millis(100), limit);
    (sim, took)
}

/// Outcome of killing nodes one at a time.
#[derive(Debug, Clone, Default)]
pub struct Detection {
    /// Seconds from each kill until every running node had declared the node down (`inf`
    /// when some node had not within the limit).
    pub all: Vec<f64>,
    /// Seconds until the first node declared it down.
    pub first: Vec<f64>,
}

impl Detection {
    /// Percentile of the "declared down by all" times.
    pub fn all_p(&self, p: f64) -> f64 {
        percentile_with_misses(&self.all, p)
    }
}

/// Percentile where `inf` (never) ranks last.
pub fn percentile_with_misses(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// Kills `kills` random nodes one after the other (never the seeds), each `spacing` apart;
/// each victim restarts `spacing / 2` after it is killed. Nodes keep publishing states per
/// `workload`.
pub fn crash_detection(
    sim: &mut Simulator,
    kills: usize,
    spacing: Duration,
    limit: Duration,
    seeds: usize,
    workload: Workload,
    rng: &mut SmallRng,
) -> Detection {
    let mut result = Detection::default();
    let n = sim.len();
    if n <= seeds + 1 {
        return result;
    }
    let check = Duration::from_millis(50);
    sim.clear_seen();
    for _ in 0..kills {
        let victim = rng.random_range(seeds..n);
        if !sim.is_running(victim) {
            continue;
        }
        let killed_at = sim.now();
        sim.kill(victim);
        let mut all = None;
        while sim.now().saturating_since(killed_at) < limit {
            run_with_workload(sim, check, workload, &[], rng);
            if let Some(at) = sim.down_by_all_at(victim, killed_at) {
                all = Some(at);
                break;
            }
        }
        let first = sim.down_seen_at(victim, killed_at).into_iter().flatten().min();
        result.all.push(all.map_or(f64::INFINITY, |at| at.saturating_since(killed_at).as_secs_f64()));
        result.first.push(first.map_or(f64::INFINITY, |at| at.saturating_since(killed_at).as_secs_f64()));
        let half = spacing / 2;
        let elapsed = sim.now().saturating_since(killed_at);
        run_with_workload(sim, half.saturating_sub(elapsed), workload, &[], rng);
        sim.restart(victim, 0);
        run_with_workload(sim, spacing - half, workload, &[], rng);
        sim.clear_seen();
    }
    result
}

/// How fast node states passed on by the fleet reached the other running nodes.
#[derive(Debug, Clone, Default)]
pub struct StateLatency {
    /// Per update: seconds from the moment its node passed it on until every running node
    /// held it (`inf` when some node had not within the limit).
    pub reach_all: Vec<f64>,
    /// Per (update, node): seconds until that node held it.
    pub per_node: Vec<f64>,
}

/// Runs `duration` of `workload` and follows up to `samples` of the states the fleet passes
/// on (those of the first nodes to pass one on), each for at most `limit`.
pub fn state_latency(
    sim: &mut Simulator,
    duration: Duration,
    samples: usize,
    limit: Duration,
    workload: Workload,
    rng: &mut SmallRng,
) -> StateLatency {
    struct Tracked {
        node: usize,
        version: u64,
        since: Timestamp,
        got: Vec<Option<Timestamp>>,
    }
    let n = sim.len();
    let check = Duration::from_millis(10);
    let published = |sim: &Simulator, i: usize| sim.mesh(i).map_or(0, |m| m.stats().states_published);
    let mut last: Vec<u64> = (0..n).map(|i| published(sim, i)).collect();
    let mut tracked: Vec<Tracked> = Vec::new();
    let mut out = StateLatency::default();
    let end = sim.now().saturating_add(duration);
    while sim.now() < end || !tracked.is_empty() {
        run_with_workload(sim, check, workload, &[], rng);
        let now = sim.now();
        for (i, seen) in last.iter_mut().enumerate() {
            let p = published(sim, i);
            if p > *seen {
                *seen = p;
                if out.reach_all.len() + tracked.len() < samples && now < end {
                    let version = sim.mesh(i).map_or(0, |m| m.state_version_of(sim.node_id(i)));
                    // Passed on during the last check: count from the middle of it.
                    let since = Timestamp::from_nanos(now.as_nanos().saturating_sub(check.as_nanos() as u64 / 2));
                    tracked.push(Tracked { node: i, version, since, got: vec![None; n] });
                }
            }
        }
        tracked.retain_mut(|t| {
            let id = sim.node_id(t.node).to_owned();
            let mut all = true;
            for j in 0..n {
                if j == t.node || t.got[j].is_some() {
                    continue;
                }
                match sim.mesh(j) {
                    Some(m) if m.state_version_of(&id) >= t.version => t.got[j] = Some(now),
                    Some(_) => all = false,
                    None => {}
                }
            }
            let expired = now.saturating_since(t.since) >= limit;
            if all || expired {
                let secs = |at: Timestamp| at.saturating_since(t.since).as_secs_f64();
                for j in (0..n).filter(|j| *j != t.node && sim.is_running(*j)) {
                    out.per_node.push(t.got[j].map_or(f64::INFINITY, secs));
                }
                out.reach_all.push(if all { secs(now) } else { f64::INFINITY });
                return false;
            }
            true
        });
    }
    out
}

/// Bytes per second each node sent over a window (frame overhead included).
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    /// Mean over nodes.
    pub mean: f64,
    /// 99th percentile over nodes.
    pub p99: f64,
    /// Busiest node.
    pub max: f64,
}

/// Runs `window` and measures each running node's sending rate.
pub fn traffic(sim: &mut Simulator, window: Duration, workload: Workload, rng: &mut SmallRng) -> Traffic {
    let before: Vec<u64> = (0..sim.len()).map(|i| sim.bytes_sent(i)).collect();
    let start = sim.now();
    run_with_workload(sim, window, workload, &[], rng);
    let secs = sim.now().saturating_since(start).as_secs_f64().max(1e-9);
    let rates: Vec<f64> = sim.running().map(|i| (sim.bytes_sent(i) - before[i]) as f64 / secs).collect();
    Traffic {
        mean: rates.iter().sum::<f64>() / rates.len().max(1) as f64,
        p99: percentile(&rates, 99.0).unwrap_or(0.0),
        max: rates.iter().copied().fold(0.0, f64::max),
    }
}

/// False downs per hour over a run that started at `since`.
pub fn false_downs_per_hour(sim: &Simulator, since: Timestamp) -> f64 {
    let hours = sim.now().saturating_since(since).as_secs_f64() / 3600.0;
    sim.false_downs(since) as f64 / hours.max(1e-9)
}

/// CPU time the calling thread has used (Linux; elsewhere, wall time since first call).
pub fn thread_cpu() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()));
        if let Some(ns) = ns {
            return Duration::from_nanos(ns);
        }
    }
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// One crash-detection measurement.
#[derive(Debug, Clone)]
pub struct DetectionCase {
    /// Row label.
    pub label: &'static str,
    /// Profile (and network: LAN or WAN).
    pub profile: crate::Profile,
    /// foca's stock timings instead of the tuned ones.
    pub stock: bool,
    /// Fleet size.
    pub nodes: usize,
    /// Kills per seed.
    pub kills: usize,
    /// Time between kills.
    pub spacing: Duration,
    /// The goal for p99, if any.
    pub goal: Option<Duration>,
}

/// What the report measures, and how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Seeds every scenario is repeated over (the 1,000-node fleet run uses the first).
    pub seeds: Vec<u64>,
    /// Regions per fleet.
    pub regions: usize,
    /// Nodes every node announces itself to at start.
    pub seed_nodes: usize,
    /// Background state publication.
    pub workload: Workload,
    /// Size of the large fleet.
    pub fleet: usize,
    /// Virtual time the large fleet runs with states flowing (CPU and traffic measured).
    pub fleet_run: Duration,
    /// Node states followed for dissemination latency.
    pub state_samples: usize,
    /// Crash detection cases.
    pub detection: Vec<DetectionCase>,
    /// Loss levels of the trade-off curve (on the large fleet).
    pub loss: Vec<f64>,
    /// Virtual time per loss level.
    pub loss_window: Duration,
    /// Time between kills during a loss level.
    pub loss_spacing: Duration,
    /// Fleet sizes whose traffic is measured (membership only and with states; the large
    /// fleet's is measured in its long run).
    pub traffic_sizes: Vec<usize>,
    /// Long runs without kills, (nodes, loss): false downs over a simulated hour.
    pub long_loss: Vec<(usize, f64)>,
    /// Virtual time of each long run.
    pub long_loss_window: Duration,
    /// Changes of the content distribution and viral keys measured (on the large fleet).
    pub content_events: usize,
}

impl Plan {
    /// The full measurement of issue 5 (a few minutes of CPU per 1,000-node scenario).
    pub fn full() -> Plan {
        use crate::Profile::{Lan, Wan};
        let case = |label, profile, stock, nodes, kills, spacing: u64, goal: Option<u64>| DetectionCase {
            label,
            profile,
            stock,
            nodes,
            kills,
            spacing: Duration::from_secs(spacing),
            goal: goal.map(Duration::from_secs),
        };
        Plan {
            seeds: vec![1, 2, 3],
            regions: 4,
            seed_nodes: 3,
            workload: Workload { every: Some(Duration::from_secs(1)), pools: 3 },
            fleet: 1000,
            fleet_run: Duration::from_secs(600),
            state_samples: 200,
            detection: vec![
                case("LAN tuned", Lan, false, 10, 100, 6, Some(2)),
                case("LAN tuned", Lan, false, 100, 50, 8, Some(3)),
                case("LAN tuned", Lan, false, 1000, 10, 10, Some(5)),
                case("WAN tuned", Wan, false, 1000, 5, 30, Some(20)),
                case("LAN stock foca", Lan, true, 100, 10, 30, None),
            ],
            loss: vec![0.0, 0.05, 0.10, 0.20],
            loss_window: Duration::from_secs(120),
            loss_spacing: Duration::from_secs(15),
            traffic_sizes: vec![10, 100],
            long_loss: vec![(100, 0.10), (100, 0.20)],
            long_loss_window: Duration::from_secs(3600),
            content_events: 10,
        }
    }

    /// A small version for a quick look (and the tests).
    pub fn quick() -> Plan {
        let mut plan = Plan::full();
        plan.seeds.truncate(1);
        plan.fleet = 200;
        plan.fleet_run = Duration::from_secs(60);
        plan.state_samples = 20;
        for case in &mut plan.detection {
            case.nodes = case.nodes.min(200);
            case.kills = case.kills.min(5);
        }
        plan.loss = vec![0.0, 0.10];
        plan.loss_window = Duration::from_secs(30);
        plan.traffic_sizes = vec![50];
        plan.long_loss = vec![(50, 0.10)];
        plan.long_loss_window = Duration::from_secs(300);
        plan.content_events = 3;
        plan
    }
}

fn scenario(plan: &Plan, nodes: usize, profile: crate::Profile, stock: bool, seed: u64) -> Scenario {
    let size = u32::try_from(nodes).unwrap_or(u32::MAX);
    let (config, network) = match profile {
        crate::Profile::Lan => (MeshConfig::new(profile, size), Network::LAN),
        crate::Profile::Wan => (MeshConfig::new(profile, size), Network::WAN),
    };
    let config = if stock { MeshConfig::stock(profile, size) } else { config };
    Scenario { nodes, regions: plan.regions, config, network, seed, seeds: plan.seed_nodes }
}

fn secs(x: f64) -> String {
    if x.is_finite() { format!("{x:.2}") } else { "never".into() }
}

fn rng_for(seed: u64) -> SmallRng {
    <SmallRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x6d65_7368_5349_4d00)
}

/// Runs `plan` and writes a table of what was measured.
pub fn run_report(plan: &Plan, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use crate::Profile::{Lan, Wan};
    let started = thread_cpu();
    writeln!(
        out,
        "wedsync-mesh simulator (issue 5). LAN: 0.5 ms ± 0.5 ms one way; WAN: 40 ms ± 20 ms; {} regions; \
         {} seed nodes; every node offers a new state (3 pools) every {:?}; bytes include {} B/frame of QUIC+UDP+IP.",
        plan.regions,
        plan.seed_nodes,
        plan.workload.every.unwrap_or_default(),
        crate::sim::FRAME_OVERHEAD
    )?;
    for (label, n) in [("LAN", 10), ("LAN", 1000), ("WAN", 1000)] {
        let profile = if label == "LAN" { Lan } else { Wan };
        let c = MeshConfig::new(profile, n);
        writeln!(
            out,
            "tuned {label} N={n}: probe every {:?} (direct timeout {:?}, {} indirect, {} direct retries, hold {:?}), \
             suspicion {:?}, {} transmissions, gossip {:?}×{}, forward fan-out {}, digest {:?}, anti-entropy {:?}, \
             state budget {} B/s",
            c.probe_period,
            c.probe_rtt,
            c.indirect_probes,
            c.probe_retries,
            c.probe_hold,
            c.suspicion,
            c.max_transmissions,
            c.gossip_period,
            c.gossip_fanout,
            c.forward_fanout,
            c.digest_interval.unwrap_or_default(),
            c.steady_sync(n as usize),
            c.state_budget.unwrap_or(0)
        )?;
    }
    let first_seed = plan.seeds.first().copied().unwrap_or(1);

    // The large fleet: cold start, a long run (CPU, traffic), state dissemination.
    writeln!(
        out,
        "\n[3] cold start: {} nodes announce to the seeds at once; time until every node knows every other",
        plan.fleet
    )?;
    let mut colds = Vec::new();
    let mut fleet = None;
    for (k, seed) in plan.seeds.iter().enumerate() {
        let s = scenario(plan, plan.fleet, Lan, false, *seed);
        let cpu = thread_cpu();
        let (sim, took) = cold_start(&s, Duration::from_secs(60));
        let took = took.map_or(f64::INFINITY, |d| d.as_secs_f64());
        writeln!(
            out,
            "    seed {seed}: {} s (CPU {:.1} s)   goal ≤ 10 s",
            secs(took),
            (thread_cpu() - cpu).as_secs_f64()
        )?;
        colds.push(took);
        if k == 0 {
            fleet = Some(sim);
        }
    }
    writeln!(out, "    max over seeds: {} s", secs(colds.iter().copied().fold(0.0, f64::max)))?;

    if let Some(mut sim) = fleet {
        let mut rng = rng_for(first_seed);
        writeln!(out, "\n[6]+[5] {} nodes, LAN, {:?} of virtual time with states flowing", plan.fleet, plan.fleet_run)?;
        let cpu = thread_cpu();
        let head = plan.fleet_run / 2;
        run_with_workload(&mut sim, head, plan.workload, &[], &mut rng);
        let t = traffic(&mut sim, plan.fleet_run - head, plan.workload, &mut rng);
        let used = (thread_cpu() - cpu).as_secs_f64();
        let per_10min = used * 600.0 / plan.fleet_run.as_secs_f64().max(1e-9);
        writeln!(out, "    CPU: {used:.1} s ({per_10min:.1} s per 10 virtual minutes)   goal < 60 s per 10 minutes")?;
        writeln!(
            out,
            "    traffic per node over the second half: mean {:.1} KiB/s, p99 {:.1}, max {:.1}   goal ≤ 20 KiB/s",
            t.mean / 1024.0,
            t.p99 / 1024.0,
            t.max / 1024.0
        )?;
        let st = sim.total_stats();
        writeln!(
            out,
            "    states passed on: {} (fleet-wide {:.2}/s); held back by the state budget: {}; false downs: {}",
            st.states_published,
            st.states_published as f64 / sim.now().as_nanos().max(1) as f64 * 1e9,
            st.states_deferred,
            sim.false_downs(Timestamp::ZERO)
        )?;
        let s = scenario(plan, plan.fleet, Lan, false, first_seed);
        let (mut bare, _) = cold_start(&s, Duration::from_secs(60));
        let cpu = thread_cpu();
        bare.run_for(head);
        let b = traffic(&mut bare, plan.fleet_run - head, Workload::NONE, &mut rng);
        let used = (thread_cpu() - cpu).as_secs_f64();
        writeln!(
            out,
            "    membership only (no node states): CPU {used:.1} s ({:.1} s per 10 virtual minutes); traffic per \
             node mean {:.2} KiB/s, p99 {:.2}, max {:.2}",
            used * 600.0 / plan.fleet_run.as_secs_f64().max(1e-9),
            b.mean / 1024.0,
            b.p99 / 1024.0,
            b.max / 1024.0
        )?;
        drop(bare);
        writeln!(out, "\n[4] node-state dissemination, {} nodes, LAN, states flowing", plan.fleet)?;
        let lat = state_latency(
            &mut sim,
            Duration::from_secs(120),
            plan.state_samples,
            Duration::from_secs(60),
            plan.workload,
            &mut rng,
        );
        writeln!(
            out,
            "    {} updates: reached every node p50 {} s, p99 {} s, max {} s; per node p99 {} s   goal p99 ≤ 1 s",
            lat.reach_all.len(),
            secs(percentile_with_misses(&lat.reach_all, 50.0)),
            secs(percentile_with_misses(&lat.reach_all, 99.0)),
            secs(percentile_with_misses(&lat.reach_all, 100.0)),
            secs(percentile_with_misses(&lat.per_node, 99.0)),
        )?;
    }

    writeln!(
        out,
        "\n[1] crash → declared down by every running node (s), states flowing; one kill at a time, the victim restarts later"
    )?;
    writeln!(
        out,
        "    {:<15} {:>5} {:>6} {:>8} {:>7} {:>7} {:>7} {:>6} {:>7}",
        "case", "N", "kills", "first50", "p50", "p99", "max", "goal", "falsedn"
    )?;
    for case in &plan.detection {
        let mut all = Detection::default();
        let mut false_downs = 0;
        let seeds: Vec<u64> =
            if case.nodes >= 1000 { plan.seeds.iter().take(2).copied().collect() } else { plan.seeds.clone() };
        for seed in &seeds {
            let s = scenario(plan, case.nodes, case.profile, case.stock, *seed);
            let (mut sim, _) = cold_start(&s, Duration::from_secs(120));
            let mut rng = rng_for(*seed);
            let warm = if case.profile == Wan { 60 } else { 20 };
            run_with_workload(&mut sim, Duration::from_secs(warm), plan.workload, &[], &mut rng);
            let since = sim.now();
            let d = crash_detection(
                &mut sim,
                case.kills,
                case.spacing,
                Duration::from_secs(300),
                plan.seed_nodes,
                plan.workload,
                &mut rng,
            );
            false_downs += sim.false_downs(since);
            all.all.extend(d.all);
            all.first.extend(d.first);
        }
        writeln!(
            out,
            "    {:<15} {:>5} {:>6} {:>8} {:>7} {:>7} {:>7} {:>6} {:>7}",
            case.label,
            case.nodes,
            all.all.len(),
            secs(percentile_with_misses(&all.first, 50.0)),
            secs(all.all_p(50.0)),
            secs(all.all_p(99.0)),
            secs(all.all_p(100.0)),
            case.goal.map_or_else(|| "-".into(), |g| format!("≤{}", g.as_secs())),
            false_downs
        )?;
    }

    writeln!(
        out,
        "\n[2] loss trade-off, {} nodes, LAN, states flowing, {:?} per level, a kill every {:?}",
        plan.fleet, plan.loss_window, plan.loss_spacing
    )?;
    writeln!(
        out,
        "    {:>5} {:>9} {:>9} {:>10} {:>13} {:>11} {:>8} {:>10}",
        "loss", "detect50", "detect99", "falsedn/h", "suspicions/h", "refuted/h", "flaps/h", "KiB/s/node"
    )?;
    for loss in &plan.loss {
        let s = scenario(plan, plan.fleet, Lan, false, first_seed);
        let (mut sim, _) = cold_start(&s, Duration::from_secs(60));
        let mut rng = rng_for(first_seed ^ 0x1055);
        run_with_workload(&mut sim, Duration::from_secs(20), plan.workload, &[], &mut rng);
        sim.set_network(Network::LAN.with_loss(*loss));
        let since = sim.now();
        let before = sim.total_stats();
        let bytes: u64 = (0..sim.len()).map(|i| sim.bytes_sent(i)).sum();
        let kills = (plan.loss_window.as_secs() / plan.loss_spacing.as_secs().max(1)) as usize;
        let d = crash_detection(
            &mut sim,
            kills,
            plan.loss_spacing,
            Duration::from_secs(120),
            plan.seed_nodes,
            plan.workload,
            &mut rng,
        );
        let after = sim.total_stats();
        let elapsed = sim.now().saturating_since(since).as_secs_f64();
        let hours = elapsed / 3600.0;
        let sent: u64 = (0..sim.len()).map(|i| sim.bytes_sent(i)).sum::<u64>() - bytes;
        writeln!(
            out,
            "    {:>4.0}% {:>9} {:>9} {:>10.1} {:>13.0} {:>11.0} {:>8.1} {:>10.1}",
            loss * 100.0,
            secs(d.all_p(50.0)),
            secs(d.all_p(99.0)),
            false_downs_per_hour(&sim, since),
            (after.suspicions_raised - before.suspicions_raised) as f64 / hours,
            (after.suspicions_refuted - before.suspicions_refuted) as f64 / hours,
            (after.rejoins - before.rejoins) as f64 / hours,
            sent as f64 / sim.len() as f64 / elapsed / 1024.0
        )?;
    }

    for (nodes, loss) in &plan.long_loss {
        let s = scenario(plan, *nodes, Lan, false, first_seed);
        let (mut sim, _) = cold_start(&s, Duration::from_secs(60));
        let mut rng = rng_for(first_seed ^ 0x10c6);
        run_with_workload(&mut sim, Duration::from_secs(20), plan.workload, &[], &mut rng);
        sim.set_network(Network::LAN.with_loss(*loss));
        let since = sim.now();
        let before = sim.total_stats();
        run_with_workload(&mut sim, plan.long_loss_window, plan.workload, &[], &mut rng);
        let after = sim.total_stats();
        let hours = plan.long_loss_window.as_secs_f64() / 3600.0;
        writeln!(
            out,
            "    {nodes} nodes, {:.0}% loss, {:.1} simulated hours without kills: {} false downs; {:.0} suspicions/h, \
             {:.0} refuted/h, {} flaps",
            loss * 100.0,
            hours,
            sim.false_downs(since),
            (after.suspicions_raised - before.suspicions_raised) as f64 / hours,
            (after.suspicions_refuted - before.suspicions_refuted) as f64 / hours,
            after.rejoins - before.rejoins
        )?;
    }

    content_report(plan, out)?;

    writeln!(out, "\n[5] traffic per node (KiB/s, frame overhead included): membership only, then with states")?;
    for n in &plan.traffic_sizes {
        let s = scenario(plan, *n, Lan, false, first_seed);
        let (mut sim, _) = cold_start(&s, Duration::from_secs(60));
        let mut rng = rng_for(first_seed ^ 0x7aff);
        // Let the join gossip and the first anti-entropy rounds settle.
        run_with_workload(&mut sim, Duration::from_secs(90), Workload::NONE, &[], &mut rng);
        let bare = traffic(&mut sim, Duration::from_secs(60), Workload::NONE, &mut rng);
        run_with_workload(&mut sim, Duration::from_secs(30), plan.workload, &[], &mut rng);
        let with = traffic(&mut sim, Duration::from_secs(60), plan.workload, &mut rng);
        writeln!(
            out,
            "    N={n:<5} membership: mean {:.2} p99 {:.2} max {:.2};  with states: mean {:.2} p99 {:.2} max {:.2}   goal ≤ 20",
            bare.mean / 1024.0,
            bare.p99 / 1024.0,
            bare.max / 1024.0,
            with.mean / 1024.0,
            with.p99 / 1024.0,
            with.max / 1024.0
        )?;
    }
    writeln!(out, "\nreport CPU: {:.0} s", (thread_cpu() - started).as_secs_f64())?;
    Ok(())
}

/// The region coordinators as node `i` sees them (simulator indices).
pub fn coordinators(sim: &Simulator, i: usize) -> Vec<usize> {
    let Some(mesh) = sim.mesh(i) else { return Vec::new() };
    let view = mesh.fleet_view();
    let ids: BTreeSet<&str> = view.regions.values().map(|r| r.coordinator.as_str()).collect();
    (0..sim.len()).filter(|j| ids.contains(sim.node_id(*j))).collect()
}

/// Whether node `i` knows the fleet's heaviest keys of `generation` (see
/// [`set_key_generation`]): the top 100 on a region coordinator, the top
/// [`crate::content::MEMBER_TOP_KEYS`] elsewhere.
pub fn knows_generation_top(sim: &Simulator, i: usize, generation: &str, coordinators: &[usize]) -> bool {
    let want = if coordinators.contains(&i) { 100 } else { crate::content::MEMBER_TOP_KEYS };
    let expected: BTreeSet<String> = (0..want).map(|k| format!("{generation}-{k}")).collect();
    let known: BTreeSet<String> =
        sim.content(i).map(|c| c.top(want).into_iter().map(|k| k.key).collect()).unwrap_or_default();
    known == expected
}

/// [7] of the report, alone: a viral key hinted on every node; the fleet top after the whole key distribution
/// changes (top 100 on every region coordinator, top 10 on every node); content traffic.
pub fn content_report(plan: &Plan, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let n = plan.fleet;
    writeln!(
        out,
        "\n[7] viral content, {n} nodes, LAN, 1 s intervals: 300 keys, each seen by 4 nodes; {} viral keys, then {} \
         changes of the whole distribution",
        plan.content_events, plan.content_events
    )?;
    let seed = plan.seeds.first().copied().unwrap_or(1);
    let s = scenario(plan, n, crate::Profile::Lan, false, seed);
    let (mut sim, _) = cold_start(&s, Duration::from_secs(60));
    sim.enable_content(viral_config());
    set_key_generation(&mut sim, "g0", 5);
    sim.run_for(Duration::from_millis(12_300));
    let before: Vec<(u64, u64)> = (0..n).map(|i| sim.content_bytes(i)).collect();
    let measured_from = sim.now();
    let mut rng = rng_for(seed ^ 0xc0de);
    let mut viral_times = Vec::new();
    for event in 0..plan.content_events {
        let key = format!("post-{event}");
        let region = format!("region-{}", event % plan.regions.max(1));
        let nodes: Vec<usize> = (0..n).filter(|i| sim.region_of(*i) == region).take(20).collect();
        sim.run_for(Duration::from_millis(rng.random_range(0..1000)));
        for i in &nodes {
            sim.set_content_rate(*i, &key, 20);
        }
        let took = time_until_all(&mut sim, Duration::from_secs(20), |sim, i| hints_key(sim, i, &key));
        viral_times.push(took.map_or(f64::INFINITY, |d| d.as_secs_f64()));
        sim.run_for(Duration::from_secs(3));
        for i in &nodes {
            sim.set_content_rate(*i, &key, 0);
        }
        sim.run_for(Duration::from_secs(10));
    }
    let mut top_times = Vec::new();
    for event in 0..plan.content_events {
        // Mid-interval, at a different phase each time.
        sim.run_for(Duration::from_millis(rng.random_range(0..1000)));
        set_key_generation(&mut sim, &format!("g{event}"), 0);
        let next = format!("g{}", event + 1);
        set_key_generation(&mut sim, &next, 5);
        let coordinators = coordinators(&sim, 0);
        let took = time_until_all(&mut sim, Duration::from_secs(20), |sim, i| {
            knows_generation_top(sim, i, &next, &coordinators)
        });
        top_times.push(took.map_or(f64::INFINITY, |d| d.as_secs_f64()));
        sim.run_for(Duration::from_secs(5));
    }
    let elapsed = sim.now().saturating_since(measured_from).as_secs_f64().max(1e-9);
    let kib = |bytes: u64| bytes as f64 / elapsed / 1024.0;
    let coordinators = coordinators(&sim, 0);
    let (mut member_out, mut member_in, mut coord_out, mut coord_in) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (sent_before, received_before)) in before.iter().enumerate() {
        let (sent, received) = sim.content_bytes(i);
        let (sent, received) = (kib(sent - sent_before), kib(received - received_before));
        if coordinators.contains(&i) {
            coord_out.push(sent);
            coord_in.push(received);
        } else {
            member_out.push(sent);
            member_in.push(received);
        }
    }
    let refused: u64 = (0..n).filter_map(|i| sim.content(i)).map(|c| c.stats().refused).sum();
    let p = |v: &[f64], q: f64| percentile(v, q).unwrap_or(0.0);
    writeln!(
        out,
        "    viral key hinted at every node: p50 {} s, p99 {} s, max {} s",
        secs(percentile_with_misses(&viral_times, 50.0)),
        secs(percentile_with_misses(&viral_times, 99.0)),
        secs(percentile_with_misses(&viral_times, 100.0))
    )?;
    writeln!(
        out,
        "    new fleet top (100 on coordinators, {} on members) at every node: p50 {} s, p99 {} s, max {} s   goal ≤ 2 s",
        crate::content::MEMBER_TOP_KEYS,
        secs(percentile_with_misses(&top_times, 50.0)),
        secs(percentile_with_misses(&top_times, 99.0)),
        secs(percentile_with_misses(&top_times, 100.0))
    )?;
    writeln!(
        out,
        "    content traffic KiB/s: members out p50 {:.2} max {:.2}, in p50 {:.2} max {:.2}; coordinators out max {:.2}, in \
         max {:.2}; sketches ≤ {} B; refused frames {refused}",
        p(&member_out, 50.0),
        p(&member_out, 100.0),
        p(&member_in, 50.0),
        p(&member_in, 100.0),
        p(&coord_out, 100.0),
        p(&coord_in, 100.0),
        wedsync_core::content::MAX_SKETCH_BYTES
    )?;
    Ok(())
}
