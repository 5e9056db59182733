//! `/metrics` render with 10,000 series (budget: under 20 ms), alone and while StatsD is
//! ingested into the same store: the scrape copies the figures in short visits under a shard's
//! lock (256 series each) and encodes after releasing it, so an ingest waits at most for one
//! visit, never for the encoding. The store has the agent's 8 shards (2 readers on 2 cores).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use wedsync_agent::clock::Clock;
use wedsync_agent::ingest::Ingest;
use wedsync_agent::store::Store;
use wedsync_agent::telemetry::{HostView, Telemetry};
use wedsync_core::statsd::parse_line;
use wedsync_core::store::StoreLimits;

/// The agent's shards on a 2-core machine (four per reader).
const SHARDS: usize = 8;

/// The series of one of the 10,000.
fn series_line(i: u32, value: u32) -> (String, u32) {
    let tags = format!("class:media,region:eu-west,wedding:w-{}", i % 500);
    let kind = match i % 10 {
        0 => "ms",
        1 => "g",
        _ => "c",
    };
    let repeats = if kind == "ms" { 100 } else { 1 };
    (format!("svc.metric{i}:{value}|{kind}|#{tags}"), repeats)
}

/// 10,000 series: 1,000 timers (the default histogram cap) with 100 values each, 1,000 gauges,
/// 8,000 counters, each with three tags.
fn telemetry() -> (Clock, Arc<Store>, Telemetry) {
    let clock = Clock::start();
    let store = Arc::new(Store::new(StoreLimits::default(), SHARDS));
    let now = clock.now();
    for i in 0..10_000u32 {
        let (_, repeats) = series_line(i, 0);
        for v in 0..repeats {
            let (text, _) = series_line(i, v + i % 7);
            store.record(now, &parse_line(text.as_bytes()).unwrap()).unwrap();
        }
    }
    assert_eq!(store.app_series(), 10_000);
    let telemetry = Telemetry::new(clock, store.clone(), Arc::new(RwLock::new(HostView::default())));
    (clock, store, telemetry)
}

/// Takes a shard's lock (each in turn) every 100 µs until `stop`; returns the p99 and the
/// longest wait.
fn probe_lock(store: Arc<Store>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Duration, Duration)> {
    std::thread::spawn(move || {
        let mut waits = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            drop(store.lock_shard(waits.len() % store.shard_count()));
            waits.push(t.elapsed());
            std::thread::sleep(Duration::from_micros(100));
        }
        waits.sort();
        let p = |q: f64| waits[((waits.len() as f64 * q) as usize).min(waits.len() - 1)];
        (p(0.99), p(1.0))
    })
}

fn render(c: &mut Criterion) {
    let (_, store, telemetry) = telemetry();
    let size = telemetry.render().unwrap().len();
    println!("exposition size: {size} bytes");
    // How long a scrape keeps a shard's lock at a time: a probe thread (the only other
    // runnable thread on a 2-core machine) takes it every 100 µs while scrapes run back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = probe_lock(store, stop.clone());
    c.bench_function("metrics_render/10k_series", |b| b.iter(|| telemetry.render().unwrap()));
    stop.store(true, Ordering::Relaxed);
    let (p99, max) = probe.join().unwrap();
    println!(
        "metrics_render/10k_series: waits for a shard's lock during scrapes: p99 {:.3} ms, max {:.3} ms",
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}

/// Ingests `datagrams` into `store` until `stop`; returns the lines per second.
fn ingest_until(
    clock: Clock,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    datagrams: Arc<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let ingest = Ingest::new(clock, store, telemetry.ingest.clone(), 1, None);
        let (mut lines, started) = (0u64, Instant::now());
        while !stop.load(Ordering::Relaxed) {
            for d in datagrams.iter() {
                lines += ingest.datagram(d, None).stored;
            }
        }
        lines as f64 / started.elapsed().as_secs_f64()
    })
}

fn render_while_ingesting(c: &mut Criterion) {
    let (clock, store, telemetry) = telemetry();
    let telemetry = Arc::new(telemetry);
    // Updates to the same 10,000 series, in 1,400-byte datagrams.
    let mut datagrams = Vec::new();
    let mut current = String::new();
    for i in 0..10_000u32 {
        let (line, _) = series_line(i, i % 13);
        if current.len() + line.len() + 1 > 1_400 {
            datagrams.push(std::mem::take(&mut current).into_bytes());
        }
        current.push_str(&line);
        current.push('\n');
    }
    datagrams.push(current.into_bytes());
    let datagrams = Arc::new(datagrams);
    // Ingest alone first, for comparison.
    let stop = Arc::new(AtomicBool::new(false));
    let alone = ingest_until(clock, store.clone(), telemetry.clone(), datagrams.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let alone = alone.join().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = ingest_until(clock, store, telemetry.clone(), datagrams, stop.clone());
    c.bench_function("metrics_render/10k_series_while_ingesting", |b| b.iter(|| telemetry.render().unwrap()));
    stop.store(true, Ordering::Relaxed);
    let during = ingest.join().unwrap();
    println!(
        "metrics_render/10k_series_while_ingesting: one ingest thread: {:.2} M lines/s alone, {:.2} M lines/s while scrapes run back to back",
        alone / 1e6,
        during / 1e6
    );
}

criterion_group!(benches, render, render_while_ingesting);
criterion_main!(benches);
