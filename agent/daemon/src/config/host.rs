//! `[host]`: host metric collection ([`crate::host`]) and the agent's own-process sampling
//! ([`crate::process`]).

use serde::{Deserialize, Serialize};

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
