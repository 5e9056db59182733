//! Shared helpers for the plugin host's integration tests: a setup, rounds, hosts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use wedsync_core::Timestamp;
use wedsync_plugin_host::policy::*;
use wedsync_plugin_host::{HostSettings, PluginHost, PluginSource, Prepared};

/// A fixed Saturday afternoon in June 2026, London time.
pub const SATURDAY_MS: i64 = 1_781_967_600_000; // 2026-06-20T15:00:00Z

pub fn figures(v: f64) -> ClassFigures {
    ClassFigures { wedding_critical: v, wedding_planning: v, registration: v, media: v, background: v }
}

/// 2026-01-14T11:00:00Z, a Wednesday in January.
pub const WINTER_WEDNESDAY_MS: i64 = 1_768_388_400_000;

/// A row for `round`: serving 4 units, load 300 rps, demand 60 rps per class, the engine
/// proposing 5 (1 on spot) in `placement`, London's summer offset.
pub fn row(placement: u32) -> PoolRow {
    PoolRow {
        serving: 4,
        target: 4,
        load: 300.0,
        demand: [60.0; 5],
        status: PoolStatus::empty(),
        utc_offset_minutes: 60,
        proposed: 5,
        placement,
        admission: [1.0; 5],
        spot_units: 1,
    }
}

/// A setup with `pools` pools spread over `regions` regions (`eu-west` first).
pub fn setup(pools: usize, regions: usize) -> Setup {
    let mut region_list = vec![RegionInfo { name: "eu-west".into(), time_zone: "Europe/London".into() }];
    for i in 1..regions {
        region_list.push(RegionInfo { name: format!("region-{i}"), time_zone: "UTC".into() });
    }
    let pool_list = (0..pools)
        .map(|i| PoolInfo {
            name: format!("pool-{i}"),
            region: (i % regions.max(1)) as u32,
            min: 2,
            max: 100,
            protected_floor: 6,
            capacity_per_unit: 100.0,
            target_utilization: 0.7,
            classes: vec![TrafficClass::WeddingCritical, TrafficClass::Media, TrafficClass::Background],
            placements: vec![((i + 1) % regions.max(1)) as u32],
            spot_max_fraction: 0.5,
        })
        .collect();
    Setup { node: "node-1".into(), region: 0, regions: region_list, pools: pool_list, config: "{}".into() }
}

/// A round for `setup` at [`SATURDAY_MS`]: every pool as [`row`] (placed in its home region).
pub fn round(setup: &Setup, epoch: u64) -> Round {
    let mut pools = PoolTable::with_capacity(setup.pools.len());
    for p in &setup.pools {
        pools.push(&row(p.region));
    }
    Round {
        epoch,
        unix_ms: SATURDAY_MS,
        utc_offset_minutes: 60,
        metrics: MetricsSummary { cpu_utilization: 0.3, memory_utilization: 0.4, samples_per_second: 1000.0 },
        pools,
        weddings: Vec::new(),
        fleet: None,
        failovers: Vec::new(),
    }
}

/// Unsigned plugins allowed, and budgets generous enough that only the guest under test (never
/// a loaded CI machine) makes a call fail; tests of the budget itself set theirs.
pub fn settings() -> HostSettings {
    HostSettings {
        allow_unsigned: true,
        max_instances: 16,
        call_budget: Duration::from_secs(2),
        setup_budget: Duration::from_secs(2),
        // Shared by the tests (and processes) so each component is compiled once.
        cache_dir: Some(std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-host-cache")),
        ..HostSettings::default()
    }
}

/// Like [`settings`] with the default 5 ms `decide` budget.
pub fn tight_settings() -> HostSettings {
    HostSettings { call_budget: HostSettings::default().call_budget, ..settings() }
}

pub fn host() -> PluginHost {
    PluginHost::new(settings()).unwrap()
}

pub fn source(bytes: &[u8], origin: &str) -> PluginSource {
    PluginSource { bytes: bytes.to_vec(), signature: None, origin: origin.into() }
}

pub fn prepare(host: &PluginHost, bytes: &[u8], origin: &str) -> Prepared {
    host.prepare(source(bytes, origin), "{}").unwrap()
}

/// Installs `bytes` (unsigned) with `setup`; returns its name.
pub fn install(host: &mut PluginHost, bytes: &[u8], origin: &str, setup: &Setup) -> String {
    let p = host.prepare(source(bytes, origin), &setup.config).unwrap();
    host.install(p, setup).unwrap().name
}

pub fn at_secs(s: u64) -> Timestamp {
    Timestamp::from_millis(s * 1000)
}

/// Generous bound for "stopped within 2x its budget" on a loaded 2-core machine: the call
/// itself (which includes the setup of the call) must end within 2x the budget plus slack.
pub fn stop_bound(budget: Duration) -> Duration {
    budget * 2 + Duration::from_millis(if std::env::var_os("CI").is_some() { 40 } else { 20 })
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("wedsync_plugin=debug").try_init();
}
