//! Policy plugins in the daemon: the bundled plugins and a plugin directory loaded into the
//! wasmtime host (`wedsync-plugin-host`), each engine round handed to them as the WIT `Round`,
//! and their verdicts handed back to the engine as policy actions (applied before its clamps).
//!
//! Everything here runs on the decision thread, never on the async reactor; the plugin
//! directory is watched, verified and compiled on a thread of its own ([`reload`]). The
//! `wedsync-agent` binary compiles in a short-lived child process ([`compiler`]), so compiling
//! leaves no memory behind in the agent. The `plugin` subcommands (keygen, sign, verify,
//! inspect) are [`tools`].

pub mod compiler;
mod files;
pub mod reload;
pub mod tools;

pub use files::LoadFailure;
use files::{call_order, config_name, read_dir};

use crate::config::{PluginSettings, Settings};
use crate::fleet::FleetHandle;
use crate::telemetry::HostView;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use wedsync_core::engine::EngineSettings;
use wedsync_core::engine::policy::{PolicyAction, PolicyRound, PolicyVerdict, RoundPolicy, VetoKind};
use wedsync_core::engine::pool::PoolSpec;
use wedsync_core::{Timestamp, TrafficClass};
use wedsync_plugin_host::policy::{
    Adjustment, ClassFigures, Failover, MetricsSummary, PoolInfo, PoolRow, PoolStatus, PoolTable, RegionInfo,
    RegionView, Round, Setup, VetoTarget, Wedding,
};
use wedsync_plugin_host::{HostSettings, PluginHost, PluginSource, PluginState, PluginStatus, Trust, signing};

/// Why the plugin stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginStartError {
    /// The wasmtime host could not be made.
    #[error("plugin host: {0}")]
    Host(#[from] wedsync_plugin_host::HostError),
    /// A trusted key in the config does not decode.
    #[error("plugins.trusted_keys[{index}]: {source}")]
    TrustedKey {
        /// Which key.
        index: usize,
        /// Why.
        source: wedsync_plugin_host::SignError,
    },
}

/// One plugin as `/v1/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginReport {
    /// Name (from `describe`).
    pub name: String,
    /// Version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// SHA-256 of its component, hex.
    pub sha256: String,
    /// Where it came from (`bundled:<name>` or a path).
    pub origin: String,
    /// How it is trusted: `bundled`, `signed:<key id>`, `unsigned`, `bad-signature`.
    pub trust: String,
    /// `active`, `quarantined` or `failed`.
    pub state: &'static str,
    /// Calls made.
    pub calls: u64,
    /// Failures, by kind.
    pub failures: BTreeMap<&'static str, u64>,
    /// The latest failure, if any.
    pub last_failure: Option<String>,
    /// Median call time, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile call time, µs.
    pub p99_us: Option<f64>,
    /// Times it was quarantined.
    pub quarantines: u32,
}

/// What `/v1/plugins` serves.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginsSnapshot {
    /// Loaded plugins, in call order.
    pub plugins: Vec<PluginReport>,
    /// Plugins refused at load.
    pub refused: Vec<LoadFailure>,
    /// Cache-warm hints the plugins asked for in the last round.
    pub cache_hints: Vec<PluginCacheHint>,
    /// Decision rounds run since the start.
    pub rounds: u64,
    /// Rounds that took longer than the round interval (plugins included).
    pub late_rounds: u64,
    /// The slowest round so far, µs.
    pub slowest_round_us: f64,
    /// Round ticks that passed without a round (the previous one ran past them; they are
    /// skipped, not replayed).
    pub missed_rounds: u64,
    /// Reload passes applied (watch or `POST /v1/plugins/reload`) since the start.
    pub reloads: u64,
    /// What the latest reload pass did, file by file.
    pub last_reload: Option<reload::ReloadReport>,
}

/// A cache hint from a plugin.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PluginCacheHint {
    /// The plugin.
    pub plugin: String,
    /// Content key.
    pub key: String,
    /// How long the hint holds, seconds.
    pub ttl_seconds: u32,
}

/// Per-pool facts the WIT round needs that the engine's proposals do not carry.
#[derive(Debug, Clone)]
struct PoolMeta {
    tz: jiff::tz::TimeZone,
    region: u32,
}

/// The plugins and what turns engine rounds into plugin rounds.
pub struct PluginStage {
    host: PluginHost,
    pools: Vec<PoolMeta>,
    region_ids: BTreeMap<String, u32>,
    own_region: u32,
    own_tz: jiff::tz::TimeZone,
    host_view: Arc<RwLock<HostView>>,
    fleet: Option<Arc<FleetHandle>>,
    ingested_lines: prometheus_client::metrics::counter::Counter,
    last_lines: (u64, Option<Timestamp>),
    snapshot: Arc<RwLock<PluginsSnapshot>>,
    audit: Option<crate::audit::AuditHandle>,
    refused: Vec<LoadFailure>,
    failures_logged: u64,
    hints: Vec<PluginCacheHint>,
    rounds: u64,
    late_rounds: u64,
    missed_rounds: u64,
    slowest_round: std::time::Duration,
    published_at: Option<std::time::Instant>,
    /// Hot reload: the setup, order and directory bookkeeping (see [`reload`]).
    reload: reload::ReloadState,
}

impl std::fmt::Debug for PluginStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginStage").field("plugins", &self.host.names()).finish_non_exhaustive()
    }
}

/// The `Setup` handed to every plugin's `configure`, and the ids it assigns.
fn setup_for(settings: &Settings) -> (Setup, BTreeMap<String, u32>, Vec<PoolMeta>) {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, tz: &str| {
        if let Some(entry) = names.iter_mut().find(|(n, _)| n == name) {
            if entry.1.is_empty() {
                entry.1 = tz.to_owned();
            }
        } else {
            names.push((name.to_owned(), tz.to_owned()));
        }
    };
    let own_tz = settings.pools.iter().find(|p| p.region == settings.region).map_or("", |p| p.time_zone.as_str());
    add(&settings.region, own_tz);
    for pool in &settings.pools {
        add(&pool.region, &pool.time_zone);
        for placement in &pool.placements {
            add(&placement.region, "");
        }
    }
    let ids: BTreeMap<String, u32> =
        names.iter().enumerate().map(|(i, (name, _))| (name.clone(), u32::try_from(i).unwrap_or(u32::MAX))).collect();
    let id = |name: &str| ids.get(name).copied().unwrap_or(0);
    let pools = settings.pools.iter().map(|p| pool_info(p, &settings.engine, &id)).collect();
    let metas = settings
        .pools
        .iter()
        .map(|p| PoolMeta {
            tz: wedsync_core::engine::forecast::time_zone(&p.time_zone).unwrap_or(jiff::tz::TimeZone::UTC),
            region: id(&p.region),
        })
        .collect();
    let setup = Setup {
        node: settings.node_id.clone(),
        region: id(&settings.region),
        regions: names.into_iter().map(|(name, time_zone)| RegionInfo { name, time_zone }).collect(),
        pools,
        config: "{}".into(),
    };
    (setup, ids, metas)
}

fn pool_info(p: &PoolSpec, engine: &EngineSettings, id: &dyn Fn(&str) -> u32) -> PoolInfo {
    PoolInfo {
        name: p.name.clone(),
        region: id(&p.region),
        min: p.min,
        max: p.max,
        protected_floor: p.protected_floor,
        capacity_per_unit: p.capacity_per_unit,
        target_utilization: p.target_utilization,
        classes: p.classes.iter().map(|c| wit_class(*c)).collect(),
        placements: p.placements.iter().map(|pl| id(&pl.region)).collect(),
        spot_max_fraction: engine.spot_max_fraction,
    }
}

fn wit_class(class: TrafficClass) -> wedsync_plugin_host::policy::TrafficClass {
    use wedsync_plugin_host::policy::TrafficClass as W;
    match class {
        TrafficClass::WeddingCritical => W::WeddingCritical,
        TrafficClass::WeddingPlanning => W::WeddingPlanning,
        TrafficClass::Registration => W::Registration,
        TrafficClass::Media => W::Media,
        TrafficClass::Background => W::Background,
    }
}

fn core_class(class: wedsync_plugin_host::policy::TrafficClass) -> TrafficClass {
    use wedsync_plugin_host::policy::TrafficClass as W;
    match class {
        W::WeddingCritical => TrafficClass::WeddingCritical,
        W::WeddingPlanning => TrafficClass::WeddingPlanning,
        W::Registration => TrafficClass::Registration,
        W::Media => TrafficClass::Media,
        W::Background => TrafficClass::Background,
    }
}

fn figures(values: [f64; 5]) -> ClassFigures {
    ClassFigures {
        wedding_critical: values[0],
        wedding_planning: values[1],
        registration: values[2],
        media: values[3],
        background: values[4],
    }
}

/// `tz`'s offset from UTC at `wall_ms`, minutes (what the plugin needs for calendar time).
fn utc_offset_minutes(wall_ms: i64, tz: &jiff::tz::TimeZone) -> i32 {
    let ts = jiff::Timestamp::from_millisecond(wall_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    tz.to_offset(ts).seconds() / 60
}

fn trust_label(trust: &Trust) -> String {
    match trust {
        Trust::Signed { key_id, identity } => match identity {
            Some(_) => format!("signed:{key_id}"),
            None => format!("signed-v1:{key_id}"),
        },
        Trust::Pinned => "bundled".into(),
        Trust::Unsigned => "unsigned".into(),
        Trust::BadSignature { .. } => "bad-signature".into(),
    }
}

fn report(status: &PluginStatus) -> PluginReport {
    use wedsync_plugin_host::FailureKind as K;
    let failures = [
        ("trap", K::Trap),
        ("timeout", K::Timeout),
        ("memory", K::Memory),
        ("output_too_large", K::OutputTooLarge),
        ("bad_output", K::BadOutput),
        ("instantiate", K::Instantiate),
    ]
    .into_iter()
    .map(|(label, kind)| (label, status.failures.get(kind)))
    .collect();
    PluginReport {
        name: status.name.clone(),
        version: status.version.clone(),
        description: status.description.clone(),
        sha256: status.sha256.clone(),
        origin: status.origin.clone(),
        trust: trust_label(&status.trust),
        state: match status.state {
            PluginState::Active => "active",
            PluginState::Quarantined => "quarantined",
            PluginState::Failed => "failed",
        },
        calls: status.calls,
        failures,
        last_failure: status.last_failure.as_ref().map(|f| format!("{:?}: {}", f.kind, f.message)),
        p50_us: status.p50.map(|d| d.as_secs_f64() * 1e6),
        p99_us: status.p99.map(|d| d.as_secs_f64() * 1e6),
        quarantines: status.quarantines,
    }
}

impl PluginStage {
    /// Loads the configured plugins. A plugin that fails to load is logged and listed in
    /// `/v1/plugins` as refused; the agent runs on without it.
    pub fn start(
        settings: &Settings,
        plugins: &PluginSettings,
        state_dir: &Path,
        host_view: Arc<RwLock<HostView>>,
        fleet: Option<Arc<FleetHandle>>,
        ingested_lines: prometheus_client::metrics::counter::Counter,
        audit: Option<crate::audit::AuditHandle>,
    ) -> Result<PluginStage, PluginStartError> {
        let trusted_keys = plugins
            .trusted_keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                signing::decode_public_key(key).map_err(|source| PluginStartError::TrustedKey { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bundled: Vec<&wedsync_plugins::BundledPlugin> =
            plugins.bundled.iter().filter_map(|name| wedsync_plugins::find(name)).collect();
        let cache_dir = plugins.cache_dir.as_ref().map_or_else(|| state_dir.join("plugin-cache"), PathBuf::from);
        let host = PluginHost::new(HostSettings {
            call_budget: plugins.call_budget,
            trusted_keys,
            pinned_digests: bundled.iter().map(|b| signing::sha256(b.wasm)).collect(),
            allow_unsigned: plugins.allow_unsigned,
            allow_rollback: plugins.allow_rollback,
            external_compiler: compiler::external_compiler(plugins.memory_limit, &cache_dir),
            ..compiler::engine_settings(plugins.memory_limit, cache_dir)
        })?;
        let (setup, region_ids, pools) = setup_for(settings);
        let own_tz = settings
            .pools
            .iter()
            .find(|p| p.region == settings.region)
            .and_then(|p| wedsync_core::engine::forecast::time_zone(&p.time_zone).ok())
            .unwrap_or(jiff::tz::TimeZone::UTC);
        let reload_state = reload::ReloadState::new(setup.clone(), plugins.order.clone(), plugins.bundled.clone());
        let mut stage = PluginStage {
            host,
            pools,
            own_region: setup.region,
            region_ids,
            own_tz,
            host_view,
            fleet,
            ingested_lines,
            last_lines: (0, None),
            snapshot: Arc::new(RwLock::new(PluginsSnapshot::default())),
            audit,
            refused: Vec::new(),
            failures_logged: 0,
            hints: Vec::new(),
            rounds: 0,
            late_rounds: 0,
            missed_rounds: 0,
            slowest_round: std::time::Duration::ZERO,
            published_at: None,
            reload: reload_state,
        };
        let mut sources: Vec<(PluginSource, Option<(PathBuf, reload::ContentKey)>)> = bundled
            .iter()
            .map(|b| {
                (PluginSource { bytes: b.wasm.to_vec(), signature: None, origin: format!("bundled:{}", b.name) }, None)
            })
            .collect();
        if let Some(dir) = &plugins.dir {
            let (found, failures) = read_dir(Path::new(dir));
            sources.extend(found.into_iter().map(|(path, source)| {
                let key = reload::ContentKey::of(&source.bytes, source.signature.as_deref());
                (source, Some((path, key)))
            }));
            stage.refused.extend(failures);
        }
        for (source, file) in sources {
            let origin = source.origin.clone();
            let config = plugins.config.get(&config_name(&origin)).map_or("{}", String::as_str);
            if let Some((path, key)) = &file {
                // What the watch compares against: a file refused now is retried once it changes.
                stage.reload.seen(path.clone(), *key);
            }
            match stage.host.prepare(source, config).and_then(|prepared| stage.host.install(prepared, &setup)) {
                Ok(installed) => {
                    if let Some((path, key)) = file {
                        stage.reload.installed(path, key, &installed.name);
                    }
                    tracing::info!(
                        plugin = %installed.name,
                        version = %installed.version,
                        sha256 = %installed.sha256,
                        origin = %origin,
                        "plugin loaded"
                    );
                    stage.record(
                        "plugin.loaded",
                        serde_json::json!({
                            "plugin": installed.name,
                            "version": installed.version,
                            "sha256": installed.sha256,
                            "origin": origin,
                        }),
                    );
                }
                Err(e) => {
                    tracing::error!(origin = %origin, error = %e, "plugin refused");
                    stage.record("plugin.refused", serde_json::json!({ "origin": origin, "error": e.to_string() }));
                    stage.refused.push(LoadFailure { origin, error: e.to_string() });
                }
            }
        }
        stage.host.set_order(&call_order(&plugins.order, &plugins.bundled, stage.host.names()));
        stage.publish();
        Ok(stage)
    }

    fn record(&self, kind: &'static str, payload: serde_json::Value) {
        if let Some(audit) = &self.audit {
            // What happened to a plugin has happened; a refusal is counted and logged by the handle.
            let _ = audit.record(crate::clock::wall_ms(), kind, payload);
        }
    }

    /// What `/v1/plugins` serves (updated after every round).
    pub fn snapshot(&self) -> Arc<RwLock<PluginsSnapshot>> {
        self.snapshot.clone()
    }

    /// Counts round ticks that passed without a round (the decision loop skips them).
    pub fn rounds_missed(&mut self, missed: u64) {
        self.missed_rounds += missed;
    }

    /// Counts a finished decision round (`took`, against the round `interval`) and refreshes
    /// the snapshot about once a second.
    pub fn round_finished(&mut self, took: std::time::Duration, interval: std::time::Duration) {
        self.rounds += 1;
        if took > interval {
            self.late_rounds += 1;
            tracing::warn!(took_ms = took.as_secs_f64() * 1e3, "a decision round took longer than the round interval");
        }
        self.slowest_round = self.slowest_round.max(took);
        if self.published_at.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1)) {
            self.publish();
        }
    }

    fn publish(&mut self) {
        let snapshot = PluginsSnapshot {
            plugins: self.host.plugins().iter().map(report).collect(),
            refused: self.refused.clone(),
            cache_hints: self.hints.clone(),
            rounds: self.rounds,
            late_rounds: self.late_rounds,
            slowest_round_us: self.slowest_round.as_secs_f64() * 1e6,
            missed_rounds: self.missed_rounds,
            reloads: self.reload.count(),
            last_reload: self.reload.last().cloned(),
        };
        *self.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        self.published_at = Some(std::time::Instant::now());
    }

    fn region_id(&self, name: &str) -> u32 {
        self.region_ids.get(name).copied().unwrap_or(self.own_region)
    }

    fn metrics(&mut self, now: Timestamp) -> MetricsSummary {
        let (cpu, memory) = {
            let view = self.host_view.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            view.host.as_ref().map_or((0.0, 0.0), |h| {
                let memory = if h.memory.total_bytes > 0 {
                    1.0 - h.memory.available_bytes as f64 / h.memory.total_bytes as f64
                } else {
                    0.0
                };
                (h.cpu.busy, memory)
            })
        };
        let lines = self.ingested_lines.get();
        let rate = match self.last_lines.1 {
            Some(at) if now > at => {
                lines.saturating_sub(self.last_lines.0) as f64 / now.saturating_since(at).as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        };
        self.last_lines = (lines, Some(now));
        MetricsSummary { cpu_utilization: cpu as f32, memory_utilization: memory as f32, samples_per_second: rate }
    }

    fn fleet_view(&self) -> Option<RegionView> {
        let fleet = self.fleet.as_ref()?;
        let snapshot = fleet.snapshot.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let region = snapshot.view.regions.get(&snapshot.region)?;
        let mut class_load = [0.0; 5];
        for pool in region.pools.values() {
            for (total, load) in class_load.iter_mut().zip(pool.class_load) {
                *total += load;
            }
        }
        let unhealthy = snapshot.unhealthy.get(&snapshot.region).copied().unwrap_or_default();
        Some(RegionView {
            alive: u32::try_from(region.members).unwrap_or(u32::MAX),
            suspect: unhealthy.suspect,
            down: unhealthy.down,
            capacity: region.capacity,
            load: region.load,
            class_load: figures(class_load),
            active_weddings: region.active_weddings,
            coordinator: region.coordinator == snapshot.node,
        })
    }

    fn round(&mut self, input: &PolicyRound<'_>) -> Round {
        let mut pools = PoolTable::with_capacity(input.pools.len());
        // Pools mostly share a few time zones: one offset look-up per zone and round.
        let own_offset = utc_offset_minutes(input.wall_ms, &self.own_tz);
        let mut offsets: Vec<(&jiff::tz::TimeZone, i32)> = vec![(&self.own_tz, own_offset)];
        for p in input.pools {
            let tz = self.pools.get(p.pool).map_or(&self.own_tz, |m| &m.tz);
            let offset = match offsets.iter().find(|(zone, _)| *zone == tz) {
                Some((_, offset)) => *offset,
                None => {
                    let offset = utc_offset_minutes(input.wall_ms, tz);
                    offsets.push((tz, offset));
                    offset
                }
            };
            let mut status = PoolStatus::empty();
            if p.protected {
                status |= PoolStatus::PROTECTED;
            }
            if p.spike {
                status |= PoolStatus::SPIKE;
            }
            if p.stale {
                status |= PoolStatus::STALE;
            }
            pools.push(&PoolRow {
                serving: p.serving,
                target: p.from,
                load: p.load,
                demand: p.demand.0,
                status,
                utc_offset_minutes: offset,
                proposed: p.to,
                placement: self.region_id(&p.placement),
                admission: p.admission,
                spot_units: p.spot_units,
            });
        }
        let own = self.own_region;
        let weddings = input
            .weddings
            .iter()
            .filter(|w| self.region_ids.get(&w.region) == Some(&own))
            .map(|w| Wedding { guests: w.guests, start_unix_ms: w.start_unix_ms, end_unix_ms: w.end_unix_ms })
            .collect();
        let region_name = |id: u32| self.region_ids.iter().find(|(_, v)| **v == id).map(|(k, _)| k.clone());
        let failovers = input
            .pools
            .iter()
            .filter_map(|p| {
                let f = p.failover.as_ref()?;
                Some(Failover {
                    id: f.id.clone(),
                    failed_region: f.from_region.clone(),
                    target_region: region_name(self.pools.get(p.pool).map_or(own, |m| m.region)).unwrap_or_default(),
                    load: f.load,
                    pool: u32::try_from(p.pool).ok(),
                })
            })
            .collect();
        Round {
            epoch: input.epoch,
            unix_ms: input.wall_ms,
            utc_offset_minutes: own_offset,
            metrics: self.metrics(input.now),
            pools,
            weddings,
            fleet: self.fleet_view(),
            failovers,
        }
    }
}

impl RoundPolicy for PluginStage {
    fn review(&mut self, input: &PolicyRound<'_>) -> Vec<PolicyVerdict> {
        if input.pools.is_empty() || self.host.is_empty() {
            return Vec::new();
        }
        let round = self.round(input);
        let report = self.host.decide(input.now, &round);
        for (outcome, failure) in report.failures() {
            // Quarantine caps how often a plugin can fail; still, do not let one flood the log.
            self.failures_logged += 1;
            if self.failures_logged <= 100 || self.failures_logged.is_power_of_two() {
                if let Some(audit) = &self.audit {
                    // Counted and logged by the handle when refused.
                    let _ = audit.record(
                        input.wall_ms,
                        "plugin.failure",
                        serde_json::json!({
                            "plugin": outcome.name.as_ref(),
                            "sha256": outcome.sha256.as_ref(),
                            "kind": format!("{:?}", failure.kind),
                            "error": failure.message,
                        }),
                    );
                }
                tracing::warn!(
                    plugin = %outcome.name,
                    sha256 = %outcome.sha256,
                    kind = ?failure.kind,
                    error = %failure.message,
                    "plugin call failed; the round goes on without it"
                );
            }
        }
        let mut hints = Vec::new();
        let verdicts = report
            .verdicts()
            .map(|(outcome, verdict)| {
                let pool = |id: u32| usize::try_from(id).unwrap_or(usize::MAX);
                let mut actions: Vec<PolicyAction> = verdict
                    .adjustments
                    .iter()
                    .map(|a| match a {
                        Adjustment::RaiseTarget(u) => PolicyAction::RaiseTarget { pool: pool(u.pool), units: u.units },
                        Adjustment::LowerTarget(u) => PolicyAction::LowerTarget { pool: pool(u.pool), units: u.units },
                        Adjustment::PrescaleFloor(u) => {
                            PolicyAction::PrescaleFloor { pool: pool(u.pool), units: u.units }
                        }
                        Adjustment::Admit(c) => {
                            PolicyAction::Admit { pool: pool(c.pool), class: core_class(c.class), share: c.admit }
                        }
                        Adjustment::SpotCap(u) => PolicyAction::SpotCap { pool: pool(u.pool), units: u.units },
                    })
                    .collect();
                actions.extend(verdict.vetoes.iter().map(|v| {
                    let reason = v.reason.clone();
                    match &v.target {
                        VetoTarget::ScaleDown(p) => {
                            PolicyAction::Veto { pool: pool(*p), kind: VetoKind::ScaleDown, reason }
                        }
                        VetoTarget::ScaleUp(p) => {
                            PolicyAction::Veto { pool: pool(*p), kind: VetoKind::ScaleUp, reason }
                        }
                        VetoTarget::Placement(p) => {
                            PolicyAction::Veto { pool: pool(*p), kind: VetoKind::Placement, reason }
                        }
                        VetoTarget::Failover(id) => PolicyAction::VetoFailover { id: id.clone(), reason },
                    }
                }));
                hints.extend(verdict.cache_hints.iter().map(|h| PluginCacheHint {
                    plugin: outcome.name.to_string(),
                    key: h.key.clone(),
                    ttl_seconds: h.ttl_seconds,
                }));
                PolicyVerdict { policy: outcome.name.to_string(), version: outcome.sha256.to_string(), actions }
            })
            .collect();
        self.hints = hints;
        verdicts
    }
}

/// Hot reload: what the loader thread staged, installed between rounds.
impl PluginStage {
    /// Starts the `wedsync-plugin-loader` thread for `plugins.dir` (if set): it watches the
    /// directory every `plugins.watch_interval` and serves [`reload::ReloadHandle`] requests.
    pub fn start_loader(&mut self, plugins: &PluginSettings) -> std::io::Result<()> {
        let Some(dir) = &plugins.dir else { return Ok(()) };
        let loader = self.host.loader();
        self.reload.start_loader(loader, PathBuf::from(dir), plugins.watch_interval, plugins.config.clone())
    }

    /// Asks for reloads (`POST /v1/plugins/reload`); `None` without a plugin directory.
    pub fn reload_handle(&self) -> Option<reload::ReloadHandle> {
        self.reload.reload_handle()
    }

    /// Applies what the loader staged. The decision loop calls it between rounds, so a round
    /// always runs on one set of plugins from start to end.
    pub fn apply_reloads(&mut self) {
        loop {
            let pass = match &self.reload.loader {
                Some(loader) => match loader.passes.try_recv() {
                    Ok(pass) => pass,
                    Err(_) => return,
                },
                None => return,
            };
            self.apply(pass);
        }
    }

    fn apply(&mut self, pass: reload::Pass) {
        let reload::Pass { files, reply, listed } = pass;
        if let Some(dir) = listed {
            self.refused.retain(|r| r.origin != dir);
        }
        let mut outcomes = Vec::with_capacity(files.len());
        let mut changed = false;
        for staged in files {
            match staged {
                reload::Staged::Prepared { path, key, prepared } => {
                    let origin = prepared.origin().to_owned();
                    match self.host.install(*prepared, &self.reload.setup) {
                        Ok(installed) => {
                            changed = true;
                            self.reload
                                .applied
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .insert(path.clone(), key);
                            self.refused.retain(|r| r.origin != origin);
                            let before = self.reload.from_dir.insert(path, installed.name.clone());
                            let replaced = installed
                                .replaced
                                .clone()
                                .map(|(version, sha256)| reload::Replaced { version, sha256 });
                            let kind = match (&replaced, installed.rolled_back) {
                                (_, true) => "plugin.rollback",
                                (Some(_), false) => "plugin.reloaded",
                                (None, false) => "plugin.loaded",
                            };
                            if installed.rolled_back {
                                tracing::warn!(plugin = %installed.name, version = %installed.version, replaced = ?installed.replaced, "an OLDER version of a plugin was put back (plugins.allow_rollback = true)");
                            }
                            tracing::info!(
                                plugin = %installed.name,
                                version = %installed.version,
                                sha256 = %installed.sha256,
                                origin = %origin,
                                replaced = ?installed.replaced,
                                "plugin loaded by a reload"
                            );
                            self.record(
                                kind,
                                serde_json::json!({
                                    "plugin": installed.name,
                                    "version": installed.version,
                                    "sha256": installed.sha256,
                                    "origin": origin,
                                    "replaced": replaced,
                                }),
                            );
                            // The file now holds another plugin: the one it held goes.
                            if let Some(old) = before.filter(|old| *old != installed.name) {
                                self.remove_unless_provided(&old, &origin);
                            }
                            outcomes.push(reload::FileOutcome {
                                plugin: Some(installed.name),
                                version: Some(installed.version),
                                sha256: Some(installed.sha256),
                                outcome: if replaced.is_some() { "replaced" } else { "loaded" },
                                replaced,
                                ..reload::FileOutcome::new(origin, "loaded")
                            });
                        }
                        Err(e) => outcomes.push(self.refuse(origin, e.to_string())),
                    }
                }
                reload::Staged::Refused { origin, error } => outcomes.push(self.refuse(origin, error)),
                reload::Staged::Unchanged { origin } => outcomes.push(reload::FileOutcome::new(origin, "unchanged")),
                reload::Staged::Removed { path } => {
                    let origin = path.display().to_string();
                    self.reload.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&path);
                    self.refused.retain(|r| r.origin != origin);
                    let mut outcome = reload::FileOutcome::new(origin.clone(), "removed");
                    if let Some(name) = self.reload.from_dir.remove(&path) {
                        changed = true;
                        self.remove_unless_provided(&name, &origin);
                        outcome.plugin = Some(name);
                    }
                    outcomes.push(outcome);
                }
            }
        }
        if changed {
            let order = call_order(&self.reload.order, &self.reload.bundled, self.host.names());
            self.host.set_order(&order);
        }
        let report = reload::ReloadReport {
            at_unix_ms: crate::clock::wall_ms(),
            trigger: if reply.is_some() { "request" } else { "watch" },
            files: outcomes,
        };
        self.reload.count += 1;
        self.reload.last = Some(report.clone());
        self.publish();
        if let Some(reply) = reply {
            // The caller may have given up waiting; nothing to do then.
            let _ = reply.send(report);
        }
    }

    /// Removes plugin `name` (its file `origin` is gone or holds another plugin), unless
    /// another directory file still provides it.
    fn remove_unless_provided(&mut self, name: &str, origin: &str) {
        if self.reload.from_dir.values().any(|n| n == name) {
            return;
        }
        if self.host.remove(name) {
            tracing::info!(plugin = %name, origin = %origin, "plugin removed");
            self.record("plugin.removed", serde_json::json!({ "plugin": name, "origin": origin }));
        }
    }

    /// Records a refusal (the version loaded before, if any, stays).
    fn refuse(&mut self, origin: String, error: String) -> reload::FileOutcome {
        tracing::error!(origin = %origin, error = %error, "plugin refused; the loaded version (if any) stays");
        self.record("plugin.refused", serde_json::json!({ "origin": origin, "error": error }));
        self.refused.retain(|r| r.origin != origin);
        self.refused.push(LoadFailure { origin: origin.clone(), error: error.clone() });
        reload::FileOutcome { error: Some(error), ..reload::FileOutcome::new(origin, "refused") }
    }
}
