//! `/metrics` render with 10,000 series (budget: under 20 ms), alone and while StatsD is
//! ingested into the same store: the scrape copies the figures in short visits under the
//! store's lock (256 series each) and encodes after releasing it, so an ingest waits at most
//! for one visit, never for the encoding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use wedsync_agent::clock::Clock;
use wedsync_agent::ingest::ingest_datagram;
use wedsync_agent::logging::RateLimiter;
use wedsync_agent::telemetry::{HostView, Telemetry};
use wedsync_core::statsd::parse_line;
use wedsync_core::store::{MetricStore, StoreLimits};

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
fn telemetry() -> (Clock, Arc<Mutex<MetricStore>>, Telemetry) {
    let clock = Clock::start();
    let mut store = MetricStore::new(StoreLimits::default());
    let now = clock.now();
    for i in 0..10_000u32 {
        let (_, repeats) = series_line(i, 0);
        for v in 0..repeats {
            let (text, _) = series_line(i, v + i % 7);
            store.record(now, &parse_line(text.as_bytes()).unwrap()).unwrap();
        }
    }
    assert_eq!(store.app_series(), 10_000);
    let store = Arc::new(Mutex::new(store));
    let telemetry = Telemetry::new(clock, store.clone(), Arc::new(RwLock::new(HostView::default())));
    (clock, store, telemetry)
}

fn render(c: &mut Criterion) {
    let (_, _, telemetry) = telemetry();
    let size = telemetry.render().unwrap().len();
    println!("exposition size: {size} bytes");
    c.bench_function("metrics_render/10k_series", |b| b.iter(|| telemetry.render().unwrap()));
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
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (store, telemetry, stop) = (store.clone(), telemetry.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut limiter = RateLimiter::new(1);
            let (mut lines, mut slowest, started) = (0u64, Duration::ZERO, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                for d in &datagrams {
                    let t = Instant::now();
                    let outcome = ingest_datagram(d, None, &clock, &store, &telemetry.ingest, &mut limiter, None);
                    slowest = slowest.max(t.elapsed());
                    lines += outcome.stored;
                }
            }
            (lines as f64 / started.elapsed().as_secs_f64(), slowest)
        })
    };
    // How long anyone waits for the store's lock while scrapes run: a probe takes it every
    // 100 µs and keeps the longest wait (scheduling delays on a busy machine included).
    let probe = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut waits = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                drop(store.lock().unwrap());
                waits.push(t.elapsed());
                std::thread::sleep(Duration::from_micros(100));
            }
            waits.sort();
            let p = |q: f64| waits[((waits.len() as f64 * q) as usize).min(waits.len() - 1)];
            (p(0.99), p(1.0))
        })
    };
    c.bench_function("metrics_render/10k_series_while_ingesting", |b| b.iter(|| telemetry.render().unwrap()));
    stop.store(true, Ordering::Relaxed);
    let (rate, slowest) = ingest.join().unwrap();
    let (wait_p99, wait_max) = probe.join().unwrap();
    println!(
        "while rendering: ingest {:.2} M lines/s, slowest datagram {:.2} ms; waits for the store's lock: p99 {:.3} ms, max {:.3} ms",
        rate / 1e6,
        slowest.as_secs_f64() * 1e3,
        wait_p99.as_secs_f64() * 1e3,
        wait_max.as_secs_f64() * 1e3
    );
}

criterion_group!(benches, render, render_while_ingesting);
criterion_main!(benches);
