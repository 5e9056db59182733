//! Predictive scaling: fitting one pool's weekly profile from 14 days of 5-minute history
//! (4032 samples) in Europe/London (budget: ≤ 150 ms), and the forecast peak over the default
//! 30-minute horizon that the engine asks for every round.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use wedsync_core::engine::forecast::{DEFAULT_BUCKET, DEFAULT_HORIZON, SeasonalMultipliers, WeeklyProfile, time_zone};

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

    let profile = WeeklyProfile::fit(&history, DEFAULT_BUCKET, &tz, &seasons).unwrap();
    assert_eq!(profile.observed_buckets(), profile.bucket_count());
    let now = START_MS + SAMPLES as i64 * FIVE_MIN_MS + 17 * 60_000;
    c.bench_function("forecast/peak_over_30min", |b| {
        b.iter(|| profile.peak_over(black_box(now), DEFAULT_HORIZON, &tz, &seasons).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
