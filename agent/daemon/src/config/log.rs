//! `[log]`: the log format and filter ([`crate::logging`]).

use serde::{Deserialize, Serialize};

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
