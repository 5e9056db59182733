//! Fuzzes what an `exec` actuator's observe command prints and a webhook answers: a pool size
//! (`{"units": N}` or `{"replicas": N}`) or nothing, never a panic or a made-up number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_agent::actuators::reported_size;

fuzz_target!(|data: &[u8]| {
    if let Some(units) = reported_size(data) {
        let value: serde_json::Value = serde_json::from_slice(data).expect("a size comes from JSON");
        let said = value.get("units").or_else(|| value.get("replicas")).and_then(serde_json::Value::as_u64);
        assert_eq!(said, Some(u64::from(units)));
    }
});
