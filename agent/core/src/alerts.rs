//! Alert rules, sans-IO: the caller hands [`Alerting::evaluate`] what it knows each round
//! ([`Facts`]) and its time; the rules say which conditions hold, and the state machine turns
//! them into alerts that are pending for a rule's `for` duration, then firing, then resolved
//! ([`AlertEvent`]s to deliver and audit). No I/O and no clock, like the engine.
//!
//! An alert's identity is its rule and what it is about (pool, region, node, class, plugin):
//! its [`Alert::fingerprint`] hashes those labels only, so it stays the same while the alert
//! lasts. Its other labels (`severity`, `wedding_active`, `weddings`) are set when it starts:
//! while a wedding is active in its region its severity is one level higher and it names the
//! weddings, so the wedding-day escalation applies.

use crate::TrafficClass;
use crate::engine::PoolStatus;
use crate::time::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// How bad an alert is. Wedding context raises it one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs a look soon.
    Warning,
    /// Needs a person now.
    Critical,
    /// Wakes someone up.
    Page,
}

impl Severity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Page => "page",
        }
    }

    fn raised(self) -> Severity {
        match self {
            Severity::Info => Severity::Warning,
            Severity::Warning => Severity::Critical,
            Severity::Critical | Severity::Page => Severity::Page,
        }
    }
}

/// One rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RuleSettings {
    /// Whether the rule runs.
    pub enabled: bool,
    /// How long its condition must hold before the alert fires.
    #[serde(with = "humantime_serde")]
    pub for_duration: std::time::Duration,
}

impl RuleSettings {
    const fn on(for_secs: u64) -> RuleSettings {
        RuleSettings { enabled: true, for_duration: std::time::Duration::from_secs(for_secs) }
    }
}

/// The built-in rules' settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSettings {
    /// `PoolShedding`: a class admitted below 1.0 (critical).
    pub shedding: RuleSettings,
    /// `PoolStaleMetrics`: a pool holding on stale demand (warning).
    pub stale_metrics: RuleSettings,
    /// `PoolCapacityForecast`: the forecast peak over the horizon exceeds what the pool's `max`
    /// serves (warning; predictive).
    pub capacity_forecast: RuleSettings,
    /// `ActuatorFailing`: a pool's actuator gave up on its latest decision (critical).
    pub actuator_failing: RuleSettings,
    /// `PluginUnhealthy`: a plugin quarantined or refused (warning).
    pub plugin_unhealthy: RuleSettings,
    /// Resolved alerts kept for [`Alerting::resolved`].
    pub keep_resolved: usize,
    /// Escalation of firing alerts nobody acknowledged.
    pub escalation: EscalationSettings,
}

/// Escalation: a firing alert starts at tier 1; not acknowledged, it reaches the next tier after
/// a delay (the wedding-day delay while a wedding is active in its region), up to `tiers`.
/// Alertmanager routes each tier (label `escalation_tier`) to its receivers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EscalationSettings {
    /// Tiers in all (1: no escalation).
    pub tiers: u32,
    /// Delay to the next tier.
    #[serde(with = "humantime_serde")]
    pub delay: std::time::Duration,
    /// Delay to the next tier for an alert raised while a wedding is active.
    #[serde(with = "humantime_serde")]
    pub wedding_delay: std::time::Duration,
}

impl Default for EscalationSettings {
    fn default() -> Self {
        EscalationSettings {
            tiers: 3,
            delay: std::time::Duration::from_secs(300),
            wedding_delay: std::time::Duration::from_secs(30),
        }
    }
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            shedding: RuleSettings::on(10),
            stale_metrics: RuleSettings::on(30),
            capacity_forecast: RuleSettings::on(60),
            actuator_failing: RuleSettings::on(0),
            plugin_unhealthy: RuleSettings::on(0),
            keep_resolved: 100,
            escalation: EscalationSettings::default(),
        }
    }
}

/// What the caller knows about one pool this round.
#[derive(Debug, Clone)]
pub struct PoolFacts<'a> {
    /// The engine's view of the pool.
    pub status: &'a PoolStatus,
    /// The forecast peak demand over the horizon (requests/s), when the profile knows it.
    pub forecast_peak: Option<f64>,
    /// The horizon that peak covers (for the annotation).
    pub horizon: std::time::Duration,
    /// Why the pool's actuator failed its latest decision, while it has not succeeded since.
    pub actuator_failure: Option<String>,
}

/// A plugin that is not healthy.
#[derive(Debug, Clone)]
pub struct PluginFacts<'a> {
    /// Its name (or, when refused before it could say, its file).
    pub name: &'a str,
    /// `quarantined` or `refused`.
    pub state: &'a str,
    /// Why.
    pub reason: &'a str,
}

/// Everything the rules look at in one round.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The caller's monotonic time.
    pub now: Timestamp,
    /// Wall time, Unix milliseconds (alerts' start and end).
    pub wall_ms: i64,
    /// This node's id.
    pub node: &'a str,
    /// Every pool.
    pub pools: Vec<PoolFacts<'a>>,
    /// Weddings active now, by region: their ids.
    pub weddings: BTreeMap<String, Vec<String>>,
    /// Plugins quarantined or refused.
    pub plugins: Vec<PluginFacts<'a>>,
    /// Where the agent's API is, for the annotations' links (e.g. `http://10.0.0.5:9470`).
    pub api_base: &'a str,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Its condition holds, not yet for its rule's `for` duration.
    Pending,
    /// Firing.
    Firing,
    /// Its condition cleared.
    Resolved,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Stable id: FNV-1a (64 bit) over its identity labels, hex.
    pub fingerprint: String,
    /// Labels (Alertmanager's), fixed when it starts.
    pub labels: BTreeMap<String, String>,
    /// Summary, description with the figures it fired on, and a link to the agent's API;
    /// updated each round while it fires.
    pub annotations: BTreeMap<String, String>,
    /// Its state.
    pub state: AlertState,
    /// When its condition started to hold (Unix ms).
    pub active_at_ms: i64,
    /// When it fired (Unix ms).
    pub starts_at_ms: Option<i64>,
    /// When it resolved (Unix ms).
    pub ends_at_ms: Option<i64>,
    /// Its severity.
    pub severity: Severity,
    /// The escalation tier it reached (0 until it fires).
    pub escalation_tier: u32,
    /// Who acknowledged it, and when (Unix ms): escalation stops.
    pub acknowledged: Option<(String, i64)>,
}

/// What changed this round, for delivery and the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertEvent {
    /// An alert started firing.
    Fired(Alert),
    /// A firing alert's condition cleared.
    Resolved(Alert),
    /// A firing alert nobody acknowledged reached its next tier.
    Escalated(Alert),
    /// Someone acknowledged a firing alert.
    Acknowledged(Alert),
}

/// What a condition is about, for its texts (made only when they are needed).
enum What<'a> {
    Shedding { status: &'a PoolStatus, class: TrafficClass, admit: f64 },
    Stale { status: &'a PoolStatus },
    Forecast { status: &'a PoolStatus, peak: f64, horizon: std::time::Duration },
    Actuator { status: &'a PoolStatus, reason: &'a str },
    Plugin { plugin: &'a PluginFacts<'a> },
}

/// A condition that holds this round.
struct Condition<'a> {
    severity: Severity,
    /// The identity labels, `node` included, in key order.
    identity: Vec<(&'static str, &'a str)>,
    region: Option<&'a str>,
    for_duration: std::time::Duration,
    what: What<'a>,
}

impl Condition<'_> {
    /// Summary, description (with the figures) and link.
    fn texts(&self, api_base: &str) -> [(String, String); 3] {
        let (summary, description, link) = match &self.what {
            What::Shedding { status, class, admit } => {
                let (spec, demand) = (&status.spec, status.demand.of(*class));
                (
                    format!("{}: {class} traffic shed", spec.name),
                    format!(
                        "pool {} admits {:.0}% of {class} ({demand:.0} req/s demanded): {:.0} req/s turned away; {} of {} units serving (max {})",
                        spec.name,
                        admit * 100.0,
                        demand * (1.0 - admit),
                        status.available,
                        status.target,
                        spec.max
                    ),
                    format!("{api_base}/v1/pools"),
                )
            }
            What::Stale { status } => (
                format!("{}: demand metrics stale", status.spec.name),
                format!(
                    "pool {} has had no fresh demand: the engine holds it at {} units and will not scale it in",
                    status.spec.name, status.target
                ),
                format!("{api_base}/v1/pools"),
            ),
            What::Forecast { status, peak, horizon } => {
                let spec = &status.spec;
                let serves = f64::from(spec.max) * spec.capacity_per_unit;
                (
                    format!("{}: forecast demand exceeds its max", spec.name),
                    format!(
                        "pool {} is forecast to reach {peak:.0} req/s within {} s (lead time), more than the {serves:.0} req/s its max of {} units serves: raise max or add capacity elsewhere",
                        spec.name,
                        horizon.as_secs(),
                        spec.max
                    ),
                    format!("{api_base}/v1/pools"),
                )
            }
            What::Actuator { status, reason } => (
                format!("{}: its actuator fails", status.spec.name),
                format!(
                    "the actuator of pool {} gave up on its latest decision (target {}): {reason}",
                    status.spec.name, status.target
                ),
                format!("{api_base}/v1/decisions?pool={}", status.spec.name),
            ),
            What::Plugin { plugin } => (
                format!("plugin {} {}", plugin.name, plugin.state),
                format!("plugin {} is {}: {}", plugin.name, plugin.state, plugin.reason),
                format!("{api_base}/v1/plugins"),
            ),
        };
        [("summary".into(), summary), ("description".into(), description), ("link".into(), link)]
    }
}

/// How often a firing alert's annotations are made again from the current figures.
const ANNOTATION_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// An alert and its bookkeeping.
#[derive(Debug)]
struct Tracked {
    alert: Alert,
    pending_since: Timestamp,
    annotated_at: Timestamp,
    /// When it reached its tier.
    tier_since: Timestamp,
}

/// The alerts' state machine.
#[derive(Debug)]
pub struct Alerting {
    settings: AlertSettings,
    active: BTreeMap<u64, Tracked>,
    resolved: VecDeque<Alert>,
    events: VecDeque<AlertEvent>,
    /// Fingerprints seen this round (kept to reuse its allocation).
    seen: Vec<u64>,
}

/// FNV-1a, 64 bit, over `key=value` pairs in label order (each key and value followed by a
/// 0xff byte, which no UTF-8 text holds).
fn fingerprint<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in labels {
        for byte in key.bytes().chain([0xff]).chain(value.bytes()).chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

impl Alerting {
    /// A state machine with no alerts.
    pub fn new(settings: AlertSettings) -> Alerting {
        Alerting {
            settings,
            active: BTreeMap::new(),
            resolved: VecDeque::new(),
            events: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// Evaluates every rule on `facts`: conditions that start are pending, pending ones that
    /// held for their `for` fire, firing ones whose condition cleared resolve. Texts are made
    /// when an alert starts, when it fires and at most once a second while it lasts.
    pub fn evaluate(&mut self, facts: &Facts<'_>) {
        let conditions = conditions(&self.settings, facts);
        let mut seen = std::mem::take(&mut self.seen);
        seen.clear();
        for condition in &conditions {
            let key = fingerprint(condition.identity.iter().copied());
            seen.push(key);
            let tracked = match self.active.entry(key) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    let weddings = condition.region.and_then(|r| facts.weddings.get(r)).filter(|w| !w.is_empty());
                    let severity = if weddings.is_some() { condition.severity.raised() } else { condition.severity };
                    let mut labels: BTreeMap<String, String> =
                        condition.identity.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
                    labels.insert("severity".into(), severity.as_str().into());
                    labels.insert("wedding_active".into(), weddings.is_some().to_string());
                    if let Some(weddings) = weddings {
                        labels.insert("weddings".into(), weddings.join(","));
                    }
                    entry.insert(Tracked {
                        alert: Alert {
                            fingerprint: format!("{key:016x}"),
                            labels,
                            annotations: BTreeMap::from(condition.texts(facts.api_base)),
                            state: AlertState::Pending,
                            active_at_ms: facts.wall_ms,
                            starts_at_ms: None,
                            ends_at_ms: None,
                            severity,
                            escalation_tier: 0,
                            acknowledged: None,
                        },
                        pending_since: facts.now,
                        annotated_at: facts.now,
                        tier_since: facts.now,
                    })
                }
            };
            let fires = tracked.alert.state == AlertState::Pending
                && facts.now.saturating_since(tracked.pending_since) >= condition.for_duration;
            if fires || facts.now.saturating_since(tracked.annotated_at) >= ANNOTATION_REFRESH {
                tracked.alert.annotations = BTreeMap::from(condition.texts(facts.api_base));
                tracked.annotated_at = facts.now;
            }
            if fires {
                tracked.alert.state = AlertState::Firing;
                tracked.alert.starts_at_ms = Some(facts.wall_ms);
                tracked.alert.escalation_tier = 1;
                tracked.tier_since = facts.now;
                self.events.push_back(AlertEvent::Fired(tracked.alert.clone()));
            } else if tracked.alert.state == AlertState::Firing
                && tracked.alert.acknowledged.is_none()
                && tracked.alert.escalation_tier < self.settings.escalation.tiers
            {
                let escalation = &self.settings.escalation;
                let wedding = tracked.alert.labels.get("wedding_active").is_some_and(|w| w == "true");
                let delay = if wedding { escalation.wedding_delay } else { escalation.delay };
                if facts.now.saturating_since(tracked.tier_since) >= delay {
                    tracked.alert.escalation_tier += 1;
                    tracked.tier_since = facts.now;
                    self.events.push_back(AlertEvent::Escalated(tracked.alert.clone()));
                }
            }
        }
        if self.active.len() > seen.len() || self.active.keys().any(|k| !seen.contains(k)) {
            let cleared: Vec<u64> = self.active.keys().filter(|k| !seen.contains(k)).copied().collect();
            for key in cleared {
                let Some(Tracked { mut alert, .. }) = self.active.remove(&key) else { continue };
                if alert.state == AlertState::Firing {
                    alert.state = AlertState::Resolved;
                    alert.ends_at_ms = Some(facts.wall_ms);
                    self.events.push_back(AlertEvent::Resolved(alert.clone()));
                    if self.resolved.len() >= self.settings.keep_resolved {
                        self.resolved.pop_front();
                    }
                    self.resolved.push_back(alert);
                }
            }
        }
        self.seen = seen;
    }

    /// Acknowledges the firing alert `fingerprint` (hex) for `by`: it escalates no further.
    /// `None` if no such alert fires; an alert acknowledged already keeps its first ack.
    pub fn acknowledge(&mut self, fingerprint: &str, by: &str, wall_ms: i64) -> Option<Alert> {
        let tracked = self.active.values_mut().find(|t| t.alert.fingerprint == fingerprint)?;
        if tracked.alert.state != AlertState::Firing {
            return None;
        }
        if tracked.alert.acknowledged.is_none() {
            tracked.alert.acknowledged = Some((by.to_owned(), wall_ms));
            self.events.push_back(AlertEvent::Acknowledged(tracked.alert.clone()));
        }
        Some(tracked.alert.clone())
    }

    /// The next fire, resolve, escalation or acknowledgement, if any.
    pub fn poll_event(&mut self) -> Option<AlertEvent> {
        self.events.pop_front()
    }

    /// Pending and firing alerts, by fingerprint.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().map(|t| &t.alert)
    }

    /// Alerts resolved lately, oldest first.
    pub fn resolved(&self) -> impl DoubleEndedIterator<Item = &Alert> {
        self.resolved.iter()
    }
}

/// The conditions that hold this round.
fn conditions<'a>(s: &AlertSettings, facts: &'a Facts<'a>) -> Vec<Condition<'a>> {
    let mut out = Vec::new();
    let node = facts.node;
    for pool in &facts.pools {
        let status = pool.status;
        let spec = &*status.spec;
        let (name, region) = (spec.name.as_str(), spec.region.as_str());
        let pool_identity = |alertname: &'static str| {
            vec![("alertname", alertname), ("node", node), ("pool", name), ("region", region)]
        };
        if s.shedding.enabled {
            for admission in status.admission.iter().filter(|a| a.admit < 1.0) {
                let class = admission.class;
                out.push(Condition {
                    severity: Severity::Critical,
                    identity: vec![
                        ("alertname", "PoolShedding"),
                        ("class", class.as_str()),
                        ("node", node),
                        ("pool", name),
                        ("region", region),
                    ],
                    region: Some(region),
                    for_duration: s.shedding.for_duration,
                    what: What::Shedding { status, class, admit: admission.admit },
                });
            }
        }
        if s.stale_metrics.enabled && status.holding_stale {
            out.push(Condition {
                severity: Severity::Warning,
                identity: pool_identity("PoolStaleMetrics"),
                region: Some(region),
                for_duration: s.stale_metrics.for_duration,
                what: What::Stale { status },
            });
        }
        if s.capacity_forecast.enabled
            && let Some(peak) = pool.forecast_peak
            && peak > f64::from(spec.max) * spec.capacity_per_unit
        {
            out.push(Condition {
                severity: Severity::Warning,
                identity: pool_identity("PoolCapacityForecast"),
                region: Some(region),
                for_duration: s.capacity_forecast.for_duration,
                what: What::Forecast { status, peak, horizon: pool.horizon },
            });
        }
        if s.actuator_failing.enabled
            && let Some(reason) = &pool.actuator_failure
        {
            out.push(Condition {
                severity: Severity::Critical,
                identity: pool_identity("ActuatorFailing"),
                region: Some(region),
                for_duration: s.actuator_failing.for_duration,
                what: What::Actuator { status, reason },
            });
        }
    }
    if s.plugin_unhealthy.enabled {
        for plugin in &facts.plugins {
            out.push(Condition {
                severity: Severity::Warning,
                identity: vec![("alertname", "PluginUnhealthy"), ("node", node), ("plugin", plugin.name)],
                region: None,
                for_duration: s.plugin_unhealthy.for_duration,
                what: What::Plugin { plugin },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
