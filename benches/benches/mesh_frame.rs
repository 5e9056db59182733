//! Encode + decode of one node-state record as it travels in a gossip frame (budget: ≤ 2 µs).
//! Decoding is what a receiver does with untrusted bytes: size check, postcard, validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use wedsync_mesh::{MAX_STATE_BYTES, NodeState, PoolFigures};

/// A realistic record: 8 pools with per-class load.
fn state() -> NodeState {
    NodeState {
        node: "edge-fra-042".into(),
        region: "eu-central".into(),
        version: 123_456,
        capacity: 12_000.0,
        load: 8_431.5,
        healthy: true,
        active_weddings: 17,
        pools: (0..8)
            .map(|i| PoolFigures {
                pool: format!("pool-{i}"),
                capacity: 1500.0,
                load: 1053.9,
                class_load: [120.0, 300.5, 200.25, 400.0, 33.0],
            })
            .collect(),
    }
}

fn decode(bytes: &[u8]) -> NodeState {
    assert!(bytes.len() <= MAX_STATE_BYTES);
    let state: NodeState = postcard::from_bytes(bytes).unwrap();
    state.validate().unwrap();
    state
}

fn bench(c: &mut Criterion) {
    let record = state();
    let encoded = postcard::to_allocvec(&record).unwrap();
    println!("node-state record with 8 pools: {} bytes (limit {MAX_STATE_BYTES})", encoded.len());
    assert_eq!(decode(&encoded), record);
    c.bench_function("mesh_frame/node_state_encode_decode", |b| {
        b.iter(|| {
            let bytes = postcard::to_allocvec(black_box(&record)).unwrap();
            black_box(decode(black_box(&bytes)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
