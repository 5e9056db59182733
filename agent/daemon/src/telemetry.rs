//! The agent's own metrics and the `/metrics` exposition (OpenMetrics text, which Prometheus
//! scrapes natively), built on `prometheus-client`.
//!
//! Three groups: the agent's counters (ingest, rejects, collection time), the latest host and
//! process sample, and the application aggregates read from the metric store at scrape time
//! (no second copy of the data is kept).

use crate::clock::{Clock, read};
use crate::host::HostSample;
use crate::process::ProcessSample;
use crate::store::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wedsync_core::Timestamp;
use wedsync_core::statsd::{MetricKind, ParseErrorKind};

/// The HTTP content type of [`Telemetry::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label set with one `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// The agent's own counters, cheap to bump from hot paths.
#[derive(Debug, Clone)]
pub struct IngestCounters {
    /// Datagrams received.
    pub datagrams: Counter,
    /// Bytes received.
    pub bytes: Counter,
    /// Lines parsed and stored.
    pub lines: Counter,
    /// Lines rejected by the parser, one counter per [`ParseErrorKind`] in `ALL` order.
    pub rejected_by_parser: Vec<Counter>,
    /// Lines parsed but refused by the store (cardinality caps, unrecordable values).
    pub refused_by_store: Family<ReasonLabel, Counter>,
    /// Socket receive errors.
    pub receive_errors: Counter,
    /// UDP datagrams from a source `statsd.allow` does not admit.
    pub refused_sources: Counter,
    /// Content keys (`content:` tags on counters) counted for the fleet's viral detection.
    pub content_keys: Counter,
    /// Content tags refused (empty, longer than 64 bytes, control characters).
    pub content_refused: Counter,
}

impl IngestCounters {
    /// Counts one parser rejection.
    pub fn reject(&self, kind: ParseErrorKind) {
        if let Some(i) = ParseErrorKind::ALL.iter().position(|k| *k == kind)
            && let Some(counter) = self.rejected_by_parser.get(i)
        {
            counter.inc();
        }
    }
}

/// Latest host and process samples, shared by the collectors, the API and `/metrics`.
#[derive(Debug, Default)]
pub struct HostView {
    /// The latest host sample, once one was taken.
    pub host: Option<HostSample>,
    /// When it was taken.
    pub host_at: Option<Timestamp>,
    /// The latest sample of the agent's own process.
    pub process: Option<ProcessSample>,
}

/// The metric registry and the handles the agent's tasks update.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    /// StatsD ingest counters.
    pub ingest: IngestCounters,
    /// Time taken by one host sample.
    pub host_collect_seconds: Histogram,
    /// Host samples that failed.
    pub host_collect_errors: Counter,
}

impl Telemetry {
    /// Builds the registry with every metric family the agent exposes.
    pub fn new(clock: Clock, store: Arc<Store>, host: Arc<RwLock<HostView>>) -> Self {
        let mut registry = Registry::default();
        registry.register("wedsync_build", "Agent version", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        let rejected = Family::<ReasonLabel, Counter>::default();
        let rejected_by_parser = ParseErrorKind::ALL
            .iter()
            .map(|k| rejected.get_or_create(&ReasonLabel { reason: k.label() }).clone())
            .collect();
        registry.register("wedsync_statsd_rejected_lines", "StatsD lines dropped by the parser, by reason", rejected);
        let ingest = IngestCounters {
            datagrams: Counter::default(),
            bytes: Counter::default(),
            lines: Counter::default(),
            rejected_by_parser,
            refused_by_store: Family::default(),
            receive_errors: Counter::default(),
            refused_sources: Counter::default(),
            content_keys: Counter::default(),
            content_refused: Counter::default(),
        };
        registry.register(
            "wedsync_statsd_content_keys",
            "Counter lines tagged content:KEY counted for viral-content detection",
            ingest.content_keys.clone(),
        );
        registry.register(
            "wedsync_statsd_content_refused",
            "content: tags refused (empty, over 64 bytes or with control characters)",
            ingest.content_refused.clone(),
        );
        registry.register("wedsync_statsd_datagrams", "StatsD datagrams received", ingest.datagrams.clone());
        registry.register("wedsync_statsd_received_bytes", "StatsD bytes received", ingest.bytes.clone());
        registry.register("wedsync_statsd_lines", "StatsD lines parsed and stored", ingest.lines.clone());
        registry.register(
            "wedsync_statsd_refused_lines",
            "StatsD lines parsed but refused by the metric store, by reason",
            ingest.refused_by_store.clone(),
        );
        registry.register(
            "wedsync_statsd_refused_datagrams",
            "StatsD datagrams dropped because their source is not in statsd.allow",
            ingest.refused_sources.clone(),
        );
        registry.register(
            "wedsync_statsd_receive_errors",
            "Errors from the StatsD socket",
            ingest.receive_errors.clone(),
        );
        let host_collect_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 14));
        registry.register(
            "wedsync_host_collect_seconds",
            "Time taken to sample the host from procfs",
            host_collect_seconds.clone(),
        );
        let host_collect_errors = Counter::default();
        registry.register("wedsync_host_collect_errors", "Host samples that failed", host_collect_errors.clone());
        registry.register_collector(Box::new(AgentCollector { clock, store: store.clone() }));
        registry.register_collector(Box::new(HostCollector { host }));
        registry.register_collector(Box::new(AppCollector { clock, store }));
        Telemetry { registry, ingest, host_collect_seconds, host_collect_errors }
    }

    /// The registry, where each part of the agent registers its own metrics and collectors
    /// (the decision thread, the actuators, the mesh, the audit trail): telemetry knows none
    /// of them.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Renders every metric in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(64 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

pub(crate) fn gauge<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one counter family from constant values.
pub(crate) fn counter<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Debug)]
struct AgentCollector {
    clock: Clock,
    store: Arc<Store>,
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (series, app_series, stats, limits) = {
            let store = self.store.lock_all();
            (store.len(), store.app_series(), store.stats(), store.limits())
        };
        let none: [(&str, &str); 0] = [];
        gauge(
            &mut encoder,
            "wedsync_uptime_seconds",
            "Seconds since the agent started",
            [(none, self.clock.uptime().as_secs_f64())],
        )?;
        gauge(
            &mut encoder,
            "wedsync_store_series",
            "Series held by the metric store, by origin",
            [([("origin", "client")], app_series as f64), ([("origin", "internal")], (series - app_series) as f64)],
        )?;
        gauge(
            &mut encoder,
            "wedsync_store_series_limit",
            "Configured caps of the metric store",
            [
                ([("kind", "all")], limits.max_series as f64),
                ([("kind", "histogram")], limits.max_histogram_series as f64),
            ],
        )?;
        let mut refused = encoder.encode_descriptor(
            "wedsync_store_refused_series",
            "New series refused at a cardinality cap",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (limit, value) in [("all", stats.refused_series), ("histogram", stats.refused_histogram_series)] {
            ConstCounter::new(value).encode(refused.encode_family(&[("limit", limit)])?)?;
        }
        for (name, help, value) in [
            ("wedsync_store_expired_series", "Series dropped after their TTL", stats.expired_series),
            (
                "wedsync_store_set_members_dropped",
                "Set members not counted because a set window was full",
                stats.set_members_dropped,
            ),
        ] {
            let family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct HostCollector {
    host: Arc<RwLock<HostView>>,
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let view = read(&self.host);
        if let Some(p) = &view.process {
            let none: [(&str, &str); 0] = [];
            gauge(
                &mut encoder,
                "wedsync_process_cpu_ratio",
                "The agent's CPU use, as a fraction of one core",
                [(none, p.cpu_fraction)],
            )?;
            gauge(
                &mut encoder,
                "wedsync_process_resident_memory_bytes",
                "The agent's resident memory",
                [(none, p.resident_bytes as f64)],
            )?;
            gauge(
                &mut encoder,
                "wedsync_process_virtual_memory_bytes",
                "The agent's virtual memory",
                [(none, p.virtual_bytes as f64)],
            )?;
        }
        let Some(h) = &view.host else { return Ok(()) };
        let none: [(&str, &str); 0] = [];
        gauge(
            &mut encoder,
            "wedsync_host_cpu_busy_ratio",
            "Fraction of all CPU time not idle over the last interval",
            [(none, h.cpu.busy)],
        )?;
        gauge(
            &mut encoder,
            "wedsync_host_cpu_mode_ratio",
            "Fraction of all CPU time by mode over the last interval",
            [("user", h.cpu.user), ("system", h.cpu.system), ("iowait", h.cpu.iowait), ("steal", h.cpu.steal)]
                .map(|(mode, v)| ([("mode", mode)], v)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_host_cpu_core_busy_ratio",
            "Fraction of each core's time not idle over the last interval",
            h.cpu.per_core.iter().enumerate().map(|(i, v)| ([("core", i.to_string())], *v)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_host_memory_bytes",
            "Memory by kind",
            [
                ("total", h.memory.total_bytes),
                ("available", h.memory.available_bytes),
                ("used", h.memory.used_bytes),
                ("swap_total", h.memory.swap_total_bytes),
                ("swap_used", h.memory.swap_used_bytes),
            ]
            .map(|(kind, v)| ([("kind", kind)], v as f64)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_host_load",
            "Load average",
            [("1m", h.load.one), ("5m", h.load.five), ("15m", h.load.fifteen)].map(|(w, v)| ([("window", w)], v)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_host_network_bytes_per_second",
            "Network throughput per interface over the last interval",
            h.network.iter().flat_map(|n| {
                [("rx", n.rx_bytes_per_sec), ("tx", n.tx_bytes_per_sec)]
                    .map(|(dir, v)| ([("interface", n.name.as_str()), ("direction", dir)], v))
            }),
        )?;
        gauge(
            &mut encoder,
            "wedsync_host_network_packets_per_second",
            "Network packets per interface over the last interval",
            h.network.iter().flat_map(|n| {
                [("rx", n.rx_packets_per_sec), ("tx", n.tx_packets_per_sec)]
                    .map(|(dir, v)| ([("interface", n.name.as_str()), ("direction", dir)], v))
            }),
        )?;
        gauge(
            &mut encoder,
            "wedsync_host_disk_bytes_per_second",
            "Disk throughput per device over the last interval",
            h.disks.iter().flat_map(|d| {
                [("read", d.read_bytes_per_sec), ("write", d.write_bytes_per_sec)]
                    .map(|(op, v)| ([("device", d.name.as_str()), ("op", op)], v))
            }),
        )?;
        gauge(
            &mut encoder,
            "wedsync_host_disk_busy_ratio",
            "Fraction of the last interval each disk was busy",
            h.disks.iter().map(|d| ([("device", d.name.as_str())], d.busy)),
        )?;
        if let Some(p) = &h.pressure {
            let resources = [("cpu", &p.cpu), ("memory", &p.memory), ("io", &p.io)];
            gauge(
                &mut encoder,
                "wedsync_host_pressure_stall_ratio",
                "Fraction of the last interval some task stalled on the resource (PSI)",
                resources.iter().map(|(r, s)| ([("resource", *r)], s.some_stall_fraction)),
            )?;
            gauge(
                &mut encoder,
                "wedsync_host_pressure_some_avg10",
                "PSI 'some' 10-second average, percent",
                resources.iter().map(|(r, s)| ([("resource", *r)], s.some_avg10)),
            )?;
        }
        Ok(())
    }
}

/// Labels that the exposition itself uses; a tag with one of these keys is renamed `tag_<key>`.
const RESERVED_LABELS: [&str; 6] = ["metric", "kind", "quantile", "window", "job", "instance"];

/// A tag key as a valid, non-clashing Prometheus label name.
fn label_name(key: &str) -> Cow<'_, str> {
    let valid =
        key.bytes().enumerate().all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()));
    if valid && !key.starts_with("__") && !RESERVED_LABELS.contains(&key) {
        return Cow::Borrowed(key);
    }
    let cleaned: String = key.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    Cow::Owned(format!("tag_{cleaned}"))
}

/// A series's labels: its name, its tags (as valid label names), then `extra`.
fn series_labels<'a>(row: &'a AppRow, extra: &[(&'static str, &'a str)]) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
    let mut labels: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(row.tags.len() + 1 + extra.len());
    labels.push((Cow::Borrowed("metric"), Cow::Borrowed(&*row.name)));
    for (key, value) in row.tags.iter().map(|t| t.split_once(':').unwrap_or((t, ""))) {
        let name = label_name(key);
        if labels.iter().any(|(k, _)| *k == name) {
            continue; // two tags that clean up to the same label: keep the first
        }
        labels.push((name, Cow::Borrowed(if value.is_empty() { "true" } else { value })));
    }
    labels.extend(extra.iter().map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v))));
    labels
}

#[derive(Debug)]
struct AppCollector {
    clock: Clock,
    store: Arc<Store>,
}

const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
const QUANTILE_LABELS: [&str; 3] = ["0.5", "0.9", "0.99"];
const QUANTILE_WINDOW: Duration = Duration::from_secs(60);

/// One application series's figures, copied under the store's lock so that the text encoding,
/// most of a scrape's work, runs after the lock is released (ingest never waits for it).
struct AppRow {
    name: Arc<str>,
    tags: Arc<[Box<str>]>,
    kind: MetricKind,
    /// Counters: the sum; gauges: the value; sets: distinct members; histograms: values seen.
    total: f64,
    /// Histograms: the sum of the values.
    sum: f64,
    /// Histograms: [`QUANTILES`] over [`QUANTILE_WINDOW`], when a value fell in it.
    quantiles: Option<Vec<f64>>,
}

/// Series copied per visit to the store: ingest waits at most for one visit's copy (a few
/// hundred microseconds with histograms), never for a whole scrape; between visits the lock is
/// handed over fairly.
const ROWS_PER_VISIT: usize = 256;

/// Scrapes that saw the store renumbered (series expired) more often than this take the rest of
/// the copy in one visit.
const RESTARTS: u32 = 3;

impl AppCollector {
    /// Every application series's figures, copied shard by shard in short visits under each
    /// shard's lock: no allocation but the rows (names and tags are shared) and the
    /// histograms' quantiles.
    fn rows(&self) -> Vec<AppRow> {
        let now = self.clock.now();
        let mut rows: Vec<AppRow> = Vec::new();
        for shard in 0..self.store.shard_count() {
            self.shard_rows(shard, now, &mut rows);
        }
        rows
    }

    fn shard_rows(&self, shard: usize, now: Timestamp, rows: &mut Vec<AppRow>) {
        let first = rows.len();
        let (mut next, mut generation, mut restarts) = (0usize, None, 0u32);
        loop {
            let store = self.store.lock_shard(shard);
            if generation.is_some_and(|g| g != store.generation()) {
                // Series were renumbered between two visits: start the shard again, so none
                // is missed or listed twice (a duplicate series would fail the whole scrape).
                rows.truncate(first);
                next = 0;
                restarts += 1;
            }
            generation = Some(store.generation());
            let count = if restarts >= RESTARTS { usize::MAX } else { ROWS_PER_VISIT };
            let before = next;
            for view in store.iter_from(now, next, count) {
                next += 1;
                let info = view.info();
                if info.internal {
                    continue;
                }
                rows.push(AppRow {
                    name: info.name.clone(),
                    tags: info.tags.clone(),
                    kind: info.kind,
                    total: view.total(),
                    sum: view.sum().unwrap_or(0.0),
                    quantiles: if info.kind.is_histogram() {
                        view.quantiles(QUANTILE_WINDOW, &QUANTILES)
                    } else {
                        None
                    },
                });
            }
            if next == before {
                return;
            }
            // Hand the lock to whoever waits (a reader, the decision thread) before the next
            // visit, instead of taking it straight back.
            parking_lot::MutexGuard::unlock_fair(store);
        }
    }
}

impl Collector for AppCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let rows = self.rows();
        let of_kind = |kind: MetricKind| rows.iter().filter(move |r| r.kind == kind);

        let mut counters = encoder.encode_descriptor(
            "wedsync_app_counter",
            "StatsD counters (c): sum of increments, scaled by sample rate",
            None,
            MetricType::Counter,
        )?;
        for row in of_kind(MetricKind::Counter) {
            ConstCounter::new(row.total).encode(counters.encode_family(&series_labels(row, &[]))?)?;
        }
        let mut gauges = encoder.encode_descriptor(
            "wedsync_app_gauge",
            "StatsD gauges (g): current value",
            None,
            MetricType::Gauge,
        )?;
        for row in of_kind(MetricKind::Gauge) {
            ConstGauge::new(row.total).encode(gauges.encode_family(&series_labels(row, &[]))?)?;
        }
        let mut sets = encoder.encode_descriptor(
            "wedsync_app_set_unique",
            "StatsD sets (s): distinct members in the latest 10 s window",
            None,
            MetricType::Gauge,
        )?;
        for row in of_kind(MetricKind::Set) {
            ConstGauge::new(row.total).encode(sets.encode_family(&series_labels(row, &[]))?)?;
        }
        let histograms: Vec<&AppRow> = rows.iter().filter(|r| r.kind.is_histogram()).collect();
        let mut counts = encoder.encode_descriptor(
            "wedsync_app_observations",
            "StatsD timers (ms), histograms (h) and distributions (d): values observed",
            None,
            MetricType::Counter,
        )?;
        for row in &histograms {
            let kind = [("kind", row.kind.name())];
            ConstCounter::new(row.total).encode(counts.encode_family(&series_labels(row, &kind))?)?;
        }
        let mut sums = encoder.encode_descriptor(
            "wedsync_app_observed_sum",
            "Sum of the values observed (milliseconds for timers)",
            None,
            MetricType::Counter,
        )?;
        for row in &histograms {
            let kind = [("kind", row.kind.name())];
            ConstCounter::new(row.sum).encode(sums.encode_family(&series_labels(row, &kind))?)?;
        }
        let mut quantiles = encoder.encode_descriptor(
            "wedsync_app_quantile",
            "Quantiles of the values observed over the last 60 s (milliseconds for timers)",
            None,
            MetricType::Gauge,
        )?;
        for row in &histograms {
            let Some(values) = &row.quantiles else { continue };
            for (label, value) in QUANTILE_LABELS.iter().zip(values) {
                let extra = [("kind", row.kind.name()), ("quantile", *label), ("window", "60s")];
                ConstGauge::new(*value).encode(quantiles.encode_family(&series_labels(row, &extra))?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_copied_in_several_visits_lists_every_series_once() {
        let clock = Clock::start();
        let now = clock.now();
        // Two shards, each with more series than one visit copies.
        let store = Arc::new(Store::new(wedsync_core::store::StoreLimits::default(), 2));
        let lines = ROWS_PER_VISIT * 5 + 17;
        for i in 0..lines {
            let line = format!("requests{i}:1|c|#service:s{}", i % 3);
            store.record(now, &wedsync_core::statsd::parse_line(line.as_bytes()).unwrap()).unwrap();
            // Internal series among them are skipped, not counted against a visit's rows.
            store.set_internal_gauge(now, "host.cpu.busy", &format!("core:{i}"), 0.5);
        }
        assert!((0..2).all(|shard| store.lock_shard(shard).app_series() > ROWS_PER_VISIT));
        let telemetry = Telemetry::new(clock, store, Arc::new(RwLock::new(HostView::default())));
        let text = telemetry.render().unwrap();
        let counters: Vec<&str> = text.lines().filter(|l| l.starts_with("wedsync_app_counter_total{")).collect();
        assert_eq!(counters.len(), lines);
        let distinct: std::collections::BTreeSet<&str> = counters.iter().copied().collect();
        assert_eq!(distinct.len(), lines, "no series listed twice");
    }

    #[test]
    fn tag_keys_become_valid_labels() {
        assert_eq!(label_name("class"), "class");
        assert_eq!(label_name("content_id2"), "content_id2");
        assert_eq!(label_name("metric"), "tag_metric");
        assert_eq!(label_name("quantile"), "tag_quantile");
        assert_eq!(label_name("k8s.pod-name"), "tag_k8s_pod_name");
        assert_eq!(label_name("2fast"), "tag_2fast");
        assert_eq!(label_name("__name__"), "tag___name__");
    }
}
