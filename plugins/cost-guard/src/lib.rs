//! `cost-guard`: keeps spot for non-critical capacity and trims non-critical scale-ups past an
//! hourly budget; never touches `wedding-critical`.
//!
//! Each round, per pool:
//! - **Spot.** The units that carry the pool's `wedding-critical` demand (with the 20% reserve
//!   while the pool is protected) never run on spot; the rest may, up to the pool's
//!   `spot_max_fraction`. When the engine proposes more spot units than that, a `spot-cap` brings
//!   them back (the contract has no way to *add* spot: the engine already buys it for
//!   non-critical capacity where allowed; this keeps it to non-critical capacity).
//! - **Budget.** With `budget_per_hour` set, the cost of all proposals (on-demand and spot units
//!   at their unit-hour prices) is added up. Past the budget, scale-ups of unprotected pools are
//!   trimmed (`lower-target`), largest saving first, never below the current target, the pool's
//!   minimum or the units its `wedding-critical` demand needs; the non-critical classes of a
//!   trimmed pool are then admitted only as far as the trimmed capacity carries them (`admit`,
//!   least important class shed first). Protected pools (an active wedding) are never trimmed
//!   and `wedding-critical` is never shed.
//!
//! Config (`[plugins.config.cost-guard]`, every key optional):
//!
//! ```json
//! {
//!   "budget_per_hour": 40.0,
//!   "prices": { "on_demand": 0.10, "spot": 0.03 },
//!   "pools": { "checkout": { "on_demand": 0.20, "spot": 0.06 } },
//!   "spot_guard": true
//! }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use wedsync_sdk::{PluginInfo, Policy, PoolState, Proposal, Round, Setup, TrafficClass, Verdict, log};

/// Share of capacity a protected pool keeps free (the host's reserve).
const PROTECTED_RESERVE: f64 = 0.2;

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Most the agent's pools may cost per hour; none: no trimming.
    pub budget_per_hour: Option<f64>,
    /// Unit-hour prices for every pool.
    pub prices: Prices,
    /// Unit-hour prices per pool (by name).
    pub pools: BTreeMap<String, Prices>,
    /// Keep wedding-critical capacity off spot.
    pub spot_guard: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { budget_per_hour: None, prices: Prices::default(), pools: BTreeMap::new(), spot_guard: true }
    }
}

/// Unit-hour prices.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    /// On-demand unit-hour.
    pub on_demand: f64,
    /// Spot unit-hour.
    pub spot: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices { on_demand: 0.10, spot: 0.03 }
    }
}

impl Prices {
    fn check(self, what: &str) -> Result<Self, String> {
        let ok = |p: f64| p.is_finite() && p >= 0.0;
        if ok(self.on_demand) && ok(self.spot) {
            Ok(self)
        } else {
            Err(format!("cost-guard: {what}: prices must be finite and ≥ 0"))
        }
    }
}

#[derive(Debug, Clone)]
struct PoolPlan {
    prices: Prices,
    per_unit: f64,
    min: u32,
    spot_max_fraction: f64,
}

/// The policy.
#[derive(Debug)]
pub struct CostGuard {
    budget: Option<f64>,
    spot_guard: bool,
    pools: Vec<PoolPlan>,
    over_budget: bool,
}

impl Policy for CostGuard {
    fn describe() -> PluginInfo {
        PluginInfo::builder("cost-guard", env!("CARGO_PKG_VERSION"))
            .description("keeps wedding-critical off spot; trims non-critical scale-ups past an hourly budget")
            .build()
    }

    fn configure(setup: &Setup) -> Result<Self, String> {
        let config: Config = if setup.config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(&setup.config).map_err(|e| format!("cost-guard: bad config: {e}"))?
        };
        if let Some(b) = config.budget_per_hour
            && !(b.is_finite() && b >= 0.0)
        {
            return Err(format!("cost-guard: budget_per_hour {b} must be finite and ≥ 0"));
        }
        let defaults = config.prices.check("prices")?;
        for (name, prices) in &config.pools {
            if setup.pool_by_name(name).is_none() {
                return Err(format!("cost-guard: pools.{name}: the agent has no pool named {name:?}"));
            }
            prices.check(&format!("pools.{name}"))?;
        }
        let pools = setup
            .pools
            .iter()
            .map(|p| PoolPlan {
                prices: config.pools.get(&p.name).copied().unwrap_or(defaults),
                per_unit: p.effective_capacity_per_unit(),
                min: p.min,
                spot_max_fraction: p.spot_max_fraction.clamp(0.0, 1.0),
            })
            .collect();
        Ok(CostGuard { budget: config.budget_per_hour, spot_guard: config.spot_guard, pools, over_budget: false })
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let mut verdict = Verdict::builder();
        // (pool, proposal, state, critical units, spot units after the guard)
        let mut rows = Vec::with_capacity(round.proposals.len());
        for proposal in &round.proposals {
            let (Some(plan), Some(state)) = (self.pools.get(proposal.pool as usize), round.pool_state(proposal.pool))
            else {
                continue;
            };
            let critical = critical_units(state, plan);
            let mut spot = proposal.spot_units;
            if self.spot_guard {
                let cap = spot_allowance(proposal.to, critical, plan.spot_max_fraction);
                if proposal.spot_units > cap {
                    verdict.spot_cap(proposal.pool, cap);
                    spot = cap;
                }
            }
            rows.push((plan, proposal, state, critical, spot));
        }

        let Some(budget) = self.budget else { return verdict.build() };
        let mut total: f64 = rows.iter().map(|(plan, p, _, _, spot)| cost(plan.prices, p.to, *spot)).sum();
        let over = total > budget;
        if over != self.over_budget {
            self.over_budget = over;
            if over {
                log::warn!("cost-guard: proposals cost {total:.2}/h, past the budget of {budget:.2}/h: trimming");
            } else {
                log::info!("cost-guard: back within the budget of {budget:.2}/h");
            }
        }
        if !over {
            return verdict.build();
        }

        // Trimmable scale-ups, largest possible saving first (ties by pool id: deterministic).
        let mut candidates: Vec<(f64, u32, &PoolPlan, &Proposal, &PoolState, u32)> = rows
            .iter()
            .filter(|(_, p, s, _, _)| p.to > p.from && !s.protected)
            .filter_map(|(plan, p, s, critical, _)| {
                let floor = p.from.max(*critical).max(plan.min);
                let trimmable = p.to.saturating_sub(floor);
                (trimmable > 0 && plan.prices.on_demand > 0.0)
                    .then(|| (f64::from(trimmable) * plan.prices.on_demand, p.pool, *plan, *p, *s, floor))
            })
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

        for (_, pool, plan, proposal, state, floor) in candidates {
            if total <= budget {
                break;
            }
            let price = plan.prices.on_demand;
            let wanted = ((total - budget) / price).ceil();
            let trimmable = proposal.to - floor;
            let trim = if wanted >= f64::from(trimmable) { trimmable } else { wanted as u32 };
            let to = proposal.to - trim;
            total -= f64::from(trim) * price;
            verdict.lower_target(pool, to);
            log::debug!("cost-guard: pool {pool}: scale-up trimmed from {} to {to} units", proposal.to);
            shape_admission(&mut verdict, pool, state, proposal, f64::from(to) * plan.per_unit);
        }
        verdict.build()
    }
}

/// Units the pool's wedding-critical demand needs (with the reserve while protected).
fn critical_units(state: &PoolState, plan: &PoolPlan) -> u32 {
    let mut per_unit = plan.per_unit;
    if state.protected {
        per_unit *= 1.0 - PROTECTED_RESERVE;
    }
    let demand = state.demand.wedding_critical;
    if !(demand.is_finite() && demand > 0.0 && per_unit > 0.0) {
        return 0;
    }
    let units = (demand / per_unit).ceil();
    if units >= f64::from(u32::MAX) { u32::MAX } else { units as u32 }
}

/// Units of `to` that may run on spot: not the critical ones, at most `fraction` of `to`.
fn spot_allowance(to: u32, critical: u32, fraction: f64) -> u32 {
    let by_fraction = (f64::from(to) * fraction).floor() as u32;
    to.saturating_sub(critical).min(by_fraction)
}

fn cost(prices: Prices, units: u32, spot: u32) -> f64 {
    let spot = spot.min(units);
    f64::from(units - spot) * prices.on_demand + f64::from(spot) * prices.spot
}

/// Admits the non-critical classes, most important first, as far as `capacity` left after the
/// wedding-critical demand carries them.
fn shape_admission(
    verdict: &mut wedsync_sdk::VerdictBuilder,
    pool: u32,
    state: &PoolState,
    p: &Proposal,
    capacity: f64,
) {
    const NON_CRITICAL: [TrafficClass; 4] =
        [TrafficClass::WeddingPlanning, TrafficClass::Registration, TrafficClass::Media, TrafficClass::Background];
    let mut left = capacity - state.demand.wedding_critical;
    for class in NON_CRITICAL {
        let demand = state.demand.get(class);
        if demand <= 0.0 {
            continue;
        }
        let share = (left / demand).clamp(0.0, 1.0);
        left -= demand;
        if share < p.admission.get(class) {
            verdict.admit(pool, class, share);
        }
    }
}

wedsync_sdk::export!(CostGuard);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use wedsync_sdk::Adjustment;
    use wedsync_sdk::testing::{Harness, SetupBuilder, check_info};

    use super::*;

    /// Two pools at 100 rps per unit (utilization 1), on-demand 1.0/h and spot 0.5/h.
    fn setup(extra: &str) -> Setup {
        let pool = |p: &mut wedsync_sdk::PoolInfo| {
            p.target_utilization = 1.0;
            p.min = 2;
            p.spot_max_fraction = 0.5;
        };
        SetupBuilder::new()
            .pool_with("checkout", "eu-west", pool)
            .pool_with("media", "eu-west", pool)
            .config(format!(r#"{{"prices": {{"on_demand": 1.0, "spot": 0.5}}{extra}}}"#))
            .build()
    }

    #[test]
    fn describes_itself() {
        check_info(&Harness::<CostGuard>::describe()).unwrap();
    }

    #[test]
    fn critical_capacity_stays_off_spot() {
        let mut h = Harness::<CostGuard>::configure(setup("")).unwrap();
        // 10 units, 700 rps wedding-critical: 7 critical units, 3 may be spot (half would be 5).
        let round = h
            .round()
            .units("checkout", 10)
            .spot_units("checkout", 5)
            .demand("checkout", TrafficClass::WeddingCritical, 700.0)
            .demand("checkout", TrafficClass::Media, 300.0)
            .units("media", 10)
            .spot_units("media", 4)
            .demand("media", TrafficClass::Media, 900.0)
            .build();
        let v = h.decide(&round);
        assert_eq!(v.spot_cap(0), Some(3));
        assert_eq!(v.spot_cap(1), None, "4 spot units of a non-critical pool are fine (≤ 50%)");
        // Protected: 700 / 80 → 9 critical units, 1 spot.
        let round = h
            .round()
            .units("checkout", 10)
            .spot_units("checkout", 5)
            .demand("checkout", TrafficClass::WeddingCritical, 700.0)
            .wedding(50)
            .build();
        assert_eq!(h.decide(&round).spot_cap(0), Some(1));
    }

    #[test]
    fn no_budget_no_trimming() {
        let mut h = Harness::<CostGuard>::configure(setup("")).unwrap();
        let round = h.round().units("media", 10).propose("media", 90).build();
        assert!(h.decide(&round).is_empty());
    }

    #[test]
    fn trims_non_critical_scale_ups_past_the_budget() {
        let mut h = Harness::<CostGuard>::configure(setup(r#", "budget_per_hour": 30.0"#)).unwrap();
        // checkout stays at 10 (10/h); media 10 → 40 (40/h): 50/h, 20 over: media trimmed to 20.
        let round = h
            .round()
            .units("checkout", 10)
            .units("media", 10)
            .propose("media", 40)
            .demand("media", TrafficClass::WeddingPlanning, 500.0)
            .demand("media", TrafficClass::Media, 1500.0)
            .demand("media", TrafficClass::Background, 500.0)
            .build();
        let v = h.decide(&round);
        assert_eq!(v.lowered_target(1), Some(20));
        assert_eq!(v.lowered_target(0), None);
        // 2,000 rps of capacity: planning in full (no adjustment), media 1,500 of 1,500, background none.
        assert_eq!(v.admission(1, TrafficClass::WeddingPlanning), None);
        assert_eq!(v.admission(1, TrafficClass::Media), None);
        assert_eq!(v.admission(1, TrafficClass::Background), Some(0.0));
        assert!(
            !v.adjustments
                .iter()
                .any(|a| matches!(a, Adjustment::Admit(c) if c.class == TrafficClass::WeddingCritical))
        );
        assert!(h.logged("past the budget"));
    }

    #[test]
    fn never_trims_below_wedding_critical_need_or_protected_pools() {
        let mut h = Harness::<CostGuard>::configure(setup(r#", "budget_per_hour": 5.0"#)).unwrap();
        let round = h
            .round()
            .units("checkout", 4)
            .propose("checkout", 30)
            .demand("checkout", TrafficClass::WeddingCritical, 2_500.0)
            .demand("checkout", TrafficClass::Media, 500.0)
            .units("media", 4)
            .propose("media", 30)
            .build();
        let v = h.decide(&round);
        assert_eq!(v.lowered_target(0), Some(25), "25 units carry the wedding-critical demand");
        assert_eq!(v.admission(0, TrafficClass::Media), Some(0.0));
        assert_eq!(v.lowered_target(1), Some(4), "never below the current target");

        let protected = h
            .round()
            .units("checkout", 4)
            .propose("checkout", 30)
            .units("media", 4)
            .propose("media", 30)
            .wedding(10)
            .build();
        let v = h.decide(&protected);
        assert!(v.lowered_target(0).is_none() && v.lowered_target(1).is_none(), "protected pools are not trimmed");
    }

    #[test]
    fn per_pool_prices_and_bad_configs() {
        let h =
            Harness::<CostGuard>::configure(setup(r#", "pools": {"media": {"on_demand": 3.0, "spot": 1.0}}"#)).unwrap();
        assert_eq!(h.policy().pools[1].prices.on_demand, 3.0);
        assert_eq!(h.policy().pools[0].prices.on_demand, 1.0);
        for (extra, needle) in [
            (r#", "pools": {"nope": {}}"#, "no pool named"),
            (r#", "budget_per_hour": -1"#, "budget_per_hour"),
            (r#", "budget": 1"#, "unknown field"),
        ] {
            let err = Harness::<CostGuard>::configure(setup(extra)).unwrap_err();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        let err = Harness::<CostGuard>::configure_with(&setup(""), r#"{"prices": {"spot": -2}}"#).unwrap_err();
        assert!(err.contains("prices"), "{err}");
    }
}
