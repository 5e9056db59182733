//! End to end: the real agent, with a pool fed over StatsD and the four bundled plugins, runs
//! its decision rounds at the configured rate, calls every plugin once per round, and counts
//! every round it runs, runs late or skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, sample_value};

/// A pool in the agent's own region.
const POOL: &str = wedsync_tests::CHECKOUT_POOL;

/// How long the rate is measured over.
const WINDOW: Duration = Duration::from_secs(30);

/// The three round counters in one scrape, and when it was answered.
fn rounds(agent: &AgentProcess) -> (Instant, [f64; 3]) {
    let (status, body) = agent.get("/metrics");
    let at = Instant::now();
    assert_eq!(status, 200, "{body}");
    let value = |name: &str| sample_value(&body, name).unwrap_or_else(|| panic!("{name} missing:\n{body}"));
    (
        at,
        [
            value("wedsync_decision_rounds_total "),
            value("wedsync_decision_rounds_late_total "),
            value("wedsync_decision_rounds_skipped_total "),
        ],
    )
}

#[test]
fn the_decision_loop_runs_ten_rounds_a_second_and_every_plugin_sees_each_one() {
    let agent = AgentProcess::start_with_config(POOL, &[]);
    let statsd = agent.statsd;
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = stop.clone();
    // Demand for the pool all along, so every round has fresh demand and calls the plugins
    // with a real proposal.
    let feeder = std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = 0u64;
        while !feeding.load(Ordering::Relaxed) {
            socket.send_to(b"requests:50|c|#service:checkout,class:wedding-critical", statsd).unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        sent
    });
    // Past start-up (plugins compiled, first rounds run).
    std::thread::sleep(Duration::from_secs(2));
    let (t0, before) = rounds(&agent);
    std::thread::sleep(WINDOW);
    let (t1, after) = rounds(&agent);
    let elapsed = t1.duration_since(t0).as_secs_f64();
    let [run, late, skipped] = [0, 1, 2].map(|i| after[i] - before[i]);
    let rate = run / elapsed;
    eprintln!("{run} rounds in {elapsed:.2} s = {rate:.3}/s; {late} late, {skipped} skipped");
    assert!((rate - 10.0).abs() <= 0.3, "{rate:.3} rounds/s over {elapsed:.1} s (configured: 10)");
    // Honest counting: every tick of the window either ran or was counted as skipped.
    let ticks = elapsed * 10.0;
    assert!((run + skipped - ticks).abs() <= 2.0, "{run} run + {skipped} skipped against {ticks:.1} ticks");

    // Every plugin was called exactly once per round, all along (one snapshot: the counts are
    // taken together after the same round).
    let plugins = agent.get_json("/v1/plugins");
    let stage_rounds = plugins["rounds"].as_u64().unwrap();
    assert!(stage_rounds as f64 >= after[0] - 15.0, "{plugins}");
    let list = plugins["plugins"].as_array().unwrap();
    assert_eq!(list.len(), 4, "{plugins}");
    for plugin in list {
        assert_eq!(plugin["calls"].as_u64().unwrap(), stage_rounds, "calls equal rounds: {plugin}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(feeder.join().unwrap() > 1000);

    // The pool got decisions from those rounds.
    let decisions = agent.get_json("/v1/decisions?pool=checkout&limit=1");
    assert_eq!(decisions["decisions"].as_array().unwrap().len(), 1, "{decisions}");
}
