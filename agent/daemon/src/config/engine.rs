//! `[engine]`: the decision engine's tuning, checked into the core's
//! [`EngineSettings`] that the decision thread ([`crate::decisions`]) hands the engine.

use super::errors::Checker;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use wedsync_core::TrafficClass;
use wedsync_core::engine::EngineSettings;
use wedsync_core::engine::forecast::SeasonalMultipliers;

/// `[engine]`: decision engine tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Time between decision rounds.
    pub round_interval: String,
    /// Utilization within this fraction of the target causes no change.
    pub tolerance: f64,
    /// Scale-down waits until the desired capacity stayed lower for this long.
    pub scale_down_stabilization: String,
    /// At least this long between two scale-downs of one pool.
    pub scale_down_cooldown: String,
    /// Largest fraction of capacity one scale-down removes.
    pub max_scale_down_fraction: f64,
    /// Largest factor one scale-up multiplies capacity by.
    pub max_scale_up_factor: u32,
    /// Rounds without fresh demand before the engine holds (never scaling in blind).
    pub stale_rounds: u32,
    /// A wedding protects its region from this long before its start…
    pub wedding_lead: String,
    /// …until this long after its end.
    pub wedding_trail: String,
    /// Fraction of capacity kept for wedding-critical traffic while protected.
    pub wedding_critical_reserve: f64,
    /// Order in which classes are degraded under overload; wedding-critical never appears.
    pub degrade_order: Vec<String>,
    /// Reserved capacity as a fraction of a pool's typical load.
    pub reserved_baseline_fraction: f64,
    /// Largest fraction of a target placed on spot.
    pub spot_max_fraction: f64,
    /// How far ahead (beyond a pool's provisioning delay) the forecast pre-scales.
    pub forecast_horizon: String,
    /// Upper quantile of the forecast that pre-scaling provisions for (0.5 ..= 0.99).
    pub forecast_quantile: f64,
    /// Demand jumping past this many times the pool's recent demand (or what it serves now)
    /// within one round is capped there and flagged; 0 turns the cap off.
    pub max_demand_jump: f64,
    /// Seasonal multipliers (`[engine.seasons]`), in each pool's local time.
    pub seasons: SeasonalMultipliers,
}

impl Default for EngineSection {
    fn default() -> Self {
        let e = EngineSettings::default();
        let secs = |d: Duration| humantime::format_duration(d).to_string();
        EngineSection {
            round_interval: secs(e.round_interval),
            tolerance: e.tolerance,
            scale_down_stabilization: secs(e.scale_down_stabilization),
            scale_down_cooldown: secs(e.scale_down_cooldown),
            max_scale_down_fraction: e.max_scale_down_fraction,
            max_scale_up_factor: e.max_scale_up_factor,
            stale_rounds: e.stale_rounds,
            wedding_lead: secs(e.wedding_lead),
            wedding_trail: secs(e.wedding_trail),
            wedding_critical_reserve: e.wedding_critical_reserve,
            degrade_order: e.degrade_order.iter().map(|c| c.as_str().to_owned()).collect(),
            reserved_baseline_fraction: e.reserved_baseline_fraction,
            spot_max_fraction: e.spot_max_fraction,
            forecast_horizon: secs(e.forecast_horizon),
            forecast_quantile: e.forecast_quantile,
            max_demand_jump: e.max_demand_jump,
            seasons: e.seasons,
        }
    }
}

impl EngineSection {
    /// Checks every field into `c` and returns the engine's settings (defaults where bad).
    pub(super) fn validate(&self, c: &mut Checker) -> EngineSettings {
        let e = self;
        let defaults = EngineSettings::default();
        let fraction = |c: &mut Checker, field: &str, value: f64, min: f64, max: f64| {
            if !(value.is_finite() && value >= min && value <= max) {
                c.fail(field, format!("{value} is out of range (must be from {min} to {max})"));
            }
            value.clamp(min, max)
        };
        let mut degrade_order = Vec::new();
        for (i, name) in e.degrade_order.iter().enumerate() {
            match name.parse::<TrafficClass>() {
                Ok(TrafficClass::WeddingCritical) => {
                    c.fail(format!("engine.degrade_order[{i}]"), "wedding-critical is never degraded".into())
                }
                Ok(class) if degrade_order.contains(&class) => {
                    c.fail(format!("engine.degrade_order[{i}]"), format!("{name:?} is listed twice"))
                }
                Ok(class) => degrade_order.push(class),
                Err(err) => c.fail(format!("engine.degrade_order[{i}]"), err.to_string()),
            }
        }
        if degrade_order.len() != 4 && c.0.iter().all(|f| !f.field.starts_with("engine.degrade_order")) {
            c.fail("engine.degrade_order", "must list each class but wedding-critical exactly once".into());
        }
        EngineSettings {
            round_interval: c.duration(
                "engine.round_interval",
                &e.round_interval,
                Duration::from_millis(10),
                Duration::from_secs(10),
            ),
            tolerance: fraction(c, "engine.tolerance", e.tolerance, 0.0, 0.5),
            scale_down_stabilization: c.duration(
                "engine.scale_down_stabilization",
                &e.scale_down_stabilization,
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
            scale_down_cooldown: c.duration(
                "engine.scale_down_cooldown",
                &e.scale_down_cooldown,
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
            max_scale_down_fraction: fraction(
                c,
                "engine.max_scale_down_fraction",
                e.max_scale_down_fraction,
                0.01,
                1.0,
            ),
            max_scale_up_factor: c.range("engine.max_scale_up_factor", u64::from(e.max_scale_up_factor), 2, 100) as u32,
            stale_rounds: c.range("engine.stale_rounds", u64::from(e.stale_rounds), 1, 1000) as u32,
            wedding_lead: c.duration(
                "engine.wedding_lead",
                &e.wedding_lead,
                Duration::ZERO,
                Duration::from_secs(7 * 86_400),
            ),
            wedding_trail: c.duration(
                "engine.wedding_trail",
                &e.wedding_trail,
                Duration::ZERO,
                Duration::from_secs(7 * 86_400),
            ),
            wedding_critical_reserve: fraction(
                c,
                "engine.wedding_critical_reserve",
                e.wedding_critical_reserve,
                0.0,
                0.9,
            ),
            degrade_order: if degrade_order.len() == 4 { degrade_order } else { defaults.degrade_order },
            reserved_baseline_fraction: fraction(
                c,
                "engine.reserved_baseline_fraction",
                e.reserved_baseline_fraction,
                0.0,
                1.0,
            ),
            spot_max_fraction: fraction(c, "engine.spot_max_fraction", e.spot_max_fraction, 0.0, 1.0),
            forecast_horizon: c.duration(
                "engine.forecast_horizon",
                &e.forecast_horizon,
                Duration::ZERO,
                Duration::from_secs(7 * 86_400),
            ),
            forecast_quantile: fraction(c, "engine.forecast_quantile", e.forecast_quantile, 0.5, 0.99),
            max_demand_jump: if e.max_demand_jump == 0.0 {
                0.0
            } else {
                fraction(c, "engine.max_demand_jump", e.max_demand_jump, 2.0, 1000.0)
            },
            seasons: match e.seasons.validate() {
                Ok(()) => e.seasons.clone(),
                Err(reason) => {
                    c.fail("engine.seasons", reason.to_string());
                    defaults.seasons.clone()
                }
            },
            detector: defaults.detector,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::valid;

    #[test]
    fn engine_defaults_round_trip_through_the_section() {
        let settings = valid().validate().unwrap();
        assert_eq!(settings.engine, EngineSettings::default());
        assert!(settings.pools.is_empty());
    }
}
