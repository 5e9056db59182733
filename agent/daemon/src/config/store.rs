//! `[store]`: the bounds of the metric store (the core's [`StoreLimits`]).

use serde::{Deserialize, Serialize};
use wedsync_core::store::StoreLimits;

/// `[store]`: bounds of the metric store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Most application series held at once; new ones past it are refused and counted.
    pub max_series: u64,
    /// Most timer/histogram/distribution series held at once.
    pub max_histogram_series: u64,
    /// Most distinct members tracked per set per 10 s window.
    pub max_set_members: u64,
    /// A series not written for this long is dropped (e.g. `"10m"`).
    pub series_ttl: String,
    /// Half-life of the moving averages (e.g. `"5s"`).
    pub ewma_half_life: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        let limits = StoreLimits::default();
        StoreSection {
            max_series: limits.max_series as u64,
            max_histogram_series: limits.max_histogram_series as u64,
            max_set_members: limits.max_set_members as u64,
            series_ttl: "10m".into(),
            ewma_half_life: "5s".into(),
        }
    }
}
