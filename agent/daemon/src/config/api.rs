//! `[api]`: the local HTTP API ([`crate::api`]).

use serde::{Deserialize, Serialize};

/// `[api]`: the local HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Address to listen on; loopback unless you mean otherwise.
    pub listen: String,
    /// Bearer token that mutating calls must carry. Empty: mutating calls are refused.
    /// Prefer setting it from the environment (`WEDSYNC__API__TOKEN`).
    pub token: String,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection { listen: "127.0.0.1:9470".into(), token: String::new() }
    }
}
