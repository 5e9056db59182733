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

/// Largest signature file read.
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// Reads at most `max` bytes of the file at `path` inside `dir`, refusing without reading what
/// is not a plain file of the plugin directory: a symbolic link is followed only when it
/// resolves inside `dir` (Kubernetes mounts ConfigMap files that way), the file is opened
/// without following links and without blocking (a FIFO cannot hang the agent), and it must be
/// a regular file no larger than `max` (checked on the open file before reading).
pub(super) fn read_bounded(dir: &Path, path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use nix::fcntl::OFlag;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let real = path.canonicalize().map_err(|e| format!("cannot resolve: {e}"))?;
    let real_dir = dir.canonicalize().map_err(|e| format!("cannot resolve the plugin directory: {e}"))?;
    if !real.starts_with(&real_dir) {
        return Err(format!("links outside the plugin directory (to {}); not read", real.display()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(&real)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file (a FIFO, device or directory); not read".into());
    }
    if meta.len() > max {
        return Err(format!("is {} bytes, more than the {max} a plugin file may be; not read", meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("grew past {max} bytes while being read; not read"));
    }
    Ok(bytes)
}

/// Largest component file read: what the plugin host would accept.
pub(super) fn max_component_bytes() -> u64 {
    u64::try_from(wedsync_plugin_host::HostSettings::default().max_component_size).unwrap_or(u64::MAX)
}

/// Reads `dir`'s plugin components (`*.wasm`, each with an optional `*.wasm.sig`), by name,
/// each through [`read_bounded`].
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
        match read_bounded(dir, &path, max_component_bytes()) {
            Ok(bytes) => {
                let mut sig = path.clone().into_os_string();
                sig.push(".sig");
                let sig = PathBuf::from(sig);
                let signature = match sig.symlink_metadata() {
                    Err(_) => None,
                    Ok(_) => match read_bounded(dir, &sig, MAX_SIGNATURE_BYTES) {
                        Ok(signature) => Some(signature),
                        Err(error) => {
                            failures.push(LoadFailure { origin: sig.display().to_string(), error });
                            continue;
                        }
                    },
                };
                sources.push((path, PluginSource { bytes, signature, origin }));
            }
            Err(error) => failures.push(LoadFailure { origin, error }),
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
    fn only_plain_files_of_the_directory_are_read_and_never_past_the_cap() {
        let root = std::env::temp_dir().join(format!("wedsync-plugin-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("plugins");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ok.wasm"), b"component").unwrap();
        assert_eq!(read_bounded(&dir, &dir.join("ok.wasm"), 100).unwrap(), b"component");
        // A 1 GiB (sparse) file is refused from its size, not read.
        let big = std::fs::File::create(dir.join("big.wasm")).unwrap();
        big.set_len(1 << 30).unwrap();
        let err = read_bounded(&dir, &dir.join("big.wasm"), 16 << 20).unwrap_err();
        assert!(err.contains("1073741824 bytes"), "{err}");
        // A FIFO would block an open or a read for ever.
        nix::unistd::mkfifo(&dir.join("fifo.wasm"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_bounded(&dir, &dir.join("fifo.wasm"), 100).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::create_dir(dir.join("dir.wasm")).unwrap();
        assert!(read_bounded(&dir, &dir.join("dir.wasm"), 100).unwrap_err().contains("not a regular file"));
        // Links: inside the directory (a ConfigMap's ..data) are followed, outside are not.
        std::fs::create_dir(dir.join("..data")).unwrap();
        std::fs::write(dir.join("..data/cm.wasm"), b"from a configmap").unwrap();
        std::os::unix::fs::symlink("..data/cm.wasm", dir.join("cm.wasm")).unwrap();
        assert_eq!(read_bounded(&dir, &dir.join("cm.wasm"), 100).unwrap(), b"from a configmap");
        std::fs::write(root.join("outside.wasm"), b"not ours").unwrap();
        std::os::unix::fs::symlink(root.join("outside.wasm"), dir.join("escape.wasm")).unwrap();
        let err = read_bounded(&dir, &dir.join("escape.wasm"), 100).unwrap_err();
        assert!(err.contains("outside the plugin directory"), "{err}");
        // The directory's listing reports each refusal and reads the rest.
        let (sources, failures) = read_dir(&dir);
        let names: Vec<String> = sources.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, ["cm.wasm", "ok.wasm"]);
        assert_eq!(failures.len(), 4, "{failures:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn config_sections_are_named_after_the_file() {
        assert_eq!(config_name("/etc/wedsync/plugins/min_units.wasm"), "min-units");
        assert_eq!(config_name("bundled:cost-guard"), "cost-guard");
    }
}
