//! StatsD parse + aggregate throughput on one core (budget: at least 1,000,000 lines/s), and
//! the agent's ingest path on two threads at once into the sharded store (what two readers on
//! two cores can do, without the socket).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use wedsync_agent::clock::Clock;
use wedsync_agent::ingest::Ingest;
use wedsync_agent::store::Store;
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

    // The agent's real per-datagram path: parse, shard, shard locks, record, counters; the
    // agent's 8 shards (2 readers).
    let clock = Clock::start();
    let store = Arc::new(Store::new(StoreLimits::default(), 8));
    let telemetry = Telemetry::new(clock, store.clone(), Arc::new(RwLock::new(HostView::default())));
    let ingest = Ingest::new(clock, store, telemetry.ingest.clone(), 5, None);
    group.bench_function("agent_ingest_path", |b| {
        b.iter(|| {
            for d in &datagrams {
                black_box(ingest.datagram(black_box(d), None));
            }
        });
    });
    // Two threads at once, each with all the datagrams (the same series, as two readers see).
    group.throughput(Throughput::Elements(2 * lines));
    group.bench_function("agent_ingest_path_2_threads", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            for d in &datagrams {
                                black_box(ingest.datagram(black_box(d), None));
                            }
                        }
                    });
                }
            });
            started.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
