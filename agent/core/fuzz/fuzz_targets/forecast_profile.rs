//! Fuzzes the decoder of stored forecasters and bare weekly profiles (read back from the state
//! database).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_core::engine::forecast::{Forecaster, SeasonalMultipliers, TimeZone};

fuzz_target!(|data: &[u8]| {
    if let Ok(profile) = Forecaster::from_bytes(data) {
        let peak = profile.peak_over(1_780_000_000_000, std::time::Duration::from_secs(1800), 0.9, &TimeZone::UTC, &SeasonalMultipliers::default());
        if let Some(peak) = peak {
            assert!(peak.point.is_finite() && peak.point >= 0.0);
            assert!(peak.upper.is_finite() && peak.upper >= 0.0);
        }
        // A decoded profile encodes again.
        assert!(profile.to_bytes().is_ok());
    }
});
