//! Shared inputs for the WedSync Edge benches: realistic StatsD traffic.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Builds datagrams of at most `max_bytes` each holding `lines` StatsD lines in total, over
/// `series` distinct series: 70% counters, 20% timers, 10% gauges, with class/region/wedding
/// tags, some sampled. Deterministic.
pub fn traffic(lines: usize, series: usize, max_bytes: usize) -> Vec<Vec<u8>> {
    const CLASSES: [&str; 5] = ["wedding-critical", "wedding-planning", "registration", "media", "background"];
    const REGIONS: [&str; 4] = ["eu-west", "us-east", "ap-south", "local"];
    let mut datagrams = Vec::new();
    let mut current = Vec::with_capacity(max_bytes);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..lines {
        // xorshift: cheap, deterministic variety in values.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let s = i % series.max(1);
        let class = CLASSES[s % CLASSES.len()];
        let region = REGIONS[(s / 5) % REGIONS.len()];
        let line = match s % 10 {
            0..=6 => format!("svc{}.requests:1|c|#class:{class},region:{region},wedding:w-{}\n", s / 20, s % 97),
            7 | 8 => {
                format!("svc{}.latency:{}.{}|ms|#class:{class},region:{region}\n", s / 20, state % 400, state % 10)
            }
            _ => format!("svc{}.queue:{}|g|#region:{region}\n", s / 20, state % 1000),
        };
        let line = if i % 16 == 0 { line.replacen("|#", "|@0.5|#", 1) } else { line };
        if current.len() + line.len() > max_bytes && !current.is_empty() {
            datagrams.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(line.as_bytes());
    }
    if !current.is_empty() {
        datagrams.push(current);
    }
    datagrams
}

/// Number of lines in `datagrams`.
pub fn line_count(datagrams: &[Vec<u8>]) -> usize {
    datagrams.iter().map(|d| d.iter().filter(|&&b| b == b'\n').count()).sum()
}
