//! The agent's configuration: what files and the environment hold ([`AgentConfig`]), and the
//! checked, typed form the agent runs on ([`Settings`]).
//!
//! Loading (file, environment) is the daemon's job; this module only defines the shape, the
//! defaults, and [`AgentConfig::validate`], which reports every bad field by its dotted path and
//! says why.

use crate::store::StoreLimits;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything a config file or environment may set. Defaults work on any Linux host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection { listen: "127.0.0.1:9470".into() }
    }
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
}

/// One bad field: its dotted path and why it is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `api.listen`.
    pub field: &'static str,
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
    fn fail(&mut self, field: &'static str, message: String) {
        self.0.push(FieldError { field, message });
    }

    fn socket_addr(&mut self, field: &'static str, value: &str) -> Option<SocketAddr> {
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

    fn duration(&mut self, field: &'static str, value: &str, min: Duration, max: Duration) -> Duration {
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

    fn range(&mut self, field: &'static str, value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.fail(field, format!("{value} is out of range (must be from {min} to {max})"));
        }
        value.clamp(min, max)
    }

    fn identifier(&mut self, field: &'static str, value: &str, max_len: usize) {
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
            }),
            _ => Err(ConfigErrors(c.0)),
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
        ] {
            assert!(errors.names(field), "{field} not named in:\n{errors}");
        }
        assert_eq!(errors.0.len(), 16, "{errors}");
        let text = errors.to_string();
        assert!(text.contains("host.interval: \"fast\" is not a duration"), "{text}");
        assert!(
            text.contains("store.max_histogram_series: 200000 is out of range (must be from 0 to 100000)"),
            "{text}"
        );
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
