//! StatsD parse + aggregate throughput on one core (budget: at least 1,000,000 lines/s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use wedsync_agent::clock::{Clock, StoreLock};
use wedsync_agent::ingest::ingest_datagram;
use wedsync_agent::logging::RateLimiter;
use wedsync_agent::telemetry::{HostView, Telemetry};
use wedsync_benches::{line_count, traffic};
use wedsync_core::Timestamp;
use wedsync_core::statsd::parse_datagram;
use wedsync_core::store::{MetricStore, StoreLimits};

fn ingest(c: &mut Criterion) {
    // 10,000 lines over 2,000 series in 1,400-byte datagrams (one Ethernet MTU each).
    let datagrams = traffic(10_000, 2_000, 1_400);
    let lines = line_count(&datagrams) as u64;
    let mut group = c.benchmark_group("statsd");
    group.throughput(Throughput::Elements(lines));

    group.bench_function("parse", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for d in &datagrams {
                parse_datagram(black_box(d), |r| ok += usize::from(r.is_ok()));
            }
            assert_eq!(ok as u64, lines);
        });
    });

    group.bench_function("parse_and_aggregate", |b| {
        let mut store = MetricStore::new(StoreLimits::default());
        // Virtual time advances 10 ms per batch so ring slots rotate as they do live.
        let mut now_ms = 0u64;
        b.iter(|| {
            now_ms += 10;
            let now = Timestamp::from_millis(now_ms);
            for d in &datagrams {
                parse_datagram(black_box(d), |r| {
                    if let Ok(line) = r {
                        let _ = black_box(store.record(now, &line));
                    }
                });
            }
        });
        assert!(store.app_series() > 0);
    });

    // The agent's real per-datagram path: store lock, parse, record, counters.
    group.bench_function("agent_ingest_path", |b| {
        let clock = Clock::start();
        let store = Arc::new(StoreLock::new(MetricStore::new(StoreLimits::default())));
        let telemetry = Telemetry::new(clock, store.clone(), Arc::new(RwLock::new(HostView::default())));
        let mut limiter = RateLimiter::new(5);
        b.iter(|| {
            for d in &datagrams {
                black_box(ingest_datagram(black_box(d), None, &clock, &store, &telemetry.ingest, &mut limiter, None));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
