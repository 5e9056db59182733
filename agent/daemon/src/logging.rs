//! Logging through `tracing`: human-readable text by default, JSON lines for machines.
//! Logs go to standard error so that standard output stays clean for command output.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `log.level` is not a valid tracing filter.
    #[error("log.level: {level:?} is not a valid filter ({reason})")]
    BadFilter {
        /// The configured filter.
        level: String,
        /// What the filter parser said.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(format: LogFormat, level: &str) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.trim().is_empty() => EnvFilter::try_new(&from_env),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| LoggingError::BadFilter { level: level.to_owned(), reason: e.to_string() })?;
    // A write that fails (stderr's reader is gone: a closed pipe, a restarted journald) loses
    // that line, nothing more. tracing-subscriber's default reports it with `eprintln!`, which
    // panics on the same broken stderr: every thread that logged died, the API with them, and
    // SIGTERM was no longer heard.
    // Such lines are counted instead (`wedsync_log_lines_lost_total`, [`lost_lines`]).
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| CountingStderr).log_internal_errors(false);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    }
    .map_err(|_| LoggingError::AlreadySet)
}

/// Log lines the agent could not write (stderr's reader gone), since start.
static LOST_LINES: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);

/// The counter of log lines lost ([`init`]'s writer counts a line whose write failed), for
/// telemetry to register as `wedsync_log_lines_lost`.
pub fn lost_lines() -> prometheus_client::metrics::counter::Counter {
    LOST_LINES.clone()
}

/// Standard error, counting the lines it fails to write: the formatter writes each event with
/// one `write_all`.
struct CountingStderr;

impl std::io::Write for CountingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let written = std::io::stderr().write_all(buf);
        if written.is_err() {
            LOST_LINES.inc();
        }
        written
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Lets through at most `per_window` events per window (a second unless told otherwise) and
/// counts the rest, so a flood of bad input cannot flood the log. The daemon's one log limiter.
#[derive(Debug)]
pub struct RateLimiter {
    per_window: u32,
    window: std::time::Duration,
    window_start: Option<std::time::Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimiter {
    /// A limiter letting `per_second` events through each second.
    pub fn new(per_second: u32) -> Self {
        Self::per_window(per_second, std::time::Duration::from_secs(1))
    }

    /// A limiter letting `per_window` events through each `window`.
    pub fn per_window(per_window: u32, window: std::time::Duration) -> Self {
        RateLimiter { per_window, window, window_start: None, in_window: 0, suppressed: 0 }
    }

    /// Whether to log an event at `now`. When a new window opens, returns how many events
    /// were suppressed in the windows since the last one logged, so the caller can say so.
    pub fn admit(&mut self, now: std::time::Instant) -> Option<u64> {
        let new_window = self.window_start.is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if new_window {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window < self.per_window {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn limiter_admits_per_window_and_reports_suppressed() {
        let mut limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(limiter.admit(t0), Some(0));
        assert_eq!(limiter.admit(t0), Some(0));
        assert_eq!(limiter.admit(t0), None);
        assert_eq!(limiter.admit(t0 + Duration::from_millis(500)), None);
        assert_eq!(limiter.admit(t0 + Duration::from_millis(1000)), Some(2));
        let mut silent = RateLimiter::new(0);
        assert_eq!(silent.admit(t0), None);
    }
}
