//! One decision round with 20 pools and no plugins (budget: p99 ≤ 50 µs).
//! Criterion reports the mean/median; the p99 of single rounds is printed separately from
//! 100,000 timed rounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
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
        })
        .collect();
    Engine::new(EngineSettings::default(), pools)
}

/// Feeds every pool a noisy demand and runs one round at `round`.
fn round(engine: &mut Engine, round: u64, noise: &mut u64) {
    let now = Timestamp::from_millis(round * 100);
    for pool in 0..POOLS {
        *noise ^= *noise << 13;
        *noise ^= *noise >> 7;
        *noise ^= *noise << 17;
        let wobble = 1.0 + ((*noise % 300) as f64 - 150.0) / 1000.0;
        let base = 500.0 * (1 + pool % 7) as f64 * wobble;
        engine.handle_demand(now, pool, Demand([base * 0.1, base * 0.2, base * 0.3, base * 0.3, base * 0.1]));
    }
    engine.handle_timeout(now, 1_780_000_000_000 + (round * 100) as i64);
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

criterion_group!(benches, bench);
criterion_main!(benches);
