//! Fuzzes the replay trace parser: any text parses or is rejected with a line number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_core::replay::Trace;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(trace) = Trace::parse("fuzz", &text) {
        assert!(!trace.rows.is_empty());
        assert!(trace.rows.windows(2).all(|w| w[0].0 < w[1].0));
    }
});
