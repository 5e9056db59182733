//! Fuzzes the content sketch decoder with arbitrary peer bytes: decoding never panics, and a
//! sketch that decodes re-encodes within the wire limit, decodes again, and merges with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_core::content::{ContentSketch, MAX_SKETCH_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(sketch) = ContentSketch::decode(data) else {
        return;
    };
    let bytes = sketch.encode();
    assert!(bytes.len() <= MAX_SKETCH_BYTES);
    let again = ContentSketch::decode(&bytes).expect("a re-encoded sketch decodes");
    assert_eq!(again.total_weight(), sketch.total_weight());
    let mut merged = sketch.clone();
    merged.merge(&again);
    let top = merged.top(100);
    assert!(top.windows(2).all(|pair| pair[0].estimate >= pair[1].estimate));
    assert!(top.iter().all(|row| row.lower_bound <= row.upper_bound));
});
