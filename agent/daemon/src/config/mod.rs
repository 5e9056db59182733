//! The agent's configuration: what files and the environment hold ([`AgentConfig`]), and the
//! checked, typed form the agent runs on ([`Settings`]).
//!
//! `[agent]` (who this agent is) is here; the other sections live in modules of their own, with
//! their defaults and their checks:
//! * [`api`], [`statsd`], [`host`], [`store`], [`log`]: `[api]`, `[statsd]`, `[host]`,
//!   `[store]`, `[log]`.
//! * [`storage`]: `[storage]`, `[calendar]`, `[audit]`, and where the state directory and the
//!   audit log are.
//! * [`engine`]: `[engine]`, checked into the core's [`EngineSettings`].
//! * [`pools`] and [`actuators`]: `[[pools]]`, checked into the core's [`PoolSpec`]s, the
//!   [`DemandSource`]s and the [`ActuatorSpec`]s.
//! * [`mesh`]: `[mesh]`, checked into [`MeshSettings`].
//! * [`plugins`]: `[plugins]`, checked into [`PluginSettings`].
//! * [`errors`]: what validation reports ([`FieldError`], [`ConfigErrors`]).
//! * [`load`](mod@load): the layers (embedded defaults, a TOML file, `WEDSYNC__SECTION__KEY` variables)
//!   merged with the `config` crate, then validated; `config print` and `config check`.
//!
//! [`AgentConfig::validate`] reports every bad field by its dotted path and says why.

pub mod actuators;
pub mod alerts;
pub mod api;
pub mod engine;
pub mod errors;
pub mod host;
pub mod load;
pub mod log;
pub mod mesh;
pub mod plugins;
pub mod pools;
pub mod statsd;
pub mod storage;
pub mod store;

pub use actuators::{ActuatorConfig, ActuatorSpec, Observe};
pub use alerts::{AlertsSection, AlertsSettings};
pub use api::ApiSection;
pub use engine::EngineSection;
pub use errors::{ConfigErrors, FieldError};
pub use host::HostSection;
pub use load::{
    ENV_PREFIX, LoadError, PrintError, Sources, check, check_file, host_name, load, load_settings, print, to_toml,
};
pub use log::{LogFormat, LogSection};
pub use mesh::{MeshProfile, MeshSection, MeshSettings, MeshTlsFiles};
pub use plugins::{BUNDLED_PLUGINS, PluginSettings, PluginsSection};
pub use pools::{DemandSource, PoolConfig};
pub use statsd::StatsdSection;
pub use storage::{
    AuditSection, CalendarSection, CheckpointSettings, DEFAULT_CHECKPOINT_EVERY, StorageSection, audit_config,
    state_dir,
};
pub use store::StoreSection;

use errors::Checker;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wedsync_core::engine::EngineSettings;
use wedsync_core::engine::pool::PoolSpec;
use wedsync_core::store::StoreLimits;

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
    /// Alert rules and where alerts go.
    pub alerts: AlertsSection,
    /// The pools the engine decides for (`[[pools]]`); none by default.
    pub pools: Vec<PoolConfig>,
}

/// `[agent]`: who this agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// Node id; empty means "the host name" (filled in by [`load()`] before validation).
    pub node_id: String,
    /// Region this node belongs to.
    pub region: String,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection { node_id: String::new(), region: "local".into() }
    }
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
    /// The API server's connection limit and timeouts.
    pub api_limits: api::ApiLimits,
    /// StatsD listen address, when enabled.
    pub statsd_listen: Option<SocketAddr>,
    /// The second StatsD socket, for pools' demand series, when configured (and StatsD enabled).
    pub statsd_demand_listen: Option<SocketAddr>,
    /// The StatsD Unix datagram socket and its file mode, when configured (and StatsD enabled).
    pub statsd_unix_socket: Option<(PathBuf, u32)>,
    /// Who may send StatsD over UDP (empty: anyone).
    pub statsd_allow: Vec<ipnet::IpNet>,
    /// Kernel receive buffer for StatsD, in bytes.
    pub statsd_receive_buffer: usize,
    /// Most rejected lines logged per second.
    pub statsd_log_rejects_per_second: u32,
    /// Threads reading StatsD (the metric store has four shards per reader).
    pub statsd_readers: usize,
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
    /// The API's bearer tokens and their scopes (the tokens themselves are never printed).
    pub api_tokens: Vec<api::ApiToken>,
    /// Whether reads need a token with the `read` scope.
    pub api_read_requires_token: bool,
    /// State directory as configured (empty: resolved by [`state_dir`]).
    pub storage_dir: String,
    /// Calendar file to load at start.
    pub calendar_file: Option<String>,
    /// The audit trail as configured ([`audit_config`] parses `fsync` and resolves the path).
    pub audit: AuditSection,
    /// Its checkpoints: the signing key, how often, where they are shipped.
    pub audit_checkpoints: CheckpointSettings,
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
    /// Alert rules and delivery.
    pub alerts: AlertsSettings,
}

impl AgentConfig {
    /// Checks every field and returns the typed settings, or every error found.
    pub fn validate(&self) -> Result<Settings, ConfigErrors> {
        let mut c = Checker(Vec::new());
        c.identifier("agent.node_id", &self.agent.node_id, 64);
        c.identifier("agent.region", &self.agent.region, 32);
        let api_listen = c.socket_addr("api.listen", &self.api.listen);
        let api_limits = self.api.limits(&mut c);
        let statsd_listen = c.socket_addr("statsd.listen", &self.statsd.listen);
        let demand_listen = match self.statsd.demand_listen.trim() {
            "" => None,
            addr => c.socket_addr("statsd.demand_listen", addr),
        };
        if let (Some(demand), Some(listen)) = (demand_listen, statsd_listen)
            && demand == listen
            && demand.port() != 0
        {
            c.fail(
                "statsd.demand_listen",
                format!("{demand} is statsd.listen's address: the demand socket must be a second one"),
            );
        }
        let unix_socket = match self.statsd.unix_socket.trim() {
            "" => None,
            path if !path.starts_with('/') => {
                c.fail("statsd.unix_socket", format!("{path:?} is not an absolute path"));
                None
            }
            path => match u32::from_str_radix(self.statsd.unix_socket_mode.trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 => Some((PathBuf::from(path), mode)),
                _ => {
                    c.fail(
                        "statsd.unix_socket_mode",
                        format!("{:?} is not an octal file mode (e.g. \"0660\")", self.statsd.unix_socket_mode),
                    );
                    None
                }
            },
        };
        let allow: Vec<ipnet::IpNet> = self
            .statsd
            .allow
            .iter()
            .filter_map(|entry| {
                let parsed = entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match parsed {
                    Ok(net) => Some(net),
                    Err(_) => {
                        c.fail("statsd.allow", format!("{entry:?} is not an address or network (e.g. \"10.0.0.0/8\")"));
                        None
                    }
                }
            })
            .collect();
        let receive_buffer = c.range("statsd.receive_buffer_bytes", self.statsd.receive_buffer_bytes, 65_536, 1 << 30);
        let rejects =
            c.range("statsd.log_rejects_per_second", u64::from(self.statsd.log_rejects_per_second), 0, 10_000);
        let readers = c.range("statsd.readers", u64::from(self.statsd.readers), 0, statsd::READERS_MAX);
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
        let api_tokens = self.api.tokens(&mut c);
        if !self.audit.path.is_empty() && !self.audit.path.starts_with('/') {
            c.fail("audit.path", format!("{:?} is not an absolute path", self.audit.path));
        }
        let audit_checkpoints = self.audit.checkpoints(&mut c);
        if !self.storage.dir.is_empty() && !self.storage.dir.starts_with('/') {
            c.fail("storage.dir", format!("{:?} is not an absolute path", self.storage.dir));
        }
        let engine = self.engine.validate(&mut c);
        let (pools, demand, actuators) = pools::validate(&self.pools, &self.agent.region, &mut c);
        let mesh = self.mesh.validate(&mut c);
        let plugins = self.plugins.validate(&mut c);
        let alerts = self.alerts.validate(&mut c);
        match (api_listen, statsd_listen, c.0.is_empty()) {
            (Some(api_listen), Some(statsd_listen), true) => Ok(Settings {
                node_id: self.agent.node_id.clone(),
                region: self.agent.region.clone(),
                api_listen,
                api_limits,
                statsd_listen: self.statsd.enabled.then_some(statsd_listen),
                statsd_demand_listen: demand_listen.filter(|_| self.statsd.enabled),
                statsd_unix_socket: unix_socket.filter(|_| self.statsd.enabled),
                statsd_allow: allow,
                statsd_receive_buffer: usize::try_from(receive_buffer).unwrap_or(usize::MAX),
                statsd_log_rejects_per_second: u32::try_from(rejects).unwrap_or(u32::MAX),
                statsd_readers: statsd::resolve_readers(readers),
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
                api_tokens,
                api_read_requires_token: self.api.read_requires_token,
                storage_dir: self.storage.dir.clone(),
                calendar_file: (!self.calendar.file.is_empty()).then(|| self.calendar.file.clone()),
                // The secret lives on in `audit_checkpoints`, which never serializes it.
                audit: AuditSection { checkpoint_secret: String::new(), ..self.audit.clone() },
                audit_checkpoints,
                engine,
                pools,
                demand,
                actuators,
                mesh,
                plugins,
                alerts,
            }),
            _ => Err(ConfigErrors(c.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults with a node id (the daemon fills in the host name): a valid configuration.
    pub(super) fn valid() -> AgentConfig {
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
        config.statsd.readers = 65;
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
            "statsd.readers",
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
        assert_eq!(errors.0.len(), 19, "{errors}");
        let text = errors.to_string();
        assert!(text.contains("host.interval: \"fast\" is not a duration"), "{text}");
        assert!(
            text.contains("store.max_histogram_series: 200000 is out of range (must be from 0 to 100000)"),
            "{text}"
        );
    }

    #[test]
    fn api_tokens_are_checked_and_the_admin_token_has_every_scope() {
        let mut config = valid();
        config.api.token = "admin-token-0123456789".into();
        let token = |name: &str, token: &str, scopes: &[&str]| api::TokenConfig {
            name: name.into(),
            token: token.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        config.api.tokens = vec![token("calendar-sync", "calendar-token-0123456789", &["calendar", "read"])];
        let settings = config.validate().unwrap();
        assert_eq!(settings.api_tokens[0].scopes, api::Scope::ALL.to_vec());
        assert_eq!(settings.api_tokens[1].scopes, vec![api::Scope::Calendar, api::Scope::Read]);
        assert!(!serde_json::to_string(&settings).unwrap().contains("calendar-token"), "tokens are never serialized");
        config.api.tokens = vec![
            token("short", "tiny", &["read"]),
            token("bad name!", "another-token-0123456789", &["root"]),
            token("twin", "admin-token-0123456789", &[]),
        ];
        let errors = config.validate().unwrap_err();
        for field in [
            "api.tokens[0].token",
            "api.tokens[1].name",
            "api.tokens[1].scopes",
            "api.tokens[2].token",
            "api.tokens[2].scopes",
        ] {
            assert!(errors.names(field), "{field} not named in {errors}");
        }
    }

    #[test]
    fn disabled_statsd_has_no_listener() {
        let mut config = valid();
        config.statsd.enabled = false;
        assert_eq!(config.validate().unwrap().statsd_listen, None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<AgentConfig, _> = toml::from_str("[api]\nlisten = \"127.0.0.1:1\"\nlisen = 2\n");
        assert!(parsed.unwrap_err().to_string().contains("lisen"));
    }
}
