//! Test guest `FAILS_CONFIGURE`: `configure` always returns an error.

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

/// The message `configure` returns.
pub const MESSAGE: &str = "fails-configure: this test guest always refuses its configuration";

/// The policy.
pub struct FailsConfigure;

impl Policy for FailsConfigure {
    fn describe() -> PluginInfo {
        PluginInfo::builder("fails-configure", "0.1.0").description("configure always fails").build()
    }

    fn configure(_setup: &Setup) -> Result<Self, String> {
        Err(MESSAGE.to_owned())
    }

    fn decide(&mut self, _round: &Round) -> Verdict {
        Verdict::empty()
    }
}

wedsync_sdk::export!(FailsConfigure);
