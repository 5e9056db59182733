//! `wedsync-agent sim` over a single-pool trace: one pool over a demand trace, the decision engine against
//! the Kubernetes HPA baseline on the same capacity model ([`wedsync_core::replay`]), scored
//! side by side into `report.json` and `report.md`.
//!
//! Fleet scenarios (many nodes, regions, plots) are [`crate::fleet_sim`]; this is the one-pool
//! comparison over a demand trace. [`SimCommand`] is the command itself, which picks one or the
//! other by the scenario's name.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use wedsync_core::TrafficClass;
use wedsync_core::baseline::HpaSettings;
use wedsync_core::engine::EngineSettings;
use wedsync_core::replay::{ReplayReport, Trace, replay, replay_hpa, trace_pool};

/// A built-in scenario: a shipped demand trace and the pool it is meant for.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its name (`--scenario NAME`).
    pub name: &'static str,
    /// What it shows.
    pub about: &'static str,
    csv: &'static str,
    min: u32,
    max: u32,
    provisioning_delay_s: u64,
}

/// The built-in scenarios (the traces in `tests/traces/`).
pub const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "viral-spike",
        about: "a post goes viral: registrations 5x at once, then 100x within 5 minutes",
        csv: include_str!("../../../tests/traces/viral-spike.csv"),
        min: 5,
        max: 1000,
        provisioning_delay_s: 60,
    },
    Scenario {
        name: "saturday-surge",
        about: "a peak-season Saturday, hour by hour",
        csv: include_str!("../../../tests/traces/saturday-surge.csv"),
        min: 2,
        max: 200,
        provisioning_delay_s: 60,
    },
    Scenario {
        name: "april-ramp",
        about: "14 days across the start of the wedding season",
        csv: include_str!("../../../tests/traces/april-ramp.csv"),
        min: 2,
        max: 200,
        provisioning_delay_s: 120,
    },
    Scenario {
        name: "wedding-day-trace",
        about: "three ceremonies with photo-upload surges, the region protected",
        csv: include_str!("../../../tests/traces/wedding-day.csv"),
        min: 2,
        max: 200,
        provisioning_delay_s: 60,
    },
    Scenario {
        name: "flash-crowd-during-wedding",
        about: "media 30x during a wedding, beyond the pool's maximum",
        csv: include_str!("../../../tests/traces/flash-crowd-during-wedding.csv"),
        min: 5,
        max: 100,
        provisioning_delay_s: 60,
    },
];

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// A built-in scenario's name, or a trace file (CSV, see [`wedsync_core::replay`]).
    pub scenario: String,
    /// Where the report goes.
    pub out: PathBuf,
    /// The pool's minimum (default: the scenario's, or 2 for a file).
    pub min: Option<u32>,
    /// The pool's maximum (default: the scenario's, or 200 for a file).
    pub max: Option<u32>,
    /// Time from asking for a unit to its serving (default: the scenario's, or 60 s).
    pub provisioning_delay: Option<Duration>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Neither a built-in scenario nor a readable file.
    #[error("scenario {name:?}: not a built-in scenario ({known}) and not a readable file: {source}")]
    UnknownScenario {
        /// What was asked for.
        name: String,
        /// The built-in names.
        known: String,
        /// Why the file could not be read.
        source: std::io::Error,
    },
    /// The trace does not parse.
    #[error(transparent)]
    Trace(#[from] wedsync_core::replay::TraceError),
    /// The pool options contradict each other.
    #[error("pool: {0}")]
    Pool(String),
    /// The report could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How the engine did against the baseline, criterion by criterion.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Capacity no later than the baseline's (or the baseline never got there).
    pub time_to_capacity: bool,
    /// No wedding-critical demand beyond capacity.
    pub wedding_critical_served: bool,
    /// Wedding-critical p99 latency no higher than the baseline's.
    pub wedding_critical_latency: bool,
    /// Cost at the same prices (both sides' unit-hours at on-demand prices) at most 10% above
    /// the baseline's.
    pub cost: bool,
    /// Unit-hours held at most 10% above the baseline's.
    pub unit_hours: bool,
    /// Demand falling to capacity within 1.3× need in at most 2 minutes, outside protected
    /// floors.
    pub scale_down: bool,
    /// All of the above.
    pub engine_wins: bool,
}

/// What `report.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// The scenario.
    pub scenario: String,
    /// The pool simulated.
    pub pool: PoolSummary,
    /// The decision engine's scores.
    pub engine: ReplayReport,
    /// The Kubernetes HPA baseline's scores.
    pub baseline: ReplayReport,
    /// The comparison.
    pub verdict: Verdict,
}

/// The pool, as the report states it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSummary {
    /// Fewest units.
    pub min: u32,
    /// Most units.
    pub max: u32,
    /// Provisioning delay, seconds.
    pub provisioning_delay_s: f64,
    /// Requests/s per unit.
    pub capacity_per_unit: f64,
    /// Target utilization.
    pub target_utilization: f64,
}

/// `wedsync-agent sim` as given on the command line: a fleet scenario (a built-in one or a
/// `.toml` file, run by [`crate::fleet_sim`]) or a single-pool trace (run by [`run`]).
#[derive(Debug, Clone)]
pub struct SimCommand {
    /// A built-in fleet scenario, a scenario file, a built-in trace or a trace file.
    pub scenario: String,
    /// Fleets: scale the scenario's node counts to about this many nodes.
    pub nodes: Option<u32>,
    /// Fleets: seeds the mesh's probes and the simulated network.
    pub seed: u64,
    /// Fleets: the mesh in virtual time instead of one QUIC endpoint per node.
    pub virtual_time: bool,
    /// Fleets over QUIC: scenario seconds per wall-clock second (default
    /// [`crate::fleet_sim::DEFAULT_SPEED`]).
    pub speed: Option<f64>,
    /// Fleets: run every node's bundled plugins.
    pub plugins: bool,
    /// Fleets: draw the plots.
    pub plots: bool,
    /// Fleets: exit with status 3 when the engine did not win.
    pub fail_unless_won: bool,
    /// Where the report goes.
    pub out: PathBuf,
    /// Traces: the pool's minimum units.
    pub min: Option<u32>,
    /// Traces: the pool's maximum units.
    pub max: Option<u32>,
    /// Traces: time from asking for a unit to its serving.
    pub provisioning_delay: Option<Duration>,
}

/// Why `sim` could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimCommandError {
    /// Trace options given with a fleet scenario.
    #[error(
        "sim --scenario {scenario}: --min, --max and --provisioning-delay size the one pool of a \
         trace (CSV); a fleet scenario sets each region's pool in its file"
    )]
    TraceOptionsForFleet {
        /// The fleet scenario.
        scenario: String,
    },
    /// Fleet options given with a trace.
    #[error(
        "sim --scenario {scenario}: --nodes, --speed and --virtual shape a fleet; a trace (CSV) runs one \
         pool"
    )]
    FleetOptionsForTrace {
        /// The trace.
        scenario: String,
    },
    /// The fleet simulation failed.
    #[error(transparent)]
    Fleet(#[from] crate::fleet_sim::FleetSimError),
    /// The single-pool comparison failed.
    #[error(transparent)]
    Trace(#[from] SimError),
}

impl SimCommand {
    /// Runs the fleet scenario or the trace, writes the report and prints it (progress goes to
    /// standard error). Exit status 3 when `fail_unless_won` and the engine lost the fleet run.
    pub fn run(self) -> Result<ExitCode, SimCommandError> {
        let SimCommand {
            scenario,
            nodes,
            seed,
            virtual_time,
            speed,
            plugins,
            plots,
            fail_unless_won,
            out,
            min,
            max,
            provisioning_delay,
        } = self;
        if crate::fleet_sim::is_fleet_scenario(&scenario) {
            if min.is_some() || max.is_some() || provisioning_delay.is_some() {
                return Err(SimCommandError::TraceOptionsForFleet { scenario });
            }
            let mesh = if virtual_time {
                crate::fleet_sim::MeshMode::Virtual
            } else {
                crate::fleet_sim::MeshMode::Quic { speed: speed.unwrap_or(crate::fleet_sim::DEFAULT_SPEED) }
            };
            let options = crate::fleet_sim::FleetSimOptions {
                scenario,
                nodes,
                seed,
                out: out.clone(),
                plugins,
                plots,
                progress: true,
                mesh,
            };
            let (result, verdict, _) = crate::fleet_sim::run(&options)?;
            let plot_names: Vec<String> = if plots {
                result
                    .regions
                    .iter()
                    .flat_map(|r| [format!("demand-{}", r.name), format!("latency-{}", r.name)])
                    .collect()
            } else {
                Vec::new()
            };
            print!("{}", wedsync_sim::report::markdown(&result, &verdict, &plot_names));
            println!("\nreport: {} and {}", out.join("report.md").display(), out.join("report.json").display());
            if fail_unless_won && !verdict.won {
                eprintln!("wedsync-agent sim: the engine did not win {}", result.scenario.name);
                return Ok(ExitCode::from(3));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if nodes.is_some() || speed.is_some() || virtual_time {
            return Err(SimCommandError::FleetOptionsForTrace { scenario });
        }
        let options = SimOptions { scenario, out, min, max, provisioning_delay };
        let report = run(&options)?;
        print!("{}", markdown(&report));
        println!(
            "\nreport: {} and {}",
            options.out.join("report.md").display(),
            options.out.join("report.json").display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Runs the scenario with the engine and with the baseline and writes `report.json` and
/// `report.md` into `options.out`.
pub fn run(options: &SimOptions) -> Result<SimReport, SimError> {
    let builtin = SCENARIOS.iter().find(|s| s.name == options.scenario);
    let (trace, defaults) = match builtin {
        Some(s) => (Trace::parse(s.name, s.csv)?, (s.min, s.max, s.provisioning_delay_s)),
        None => {
            let text = std::fs::read_to_string(&options.scenario).map_err(|source| SimError::UnknownScenario {
                name: options.scenario.clone(),
                known: format!(
                    "{}; traces: {}",
                    wedsync_sim::scenario::built_in_names(),
                    SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ),
                source,
            })?;
            let name = Path::new(&options.scenario)
                .file_stem()
                .map_or_else(|| options.scenario.clone(), |stem| stem.to_string_lossy().into_owned());
            (Trace::parse(&name, &text)?, (2, 200, 60))
        }
    };
    let min = options.min.unwrap_or(defaults.0);
    let max = options.max.unwrap_or(defaults.1);
    if min == 0 || max < min {
        return Err(SimError::Pool(format!("min {min} and max {max}: need 1 ≤ min ≤ max")));
    }
    let delay = options.provisioning_delay.unwrap_or(Duration::from_secs(defaults.2));
    let pool = trace_pool(min, max, delay);
    let (engine, _) = replay(&trace, pool.clone(), EngineSettings::default());
    let baseline = replay_hpa(&trace, &pool, HpaSettings::default());
    let verdict = verdict(&engine, &baseline);
    let report = SimReport {
        scenario: trace.name.clone(),
        pool: PoolSummary {
            min,
            max,
            provisioning_delay_s: delay.as_secs_f64(),
            capacity_per_unit: pool.capacity_per_unit,
            target_utilization: pool.target_utilization,
        },
        engine,
        baseline,
        verdict,
    };
    write_report(&options.out, &report)?;
    Ok(report)
}

fn verdict(engine: &ReplayReport, baseline: &ReplayReport) -> Verdict {
    let time_to_capacity = match (engine.onset_to_capacity_s, baseline.onset_to_capacity_s) {
        (_, None) => true,
        (Some(own), Some(theirs)) => own <= theirs,
        (None, Some(_)) => false,
    };
    let wedding_critical_served = engine.wedding_critical_unserved == 0.0;
    let wedding_critical_latency = engine.p99_latency_ms[0] <= baseline.p99_latency_ms[0];
    let ratio = wedsync_sim::report::UNIT_HOURS_RATIO;
    let cost = engine.same_price_cost <= ratio * baseline.same_price_cost;
    let unit_hours = engine.unit_hours <= ratio * baseline.unit_hours;
    let scale_down = engine.fall_to_need_s <= wedsync_sim::report::FALL_TO_NEED_LIMIT_S;
    Verdict {
        time_to_capacity,
        wedding_critical_served,
        wedding_critical_latency,
        cost,
        unit_hours,
        scale_down,
        engine_wins: time_to_capacity
            && wedding_critical_served
            && wedding_critical_latency
            && cost
            && unit_hours
            && scale_down,
    }
}

fn write_report(out: &Path, report: &SimReport) -> Result<(), SimError> {
    let write =
        |path: PathBuf, bytes: Vec<u8>| std::fs::write(&path, bytes).map_err(|source| SimError::Write { path, source });
    std::fs::create_dir_all(out).map_err(|source| SimError::Write { path: out.to_path_buf(), source })?;
    let json = serde_json::to_vec_pretty(report).unwrap_or_default();
    write(out.join("report.json"), json)?;
    write(out.join("report.md"), markdown(report).into_bytes())
}

/// The report as a page a person reads.
pub fn markdown(r: &SimReport) -> String {
    let secs = |s: Option<f64>| s.map_or_else(|| "—".to_owned(), |s| format!("{s:.0} s"));
    let ms = |v: f64| if v >= 1000.0 { format!("{:.1} s", v / 1000.0) } else { format!("{v:.0} ms") };
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    let (e, b) = (&r.engine, &r.baseline);
    let mut md = format!(
        "# Simulation: {}\n\nOne pool ({}–{} units, {} requests/s per unit at {:.0}% target utilization, \
         capacity {} s after it is asked for), the WedSync decision engine against the Kubernetes HPA \
         baseline (its documented defaults), same demand, same capacity model.\n\n",
        r.scenario,
        r.pool.min,
        r.pool.max,
        r.pool.capacity_per_unit,
        r.pool.target_utilization * 100.0,
        r.pool.provisioning_delay_s
    );
    md.push_str("| | engine | HPA baseline |\n|---|---|---|\n");
    let rows: [(&str, String, String); 12] = [
        ("peak demand (requests/s)", format!("{:.0}", e.peak_demand), format!("{:.0}", b.peak_demand)),
        ("peak units", e.peak_units.to_string(), b.peak_units.to_string()),
        ("onset → scale-up decision", secs(e.onset_to_decision_s), secs(b.onset_to_decision_s)),
        ("onset → capacity", secs(e.onset_to_capacity_s), secs(b.onset_to_capacity_s)),
        (
            "under-provisioned unit-seconds",
            format!("{:.0}", e.under_provisioned_unit_seconds),
            format!("{:.0}", b.under_provisioned_unit_seconds),
        ),
        (
            "wedding-critical unserved (requests)",
            format!("{:.0}", e.wedding_critical_unserved),
            format!("{:.0}", b.wedding_critical_unserved),
        ),
        ("wedding-critical p99 latency", ms(e.p99_latency_ms[0]), ms(b.p99_latency_ms[0])),
        ("unit-hours held", format!("{:.2}", e.unit_hours), format!("{:.2}", b.unit_hours)),
        (
            "cost at the same prices (on demand)",
            format!("{:.2}", e.same_price_cost),
            format!("{:.2}", b.same_price_cost),
        ),
        ("cost at its own prices", format!("{:.2}", e.total_cost), format!("{:.2}", b.total_cost)),
        ("demand falling → capacity within 1.3× need", secs(Some(e.fall_to_need_s)), secs(Some(b.fall_to_need_s))),
        ("direction reversals", e.direction_reversals.to_string(), b.direction_reversals.to_string()),
    ];
    for (what, engine, baseline) in rows {
        md.push_str(&format!("| {what} | {engine} | {baseline} |\n"));
    }
    md.push_str("\nPer class (engine / baseline):\n\n| class | shed (requests) | p99 latency |\n|---|---|---|\n");
    for (i, class) in TrafficClass::ALL.iter().enumerate() {
        md.push_str(&format!(
            "| {class} | {:.0} / {:.0} | {} / {} |\n",
            e.shed_requests[i],
            b.shed_requests[i],
            ms(e.p99_latency_ms[i]),
            ms(b.p99_latency_ms[i])
        ));
    }
    let v = &r.verdict;
    md.push_str(&format!(
        "\nAgainst the baseline: capacity no later: {}; no wedding-critical demand unserved: {}; \
         wedding-critical p99 no higher: {}; unit-hours within 10%: {}; cost at the same prices \
         within 10%: {}; capacity within 1.3× need at most 2 minutes after demand falls: {}.\n",
        yes(v.time_to_capacity),
        yes(v.wedding_critical_served),
        yes(v.wedding_critical_latency),
        yes(v.unit_hours),
        yes(v.cost),
        yes(v.scale_down)
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_parses() {
        for s in SCENARIOS {
            let trace = Trace::parse(s.name, s.csv).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert!(trace.duration_s() > 0.0, "{}", s.name);
        }
    }

    #[test]
    fn bad_options_are_refused_clearly() {
        let out = std::env::temp_dir().join(format!("wedsync-sim-unit-{}", std::process::id()));
        let options = |scenario: &str| SimOptions {
            scenario: scenario.into(),
            out: out.clone(),
            min: None,
            max: None,
            provisioning_delay: None,
        };
        let e = run(&options("no-such-scenario")).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("traces: viral-spike, ") && e.contains("viral-saturday") && e.contains("no-such-scenario"),
            "{e}"
        );
        let e = run(&SimOptions { min: Some(10), max: Some(5), ..options("viral-spike") }).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("min 10 and max 5"), "{e}");
    }
}
