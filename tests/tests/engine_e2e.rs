//! End to end: the real agent with a pool, real StatsD demand, decisions on the API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, sample_value};

/// The harness's checkout pool.
const POOL: &str = wedsync_tests::CHECKOUT_POOL;

/// Counts requests owed at a steady rate since the first call, so a loop that wakes late sends
/// more rather than lowering the rate the agent sees.
struct Pacer {
    started: Instant,
    per_second: f64,
    sent: u64,
}

impl Pacer {
    fn new(per_second: f64) -> Self {
        Self { started: Instant::now(), per_second, sent: 0 }
    }

    /// Requests owed since the last call (at least one, so the first datagram is not empty).
    fn due(&mut self) -> u64 {
        let owed = (self.started.elapsed().as_secs_f64() * self.per_second) as u64;
        let due = owed.saturating_sub(self.sent).max(1);
        self.sent += due;
        due
    }
}

#[test]
fn statsd_demand_drives_a_scale_up_decision() {
    let agent = AgentProcess::start_with_config(POOL, &[]);
    // 1000 rps of checkout demand, half wedding-critical, for up to 10 s: 1000 / (100 × 0.7) → 15
    // units. The rate follows the clock, not the loop, so a slow CI machine still sends 1000 rps.
    let mut pacer = Pacer::new(1000.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut decided = None;
    while Instant::now() < deadline {
        let due = pacer.due();
        let critical = due / 2;
        let media = due - critical;
        agent.send(
            format!(
                "requests:{critical}|c|#service:checkout,class:wedding-critical\nrequests:{media}|c|#service:checkout,class:media\nrequests:999|c|#service:search"
            )
            .as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(100));
        let body = agent.get_json("/v1/decisions?pool=checkout&limit=10");
        // Newest first; later admission-only ("hold") decisions may follow the scale-up.
        let scale_up = body["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["direction"] == "up" && d["to"].as_u64() >= Some(14));
        if let Some(d) = scale_up {
            decided = Some(d.clone());
            break;
        }
    }
    let decision = decided.expect("a scale-up decision within 10 s");
    assert_eq!(decision["pool"], "checkout");
    assert_eq!(decision["region"], "test-region");
    assert_eq!(decision["direction"], "up");
    assert!(decision["id"].as_str().unwrap().starts_with("checkout:"));
    let reasons = decision["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r["rule"] == "target_tracking"), "{decision}");
    let mix = &decision["mix"];
    let total = mix["reserved"].as_u64().unwrap() + mix["on_demand"].as_u64().unwrap() + mix["spot"].as_u64().unwrap();
    assert_eq!(Some(total), decision["to"].as_u64());

    let pools = agent.get_json("/v1/pools");
    assert_eq!(pools["pools"][0]["status"]["spec"]["name"], "checkout");
    assert!(pools["pools"][0]["status"]["target"].as_u64().unwrap() >= 14);
    let metrics = agent.get("/metrics").1;
    assert!(sample_value(&metrics, r#"wedsync_pool_target_units{pool="checkout"}"#).unwrap() >= 14.0, "{metrics}");
    assert!(sample_value(&metrics, r#"wedsync_decisions_total{pool="checkout",direction="up"}"#).unwrap() >= 1.0);
    assert!(agent.log().iter().any(|l| l.contains("\"message\":\"decision\"") && l.contains("checkout")));
}

#[test]
fn decisions_api_rejects_bad_queries_with_json() {
    let agent = AgentProcess::start_with_config(POOL, &[]);
    let (status, body) = agent.get("/v1/decisions?limit=0");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit: 0 is out of range"));
    let (status, body) = agent.get("/v1/decisions?limit=abc");
    assert_eq!(status, 400);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].as_str().unwrap().starts_with("bad query")
    );
    let (status, body) = agent.get("/v1/decisions?pool=nope");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn stale_demand_holds_the_pool() {
    let agent = AgentProcess::start_with_config(POOL, &[]);
    // No demand is ever sent: the engine holds at the minimum and says why.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = agent.get_json("/v1/decisions?pool=checkout");
        let hold = body["decisions"].as_array().unwrap().iter().any(|d| d["reasons"][0]["rule"] == "stale_metrics");
        if hold {
            break;
        }
        assert!(Instant::now() < deadline, "no stale-metrics hold: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = agent.get("/metrics").1;
    assert_eq!(sample_value(&metrics, r#"wedsync_pool_holding_stale{pool="checkout"}"#), Some(1.0));
}

#[test]
fn an_exec_actuator_receives_each_decision_as_json() {
    let out = wedsync_tests::unique_dir("exec-actuator");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("decisions.jsonl");
    let config = format!(
        r#"
[[pools]]
name = "checkout"
region = "eu-west"
min = 2
# A fresh pool at its minimum (no size source in this test).
assume_size = 2
max = 50
provisioning_delay = "0s"
demand_metric = "requests"
[pools.actuator]
kind = "exec"
command = ["sh", "-c", "cat >> '{}'; echo >> '{}'"]
timeout = "5s"
"#,
        file.display(),
        file.display()
    );
    let agent = AgentProcess::start_with_config(&config, &[]);
    // Generous: this checks what reaches the command, not how fast the engine is (the engine's
    // tests and the replay bench do that); on a loaded CI machine the load estimate takes longer
    // to converge.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pacer = Pacer::new(1000.0);
    let decision = loop {
        agent.send(format!("requests:{}|c|#class:registration", pacer.due()).as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let applied: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if let Some(d) = applied.iter().find(|d| d["to"].as_u64() >= Some(14)) {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "no scale-up reached the command; file: {text}");
    };
    assert_eq!(decision["pool"], "checkout");
    assert!(decision["id"].as_str().unwrap().starts_with("checkout:"));
    let metrics = agent.get("/metrics").1;
    assert!(
        sample_value(&metrics, r#"wedsync_actuator_successes_total{pool="checkout",kind="exec"}"#).unwrap() >= 1.0,
        "{metrics}"
    );
}
