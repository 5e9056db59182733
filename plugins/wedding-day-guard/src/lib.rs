//! `wedding-day-guard`: protects the pools of a region with an active wedding.
//!
//! Protection keeps the protected floor (the engine's) and the wedding-critical reserve; it does
//! not freeze a pool at its peak. For every protected pool (a wedding is active in its region),
//! each round it:
//! - keeps the wedding-critical reserve: raises the target so that the other classes fit in
//!   `1 − reserve` (80% by default) of the capacity and the whole load in all of it, i.e.
//!   `units ≥ max(load, (load − wedding_critical) / (1 − reserve)) / capacity_per_unit`, the
//!   share the engine's admission keeps for wedding-critical traffic while protected. A pool at
//!   its target utilization (70%) already has it; the raise matters when the engine's own target
//!   would leave less free (a high target utilization, or a proposal within the tolerance);
//! - smooths the way down: vetoes a scale-down below what the highest demand of the last
//!   `scale_down_hold_seconds` (60) needs at the target utilization (a scale-down that would go
//!   below it is vetoed, or cut short at it), so a dip of a few seconds in a wedding's traffic
//!   does not release capacity it comes straight back for. The hold is short on purpose: the
//!   platform releases capacity within 2 minutes of demand falling, weddings or not, and the
//!   engine's own stabilization window already spans the hold;
//! - for a large wedding (at least `large_wedding.guests` guests) adds a pre-scale floor of
//!   `protected_floor + extra_units + ceil(protected_floor · extra_fraction)`.
//!
//! Config (`[plugins.config.wedding-day-guard]`, every key optional):
//!
//! ```json
//! {
//!   "reserve": 0.2,
//!   "veto_scale_down": true,
//!   "scale_down_hold_seconds": 60,
//!   "large_wedding": { "guests": 300, "extra_units": 2, "extra_fraction": 0.5 }
//! }
//! ```
//!
//! `scale_down_hold_minutes`, the older form of the hold, is still read (it held 15 minutes by
//! default, which kept a wedding's surge capacity for a quarter of an hour after the surge).

use serde::Deserialize;
use wedsync_sdk::{PluginInfo, Policy, PoolState, Round, Setup, Verdict, log};

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Share of capacity kept for wedding-critical traffic while protected (the other classes
    /// fit in the rest), in [0, 0.9].
    pub reserve: f64,
    /// Veto scale-downs of protected pools (below the recent peak's needs).
    pub veto_scale_down: bool,
    /// How far back the peak a scale-down must still carry looks, seconds (1 to 86,400).
    pub scale_down_hold_seconds: u32,
    /// The same in minutes (1 to 1440), the older key; when given it wins.
    pub scale_down_hold_minutes: Option<u32>,
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
            scale_down_hold_seconds: 60,
            scale_down_hold_minutes: None,
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
        if let Some(minutes) = config.scale_down_hold_minutes
            && !(1..=1440).contains(&minutes)
        {
            return Err(format!("wedding-day-guard: scale_down_hold_minutes {minutes} must be from 1 to 1440"));
        }
        if !(1..=86_400).contains(&config.scale_down_hold_seconds) {
            return Err(format!(
                "wedding-day-guard: scale_down_hold_seconds {} must be from 1 to 86400",
                config.scale_down_hold_seconds
            ));
        }
        let fraction = config.large_wedding.extra_fraction;
        if !(0.0..=10.0).contains(&fraction) {
            return Err(format!("wedding-day-guard: large_wedding.extra_fraction {fraction} must be in [0, 10]"));
        }
        Ok(config)
    }

    /// The scale-down hold, seconds.
    pub fn hold_seconds(&self) -> u32 {
        self.scale_down_hold_minutes.map_or(self.scale_down_hold_seconds, |minutes| minutes * 60)
    }
}

/// Most buckets of recent peaks a pool keeps, whatever the hold: a bucket spans the hold over
/// this many (at least a second).
const PEAK_BUCKETS: u32 = 120;

/// Per pool, worked out at configure time.
#[derive(Debug, Clone)]
struct PoolPlan {
    /// Requests per second one unit carries at 100%.
    per_unit: f64,
    /// Requests per second one unit carries at the target utilization.
    per_unit_at_target: f64,
    /// The share of capacity the other classes may use, `1 − reserve`.
    others_share: f64,
    /// The floor during a large wedding.
    large_floor: u32,
    /// The pool's maximum.
    max: u32,
    /// Veto reason (names the region).
    reason: String,
    /// The highest load of each recent bucket: (bucket number, requests/s), oldest first.
    peaks: std::collections::VecDeque<(i64, f64)>,
}

/// The policy.
#[derive(Debug)]
pub struct WeddingDayGuard {
    config: Config,
    /// Width of a bucket of recent peaks, ms.
    bucket_ms: i64,
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
                    per_unit: p.capacity_per_unit,
                    per_unit_at_target: p.effective_capacity_per_unit(),
                    others_share: 1.0 - config.reserve,
                    large_floor: floor.saturating_add(config.large_wedding.extra_units).saturating_add(extra),
                    max: p.max,
                    reason: format!(
                        "wedding active in {}: no scale-down below the last {} s' peak",
                        setup.region_name(p.region),
                        config.hold_seconds()
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
        let bucket_ms = i64::from(config.hold_seconds().div_ceil(PEAK_BUCKETS)) * 1000;
        Ok(WeddingDayGuard { config, bucket_ms, pools, was_active: false })
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let mut verdict = Verdict::builder();
        let large =
            self.config.large_wedding.guests > 0 && round.largest_wedding_guests() >= self.config.large_wedding.guests;
        let mut active = false;
        let bucket = round.unix_ms.div_euclid(self.bucket_ms);
        let hold = i64::from(self.config.hold_seconds()) * 1000 / self.bucket_ms;
        for state in round.pools.iter() {
            let Some(plan) = self.pools.get_mut(state.pool as usize) else { continue };
            // The recent peaks are kept for every pool, so a wedding that starts finds them. They
            // are of the demand seen: the engine's load may be a climb projected ahead, and
            // capacity bought for a projection that did not come true is not the wedding's.
            let demand = state.demand.total();
            let load = if demand > 0.0 { demand } else { state.load };
            if load.is_finite() {
                match plan.peaks.back_mut() {
                    Some((b, peak)) if *b == bucket => *peak = peak.max(load),
                    _ => plan.peaks.push_back((bucket, load)),
                }
            }
            while plan.peaks.front().is_some_and(|(b, _)| *b <= bucket - hold) {
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
                let keep = units_for(recent_peak, plan.per_unit_at_target, plan.max);
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

/// Units that keep the wedding-critical reserve: the whole load within capacity and the other
/// classes within `1 − reserve` of it, at most the pool's maximum.
fn reserve_units(state: &PoolState, plan: &PoolPlan) -> u32 {
    let load = state.load.max(state.demand.total());
    let others = (load - state.demand.get(wedsync_sdk::TrafficClass::WeddingCritical)).max(0.0);
    let others = units_for(others, plan.per_unit * plan.others_share, plan.max);
    units_for(load, plan.per_unit, plan.max).max(others)
}

/// Units that carry `load` at `per_unit` each, at most `max`.
fn units_for(load: f64, per_unit: f64, max: u32) -> u32 {
    if !(load.is_finite() && load > 0.0 && per_unit > 0.0) {
        return 0;
    }
    let units = (load / per_unit).ceil();
    if units >= f64::from(max) { max } else { units as u32 }
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
        // 1,000 rps at 50 rps per unit at the target (100 × 0.5) is 20 units: a scale-down from
        // 20 to 15 goes below what the last minute's peak needs.
        let round = h
            .round()
            .units("checkout", 20)
            .propose("checkout", 15)
            .demand("checkout", TrafficClass::WeddingCritical, 600.0)
            .demand("checkout", TrafficClass::Media, 400.0)
            .wedding(120)
            .build();
        let v = h.decide(&round);
        assert!(v.vetoes_scale_down(0));
        assert_eq!(v.prescale_floor(0), None, "120 guests is not a large wedding");
        // The pool in another region is not protected.
        assert!(!v.vetoes_scale_down(1) && v.raised_target(1).is_none());
        assert!(h.logged("protecting"));
        assert!(v.vetoes[0].reason.contains("eu-west"));
    }

    /// A protected round of `units` units, the engine proposing to keep them, with this much
    /// wedding-critical and media demand.
    fn demand_round(h: &Harness<WeddingDayGuard>, units: u32, critical: f64, media: f64) -> Round {
        h.round()
            .units("checkout", units)
            .propose("checkout", units)
            .demand("checkout", TrafficClass::WeddingCritical, critical)
            .demand("checkout", TrafficClass::Media, media)
            .wedding(120)
            .build()
    }

    #[test]
    fn the_reserve_keeps_a_fifth_of_capacity_for_wedding_critical() {
        let mut h = Harness::<WeddingDayGuard>::configure(setup("{}")).unwrap();
        // 200 rps of wedding-critical and 900 of media on 10 units of 100 rps: media must fit in
        // 80 rps a unit, so 12 units; the whole 1,100 rps in 11.
        assert_eq!(h.decide(&demand_round(&h, 10, 200.0, 900.0)).raised_target(0), Some(12));
        // Mostly wedding-critical: the whole load decides (1,100 rps in 11 units).
        assert_eq!(h.decide(&demand_round(&h, 10, 1000.0, 100.0)).raised_target(0), Some(11));
        // A pool at its target utilization (50%) already keeps the reserve: nothing to raise.
        assert_eq!(h.decide(&demand_round(&h, 22, 0.0, 1100.0)).raised_target(0), None);
    }

    fn protected_round(h: &Harness<WeddingDayGuard>, at_ms: i64, units: u32, load: f64, propose: u32) -> Round {
        h.round()
            .unix_ms(at_ms)
            .units("checkout", units)
            .propose("checkout", propose)
            .load("checkout", load)
            .wedding(120)
            .build()
    }

    const START: i64 = 1_781_092_800_000;

    #[test]
    fn a_scale_down_waits_until_the_surge_has_been_over_for_the_hold() {
        let mut h = Harness::<WeddingDayGuard>::configure(setup("{}")).unwrap();
        let at = |h: &Harness<WeddingDayGuard>, seconds: i64, load: f64, propose: u32| {
            protected_round(h, START + seconds * 1000, 20, load, propose)
        };
        // A surge: 1,000 rps needs 20 units at the target.
        assert!(!h.decide(&at(&h, 0, 1000.0, 20)).vetoes_scale_down(0));
        // Thirty seconds later the load is back to 200 rps and the engine proposes 5 units: held.
        let v = h.decide(&at(&h, 30, 200.0, 5));
        assert!(v.vetoes_scale_down(0), "{v:?}");
        assert!(v.vetoes[0].reason.contains("60 s"), "{v:?}");
        // A scale-down that still carries the peak is fine.
        assert!(!h.decide(&at(&h, 31, 200.0, 20)).vetoes_scale_down(0));
        // From more units than the peak needs, the scale-down goes as far as the peak allows.
        let v = h.decide(&protected_round(&h, START + 32_000, 40, 200.0, 5));
        assert!(!v.vetoes_scale_down(0), "{v:?}");
        assert_eq!(v.raised_target(0), Some(20));
        // A minute after the surge it has left the window: the scale-down goes through.
        assert!(h.decide(&at(&h, 59, 200.0, 5)).vetoes_scale_down(0));
        let v = h.decide(&at(&h, 61, 200.0, 5));
        assert!(!v.vetoes_scale_down(0), "{v:?}");
        assert_eq!(v.raised_target(0), None, "5 units carry 200 rps with the reserve free");
    }

    #[test]
    fn protection_never_freezes_a_pool_at_its_peak() {
        // Whatever the surge, two minutes after it the guard asks for no more than the load now
        // needs: the pool is not kept at its peak for the rest of the wedding.
        let mut h = Harness::<WeddingDayGuard>::configure(setup("{}")).unwrap();
        for second in 0..120 {
            let v = h.decide(&protected_round(&h, START + second * 1000, 100, 4000.0, 100));
            assert!(!v.vetoes_scale_down(0));
        }
        for second in 120..600 {
            let v = h.decide(&protected_round(&h, START + second * 1000, 100, 400.0, 8));
            if second >= 180 {
                assert!(!v.vetoes_scale_down(0), "at {second} s: {v:?}");
                // 400 rps at 50 rps per unit is 8 units, and 80 rps a unit keeps the reserve.
                assert_eq!(v.raised_target(0), None, "at {second} s");
            }
        }
    }

    #[test]
    fn the_older_hold_in_minutes_is_still_read() {
        let mut h = Harness::<WeddingDayGuard>::configure(setup(r#"{"scale_down_hold_minutes": 15}"#)).unwrap();
        let at = |h: &Harness<WeddingDayGuard>, minutes: i64, load: f64, propose: u32| {
            protected_round(h, START + minutes * 60_000, 20, load, propose)
        };
        assert!(!h.decide(&at(&h, 0, 1000.0, 20)).vetoes_scale_down(0));
        let v = h.decide(&at(&h, 5, 200.0, 5));
        assert!(v.vetoes_scale_down(0) && v.vetoes[0].reason.contains("900 s"), "{v:?}");
        assert!(h.decide(&at(&h, 14, 200.0, 5)).vetoes_scale_down(0));
        assert!(!h.decide(&at(&h, 15, 200.0, 5)).vetoes_scale_down(0));
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
        assert_eq!(v.raised_target(0), Some(20)); // 1000 / (100 × (1 − 0.5))
        assert_eq!(v.prescale_floor(0), Some(11));

        let err = Harness::<WeddingDayGuard>::configure(setup(r#"{"scale_down_hold_minutes": 0}"#)).unwrap_err();
        assert!(err.contains("scale_down_hold_minutes"), "{err}");
        let err = Harness::<WeddingDayGuard>::configure(setup(r#"{"scale_down_hold_seconds": 0}"#)).unwrap_err();
        assert!(err.contains("scale_down_hold_seconds"), "{err}");
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
