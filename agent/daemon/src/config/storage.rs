//! What the agent keeps across restarts: `[storage]` (the state directory: the embedded database,
//! [`crate::calendar`]), `[calendar]` (the wedding calendar file loaded at start) and `[audit]`
//! (the audit trail, [`crate::audit`]); and where the state directory and the audit log are.

use super::{FieldError, Settings};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use wedsync_audit::FsyncPolicy;

/// `[storage]`: where the agent keeps what must survive restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// State directory. Empty: `$STATE_DIRECTORY` (systemd), else
    /// `$XDG_STATE_HOME/wedsync-agent`, else `~/.local/state/wedsync-agent`.
    pub dir: String,
}

/// `[calendar]`: the wedding calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarSection {
    /// A TOML file of `[[weddings]]` loaded (and stored) at start. Empty: none.
    pub file: String,
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

impl AuditSection {
    /// Why `fsync` is not an [`FsyncPolicy`], if it is not. [`AgentConfig::validate`] leaves it
    /// out (`config print` does not check it); [`load_settings`] adds it after the others.
    ///
    /// [`AgentConfig::validate`]: super::AgentConfig::validate
    /// [`load_settings`]: super::load_settings
    pub fn fsync_error(&self) -> Option<FieldError> {
        match self.fsync.parse::<FsyncPolicy>() {
            Ok(_) => None,
            Err(e) => Some(FieldError { field: "audit.fsync".into(), message: e.to_string() }),
        }
    }
}

/// The state directory: `storage.dir`, else `$STATE_DIRECTORY`, `$XDG_STATE_HOME/wedsync-agent`,
/// `$HOME/.local/state/wedsync-agent`, or `./wedsync-state` as a last resort.
pub fn state_dir(configured: &str) -> PathBuf {
    if !configured.is_empty() {
        return PathBuf::from(configured);
    }
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated; the first is ours.
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
        return PathBuf::from(first);
    }
    if let Some(dir) = var("XDG_STATE_HOME") {
        return dir.join("wedsync-agent");
    }
    if let Some(home) = var("HOME") {
        return home.join(".local/state/wedsync-agent");
    }
    PathBuf::from("wedsync-state")
}

/// The audit log's configuration, with its path resolved against the state directory.
pub fn audit_config(settings: &Settings) -> Option<wedsync_audit::AuditConfig> {
    let audit = &settings.audit;
    if !audit.enabled {
        return None;
    }
    let path = if audit.path.is_empty() {
        state_dir(&settings.storage_dir).join("audit.jsonl")
    } else {
        PathBuf::from(&audit.path)
    };
    Some(wedsync_audit::AuditConfig {
        path,
        fsync: audit.fsync.parse().unwrap_or(FsyncPolicy::Always),
        max_file_bytes: audit.max_file_bytes,
        keep_files: usize::try_from(audit.keep_files).unwrap_or(usize::MAX),
    })
}
