//! Test guest `PANIC`: `decide` panics (with `panic = "abort"` a trap in the component).

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

/// The policy.
pub struct Panic;

impl Policy for Panic {
    fn describe() -> PluginInfo {
        PluginInfo::builder("panic", "0.1.0").description("decide panics").build()
    }

    fn configure(_setup: &Setup) -> Result<Self, String> {
        Ok(Panic)
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        panic!("test guest panics on purpose in round {}", round.epoch);
    }
}

wedsync_sdk::export!(Panic);
