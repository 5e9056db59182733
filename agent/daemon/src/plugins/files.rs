//! The plugin directory's files, as the start-up load and the hot-reload loader both read them:
//! listing and reading components, the config section each one reads, the call order.

use serde::Serialize;
use std::path::{Path, PathBuf};
use wedsync_plugin_host::PluginSource;

/// A plugin that could not be loaded.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    /// Where it came from.
    pub origin: String,
    /// Why it was refused.
    pub error: String,
}

/// A plugin's config section is named after its file (`min_units.wasm` reads
/// `[plugins.config.min-units]`) or, when bundled, its name.
pub(super) fn config_name(origin: &str) -> String {
    origin.rsplit(['/', ':']).next().unwrap_or("").trim_end_matches(".wasm").replace('_', "-")
}

/// The call order: the configured names first, then the others, bundled ones in their
/// configured order ahead of the directory's, by name.
pub(super) fn call_order(configured: &[String], bundled: &[String], names: Vec<String>) -> Vec<String> {
    let mut order: Vec<String> = configured.to_vec();
    let mut rest: Vec<String> = names.into_iter().filter(|n| !order.contains(n)).collect();
    rest.sort_by_key(|name| (bundled.iter().position(|b| b == name).unwrap_or(usize::MAX), name.clone()));
    order.append(&mut rest);
    order
}

/// Reads `dir`'s plugin components (`*.wasm`, each with an optional `*.wasm.sig`), by name.
pub(super) fn read_dir(dir: &Path) -> (Vec<(PathBuf, PluginSource)>, Vec<LoadFailure>) {
    let mut sources = Vec::new();
    let mut failures = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            failures.push(LoadFailure { origin: dir.display().to_string(), error: format!("cannot read: {e}") });
            return (sources, failures);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    paths.sort();
    for path in paths {
        let origin = path.display().to_string();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut sig = path.clone().into_os_string();
                sig.push(".sig");
                let signature = std::fs::read(PathBuf::from(sig)).ok();
                sources.push((path, PluginSource { bytes, signature, origin }));
            }
            Err(e) => failures.push(LoadFailure { origin, error: format!("cannot read: {e}") }),
        }
    }
    (sources, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_puts_configured_names_first_then_bundled_then_the_rest_by_name() {
        let bundled: Vec<String> = vec!["guard".into(), "seasons".into()];
        let names = vec!["zeta".into(), "seasons".into(), "alpha".into(), "guard".into(), "mine".into()];
        let order = call_order(&["mine".to_owned()], &bundled, names);
        assert_eq!(order, ["mine", "guard", "seasons", "alpha", "zeta"]);
    }

    #[test]
    fn config_sections_are_named_after_the_file() {
        assert_eq!(config_name("/etc/wedsync/plugins/min_units.wasm"), "min-units");
        assert_eq!(config_name("bundled:cost-guard"), "cost-guard");
    }
}
