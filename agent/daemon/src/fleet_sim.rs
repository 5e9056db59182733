//! `wedsync-agent sim` over a fleet scenario: each node gets an agent configuration of its own
//! (its node id, region and pool) and, unless turned off, the agent's own plugin stage loading
//! the bundled plugins through wasmtime, so every round goes through the same WASM policies as
//! in production. The nodes gossip over real QUIC ([`crate::quic_fleet`]: an endpoint and the
//! agent's mesh task per node, paced at `--speed`) or, with `--virtual`, over the mesh's
//! virtual-time simulator. The run itself is [`wedsync_sim::fleet`]; the report,
//! [`wedsync_sim::report`].

use crate::config::{AgentConfig, ConfigErrors, PoolConfig};
use crate::fleet::FleetHandle;
use crate::plugins::{PluginStage, PluginStartError};
use crate::quic_fleet::{QuicFleet, QuicFleetError};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wedsync_core::engine::policy::RoundPolicy;
use wedsync_sim::fleet::{NodeSpec, PolicyFactory, Progress, RunOptions};
use wedsync_sim::report::Verdict;
use wedsync_sim::{FleetMesh, FleetResult, MeshPlan, Scenario};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetSimOptions {
    /// A built-in fleet scenario's name or a scenario file (TOML).
    pub scenario: String,
    /// Scale the scenario's node counts to about this many.
    pub nodes: Option<u32>,
    /// Seeds the mesh.
    pub seed: u64,
    /// Where the report goes.
    pub out: PathBuf,
    /// Run every node's bundled plugins.
    pub plugins: bool,
    /// Draw the plots.
    pub plots: bool,
    /// Show progress on stderr.
    pub progress: bool,
    /// The mesh the nodes gossip over.
    pub mesh: MeshMode,
}

/// The mesh a fleet simulation gossips over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeshMode {
    /// Every node its own QUIC endpoint on loopback running the agent's mesh task, the whole run
    /// paced at `speed` times the wall clock.
    Quic {
        /// Scenario seconds per wall-clock second.
        speed: f64,
    },
    /// The mesh's state machines in virtual time in this thread: as fast as the machine goes,
    /// the same result for the same seed, up to thousands of nodes.
    Virtual,
}

/// Why a fleet simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum FleetSimError {
    /// The scenario could not be used.
    #[error(transparent)]
    Scenario(#[from] wedsync_sim::ScenarioError),
    /// The run failed.
    #[error(transparent)]
    Fleet(#[from] wedsync_sim::FleetError),
    /// The real mesh cannot run this fleet.
    #[error(transparent)]
    Quic(#[from] QuicFleetError),
    /// The report could not be written.
    #[error(transparent)]
    Report(#[from] wedsync_sim::report::ReportError),
}

/// Most nodes that each get a plugin stage of their own: each is a wasmtime engine with its
/// pooling allocator, which does not fit a thousand times in one process. Larger fleets run
/// the engines alone (the engine's proposals stand), and the report says so.
pub const MAX_NODES_WITH_PLUGINS: u32 = 64;

/// Scenario seconds per wall second over real QUIC unless told otherwise: viral-saturday's
/// 45 minutes in 45 s.
pub const DEFAULT_SPEED: f64 = 60.0;

/// Each simulated node's plugin call budget.
const SIM_CALL_BUDGET: &str = "100ms";

/// Whether `name` names a fleet scenario (a built-in one, or a `.toml` file) rather than a
/// single-pool trace.
pub fn is_fleet_scenario(name: &str) -> bool {
    wedsync_sim::scenario::BUILT_IN.iter().any(|b| b.name == name) || name.ends_with(".toml")
}

/// Runs the scenario and writes the report; returns the result, the verdict and the files.
pub fn run(options: &FleetSimOptions) -> Result<(FleetResult, Verdict, Vec<PathBuf>), FleetSimError> {
    let scenario = Scenario::load(&options.scenario)?;
    let nodes = options.nodes.map_or_else(|| scenario.total_nodes(), |n| scenario.clone().with_nodes(n).total_nodes());
    if let MeshMode::Quic { speed } = options.mesh {
        QuicFleet::check(nodes as usize, speed)?;
    }
    let cache_dir = std::env::temp_dir().join("wedsync-sim-plugin-cache");
    let state_dir = std::env::temp_dir().join("wedsync-sim-state");
    let run_options = RunOptions {
        seed: options.seed,
        nodes: options.nodes,
        progress_every: options.progress.then(|| progress_period(&scenario)),
    };
    let mut bar = ProgressBar::new();
    let plugins = options.plugins && nodes <= MAX_NODES_WITH_PLUGINS;
    if options.plugins && !plugins {
        eprintln!(
            "sim: {nodes} nodes: the engines run without their plugins (each node's plugin stage is a wasmtime \
             engine; at most {MAX_NODES_WITH_PLUGINS} nodes get one)"
        );
    }
    let result = match options.mesh {
        MeshMode::Virtual => {
            let mut make_policy = |node: &NodeSpec| -> Result<Box<dyn RoundPolicy>, String> {
                plugin_stage(node, &cache_dir, &state_dir, None).map(|s| Box::new(s) as Box<dyn RoundPolicy>)
            };
            let policies: Option<&mut PolicyFactory<'_>> = if plugins { Some(&mut make_policy) } else { None };
            wedsync_sim::run(&scenario, &run_options, policies, |p| bar.show(p))?
        }
        MeshMode::Quic { speed } => {
            let pki = std::env::temp_dir().join(format!(
                "wedsync-sim-pki-{}-{}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            ));
            let result = run_over_quic(&scenario, &run_options, speed, &pki, plugins, &cache_dir, &state_dir, &mut bar);
            // The run's CA key and node keys are worth nothing after it; do not leave them.
            let _ = std::fs::remove_dir_all(&pki);
            result?
        }
    };
    bar.finish();
    let files = wedsync_sim::report::write(&result, &options.out, options.plots)?;
    let verdict = wedsync_sim::report::verdict(&result);
    Ok((result, verdict, files))
}

/// The run over real QUIC: every node's endpoint is bound first, so each node's plugin stage
/// reads its own node's fleet view as in `run`; the mesh tasks start with the run.
#[allow(clippy::too_many_arguments)]
fn run_over_quic(
    scenario: &Scenario,
    run_options: &RunOptions,
    speed: f64,
    pki: &std::path::Path,
    plugins: bool,
    cache_dir: &std::path::Path,
    state_dir: &std::path::Path,
    bar: &mut ProgressBar,
) -> Result<FleetResult, FleetSimError> {
    let plan = wedsync_sim::mesh_plan(scenario, run_options);
    let bound = QuicFleet::bind(&plan, speed, pki)?;
    let handles: Vec<_> = (0..plan.members.len()).map(|i| bound.handle(i)).collect();
    let mut make_policy = |node: &NodeSpec| -> Result<Box<dyn RoundPolicy>, String> {
        let fleet = handles.get(node.index).cloned().flatten();
        plugin_stage(node, cache_dir, state_dir, fleet).map(|s| Box::new(s) as Box<dyn RoundPolicy>)
    };
    let policies: Option<&mut PolicyFactory<'_>> = if plugins { Some(&mut make_policy) } else { None };
    let mut pending = Some(bound);
    let mut quic = |plan: &MeshPlan| -> Result<Box<dyn FleetMesh>, String> {
        let mut fleet = pending.take().ok_or("the QUIC mesh was asked for twice")?;
        if !fleet.members().eq(plan.members.iter().map(|(id, region)| (id.as_str(), region.as_str()))) {
            return Err("the run's members differ from the bound endpoints'".to_owned());
        }
        fleet.launch();
        Ok(Box::new(fleet))
    };
    Ok(wedsync_sim::run_on(scenario, run_options, policies, &mut quic, |p| bar.show(p))?)
}

/// About 200 progress updates over the run.
fn progress_period(scenario: &Scenario) -> Duration {
    Duration::from_secs_f64((scenario.duration_s() / 200.0).max(scenario.round.as_secs_f64()))
}

/// Why a node's plugin stage could not start.
#[derive(Debug, thiserror::Error)]
enum NodeStageError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Plugins(#[from] PluginStartError),
    #[error("plugins are off in the default configuration")]
    Off,
}

/// The agent's plugin stage for one simulated node: the default configuration with the node's
/// id, region and pool, loading the bundled plugins (their compiled artifacts shared by every
/// node through one cache directory).
fn plugin_stage(
    node: &NodeSpec,
    cache_dir: &std::path::Path,
    state_dir: &std::path::Path,
    fleet: Option<Arc<FleetHandle>>,
) -> Result<PluginStage, String> {
    let stage = || -> Result<PluginStage, NodeStageError> {
        let mut config = AgentConfig::default();
        config.agent.node_id = node.id.clone();
        config.agent.region = node.region.clone();
        config.plugins.cache_dir = cache_dir.display().to_string();
        // A plugin call that overran the agent's 5 ms budget on a busy machine would drop that
        // plugin's output for the round and make the run depend on the machine's load. The
        // simulation is about decisions; the plugins' speed is measured in the benches.
        config.plugins.call_budget = SIM_CALL_BUDGET.into();
        let p = &node.pool;
        config.pools = vec![PoolConfig {
            name: p.name.clone(),
            region: p.region.clone(),
            min: p.min,
            max: p.max,
            capacity_per_unit: p.capacity_per_unit,
            target_utilization: p.target_utilization,
            provisioning_delay: humantime::format_duration(p.provisioning_delay).to_string(),
            protected_floor: p.protected_floor,
            time_zone: p.time_zone.clone(),
            ..PoolConfig::default()
        }];
        let settings = config.validate()?;
        let Some(plugins) = &settings.plugins else { return Err(NodeStageError::Off) };
        Ok(PluginStage::start(
            &settings,
            plugins,
            state_dir,
            Arc::new(RwLock::new(crate::telemetry::HostView::default())),
            fleet,
            prometheus_client::metrics::counter::Counter::default(),
            None,
        )?)
    };
    stage().map_err(|e| e.to_string())
}

/// Live progress on stderr: a bar and a line per region, redrawn in place on a terminal, a line
/// every tenth of the run otherwise.
struct ProgressBar {
    terminal: bool,
    drawn_lines: usize,
    last_tenth: i64,
}

impl ProgressBar {
    fn new() -> ProgressBar {
        ProgressBar { terminal: std::io::stderr().is_terminal(), drawn_lines: 0, last_tenth: -1 }
    }

    fn show(&mut self, p: &Progress) {
        let fraction = if p.duration > 0.0 { (p.t / p.duration).clamp(0.0, 1.0) } else { 1.0 };
        let tenth = (fraction * 10.0).floor() as i64;
        if !self.terminal && tenth == self.last_tenth {
            return;
        }
        self.last_tenth = tenth;
        let width = 30;
        let filled = (fraction * f64::from(width)).round() as usize;
        let mut text = format!(
            "[{}{}] {:>3.0}%  t = {:>5.1} min of {:.0}\n",
            "#".repeat(filled),
            ".".repeat(width as usize - filled.min(width as usize)),
            fraction * 100.0,
            p.t / 60.0,
            p.duration / 60.0
        );
        for (name, demand, engine, hpa, alive) in &p.regions {
            text.push_str(&format!(
                "  {name:<14} demand {demand:>8.0} req/s  capacity: engine {engine:>8.0}  hpa {hpa:>8.0}  nodes up {alive}\n"
            ));
        }
        let mut err = std::io::stderr().lock();
        if self.terminal && self.drawn_lines > 0 {
            let _ = write!(err, "\x1b[{}A\x1b[J", self.drawn_lines);
        }
        let _ = err.write_all(text.as_bytes());
        self.drawn_lines = text.lines().count();
    }

    fn finish(&mut self) {
        let _ = std::io::stderr().flush();
    }
}
