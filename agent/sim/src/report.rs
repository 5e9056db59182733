//! The report of a fleet run: `report.md` (a table per region, the engine beside the HPA
//! baseline; the fleet's figures; the verdict), `report.json` (the same figures), and per region
//! a demand-vs-capacity plot and a latency plot, each as SVG and PNG.

use crate::fleet::{FleetFigures, FleetResult, RegionFigures, RegionResult};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use wedsync_core::TrafficClass;
use wedsync_plot::{Chart, LineStyle, Marker, Series, Span, Tick};

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The JSON could not be made.
    #[error("report.json: {0}")]
    Json(#[from] serde_json::Error),
    /// A plot could not be drawn.
    #[error("plot {name}: {source}")]
    Plot {
        /// The plot.
        name: String,
        /// What went wrong.
        source: wedsync_plot::PlotError,
    },
}

/// One criterion of the verdict: the engine's figure, the baseline's, and whether the engine
/// met it.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    /// What is compared.
    pub what: &'static str,
    /// The engine's figure.
    pub engine: f64,
    /// The baseline's figure.
    pub hpa: f64,
    /// The rule the engine had to meet.
    pub rule: &'static str,
    /// Whether it did.
    pub met: bool,
}

/// Whether the engine beat the baseline on what the project claims.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Each criterion.
    pub criteria: Vec<Criterion>,
    /// Figures shown beside the criteria but not judged (`met` is always true): the cost at
    /// each side's own prices.
    pub information: Vec<Criterion>,
    /// All criteria met.
    pub won: bool,
}

/// The most unit-hours the engine may hold, as a multiple of the baseline's.
pub const UNIT_HOURS_RATIO: f64 = 1.1;
/// The longest the engine may take from demand falling to capacity within 1.3× need, seconds.
pub const FALL_TO_NEED_LIMIT_S: f64 = 120.0;

/// The verdict over the fleet: the slowest region's time to capacity, the worst region's
/// wedding-critical p99, wedding-critical shed and unserved requests, unit-hours held and their
/// cost at the same prices (all regions), and the worst region's time from demand falling to
/// capacity within 1.3× need; the cost at each side's own prices as information.
pub fn verdict(result: &FleetResult) -> Verdict {
    let with_onset = || result.regions.iter().filter(|r| r.onset_s.is_some() && r.down_at_s.is_none());
    let slowest = |f: fn(&RegionResult) -> &RegionFigures| {
        with_onset().map(|r| f(r).onset_to_capacity_s.unwrap_or(f64::INFINITY)).fold(0.0, f64::max)
    };
    let (engine_ttc, hpa_ttc) = (slowest(|r| &r.engine), slowest(|r| &r.hpa));
    let worst = |f: fn(&RegionResult) -> &RegionFigures, figure: fn(&RegionFigures) -> f64| {
        result.regions.iter().map(|r| figure(f(r))).fold(0.0, f64::max)
    };
    let p99 = |f: &RegionFigures| f.p99_latency_ms[0];
    let (engine_p99, hpa_p99) = (worst(|r| &r.engine, p99), worst(|r| &r.hpa, p99));
    let fall = |f: &RegionFigures| f.fall_to_need_s;
    let (engine_fall, hpa_fall) = (worst(|r| &r.engine, fall), worst(|r| &r.hpa, fall));
    let sum = |f: fn(&RegionResult) -> &RegionFigures, figure: fn(&RegionFigures) -> f64| {
        result.regions.iter().map(|r| figure(f(r))).sum::<f64>()
    };
    let shed = |f: &RegionFigures| f.shed_fraction[0] + f.wedding_critical_unserved;
    let (engine_shed, hpa_shed) = (sum(|r| &r.engine, shed), sum(|r| &r.hpa, shed));
    let hours = |f: &RegionFigures| f.unit_hours;
    let (engine_hours, hpa_hours) = (sum(|r| &r.engine, hours), sum(|r| &r.hpa, hours));
    let same = |f: &RegionFigures| f.same_price_cost;
    let (engine_same, hpa_same) = (sum(|r| &r.engine, same), sum(|r| &r.hpa, same));
    let own = |f: &RegionFigures| f.cost;
    let (engine_cost, hpa_cost) = (sum(|r| &r.engine, own), sum(|r| &r.hpa, own));
    let criteria = vec![
        Criterion {
            what: "time to capacity, slowest region (s)",
            engine: engine_ttc,
            hpa: hpa_ttc,
            rule: "engine <= baseline",
            met: engine_ttc <= hpa_ttc,
        },
        Criterion {
            what: "wedding-critical p99 latency, worst region (ms)",
            engine: engine_p99,
            hpa: hpa_p99,
            rule: "engine <= baseline",
            met: engine_p99 <= hpa_p99,
        },
        Criterion {
            what: "wedding-critical shed or unserved (fraction + requests)",
            engine: engine_shed,
            hpa: hpa_shed,
            rule: "engine = 0",
            met: engine_shed == 0.0,
        },
        Criterion {
            what: "unit-hours held",
            engine: engine_hours,
            hpa: hpa_hours,
            rule: "engine <= 1.1 x baseline",
            met: engine_hours <= hpa_hours * UNIT_HOURS_RATIO,
        },
        Criterion {
            what: "cost at the same prices (on demand)",
            engine: engine_same,
            hpa: hpa_same,
            rule: "engine <= 1.1 x baseline",
            met: engine_same <= hpa_same * UNIT_HOURS_RATIO,
        },
        Criterion {
            what: "demand falling to capacity within 1.3x need, worst region (s)",
            engine: engine_fall,
            hpa: hpa_fall,
            rule: "engine <= 120 s",
            met: engine_fall <= FALL_TO_NEED_LIMIT_S,
        },
    ];
    let information = vec![Criterion {
        what: "cost at each side's own prices (engine: its purchase mix)",
        engine: engine_cost,
        hpa: hpa_cost,
        rule: "information",
        met: true,
    }];
    let won = criteria.iter().all(|c| c.met);
    Verdict { criteria, information, won }
}

#[derive(Serialize)]
struct RegionJson<'a> {
    name: &'a str,
    nodes: usize,
    onset_s: Option<f64>,
    down_at_s: Option<f64>,
    engine: &'a RegionFigures,
    hpa: &'a RegionFigures,
}

#[derive(Serialize)]
struct ReportJson<'a> {
    scenario: &'a str,
    about: &'a str,
    start: String,
    duration_s: f64,
    round_ms: u128,
    nodes: usize,
    mesh: &'a str,
    policies: bool,
    elapsed_s: f64,
    classes: [&'static str; 5],
    regions: Vec<RegionJson<'a>>,
    fleet: &'a FleetFigures,
    verdict: Verdict,
    plots: Vec<String>,
}

/// Writes `report.md`, `report.json` and the plots into `out`; returns the files written.
pub fn write(result: &FleetResult, out: &Path, plots: bool) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(out).map_err(|source| ReportError::Io { path: out.to_owned(), source })?;
    let mut files = Vec::new();
    let mut plot_names = Vec::new();
    if plots {
        for region in &result.regions {
            for (kind, chart) in [("demand", demand_chart(region)), ("latency", latency_chart(region))] {
                let name = format!("{kind}-{}", region.name);
                let (svg, png) = wedsync_plot::write(&chart, &out.join(&name))
                    .map_err(|source| ReportError::Plot { name: name.clone(), source })?;
                plot_names.push(name);
                files.push(svg);
                files.push(png);
            }
        }
    }
    let verdict = verdict(result);
    let json = ReportJson {
        scenario: &result.scenario.name,
        about: &result.scenario.about,
        start: result.scenario.start.to_string(),
        duration_s: result.scenario.duration_s(),
        round_ms: result.scenario.round.as_millis(),
        nodes: result.fleet.nodes,
        mesh: &result.fleet.mesh,
        policies: result.policies,
        elapsed_s: result.elapsed_s,
        classes: TrafficClass::ALL.map(TrafficClass::as_str),
        regions: result
            .regions
            .iter()
            .map(|r| RegionJson {
                name: &r.name,
                nodes: r.nodes,
                onset_s: r.onset_s,
                down_at_s: r.down_at_s,
                engine: &r.engine,
                hpa: &r.hpa,
            })
            .collect(),
        fleet: &result.fleet,
        verdict: verdict.clone(),
        plots: plot_names.clone(),
    };
    let path = out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .map_err(|source| ReportError::Io { path: path.clone(), source })?;
    files.push(path);
    let path = out.join("report.md");
    std::fs::write(&path, markdown(result, &verdict, &plot_names))
        .map_err(|source| ReportError::Io { path: path.clone(), source })?;
    files.push(path);
    Ok(files)
}

/// How a row of the region table shows one side's figure.
type Shown = fn(&RegionFigures) -> String;

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s:.1}"))
}

fn ms(v: f64) -> String {
    if v >= 10_000.0 { format!("{:.1} s", v / 1000.0) } else { format!("{v:.0} ms") }
}

/// The Markdown report.
pub fn markdown(result: &FleetResult, verdict: &Verdict, plots: &[String]) -> String {
    let s = &result.scenario;
    let mut md = String::new();
    let _ = writeln!(md, "# Simulation: {}\n\n{}\n", s.name, s.about);
    let _ = writeln!(
        md,
        "{} nodes in {} regions, {}, from {} for {:.0} min in rounds of {} ms; the mesh: {}. \
         Took {:.1} s.\n",
        result.fleet.nodes,
        s.regions.len(),
        if result.policies { "each with its plugins" } else { "the engines without plugins" },
        s.start,
        s.duration_s() / 60.0,
        s.round.as_millis(),
        result.fleet.mesh,
        result.elapsed_s
    );
    if result.fleet.max_lag_s > 1.0 {
        let _ = writeln!(
            md,
            "**The run fell up to {:.1} s behind the mesh's clock**: the machine could not keep up \
             with this speed, so the fleet reacted later than it would have. Run with a lower `--speed`.\n",
            result.fleet.max_lag_s
        );
    }
    let _ = writeln!(md, "## Verdict: the engine {}\n", if verdict.won { "won" } else { "did not win" });
    let _ = writeln!(md, "| Criterion | Engine | HPA baseline | Rule | Met |\n|---|---|---|---|---|");
    for c in &verdict.criteria {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {:.3} | {} | {} |",
            c.what,
            c.engine,
            c.hpa,
            c.rule,
            if c.met { "yes" } else { "**no**" }
        );
    }
    for c in &verdict.information {
        let _ = writeln!(md, "| {} | {:.3} | {:.3} | {} | — |", c.what, c.engine, c.hpa, c.rule);
    }
    let _ = writeln!(md);
    for r in &result.regions {
        let _ = writeln!(md, "## Region {} ({} nodes)\n", r.name, r.nodes);
        if let Some(onset) = r.onset_s {
            let _ = write!(md, "Onset at {:.0} s. ", onset);
        }
        if let Some(down) = r.down_at_s {
            let _ = write!(md, "Down from {:.0} s. ", down);
        }
        let _ = writeln!(md, "\n\n| | Engine | HPA baseline |\n|---|---|---|");
        let row = |md: &mut String, name: &str, e: String, h: String| {
            let _ = writeln!(md, "| {name} | {e} | {h} |");
        };
        let (e, h) = (&r.engine, &r.hpa);
        row(&mut md, "peak demand (req/s)", format!("{:.0}", e.peak_demand), format!("{:.0}", h.peak_demand));
        row(&mut md, "peak capacity (req/s)", format!("{:.0}", e.peak_capacity), format!("{:.0}", h.peak_capacity));
        row(&mut md, "onset to scale-up decision (s)", secs(e.onset_to_decision_s), secs(h.onset_to_decision_s));
        row(&mut md, "onset to capacity (s)", secs(e.onset_to_capacity_s), secs(h.onset_to_capacity_s));
        row(
            &mut md,
            "under-provisioned (unit-s)",
            format!("{:.0}", e.under_provisioned_unit_seconds),
            format!("{:.0}", h.under_provisioned_unit_seconds),
        );
        for (i, class) in TrafficClass::ALL.iter().enumerate() {
            row(
                &mut md,
                &format!("{} shed / p99", class.as_str()),
                format!("{:.2}% / {}", e.shed_fraction[i] * 100.0, ms(e.p99_latency_ms[i])),
                format!("{:.2}% / {}", h.shed_fraction[i] * 100.0, ms(h.p99_latency_ms[i])),
            );
        }
        let capacity_rows: [(&str, Shown); 5] = [
            ("wedding-critical unserved (req)", |f| format!("{:.0}", f.wedding_critical_unserved)),
            ("unit-hours held", |f| format!("{:.2}", f.unit_hours)),
            ("cost at the same prices (on demand)", |f| format!("{:.2}", f.same_price_cost)),
            ("cost at its own prices", |f| format!("{:.2}", f.cost)),
            ("demand falling to capacity within 1.3x need (s)", |f| format!("{:.1}", f.fall_to_need_s)),
        ];
        for (name, show) in capacity_rows {
            row(&mut md, name, show(e), show(h));
        }
        row(&mut md, "scaling decisions", e.decisions.to_string(), h.decisions.to_string());
        let _ = writeln!(md);
        for kind in ["demand", "latency"] {
            let name = format!("{kind}-{}", r.name);
            if plots.contains(&name) {
                let _ = writeln!(md, "![{name}]({name}.svg)\n");
            }
        }
    }
    let f = &result.fleet;
    let _ = writeln!(md, "## Fleet\n\n| Figure | Value |\n|---|---|");
    let _ = writeln!(md, "| nodes | {} |", f.nodes);
    let _ = writeln!(md, "| join convergence (s) | {} |", secs(f.join_convergence_s));
    for (k, d) in f.failure_detection_s.iter().enumerate() {
        let _ = writeln!(md, "| outage {}: failure detected by all (s) | {} |", k + 1, secs(*d));
        let _ = writeln!(md, "| outage {}: failover load applied (s) | {} |", k + 1, secs(f.failover_applied_s[k]));
        let _ = writeln!(md, "| outage {}: membership converged again (s) | {} |", k + 1, secs(f.reconvergence_s[k]));
    }
    let _ = writeln!(md, "| coordinator changes | {} |", f.coordinator_changes);
    let _ = writeln!(md, "| coordinator agreement | {:.1}% |", f.coordinator_agreement * 100.0);
    let _ = writeln!(md, "| mesh bytes per node per second | {:.0} |", f.bytes_per_node_per_s);
    let _ = writeln!(md, "| requests with nowhere to go | {:.0} |", f.unroutable_requests);
    let _ = writeln!(md, "| run behind the mesh's clock, worst (s) | {:.2} |", f.max_lag_s);
    let _ = writeln!(
        md,
        "\nThe baseline is Kubernetes' HPA with its documented defaults (15 s sync on a 15 s old \
         metric, 10% tolerance, at most doubling or +4 per 15 s, 300 s scale-down stabilization, \
         no prediction, no classes) on the same traffic and the same capacity model. Latency comes \
         from a queueing model (20 ms of service, an M/M/1 wait, the backlog ahead). Capacity is \
         held from the moment it is asked for; the same-price cost puts both sides' unit-hours on \
         the on-demand price list. The time from demand falling to capacity within 1.3x need is, \
         on the worst node, how long capacity serving above 1.3x what demand needs at the target \
         utilization outlasted the last demand that needed it (capacity raised since then, bought \
         ahead, counts from when it exceeded the need, unless demand then rose to it); while a wedding \
         is active, capacity up to the protected floor and the wedding-critical reserve (the other \
         classes within 80% of capacity) is not counted."
    );
    md
}

fn demand_chart(r: &RegionResult) -> Chart {
    let s = &r.series;
    let markers: Vec<Marker> =
        r.onset_s.map(|onset| Marker { x: onset / 60.0, label: "onset".into() }).into_iter().collect();
    let ticks: Vec<Tick> = s.decisions.iter().map(|(t, up)| Tick { x: *t, up: *up }).collect();
    let end = s.demand.last().map_or(0.0, |(t, _)| *t);
    let spans =
        r.down_at_s.map(|down| vec![Span { from: down / 60.0, to: end, label: "outage".into() }]).unwrap_or_default();
    Chart {
        title: format!("{}: demand and capacity (engine decisions: red up, blue down)", r.name),
        x_label: "minutes since start".into(),
        y_label: "requests/s".into(),
        log_y: false,
        series: vec![
            Series { name: "demand".into(), points: s.demand.clone(), style: LineStyle::Solid },
            Series { name: "capacity, engine".into(), points: s.capacity.clone(), style: LineStyle::Step },
            Series { name: "capacity, HPA".into(), points: s.hpa_capacity.clone(), style: LineStyle::Dashed },
        ],
        markers,
        spans,
        ticks,
    }
}

fn latency_chart(r: &RegionResult) -> Chart {
    let s = &r.series;
    let mut series: Vec<Series> = TrafficClass::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| !s.latency[*i].is_empty())
        .map(|(i, class)| Series {
            name: format!("{}, engine", class.as_str()),
            points: s.latency[i].clone(),
            style: LineStyle::Solid,
        })
        .collect();
    if !s.hpa_latency[0].is_empty() {
        series.push(Series {
            name: "every class, HPA".into(),
            points: s.hpa_latency[0].clone(),
            style: LineStyle::Dashed,
        });
    }
    Chart {
        title: format!("{}: latency per class (worst node)", r.name),
        x_label: "minutes since start".into(),
        y_label: "ms".into(),
        log_y: true,
        series,
        markers: Vec::new(),
        spans: Vec::new(),
        ticks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{RunOptions, Scenario};

    #[test]
    fn the_report_has_a_table_per_region_the_fleet_figures_the_verdict_and_plots() {
        let result = crate::run(&Scenario::load("quick").unwrap(), &RunOptions::default(), None, |_| {}).unwrap();
        let out = std::env::temp_dir().join(format!("wedsync-sim-report-{}", std::process::id()));
        let files = write(&result, &out, true).unwrap();
        // Two plots per region, each as SVG and PNG, then the JSON and the Markdown.
        assert_eq!(files.len(), 3 * 2 * 2 + 2, "{files:?}");
        for file in &files {
            assert!(std::fs::metadata(file).unwrap().len() > 100, "{}", file.display());
        }
        let png = std::fs::read(out.join("demand-eu-west.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = std::fs::read_to_string(out.join("latency-eu-west.svg")).unwrap();
        assert!(svg.contains("wedding-critical, engine") && svg.contains("every class, HPA"));

        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(md.contains("## Verdict: the engine won"), "{md}");
        for region in ["eu-west", "eu-central", "us-east"] {
            assert!(md.contains(&format!("## Region {region} (1 nodes)")), "{md}");
            assert!(md.contains(&format!("![demand-{region}](demand-{region}.svg)")), "{md}");
        }
        assert!(md.contains("| onset to capacity (s) |") && md.contains("| outage 1: failure detected by all (s) |"));

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["scenario"], "quick");
        assert_eq!(json["regions"].as_array().unwrap().len(), 3);
        assert_eq!(json["verdict"]["won"], true);
        assert_eq!(json["regions"][0]["engine"]["wedding_critical_unserved"], 0.0);
        assert!(json["fleet"]["failure_detection_s"][0].as_f64().unwrap() > 0.0);
        assert_eq!(json["plots"].as_array().unwrap().len(), 6);
        let _ = std::fs::remove_dir_all(&out);
    }
}
