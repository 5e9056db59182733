//! End to end: the real agent learns each pool's real size (an exec actuator's observe command,
//! a StatsD gauge) and decides nothing before it knows it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, unique_dir};

/// Sends `rps` of demand for `service` for `seconds`, in 20 ms datagrams.
fn demand(agent: &AgentProcess, service: &str, rps: f64, seconds: f64) {
    let started = Instant::now();
    let mut sent = 0.0;
    while started.elapsed().as_secs_f64() < seconds {
        let owed = started.elapsed().as_secs_f64() * rps - sent;
        if owed >= 1.0 {
            let n = owed.floor();
            agent.send(format!("requests:{n}|c|#service:{service},class:media").as_bytes());
            sent += n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `[[pools]]` entry in the test's region, 70 rps per unit at target, its demand the
/// `requests` counter tagged `service:<name>`, then `extra` lines.
fn pool_toml(name: &str, max: u32, extra: &str) -> String {
    format!(
        r#"
[[pools]]
name = "{name}"
region = "test-region"
min = 2
max = {max}
capacity_per_unit = 100.0
target_utilization = 0.7
provisioning_delay = "0s"
demand_metric = "requests"
demand_tags = ["service:{name}"]
{extra}
"#
    )
}

fn pool<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["pools"].as_array().unwrap().iter().find(|p| p["status"]["spec"]["name"] == name).unwrap()
}

/// A restart on a pool running 50 units: the observe command reports 50 at start, and on the way
/// up from there no actuator is ever asked for less.
#[test]
fn a_restart_on_a_running_pool_never_asks_for_less_on_the_way_up() {
    let dir = unique_dir("pool-size");
    std::fs::create_dir_all(&dir).unwrap();
    let asked = dir.join("asked.jsonl");
    let actuator = format!(
        r#"[pools.actuator]
kind = "exec"
command = ["sh", "-c", "cat >> '{asked}'; echo >> '{asked}'"]
observe = ["sh", "-c", "echo '{{\"units\": 50}}'"]
observe_interval = "1s""#,
        asked = asked.display()
    );
    let config = [
        pool_toml("checkout", 200, &actuator),
        pool_toml("search", 20, "size_metric = \"k8s.ready_replicas\"\nsize_tags = [\"deployment:search\"]"),
        pool_toml("blind", 20, ""),
    ]
    .concat();
    let agent = AgentProcess::start_with_config(&config, &[]);
    // The platform reports search at 35, above its max of 20.
    agent.send(b"k8s.ready_replicas:35|g|#deployment:search");
    // Checkout's demand: what 43 units serve (3,000 rps), then a climb to what 80 need (5,600).
    demand(&agent, "checkout", 3000.0, 3.0);
    for step in 1..=4 {
        demand(&agent, "checkout", 3000.0 + 650.0 * f64::from(step), 1.0);
        agent.send(format!("requests:{}|c|#service:blind,class:media", 500 * step).as_bytes());
    }
    let view = agent.get_json("/v1/pools");
    let checkout = pool(&view, "checkout");
    assert_eq!(checkout["status"]["observed_units"], 50, "{checkout}");
    assert!(checkout["observed_size_age_seconds"].as_f64().unwrap() < 5.0, "{checkout}");
    let blind = pool(&view, "blind");
    assert_eq!(blind["state"], "size_unknown", "{blind}");
    let search = pool(&view, "search");
    assert_eq!(search["status"]["observed_units"], 35, "{search}");
    assert_eq!(search["status"]["target"], 20, "corrected at once: {search}");

    let decisions = agent.get_json("/v1/decisions?limit=1000");
    let list = decisions["decisions"].as_array().unwrap();
    assert!(list.iter().all(|d| d["pool"] != "blind"), "a pool of unknown size got decisions: {decisions}");
    let corrected = list.iter().find(|d| d["pool"] == "search").expect("search corrected");
    assert_eq!((corrected["from"].as_u64(), corrected["to"].as_u64()), (Some(35), Some(20)));
    assert!(corrected["reasons"].to_string().contains("clamped_to_max"), "{corrected}");

    // What the actuator received: never below 50, and a scale-up.
    let deadline = Instant::now() + Duration::from_secs(5);
    let targets: Vec<u64> = loop {
        let text = std::fs::read_to_string(&asked).unwrap_or_default();
        let targets: Vec<u64> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["to"].as_u64().unwrap())
            .collect();
        if targets.iter().any(|&t| t > 50) || Instant::now() > deadline {
            break targets;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(targets.iter().any(|&t| t > 50), "no scale-up reached the actuator: {targets:?}");
    assert!(targets.iter().all(|&t| t >= 50), "an actuator was asked for less than the 50 running: {targets:?}");
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("wedsync_actuator_sizes_total{pool=\"checkout\",kind=\"exec\"}")),
        "{metrics}"
    );
}
