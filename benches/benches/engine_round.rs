//! One decision round with 20 pools: the engine alone (budget: p99 ≤ 50 µs), and the engine with
//! the agent's own plugin stage running the 4 bundled plugins, as the default config loads them
//! (budget: p99 ≤ 200 µs). Criterion reports the mean/median; the p99 of single rounds is printed
//! separately from timed rounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use wedsync_agent::plugins::PluginStage;
use wedsync_core::engine::pool::{PoolSpec, UnitCost};
use wedsync_core::engine::{Demand, Engine, EngineSettings};
use wedsync_core::{Timestamp, TrafficClass};

const POOLS: usize = 20;

fn engine() -> Engine {
    let pools = (0..POOLS)
        .map(|i| PoolSpec {
            name: format!("pool-{i}"),
            region: format!("region-{}", i % 4),
            min: 2,
            max: 500,
            capacity_per_unit: 100.0,
            class_capacity: [100.0; 5],
            target_utilization: 0.7,
            classes: TrafficClass::ALL.to_vec(),
            provisioning_delay: Duration::from_secs(60),
            protected_floor: 10,
            time_zone: "UTC".into(),
            cost: UnitCost::default(),
            placements: Vec::new(),
            // The bench's engine starts pools at their minimum, as before sizes were observed.
            assume_size: Some(2),
        })
        .collect();
    Engine::new(EngineSettings::default(), pools)
}

/// Feeds every pool a noisy demand and runs one round at `round`.
fn round(engine: &mut Engine, round: u64, noise: &mut u64) {
    round_with(engine, round, noise, None);
}

/// The same, with `policy` (the agent's plugin stage) reviewing the round.
fn round_with(engine: &mut Engine, round: u64, noise: &mut u64, policy: Option<&mut PluginStage>) {
    let now = Timestamp::from_millis(round * 100);
    for pool in 0..POOLS {
        *noise ^= *noise << 13;
        *noise ^= *noise >> 7;
        *noise ^= *noise << 17;
        let wobble = 1.0 + ((*noise % 300) as f64 - 150.0) / 1000.0;
        let base = 500.0 * (1 + pool % 7) as f64 * wobble;
        engine.handle_demand(now, pool, Demand([base * 0.1, base * 0.2, base * 0.3, base * 0.3, base * 0.1]));
    }
    // A Saturday in June: the seasonal plugin raises floors, as on a peak day.
    let wall = 1_781_967_600_000 + (round * 100) as i64;
    match policy {
        Some(stage) => engine.handle_timeout_with(now, wall, stage),
        None => engine.handle_timeout(now, wall),
    }
    while let Some(decision) = engine.poll_decision() {
        black_box(decision);
    }
}

fn bench(c: &mut Criterion) {
    let mut e = engine();
    let mut noise = 0x9e37_79b9_7f4a_7c15u64;
    let mut r = 0u64;
    for _ in 0..3000 {
        round(&mut e, r, &mut noise);
        r += 1;
    }
    c.bench_function("engine_round/20_pools", |b| {
        b.iter(|| {
            round(&mut e, r, &mut noise);
            r += 1;
        })
    });

    // The budget is on the p99 of single rounds.
    let mut times: Vec<Duration> = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            round(&mut e, r, &mut noise);
            r += 1;
            t.elapsed()
        })
        .collect();
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "engine_round/20_pools single rounds: p50 {:?}, p99 {:?}, max {:?} (budget p99 ≤ 50 µs)",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

/// The engine and plugin stage the agent builds from a config with 20 pools over 4 regions (3 in
/// Europe, 1 in India; pools in Europe may place capacity in the US) and the default
/// `[plugins]` section: the 4 bundled plugins, compiled into a temporary cache.
fn agent_engine_with_plugins(state: &std::path::Path) -> (Engine, PluginStage) {
    let zones = [
        ("eu-west", "Europe/London"),
        ("eu-central", "Europe/Berlin"),
        ("ap-south", "Asia/Kolkata"),
        ("us-east", "America/New_York"),
    ];
    let mut toml = String::from("[agent]\nnode_id = \"bench-node\"\nregion = \"eu-west\"\n");
    for i in 0..POOLS {
        let (region, zone) = zones[i % zones.len()];
        toml.push_str(&format!(
            "[[pools]]\nname = \"pool-{i}\"\nregion = \"{region}\"\ntime_zone = \"{zone}\"\nmin = 2\nmax = 500\n\
             capacity_per_unit = 100.0\ntarget_utilization = 0.7\nprovisioning_delay = \"60s\"\nprotected_floor = 10\n\
             demand_metric = \"requests\"\n[[pools.placements]]\nregion = \"us-east\"\n"
        ));
    }
    let file = state.join("agent.toml");
    std::fs::write(&file, toml).unwrap();
    let settings = wedsync_agent::config::check_file(&file, Some(Default::default())).unwrap();
    let plugins = settings.plugins.clone().expect("plugins are on by default");
    assert_eq!(plugins.bundled.len(), 4);
    let stage = PluginStage::start(
        &settings,
        &plugins,
        state,
        std::sync::Arc::default(),
        None,
        prometheus_client::metrics::counter::Counter::default(),
        None,
    )
    .unwrap();
    let engine = Engine::new(settings.engine.clone(), settings.pools.clone());
    (engine, stage)
}

fn bench_with_plugins(c: &mut Criterion) {
    let state = tempfile::tempdir().unwrap();
    let (mut e, mut stage) = agent_engine_with_plugins(state.path());
    let mut noise = 0x9e37_79b9_7f4a_7c15u64;
    let mut r = 0u64;
    for _ in 0..3000 {
        round_with(&mut e, r, &mut noise, Some(&mut stage));
        r += 1;
    }
    c.bench_function("engine_round/20_pools_4_bundled_plugins", |b| {
        b.iter(|| {
            round_with(&mut e, r, &mut noise, Some(&mut stage));
            r += 1;
        })
    });
    let mut times: Vec<Duration> = (0..30_000)
        .map(|_| {
            let t = Instant::now();
            round_with(&mut e, r, &mut noise, Some(&mut stage));
            r += 1;
            t.elapsed()
        })
        .collect();
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    // The stage publishes its figures at most once a second, after a round.
    stage.round_finished(Duration::ZERO, Duration::from_secs(1));
    let snapshot = stage.snapshot();
    let snapshot = snapshot.read().unwrap();
    let calls: u64 = snapshot.plugins.iter().map(|p| p.calls).sum();
    let failures: u64 = snapshot.plugins.iter().flat_map(|p| p.failures.values()).sum();
    println!(
        "engine_round/20_pools_4_bundled_plugins single rounds: p50 {:?}, p99 {:?}, max {:?} \
         (budget p99 ≤ 200 µs); {} plugins, {calls} calls, {failures} failures",
        p(0.5),
        p(0.99),
        p(1.0),
        snapshot.plugins.len()
    );
    assert_eq!(snapshot.plugins.len(), 4);
    assert_eq!(failures, 0);
}

/// What a round reads before the engine runs: every pool's demand from a store of 10,000 series
/// (the 20 pools' own, 5 classes each, among 9,900 others) in the agent's 8 shards, every shard
/// locked for the read as the round does. Each pool's series are indexed when made
/// ([`wedsync_core::store::MetricStore::watch`]), so the read does not walk the store.
fn bench_demand(c: &mut Criterion) {
    use wedsync_agent::config::DemandSource;
    use wedsync_agent::decisions::{DemandWatch, pool_demand};
    use wedsync_agent::store::Store;
    use wedsync_core::statsd::parse_line;
    use wedsync_core::store::StoreLimits;
    let store = Store::new(StoreLimits::default(), 8);
    let watches: Vec<DemandWatch> = (0..POOLS)
        .map(|i| {
            let source = DemandSource {
                metric: "requests".into(),
                tags: vec![format!("service:pool-{i}")],
                untagged_class: TrafficClass::Registration,
                cpu: false,
                size: None,
            };
            DemandWatch::new(&store, source)
        })
        .collect();
    let classes = ["wedding-critical", "wedding-planning", "registration", "media", "background"];
    for tick in 0..20u64 {
        let now = Timestamp::from_millis(tick * 100);
        for i in 0..POOLS {
            for class in classes {
                let line = format!("requests:{}|c|#service:pool-{i},class:{class}", 10 + i);
                store.record(now, &parse_line(line.as_bytes()).unwrap()).unwrap();
            }
        }
        if tick == 0 {
            for j in 0..9_900 {
                let line = format!("other.metric{j}:1|c|#service:svc-{},class:media", j % 50);
                store.record(now, &parse_line(line.as_bytes()).unwrap()).unwrap();
            }
        }
    }
    assert_eq!(store.app_series(), 10_000);
    let now = Timestamp::from_millis(2_000);
    c.bench_function("engine_round/demand_20_pools_10k_series", |b| {
        b.iter(|| {
            let all = store.lock_all();
            for (i, watch) in watches.iter().enumerate() {
                black_box(pool_demand(&all, now, watch, 10, 100.0 + i as f64));
            }
        })
    });
    let all = store.lock_all();
    let total: f64 =
        watches.iter().filter_map(|w| pool_demand(&all, now, w, 10, 100.0)).map(|d| d.demand.total()).sum();
    assert!(total > 0.0);
}

criterion_group!(benches, bench, bench_with_plugins, bench_demand);
criterion_main!(benches);
