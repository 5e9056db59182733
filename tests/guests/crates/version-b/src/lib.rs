//! Test guest `VERSION_B`: the `counter` policy at version 2.0.0, raising every pool to 22 units.

/// `describe().version`.
pub const VERSION: &str = "2.0.0";
/// The target every pool is raised to.
pub const RAISE: u32 = 22;

#[path = "../../version-a/src/counter.rs"]
mod counter;
