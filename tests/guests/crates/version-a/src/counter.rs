//! The `counter` policy shared by `version-a` and `version-b` (each crate sets `VERSION` and
//! `RAISE`): it raises every pool to `RAISE` units and reports how many rounds this instance has
//! decided as a cache hint `counter-<VERSION>:<n>`, so a hot-reload test sees which version (and
//! which instance) answered.

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

use super::{RAISE, VERSION};

/// The policy: rounds decided by this instance.
pub struct Counter {
    rounds: u64,
}

impl Policy for Counter {
    fn describe() -> PluginInfo {
        PluginInfo::builder("counter", VERSION)
            .description("raises every pool to a fixed target; counts rounds")
            .build()
    }

    fn configure(_setup: &Setup) -> Result<Self, String> {
        Ok(Counter { rounds: 0 })
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        self.rounds += 1;
        let mut v = Verdict::builder();
        for pool in &round.pools {
            v.raise_target(pool.pool, RAISE);
        }
        v.cache_hint(format!("counter-{VERSION}:{}", self.rounds), 1);
        v.build()
    }
}

wedsync_sdk::export!(Counter);
