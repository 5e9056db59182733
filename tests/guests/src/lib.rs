//! Policy components for the plugin host's tests and benchmarks, built from the crates under
//! `tests/guests/crates/` for `wasm32-wasip2` during the normal build (see `build.rs`).
//!
//! Each constant is a complete component binary exporting `wedsync:policy/policy@0.1.0`. Every
//! guest behaves in `describe` and `configure` (except [`FAILS_CONFIGURE`]) and misbehaves, if at
//! all, in `decide`.

macro_rules! guest {
    ($package:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $package, ".wasm"))
    };
}

/// `empty`: `decide` returns an empty verdict (the empty-call benchmark).
pub const EMPTY: &[u8] = guest!("wedsync-guest-empty");

/// `infinite-loop`: `decide` never returns.
pub const INFINITE_LOOP: &[u8] = guest!("wedsync-guest-infinite-loop");

/// `memory-bomb`: `decide` allocates (and writes) 1 MiB blocks until it is stopped.
pub const MEMORY_BOMB: &[u8] = guest!("wedsync-guest-memory-bomb");

/// `trap`: `decide` executes `unreachable`.
pub const TRAP: &[u8] = guest!("wedsync-guest-trap");

/// `panic`: `decide` panics (a trap, since guests build with `panic = "abort"`).
pub const PANIC: &[u8] = guest!("wedsync-guest-panic");

/// `huge-output`: `decide` returns about 4 MiB (config `{"mib": N}` for another size) of
/// adjustments, vetoes with 1 KiB reasons and cache hints with 256-byte keys.
pub const HUGE_OUTPUT: &[u8] = guest!("wedsync-guest-huge-output");

/// `extra-import`: imports `wedsync:evil/net` (`connect: func(address: string) -> bool`) besides
/// the log and WASI, and calls it in `decide`; the host must refuse it at load.
pub const EXTRA_IMPORT: &[u8] = guest!("wedsync-guest-extra-import");

/// `large`: a valid policy of about 200 KB (a 160 KiB table it reads every round; raises each
/// pool to `min + 0..=3` units).
pub const LARGE: &[u8] = guest!("wedsync-guest-large");

/// `fails-configure`: `configure` returns `Err(`[`FAILS_CONFIGURE_MESSAGE`]`)`.
pub const FAILS_CONFIGURE: &[u8] = guest!("wedsync-guest-fails-configure");

/// The error `fails-configure` returns from `configure`.
pub const FAILS_CONFIGURE_MESSAGE: &str = "fails-configure: this test guest always refuses its configuration";

/// `counter` version `1.0.0`: raises every pool to [`VERSION_A_TARGET`] units and adds a cache
/// hint `counter-1.0.0:<rounds this instance decided>` (ttl 1).
pub const VERSION_A: &[u8] = guest!("wedsync-guest-version-a");

/// `counter` version `2.0.0`: raises every pool to [`VERSION_B_TARGET`] units and adds a cache
/// hint `counter-2.0.0:<rounds this instance decided>` (ttl 1).
pub const VERSION_B: &[u8] = guest!("wedsync-guest-version-b");

/// The target `VERSION_A` raises every pool to.
pub const VERSION_A_TARGET: u32 = 11;

/// The target `VERSION_B` raises every pool to.
pub const VERSION_B_TARGET: u32 = 22;

/// Every guest by its plugin name (`describe().name`; `counter` twice, for the two versions).
pub const ALL: &[(&str, &[u8])] = &[
    ("empty", EMPTY),
    ("infinite-loop", INFINITE_LOOP),
    ("memory-bomb", MEMORY_BOMB),
    ("trap", TRAP),
    ("panic", PANIC),
    ("huge-output", HUGE_OUTPUT),
    ("extra-import", EXTRA_IMPORT),
    ("large", LARGE),
    ("fails-configure", FAILS_CONFIGURE),
    ("counter", VERSION_A),
    ("counter", VERSION_B),
];
