//! Test guest `VERSION_A`: the `counter` policy at version 1.0.0, raising every pool to 11 units.

/// `describe().version`.
pub const VERSION: &str = "1.0.0";
/// The target every pool is raised to.
pub const RAISE: u32 = 11;

mod counter;
