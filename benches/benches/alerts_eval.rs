//! Alert rules: one evaluation over 20 pools per round (budget ≤ 20 µs), quiet (no condition)
//! and in an incident (every pool shedding one class, a wedding active in its region).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use wedsync_core::TrafficClass;
use wedsync_core::alerts::{AlertSettings, Alerting, Facts, PoolFacts};
use wedsync_core::engine::decision::Admission;
use wedsync_core::engine::{Demand, PoolStatus};
use wedsync_core::time::Timestamp;

fn status(i: usize, shedding: bool) -> PoolStatus {
    let mut spec = wedsync_core::replay::trace_pool(2, 50, std::time::Duration::ZERO);
    spec.name = format!("pool-{i}");
    spec.region = format!("region-{}", i % 4);
    let mut demand = Demand::default();
    demand.set(TrafficClass::Media, 900.0);
    PoolStatus {
        spec: Arc::new(spec),
        available: 10,
        target: 10,
        load: 900.0,
        demand,
        protected: false,
        holding_stale: false,
        spike_active: false,
        lossy_input: false,
        demand_capped: false,
        admission: TrafficClass::ALL
            .iter()
            .map(|&class| Admission { class, admit: if shedding && class == TrafficClass::Media { 0.5 } else { 1.0 } })
            .collect(),
        observed_units: Some(10),
        observed_at: None,
        size_unknown: false,
    }
}

fn bench(c: &mut Criterion) {
    for (name, shedding) in [("quiet", false), ("incident", true)] {
        let pools: Vec<PoolStatus> = (0..20).map(|i| status(i, shedding)).collect();
        let weddings: BTreeMap<String, Vec<String>> =
            if shedding { BTreeMap::from([("region-0".to_owned(), vec!["w-1".to_owned()])]) } else { BTreeMap::new() };
        let mut alerting = Alerting::new(AlertSettings::default());
        let mut round = 0u64;
        c.bench_function(&format!("alerts_eval/20_pools_{name}"), |b| {
            b.iter(|| {
                round += 1;
                let facts = Facts {
                    now: Timestamp::from_millis(round * 100),
                    wall_ms: 1_780_000_000_000 + (round * 100) as i64,
                    node: "n1",
                    pools: pools
                        .iter()
                        .map(|status| PoolFacts {
                            status,
                            forecast_peak: Some(800.0),
                            horizon: std::time::Duration::from_secs(1800),
                            actuator_failure: None,
                        })
                        .collect(),
                    weddings: weddings.clone(),
                    plugins: Vec::new(),
                    api_base: "http://127.0.0.1:9470",
                };
                alerting.evaluate(black_box(&facts));
                while alerting.poll_event().is_some() {}
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
