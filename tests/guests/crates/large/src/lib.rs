//! Test guest `LARGE`: a valid policy whose component is about 200 KB, for the reload benchmark.
//! It carries a 160 KB table of pseudo-random figures (incompressible, so it is really in the
//! binary) and reads it every round: each pool is raised to `min + table[epoch mod len] mod 4`.

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

const LEN: usize = 40_960;

/// 160 KiB of xorshift output, computed at compile time and stored in the data section.
static TABLE: [u32; LEN] = table();

const fn table() -> [u32; LEN] {
    let mut out = [0u32; LEN];
    let mut x: u32 = 0x9e37_79b9;
    let mut i = 0;
    while i < LEN {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out[i] = x;
        i += 1;
    }
    out
}

/// The policy: each pool's minimum.
pub struct Large {
    mins: Vec<u32>,
}

impl Policy for Large {
    fn describe() -> PluginInfo {
        PluginInfo::builder("large", "0.1.0").description("a 200 KB component that reads a big table").build()
    }

    fn configure(setup: &Setup) -> Result<Self, String> {
        Ok(Large { mins: setup.pools.iter().map(|p| p.min).collect() })
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let mut v = Verdict::builder();
        for pool in &round.pools {
            let index = (round.epoch as usize).wrapping_add(pool.pool as usize) % LEN;
            let min = self.mins.get(pool.pool as usize).copied().unwrap_or(1);
            v.raise_target(pool.pool, min + TABLE[index] % 4);
        }
        v.build()
    }
}

wedsync_sdk::export!(Large);
