//! StatsD parse + aggregate throughput on one core (budget: at least 1,000,000 lines/s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
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
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
