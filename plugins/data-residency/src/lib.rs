//! `data-residency`: vetoes any placement or failover that moves a region's traffic outside the
//! jurisdictions it may go to.
//!
//! Every region belongs to at most one jurisdiction (from `regions`, else from the presets' name
//! rules). A jurisdiction with a policy lists where its traffic may go (`allowed`, itself
//! included implicitly). Each round:
//! - a proposal that places a pool's capacity in another region is vetoed (`placement`) when the
//!   pool's home jurisdiction has a policy that does not allow the target's jurisdiction;
//! - a failover is vetoed (`failover`, by id) when the failed region's jurisdiction has a policy
//!   that does not allow the target region's.
//!
//! A region with no known jurisdiction is never an allowed target of a restricted jurisdiction
//! (unless `unknown_is_allowed`). Traffic from a region with no jurisdiction or no policy moves
//! freely.
//!
//! Presets (`presets`, default both):
//! - `gdpr`: regions `eu-*`, `europe-*` are jurisdiction `eu`, which may only go to `eu`;
//! - `ccpa`: regions `us-west-1`, `us-west1`, `us-california-*` are `us-ca`, other `us-*` are `us`;
//!   `us-ca` may go to `us-ca` and `us`.
//!
//! Config (`[plugins.config.data-residency]`, every key optional):
//!
//! ```json
//! {
//!   "presets": ["gdpr", "ccpa"],
//!   "regions": { "ch-zurich": "ch", "eu-west": "eu" },
//!   "policies": { "ch": { "allowed": ["ch", "eu"], "label": "Swiss FADP" } },
//!   "unknown_is_allowed": false
//! }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict, log};

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Built-in rules to start from: `gdpr`, `ccpa`.
    pub presets: Vec<String>,
    /// Region name → jurisdiction (wins over the presets' name rules).
    pub regions: BTreeMap<String, String>,
    /// Jurisdiction → policy (wins over the presets' policies).
    pub policies: BTreeMap<String, JurisdictionPolicy>,
    /// A target region with no known jurisdiction counts as allowed.
    pub unknown_is_allowed: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            presets: vec!["gdpr".into(), "ccpa".into()],
            regions: BTreeMap::new(),
            policies: BTreeMap::new(),
            unknown_is_allowed: false,
        }
    }
}

/// Where a jurisdiction's traffic may go.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JurisdictionPolicy {
    /// Jurisdictions it may move to (itself is always allowed).
    pub allowed: Vec<String>,
    /// Name used in veto reasons (e.g. `GDPR`); the jurisdiction's name by default.
    pub label: Option<String>,
}

/// A preset: name rules and policies.
struct Preset {
    name: &'static str,
    /// (region-name prefix or exact name, jurisdiction); exact names end without `-`/`*`.
    rules: &'static [(&'static str, &'static str)],
    policies: &'static [(&'static str, &'static [&'static str], &'static str)],
}

const PRESETS: [Preset; 2] = [
    Preset { name: "gdpr", rules: &[("eu-", "eu"), ("europe-", "eu")], policies: &[("eu", &["eu"], "GDPR")] },
    Preset {
        name: "ccpa",
        rules: &[("us-west-1", "us-ca"), ("us-west1", "us-ca"), ("us-california-", "us-ca"), ("us-", "us")],
        policies: &[("us-ca", &["us-ca", "us"], "CCPA")],
    },
];

/// The resolved rules: jurisdictions by region name, policies by jurisdiction.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    explicit: BTreeMap<String, String>,
    prefixes: Vec<(&'static str, &'static str)>,
    policies: BTreeMap<String, (Vec<String>, String)>,
    unknown_is_allowed: bool,
}

impl Rules {
    /// Builds the rules from a config.
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut rules = Rules {
            explicit: config.regions.clone(),
            unknown_is_allowed: config.unknown_is_allowed,
            ..Rules::default()
        };
        for name in &config.presets {
            let Some(preset) = PRESETS.iter().find(|p| p.name == name.as_str()) else {
                return Err(format!("data-residency: unknown preset {name:?} (known: gdpr, ccpa)"));
            };
            rules.prefixes.extend_from_slice(preset.rules);
            for (jurisdiction, allowed, label) in preset.policies {
                let allowed = allowed.iter().map(|a| (*a).to_owned()).collect();
                rules.policies.insert((*jurisdiction).to_owned(), (allowed, (*label).to_owned()));
            }
        }
        for (jurisdiction, policy) in &config.policies {
            if jurisdiction.is_empty() || policy.allowed.iter().any(String::is_empty) {
                return Err(format!("data-residency: policy {jurisdiction:?}: empty jurisdiction name"));
            }
            let label = policy.label.clone().unwrap_or_else(|| jurisdiction.clone());
            rules.policies.insert(jurisdiction.clone(), (policy.allowed.clone(), label));
        }
        if let Some((region, _)) = config.regions.iter().find(|(_, j)| j.is_empty()) {
            return Err(format!("data-residency: region {region:?} has an empty jurisdiction"));
        }
        Ok(rules)
    }

    /// The jurisdiction of a region, by name.
    pub fn jurisdiction<'a>(&'a self, region: &str) -> Option<&'a str> {
        if let Some(j) = self.explicit.get(region) {
            return Some(j);
        }
        self.prefixes.iter().find(|(rule, _)| matches_rule(region, rule)).map(|(_, j)| *j)
    }

    /// `None` when traffic may move from `from` to `to` (region names); else why not.
    pub fn forbids(&self, from: &str, to: &str) -> Option<String> {
        let source = self.jurisdiction(from)?;
        let (allowed, label) = self.policies.get(source)?;
        match self.jurisdiction(to) {
            Some(target) if target == source || allowed.iter().any(|a| a == target) => None,
            Some(target) => Some(format!("{label}: {from} ({source}) traffic may not move to {to} ({target})")),
            None if self.unknown_is_allowed => None,
            None => Some(format!("{label}: {from} ({source}) traffic may not move to {to} (no known jurisdiction)")),
        }
    }
}

/// `rule` ending in `-` is a prefix; otherwise an exact name or a prefix followed by `-`.
fn matches_rule(region: &str, rule: &str) -> bool {
    if rule.ends_with('-') {
        region.starts_with(rule)
    } else {
        region == rule || region.strip_prefix(rule).is_some_and(|rest| rest.starts_with('-'))
    }
}

/// The policy.
#[derive(Debug)]
pub struct DataResidency {
    rules: Rules,
    /// Per pool, per region id: why placing the pool there is forbidden.
    placement: Vec<Vec<Option<String>>>,
}

impl Policy for DataResidency {
    fn describe() -> PluginInfo {
        PluginInfo::builder("data-residency", env!("CARGO_PKG_VERSION"))
            .description("vetoes placements and failovers that move traffic outside its allowed jurisdictions")
            .on_failover()
            .build()
    }

    fn configure(setup: &Setup) -> Result<Self, String> {
        let config: Config = if setup.config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(&setup.config).map_err(|e| format!("data-residency: bad config: {e}"))?
        };
        let rules = Rules::new(&config)?;
        let placement = setup
            .pools
            .iter()
            .map(|pool| {
                let home = setup.region_name(pool.region);
                setup.regions.iter().map(|r| rules.forbids(home, &r.name)).collect()
            })
            .collect();
        for region in &setup.regions {
            let j = rules.jurisdiction(&region.name).unwrap_or("none");
            log::debug!("data-residency: region {} is in jurisdiction {j}", region.name);
        }
        Ok(DataResidency { rules, placement })
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let mut verdict = Verdict::builder();
        for proposal in &round.proposals {
            let reason = self
                .placement
                .get(proposal.pool as usize)
                .and_then(|regions| regions.get(proposal.placement as usize))
                .and_then(Option::as_deref);
            if let Some(reason) = reason {
                verdict.veto_placement(proposal.pool, reason);
            }
        }
        for failover in &round.failovers {
            if let Some(reason) = self.rules.forbids(&failover.failed_region, &failover.target_region) {
                log::warn!("data-residency: vetoing failover {}: {reason}", failover.id);
                verdict.veto_failover(failover.id.as_str(), reason);
            }
        }
        verdict.build()
    }
}

wedsync_sdk::export!(DataResidency);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use wedsync_sdk::Hooks;
    use wedsync_sdk::testing::{Harness, SetupBuilder, check_info};

    use super::*;

    fn setup(config: &str) -> Setup {
        SetupBuilder::new()
            .local_region("eu-west-1")
            .pool("eu-web", "eu-west-1")
            .placements("eu-web", &["eu-central-1", "us-east-1", "ap-south-1"])
            .pool("ca-web", "us-west-1")
            .placements("ca-web", &["us-east-1", "eu-west-1"])
            .pool("asia-web", "ap-south-1")
            .placements("asia-web", &["us-east-1"])
            .config(config)
            .build()
    }

    #[test]
    fn describes_itself_with_the_failover_hook() {
        let info = Harness::<DataResidency>::describe();
        check_info(&info).unwrap();
        assert_eq!(info.hooks, Hooks::DECIDE | Hooks::FAILOVER);
    }

    #[test]
    fn gdpr_keeps_eu_placements_in_the_eu() {
        let mut h = Harness::<DataResidency>::configure(setup("{}")).unwrap();
        let inside = h.round().place("eu-web", "eu-central-1").build();
        assert!(h.decide(&inside).is_empty());
        let outside = h.round().place("eu-web", "us-east-1").build();
        let v = h.decide(&outside);
        assert!(v.vetoes_placement(0));
        assert!(v.vetoes[0].reason.starts_with("GDPR: eu-west-1 (eu)"), "{}", v.vetoes[0].reason);
        let unknown = h.round().place("eu-web", "ap-south-1").build();
        assert!(h.decide(&unknown).vetoes_placement(0), "a region without jurisdiction is not the EU");
    }

    #[test]
    fn ccpa_keeps_california_in_the_us_and_others_move_freely() {
        let mut h = Harness::<DataResidency>::configure(setup("{}")).unwrap();
        let round = h.round().place("ca-web", "us-east-1").place("asia-web", "us-east-1").build();
        assert!(h.decide(&round).is_empty());
        let round = h.round().place("ca-web", "eu-west-1").build();
        let v = h.decide(&round);
        assert!(v.vetoes_placement(1) && v.vetoes[0].reason.starts_with("CCPA"));
    }

    #[test]
    fn failovers_are_vetoed_by_id() {
        let mut h = Harness::<DataResidency>::configure(setup("{}")).unwrap();
        let round = h
            .round()
            .failover("failover:eu-west-1:us-east-1:ab", "eu-west-1", "us-east-1", 500.0, None)
            .failover("failover:eu-west-1:eu-central-1:cd", "eu-west-1", "eu-central-1", 500.0, None)
            .failover("failover:ap-south-1:us-east-1:ef", "ap-south-1", "us-east-1", 500.0, None)
            .build();
        let v = h.decide(&round);
        assert!(v.vetoes_failover("failover:eu-west-1:us-east-1:ab"));
        assert!(!v.vetoes_failover("failover:eu-west-1:eu-central-1:cd"));
        assert!(!v.vetoes_failover("failover:ap-south-1:us-east-1:ef"));
        assert_eq!(v.vetoes.len(), 1);
        assert!(h.logged("vetoing failover"));
    }

    #[test]
    fn custom_jurisdictions_and_policies() {
        let cfg = r#"{"presets": [], "regions": {"ap-south-1": "in", "us-east-1": "us"},
                      "policies": {"in": {"allowed": []}}, "unknown_is_allowed": true}"#;
        let mut h = Harness::<DataResidency>::configure(setup(cfg)).unwrap();
        let round = h.round().place("asia-web", "us-east-1").place("eu-web", "us-east-1").build();
        let v = h.decide(&round);
        assert!(v.vetoes_placement(2), "India stays in India");
        assert!(!v.vetoes_placement(0), "no GDPR preset");
        assert!(v.vetoes[0].reason.starts_with("in: ap-south-1 (in)"));
        let rules = Rules::new(&serde_json::from_str(cfg).unwrap()).unwrap();
        assert_eq!(rules.forbids("ap-south-1", "mars-1"), None, "unknown_is_allowed");
    }

    #[test]
    fn rule_matching() {
        assert!(matches_rule("us-west-1", "us-west-1"));
        assert!(!matches_rule("us-west-10", "us-west-1"));
        assert!(matches_rule("us-west-1-lax", "us-west-1"));
        assert!(matches_rule("eu-north-1", "eu-"));
        let rules = Rules::new(&Config::default()).unwrap();
        assert_eq!(rules.jurisdiction("us-west-1"), Some("us-ca"));
        assert_eq!(rules.jurisdiction("us-west-2"), Some("us"));
        assert_eq!(rules.jurisdiction("europe-west4"), Some("eu"));
        assert_eq!(rules.jurisdiction("ap-south-1"), None);
    }

    #[test]
    fn bad_configs_are_explained() {
        for (cfg, needle) in [
            (r#"{"presets": ["hipaa"]}"#, "unknown preset"),
            (r#"{"regions": {"x": ""}}"#, "empty jurisdiction"),
            (r#"{"policies": {"eu": {"allow": ["eu"]}}}"#, "unknown field"),
            ("nope", "bad config"),
        ] {
            let err = Harness::<DataResidency>::configure(setup(cfg)).unwrap_err();
            assert!(err.contains(needle), "{cfg}: {err}");
        }
    }
}
