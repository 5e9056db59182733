//! Test guest `INFINITE_LOOP`: `decide` never returns (the host's epoch deadline must stop it).

use std::hint::black_box;

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

/// The policy.
pub struct InfiniteLoop;

impl Policy for InfiniteLoop {
    fn describe() -> PluginInfo {
        PluginInfo::builder("infinite-loop", "0.1.0").description("decide never returns").build()
    }

    fn configure(_setup: &Setup) -> Result<Self, String> {
        Ok(InfiniteLoop)
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let mut spins = round.epoch;
        loop {
            spins = black_box(spins.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

wedsync_sdk::export!(InfiniteLoop);
