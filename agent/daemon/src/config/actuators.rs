//! `[pools.actuator]`: how a pool's decisions are carried out, checked into the
//! [`ActuatorSpec`] the [`crate::actuators`] run.

use super::errors::Checker;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[pools.actuator]`: how a pool's decisions are carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ActuatorConfig {
    /// Log each decision (always done, whatever else is configured).
    #[default]
    Log,
    /// Run a command with the decision as JSON on standard input.
    Exec {
        /// Program and arguments (no shell).
        command: Vec<String>,
        /// A command (no shell) that prints the pool's real size as JSON, `{"units": N}` (or
        /// `{"replicas": N}`), run at start and every `observe_interval`; empty: none.
        #[serde(default)]
        observe: Vec<String>,
        /// How often `observe` runs (e.g. `"15s"`).
        #[serde(default = "default_observe_interval")]
        observe_interval: String,
        /// Longest a run may take before it is killed (e.g. `"10s"`).
        #[serde(default = "default_actuator_timeout")]
        timeout: String,
        /// Further attempts after a failure.
        #[serde(default = "default_actuator_retries")]
        retries: u32,
        /// Wait before the first retry; doubles each time (e.g. `"500ms"`).
        #[serde(default = "default_actuator_backoff")]
        backoff: String,
        /// The agent's environment variables the commands see, by name (default
        /// [`DEFAULT_EXEC_ENV`]); every other one is cleared, so the agent's secrets never reach
        /// a script. `WEDSYNC_POOL` and `WEDSYNC_DECISION_ID` are always set.
        #[serde(default = "default_exec_env")]
        env: Vec<String>,
    },
    /// POST the decision as JSON, signed with HMAC-SHA256.
    Webhook {
        /// `https://` URL (`http://` only with `allow_http`).
        url: String,
        /// Allow a plain `http://` URL (a sidecar on loopback, say): the decision and its
        /// signature then travel unencrypted.
        #[serde(default)]
        allow_http: bool,
        /// Shared secret for the `X-Wedsync-Signature` header (at least 16 characters).
        secret: String,
        /// Longest a request may take (e.g. `"5s"`).
        #[serde(default = "default_actuator_timeout")]
        timeout: String,
        /// Further attempts after a failure.
        #[serde(default = "default_actuator_retries")]
        retries: u32,
        /// Wait before the first retry; doubles each time.
        #[serde(default = "default_actuator_backoff")]
        backoff: String,
    },
}

/// What an `exec` actuator's commands see of the agent's environment unless its `env` says
/// otherwise: enough to find programs and speak the locale.
pub const DEFAULT_EXEC_ENV: [&str; 5] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

fn default_exec_env() -> Vec<String> {
    DEFAULT_EXEC_ENV.iter().map(|v| (*v).to_owned()).collect()
}

fn default_observe_interval() -> String {
    "15s".into()
}

fn default_actuator_timeout() -> String {
    "10s".into()
}

fn default_actuator_retries() -> u32 {
    3
}

fn default_actuator_backoff() -> String {
    "500ms".into()
}

/// An `exec` actuator's size report: a command and how often it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observe {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Time between runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

/// A checked actuator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ActuatorSpec {
    /// Log only.
    Log,
    /// Run a command.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
        /// The command that reports the pool's size, and how often it runs.
        observe: Option<Observe>,
        /// Per-attempt timeout.
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        /// Further attempts after a failure.
        retries: u32,
        /// First retry delay (doubling).
        #[serde(with = "humantime_serde")]
        backoff: Duration,
        /// The agent's environment variables passed to the commands, by name.
        env: Vec<String>,
    },
    /// POST to a URL.
    Webhook {
        /// The URL.
        url: String,
        /// HMAC secret (never serialized).
        #[serde(skip)]
        secret: String,
        /// Per-attempt timeout.
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        /// Further attempts after a failure.
        retries: u32,
        /// First retry delay (doubling).
        #[serde(with = "humantime_serde")]
        backoff: Duration,
    },
}

impl ActuatorConfig {
    /// Checks the actuator of pool number `pool` into `c`.
    pub(super) fn validate(&self, c: &mut Checker, pool: usize) -> ActuatorSpec {
        let at = |field: &str| format!("pools[{pool}].actuator.{field}");
        let timing = |c: &mut Checker, timeout: &str, retries: u32, backoff: &str| {
            let timeout = c.duration(&at("timeout"), timeout, Duration::from_millis(10), Duration::from_secs(600));
            let retries = c.range(&at("retries"), u64::from(retries), 0, 100) as u32;
            let backoff = c.duration(&at("backoff"), backoff, Duration::ZERO, Duration::from_secs(600));
            (timeout, retries, backoff)
        };
        match self {
            ActuatorConfig::Log => ActuatorSpec::Log,
            ActuatorConfig::Exec { command, observe, observe_interval, timeout, retries, backoff, env } => {
                for name in env {
                    if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                        c.fail(at("env"), format!("{name:?} is not an environment variable name (letters, digits, _)"));
                    } else if name.to_ascii_uppercase().starts_with("WEDSYNC__") {
                        c.fail(
                            at("env"),
                            format!("{name}: the agent's own configuration variables can hold secrets and are never passed to commands"),
                        );
                    }
                }
                if command.first().is_none_or(|program| program.is_empty()) {
                    c.fail(at("command"), "is empty: give the program and its arguments".into());
                }
                if observe.first().is_some_and(|program| program.is_empty()) {
                    c.fail(at("observe"), "names an empty program".into());
                }
                let interval = c.duration(
                    &at("observe_interval"),
                    observe_interval,
                    Duration::from_secs(1),
                    Duration::from_secs(3600),
                );
                let observe = (!observe.is_empty()).then(|| Observe { command: observe.clone(), interval });
                let (timeout, retries, backoff) = timing(c, timeout, *retries, backoff);
                ActuatorSpec::Exec { command: command.clone(), observe, timeout, retries, backoff, env: env.clone() }
            }
            ActuatorConfig::Webhook { url, allow_http, secret, timeout, retries, backoff } => {
                let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
                if !scheme_ok || url.len() < "http://x".len() || url.chars().any(char::is_whitespace) {
                    c.fail(at("url"), format!("{url:?} is not an http:// or https:// URL"));
                } else if url.starts_with("http://") && !allow_http {
                    c.fail(
                        at("url"),
                        format!("{url:?} is plain http: decisions would travel unencrypted (use https://, or set allow_http = true)"),
                    );
                }
                if secret.len() < 16 {
                    c.fail(at("secret"), "must be at least 16 characters (it signs every request)".into());
                }
                let (timeout, retries, backoff) = timing(c, timeout, *retries, backoff);
                ActuatorSpec::Webhook { url: url.clone(), secret: secret.clone(), timeout, retries, backoff }
            }
        }
    }
}
