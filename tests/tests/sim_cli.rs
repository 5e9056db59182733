//! End to end: `wedsync-agent sim` runs a scenario with the engine and with the HPA baseline and
//! writes the comparison.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use wedsync_tests::{agent_binary, unique_dir};

fn sim(args: &[&str]) -> (bool, String) {
    let out = Command::new(agent_binary()).arg("sim").args(args).output().expect("run wedsync-agent");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_viral_spike_scenario_writes_a_report_the_engine_wins() {
    let dir = unique_dir("sim");
    let (ok, out) = sim(&["--scenario", "viral-spike", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("# Simulation: viral-spike") && out.contains("report.json"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["scenario"], "viral-spike");
    assert_eq!(report["pool"]["max"], 1000);
    for criterion in ["time_to_capacity", "wedding_critical_served", "wedding_critical_latency", "cost", "engine_wins"]
    {
        assert_eq!(report["verdict"][criterion], true, "{criterion}: {}", report["verdict"]);
    }
    let engine = report["engine"]["onset_to_capacity_s"].as_f64().unwrap();
    let baseline = report["baseline"]["onset_to_capacity_s"].as_f64().unwrap();
    assert!(engine <= baseline, "{engine} vs {baseline}");
    assert_eq!(report["engine"]["wedding_critical_unserved"], 0.0);
    assert!(report["baseline"]["wedding_critical_unserved"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| onset → capacity |") && md.contains("wedding-critical p99 no higher: yes"), "{md}");
}

#[test]
fn a_trace_file_and_pool_options_are_taken_and_bad_input_is_refused() {
    let dir = unique_dir("sim-file");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("steady.csv");
    std::fs::write(
        &trace,
        "# name: steady\n# round_ms: 1000\nt_s,wedding_critical,wedding_planning,registration,media,background\n\
         0,100,100,100,100,100\n600,100,100,100,100,100\n",
    )
    .unwrap();
    let out_dir = dir.join("out");
    let (ok, out) = sim(&[
        "--scenario",
        trace.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--min",
        "3",
        "--max",
        "40",
        "--provisioning-delay",
        "30s",
    ]);
    assert!(ok, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["scenario"], "steady");
    assert_eq!((report["pool"]["min"].as_u64(), report["pool"]["max"].as_u64()), (Some(3), Some(40)));
    assert_eq!(report["pool"]["provisioning_delay_s"], 30.0);

    let (ok, out) = sim(&["--scenario", "no-such-scenario", "--out", out_dir.to_str().unwrap()]);
    assert!(
        !ok && out.contains("not a built-in scenario (viral-saturday") && out.contains("traces: viral-spike"),
        "{out}"
    );
    let (ok, out) = sim(&["--scenario", "viral-spike", "--min", "9", "--max", "3", "--out", out_dir.to_str().unwrap()]);
    assert!(!ok && out.contains("min 9 and max 3"), "{out}");
    let (ok, out) = sim(&["--scenario", "quick", "--min", "9", "--out", out_dir.to_str().unwrap()]);
    assert!(!ok && out.contains("a fleet scenario sets each region's pool"), "{out}");
    let (ok, out) = sim(&["--scenario", "viral-spike", "--speed", "10", "--out", out_dir.to_str().unwrap()]);
    assert!(!ok && out.contains("a trace (CSV) runs one pool"), "{out}");
    std::fs::write(&trace, "t_s,oops\n1,2\n").unwrap();
    let (ok, out) = sim(&["--scenario", trace.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(!ok && out.contains("line"), "{out}");
}

/// The default mode: every node its own QUIC endpoint on loopback, the agent's mesh task on each,
/// at 30x (3 scenario minutes in 6 s; the debug binary, beside other tests).
#[test]
fn a_fleet_scenario_runs_every_node_with_its_plugins_over_real_quic_and_reports_per_region() {
    let dir = unique_dir("sim-fleet");
    let (ok, out) = sim(&["--scenario", "quick", "--speed", "30", "--out", dir.to_str().unwrap(), "--fail-unless-won"]);
    assert!(ok, "{out}");
    assert!(out.contains("# Simulation: quick") && out.contains("## Verdict: the engine won"), "{out}");
    // Progress went to stderr: a bar and a line per region.
    assert!(out.contains("100%") && out.contains("nodes up"), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["scenario"], "quick");
    assert_eq!(report["nodes"], 3);
    assert_eq!(report["verdict"]["won"], true, "{}", report["verdict"]);
    let west = &report["regions"][0];
    assert_eq!(west["name"], "eu-west");
    assert_eq!(west["engine"]["wedding_critical_unserved"], 0.0);
    assert!(
        west["engine"]["onset_to_capacity_s"].as_f64().unwrap() < west["hpa"]["onset_to_capacity_s"].as_f64().unwrap()
    );
    assert!(report["mesh"].as_str().unwrap().contains("real QUIC"), "{}", report["mesh"]);
    // eu-central died; every survivor's mesh saw it over QUIC, and eu-west took its clients' load.
    let fleet = &report["fleet"];
    let detected = fleet["failure_detection_s"][0].as_f64().unwrap();
    assert!(detected > 0.0 && detected < 30.0, "{fleet}");
    assert!(fleet["failover_applied_s"][0].as_f64().is_some_and(|s| s < 60.0), "{fleet}");
    assert!(fleet["reconvergence_s"][0].as_f64().is_some(), "{fleet}");
    assert!(fleet["join_convergence_s"].as_f64().is_some_and(|s| s <= 10.0), "{fleet}");
    assert!(fleet["bytes_per_node_per_s"].as_f64().unwrap() > 0.0, "{fleet}");
    for region in ["eu-west", "eu-central", "us-east"] {
        for kind in ["demand", "latency"] {
            for ext in ["svg", "png"] {
                let file = dir.join(format!("{kind}-{region}.{ext}"));
                assert!(std::fs::metadata(&file).is_ok_and(|m| m.len() > 1000), "{}", file.display());
            }
        }
    }
}

#[test]
fn a_bad_scenario_file_is_refused_with_the_field_named() {
    let dir = unique_dir("sim-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "name = \"bad\"\nstart = \"2026-06-13T09:00:00Z\"\nduration = \"10m\"\n[[regions]]\nname = \"eu-west\"\nnodes = 0\n[regions.base]\nmedia = 1.0\n",
    )
    .unwrap();
    let (ok, out) = sim(&["--scenario", file.to_str().unwrap(), "--out", dir.join("out").to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("regions[0].nodes") && out.contains("bad.toml"), "{out}");
    let (ok, out) = sim(&["--scenario", "no-such-thing.toml"]);
    assert!(!ok && out.contains("no-such-thing.toml") && out.contains("viral-saturday"), "{out}");
}

#[test]
fn the_virtual_mesh_runs_on_request_and_impossible_fleets_are_refused_before_they_start() {
    let dir = unique_dir("sim-virtual");
    let (ok, out) =
        sim(&["--scenario", "quick", "--virtual", "--no-plugins", "--no-plots", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert!(report["mesh"].as_str().unwrap().contains("virtual time"), "{}", report["mesh"]);
    assert_eq!(report["fleet"]["max_lag_s"], 0.0);

    let (ok, out) = sim(&["--scenario", "quick", "--nodes", "500", "--out", dir.to_str().unwrap()]);
    assert!(!ok && out.contains("500 nodes") && out.contains("--virtual"), "{out}");
    let (ok, out) = sim(&["--scenario", "quick", "--speed", "0", "--out", dir.to_str().unwrap()]);
    assert!(!ok && out.contains("--speed 0"), "{out}");
    let (ok, out) = sim(&["--scenario", "quick", "--virtual", "--speed", "5", "--out", dir.to_str().unwrap()]);
    assert!(!ok && out.contains("cannot be used with"), "{out}");
}
