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
    /// The ed25519 key that signs checkpoints (`wedsync-agent audit keygen`): an absolute path
    /// outside the state directory, readable by the agent alone. Empty: the chain is not keyed
    /// (a warning at start).
    pub signing_key: String,
    /// A signed checkpoint after at most this many entries.
    pub checkpoint_every: u64,
    /// ... and at most this long after an entry (also one at stop).
    pub checkpoint_interval: String,
    /// Where each new checkpoint is POSTed (JSON), so a cut-off tail is found off the host:
    /// `https://` (`http://` only with `checkpoint_allow_http`). Empty: not shipped.
    pub checkpoint_webhook: String,
    /// Signs each shipped checkpoint as the webhook actuators do (`X-Wedsync-Signature`); at
    /// least 16 characters when `checkpoint_webhook` is set.
    pub checkpoint_secret: String,
    /// Allow a plain `http://` checkpoint webhook.
    pub checkpoint_allow_http: bool,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            enabled: true,
            path: String::new(),
            fsync: "always".into(),
            max_file_bytes: 16 * 1024 * 1024,
            keep_files: 0,
            signing_key: String::new(),
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: "10s".into(),
            checkpoint_webhook: String::new(),
            checkpoint_secret: String::new(),
            checkpoint_allow_http: false,
        }
    }
}

/// Default `audit.checkpoint_every`.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// `[audit]`'s checkpoint settings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointSettings {
    /// The signing key's file; `None`: not keyed.
    pub signing_key: Option<PathBuf>,
    /// Entries between checkpoints at most.
    pub every: u64,
    /// Time after an entry before a checkpoint at most.
    #[serde(with = "humantime_serde")]
    pub interval: std::time::Duration,
    /// Where checkpoints are shipped, and the secret that signs them (never serialized).
    #[serde(skip)]
    pub webhook: Option<(String, String)>,
}

impl AuditSection {
    /// Validates the checkpoint settings (`audit.signing_key`, `audit.checkpoint_*`).
    pub(super) fn checkpoints(&self, c: &mut super::errors::Checker) -> CheckpointSettings {
        if !self.signing_key.is_empty() && !self.signing_key.starts_with('/') {
            c.fail("audit.signing_key", format!("{:?} is not an absolute path", self.signing_key));
        }
        let every = c.range("audit.checkpoint_every", self.checkpoint_every, 1, 1_000_000);
        let interval = c.duration(
            "audit.checkpoint_interval",
            &self.checkpoint_interval,
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(3600),
        );
        let webhook = &self.checkpoint_webhook;
        if !webhook.is_empty() {
            if !webhook.starts_with("https://") && !webhook.starts_with("http://") {
                c.fail("audit.checkpoint_webhook", format!("{webhook:?} is not an http(s) URL"));
            } else if webhook.starts_with("http://") && !self.checkpoint_allow_http {
                c.fail(
                    "audit.checkpoint_webhook",
                    format!("{webhook:?} is plain http (use https://, or set audit.checkpoint_allow_http = true)"),
                );
            }
            if self.checkpoint_secret.len() < 16 {
                c.fail("audit.checkpoint_secret", "must be at least 16 characters (it signs every checkpoint)".into());
            }
            if self.signing_key.is_empty() {
                c.fail(
                    "audit.checkpoint_webhook",
                    "needs audit.signing_key: only signed checkpoints are shipped".into(),
                );
            }
        }
        CheckpointSettings {
            signing_key: (!self.signing_key.is_empty()).then(|| PathBuf::from(&self.signing_key)),
            every,
            interval,
            webhook: (!webhook.is_empty()).then(|| (webhook.clone(), self.checkpoint_secret.clone())),
        }
    }

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
