//! Shared inputs for the plugin benches: a setup of `pools` pools over `regions` regions and a
//! busy Saturday round for it.
#![allow(dead_code)]

use std::time::Duration;
use wedsync_plugin_host::policy::*;

/// 2026-06-20T15:00:00Z, a Saturday.
pub const SATURDAY_MS: i64 = 1_781_967_600_000;

pub fn figures(v: f64) -> ClassFigures {
    ClassFigures { wedding_critical: v, wedding_planning: v, registration: v, media: v, background: v }
}

pub fn setup(pools: usize, regions: usize) -> Setup {
    let prefixes = ["eu-west", "us-east", "ap-south", "au-east", "eu-central"];
    let regions: Vec<RegionInfo> = (0..regions.max(1))
        .map(|i| RegionInfo { name: format!("{}-{i}", prefixes[i % prefixes.len()]), time_zone: "UTC".into() })
        .collect();
    let n = regions.len();
    let pools = (0..pools)
        .map(|i| PoolInfo {
            name: format!("pool-{i}"),
            region: (i % n) as u32,
            min: 2,
            max: 500,
            protected_floor: 10,
            capacity_per_unit: 100.0,
            target_utilization: 0.7,
            classes: vec![
                TrafficClass::WeddingCritical,
                TrafficClass::WeddingPlanning,
                TrafficClass::Registration,
                TrafficClass::Media,
                TrafficClass::Background,
            ],
            placements: vec![((i + 1) % n) as u32, ((i + 7) % n) as u32],
            spot_max_fraction: 0.5,
        })
        .collect();
    Setup { node: "bench-node".into(), region: 0, regions, pools, config: "{}".into() }
}

/// Every pool busy, a third protected by a 400-guest wedding, the engine proposing to scale up
/// (placing every fourth pool elsewhere), one failover.
pub fn round(setup: &Setup, epoch: u64) -> Round {
    let mut pools = PoolTable::with_capacity(setup.pools.len());
    for (i, p) in setup.pools.iter().enumerate() {
        let mut status = PoolStatus::empty();
        if i % 3 == 0 {
            status |= PoolStatus::PROTECTED;
        }
        if i % 5 == 0 {
            status |= PoolStatus::SPIKE;
        }
        pools.push(&PoolRow {
            serving: 8,
            target: 8,
            load: 700.0 + (i * 37 % 300) as f64,
            demand: [150.0; 5],
            status,
            utc_offset_minutes: 60,
            proposed: if i % 2 == 0 { 12 } else { 7 },
            placement: if i % 4 == 0 { p.placements[0] } else { p.region },
            admission: [1.0; 5],
            spot_units: 6,
        });
    }
    Round {
        epoch,
        unix_ms: SATURDAY_MS + epoch as i64 * 100,
        utc_offset_minutes: 60,
        metrics: MetricsSummary { cpu_utilization: 0.4, memory_utilization: 0.5, samples_per_second: 20_000.0 },
        pools,
        weddings: vec![Wedding {
            guests: 400,
            start_unix_ms: SATURDAY_MS - 3_600_000,
            end_unix_ms: SATURDAY_MS + 3_600_000,
        }],
        fleet: None,
        failovers: vec![Failover {
            id: "fo-1".into(),
            failed_region: setup.regions[0].name.clone(),
            target_region: setup.regions[setup.regions.len() - 1].name.clone(),
            load: 900.0,
            pool: Some(0),
        }],
    }
}

/// A round with no pools: the cost of the call itself.
pub fn empty_round() -> Round {
    let mut r = round(&setup(0, 1), 1);
    r.weddings.clear();
    r.failovers.clear();
    r
}

/// p50, p99 and max of `times`, sorted in place.
pub fn percentiles(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (p(0.5), p(0.99), times[times.len() - 1])
}

/// Prints the single-call percentiles of `f` over `n` calls, against a budget.
pub fn report(label: &str, n: usize, budget: &str, mut f: impl FnMut() -> Duration) {
    let mut times: Vec<Duration> = (0..n).map(|_| f()).collect();
    let (p50, p99, max) = percentiles(&mut times);
    println!("{label}: {n} single calls: p50 {p50:?}, p99 {p99:?}, max {max:?} (goal {budget})");
}
