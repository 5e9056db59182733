//! Test guest `TRAP`: `decide` executes the `unreachable` instruction.

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

/// The policy.
pub struct Trap;

impl Policy for Trap {
    fn describe() -> PluginInfo {
        PluginInfo::builder("trap", "0.1.0").description("decide traps").build()
    }

    fn configure(_setup: &Setup) -> Result<Self, String> {
        Ok(Trap)
    }

    fn decide(&mut self, _round: &Round) -> Verdict {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        std::process::abort();
    }
}

wedsync_sdk::export!(Trap);
