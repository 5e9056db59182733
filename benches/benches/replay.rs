//! Replays the viral-spike trace (30 simulated minutes at 10 Hz): reports spike onset to
//! scale-up decision in simulated time (budget: ≤ 1 s) and measures the replay's own speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use wedsync_core::TrafficClass;
use wedsync_core::engine::EngineSettings;
use wedsync_core::engine::pool::{PoolSpec, UnitCost};
use wedsync_core::replay::{Trace, replay};

fn bench(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/traces/viral-spike.csv");
    let trace = Trace::parse("viral-spike", &std::fs::read_to_string(path).unwrap()).unwrap();
    let pool = PoolSpec {
        name: "web".into(),
        region: "eu-west".into(),
        min: 5,
        max: 1000,
        capacity_per_unit: 100.0,
        class_capacity: [100.0; 5],
        target_utilization: 0.7,
        classes: TrafficClass::ALL.to_vec(),
        provisioning_delay: Duration::from_secs(60),
        protected_floor: 30,
        time_zone: "UTC".into(),
        cost: UnitCost::default(),
        placements: Vec::new(),
        assume_size: None,
    };
    let (report, _) = replay(&trace, pool.clone(), EngineSettings::default());
    println!(
        "replay/viral-spike: onset to decision {:?} s (budget ≤ 1 s), onset to capacity {:?} s, wedding-critical shed {}",
        report.onset_to_decision_s,
        report.onset_to_capacity_s,
        report.shed(TrafficClass::WeddingCritical)
    );
    c.bench_function("replay/viral-spike_30min_10hz", |b| {
        b.iter(|| black_box(replay(&trace, pool.clone(), EngineSettings::default())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
