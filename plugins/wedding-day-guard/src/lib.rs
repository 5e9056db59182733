//! `wedding-day-guard`: protects the pools of a region with an active wedding.
//!
//! For every protected pool (a wedding is active in its region), each round it:
//! - vetoes a scale-down below what the highest demand of the last `scale_down_hold_minutes`
//!   (15) needs with the reserve free (a scale-down that would go below it is vetoed, or cut
//!   short at it): capacity a wedding used stays until its surge has been over for that long,
//!   and is then released;
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
//!   "scale_down_hold_minutes": 15,
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
    /// Veto scale-downs of protected pools (below the recent peak's needs).
    pub veto_scale_down: bool,
    /// How far back the peak a scale-down must still carry looks, minutes (1 to 1440).
    pub scale_down_hold_minutes: u32,
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
        Config {
            reserve: 0.2,
            veto_scale_down: true,
            scale_down_hold_minutes: 15,
            large_wedding: LargeWedding::default(),
        }
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
        if !(1..=1440).contains(&config.scale_down_hold_minutes) {
            return Err(format!(
                "wedding-day-guard: scale_down_hold_minutes {} must be from 1 to 1440",
                config.scale_down_hold_minutes
            ));
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
    /// The highest load of each recent minute: (Unix minute, requests/s), oldest first.
    peaks: std::collections::VecDeque<(i64, f64)>,
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
            .description("protects regions with active weddings: a scale-down hold, the reserve, a higher floor")
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
                    reason: format!(
                        "wedding active in {}: no scale-down below the last {} minutes' peak",
                        setup.region_name(p.region),
                        config.scale_down_hold_minutes
                    ),
                    peaks: std::collections::VecDeque::new(),
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
        let minute = round.unix_ms.div_euclid(60_000);
        let hold = i64::from(self.config.scale_down_hold_minutes);
        for state in round.pools.iter() {
            let Some(plan) = self.pools.get_mut(state.pool as usize) else { continue };
            // The recent peaks are kept for every pool, so a wedding that starts finds them. They
            // are of the demand seen: the engine's load may be a climb projected ahead, and
            // capacity bought for a projection that did not come true is not the wedding's.
            let demand = state.demand.total();
            let load = if demand > 0.0 { demand } else { state.load };
            if load.is_finite() {
                match plan.peaks.back_mut() {
                    Some((m, peak)) if *m == minute => *peak = peak.max(load),
                    _ => plan.peaks.push_back((minute, load)),
                }
            }
            while plan.peaks.front().is_some_and(|(m, _)| *m <= minute - hold) {
                plan.peaks.pop_front();
            }
            if !state.protected {
                continue;
            }
            active = true;
            let proposed = round.proposal(state.pool).map_or(state.target, |p| p.to);
            let current = state.target.max(state.serving);
            let mut needed = reserve_units(state, plan);
            if self.config.veto_scale_down && proposed < current {
                let recent_peak = plan.peaks.iter().map(|(_, peak)| *peak).fold(0.0, f64::max);
                let keep = units_for(recent_peak, plan);
                if keep >= current {
                    verdict.veto_scale_down(state.pool, plan.reason.as_str());
                } else if keep > proposed {
                    // Part of the scale-down goes: down to what the recent peak needs.
                    needed = needed.max(keep);
                }
            }
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
    units_for(state.load.max(state.demand.total()), plan)
}

/// Units that carry `load` with the reserve free, at most the pool's maximum.
fn units_for(load: f64, plan: &PoolPlan) -> u32 {
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
    fn a_scale_down_waits_until_the_surge_has_been_over_for_the_hold() {
        let mut h = Harness::<WeddingDayGuard>::configure(setup("{}")).unwrap();
        let start = 1_781_092_800_000;
        let at = |h: &Harness<WeddingDayGuard>, minutes: i64, load: f64, propose: u32| {
            h.round()
                .unix_ms(start + minutes * 60_000)
                .units("checkout", 25)
                .propose("checkout", propose)
                .load("checkout", load)
                .wedding(120)
                .build()
        };
        // A surge: 1,000 rps needs 25 units with the reserve free.
        assert!(!h.decide(&at(&h, 0, 1000.0, 25)).vetoes_scale_down(0));
        // Five minutes later the load is back to 200 rps and the engine proposes 5 units: held.
        let v = h.decide(&at(&h, 5, 200.0, 5));
        assert!(v.vetoes_scale_down(0), "{v:?}");
        assert!(v.vetoes[0].reason.contains("15 minutes"), "{v:?}");
        // A scale-down that still carries the peak is fine.
        assert!(!h.decide(&at(&h, 6, 200.0, 25)).vetoes_scale_down(0));
        // From more units than the peak needs, the scale-down goes as far as the peak allows.
        let v = h.decide(
            &h.round()
                .unix_ms(start + 7 * 60_000)
                .units("checkout", 40)
                .propose("checkout", 5)
                .load("checkout", 200.0)
                .wedding(120)
                .build(),
        );
        assert!(!v.vetoes_scale_down(0), "{v:?}");
        assert_eq!(v.raised_target(0), Some(25));
        // Fifteen minutes after the surge it has left the window: the scale-down goes through.
        assert!(h.decide(&at(&h, 14, 200.0, 5)).vetoes_scale_down(0));
        let v = h.decide(&at(&h, 15, 200.0, 5));
        assert!(!v.vetoes_scale_down(0), "{v:?}");
        assert_eq!(v.raised_target(0), None, "5 units carry 200 rps with the reserve free");
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

        let err = Harness::<WeddingDayGuard>::configure(setup(r#"{"scale_down_hold_minutes": 0}"#)).unwrap_err();
        assert!(err.contains("scale_down_hold_minutes"), "{err}");
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
