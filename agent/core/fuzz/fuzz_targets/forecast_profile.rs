//! Fuzzes the decoder of stored weekly profiles (read back from the state database).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_core::engine::forecast::{SeasonalMultipliers, TimeZone, WeeklyProfile};

fuzz_target!(|data: &[u8]| {
    if let Ok(profile) = WeeklyProfile::from_bytes(data) {
        let peak = profile.peak_over(1_780_000_000_000, std::time::Duration::from_secs(1800), &TimeZone::UTC, &SeasonalMultipliers::default());
        if let Some(peak) = peak {
            assert!(peak.is_finite() && peak >= 0.0);
        }
        // A decoded profile encodes again.
        assert!(profile.to_bytes().is_ok());
    }
});
