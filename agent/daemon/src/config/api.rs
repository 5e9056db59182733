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
    /// Tokens with scopes, for callers that should do one thing (a calendar sync, a plugin
    /// deployer, a dashboard that only reads). `token` above has every scope.
    pub tokens: Vec<TokenConfig>,
    /// Whether reads (everything but `/healthz`) need a token with the `read` scope too.
    pub read_requires_token: bool,
}

/// `[[api.tokens]]`: a bearer token and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (in logs and the audit trail; never the token itself).
    pub name: String,
    /// The token, at least 16 characters.
    pub token: String,
    /// What it may do: `read`, `calendar`, `plugins`, `faults`, `alerts`.
    pub scopes: Vec<String>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every GET (when `api.read_requires_token`).
    Read,
    /// Add and remove weddings.
    Calendar,
    /// Reload the plugin directory.
    Plugins,
    /// Inject mesh faults (tests and game days).
    Faults,
    /// Acknowledge alerts.
    Alerts,
}

impl Scope {
    /// Every scope, as `api.token` has them.
    pub const ALL: [Scope; 5] = [Scope::Read, Scope::Calendar, Scope::Plugins, Scope::Faults, Scope::Alerts];

    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Calendar => "calendar",
            Scope::Plugins => "plugins",
            Scope::Faults => "faults",
            Scope::Alerts => "alerts",
        }
    }
}

/// A checked API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    /// Who holds it.
    pub name: String,
    /// The token (never serialized).
    #[serde(skip)]
    pub token: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: "127.0.0.1:9470".into(),
            token: String::new(),
            max_connections: 256,
            header_read_timeout: "10s".into(),
            request_timeout: "30s".into(),
            tokens: Vec::new(),
            read_requires_token: false,
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
    /// Checks the tokens into `c`: `api.token` as `admin` with every scope, then `api.tokens`.
    pub(super) fn tokens(&self, c: &mut super::errors::Checker) -> Vec<ApiToken> {
        let valid = |t: &str| t.len() >= 16 && !t.chars().any(char::is_whitespace);
        let mut out = Vec::new();
        if !self.token.is_empty() {
            if !valid(&self.token) {
                c.fail(
                    "api.token",
                    "must be at least 16 characters without spaces (or empty to refuse mutating calls)".into(),
                );
            }
            out.push(ApiToken { name: "admin".into(), token: self.token.clone(), scopes: Scope::ALL.to_vec() });
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let at = |field: &str| format!("api.tokens[{i}].{field}");
            c.identifier(&at("name"), &t.name, 64);
            if !valid(&t.token) {
                c.fail(at("token"), "must be at least 16 characters without spaces".into());
            }
            if out.iter().any(|o: &ApiToken| o.token == t.token) {
                c.fail(at("token"), "is another token's too: each caller gets its own".into());
            }
            let mut scopes = Vec::new();
            for scope in &t.scopes {
                match Scope::ALL.iter().find(|s| s.as_str() == scope) {
                    Some(s) => scopes.push(*s),
                    None => c.fail(
                        at("scopes"),
                        format!("{scope:?} is not a scope (read, calendar, plugins, faults, alerts)"),
                    ),
                }
            }
            if scopes.is_empty() {
                c.fail(at("scopes"), "is empty: name what the token may do".into());
            }
            out.push(ApiToken { name: t.name.clone(), token: t.token.clone(), scopes });
        }
        out
    }

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
