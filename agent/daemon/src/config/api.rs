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
    /// Most connections open at once; past it a new one is closed at once (and counted).
    pub max_connections: u32,
    /// Longest a client may take to send a request's headers, and to start the next request on
    /// a kept-alive connection; then the connection is closed.
    pub header_read_timeout: String,
    /// Longest a request may take, body included, before it is answered 408.
    pub request_timeout: String,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: "127.0.0.1:9470".into(),
            token: String::new(),
            max_connections: 256,
            header_read_timeout: "10s".into(),
            request_timeout: "30s".into(),
        }
    }
}

/// The API server's limits, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ApiLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: std::time::Duration,
    /// Longest a request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
}

impl ApiSection {
    /// Checks the limits into `c`.
    pub(super) fn limits(&self, c: &mut super::errors::Checker) -> ApiLimits {
        use std::time::Duration;
        let max_connections = c.range("api.max_connections", u64::from(self.max_connections), 1, 65_536);
        ApiLimits {
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            header_read_timeout: c.duration(
                "api.header_read_timeout",
                &self.header_read_timeout,
                Duration::from_millis(100),
                Duration::from_secs(300),
            ),
            request_timeout: c.duration(
                "api.request_timeout",
                &self.request_timeout,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
        }
    }
}
