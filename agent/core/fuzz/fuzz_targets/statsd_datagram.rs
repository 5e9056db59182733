//! Fuzzes the StatsD parser and the metric store behind it with arbitrary datagrams.
//! The first 4 bytes choose the arrival time, so ring rotation is fuzzed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use wedsync_core::Timestamp;
use wedsync_core::statsd::parse_datagram;
use wedsync_core::store::{MetricStore, StoreLimits};

fuzz_target!(|data: &[u8]| {
    let (time, datagram) = data.split_at(data.len().min(4));
    let mut millis = [0u8; 4];
    millis[..time.len()].copy_from_slice(time);
    let now = Timestamp::from_millis(u64::from(u32::from_le_bytes(millis)));
    let limits = StoreLimits { max_series: 16, max_histogram_series: 4, max_set_members: 8, ..StoreLimits::default() };
    let mut store = MetricStore::new(limits);
    parse_datagram(datagram, |result| {
        if let Ok(line) = result {
            let _ = store.record(now, &line);
        }
    });
    for view in store.iter(now) {
        let _ = view.rate(Duration::from_secs(1));
        let _ = view.quantiles(Duration::from_secs(60), &[0.5, 0.99]);
        let _ = view.ewma();
    }
    assert!(store.app_series() <= 16);
});
