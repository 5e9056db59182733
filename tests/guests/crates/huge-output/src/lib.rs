//! Test guest `HUGE_OUTPUT`: `decide` returns megabytes: a long list of adjustments, vetoes with
//! long reasons and cache hints with long keys. The size is `{"mib": N}` in its config (default 4).

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

/// The policy: how many MiB of output to return.
pub struct HugeOutput {
    mib: usize,
}

impl Policy for HugeOutput {
    fn describe() -> PluginInfo {
        PluginInfo::builder("huge-output", "0.1.0").description("decide returns megabytes").build()
    }

    fn configure(setup: &Setup) -> Result<Self, String> {
        Ok(HugeOutput { mib: mib_from_config(&setup.config).unwrap_or(4) })
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let budget = self.mib << 20;
        let mut used = 0;
        let mut v = Verdict::builder();
        let reason = "x".repeat(1024);
        let key = "k".repeat(256);
        let mut i: u32 = 0;
        while used < budget {
            v.raise_target(i % 64, i);
            v.veto_scale_down(i % 64, reason.as_str());
            v.cache_hint(format!("{key}{i}-{}", round.epoch), 60);
            used += 16 + 24 + reason.len() + 12 + key.len();
            i = i.wrapping_add(1);
        }
        v.build()
    }
}

/// `N` from a config such as `{"mib": 8}` (no JSON parser needed for one number).
fn mib_from_config(config: &str) -> Option<usize> {
    let rest = &config[config.find("\"mib\"")? + 5..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

wedsync_sdk::export!(HugeOutput);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_size() {
        assert_eq!(mib_from_config(r#"{"mib": 12}"#), Some(12));
        assert_eq!(mib_from_config("{}"), None);
    }
}
