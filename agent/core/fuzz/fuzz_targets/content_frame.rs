//! Fuzzes the viral-content exchange's frame decoder (member sketches, regional sketches and
//! hints from peers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_core::content::ViralConfig;
use wedsync_mesh::content::ContentExchange;

fuzz_target!(|data: &[u8]| {
    let mut exchange = ContentExchange::new(ViralConfig::default());
    let _ = exchange.handle(1_000, data);
    let _ = exchange.hints();
    let _ = exchange.top(100);
});
