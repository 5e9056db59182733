//! `wedding-day-guard`: protects the pools of a region with an active wedding.
//!
//! For every protected pool (a wedding is active in its region), each round it:
//! - vetoes any scale-down;
//! - keeps the reserve: raises the target so that `reserve` (20% by default) of the capacity
//!   stays free, i.e. `units ≥ load / ((1 − reserve) · capacity_per_unit · target_utilization)`;
//! - for a large wedding (at least `large_wedding.guests` guests) adds a pre-scale floor of
//!   `protected_floor + extra_units + ceil(protected_floor · extra_fraction)`.
//!
//! Config (`[plugins.config.wedding-day-guard]`, every key optional):
//!
//! ```json
//! {
//!   "reserve": 0.2,
//!   "veto_scale_down": true,
//!   "large_wedding": { "guests": 300, "extra_units": 2, "extra_fraction": 0.5 }
//! }
//! ```

use serde::Deserialize;
use wedsync_sdk::{PluginInfo, Policy, PoolState, Round, Setup, Verdict, log};

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Share of capacity kept free while protected, in [0, 0.9].
    pub reserve: f64,
    /// Veto scale-downs of protected pools.
    pub veto_scale_down: bool,
    /// The floor for large weddings.
    pub large_wedding: LargeWedding,
}

/// What counts as a large wedding and how much higher its floor is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LargeWedding {
    /// Guests at or above which a wedding is large (0 turns the large-wedding floor off).
    pub guests: u32,
    /// Units above the protected floor.
    pub extra_units: u32,
    /// Fraction of the protected floor added on top, in [0, 10].
    pub extra_fraction: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { reserve: 0.2, veto_scale_down: true, large_wedding: LargeWedding::default() }
    }
}

impl Default for LargeWedding {
    fn default() -> Self {
        LargeWedding { guests: 300, extra_units: 2, extra_fraction: 0.5 }
    }
}

impl Config {
    /// Parses and checks the plugin's JSON config (`{}` or empty: the defaults).
    pub fn parse(json: &str) -> Result<Self, String> {
        let config: Config = if json.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(json).map_err(|e| format!("wedding-day-guard: bad config: {e}"))?
        };
        if !(0.0..=0.9).contains(&config.reserve) {
            return Err(format!("wedding-day-guard: reserve {} must be in [0, 0.9]", config.reserve));
        }
        let fraction = config.large_wedding.extra_fraction;
        if !(0.0..=10.0).contains(&fraction) {
            return Err(format!("wedding-day-guard: large_wedding.extra_fraction {fraction} must be in [0, 10]"));
        }
        Ok(config)
    }
}

/// Per pool, worked out at configure time.
#[derive(Debug, Clone)]
struct PoolPlan {
    /// Requests per second one unit carries while keeping the reserve free.
    per_unit_with_reserve: f64,
    /// The floor during a large wedding.
    large_floor: u32,
    /// The pool's maximum.
    max: u32,
    /// Veto reason (names the region).
    reason: String,
}

/// The policy.
#[derive(Debug)]
pub struct WeddingDayGuard {
    config: Config,
    pools: Vec<PoolPlan>,
    was_active: bool,
}

impl Policy for WeddingDayGuard {
    fn describe() -> PluginInfo {
        PluginInfo::builder("wedding-day-guard", env!("CARGO_PKG_VERSION"))
            .description("protects regions with active weddings: no scale-down, the reserve, a higher floor")
            .build()
    }

    fn configure(setup: &Setup) -> Result<Self, String> {
        let config = Config::parse(&setup.config)?;
        let pools = setup
            .pools
            .iter()
            .map(|p| {
                let floor = p.protected_floor;
                let extra = (f64::from(floor) * config.large_wedding.extra_fraction).ceil() as u32;
                PoolPlan {
                    per_unit_with_reserve: p.effective_capacity_per_unit() * (1.0 - config.reserve),
                    large_floor: floor.saturating_add(config.large_wedding.extra_units).saturating_add(extra),
                    max: p.max,
                    reason: format!("wedding active in {}: no scale-down", setup.region_name(p.region)),
                }
            })
            .collect();
        log::info!(
            "wedding-day-guard: {} pools, reserve {:.0}%, large weddings from {} guests",
            setup.pools.len(),
            config.reserve * 100.0,
            config.large_wedding.guests
        );
        Ok(WeddingDayGuard { config, pools, was_active: false })
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let mut verdict = Verdict::builder();
        let large =
            self.config.large_wedding.guests > 0 && round.largest_wedding_guests() >= self.config.large_wedding.guests;
        let mut active = false;
        for state in round.pools.iter().filter(|s| s.protected) {
            let Some(plan) = self.pools.get(state.pool as usize) else { continue };
            active = true;
            let proposed = round.proposal(state.pool).map_or(state.target, |p| p.to);
            if self.config.veto_scale_down && proposed < state.target.max(state.serving) {
                verdict.veto_scale_down(state.pool, plan.reason.as_str());
            }
            let needed = reserve_units(state, plan);
            if needed > proposed {
                verdict.raise_target(state.pool, needed);
            }
            if large && plan.large_floor > proposed {
                verdict.prescale_floor(state.pool, plan.large_floor.min(plan.max));
            }
        }
        if active != self.was_active {
            self.was_active = active;
            if active {
                log::info!("wedding-day-guard: protecting (largest wedding {} guests)", round.largest_wedding_guests());
            } else {
                log::info("wedding-day-guard: no protected pool any more");
            }
        }
        verdict.build()
    }
}

/// Units that carry the pool's load with the reserve free, at most the pool's maximum.
fn reserve_units(state: &PoolState, plan: &PoolPlan) -> u32 {
    let load = state.load.max(state.demand.total());
    if !(load.is_finite() && load > 0.0 && plan.per_unit_with_reserve > 0.0) {
        return 0;
    }
    let units = (load / plan.per_unit_with_reserve).ceil();
    if units >= f64::from(plan.max) { plan.max } else { units as u32 }
}

wedsync_sdk::export!(WeddingDayGuard);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use wedsync_sdk::TrafficClass;
    use wedsync_sdk::testing::{Harness, SetupBuilder, check_info};

    use super::*;

    fn setup(config: &str) -> Setup {
        SetupBuilder::new()
            .local_region("eu-west")
            .pool_with("checkout", "eu-west", |p| {
                p.protected_floor = 10;
                p.capacity_per_unit = 100.0;
                p.target_utilization = 0.5;
                p.max = 200;
            })
            .pool("batch", "us-east")
            .config(config)
            .build()
    }

    #[test]
    fn describes_itself() {
        check_info(&Harness::<WeddingDayGuard>::describe()).unwrap();
    }

    #[test]
    fn quiet_region_is_left_alone() {
        let mut h = Harness::<WeddingDayGuard>::configure(setup("{}")).unwrap();
        let round = h.round().units("checkout", 12).propose("checkout", 8).build();
        assert!(h.decide(&round).is_empty());
    }

    #[test]
    fn wedding_vetoes_scale_down_and_keeps_the_reserve() {
        let mut h = Harness::<WeddingDayGuard>::configure(setup("{}")).unwrap();
        // 1,000 rps at 50 rps per unit (100 × 0.5) is 20 units; with 20% free it is 25.
        let round = h
            .round()
            .units("checkout", 22)
            .propose("checkout", 20)
            .demand("checkout", TrafficClass::WeddingCritical, 600.0)
            .demand("checkout", TrafficClass::Media, 400.0)
            .wedding(120)
            .build();
        let v = h.decide(&round);
        assert!(v.vetoes_scale_down(0));
        assert_eq!(v.raised_target(0), Some(25));
        assert_eq!(v.prescale_floor(0), None, "120 guests is not a large wedding");
        // The pool in another region is not protected.
        assert!(!v.vetoes_scale_down(1) && v.raised_target(1).is_none());
        assert!(h.logged("protecting"));
        assert!(v.vetoes[0].reason.contains("eu-west"));
    }

    #[test]
    fn large_wedding_raises_the_floor() {
        let mut h = Harness::<WeddingDayGuard>::configure(setup("{}")).unwrap();
        let round = h.round().units("checkout", 10).wedding(450).build();
        let v = h.decide(&round);
        // protected floor 10 + 2 extra units + ceil(10 × 0.5).
        assert_eq!(v.prescale_floor(0), Some(17));
        assert!(!v.vetoes_scale_down(0), "no scale-down proposed");
    }

    #[test]
    fn config_is_read_and_checked() {
        let cfg = r#"{"reserve": 0.5, "veto_scale_down": false, "large_wedding": {"guests": 50, "extra_units": 1, "extra_fraction": 0}}"#;
        let mut h = Harness::<WeddingDayGuard>::configure(setup(cfg)).unwrap();
        let round =
            h.round().units("checkout", 30).propose("checkout", 10).load("checkout", 1000.0).wedding(60).build();
        let v = h.decide(&round);
        assert!(!v.vetoes_scale_down(0));
        assert_eq!(v.raised_target(0), Some(40)); // 1000 / (50 × 0.5)
        assert_eq!(v.prescale_floor(0), Some(11));

        let err = Harness::<WeddingDayGuard>::configure(setup(r#"{"reserve": 2}"#)).unwrap_err();
        assert!(err.contains("reserve"), "{err}");
        let err = Harness::<WeddingDayGuard>::configure(setup(r#"{"reserv": 0.2}"#)).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        let err = Harness::<WeddingDayGuard>::configure(setup("not json")).unwrap_err();
        assert!(err.starts_with("wedding-day-guard: bad config"), "{err}");
    }

    #[test]
    fn raise_is_capped_at_the_pool_maximum() {
        let mut h = Harness::<WeddingDayGuard>::configure(setup("{}")).unwrap();
        let round = h.round().units("checkout", 100).load("checkout", 1e9).wedding(10).build();
        assert_eq!(h.decide(&round).raised_target(0), Some(200));
    }
}
