//! `/metrics` render with 10,000 series (budget: under 20 ms).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::{Arc, Mutex, RwLock};
use wedsync_agent::clock::Clock;
use wedsync_agent::telemetry::{HostView, Telemetry};
use wedsync_core::statsd::parse_line;
use wedsync_core::store::{MetricStore, StoreLimits};

fn render(c: &mut Criterion) {
    let clock = Clock::start();
    let mut store = MetricStore::new(StoreLimits::default());
    // 10,000 series: 1,000 timers (the default histogram cap) with 100 values each,
    // 1,000 gauges, 8,000 counters, each with three tags.
    let now = clock.now();
    for i in 0..10_000u32 {
        let tags = format!("class:media,region:eu-west,wedding:w-{}", i % 500);
        let kind = match i % 10 {
            0 => "ms",
            1 => "g",
            _ => "c",
        };
        let repeats = if kind == "ms" { 100 } else { 1 };
        for v in 0..repeats {
            let text = format!("svc.metric{i}:{}|{kind}|#{tags}", v + i % 7);
            store.record(now, &parse_line(text.as_bytes()).unwrap()).unwrap();
        }
    }
    assert_eq!(store.app_series(), 10_000);
    let telemetry = Telemetry::new(clock, Arc::new(Mutex::new(store)), Arc::new(RwLock::new(HostView::default())));
    let size = telemetry.render().unwrap().len();
    println!("exposition size: {size} bytes");
    c.bench_function("metrics_render/10k_series", |b| b.iter(|| telemetry.render().unwrap()));
}

criterion_group!(benches, render);
criterion_main!(benches);
