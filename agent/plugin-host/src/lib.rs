//! The WedSync Edge plugin host: runs sandboxed WebAssembly policy plugins.
//!
//! A plugin is a WASI 0.2 component exporting the `wedsync:policy/policy@0.1.0` world
//! (`wit/policy.wit`). The host keeps one wasmtime [`Engine`](wasmtime::Engine) (pooling
//! allocator, epoch interruption), one `Store` and a cached `InstancePre` per plugin, and
//! links WASI 0.2 with no capabilities: no files, no sockets, no environment, no arguments,
//! frozen clocks; stdout, stderr and the `log` import go to `tracing` under the plugin's name,
//! rate-limited. A component that imports anything else is refused at load, naming the import.
//!
//! Each call runs under a wall-clock budget (epoch deadline, default 5 ms), a memory cap
//! (default 16 MiB) and an output cap. A trap, timeout or limit hit discards that plugin's
//! instance (re-instantiated on its next call) and the round goes on without it; repeated
//! failures quarantine the plugin with exponential backoff. Every failure is returned to the
//! caller (to log and audit) and counted.
//!
//! - [`PluginHost`]: `new`, `prepare`/[`Loader`] (verify, compile or load from the
//!   [compiled cache](cache), link), `install` (atomic replace), `decide`, `plugins`.
//! - [`external`]: compiling in another process (a short-lived child), into the compiled
//!   cache, so that compilation leaves no memory behind in the host's process.
//! - [`signing`]: ed25519 keys and detached signatures over a component's SHA-256.
//! - [`inspect`]: what a component is, without installing it.
//! - [`policy`]: the WIT contract's types (`Round`, `Verdict`, `Setup`, …).
//!
//! The API is synchronous; run it on a dedicated thread, never on an async reactor.
#![warn(missing_docs)]

pub mod cache;
mod error;
mod exports;
pub mod external;
mod host;
mod sandbox;
pub mod signing;
mod table;
mod ticker;

pub use cache::CompiledCache;
pub use error::{CacheError, CallFailure, FailureCounts, FailureKind, HostError, LoadError, SignError, truncate_utf8};
pub use external::{ExternalCompileError, ExternalCompiler, compile_into_cache};
pub use host::{
    DetachedInstance, HostSettings, Inspection, Installed, Loader, MAX_CACHE_KEY, PluginHost, PluginOutcome,
    PluginSource, PluginState, PluginStatus, Prepared, QuarantinePolicy, RoundReport, SkipReason, Skipped, Trust,
    inspect, version_order,
};
pub use sandbox::LogRate;

/// The WIT contract (`wit/policy.wit`, package `wedsync:policy@0.1.0`, world `policy`): the
/// generated types, re-exported flat (`policy::Round`, `policy::Verdict`, …).
#[allow(missing_docs, unused_qualifications, clippy::all)]
pub mod policy {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../../wit/policy.wit",
        additional_derives: [PartialEq],
    });

    pub use self::wedsync::policy::log::Level as LogLevel;
    pub use self::wedsync::policy::types::{
        Adjustment, CacheHint, ClassAdmission, ClassFigures, Failover, Hooks, MetricsSummary, PoolId, PoolInfo,
        PoolStatus, PoolTable, PoolUnits, RegionId, RegionInfo, RegionView, TrafficClass, Veto, VetoTarget, Wedding,
    };
    pub use crate::table::PoolRow;
}
