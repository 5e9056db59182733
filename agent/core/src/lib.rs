//! WedSync Edge core: the parts of the agent that never touch a socket, a file or a clock.
//!
//! * [`domain`]: traffic classes and other words of the domain.
//! * [`time`]: the caller-supplied monotonic timestamp every sans-IO part takes.
//! * [`statsd`]: a zero-copy DogStatsD/StatsD line parser for untrusted datagrams.
//! * [`store`]: the bounded in-memory metric store with windowed queries.
//! * [`engine`]: the decision engine, a state machine from demand and calendar to decisions.
//! * [`replay`]: runs the engine over a demand trace against a capacity model and scores it.
//!
//! The daemon drives these with real time and real I/O; tests, benches, trace replay and the
//! fleet simulator (`wedsync-sim`) drive them with virtual time. All run the same code.
//!
//! The core keeps only the settings it runs on (the engine's [`engine::EngineSettings`] and
//! [`engine::pool::PoolSpec`], the store's [`store::StoreLimits`]); the agent's configuration
//! (files, environment, validation) belongs to the daemon (`wedsync_agent::config`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alerts;
pub mod baseline;
pub mod content;
pub mod domain;
pub mod engine;
pub mod replay;
pub mod statsd;
pub mod store;
pub mod time;

pub use domain::TrafficClass;
pub use time::Timestamp;
