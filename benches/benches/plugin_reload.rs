//! Plugin loading and the sandbox's limits (goals: verify + compile + swap of a ~200 KB
//! component ≤ 100 ms; warm start from the compiled cache ≤ 1 ms; a runaway plugin stopped
//! within 2x its 5 ms budget; 1,000 loaded instances ≤ 64 MiB resident).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "plugin_common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use wedsync_core::Timestamp;
use wedsync_plugin_host::{HostSettings, PluginHost, PluginSource, signing};
use wedsync_plugins::BUNDLED;
use wedsync_test_guests as guests;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn bench(c: &mut Criterion) {
    let key = signing::generate_keypair().unwrap();
    let signed = |wasm: &[u8], origin: &str| PluginSource {
        bytes: wasm.to_vec(),
        signature: Some(signing::encode_signature(&signing::sign(&key, wasm)).into_bytes()),
        origin: origin.into(),
    };
    let trusted = || HostSettings { trusted_keys: vec![key.verifying_key()], ..HostSettings::default() };
    let s = setup(20, 50);
    let r = round(&s, 1);
    println!("plugin_reload: the large test component is {} bytes", guests::LARGE.len());

    // Verify + compile + swap, no cache.
    let mut h = PluginHost::new(trusted()).unwrap();
    let p = h.prepare(signed(guests::LARGE, "large"), "{}").unwrap();
    h.install(p, &s).unwrap();
    let mut group = c.benchmark_group("plugin_reload");
    group.sample_size(10);
    group.bench_function("verify_compile_swap/large_200KB", |b| {
        b.iter(|| {
            let p = h.prepare(signed(guests::LARGE, "large"), "{}").unwrap();
            black_box(h.install(p, &s).unwrap())
        })
    });
    group.finish();
    let mut times: Vec<Duration> = (0..10)
        .map(|_| {
            let src = signed(guests::LARGE, "large");
            let t = Instant::now();
            let p = h.prepare(src, "{}").unwrap();
            h.install(p, &s).unwrap();
            t.elapsed()
        })
        .collect();
    let (p50, p99, max) = percentiles(&mut times);
    println!(
        "plugin_reload/verify_compile_swap/large_200KB: 10 reloads: p50 {p50:?}, p99 {p99:?}, max {max:?} (goal ≤ 100 ms)"
    );
    drop(h);

    // Warm start from the compiled cache: verify + load the artifact + instantiate + configure
    // + swap.
    let dir = tempfile::tempdir().unwrap();
    let mut h = PluginHost::new(HostSettings { cache_dir: Some(dir.path().to_path_buf()), ..trusted() }).unwrap();
    for (label, wasm) in [("wedding-day-guard", BUNDLED[0].wasm), ("large_200KB", guests::LARGE)] {
        let p = h.prepare(signed(wasm, label), "{}").unwrap();
        assert!(!p.from_cache());
        h.install(p, &s).unwrap();
        let name = format!("plugin_reload/warm_start_from_cache/{label}");
        c.bench_function(&name, |b| {
            b.iter(|| {
                let p = h.prepare(signed(wasm, label), "{}").unwrap();
                assert!(p.from_cache());
                black_box(h.install(p, &s).unwrap())
            })
        });
        report(&name, 200, "≤ 1 ms", || {
            let src = signed(wasm, label);
            let t = Instant::now();
            let p = h.prepare(src, "{}").unwrap();
            h.install(p, &s).unwrap();
            t.elapsed()
        });
    }
    drop(h);

    // A runaway plugin: how long the call takes before the epoch interrupts it (budget 5 ms).
    let mut h = PluginHost::new(HostSettings { allow_unsigned: true, ..HostSettings::default() }).unwrap();
    let p =
        h.prepare(PluginSource { bytes: guests::INFINITE_LOOP.to_vec(), signature: None, origin: "loop".into() }, "{}");
    h.install(p.unwrap(), &s).unwrap();
    let mut t = 0u64;
    report("plugin_reload/runaway_stop_time", 50, "≤ 10 ms (2x the 5 ms budget)", || {
        // Spread over time so quarantine never kicks in (3 failures in 60 s).
        t += 61_000;
        let start = Instant::now();
        let rep = h.decide(Timestamp::from_millis(t), &r);
        let took = start.elapsed();
        assert!(rep.outcomes[0].result.is_err());
        took
    });
    drop(h);

    // 1,000 loaded (instantiated and configured) instances: resident memory.
    for (label, wasm) in [("empty", guests::EMPTY), ("wedding-day-guard", BUNDLED[0].wasm)] {
        let h = PluginHost::new(HostSettings { allow_unsigned: true, max_instances: 1000, ..HostSettings::default() })
            .unwrap();
        let p = h.prepare(PluginSource { bytes: wasm.to_vec(), signature: None, origin: label.into() }, "{}").unwrap();
        // One first, so the code and the engine's own allocations are not counted.
        let first = h.instantiate_detached(&p, &s).unwrap();
        let before = rss_bytes();
        let start = Instant::now();
        let instances: Vec<_> = (0..999).map(|_| h.instantiate_detached(&p, &s).unwrap()).collect();
        let took = start.elapsed();
        let after = rss_bytes();
        let delta = after.saturating_sub(before) as f64 / (1024.0 * 1024.0);
        println!(
            "plugin_reload/1000_instances/{label}: RSS +{delta:.1} MiB for 999 more instances ({:.1} KiB each; \
             {took:?} to create), process RSS {:.1} MiB (goal ≤ 64 MiB)",
            delta * 1024.0 / 999.0,
            after as f64 / (1024.0 * 1024.0)
        );
        drop(instances);
        drop(first);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
