//! Plugin calls through the real host (goals: an empty plugin call p99 ≤ 500 ns; `decide` of a
//! bundled plugin with 20 pools and 50 regions p99 ≤ 10 µs; instantiation from the
//! `InstancePre` p99 ≤ 10 µs). Criterion reports means/medians; the p99 of single calls is
//! printed separately.
//!
//! `plugin_call/runtime_floor/*` measures wasmtime itself on the host's engine, with minimal
//! components written in WAT and no host around them: what entering a component costs, what
//! a call shaped like an empty round costs (a record of 13 empty lists in, a list out: the
//! canonical ABI calls the guest's `realloc` for the parameter area and for every list, even
//! an empty one), and instantiating a component with one memory. The goals above are read
//! against these.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "plugin_common/mod.rs"]
mod common;

use common::*;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, ComponentType, Linker, Lower};
use wasmtime::{Engine, Store};
use wedsync_core::Timestamp;
use wedsync_plugin_host::{HostSettings, PluginHost, PluginSource};
use wedsync_plugins::BUNDLED;

/// `f: func() -> u32`, nothing lowered or lifted.
const SCALAR_WAT: &str = r#"(component
  (core module $m (func (export "f") (result i32) i32.const 42))
  (core instance $i (instantiate $m))
  (func (export "f") (result u32) (canon lift (core func $i "f"))))"#;

/// `f: func(r: thirteen-lists) -> list<u32>`: the shape of an empty round (13 lists, passed
/// through a parameter area) and of a verdict (a list back). `realloc` hands out one fixed
/// area, enough for empty lists and the 104-byte parameter area.
const ROUND_SHAPE_WAT: &str = r#"(component
  (core module $m
    (memory (export "mem") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 16)
    (func (export "f") (param i32) (result i32) i32.const 512))
  (core instance $i (instantiate $m))
  (type $l (list u32))
  (type $record (record (field "a" $l) (field "b" $l) (field "c" $l) (field "d" $l) (field "e" $l)
    (field "f" $l) (field "g" $l) (field "h" $l) (field "i" $l) (field "j" $l) (field "k" $l)
    (field "l" $l) (field "m" $l)))
  (export $r "thirteen-lists" (type $record))
  (func (export "f") (param "r" $r) (result $l)
    (canon lift (core func $i "f") (memory (core memory $i "mem")) (realloc (core func $i "realloc")))))"#;

/// One core instance with a 1 MiB memory and a data segment.
const MEMORY_WAT: &str = r#"(component
  (core module $m (memory (export "mem") 16) (data (i32.const 0) "wedsync")
    (func (export "f") (result i32) i32.const 42))
  (core instance $i (instantiate $m))
  (func (export "f") (result u32) (canon lift (core func $i "f"))))"#;

/// The Rust side of `ROUND_SHAPE_WAT`'s record.
#[derive(ComponentType, Lower, Default)]
#[component(record)]
struct ThirteenLists {
    a: Vec<u32>,
    b: Vec<u32>,
    c: Vec<u32>,
    d: Vec<u32>,
    e: Vec<u32>,
    f: Vec<u32>,
    g: Vec<u32>,
    h: Vec<u32>,
    i: Vec<u32>,
    j: Vec<u32>,
    k: Vec<u32>,
    l: Vec<u32>,
    m: Vec<u32>,
}

/// wasmtime's own costs on the host's engine (see the crate docs).
fn runtime_floor(c: &mut Criterion, engine: &Engine) {
    let component = |wat: &str| Component::new(engine, wat::parse_str(wat).unwrap()).unwrap();
    let linker = Linker::<()>::new(engine);
    let mut store = Store::new(engine, ());
    let scalar = linker.instantiate(&mut store, &component(SCALAR_WAT)).unwrap();
    let scalar = scalar.get_typed_func::<(), (u32,)>(&mut store, "f").unwrap();
    let shaped = linker.instantiate(&mut store, &component(ROUND_SHAPE_WAT)).unwrap();
    let shaped = shaped.get_typed_func::<(&ThirteenLists,), (Vec<u32>,)>(&mut store, "f").unwrap();
    let empty = ThirteenLists::default();
    c.bench_function("plugin_call/runtime_floor/scalar_call", |b| {
        b.iter(|| {
            store.set_epoch_deadline(1);
            black_box(scalar.call(&mut store, ()).unwrap())
        })
    });
    report("plugin_call/runtime_floor/scalar_call", 200_000, "reference: wasmtime alone", || {
        let start = Instant::now();
        store.set_epoch_deadline(1);
        black_box(scalar.call(&mut store, ()).unwrap());
        start.elapsed()
    });
    c.bench_function("plugin_call/runtime_floor/empty_round_shape_call", |b| {
        b.iter(|| {
            store.set_epoch_deadline(1);
            black_box(shaped.call(&mut store, (&empty,)).unwrap())
        })
    });
    report("plugin_call/runtime_floor/empty_round_shape_call", 200_000, "reference: wasmtime alone", || {
        let start = Instant::now();
        store.set_epoch_deadline(1);
        black_box(shaped.call(&mut store, (&empty,)).unwrap());
        start.elapsed()
    });
    let memory = linker.instantiate_pre(&component(MEMORY_WAT)).unwrap();
    let mut keep = Vec::with_capacity(16);
    report("plugin_call/runtime_floor/instantiate_one_memory", 20_000, "reference: wasmtime alone", || {
        let start = Instant::now();
        let mut store = Store::new(engine, ());
        let instance = memory.instantiate(&mut store).unwrap();
        let took = start.elapsed();
        keep.push((store, instance));
        if keep.len() == 16 {
            keep.clear();
        }
        took
    });
}

fn host() -> PluginHost {
    PluginHost::new(HostSettings { allow_unsigned: true, max_instances: 64, ..HostSettings::default() }).unwrap()
}

fn source(wasm: &[u8], origin: &str) -> PluginSource {
    PluginSource { bytes: wasm.to_vec(), signature: None, origin: origin.into() }
}

fn bench(c: &mut Criterion) {
    let floor_host = host();
    runtime_floor(c, floor_host.engine());
    drop(floor_host);

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
