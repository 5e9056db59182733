//! Integration tests for `wedsync-audit` (one test binary to keep builds lean).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panicking on failure is the point

mod common;
mod fsync;
mod keyed;
mod log;
mod prop;
mod rotation;
mod tamper;
mod torn;
