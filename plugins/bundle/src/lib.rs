//! The bundled policy plugins as component binaries, built from `plugins/<name>` for
//! `wasm32-wasip2` during the normal build (`build.rs` runs a nested, cached cargo build; see
//! `wedsync-guest-build`). The agent's embedded default loads them in [`BUNDLED`] order.

/// A bundled plugin: its name (as its `describe()` says) and its component binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundledPlugin {
    /// The plugin's name, `[a-z0-9-]`.
    pub name: &'static str,
    /// The component (`wedsync:policy/policy@0.1.0`).
    pub wasm: &'static [u8],
}

macro_rules! component {
    ($package:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $package, ".wasm"))
    };
}

/// `wedding-day-guard`: protects regions with active weddings.
pub const WEDDING_DAY_GUARD: BundledPlugin =
    BundledPlugin { name: "wedding-day-guard", wasm: component!("wedding-day-guard") };

/// `regional-seasons`: seasons, Saturdays and holidays raise pre-scale floors.
pub const REGIONAL_SEASONS: BundledPlugin =
    BundledPlugin { name: "regional-seasons", wasm: component!("regional-seasons") };

/// `data-residency`: vetoes placements and failovers outside allowed jurisdictions.
pub const DATA_RESIDENCY: BundledPlugin = BundledPlugin { name: "data-residency", wasm: component!("data-residency") };

/// `cost-guard`: keeps wedding-critical off spot and trims non-critical scale-ups past a budget.
pub const COST_GUARD: BundledPlugin = BundledPlugin { name: "cost-guard", wasm: component!("cost-guard") };

/// The bundled plugins in their default order: protection and seasonal floors first, then the
/// residency vetoes, then cost trimming last (so the host's clamps, applied after all plugins,
/// keep what the guards asked for).
pub const BUNDLED: &[BundledPlugin] = &[WEDDING_DAY_GUARD, REGIONAL_SEASONS, DATA_RESIDENCY, COST_GUARD];

/// The bundled plugin with this name.
pub fn find(name: &str) -> Option<&'static BundledPlugin> {
    BUNDLED.iter().find(|p| p.name == name)
}
