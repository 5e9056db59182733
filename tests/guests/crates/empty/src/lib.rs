//! Test guest `EMPTY`: the smallest policy; `decide` returns an empty verdict (the empty-call
//! benchmark).

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

/// The policy.
pub struct Empty;

impl Policy for Empty {
    fn describe() -> PluginInfo {
        PluginInfo::builder("empty", "0.1.0").description("does nothing").build()
    }

    fn configure(_setup: &Setup) -> Result<Self, String> {
        Ok(Empty)
    }

    fn decide(&mut self, _round: &Round) -> Verdict {
        Verdict::empty()
    }
}

wedsync_sdk::export!(Empty);
