//! `[statsd]`: UDP ingest ([`crate::ingest`]).

use serde::{Deserialize, Serialize};

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
