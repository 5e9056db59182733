//! `[alerts]`: the alert rules ([`wedsync_core::alerts`]) and where alerts go
//! ([`crate::alerts`]).

use super::errors::Checker;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use wedsync_core::alerts::{AlertSettings, RuleSettings};

/// `[alerts]`: alert rules and delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsSection {
    /// Whether the agent evaluates alert rules at all.
    pub enabled: bool,
    /// Alertmanager base URLs (e.g. `http://alertmanager:9093`); alerts are POSTed to
    /// `/api/v2/alerts` of each. Empty: alerts show in `/v1/alerts` and `/metrics` only.
    pub alertmanager: Vec<String>,
    /// Firing alerts are sent again this often (Alertmanager forgets an alert whose `endsAt`
    /// passes: each is sent with `endsAt` four intervals ahead).
    pub resend_interval: String,
    /// Per rule (`shedding`, `stale_metrics`, `capacity_forecast`, `actuator_failing`,
    /// `plugin_unhealthy`): `enabled` and `for`.
    pub rules: BTreeMap<String, RuleSection>,
    /// Escalation of firing alerts nobody acknowledged.
    pub escalation: EscalationSection,
}

/// `[alerts.escalation]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationSection {
    /// Tiers in all (1: none); each is sent to Alertmanager with `escalation_tier = "N"`.
    pub tiers: u32,
    /// Delay to the next tier.
    pub delay: String,
    /// Delay to the next tier while a wedding is active in the alert's region.
    pub wedding_delay: String,
}

impl Default for EscalationSection {
    fn default() -> Self {
        EscalationSection { tiers: 3, delay: "5m".into(), wedding_delay: "30s".into() }
    }
}

/// `[alerts.rules.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSection {
    /// Whether the rule runs (default: yes).
    pub enabled: Option<bool>,
    /// How long its condition must hold before it fires (each rule has its default).
    #[serde(rename = "for")]
    pub for_duration: Option<String>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            enabled: true,
            alertmanager: Vec::new(),
            resend_interval: "30s".into(),
            rules: BTreeMap::new(),
            escalation: EscalationSection::default(),
        }
    }
}

/// `[alerts]`, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertsSettings {
    /// Whether rules run.
    pub enabled: bool,
    /// The rules.
    pub rules: AlertSettings,
    /// Alertmanager base URLs.
    pub alertmanager: Vec<String>,
    /// How often firing alerts are sent again.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
}

impl AlertsSection {
    pub(super) fn validate(&self, c: &mut Checker) -> AlertsSettings {
        let mut rules = AlertSettings::default();
        for (name, section) in &self.rules {
            let rule: &mut RuleSettings = match name.as_str() {
                "shedding" => &mut rules.shedding,
                "stale_metrics" => &mut rules.stale_metrics,
                "capacity_forecast" => &mut rules.capacity_forecast,
                "actuator_failing" => &mut rules.actuator_failing,
                "plugin_unhealthy" => &mut rules.plugin_unhealthy,
                other => {
                    c.fail(
                        format!("alerts.rules.{other}"),
                        "no such rule (shedding, stale_metrics, capacity_forecast, actuator_failing, plugin_unhealthy)"
                            .into(),
                    );
                    continue;
                }
            };
            if let Some(enabled) = section.enabled {
                rule.enabled = enabled;
            }
            if let Some(text) = &section.for_duration {
                rule.for_duration =
                    c.duration(&format!("alerts.rules.{name}.for"), text, Duration::ZERO, Duration::from_secs(86_400));
            }
        }
        for url in &self.alertmanager {
            let base = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
            if base.is_none_or(|rest| rest.is_empty() || rest.contains(char::is_whitespace)) {
                c.fail("alerts.alertmanager", format!("{url:?} is not an http(s) URL"));
            }
        }
        let e = &self.escalation;
        rules.escalation.tiers =
            u32::try_from(c.range("alerts.escalation.tiers", u64::from(e.tiers), 1, 10)).unwrap_or(1);
        rules.escalation.delay =
            c.duration("alerts.escalation.delay", &e.delay, Duration::from_secs(1), Duration::from_secs(86_400));
        rules.escalation.wedding_delay = c.duration(
            "alerts.escalation.wedding_delay",
            &e.wedding_delay,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        );
        let resend_interval = c.duration(
            "alerts.resend_interval",
            &self.resend_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        AlertsSettings { enabled: self.enabled, rules, alertmanager: self.alertmanager.clone(), resend_interval }
    }
}
