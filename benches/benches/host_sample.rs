//! Cost of one host sample from the real procfs (budget: far under 0.5% of a core at 4 samples a
//! second, i.e. well under 1.25 ms a sample) and of one sample of the agent's own process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;
use wedsync_agent::host::HostCollector;
use wedsync_agent::process::ProcessSampler;

fn host_sample(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_sample");

    group.bench_function("procfs", |b| {
        let mut collector = HostCollector::new("/proc");
        // Warm up: the first sample has no previous counters, so it computes no rates.
        collector.sample(Instant::now()).expect("first host sample");
        b.iter(|| black_box(collector.sample(black_box(Instant::now())).expect("host sample")));
    });

    group.bench_function("process", |b| {
        let mut sampler = ProcessSampler::new();
        sampler.sample();
        b.iter(|| black_box(sampler.sample()));
    });

    group.finish();
}

criterion_group!(benches, host_sample);
criterion_main!(benches);
