//! Test guest `MEMORY_BOMB`: `decide` keeps allocating 1 MiB blocks (and touching them) until the
//! host's memory cap stops it.

use std::hint::black_box;

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

/// The policy.
pub struct MemoryBomb;

impl Policy for MemoryBomb {
    fn describe() -> PluginInfo {
        PluginInfo::builder("memory-bomb", "0.1.0").description("decide keeps allocating").build()
    }

    fn configure(_setup: &Setup) -> Result<Self, String> {
        Ok(MemoryBomb)
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            // `vec![x; n]` with a non-zero byte writes every page, so the memory is really used.
            blocks.push(vec![(round.epoch as u8) | 1; 1 << 20]);
            black_box(&blocks);
        }
    }
}

wedsync_sdk::export!(MemoryBomb);
