//! `[plugins]`: the WASM policy plugins run on every decision round, checked into the
//! [`PluginSettings`] the plugin stage ([`crate::plugins`]) starts from.

use super::errors::Checker;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// Let a plugin be replaced by an older version of itself (audited as `plugin.rollback`);
    /// false: refused.
    pub allow_rollback: bool,
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
            allow_rollback: false,
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
    /// Whether a plugin may be replaced by an older version of itself.
    pub allow_rollback: bool,
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

impl PluginsSection {
    /// Checks every field into `c`; `None` when plugins are off.
    pub(super) fn validate(&self, c: &mut Checker) -> Option<PluginSettings> {
        let p = self;
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
            allow_rollback: p.allow_rollback,
            call_budget,
            memory_limit: usize::try_from(memory << 20).unwrap_or(usize::MAX),
            cache_dir: (!p.cache_dir.is_empty()).then(|| p.cache_dir.clone()),
            config,
            watch_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::valid;

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
}
