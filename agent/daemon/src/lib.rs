//! The `wedsync-agent` daemon: it loads the layered configuration, samples the host, ingests
//! StatsD over UDP into the core metric store, drives the decision engine, and serves the local
//! HTTP API.
//!
//! The binary (`main.rs`) is a thin CLI over [`agent::run`]. Everything here does I/O; the
//! logic it drives lives in `wedsync-core`, which does none.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod actuators;
pub mod agent;
pub mod api;
pub mod audit;
pub mod calendar;
pub mod configuration;
pub mod decisions;
pub mod fleet;
pub mod fleet_sim;
pub mod host;
pub mod ingest;
pub mod logging;
pub mod plugins;
pub mod process;
pub mod quic_fleet;
pub mod sim;
pub mod telemetry;
