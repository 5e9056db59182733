//! The fleet simulator at scale (issue 6): every built-in scenario with its nodes' plugins at
//! its own size, then `region-outage` and `viral-saturday` at 1,000 nodes in virtual time, each
//! node carrying the traffic it carries at six nodes (the engines alone: a wasmtime plugin
//! stage per node does not fit 1,000 times in one process).
//! Prints, per run, the verdict against the HPA baseline, the fleet's figures (join
//! convergence, failure detection, failover, coordinator agreement, mesh bytes per node) and the
//! wall time. Seeded, so a run is reproducible.
//!
//! `cargo bench -p wedsync-benches --bench fleet_sim`; `FLEET_SIM_PLAN=scale` runs only the
//! 1,000-node part, `=scenarios` only the built-ins.

use std::path::PathBuf;
use wedsync_agent::fleet_sim::{FleetSimOptions, MeshMode, run};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet_sim: run with `cargo bench -p wedsync-benches --bench fleet_sim`");
        return Ok(());
    }
    let plan = std::env::var("FLEET_SIM_PLAN").unwrap_or_default();
    let out = std::env::temp_dir().join("wedsync-fleet-sim-bench");
    let mut runs: Vec<(&str, Option<u32>, bool)> = Vec::new();
    if plan != "scale" {
        for s in ["viral-saturday", "wedding-day", "region-outage", "season-ramp"] {
            runs.push((s, None, true));
        }
    }
    if plan != "scenarios" {
        runs.push(("region-outage", Some(1000), false));
        runs.push(("viral-saturday", Some(1000), false));
    }
    println!(
        "| scenario | nodes | plugins | won | time to capacity, engine / HPA (s) | wc p99 engine / HPA (ms) | cost engine / HPA | join (s) | detection (s) | failover applied (s) | coordinator agreement | mesh B/node/s | wall (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (scenario, nodes, plugins) in runs {
        let options = FleetSimOptions {
            scenario: scenario.into(),
            nodes,
            seed: 1,
            out: PathBuf::from(&out).join(format!("{scenario}-{}", nodes.unwrap_or(0))),
            plugins,
            plots: false,
            progress: false,
            mesh: MeshMode::Virtual,
        };
        let (result, verdict, _) = run(&options)?;
        let c = |i: usize| (verdict.criteria[i].engine, verdict.criteria[i].hpa);
        let (ttc, p99, cost) = (c(0), c(1), c(3));
        let f = &result.fleet;
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
        println!(
            "| {scenario} | {} | {} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} / {:.2} | {} | {} | {} | {:.1}% | {:.0} | {:.1} |",
            f.nodes,
            if plugins { "yes" } else { "no" },
            if verdict.won { "yes" } else { "**no**" },
            ttc.0,
            ttc.1,
            p99.0,
            p99.1,
            cost.0,
            cost.1,
            opt(f.join_convergence_s),
            opt(f.failure_detection_s.first().copied().flatten()),
            opt(f.failover_applied_s.first().copied().flatten()),
            f.coordinator_agreement * 100.0,
            f.bytes_per_node_per_s,
            result.elapsed_s
        );
    }
    Ok(())
}
