//! End to end: a flood of unrelated StatsD metrics makes the kernel drop datagrams on the
//! agent's socket while a pool's demand stays constant. The agent must see the loss, read the
//! pool's demand in those windows as uncertain, and keep the pool where its need is: no spike,
//! no climb, no admission flip. With the demand on its own socket (`statsd.demand_listen`) the
//! flood cannot touch it at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, sample_value};

/// Both tests flood a socket as fast as one core can: never at the same time.
static FLOODING: Mutex<()> = Mutex::new(());

/// 5,000 requests/s: 1,000 wedding-critical and 4,000 media. At 70 per unit that needs
/// ceil(5000 / 70) = 72 units.
const RPS: f64 = 5000.0;
const NEED: f64 = 72.0;

/// A short scale-down window (as an operator may set), so that a flood read as real demand
/// would show as a scale-down within the test.
const POOL: &str = r#"
[engine]
scale_down_stabilization = "5s"
scale_down_cooldown = "1s"

[[pools]]
name = "checkout"
region = "test-region"
min = 2
# Running at its need (72), as after a restart: the engine's 10% tolerance would let a pool that
# ramped up from its minimum settle anywhere from 66 to 79, which says nothing about the flood.
assume_size = 72
max = 200
capacity_per_unit = 100.0
target_utilization = 0.7
provisioning_delay = "0s"
demand_metric = "requests"
demand_tags = ["service:checkout"]
"#;

/// Sends [`RPS`] of checkout demand to `to` until `stop`, in datagrams of ten requests.
fn demand(to: SocketAddr, stop: &AtomicBool) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let mut sent = 0.0;
    while !stop.load(Ordering::Relaxed) {
        let owed = started.elapsed().as_secs_f64() * RPS - sent;
        if owed >= 10.0 {
            let n = (owed / 10.0).floor() * 10.0;
            let datagram = format!(
                "requests:{}|c|#service:checkout,class:wedding-critical\nrequests:{}|c|#service:checkout,class:media",
                n / 5.0,
                n * 4.0 / 5.0
            );
            socket.send_to(datagram.as_bytes(), to).unwrap();
            sent += n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Floods `to` with unrelated metrics (2 lines a datagram over 400 series) until `stop`;
/// returns the lines sent.
fn flood(to: SocketAddr, stop: &AtomicBool, lines: &AtomicU64) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // As small as the demand's own datagrams: a full buffer has no room left that only small
    // datagrams fit, so the flood costs the demand its share of losses.
    let datagrams: Vec<String> =
        (0..200).map(|d| (0..2).map(|l| format!("bulk.metric.{l}:1|c|#host:h{d},env:prod\n")).collect()).collect();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // A full socket buffer is the point; a send error is not.
        let _ = socket.send_to(datagrams[n % datagrams.len()].as_bytes(), to);
        n += 1;
        if n.is_multiple_of(64) {
            lines.fetch_add(64 * 2, Ordering::Relaxed);
        }
    }
}

/// The checkout pool's decisions taken after `since` (Unix ms).
fn decisions_since(agent: &AgentProcess, since: i64) -> Vec<serde_json::Value> {
    let view = agent.get_json("/v1/decisions?pool=checkout&limit=1000");
    view["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["at_unix_ms"].as_i64().unwrap() > since)
        .cloned()
        .collect()
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn target(agent: &AgentProcess) -> f64 {
    let view = agent.get_json("/v1/pools");
    view["pools"][0]["status"]["target"].as_f64().unwrap()
}

/// Runs constant demand to `demand_to`: 5 s to settle, 12 s with a flood on the main socket,
/// 5 s after. Returns the decisions after settling, and the lines flooded.
fn run(agent: &AgentProcess, demand_to: SocketAddr) -> (Vec<serde_json::Value>, u64) {
    let (stop_demand, stop_flood, flooded) = (AtomicBool::new(false), AtomicBool::new(false), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| demand(demand_to, &stop_demand));
        std::thread::sleep(Duration::from_secs(5));
        let settled = target(agent);
        assert!((settled - NEED).abs() <= NEED * 0.05, "settled at {settled} units before the flood, need {NEED}");
        let since = unix_ms();
        s.spawn(|| flood(agent.statsd, &stop_flood, &flooded));
        std::thread::sleep(Duration::from_secs(12));
        stop_flood.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(5));
        stop_demand.store(true, Ordering::Relaxed);
        (decisions_since(agent, since), flooded.load(Ordering::Relaxed))
    })
}

/// Every decision keeps the pool within ±5% of its need and admits every class in full.
fn assert_steady(agent: &AgentProcess, decisions: &[serde_json::Value]) {
    for d in decisions {
        let to = d["to"].as_f64().unwrap();
        assert!((to - NEED).abs() <= NEED * 0.05, "a target of {to} where {NEED} serve the demand: {d}");
        for a in d["admission"].as_array().unwrap() {
            assert_eq!(a["admit"].as_f64(), Some(1.0), "an admission change at constant demand: {d}");
        }
    }
    let end = target(agent);
    assert!((end - NEED).abs() <= NEED * 0.05, "ended at {end} units, need {NEED}");
}

#[test]
fn a_flood_on_the_same_socket_makes_demand_uncertain_not_a_spike() {
    let _one = FLOODING.lock().unwrap_or_else(|e| e.into_inner());
    // One reader and the smallest buffer: the flood overflows it on any machine.
    let agent = AgentProcess::start_with_config(
        POOL,
        &[("WEDSYNC__STATSD__READERS", "1"), ("WEDSYNC__STATSD__RECEIVE_BUFFER_BYTES", "65536")],
    );
    let (decisions, flooded) = run(&agent, agent.statsd);
    let metrics = agent.get("/metrics").1;
    let drops = sample_value(&metrics, r#"wedsync_statsd_kernel_drops_total{socket="udp"}"#).unwrap_or(0.0);
    let uncertain = sample_value(&metrics, r#"wedsync_demand_uncertain_rounds_total{pool="checkout"}"#).unwrap_or(0.0);
    eprintln!(
        "flooded {flooded} lines; the kernel dropped {drops} datagrams; {uncertain} uncertain rounds; decisions: {decisions:?}"
    );
    assert!(drops > 0.0, "the flood must overflow the socket for this test to mean anything");
    assert!(uncertain > 0.0, "rounds read while the socket dropped are uncertain");
    assert_steady(&agent, &decisions);
    let log = agent.log();
    assert!(log.iter().any(|l| l.contains("the kernel is dropping datagrams on a StatsD socket")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains("demand input complete again")), "the end of the loss is logged too");
    let pools = agent.get_json("/v1/pools");
    assert_eq!(pools["pools"][0]["status"]["lossy_input"], false, "certain again after the flood: {pools}");
}

#[test]
fn demand_on_its_own_socket_is_untouched_by_a_flood() {
    let _one = FLOODING.lock().unwrap_or_else(|e| e.into_inner());
    // As above, one reader and the smallest buffer, so the flood overflows the main socket on
    // any machine (with the default buffer an idle 2-core machine kept up: CI saw no drop); the
    // demand socket has its own reader, and its few datagrams fit the same small buffer.
    let agent = AgentProcess::start_with_config(
        POOL,
        &[
            ("WEDSYNC__STATSD__READERS", "1"),
            ("WEDSYNC__STATSD__RECEIVE_BUFFER_BYTES", "65536"),
            ("WEDSYNC__STATSD__DEMAND_LISTEN", "127.0.0.1:0"),
        ],
    );
    let status = agent.get_json("/v1/status");
    let demand_to: SocketAddr = status["config"]["statsd_demand_listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(demand_to, agent.statsd);
    let (decisions, flooded) = run(&agent, demand_to);
    let metrics = agent.get("/metrics").1;
    let drops = sample_value(&metrics, r#"wedsync_statsd_kernel_drops_total{socket="udp"}"#).unwrap_or(0.0);
    let demand_drops = sample_value(&metrics, r#"wedsync_statsd_kernel_drops_total{socket="demand"}"#);
    let uncertain = sample_value(&metrics, r#"wedsync_demand_uncertain_rounds_total{pool="checkout"}"#).unwrap_or(0.0);
    eprintln!(
        "flooded {flooded} lines; dropped {drops} on udp, {demand_drops:?} on demand; {uncertain} uncertain rounds"
    );
    assert!(drops > 0.0, "the flood must overflow the main socket for this test to mean anything");
    assert_eq!(demand_drops, Some(0.0), "the demand socket lost nothing");
    assert_eq!(uncertain, 0.0, "the pool's demand never came through the flooded socket");
    assert_steady(&agent, &decisions);
}

/// Forged demand from a local socket: 80 datagrams claiming 100,000 requests each.
fn forge(to: SocketAddr, bursts: u32) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..bursts {
        for _ in 0..80 {
            socket.send_to(b"requests:100000|c|#service:checkout,class:media", to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn forged_demand_bursts_do_not_drive_a_pool_to_its_max() {
    let _one_at_a_time = FLOODING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let agent = AgentProcess::start_with_config(POOL, &[]);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| demand(agent.statsd, &stop));
        std::thread::sleep(Duration::from_secs(3));
        // One burst (8 M requests in a few milliseconds; the issue's probe drove the pool to
        // its max with it): one slot of five, the median does not move, nothing is decided.
        let since = unix_ms();
        forge(agent.statsd, 1);
        std::thread::sleep(Duration::from_secs(2));
        let decisions = decisions_since(&agent, since);
        assert_steady(&agent, &decisions);

        // Sustained bursts for a second: past the median, each round's jump is capped at ten
        // times what came before (a real step, as this is to the engine, still gets through),
        // counted and logged.
        forge(agent.statsd, 10);
        stop.store(true, Ordering::Relaxed);
    });
    let metrics = agent.wait_for_metrics(Duration::from_secs(5), |m| {
        sample_value(m, "wedsync_demand_capped_rounds_total{pool=\"checkout\"}").is_some_and(|n| n >= 1.0)
    });
    let capped = sample_value(&metrics, "wedsync_demand_capped_rounds_total{pool=\"checkout\"}").unwrap();
    assert!(
        agent.log().iter().any(|l| l.contains("demand jumped past its bound")),
        "{capped} capped rounds, no log line"
    );
    let pools = agent.get_json("/v1/pools");
    assert!(pools["pools"][0]["status"].get("demand_capped").is_some(), "{pools}");
}
