//! Logging to the agent's log.
//!
//! In a component these call the `wedsync:policy/log` import (the host rate-limits it and tags
//! each line with the plugin's name). On a native target (unit tests) the import does not exist,
//! so records go to a per-thread buffer that [`crate::testing`] reads.
//!
//! ```
//! wedsync_sdk::log::info("configured");
//! wedsync_sdk::log::warn!("pool {} has no region", 3);
//! ```

pub use crate::bindings::wedsync::policy::log::Level;

/// One log record captured on a native target.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Severity.
    pub level: Level,
    /// The message.
    pub message: String,
}

/// Most records kept per thread natively; later ones are counted in [`dropped_native`].
pub const NATIVE_BUFFER_CAP: usize = 10_000;

/// Writes `message` to the agent's log at `level`.
pub fn write(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::wedsync::policy::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    native::push(level, message);
}

/// Writes at `trace` level.
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Writes at `debug` level.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Writes at `info` level.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Writes at `warn` level.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Writes at `error` level.
pub fn error(message: &str) {
    write(Level::Error, message);
}

/// Takes the records this thread logged natively (empty in a component).
pub fn take_native() -> Vec<LogRecord> {
    #[cfg(not(target_arch = "wasm32"))]
    return native::take();
    #[cfg(target_arch = "wasm32")]
    Vec::new()
}

/// Records this thread could not keep natively because the buffer was full.
pub fn dropped_native() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    return native::dropped();
    #[cfg(target_arch = "wasm32")]
    0
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;

    use super::{Level, LogRecord, NATIVE_BUFFER_CAP};

    thread_local! {
        static BUFFER: RefCell<(Vec<LogRecord>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }

    pub(super) fn push(level: Level, message: &str) {
        BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            if b.0.len() < NATIVE_BUFFER_CAP {
                b.0.push(LogRecord { level, message: message.to_owned() });
            } else {
                b.1 += 1;
            }
        });
    }

    pub(super) fn take() -> Vec<LogRecord> {
        BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            b.1 = 0;
            std::mem::take(&mut b.0)
        })
    }

    pub(super) fn dropped() -> usize {
        BUFFER.with(|b| b.borrow().1)
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wedsync_log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::write($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wedsync_log_trace {
    ($($arg:tt)+) => { $crate::__wedsync_log!(Trace, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wedsync_log_debug {
    ($($arg:tt)+) => { $crate::__wedsync_log!(Debug, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wedsync_log_info {
    ($($arg:tt)+) => { $crate::__wedsync_log!(Info, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wedsync_log_warn {
    ($($arg:tt)+) => { $crate::__wedsync_log!(Warn, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wedsync_log_error {
    ($($arg:tt)+) => { $crate::__wedsync_log!(Error, $($arg)+) };
}

/// `log::trace!("fmt", args…)`: formats and writes at `trace` level.
pub use crate::__wedsync_log_trace as trace;

/// `log::debug!("fmt", args…)`: formats and writes at `debug` level.
pub use crate::__wedsync_log_debug as debug;

/// `log::info!("fmt", args…)`: formats and writes at `info` level.
pub use crate::__wedsync_log_info as info;

/// `log::warn!("fmt", args…)`: formats and writes at `warn` level.
pub use crate::__wedsync_log_warn as warn;

/// `log::error!("fmt", args…)`: formats and writes at `error` level.
pub use crate::__wedsync_log_error as error;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_buffer_records_and_caps() {
        let _ = take_native();
        info("one");
        crate::log::warn!("two {}", 2);
        let logs = take_native();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[1], LogRecord { level: Level::Warn, message: "two 2".into() });
        for _ in 0..NATIVE_BUFFER_CAP + 5 {
            trace("x");
        }
        assert_eq!(dropped_native(), 5);
        assert_eq!(take_native().len(), NATIVE_BUFFER_CAP);
        assert_eq!(dropped_native(), 0);
    }
}
