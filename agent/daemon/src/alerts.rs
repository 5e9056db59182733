//! Alerts: the decision thread evaluates the core's rules ([`wedsync_core::alerts`]) after every
//! round on the engine's published view ([`AlertLoop`]), and a thread of its own delivers them
//! to Alertmanager's v2 API ([`Delivery`]), so a slow or dead Alertmanager never delays a round.
//!
//! Delivery sends the whole current state, not a queue of events: every firing alert (with
//! `endsAt` four resend intervals ahead, as Prometheus does, so Alertmanager resolves it by
//! itself if the agent dies) and every resolved one not yet delivered (with its `endsAt`). A
//! change wakes it at once; otherwise it resends every `alerts.resend_interval`. Nothing is
//! queued without bound, so nothing is dropped: a resolve waits until every Alertmanager took
//! it (at most the newest 100).

use crate::actuators::Actuators;
use crate::audit::AuditHandle;
use crate::clock::lock;
use crate::config::AlertsSettings;
use crate::engine::EngineView;
use crate::plugins::PluginsSnapshot;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use wedsync_core::alerts::{Alert, AlertEvent, AlertState, Alerting, Facts, PluginFacts, PoolFacts};
use wedsync_core::time::Timestamp;

/// Resolved alerts kept for delivery, newest first out when full.
const MAX_UNDELIVERED_RESOLVED: usize = 100;
/// How often the alerts' view is made again when nothing fired or resolved.
const PUBLISH_PERIOD: Duration = Duration::from_secs(1);
/// Longest one POST to an Alertmanager may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/v1/alerts` serves.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertsView {
    /// Firing alerts.
    pub firing: Vec<Alert>,
    /// Alerts whose condition holds, not yet for their rule's `for`.
    pub pending: Vec<Alert>,
    /// Alerts resolved lately, newest first.
    pub resolved: Vec<Alert>,
    /// Where alerts are delivered.
    pub alertmanager: Vec<String>,
}

/// Counters of alerting and delivery.
#[derive(Debug, Clone, Default)]
pub struct AlertCounters {
    /// Fire and resolve events, by kind (`fired`, `resolved`) and alertname.
    pub events: Family<Vec<(String, String)>, Counter>,
    /// POSTs to Alertmanager, by outcome (`ok`, `failed`).
    pub posts: Family<Vec<(String, String)>, Counter>,
}

impl AlertCounters {
    /// Registers the counters, and `wedsync_alerts_firing` read from `view`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry, view: Arc<RwLock<AlertsView>>) {
        registry.register(
            "wedsync_alert_events",
            "Alerts fired and resolved, by event and alertname",
            self.events.clone(),
        );
        registry.register(
            "wedsync_alertmanager_posts",
            "POSTs of the alert state to Alertmanager, by outcome (a failed one is retried)",
            self.posts.clone(),
        );
        registry.register_collector(Box::new(FiringCollector(view)));
    }
}

/// `wedsync_alerts_firing{alertname,severity}`, read at scrape time.
#[derive(Debug)]
struct FiringCollector(Arc<RwLock<AlertsView>>);

impl prometheus_client::collector::Collector for FiringCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        let view = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        for alert in &view.firing {
            let name = alert.labels.get("alertname").cloned().unwrap_or_default();
            *counts.entry((name, alert.severity.as_str())).or_default() += 1;
        }
        drop(view);
        let mut family = encoder.encode_descriptor(
            "wedsync_alerts_firing",
            "Alerts firing now, by alertname and severity",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((alertname, severity), n) in counts {
            let labels = [("alertname", alertname.as_str()), ("severity", severity)];
            prometheus_client::metrics::gauge::ConstGauge::new(n as f64).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The rules' owner: lives on the decision thread.
#[derive(Debug)]
pub struct AlertLoop {
    alerting: Alerting,
    node: String,
    api_base: String,
    view: Arc<RwLock<AlertsView>>,
    plugins: Option<Arc<RwLock<PluginsSnapshot>>>,
    audit: Option<AuditHandle>,
    counters: AlertCounters,
    delivery: Option<Arc<DeliveryShared>>,
    alertmanager: Vec<String>,
    published_at: Option<Instant>,
}

impl AlertLoop {
    /// Rules from `settings`; the view for the API, the plugins' snapshot, the audit trail and
    /// the delivery, when there is one.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &AlertsSettings,
        node: &str,
        api_base: String,
        view: Arc<RwLock<AlertsView>>,
        plugins: Option<Arc<RwLock<PluginsSnapshot>>>,
        audit: Option<AuditHandle>,
        counters: AlertCounters,
        delivery: Option<&Delivery>,
    ) -> AlertLoop {
        AlertLoop {
            alerting: Alerting::new(settings.rules.clone()),
            node: node.to_owned(),
            api_base,
            view,
            plugins,
            audit,
            counters,
            delivery: delivery.map(|d| d.shared.clone()),
            alertmanager: settings.alertmanager.clone(),
            published_at: None,
        }
    }

    /// Evaluates the rules on the round's view; logs, counts and audits what fired or
    /// resolved, publishes the alerts and wakes the delivery on a change.
    pub fn evaluate(&mut self, view: &EngineView, now: Timestamp, wall_ms: i64, actuators: &Actuators) {
        let settings = &view.settings;
        let mut weddings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in view.weddings.iter().filter(|w| w.is_active(wall_ms, settings.wedding_lead, settings.wedding_trail)) {
            weddings.entry(w.region.clone()).or_default().push(w.id.clone());
        }
        let failures: Vec<Option<String>> = view.pools.iter().map(|p| actuators.failing(&p.spec.name)).collect();
        let snapshot = self.plugins.as_ref().map(|p| p.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut plugins = Vec::new();
        if let Some(snapshot) = &snapshot {
            for p in snapshot.plugins.iter().filter(|p| p.state != "active") {
                plugins.push(PluginFacts {
                    name: &p.name,
                    state: p.state,
                    reason: p.last_failure.as_deref().unwrap_or(""),
                });
            }
            for r in &snapshot.refused {
                plugins.push(PluginFacts { name: &r.origin, state: "refused", reason: &r.error });
            }
        }
        let facts = Facts {
            now,
            wall_ms,
            node: &self.node,
            pools: view
                .pools
                .iter()
                .enumerate()
                .map(|(i, status)| PoolFacts {
                    status,
                    forecast_peak: view.forecasts.get(i).copied().flatten(),
                    horizon: settings.forecast_horizon,
                    actuator_failure: failures.get(i).cloned().flatten(),
                })
                .collect(),
            weddings,
            plugins,
            api_base: &self.api_base,
        };
        self.alerting.evaluate(&facts);
        drop(facts);
        drop(snapshot);
        let changed = self.drain_events(wall_ms);
        self.publish(changed);
    }

    /// Acknowledges a firing alert for `by` (from `POST /v1/alerts/{fingerprint}/ack`): it
    /// escalates no further. `None`: no such alert fires.
    pub fn acknowledge(&mut self, fingerprint: &str, by: &str) -> Option<Alert> {
        let wall_ms = crate::clock::wall_ms();
        let acked = self.alerting.acknowledge(fingerprint, by, wall_ms)?;
        let changed = self.drain_events(wall_ms);
        self.publish(changed);
        Some(acked)
    }

    /// Logs, counts and audits each event; returns whether there was any.
    fn drain_events(&mut self, wall_ms: i64) -> bool {
        let mut changed = false;
        while let Some(event) = self.alerting.poll_event() {
            changed = true;
            let (kind, alert) = match &event {
                AlertEvent::Fired(alert) => ("fired", alert),
                AlertEvent::Resolved(alert) => ("resolved", alert),
                AlertEvent::Escalated(alert) => ("escalated", alert),
                AlertEvent::Acknowledged(alert) => ("acknowledged", alert),
            };
            let name = alert.labels.get("alertname").cloned().unwrap_or_default();
            self.counters
                .events
                .get_or_create(&vec![("event".to_owned(), kind.to_owned()), ("alertname".to_owned(), name.clone())])
                .inc();
            let summary = alert.annotations.get("summary").map_or("", String::as_str);
            let (fingerprint, tier) = (&alert.fingerprint, alert.escalation_tier);
            match kind {
                "fired" => {
                    tracing::warn!(alertname = %name, %fingerprint, severity = alert.severity.as_str(), labels = ?alert.labels, "alert firing: {summary}")
                }
                "escalated" => {
                    tracing::warn!(alertname = %name, %fingerprint, tier, "alert not acknowledged: escalated to tier {tier}: {summary}")
                }
                "acknowledged" => {
                    let by = alert.acknowledged.as_ref().map_or("", |(by, _)| by.as_str());
                    tracing::info!(alertname = %name, %fingerprint, by, tier, "alert acknowledged: {summary}")
                }
                _ => tracing::info!(alertname = %name, %fingerprint, "alert resolved: {summary}"),
            }
            if let Some(audit) = &self.audit {
                let audit_kind = match kind {
                    "fired" => "alert.fired",
                    "escalated" => "alert.escalated",
                    "acknowledged" => "alert.acknowledged",
                    _ => "alert.resolved",
                };
                // An alert is news, not an operation to refuse: a refusal is counted and logged
                // by the handle.
                let _ = audit.record(wall_ms, audit_kind, serde_json::to_value(alert).unwrap_or_default());
            }
            if let (AlertEvent::Resolved(alert), Some(delivery)) = (&event, &self.delivery) {
                let mut state = lock(&delivery.state);
                if state.resolved.len() >= MAX_UNDELIVERED_RESOLVED {
                    state.resolved.remove(0);
                }
                state.resolved.push(alert.clone());
            }
        }
        changed
    }

    /// Publishes the view (and what delivery sends) on a change, else once a second: the
    /// annotations' figures move, the state does not.
    fn publish(&mut self, changed: bool) {
        if !changed && self.published_at.is_some_and(|at| at.elapsed() < PUBLISH_PERIOD) {
            return;
        }
        self.published_at = Some(Instant::now());
        let mut published = AlertsView { alertmanager: self.alertmanager.clone(), ..AlertsView::default() };
        for alert in self.alerting.active() {
            match alert.state {
                AlertState::Firing => published.firing.push(alert.clone()),
                _ => published.pending.push(alert.clone()),
            }
        }
        published.resolved = self.alerting.resolved().rev().cloned().collect();
        if let Some(delivery) = &self.delivery {
            let mut state = lock(&delivery.state);
            state.firing.clone_from(&published.firing);
            if changed {
                state.changed = true;
                delivery.wake.notify_one();
            }
        }
        *self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner) = published;
    }
}

/// What the decision thread hands the delivery thread.
#[derive(Debug, Default)]
struct DeliveryState {
    firing: Vec<Alert>,
    resolved: Vec<Alert>,
    changed: bool,
    stopping: bool,
}

#[derive(Debug, Default)]
struct DeliveryShared {
    state: Mutex<DeliveryState>,
    wake: Condvar,
}

/// The thread that keeps Alertmanager up to date.
#[derive(Debug)]
pub struct Delivery {
    shared: Arc<DeliveryShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delivery {
    /// Starts delivering to `urls` (base URLs); `None` without any.
    pub fn start(urls: &[String], resend: Duration, counters: AlertCounters) -> Option<Delivery> {
        if urls.is_empty() {
            return None;
        }
        let shared = Arc::new(DeliveryShared::default());
        let thread_shared = shared.clone();
        let endpoints: Vec<String> =
            urls.iter().map(|u| format!("{}/api/v2/alerts", u.trim_end_matches('/'))).collect();
        let thread = std::thread::Builder::new()
            .name("wedsync-alerts".into())
            .spawn(move || deliver(&thread_shared, &endpoints, resend, &counters))
            .map_err(
                |e| tracing::error!(error = %e, "cannot start the alert delivery thread; alerts stay in /v1/alerts"),
            )
            .ok();
        Some(Delivery { shared, thread })
    }

    /// Sends the state once more and stops.
    pub fn stop(mut self) {
        {
            let mut state = lock(&self.shared.state);
            state.stopping = true;
        }
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

/// One alert as Alertmanager's v2 API takes it.
fn postable(alert: &Alert, tier: u32, firing_until_ms: i64) -> serde_json::Value {
    let mut labels = alert.labels.clone();
    labels.insert("escalation_tier".into(), tier.to_string());
    serde_json::json!({
        "labels": labels,
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.starts_at_ms.unwrap_or(alert.active_at_ms)),
        "endsAt": rfc3339(alert.ends_at_ms.unwrap_or(firing_until_ms)),
        "generatorURL": alert.annotations.get("link").cloned().unwrap_or_default(),
    })
}

fn deliver(shared: &DeliveryShared, endpoints: &[String], resend: Duration, counters: &AlertCounters) {
    let agent = crate::actuators::http_agent(POST_TIMEOUT);
    let mut logs = crate::logging::RateLimiter::new(1);
    let mut next_send = Instant::now();
    let mut retry = Duration::from_secs(1);
    loop {
        let (firing, resolved, stopping) = {
            let mut state = lock(&shared.state);
            loop {
                if state.changed || state.stopping || Instant::now() >= next_send {
                    break;
                }
                let wait = next_send.saturating_duration_since(Instant::now());
                state = match shared.wake.wait_timeout(state, wait) {
                    Ok((state, _)) => state,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            state.changed = false;
            (state.firing.clone(), state.resolved.clone(), state.stopping)
        };
        let until = crate::clock::wall_ms().saturating_add(i64::try_from(resend.as_millis() * 4).unwrap_or(i64::MAX));
        // One entry per tier an alert reached (label `escalation_tier`), so Alertmanager routes
        // each tier to its receivers; a resolve ends every tier.
        let body: Vec<serde_json::Value> = firing
            .iter()
            .chain(resolved.iter())
            .flat_map(|a| (1..=a.escalation_tier.max(1)).map(move |tier| postable(a, tier, until)))
            .collect();
        let mut all_ok = true;
        if !body.is_empty() {
            let json = serde_json::Value::Array(body).to_string();
            for endpoint in endpoints {
                let outcome = agent
                    .post(endpoint)
                    .header("Content-Type", "application/json")
                    .send(json.as_bytes())
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        let status = r.status().as_u16();
                        if (200..300).contains(&status) { Ok(()) } else { Err(format!("HTTP {status}")) }
                    });
                let label = if outcome.is_ok() { "ok" } else { "failed" };
                counters.posts.get_or_create(&vec![("outcome".to_owned(), label.to_owned())]).inc();
                if let Err(reason) = outcome {
                    all_ok = false;
                    if let Some(suppressed) = logs.admit(Instant::now()) {
                        tracing::warn!(endpoint, reason = %reason, suppressed, "alerts not delivered to Alertmanager; retrying");
                    }
                }
            }
        }
        if all_ok {
            // Delivered everywhere: those resolves are done (newer ones may have come meanwhile).
            let mut state = lock(&shared.state);
            state
                .resolved
                .retain(|a| !resolved.iter().any(|r| r.fingerprint == a.fingerprint && r.ends_at_ms == a.ends_at_ms));
            next_send = Instant::now() + resend;
            retry = Duration::from_secs(1);
        } else {
            next_send = Instant::now() + retry.min(resend);
            retry = (retry * 2).min(resend);
        }
        if stopping {
            return;
        }
    }
}

/// The built-in rules as Prometheus alerting rules over the agent's own metrics (YAML), with the
/// `for` durations of `settings` and only the rules it enables. `PluginUnhealthy` has no
/// metric to alert on and is left out (alert on `wedsync_alerts_firing{alertname="PluginUnhealthy"}`).
pub fn prometheus_rules(settings: &AlertsSettings) -> String {
    let r = &settings.rules;
    let secs = |d: Duration| format!("{}s", d.as_secs());
    let mut rules = Vec::new();
    if r.shedding.enabled {
        rules.push((
            "PoolShedding",
            "wedsync_pool_admission_ratio < 1".to_owned(),
            secs(r.shedding.for_duration),
            "critical",
            "{{ $labels.pool }}: {{ $labels.class }} traffic shed",
            "pool {{ $labels.pool }} admits {{ $value | humanizePercentage }} of {{ $labels.class }} on {{ $labels.instance }}",
        ));
    }
    if r.stale_metrics.enabled {
        rules.push((
            "PoolStaleMetrics",
            "wedsync_pool_holding_stale == 1".to_owned(),
            secs(r.stale_metrics.for_duration),
            "warning",
            "{{ $labels.pool }}: demand metrics stale",
            "pool {{ $labels.pool }} has had no fresh demand; the engine holds it",
        ));
    }
    if r.capacity_forecast.enabled {
        rules.push((
            "PoolCapacityForecast",
            "wedsync_pool_forecast_peak_rps > on(instance, job, pool) wedsync_pool_max_serves_rps".to_owned(),
            secs(r.capacity_forecast.for_duration),
            "warning",
            "{{ $labels.pool }}: forecast demand exceeds its max",
            "pool {{ $labels.pool }} is forecast to reach {{ $value | humanize }} req/s within the forecast horizon, more than its max serves",
        ));
    }
    if r.actuator_failing.enabled {
        rules.push((
            "ActuatorFailing",
            "increase(wedsync_actuator_failures_total[5m]) > 0 unless on(instance, job, pool) increase(wedsync_actuator_successes_total[5m]) > 0".to_owned(),
            secs(r.actuator_failing.for_duration),
            "critical",
            "{{ $labels.pool }}: its actuator fails",
            "the actuator of pool {{ $labels.pool }} gave up on decisions in the last 5 minutes and applied none",
        ));
    }
    let mut out = String::from(
        "# Generated by `wedsync-agent alerts rules`: the agent's built-in alert rules over its own\n\
         # metrics. Wedding context (a higher severity while a wedding is active) is the agent's own.\n\
         groups:\n  - name: wedsync-agent\n    rules:\n",
    );
    for (name, expr, for_duration, severity, summary, description) in rules {
        out.push_str(&format!(
            "      - alert: {name}\n        expr: {expr}\n        for: {for_duration}\n        labels:\n          severity: {severity}\n        annotations:\n          summary: {}\n          description: {}\n",
            yaml_string(summary),
            yaml_string(description)
        ));
    }
    out
}

/// A YAML double-quoted string.
fn yaml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// `alerts rules`: prints [`prometheus_rules`] for the configuration layered as `run --config`
/// would.
pub fn print_rules(config: Option<std::path::PathBuf>) -> Result<std::process::ExitCode, crate::config::LoadError> {
    let (_, settings) = crate::config::load_settings(&crate::config::Sources::from_process(config))?;
    print!("{}", prometheus_rules(&settings.alerts));
    Ok(std::process::ExitCode::SUCCESS)
}
