//! What validation reports ([`FieldError`], [`ConfigErrors`]) and the `Checker` every
//! section's validation writes to: one error per bad field, named by its dotted path.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// One bad field: its dotted path and why it is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `api.listen`.
    pub field: String,
    /// Why, quoting the bad value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every bad field found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} error{}):", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// Whether `field` is among the bad ones.
    pub fn names(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

/// Collects the errors of one validation, in the order the fields are checked.
pub(super) struct Checker(pub(super) Vec<FieldError>);

impl Checker {
    pub(super) fn fail(&mut self, field: impl Into<String>, message: String) {
        self.0.push(FieldError { field: field.into(), message });
    }

    pub(super) fn socket_addr(&mut self, field: &str, value: &str) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.fail(
                    field,
                    format!("{value:?} is not a socket address (expected IP:PORT, e.g. \"127.0.0.1:8125\")"),
                );
                None
            }
        }
    }

    pub(super) fn duration(&mut self, field: &str, value: &str, min: Duration, max: Duration) -> Duration {
        match humantime::parse_duration(value) {
            Ok(d) if d >= min && d <= max => d,
            Ok(_) => {
                self.fail(
                    field,
                    format!(
                        "{value:?} is out of range (must be from {} to {})",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                min
            }
            Err(e) => {
                self.fail(field, format!("{value:?} is not a duration ({e}; e.g. \"250ms\", \"5s\", \"10m\")"));
                min
            }
        }
    }

    pub(super) fn range(&mut self, field: &str, value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.fail(field, format!("{value} is out of range (must be from {min} to {max})"));
        }
        value.clamp(min, max)
    }

    pub(super) fn identifier(&mut self, field: &str, value: &str, max_len: usize) {
        if value.is_empty() || value.len() > max_len {
            self.fail(field, format!("{value:?} must be 1 to {max_len} characters"));
        } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            self.fail(field, format!("{value:?} may hold only letters, digits, '-', '_' and '.'"));
        }
    }
}
