//! The `wedsync-agent` daemon: it loads the layered configuration, samples the host, ingests
//! StatsD, runs the decision engine with its WASM plugins, hands decisions to actuators and the
//! audit trail, gossips with its fleet over QUIC, and serves the local HTTP API.
//!
//! How data flows (one owner per state machine, channels and snapshots between owners):
//! * [`ingest`] (StatsD, one reader thread per core) and the host and process samplers
//!   ([`agent`]) write the metric [`store`], whose shards let them record at once.
//! * [`decisions`] is the decision thread, the engine's one owner: each round it reads demand
//!   from the store, runs the engine with the [`plugins`], hands decisions to the
//!   [`actuators`], the [`audit`] trail and the decision log, and publishes an
//!   [`engine::EngineView`].
//! * [`fleet`] is the mesh task, the mesh's one owner: it gossips this node's state (read from
//!   the engine's view) and hands failover shares to the engine as [`engine::EngineCommand`]s.
//! * [`api`] reads the snapshots and sends commands; [`telemetry`] renders `/metrics` from the
//!   collectors each part registers.
//! * [`clock`], [`logging`] and [`store`] are leaves every part uses.
//! * [`config`] is the agent's configuration: each section beside what it configures, the
//!   checked [`config::Settings`] every part starts from, and the layered loading.
//!
//! The binary (`main.rs`) only parses the command line; each command is a function here:
//! [`agent::run`], [`config::print`], [`config::check`], [`audit::verify`], [`pki`],
//! [`plugins::tools`], [`sim::SimCommand`]. Everything here does I/O; the logic it drives lives
//! in `wedsync-core` and `wedsync-mesh`, which do none.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod actuators;
pub mod agent;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod calendar;
pub mod clock;
pub mod config;
pub mod decisions;
pub mod engine;
pub mod fleet;
pub mod fleet_sim;
pub mod host;
pub mod ingest;
pub mod logging;
pub mod pki;
pub mod plugins;
pub mod process;
pub mod quic_fleet;
pub mod sim;
pub mod state;
pub mod store;
pub mod telemetry;
