//! The agent's configuration: what files and the environment hold ([`AgentConfig`]), and the
//! checked, typed form the agent runs on ([`Settings`]).
//!
//! Loading (file, environment) is the daemon's job; this module only defines the shape, the
//! defaults, and [`AgentConfig::validate`], which reports every bad field by its dotted path and
//! says why.

use crate::TrafficClass;
use crate::engine::EngineSettings;
use crate::engine::forecast::{SeasonalMultipliers, time_zone};
use crate::engine::pool::{Placement, PoolSpec, UnitCost};
use crate::store::StoreLimits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything a config file or environment may set. Defaults work on any Linux host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Identity of this agent.
    pub agent: AgentSection,
    /// The local HTTP API.
    pub api: ApiSection,
    /// StatsD/DogStatsD ingest over UDP.
    pub statsd: StatsdSection,
    /// Host metric collection.
    pub host: HostSection,
    /// The metric store's bounds.
    pub store: StoreSection,
    /// Logging.
    pub log: LogSection,
    /// Durable state.
    pub storage: StorageSection,
    /// The wedding calendar.
    pub calendar: CalendarSection,
    /// The audit trail.
    pub audit: AuditSection,
    /// Decision engine tuning.
    pub engine: EngineSection,
    /// The fleet mesh (gossip with peers over QUIC).
    pub mesh: MeshSection,
    /// WASM policy plugins.
    pub plugins: PluginsSection,
    /// The pools the engine decides for (`[[pools]]`); none by default.
    pub pools: Vec<PoolConfig>,
}

/// `[engine]`: decision engine tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Time between decision rounds.
    pub round_interval: String,
    /// Utilization within this fraction of the target causes no change.
    pub tolerance: f64,
    /// Scale-down waits until the desired capacity stayed lower for this long.
    pub scale_down_stabilization: String,
    /// At least this long between two scale-downs of one pool.
    pub scale_down_cooldown: String,
    /// Largest fraction of capacity one scale-down removes.
    pub max_scale_down_fraction: f64,
    /// Largest factor one scale-up multiplies capacity by.
    pub max_scale_up_factor: u32,
    /// Rounds without fresh demand before the engine holds (never scaling in blind).
    pub stale_rounds: u32,
    /// A wedding protects its region from this long before its start…
    pub wedding_lead: String,
    /// …until this long after its end.
    pub wedding_trail: String,
    /// Fraction of capacity kept for wedding-critical traffic while protected.
    pub wedding_critical_reserve: f64,
    /// Order in which classes are degraded under overload; wedding-critical never appears.
    pub degrade_order: Vec<String>,
    /// Reserved capacity as a fraction of a pool's typical load.
    pub reserved_baseline_fraction: f64,
    /// Largest fraction of a target placed on spot.
    pub spot_max_fraction: f64,
    /// How far ahead (beyond a pool's provisioning delay) the forecast pre-scales.
    pub forecast_horizon: String,
    /// Extra capacity on top of the forecast peak, as a fraction.
    pub forecast_headroom: f64,
    /// Seasonal multipliers (`[engine.seasons]`), in each pool's local time.
    pub seasons: SeasonalMultipliers,
}

impl Default for EngineSection {
    fn default() -> Self {
        let e = EngineSettings::default();
        let secs = |d: Duration| humantime::format_duration(d).to_string();
        EngineSection {
            round_interval: secs(e.round_interval),
            tolerance: e.tolerance,
            scale_down_stabilization: secs(e.scale_down_stabilization),
            scale_down_cooldown: secs(e.scale_down_cooldown),
            max_scale_down_fraction: e.max_scale_down_fraction,
            max_scale_up_factor: e.max_scale_up_factor,
            stale_rounds: e.stale_rounds,
            wedding_lead: secs(e.wedding_lead),
            wedding_trail: secs(e.wedding_trail),
            wedding_critical_reserve: e.wedding_critical_reserve,
            degrade_order: e.degrade_order.iter().map(|c| c.as_str().to_owned()).collect(),
            reserved_baseline_fraction: e.reserved_baseline_fraction,
            spot_max_fraction: e.spot_max_fraction,
            forecast_horizon: secs(e.forecast_horizon),
            forecast_headroom: e.forecast_headroom,
            seasons: e.seasons,
        }
    }
}

/// `[[pools]]`: one pool of interchangeable capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Unique name.
    pub name: String,
    /// Region it runs in; empty means `agent.region`.
    pub region: String,
    /// Fewest units.
    pub min: u32,
    /// Most units.
    pub max: u32,
    /// Requests/s one unit serves at full utilization.
    pub capacity_per_unit: f64,
    /// Requests/s of a class one unit serves, where it differs (`{ media = 20.0 }`).
    pub class_capacity: BTreeMap<String, f64>,
    /// Utilization to aim for, in (0, 1].
    pub target_utilization: f64,
    /// Traffic classes the pool serves (all by default).
    pub classes: Vec<String>,
    /// Time from asking for a unit to its serving traffic.
    pub provisioning_delay: String,
    /// Fewest units while a wedding is active in the region (at least `min`).
    pub protected_floor: u32,
    /// IANA time zone of the pool's region, e.g. `Europe/Dublin` (seasons are local).
    pub time_zone: String,
    /// Unit prices per hour.
    pub cost: UnitCost,
    /// Other regions the pool may run in (`[[pools.placements]]`), with their prices.
    pub placements: Vec<Placement>,
    /// `requests`: `demand_metric` is a StatsD counter whose rate, split by its `class:` tag, is
    /// the demand. `cpu`: `demand_metric` is a gauge of the pool's mean CPU utilization (0–1;
    /// `host.cpu.busy` is this host's), and the pool is sized to hold it at
    /// `target_utilization`, as `desired = ceil(current × utilization / target)`.
    pub demand_kind: String,
    /// The metric the demand is read from (see `demand_kind`).
    pub demand_metric: String,
    /// Tags a series must carry to count toward this pool (e.g. `["service:checkout"]`).
    pub demand_tags: Vec<String>,
    /// Class of demand that carries no (valid) `class:` tag.
    pub untagged_class: String,
    /// Where the pool's decisions go (`[pools.actuator]`); the `log` actuator by default.
    pub actuator: ActuatorConfig,
}

/// `[pools.actuator]`: how a pool's decisions are carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ActuatorConfig {
    /// Log each decision (always done, whatever else is configured).
    #[default]
    Log,
    /// Run a command with the decision as JSON on standard input.
    Exec {
        /// Program and arguments (no shell).
        command: Vec<String>,
        /// Longest a run may take before it is killed (e.g. `"10s"`).
        #[serde(default = "default_actuator_timeout")]
        timeout: String,
        /// Further attempts after a failure.
        #[serde(default = "default_actuator_retries")]
        retries: u32,
        /// Wait before the first retry; doubles each time (e.g. `"500ms"`).
        #[serde(default = "default_actuator_backoff")]
        backoff: String,
    },
    /// POST the decision as JSON, signed with HMAC-SHA256.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// Shared secret for the `X-Wedsync-Signature` header (at least 16 characters).
        secret: String,
        /// Longest a request may take (e.g. `"5s"`).
        #[serde(default = "default_actuator_timeout")]
        timeout: String,
        /// Further attempts after a failure.
        #[serde(default = "default_actuator_retries")]
        retries: u32,
        /// Wait before the first retry; doubles each time.
        #[serde(default = "default_actuator_backoff")]
        backoff: String,
    },
}

fn default_actuator_timeout() -> String {
    "10s".into()
}

fn default_actuator_retries() -> u32 {
    3
}

fn default_actuator_backoff() -> String {
    "500ms".into()
}

/// A checked actuator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ActuatorSpec {
    /// Log only.
    Log,
    /// Run a command.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
        /// Per-attempt timeout.
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        /// Further attempts after a failure.
        retries: u32,
        /// First retry delay (doubling).
        #[serde(with = "humantime_serde")]
        backoff: Duration,
    },
    /// POST to a URL.
    Webhook {
        /// The URL.
        url: String,
        /// HMAC secret (never serialized).
        #[serde(skip)]
        secret: String,
        /// Per-attempt timeout.
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        /// Further attempts after a failure.
        retries: u32,
        /// First retry delay (doubling).
        #[serde(with = "humantime_serde")]
        backoff: Duration,
    },
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: String::new(),
            region: String::new(),
            min: 1,
            max: 100,
            capacity_per_unit: 100.0,
            class_capacity: BTreeMap::new(),
            target_utilization: 0.7,
            classes: TrafficClass::ALL.iter().map(|c| c.as_str().to_owned()).collect(),
            provisioning_delay: "60s".into(),
            protected_floor: 0,
            time_zone: "UTC".into(),
            cost: UnitCost::default(),
            placements: Vec::new(),
            demand_kind: "requests".into(),
            demand_metric: "requests".into(),
            demand_tags: Vec::new(),
            untagged_class: TrafficClass::WeddingPlanning.as_str().into(),
            actuator: ActuatorConfig::Log,
        }
    }
}

/// Where a pool's demand comes from in the metric store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemandSource {
    /// Counter name.
    pub metric: String,
    /// Tags a series must carry.
    pub tags: Vec<String>,
    /// Class of untagged demand (all CPU demand is of this class).
    pub untagged_class: TrafficClass,
    /// Whether the metric is a CPU-utilization gauge rather than a request counter.
    pub cpu: bool,
}

/// `[agent]`: who this agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// Node id; empty means "the host name" (filled in by the daemon before validation).
    pub node_id: String,
    /// Region this node belongs to.
    pub region: String,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection { node_id: String::new(), region: "local".into() }
    }
}

/// `[api]`: the local HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Address to listen on; loopback unless you mean otherwise.
    pub listen: String,
    /// Bearer token that mutating calls must carry. Empty: mutating calls are refused.
    /// Prefer setting it from the environment (`WEDSYNC__API__TOKEN`).
    pub token: String,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection { listen: "127.0.0.1:9470".into(), token: String::new() }
    }
}

/// `[storage]`: where the agent keeps what must survive restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// State directory. Empty: `$STATE_DIRECTORY` (systemd), else
    /// `$XDG_STATE_HOME/wedsync-agent`, else `~/.local/state/wedsync-agent`.
    pub dir: String,
}

/// `[audit]`: the hash-chained audit trail of decisions and calendar changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// Whether to keep an audit trail.
    pub enabled: bool,
    /// The current log file. Empty: `audit.jsonl` in the state directory.
    pub path: String,
    /// When entries are fsynced: `"always"`, `"never"`, or an interval such as `"100ms"`.
    pub fsync: String,
    /// Rotate past this many bytes (0: never).
    pub max_file_bytes: u64,
    /// Rotated files kept (0: all).
    pub keep_files: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            enabled: true,
            path: String::new(),
            fsync: "always".into(),
            max_file_bytes: 16 * 1024 * 1024,
            keep_files: 0,
        }
    }
}

/// `[mesh]`: membership and state gossip with the rest of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshSection {
    /// Whether to join a fleet at all.
    pub enabled: bool,
    /// UDP address the QUIC endpoint listens on.
    pub listen: String,
    /// Address peers reach this node at, when it differs from `listen` (NAT, `0.0.0.0`).
    /// Empty: the bound listen address.
    pub advertise: String,
    /// Peers to join through (`IP:PORT`); empty makes a fleet of one until others join it.
    pub seeds: Vec<String>,
    /// Timing profile: `"lan"` (data centre, 500 ms probes) or `"wan"` (PoPs across the internet).
    pub profile: String,
    /// About how many nodes the fleet has; tunes gossip fan-out and timeouts.
    pub expected_size: u32,
    /// PEM file of the fleet CA. The three TLS files are set together or not at all; when none
    /// is set the agent makes a throwaway CA that only this node trusts (a fleet of one).
    pub ca_cert: String,
    /// PEM certificate of this node, issued by the fleet CA (`wedsync-agent cert issue`).
    pub cert: String,
    /// PEM private key of this node.
    pub key: String,
    /// How often this node republishes its state (pools, load, health) when it has changed.
    pub state_interval: String,
    /// Interval of the content-key sketches (`content:` StatsD tags) merged across the fleet.
    pub content_interval: String,
    /// Fleet-wide rate (per second) a content key must reach to become a cache-warm hint.
    pub viral_min_rate: f64,
    /// How much faster than its recent average a key must grow to become a hint.
    pub viral_growth: f64,
    /// Allows `POST /v1/mesh/faults` to cut this node off from peers (tests, game days).
    pub fault_injection: bool,
}

impl Default for MeshSection {
    fn default() -> Self {
        MeshSection {
            enabled: true,
            listen: "127.0.0.1:7946".into(),
            advertise: String::new(),
            seeds: Vec::new(),
            profile: "lan".into(),
            expected_size: 16,
            ca_cert: String::new(),
            cert: String::new(),
            key: String::new(),
            state_interval: "1s".into(),
            content_interval: "1s".into(),
            viral_min_rate: 50.0,
            viral_growth: 3.0,
            fault_injection: false,
        }
    }
}

/// The policy plugins bundled with the agent, in their default order.
pub const BUNDLED_PLUGINS: [&str; 4] = ["wedding-day-guard", "regional-seasons", "data-residency", "cost-guard"];

/// `[plugins]`: WASM policy plugins run on every decision round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsSection {
    /// Whether to run plugins at all.
    pub enabled: bool,
    /// Bundled plugins to load (compiled into the agent, trusted by their digest).
    pub bundled: Vec<String>,
    /// A directory of plugin components (`NAME.wasm`, signed by `NAME.wasm.sig`). Empty: none.
    pub dir: String,
    /// Plugin names in the order they run; plugins not listed run after, by name.
    pub order: Vec<String>,
    /// Public keys whose signatures are trusted (`wedsync-plugin-pub-v1 <hex>` lines, as
    /// `wedsync-agent plugin keygen` writes them).
    pub trusted_keys: Vec<String>,
    /// Load unsigned or badly signed plugins from `dir` (a warning at every load).
    pub allow_unsigned: bool,
    /// Most time one plugin call may take.
    pub call_budget: String,
    /// Most memory one plugin instance may use, MiB.
    pub memory_limit_mib: u32,
    /// Where compiled plugins are cached. Empty: `plugin-cache` in the state directory.
    pub cache_dir: String,
    /// Each plugin's own settings (`[plugins.config.<name>]`), handed to it as JSON.
    pub config: BTreeMap<String, toml::Table>,
    /// How often `dir` is checked for changed plugins (hot reload); `"0s"` turns the watch off
    /// (`POST /v1/plugins/reload` still works).
    pub watch_interval: String,
}

impl Default for PluginsSection {
    fn default() -> Self {
        PluginsSection {
            enabled: true,
            bundled: BUNDLED_PLUGINS.iter().map(|s| (*s).to_owned()).collect(),
            dir: String::new(),
            order: Vec::new(),
            trusted_keys: Vec::new(),
            allow_unsigned: false,
            call_budget: "5ms".into(),
            memory_limit_mib: 16,
            cache_dir: String::new(),
            config: BTreeMap::new(),
            watch_interval: "2s".into(),
        }
    }
}

/// The checked `[plugins]` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginSettings {
    /// Bundled plugins to load.
    pub bundled: Vec<String>,
    /// Directory of plugin components, when set.
    pub dir: Option<String>,
    /// Call order (by name).
    pub order: Vec<String>,
    /// Trusted public keys, as configured.
    pub trusted_keys: Vec<String>,
    /// Whether unsigned plugins load.
    pub allow_unsigned: bool,
    /// Per-call time budget.
    #[serde(with = "humantime_serde")]
    pub call_budget: Duration,
    /// Per-instance memory cap, bytes.
    pub memory_limit: usize,
    /// Compiled cache directory, when set (else the daemon uses its state directory).
    pub cache_dir: Option<String>,
    /// Each plugin's own settings, as JSON text.
    pub config: BTreeMap<String, String>,
    /// How often the plugin directory is checked for changes; `None`: not watched.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Option<Duration>,
}

/// Gossip timing profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshProfile {
    /// Low-latency networks.
    Lan,
    /// Wide-area links.
    Wan,
}

/// Where the node's mesh certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshTlsFiles {
    /// Fleet CA certificate (PEM).
    pub ca_cert: String,
    /// This node's certificate (PEM).
    pub cert: String,
    /// This node's private key (PEM).
    pub key: String,
}

/// The checked `[mesh]` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshSettings {
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Address advertised to peers, when set.
    pub advertise: Option<SocketAddr>,
    /// Seed peers.
    pub seeds: Vec<SocketAddr>,
    /// Timing profile.
    pub profile: MeshProfile,
    /// Expected fleet size.
    pub expected_size: u32,
    /// Certificates; `None` means a throwaway single-node CA.
    pub tls: Option<MeshTlsFiles>,
    /// State republish interval.
    #[serde(with = "humantime_serde")]
    pub state_interval: Duration,
    /// Content sketch interval.
    #[serde(with = "humantime_serde")]
    pub content_interval: Duration,
    /// Fleet-wide rate a content key must reach to become a hint.
    pub viral_min_rate: f64,
    /// Growth factor a content key must show to become a hint.
    pub viral_growth: f64,
    /// Whether the fault-injection endpoint is enabled.
    pub fault_injection: bool,
}

/// `[calendar]`: the wedding calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarSection {
    /// A TOML file of `[[weddings]]` loaded (and stored) at start. Empty: none.
    pub file: String,
}

/// `[statsd]`: UDP ingest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsdSection {
    /// Whether to listen for StatsD at all.
    pub enabled: bool,
    /// UDP address to listen on.
    pub listen: String,
    /// Kernel receive buffer to ask for, in bytes (absorbs bursts while the agent is busy).
    pub receive_buffer_bytes: u64,
    /// Most rejected lines logged per second; the rest are only counted.
    pub log_rejects_per_second: u32,
}

impl Default for StatsdSection {
    fn default() -> Self {
        StatsdSection {
            enabled: true,
            listen: "127.0.0.1:8125".into(),
            receive_buffer_bytes: 8 * 1024 * 1024,
            log_rejects_per_second: 5,
        }
    }
}

/// `[host]`: host metric collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSection {
    /// How often to sample CPU, memory, load, network, disk and pressure (e.g. `"250ms"`).
    pub interval: String,
    /// How often to sample the agent's own process (CPU, RSS).
    pub process_interval: String,
    /// Where procfs is mounted.
    pub procfs: String,
}

impl Default for HostSection {
    fn default() -> Self {
        HostSection { interval: "250ms".into(), process_interval: "5s".into(), procfs: "/proc".into() }
    }
}

/// `[store]`: bounds of the metric store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Most application series held at once; new ones past it are refused and counted.
    pub max_series: u64,
    /// Most timer/histogram/distribution series held at once.
    pub max_histogram_series: u64,
    /// Most distinct members tracked per set per 10 s window.
    pub max_set_members: u64,
    /// A series not written for this long is dropped (e.g. `"10m"`).
    pub series_ttl: String,
    /// Half-life of the moving averages (e.g. `"5s"`).
    pub ewma_half_life: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        let limits = StoreLimits::default();
        StoreSection {
            max_series: limits.max_series as u64,
            max_histogram_series: limits.max_histogram_series as u64,
            max_set_members: limits.max_set_members as u64,
            series_ttl: "10m".into(),
            ewma_half_life: "5s".into(),
        }
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` (human-readable) or `json` (one object per line).
    pub format: String,
    /// A tracing filter: a level (`info`) or directives (`info,wedsync_agent=debug`).
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { format: "text".into(), level: "info".into() }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The checked configuration the agent runs on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Node id.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// API listen address.
    pub api_listen: SocketAddr,
    /// StatsD listen address, when enabled.
    pub statsd_listen: Option<SocketAddr>,
    /// Kernel receive buffer for StatsD, in bytes.
    pub statsd_receive_buffer: usize,
    /// Most rejected lines logged per second.
    pub statsd_log_rejects_per_second: u32,
    /// Host sampling interval.
    #[serde(with = "humantime_serde")]
    pub host_interval: Duration,
    /// Own-process sampling interval.
    #[serde(with = "humantime_serde")]
    pub process_interval: Duration,
    /// Where procfs is mounted.
    pub procfs: String,
    /// Metric store limits.
    #[serde(skip)]
    pub store_limits: StoreLimits,
    /// Series idle this long are dropped.
    #[serde(with = "humantime_serde")]
    pub series_ttl: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Bearer token for mutating API calls (never printed).
    #[serde(skip)]
    pub api_token: Option<String>,
    /// State directory as configured (empty: resolved by the daemon).
    pub storage_dir: String,
    /// Calendar file to load at start.
    pub calendar_file: Option<String>,
    /// The audit trail as configured (the daemon parses `fsync` and resolves the path).
    pub audit: AuditSection,
    /// Decision engine tuning.
    pub engine: EngineSettings,
    /// Pools, in configuration order.
    pub pools: Vec<PoolSpec>,
    /// Where each pool's demand comes from (same order as `pools`).
    pub demand: Vec<DemandSource>,
    /// Each pool's actuator (same order as `pools`).
    pub actuators: Vec<ActuatorSpec>,
    /// The fleet mesh, when enabled.
    pub mesh: Option<MeshSettings>,
    /// Policy plugins, when enabled.
    pub plugins: Option<PluginSettings>,
}

/// One bad field: its dotted path and why it is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `api.listen`.
    pub field: String,
    /// Why, quoting the bad value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every bad field found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} error{}):", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// Whether `field` is among the bad ones.
    pub fn names(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

struct Checker(Vec<FieldError>);

impl Checker {
    fn fail(&mut self, field: impl Into<String>, message: String) {
        self.0.push(FieldError { field: field.into(), message });
    }

    fn socket_addr(&mut self, field: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.fail(
                    field,
                    format!("{value:?} is not a socket address (expected IP:PORT, e.g. \"127.0.0.1:8125\")"),
                );
                None
            }
        }
    }

    fn duration(&mut self, field: &str, value: &str, min: Duration, max: Duration) -> Duration {
        match humantime::parse_duration(value) {
            Ok(d) if d >= min && d <= max => d,
            Ok(_) => {
                self.fail(
                    field,
                    format!(
                        "{value:?} is out of range (must be from {} to {})",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                min
            }
            Err(e) => {
                self.fail(field, format!("{value:?} is not a duration ({e}; e.g. \"250ms\", \"5s\", \"10m\")"));
                min
            }
        }
    }

    fn range(&mut self, field: &str, value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.fail(field, format!("{value} is out of range (must be from {min} to {max})"));
        }
        value.clamp(min, max)
    }

    fn identifier(&mut self, field: &str, value: &str, max_len: usize) {
        if value.is_empty() || value.len() > max_len {
            self.fail(field, format!("{value:?} must be 1 to {max_len} characters"));
        } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            self.fail(field, format!("{value:?} may hold only letters, digits, '-', '_' and '.'"));
        }
    }
}

impl AgentConfig {
    /// Checks every field and returns the typed settings, or every error found.
    pub fn validate(&self) -> Result<Settings, ConfigErrors> {
        let mut c = Checker(Vec::new());
        c.identifier("agent.node_id", &self.agent.node_id, 64);
        c.identifier("agent.region", &self.agent.region, 32);
        let api_listen = c.socket_addr("api.listen", &self.api.listen);
        let statsd_listen = c.socket_addr("statsd.listen", &self.statsd.listen);
        let receive_buffer = c.range("statsd.receive_buffer_bytes", self.statsd.receive_buffer_bytes, 65_536, 1 << 30);
        let rejects =
            c.range("statsd.log_rejects_per_second", u64::from(self.statsd.log_rejects_per_second), 0, 10_000);
        let host_interval =
            c.duration("host.interval", &self.host.interval, Duration::from_millis(10), Duration::from_secs(60));
        let process_interval = c.duration(
            "host.process_interval",
            &self.host.process_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        if self.host.procfs.is_empty() || !self.host.procfs.starts_with('/') {
            c.fail("host.procfs", format!("{:?} is not an absolute path", self.host.procfs));
        }
        let max_series = c.range("store.max_series", self.store.max_series, 1, 1_000_000);
        let max_histogram_series = c.range("store.max_histogram_series", self.store.max_histogram_series, 0, 100_000);
        let max_set_members = c.range("store.max_set_members", self.store.max_set_members, 1, 1_000_000);
        let series_ttl = c.duration(
            "store.series_ttl",
            &self.store.series_ttl,
            Duration::from_secs(10),
            Duration::from_secs(7 * 86_400),
        );
        let ewma_half_life = c.duration(
            "store.ewma_half_life",
            &self.store.ewma_half_life,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        let log_format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                c.fail("log.format", format!("{other:?} is not a log format (expected \"text\" or \"json\")"));
                LogFormat::Text
            }
        };
        if self.log.level.trim().is_empty() {
            c.fail("log.level", "is empty (expected a level such as \"info\" or tracing directives)".into());
        }
        if !self.api.token.is_empty() && (self.api.token.len() < 16 || self.api.token.chars().any(char::is_whitespace))
        {
            c.fail(
                "api.token",
                "must be at least 16 characters without spaces (or empty to refuse mutating calls)".into(),
            );
        }
        if !self.audit.path.is_empty() && !self.audit.path.starts_with('/') {
            c.fail("audit.path", format!("{:?} is not an absolute path", self.audit.path));
        }
        if !self.storage.dir.is_empty() && !self.storage.dir.starts_with('/') {
            c.fail("storage.dir", format!("{:?} is not an absolute path", self.storage.dir));
        }
        let engine = self.validate_engine(&mut c);
        let (pools, demand, actuators) = self.validate_pools(&mut c);
        let mesh = self.validate_mesh(&mut c);
        let plugins = self.validate_plugins(&mut c);
        match (api_listen, statsd_listen, c.0.is_empty()) {
            (Some(api_listen), Some(statsd_listen), true) => Ok(Settings {
                node_id: self.agent.node_id.clone(),
                region: self.agent.region.clone(),
                api_listen,
                statsd_listen: self.statsd.enabled.then_some(statsd_listen),
                statsd_receive_buffer: usize::try_from(receive_buffer).unwrap_or(usize::MAX),
                statsd_log_rejects_per_second: u32::try_from(rejects).unwrap_or(u32::MAX),
                host_interval,
                process_interval,
                procfs: self.host.procfs.clone(),
                store_limits: StoreLimits {
                    max_series: usize::try_from(max_series).unwrap_or(usize::MAX),
                    // The histogram cap can never exceed the overall cap.
                    max_histogram_series: usize::try_from(max_histogram_series.min(max_series)).unwrap_or(usize::MAX),
                    max_set_members: usize::try_from(max_set_members).unwrap_or(usize::MAX),
                    ewma_half_life,
                },
                series_ttl,
                log_format,
                log_level: self.log.level.clone(),
                api_token: (!self.api.token.is_empty()).then(|| self.api.token.clone()),
                storage_dir: self.storage.dir.clone(),
                calendar_file: (!self.calendar.file.is_empty()).then(|| self.calendar.file.clone()),
                audit: self.audit.clone(),
                engine,
                pools,
                demand,
                actuators,
                mesh,
                plugins,
            }),
            _ => Err(ConfigErrors(c.0)),
        }
    }
}

impl AgentConfig {
    fn validate_plugins(&self, c: &mut Checker) -> Option<PluginSettings> {
        let p = &self.plugins;
        if !p.enabled {
            return None;
        }
        for (i, name) in p.bundled.iter().enumerate() {
            if !BUNDLED_PLUGINS.contains(&name.as_str()) {
                c.fail(
                    format!("plugins.bundled[{i}]"),
                    format!("{name:?} is not a bundled plugin (expected one of {})", BUNDLED_PLUGINS.join(", ")),
                );
            }
        }
        if !p.dir.is_empty() && !p.dir.starts_with('/') {
            c.fail("plugins.dir", format!("{:?} is not an absolute path", p.dir));
        }
        if !p.cache_dir.is_empty() && !p.cache_dir.starts_with('/') {
            c.fail("plugins.cache_dir", format!("{:?} is not an absolute path", p.cache_dir));
        }
        for (i, key) in p.trusted_keys.iter().enumerate() {
            let hex = key.trim().strip_prefix("wedsync-plugin-pub-v1").unwrap_or(key).trim();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                c.fail(
                    format!("plugins.trusted_keys[{i}]"),
                    format!("{key:?} is not a public key (expected \"wedsync-plugin-pub-v1 <64 hex digits>\")"),
                );
            }
        }
        let call_budget =
            c.duration("plugins.call_budget", &p.call_budget, Duration::from_millis(1), Duration::from_secs(1));
        let memory = c.range("plugins.memory_limit_mib", u64::from(p.memory_limit_mib), 1, 4096);
        // "0s" is the one value below the range: it turns the watch off.
        let watch_interval = match humantime::parse_duration(&p.watch_interval) {
            Ok(d) if d.is_zero() => None,
            _ => Some(c.duration(
                "plugins.watch_interval",
                &p.watch_interval,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )),
        };
        let mut config = BTreeMap::new();
        for (name, table) in &p.config {
            match serde_json::to_string(table) {
                Ok(json) => {
                    config.insert(name.clone(), json);
                }
                Err(e) => c.fail(format!("plugins.config.{name}"), format!("cannot be handed over as JSON: {e}")),
            }
        }
        Some(PluginSettings {
            bundled: p.bundled.clone(),
            dir: (!p.dir.is_empty()).then(|| p.dir.clone()),
            order: p.order.clone(),
            trusted_keys: p.trusted_keys.clone(),
            allow_unsigned: p.allow_unsigned,
            call_budget,
            memory_limit: usize::try_from(memory << 20).unwrap_or(usize::MAX),
            cache_dir: (!p.cache_dir.is_empty()).then(|| p.cache_dir.clone()),
            config,
            watch_interval,
        })
    }

    fn validate_mesh(&self, c: &mut Checker) -> Option<MeshSettings> {
        let m = &self.mesh;
        if !m.enabled {
            return None;
        }
        let listen = c.socket_addr("mesh.listen", &m.listen);
        let advertise = if m.advertise.is_empty() {
            None
        } else {
            let addr = c.socket_addr("mesh.advertise", &m.advertise);
            if addr.is_some_and(|a| a.ip().is_unspecified() || a.port() == 0) {
                c.fail("mesh.advertise", format!("{:?} must be a reachable IP and a non-zero port", m.advertise));
            }
            addr
        };
        let seeds: Vec<SocketAddr> = m
            .seeds
            .iter()
            .enumerate()
            .filter_map(|(i, seed)| c.socket_addr(&format!("mesh.seeds[{i}]"), seed))
            .collect();
        let profile = match m.profile.as_str() {
            "lan" => MeshProfile::Lan,
            "wan" => MeshProfile::Wan,
            other => {
                c.fail("mesh.profile", format!("{other:?} is not a profile (expected \"lan\" or \"wan\")"));
                MeshProfile::Lan
            }
        };
        let expected_size = c.range("mesh.expected_size", u64::from(m.expected_size), 1, 100_000);
        let files = [("mesh.ca_cert", &m.ca_cert), ("mesh.cert", &m.cert), ("mesh.key", &m.key)];
        let set = files.iter().filter(|(_, v)| !v.is_empty()).count();
        if set != 0 && set != files.len() {
            for (field, value) in files {
                if value.is_empty() {
                    c.fail(field, "is empty, but the other mesh TLS files are set (set all three or none)".into());
                }
            }
        }
        let tls = (set == files.len()).then(|| MeshTlsFiles {
            ca_cert: m.ca_cert.clone(),
            cert: m.cert.clone(),
            key: m.key.clone(),
        });
        let state_interval =
            c.duration("mesh.state_interval", &m.state_interval, Duration::from_millis(100), Duration::from_secs(300));
        let content_interval = c.duration(
            "mesh.content_interval",
            &m.content_interval,
            Duration::from_millis(250),
            Duration::from_secs(60),
        );
        if !(m.viral_min_rate.is_finite() && m.viral_min_rate > 0.0) {
            c.fail("mesh.viral_min_rate", format!("{} must be a positive number", m.viral_min_rate));
        }
        if !(m.viral_growth.is_finite() && m.viral_growth >= 1.0) {
            c.fail("mesh.viral_growth", format!("{} must be a number of at least 1", m.viral_growth));
        }
        Some(MeshSettings {
            listen: listen?,
            advertise,
            seeds,
            profile,
            expected_size: u32::try_from(expected_size).unwrap_or(u32::MAX),
            tls,
            state_interval,
            content_interval,
            viral_min_rate: m.viral_min_rate,
            viral_growth: m.viral_growth,
            fault_injection: m.fault_injection,
        })
    }

    fn validate_engine(&self, c: &mut Checker) -> EngineSettings {
        let e = &self.engine;
        let defaults = EngineSettings::default();
        let fraction = |c: &mut Checker, field: &str, value: f64, min: f64, max: f64| {
            if !(value.is_finite() && value >= min && value <= max) {
                c.fail(field, format!("{value} is out of range (must be from {min} to {max})"));
            }
            value.clamp(min, max)
        };
        let mut degrade_order = Vec::new();
        for (i, name) in e.degrade_order.iter().enumerate() {
            match name.parse::<TrafficClass>() {
                Ok(TrafficClass::WeddingCritical) => {
                    c.fail(format!("engine.degrade_order[{i}]"), "wedding-critical is never degraded".into())
                }
                Ok(class) if degrade_order.contains(&class) => {
                    c.fail(format!("engine.degrade_order[{i}]"), format!("{name:?} is listed twice"))
                }
                Ok(class) => degrade_order.push(class),
                Err(err) => c.fail(format!("engine.degrade_order[{i}]"), err.to_string()),
            }
        }
        if degrade_order.len() != 4 && c.0.iter().all(|f| !f.field.starts_with("engine.degrade_order")) {
            c.fail("engine.degrade_order", "must list each class but wedding-critical exactly once".into());
        }
        EngineSettings {
            round_interval: c.duration(
                "engine.round_interval",
                &e.round_interval,
                Duration::from_millis(10),
                Duration::from_secs(10),
            ),
            tolerance: fraction(c, "engine.tolerance", e.tolerance, 0.0, 0.5),
            scale_down_stabilization: c.duration(
                "engine.scale_down_stabilization",
                &e.scale_down_stabilization,
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
            scale_down_cooldown: c.duration(
                "engine.scale_down_cooldown",
                &e.scale_down_cooldown,
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
            max_scale_down_fraction: fraction(
                c,
                "engine.max_scale_down_fraction",
                e.max_scale_down_fraction,
                0.01,
                1.0,
            ),
            max_scale_up_factor: c.range("engine.max_scale_up_factor", u64::from(e.max_scale_up_factor), 2, 100) as u32,
            stale_rounds: c.range("engine.stale_rounds", u64::from(e.stale_rounds), 1, 1000) as u32,
            wedding_lead: c.duration(
                "engine.wedding_lead",
                &e.wedding_lead,
                Duration::ZERO,
                Duration::from_secs(7 * 86_400),
            ),
            wedding_trail: c.duration(
                "engine.wedding_trail",
                &e.wedding_trail,
                Duration::ZERO,
                Duration::from_secs(7 * 86_400),
            ),
            wedding_critical_reserve: fraction(
                c,
                "engine.wedding_critical_reserve",
                e.wedding_critical_reserve,
                0.0,
                0.9,
            ),
            degrade_order: if degrade_order.len() == 4 { degrade_order } else { defaults.degrade_order },
            reserved_baseline_fraction: fraction(
                c,
                "engine.reserved_baseline_fraction",
                e.reserved_baseline_fraction,
                0.0,
                1.0,
            ),
            spot_max_fraction: fraction(c, "engine.spot_max_fraction", e.spot_max_fraction, 0.0, 1.0),
            forecast_horizon: c.duration(
                "engine.forecast_horizon",
                &e.forecast_horizon,
                Duration::ZERO,
                Duration::from_secs(7 * 86_400),
            ),
            forecast_headroom: fraction(c, "engine.forecast_headroom", e.forecast_headroom, 0.0, 10.0),
            seasons: match e.seasons.validate() {
                Ok(()) => e.seasons.clone(),
                Err(reason) => {
                    c.fail("engine.seasons", reason.to_string());
                    defaults.seasons.clone()
                }
            },
            detector: defaults.detector,
        }
    }

    fn validate_pools(&self, c: &mut Checker) -> (Vec<PoolSpec>, Vec<DemandSource>, Vec<ActuatorSpec>) {
        let mut pools = Vec::new();
        let mut demand = Vec::new();
        let mut actuators = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            let at = |field: &str| format!("pools[{i}].{field}");
            c.identifier(&at("name"), &p.name, 64);
            if self.pools[..i].iter().any(|q| q.name == p.name) {
                c.fail(at("name"), format!("{:?} is used by another pool", p.name));
            }
            let region = if p.region.is_empty() { self.agent.region.clone() } else { p.region.clone() };
            c.identifier(&at("region"), &region, 32);
            if p.max == 0 || p.min > p.max {
                c.fail(at("max"), format!("{} must be at least 1 and at least min ({})", p.max, p.min));
            }
            if !(p.capacity_per_unit.is_finite() && p.capacity_per_unit > 0.0) {
                c.fail(at("capacity_per_unit"), format!("{} must be a positive number", p.capacity_per_unit));
            }
            if !(p.target_utilization > 0.0 && p.target_utilization <= 1.0) {
                c.fail(at("target_utilization"), format!("{} must be in (0, 1]", p.target_utilization));
            }
            let mut classes = Vec::new();
            for (j, name) in p.classes.iter().enumerate() {
                match name.parse::<TrafficClass>() {
                    Ok(class) if !classes.contains(&class) => classes.push(class),
                    Ok(_) => c.fail(format!("pools[{i}].classes[{j}]"), format!("{name:?} is listed twice")),
                    Err(err) => c.fail(format!("pools[{i}].classes[{j}]"), err.to_string()),
                }
            }
            if p.classes.is_empty() {
                c.fail(at("classes"), "is empty: a pool serves at least one class".into());
            }
            let mut class_capacity = [p.capacity_per_unit; 5];
            for (name, rps) in &p.class_capacity {
                match name.parse::<TrafficClass>() {
                    Ok(class) if rps.is_finite() && *rps > 0.0 => {
                        if let Some(i) = TrafficClass::ALL.iter().position(|c| *c == class) {
                            class_capacity[i] = *rps;
                        }
                    }
                    Ok(_) => {
                        c.fail(format!("pools[{i}].class_capacity.{name}"), format!("{rps} must be a positive number"))
                    }
                    Err(err) => c.fail(format!("pools[{i}].class_capacity.{name}"), err.to_string()),
                }
            }
            let provisioning_delay =
                c.duration(&at("provisioning_delay"), &p.provisioning_delay, Duration::ZERO, Duration::from_secs(3600));
            if p.protected_floor > p.max {
                c.fail(at("protected_floor"), format!("{} is above max ({})", p.protected_floor, p.max));
            }
            for (name, price) in [("reserved", p.cost.reserved), ("on_demand", p.cost.on_demand), ("spot", p.cost.spot)]
            {
                if !(price.is_finite() && price >= 0.0) {
                    c.fail(format!("pools[{i}].cost.{name}"), format!("{price} must be a non-negative number"));
                }
            }
            for (j, placement) in p.placements.iter().enumerate() {
                c.identifier(&format!("pools[{i}].placements[{j}].region"), &placement.region, 32);
                let cost = &placement.cost;
                if [cost.reserved, cost.on_demand, cost.spot].iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                    c.fail(format!("pools[{i}].placements[{j}].cost"), "prices must be non-negative numbers".into());
                }
            }
            if let Err(err) = time_zone(&p.time_zone) {
                c.fail(at("time_zone"), err.to_string());
            }
            if p.demand_metric.is_empty() {
                c.fail(at("demand_metric"), "is empty".into());
            }
            let untagged_class = match p.untagged_class.parse::<TrafficClass>() {
                Ok(class) => class,
                Err(err) => {
                    c.fail(at("untagged_class"), err.to_string());
                    TrafficClass::WeddingPlanning
                }
            };
            pools.push(PoolSpec {
                name: p.name.clone(),
                region,
                min: p.min,
                max: p.max.max(p.min),
                capacity_per_unit: p.capacity_per_unit,
                class_capacity,
                target_utilization: p.target_utilization,
                classes,
                provisioning_delay,
                protected_floor: p.protected_floor.max(p.min),
                time_zone: p.time_zone.clone(),
                cost: p.cost,
                placements: p.placements.clone(),
            });
            let cpu = match p.demand_kind.as_str() {
                "requests" => false,
                "cpu" => true,
                other => {
                    c.fail(
                        at("demand_kind"),
                        format!("{other:?} is not a demand kind (expected \"requests\" or \"cpu\")"),
                    );
                    false
                }
            };
            demand.push(DemandSource {
                metric: p.demand_metric.clone(),
                tags: p.demand_tags.clone(),
                untagged_class,
                cpu,
            });
            actuators.push(validate_actuator(c, i, &p.actuator));
        }
        (pools, demand, actuators)
    }
}

fn validate_actuator(c: &mut Checker, pool: usize, actuator: &ActuatorConfig) -> ActuatorSpec {
    let at = |field: &str| format!("pools[{pool}].actuator.{field}");
    let timing = |c: &mut Checker, timeout: &str, retries: u32, backoff: &str| {
        let timeout = c.duration(&at("timeout"), timeout, Duration::from_millis(10), Duration::from_secs(600));
        let retries = c.range(&at("retries"), u64::from(retries), 0, 100) as u32;
        let backoff = c.duration(&at("backoff"), backoff, Duration::ZERO, Duration::from_secs(600));
        (timeout, retries, backoff)
    };
    match actuator {
        ActuatorConfig::Log => ActuatorSpec::Log,
        ActuatorConfig::Exec { command, timeout, retries, backoff } => {
            if command.first().is_none_or(|program| program.is_empty()) {
                c.fail(at("command"), "is empty: give the program and its arguments".into());
            }
            let (timeout, retries, backoff) = timing(c, timeout, *retries, backoff);
            ActuatorSpec::Exec { command: command.clone(), timeout, retries, backoff }
        }
        ActuatorConfig::Webhook { url, secret, timeout, retries, backoff } => {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.len() < "http://x".len() || url.chars().any(char::is_whitespace) {
                c.fail(at("url"), format!("{url:?} is not an http:// or https:// URL"));
            }
            if secret.len() < 16 {
                c.fail(at("secret"), "must be at least 16 characters (it signs every request)".into());
            }
            let (timeout, retries, backoff) = timing(c, timeout, *retries, backoff);
            ActuatorSpec::Webhook { url: url.clone(), secret: secret.clone(), timeout, retries, backoff }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AgentConfig {
        let mut config = AgentConfig::default();
        config.agent.node_id = "edge-1".into();
        config
    }

    #[test]
    fn defaults_validate() {
        let settings = valid().validate().expect("defaults are valid");
        assert_eq!(settings.region, "local");
        assert!(settings.api_listen.ip().is_loopback());
        assert_eq!(settings.statsd_listen, Some("127.0.0.1:8125".parse().unwrap()));
        assert_eq!(settings.host_interval, Duration::from_millis(250));
        assert_eq!(settings.log_format, LogFormat::Text);
    }

    #[test]
    fn mesh_defaults_to_a_fleet_of_one_on_loopback() {
        let mesh = valid().validate().unwrap().mesh.expect("mesh is on by default");
        assert!(mesh.listen.ip().is_loopback());
        assert!(mesh.seeds.is_empty());
        assert_eq!(mesh.tls, None, "no certificates: a throwaway CA");
        assert_eq!(mesh.profile, MeshProfile::Lan);
        let mut off = valid();
        off.mesh.enabled = false;
        assert_eq!(off.validate().unwrap().mesh, None);
    }

    #[test]
    fn mesh_fields_are_checked() {
        let mut config = valid();
        config.mesh.seeds = vec!["127.0.0.1:7000".into(), "nope".into()];
        config.mesh.profile = "moon".into();
        config.mesh.cert = "/etc/wedsync/node.pem".into();
        config.mesh.advertise = "0.0.0.0:7946".into();
        config.mesh.viral_growth = 0.5;
        config.mesh.state_interval = "1ms".into();
        let errors = config.validate().unwrap_err();
        for field in [
            "mesh.seeds[1]",
            "mesh.profile",
            "mesh.ca_cert",
            "mesh.key",
            "mesh.advertise",
            "mesh.viral_growth",
            "mesh.state_interval",
        ] {
            assert!(errors.names(field), "{field} not named in {errors}");
        }
        assert!(!errors.names("mesh.seeds[0]"));
        assert!(!errors.names("mesh.cert"));
    }

    #[test]
    fn empty_node_id_is_named() {
        let errors = AgentConfig::default().validate().unwrap_err();
        assert!(errors.names("agent.node_id"), "{errors}");
    }

    #[test]
    fn bad_socket_address_names_field_and_reason() {
        let mut config = valid();
        config.api.listen = "300.1.1.1:80".into();
        let errors = config.validate().unwrap_err();
        assert_eq!(
            errors.0[0].to_string(),
            "api.listen: \"300.1.1.1:80\" is not a socket address (expected IP:PORT, e.g. \"127.0.0.1:8125\")"
        );
    }

    #[test]
    fn every_field_error_names_its_field() {
        let mut config = valid();
        config.agent.node_id = "bad id!".into();
        config.agent.region = String::new();
        config.api.listen = "localhost".into();
        config.statsd.listen = "127.0.0.1".into();
        config.statsd.receive_buffer_bytes = 10;
        config.statsd.log_rejects_per_second = 1_000_000;
        config.host.interval = "fast".into();
        config.host.process_interval = "1ms".into();
        config.host.procfs = "proc".into();
        config.store.max_series = 0;
        config.store.max_histogram_series = 200_000;
        config.store.max_set_members = 0;
        config.store.series_ttl = "1s".into();
        config.store.ewma_half_life = "forever".into();
        config.log.format = "xml".into();
        config.log.level = " ".into();
        config.api.token = "short".into();
        config.storage.dir = "relative/dir".into();
        let errors = config.validate().unwrap_err();
        for field in [
            "agent.node_id",
            "agent.region",
            "api.listen",
            "statsd.listen",
            "statsd.receive_buffer_bytes",
            "statsd.log_rejects_per_second",
            "host.interval",
            "host.process_interval",
            "host.procfs",
            "store.max_series",
            "store.max_histogram_series",
            "store.max_set_members",
            "store.series_ttl",
            "store.ewma_half_life",
            "log.format",
            "log.level",
            "api.token",
            "storage.dir",
        ] {
            assert!(errors.names(field), "{field} not named in:\n{errors}");
        }
        assert_eq!(errors.0.len(), 18, "{errors}");
        let text = errors.to_string();
        assert!(text.contains("host.interval: \"fast\" is not a duration"), "{text}");
        assert!(
            text.contains("store.max_histogram_series: 200000 is out of range (must be from 0 to 100000)"),
            "{text}"
        );
    }

    #[test]
    fn pools_validate_and_name_bad_fields_by_index() {
        let mut config = valid();
        config.agent.region = "eu-west".into();
        config.pools.push(PoolConfig {
            name: "checkout".into(),
            min: 2,
            max: 50,
            protected_floor: 10,
            ..PoolConfig::default()
        });
        let settings = config.validate().expect("a valid pool");
        assert_eq!(settings.pools[0].region, "eu-west", "region defaults to the agent's");
        assert_eq!(settings.pools[0].protected_floor, 10);
        assert_eq!(settings.demand[0].untagged_class, TrafficClass::WeddingPlanning);

        config.pools.push(PoolConfig {
            name: "checkout".into(),
            min: 5,
            max: 3,
            capacity_per_unit: 0.0,
            class_capacity: [("vip".to_owned(), 1.0), ("media".to_owned(), -2.0)].into_iter().collect(),
            target_utilization: 1.5,
            classes: vec!["vip".into()],
            provisioning_delay: "later".into(),
            protected_floor: 9,
            time_zone: "Mars/Olympus".into(),
            cost: UnitCost { reserved: -1.0, on_demand: 0.1, spot: f64::NAN },
            placements: vec![Placement { region: "bad region".into(), cost: UnitCost::default() }],
            demand_metric: String::new(),
            demand_tags: vec![],
            demand_kind: "bytes".into(),
            untagged_class: "gold".into(),
            region: String::new(),
            actuator: ActuatorConfig::Webhook {
                url: "ftp://x".into(),
                secret: "short".into(),
                timeout: "0s".into(),
                retries: 1000,
                backoff: "soon".into(),
            },
        });
        config.engine.degrade_order = vec!["wedding-critical".into(), "media".into()];
        config.engine.tolerance = 0.9;
        let errors = config.validate().unwrap_err();
        for field in [
            "pools[1].name",
            "pools[1].max",
            "pools[1].capacity_per_unit",
            "pools[1].target_utilization",
            "pools[1].classes[0]",
            "pools[1].provisioning_delay",
            "pools[1].protected_floor",
            "pools[1].cost.reserved",
            "pools[1].cost.spot",
            "pools[1].demand_metric",
            "pools[1].untagged_class",
            "engine.degrade_order[0]",
            "engine.tolerance",
            "pools[1].placements[0].region",
            "pools[1].time_zone",
            "pools[1].class_capacity.vip",
            "pools[1].demand_kind",
            "pools[1].class_capacity.media",
            "pools[1].actuator.url",
            "pools[1].actuator.secret",
            "pools[1].actuator.timeout",
            "pools[1].actuator.retries",
            "pools[1].actuator.backoff",
        ] {
            assert!(errors.names(field), "{field} not named in:\n{errors}");
        }
        assert!(errors.to_string().contains("pools[1].name: \"checkout\" is used by another pool"), "{errors}");
    }

    #[test]
    fn engine_defaults_round_trip_through_the_section() {
        let settings = valid().validate().unwrap();
        assert_eq!(settings.engine, EngineSettings::default());
        assert!(settings.pools.is_empty());
    }

    #[test]
    fn disabled_statsd_has_no_listener() {
        let mut config = valid();
        config.statsd.enabled = false;
        assert_eq!(config.validate().unwrap().statsd_listen, None);
    }

    #[test]
    fn plugin_watch_interval_defaults_to_two_seconds_and_zero_turns_it_off() {
        let settings = valid().validate().unwrap();
        assert_eq!(settings.plugins.unwrap().watch_interval, Some(Duration::from_secs(2)));
        let mut config = valid();
        config.plugins.watch_interval = "0s".into();
        assert_eq!(config.validate().unwrap().plugins.unwrap().watch_interval, None);
        config.plugins.watch_interval = "250ms".into();
        assert_eq!(config.validate().unwrap().plugins.unwrap().watch_interval, Some(Duration::from_millis(250)));
        for bad in ["50ms", "2h", "soon", ""] {
            config.plugins.watch_interval = bad.into();
            let errors = config.validate().unwrap_err();
            assert!(errors.names("plugins.watch_interval"), "{bad:?} accepted: {errors}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<AgentConfig, _> = toml::from_str("[api]\nlisten = \"127.0.0.1:1\"\nlisen = 2\n");
        assert!(parsed.unwrap_err().to_string().contains("lisen"));
    }
}
