use super::*;
use crate::TrafficClass;
use crate::engine::Demand;
use crate::engine::decision::Admission;
use crate::engine::pool::PoolSpec;
use std::sync::Arc;

fn status(holding: bool, admit_media: f64) -> PoolStatus {
    let spec = PoolSpec {
        name: "checkout".into(),
        region: "eu-west".into(),
        min: 2,
        max: 10,
        capacity_per_unit: 100.0,
        ..crate::replay::trace_pool(2, 10, std::time::Duration::ZERO)
    };
    let mut demand = Demand::default();
    demand.set(TrafficClass::Media, 400.0);
    PoolStatus {
        spec: Arc::new(spec),
        available: 4,
        target: 4,
        load: 400.0,
        demand,
        protected: false,
        holding_stale: holding,
        spike_active: false,
        lossy_input: false,
        demand_capped: false,
        admission: vec![
            Admission { class: TrafficClass::WeddingCritical, admit: 1.0 },
            Admission { class: TrafficClass::Media, admit: admit_media },
        ],
        observed_units: Some(4),
        observed_at: None,
        size_unknown: false,
    }
}

fn facts<'a>(now_s: u64, pools: Vec<PoolFacts<'a>>, weddings: &[&str]) -> Facts<'a> {
    Facts {
        now: Timestamp::from_millis(now_s * 1000),
        wall_ms: 1_780_000_000_000 + (now_s * 1000) as i64,
        node: "n1",
        pools,
        weddings: if weddings.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([("eu-west".to_owned(), weddings.iter().map(|w| (*w).to_owned()).collect())])
        },
        plugins: Vec::new(),
        api_base: "http://127.0.0.1:9470",
    }
}

fn pool(status: &PoolStatus) -> PoolFacts<'_> {
    PoolFacts { status, forecast_peak: None, horizon: std::time::Duration::from_secs(1800), actuator_failure: None }
}

#[test]
fn shedding_is_pending_for_its_duration_then_fires_then_resolves() {
    let mut alerting = Alerting::new(AlertSettings::default());
    let shedding = status(false, 0.5);
    let fine = status(false, 1.0);
    for s in 0..10 {
        alerting.evaluate(&facts(s, vec![pool(&shedding)], &[]));
        assert_eq!(alerting.poll_event(), None, "second {s}: still pending");
    }
    assert_eq!(alerting.active().next().map(|a| a.state), Some(AlertState::Pending));
    alerting.evaluate(&facts(10, vec![pool(&shedding)], &[]));
    let Some(AlertEvent::Fired(alert)) = alerting.poll_event() else { panic!("fires after 10 s") };
    assert_eq!(alert.labels["alertname"], "PoolShedding");
    assert_eq!(alert.labels["class"], "media");
    assert_eq!(alert.labels["severity"], "critical");
    assert_eq!(alert.labels["wedding_active"], "false");
    assert!(
        alert.annotations["description"].contains("admits 50% of media (400 req/s demanded): 200 req/s"),
        "{alert:?}"
    );
    assert_eq!(alert.starts_at_ms, Some(1_780_000_010_000));
    // Still firing: no new event, same fingerprint.
    alerting.evaluate(&facts(11, vec![pool(&shedding)], &[]));
    assert_eq!(alerting.poll_event(), None);
    alerting.evaluate(&facts(12, vec![pool(&fine)], &[]));
    let Some(AlertEvent::Resolved(resolved)) = alerting.poll_event() else { panic!("resolves") };
    assert_eq!(resolved.fingerprint, alert.fingerprint);
    assert_eq!(resolved.ends_at_ms, Some(1_780_000_012_000));
    assert_eq!(alerting.resolved().count(), 1);
    assert_eq!(alerting.active().count(), 0);
}

#[test]
fn a_condition_that_clears_while_pending_never_fires() {
    let mut alerting = Alerting::new(AlertSettings::default());
    let (stale, fresh) = (status(true, 1.0), status(false, 1.0));
    for s in 0..29 {
        alerting.evaluate(&facts(s, vec![pool(&stale)], &[]));
    }
    alerting.evaluate(&facts(29, vec![pool(&fresh)], &[]));
    alerting.evaluate(&facts(40, vec![pool(&stale)], &[]));
    assert_eq!(alerting.poll_event(), None);
    assert_eq!(alerting.resolved().count(), 0);
}

#[test]
fn a_wedding_raises_severity_and_names_the_weddings_but_not_the_fingerprint() {
    let shedding = status(false, 0.5);
    let mut plain = Alerting::new(AlertSettings::default());
    plain.evaluate(&facts(0, vec![pool(&shedding)], &[]));
    plain.evaluate(&facts(10, vec![pool(&shedding)], &[]));
    let Some(AlertEvent::Fired(plain)) = plain.poll_event() else { panic!() };
    let mut wedding = Alerting::new(AlertSettings::default());
    wedding.evaluate(&facts(0, vec![pool(&shedding)], &["w-1", "w-2"]));
    wedding.evaluate(&facts(10, vec![pool(&shedding)], &["w-1", "w-2"]));
    let Some(AlertEvent::Fired(alert)) = wedding.poll_event() else { panic!() };
    assert_eq!(alert.labels["severity"], "page");
    assert_eq!(alert.severity, Severity::Page);
    assert_eq!(alert.labels["wedding_active"], "true");
    assert_eq!(alert.labels["weddings"], "w-1,w-2");
    assert_eq!(alert.fingerprint, plain.fingerprint, "the same incident, the same identity");
}

#[test]
fn capacity_forecast_fires_ahead_with_its_lead_time_and_actuator_and_plugin_rules() {
    let settings = AlertSettings {
        capacity_forecast: RuleSettings { enabled: true, for_duration: std::time::Duration::ZERO },
        ..AlertSettings::default()
    };
    let mut alerting = Alerting::new(settings);
    let fine = status(false, 1.0);
    // max 10 units of 100 req/s serve 1,000 req/s.
    let under = PoolFacts { forecast_peak: Some(900.0), ..pool(&fine) };
    alerting.evaluate(&facts(0, vec![under], &[]));
    assert_eq!(alerting.poll_event(), None);
    let over = PoolFacts { forecast_peak: Some(1500.0), actuator_failure: Some("HTTP 503".into()), ..pool(&fine) };
    let mut with_plugin = facts(1, vec![over], &[]);
    with_plugin.plugins.push(PluginFacts { name: "cost-guard", state: "quarantined", reason: "3 traps" });
    alerting.evaluate(&with_plugin);
    let names: Vec<String> = std::iter::from_fn(|| alerting.poll_event())
        .map(|e| match e {
            AlertEvent::Fired(a) => {
                if a.labels["alertname"] == "PoolCapacityForecast" {
                    assert!(a.annotations["description"].contains("1500 req/s within 1800 s"), "{a:?}");
                }
                a.labels["alertname"].clone()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["ActuatorFailing", "PluginUnhealthy", "PoolCapacityForecast"]);
}

#[test]
fn fingerprints_are_stable_and_distinct() {
    let a = [("alertname", "X"), ("pool", "p")];
    let b = [("alertname", "X"), ("pool", "q")];
    assert_eq!(fingerprint(a), fingerprint(a));
    assert_ne!(fingerprint(a), fingerprint(b));
    // Where a value ends matters: ("ab", "c") is not ("a", "bc").
    assert_ne!(fingerprint([("k", "ab"), ("l", "c")]), fingerprint([("k", "a"), ("l", "bc")]));
}

#[test]
fn an_unacknowledged_wedding_day_alert_escalates_every_30_s_until_acknowledged() {
    let mut alerting = Alerting::new(AlertSettings::default());
    let shedding = status(false, 0.5);
    alerting.evaluate(&facts(0, vec![pool(&shedding)], &["w-1"]));
    alerting.evaluate(&facts(10, vec![pool(&shedding)], &["w-1"]));
    let Some(AlertEvent::Fired(fired)) = alerting.poll_event() else { panic!("fires") };
    assert_eq!(fired.escalation_tier, 1);
    for s in 11..40 {
        alerting.evaluate(&facts(s, vec![pool(&shedding)], &["w-1"]));
        assert_eq!(alerting.poll_event(), None, "second {s}: not yet 30 s");
    }
    alerting.evaluate(&facts(40, vec![pool(&shedding)], &["w-1"]));
    let Some(AlertEvent::Escalated(tier2)) = alerting.poll_event() else { panic!("tier 2 after 30 s") };
    assert_eq!(tier2.escalation_tier, 2);
    let acked = alerting.acknowledge(&fired.fingerprint, "oncall-ana", 1).unwrap();
    assert_eq!(acked.acknowledged, Some(("oncall-ana".to_owned(), 1)));
    assert!(matches!(alerting.poll_event(), Some(AlertEvent::Acknowledged(_))));
    for s in 41..200 {
        alerting.evaluate(&facts(s, vec![pool(&shedding)], &["w-1"]));
        assert_eq!(alerting.poll_event(), None, "acknowledged: no tier 3");
    }
    assert!(alerting.acknowledge("0000000000000000", "x", 2).is_none());
}

#[test]
fn an_alert_without_a_wedding_escalates_after_the_plain_delay_up_to_the_last_tier() {
    let mut alerting = Alerting::new(AlertSettings::default());
    let shedding = status(false, 0.5);
    alerting.evaluate(&facts(0, vec![pool(&shedding)], &[]));
    let mut tiers = Vec::new();
    for s in 10..=1000 {
        alerting.evaluate(&facts(s, vec![pool(&shedding)], &[]));
        while let Some(event) = alerting.poll_event() {
            match event {
                AlertEvent::Fired(a) | AlertEvent::Escalated(a) => tiers.push((s, a.escalation_tier)),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(tiers, [(10, 1), (310, 2), (610, 3)], "every 300 s, three tiers in all");
}
