//! Plugin calls through the real host (goals: an empty plugin call p99 ≤ 500 ns; `decide` of a
//! bundled plugin with 20 pools and 50 regions p99 ≤ 10 µs; instantiation from the
//! `InstancePre` p99 ≤ 10 µs). Criterion reports means/medians; the p99 of single calls is
//! printed separately.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "plugin_common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use wedsync_core::Timestamp;
use wedsync_plugin_host::{HostSettings, PluginHost, PluginSource};
use wedsync_plugins::BUNDLED;

fn host() -> PluginHost {
    PluginHost::new(HostSettings { allow_unsigned: true, max_instances: 64, ..HostSettings::default() }).unwrap()
}

fn source(wasm: &[u8], origin: &str) -> PluginSource {
    PluginSource { bytes: wasm.to_vec(), signature: None, origin: origin.into() }
}

fn bench(c: &mut Criterion) {
    // The empty plugin: the cost of a call.
    let mut h = host();
    let s0 = setup(0, 1);
    let p = h.prepare(source(wedsync_test_guests::EMPTY, "empty"), "{}").unwrap();
    let mut detached = h.instantiate_detached(&p, &s0).unwrap();
    h.install(p, &s0).unwrap();
    let empty = empty_round();
    c.bench_function("plugin_call/empty_call", |b| {
        b.iter(|| black_box(h.call_detached(&mut detached, &empty, 0).unwrap()))
    });
    c.bench_function("plugin_call/empty_decide_round", |b| {
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            black_box(h.decide(Timestamp::from_millis(t), &empty))
        })
    });
    report("plugin_call/empty_call", 200_000, "p99 ≤ 500 ns", || {
        let t = Instant::now();
        black_box(h.call_detached(&mut detached, &empty, 0).unwrap());
        t.elapsed()
    });
    let mut t = 0u64;
    report("plugin_call/empty_decide_round", 200_000, "p99 ≤ 500 ns", || {
        t += 1;
        let start = Instant::now();
        black_box(h.decide(Timestamp::from_millis(t), &empty));
        start.elapsed()
    });
    drop(detached);
    drop(h);

    // Each bundled plugin, 20 pools over 50 regions.
    let s = setup(20, 50);
    let r = round(&s, 1);
    let mut all = host();
    for plugin in BUNDLED {
        let mut h = host();
        let p = h.prepare(source(plugin.wasm, plugin.name), "{}").unwrap();
        h.install(p, &s).unwrap();
        let report_once = h.decide(Timestamp::ZERO, &r);
        assert_eq!(report_once.failures().count(), 0, "{report_once:?}");
        let name = format!("plugin_call/decide_20_pools_50_regions/{}", plugin.name);
        c.bench_function(&name, |b| {
            let mut t = 0u64;
            b.iter(|| {
                t += 1;
                black_box(h.decide(Timestamp::from_millis(t), &r))
            })
        });
        let mut t = 0u64;
        report(&name, 50_000, "p99 ≤ 10 µs", || {
            t += 1;
            let start = Instant::now();
            black_box(h.decide(Timestamp::from_millis(t), &r));
            start.elapsed()
        });
        let p = all.prepare(source(plugin.wasm, plugin.name), "{}").unwrap();
        all.install(p, &s).unwrap();
    }
    c.bench_function("plugin_call/decide_20_pools_50_regions/all_4_bundled", |b| {
        let mut t = 0u64;
        b.iter(|| {
            t += 1;
            black_box(all.decide(Timestamp::from_millis(t), &r))
        })
    });
    let mut t = 0u64;
    report(
        "plugin_call/decide_20_pools_50_regions/all_4_bundled",
        20_000,
        "engine + 4 plugins p99 ≤ 200 µs",
        || {
            t += 1;
            let start = Instant::now();
            black_box(all.decide(Timestamp::from_millis(t), &r));
            start.elapsed()
        },
    );
    drop(all);

    // Instantiation from the InstancePre (store, WASI context, instance; no call).
    let h = host();
    for (label, wasm) in [("empty", wedsync_test_guests::EMPTY), ("wedding-day-guard", BUNDLED[0].wasm)] {
        let p = h.prepare(source(wasm, label), "{}").unwrap();
        let name = format!("plugin_call/instantiate/{label}");
        // Criterion's figure includes dropping the instance (its slot goes back to the pool);
        // the single-call percentiles below time the instantiation alone.
        c.bench_function(&format!("{name}+drop"), |b| b.iter(|| drop(black_box(h.instantiate_bare(&p).unwrap()))));
        let mut keep = Vec::with_capacity(16);
        report(&name, 20_000, "p99 ≤ 10 µs", || {
            let start = Instant::now();
            let i = h.instantiate_bare(&p).unwrap();
            let took = start.elapsed();
            keep.push(i);
            if keep.len() == 16 {
                keep.clear();
            }
            took
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
