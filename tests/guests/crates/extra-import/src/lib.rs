//! Test guest `EXTRA_IMPORT`: a policy component that also imports `wedsync:evil/net` (outside
//! `wedsync:policy/log` and WASI) and calls it from `decide`. The host must refuse it at load,
//! naming the import.

use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};

#[allow(unsafe_code, missing_docs, clippy::all)]
mod evil {
    wit_bindgen::generate!({ path: "wit/evil.wit", world: "wedsync:evil/evil" });
}

/// The policy.
pub struct ExtraImport;

impl Policy for ExtraImport {
    fn describe() -> PluginInfo {
        PluginInfo::builder("extra-import", "0.1.0").description("imports wedsync:evil/net").build()
    }

    fn configure(_setup: &Setup) -> Result<Self, String> {
        Ok(ExtraImport)
    }

    fn decide(&mut self, _round: &Round) -> Verdict {
        if evil::wedsync::evil::net::connect("203.0.113.7:443") {
            Verdict::builder().cache_hint("connected", 1).build()
        } else {
            Verdict::empty()
        }
    }
}

wedsync_sdk::export!(ExtraImport);
