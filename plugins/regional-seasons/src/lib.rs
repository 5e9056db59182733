//! `regional-seasons`: regional wedding seasons, local Saturdays and holidays raise pre-scale
//! floors.
//!
//! Each round, for every pool, the multiplier in force in the pool's region at the pool's local
//! time is the product of the season's (the largest among the region's seasons that hold), the
//! Saturday surge on a local Saturday and the holiday surge on a listed holiday, capped at
//! `max_multiplier`.
//!
//! The plugin learns each pool's *usual* load: its load with the multiplier in force divided out,
//! smoothed with a half-life of `baseline_half_life_hours` (24 h). When the multiplier is above 1
//! the pool gets a pre-scale floor of the units that carry `usual load × multiplier` at its
//! target utilization (at most its maximum), when that is above the engine's proposal. So the
//! floor rises when the calendar turns (a Saturday begins, the season starts), before the
//! traffic does; load that already carries the surge is not multiplied again. Until it has
//! seen a pool, the plugin's first round of it is its usual load.
//!
//! Season presets: `south-asia` (November–February, ×1.8), `southern-hemisphere` (October–March,
//! ×1.4), `northern-hemisphere` (April–October, ×1.4). Unless `use_region_presets` is false, a
//! region not listed in `regions` gets a preset from its name: `ap-south-*`, `in-*`, `asia-south*`
//! → South Asia; `ap-southeast-2`, `ap-southeast-4`, `au-*`, `nz-*`, `sa-*`, `af-south-*`,
//! `australia-*`, `southamerica-*` → southern hemisphere; `eu-*`, `europe-*`, `uk-*`, `us-*`,
//! `ca-*`, `northamerica-*` → northern hemisphere.
//!
//! Config (`[plugins.config.regional-seasons]`, every key optional):
//!
//! ```json
//! {
//!   "saturday": 1.5,
//!   "holiday": 1.5,
//!   "holidays": ["12-25"],
//!   "max_multiplier": 4.0,
//!   "baseline_half_life_hours": 24.0,
//!   "use_region_presets": true,
//!   "regions": {
//!     "ap-south-1": { "seasons": ["south-asia"], "holidays": ["11-12"], "holiday": 2.0 },
//!     "eu-west": { "seasons": [{ "name": "summer", "months": [5, 9], "multiplier": 1.6 }], "saturday": 2.0 }
//!   }
//! }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use wedsync_sdk::calendar::season_multiplier;
use wedsync_sdk::{LocalTime, MonthDay, MonthRange, PluginInfo, Policy, Round, Season, Setup, Verdict, log};

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Multiplier on a local Saturday (every region unless it overrides it).
    pub saturday: f64,
    /// Multiplier on a listed holiday (every region unless it overrides it).
    pub holiday: f64,
    /// Holidays for every region, `MM-DD`.
    pub holidays: Vec<String>,
    /// Cap on the combined multiplier.
    pub max_multiplier: f64,
    /// Half-life of the learned usual load, hours.
    pub baseline_half_life_hours: f64,
    /// Regions not listed get seasons from their names.
    pub use_region_presets: bool,
    /// Per region (by name).
    pub regions: BTreeMap<String, RegionConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            saturday: 1.5,
            holiday: 1.5,
            holidays: Vec::new(),
            max_multiplier: 4.0,
            baseline_half_life_hours: 24.0,
            use_region_presets: true,
            regions: BTreeMap::new(),
        }
    }
}

/// One region's seasons and surges.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionConfig {
    /// Its seasons: preset names or full definitions.
    pub seasons: Vec<SeasonConfig>,
    /// Overrides the Saturday multiplier.
    pub saturday: Option<f64>,
    /// Overrides the holiday multiplier.
    pub holiday: Option<f64>,
    /// Holidays on top of the global list, `MM-DD`.
    pub holidays: Vec<String>,
}

/// A season: a preset's name, or a definition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SeasonConfig {
    /// `south-asia`, `southern-hemisphere` or `northern-hemisphere`.
    Preset(String),
    /// A full definition.
    Custom {
        /// Its name.
        name: String,
        /// `[first, last]` months, 1–12; wraps the year when first > last.
        months: [u8; 2],
        /// Demand multiplier while it holds.
        multiplier: f64,
    },
}

/// A built-in season by name.
pub fn preset(name: &str) -> Option<Season> {
    match name {
        "south-asia" => Some(Season::south_asia(1.8)),
        "southern-hemisphere" => Some(Season::southern_hemisphere(1.4)),
        "northern-hemisphere" => Some(Season::northern_hemisphere(1.4)),
        _ => None,
    }
}

/// The preset season for a region's name, if its name says where it is.
pub fn region_preset(region: &str) -> Option<&'static str> {
    const SOUTH_ASIA: [&str; 3] = ["ap-south-", "in-", "asia-south"];
    const SOUTHERN: [&str; 8] =
        ["ap-southeast-2", "ap-southeast-4", "au-", "nz-", "sa-", "af-south-", "australia-", "southamerica-"];
    const NORTHERN: [&str; 6] = ["eu-", "europe-", "uk-", "us-", "ca-", "northamerica-"];
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| region.starts_with(p));
    if starts(&SOUTH_ASIA) {
        Some("south-asia")
    } else if starts(&SOUTHERN) {
        Some("southern-hemisphere")
    } else if starts(&NORTHERN) {
        Some("northern-hemisphere")
    } else {
        None
    }
}

/// A region's calendar, resolved at configure time.
#[derive(Debug, Clone, PartialEq)]
struct Calendar {
    seasons: Vec<Season>,
    saturday: f64,
    holiday: f64,
    holidays: Vec<MonthDay>,
}

impl Calendar {
    fn multiplier(&self, time: &LocalTime, cap: f64) -> f64 {
        let mut m = season_multiplier(&self.seasons, time);
        if time.is_saturday() {
            m *= self.saturday;
        }
        if time.is_one_of(&self.holidays) {
            m *= self.holiday;
        }
        m.min(cap)
    }
}

/// The policy: each pool's region's calendar and sizing.
#[derive(Debug)]
pub struct RegionalSeasons {
    calendars: Vec<Calendar>,
    pools: Vec<PoolPlan>,
    cap: f64,
    half_life_ms: f64,
}

#[derive(Debug)]
struct PoolPlan {
    calendar: usize,
    per_unit: f64,
    max: u32,
    /// The usual load (multiplier divided out) and when it was last updated, Unix ms.
    usual: Option<(f64, i64)>,
}

fn check_multiplier(what: &str, m: f64) -> Result<f64, String> {
    if m.is_finite() && (0.0..=100.0).contains(&m) {
        Ok(m)
    } else {
        Err(format!("regional-seasons: {what} multiplier {m} must be in [0, 100]"))
    }
}

fn parse_days(days: &[String], what: &str) -> Result<Vec<MonthDay>, String> {
    days.iter().map(|d| MonthDay::parse(d).map_err(|e| format!("regional-seasons: {what}: {e}"))).collect()
}

fn build_calendar(config: &Config, name: &str) -> Result<Calendar, String> {
    let global_days = parse_days(&config.holidays, "holidays")?;
    let mut calendar =
        Calendar { seasons: Vec::new(), saturday: config.saturday, holiday: config.holiday, holidays: global_days };
    if let Some(region) = config.regions.get(name) {
        for season in &region.seasons {
            calendar.seasons.push(match season {
                SeasonConfig::Preset(p) => preset(p).ok_or_else(|| {
                    format!(
                        "regional-seasons: region {name}: unknown season preset {p:?} (south-asia, \
                         southern-hemisphere, northern-hemisphere)"
                    )
                })?,
                SeasonConfig::Custom { name: season_name, months, multiplier } => {
                    let range = MonthRange::checked(months[0], months[1])
                        .map_err(|e| format!("regional-seasons: region {name}, season {season_name}: {e}"))?;
                    let m = check_multiplier(&format!("region {name}, season {season_name}"), *multiplier)?;
                    Season::new(season_name.as_str(), range, m)
                }
            });
        }
        if let Some(s) = region.saturday {
            calendar.saturday = check_multiplier(&format!("region {name} saturday"), s)?;
        }
        if let Some(h) = region.holiday {
            calendar.holiday = check_multiplier(&format!("region {name} holiday"), h)?;
        }
        calendar.holidays.extend(parse_days(&region.holidays, &format!("region {name} holidays"))?);
    } else if config.use_region_presets
        && let Some(season) = region_preset(name).and_then(preset)
    {
        calendar.seasons.push(season);
    }
    Ok(calendar)
}

impl Policy for RegionalSeasons {
    fn describe() -> PluginInfo {
        PluginInfo::builder("regional-seasons", env!("CARGO_PKG_VERSION"))
            .description("regional wedding seasons, local Saturdays and holidays raise pre-scale floors")
            .build()
    }

    fn configure(setup: &Setup) -> Result<Self, String> {
        let config: Config = if setup.config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(&setup.config).map_err(|e| format!("regional-seasons: bad config: {e}"))?
        };
        check_multiplier("saturday", config.saturday)?;
        check_multiplier("holiday", config.holiday)?;
        let cap = check_multiplier("max", config.max_multiplier)?;
        let half_life = config.baseline_half_life_hours;
        if !(half_life.is_finite() && half_life > 0.0 && half_life <= 24.0 * 366.0) {
            return Err(format!("regional-seasons: baseline_half_life_hours {half_life} must be in (0, 8784]"));
        }
        for name in config.regions.keys() {
            if setup.region_id(name).is_none() {
                log::warn!("regional-seasons: region {name:?} in the config is not one of the agent's regions");
            }
        }
        let calendars =
            setup.regions.iter().map(|r| build_calendar(&config, &r.name)).collect::<Result<Vec<_>, _>>()?;
        let pools = setup
            .pools
            .iter()
            .map(|p| PoolPlan {
                calendar: p.region as usize,
                per_unit: p.effective_capacity_per_unit(),
                max: p.max,
                usual: None,
            })
            .collect();
        for (region, calendar) in setup.regions.iter().zip(&calendars) {
            let seasons: Vec<&str> = calendar.seasons.iter().map(|s| s.name.as_str()).collect();
            log::debug!("regional-seasons: {}: seasons {seasons:?}", region.name);
        }
        Ok(RegionalSeasons { calendars, pools, cap, half_life_ms: half_life * 3_600_000.0 })
    }

    fn decide(&mut self, round: &Round) -> Verdict {
        let mut verdict = Verdict::builder();
        for state in &round.pools {
            let Some(plan) = self.pools.get_mut(state.pool as usize) else { continue };
            let Some(calendar) = self.calendars.get(plan.calendar) else { continue };
            let multiplier = calendar.multiplier(&state.local_time, self.cap);
            let observed = state.load.max(state.demand.total());
            if !(observed.is_finite() && observed >= 0.0 && multiplier > 0.0) {
                continue;
            }
            // The floor comes from what was usual before this round; then this round is learned.
            let usual = plan.usual.map_or(observed / multiplier, |(level, _)| level);
            plan.usual = Some(match plan.usual {
                None => (observed / multiplier, round.unix_ms),
                Some((level, at)) => {
                    let elapsed = round.unix_ms.saturating_sub(at).max(0) as f64;
                    let weight = 1.0 - 0.5f64.powf(elapsed / self.half_life_ms);
                    (level + weight * (observed / multiplier - level), round.unix_ms)
                }
            });
            if multiplier <= 1.0 || plan.per_unit <= 0.0 {
                continue;
            }
            let load = usual * multiplier;
            if !(load.is_finite() && load > 0.0) {
                continue;
            }
            let units = (load / plan.per_unit).ceil();
            let floor = if units >= f64::from(plan.max) { plan.max } else { units as u32 };
            let proposed = round.proposal(state.pool).map_or(state.target, |p| p.to);
            if floor > proposed {
                verdict.prescale_floor(state.pool, floor);
            }
        }
        verdict.build()
    }
}

wedsync_sdk::export!(RegionalSeasons);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use wedsync_sdk::calendar::local_time;
    use wedsync_sdk::testing::{Harness, SetupBuilder, check_info};

    use super::*;

    fn setup(config: &str) -> Setup {
        // 100 rps per unit at full utilization: units = ceil(load × multiplier / 100).
        let pool = |p: &mut wedsync_sdk::PoolInfo| {
            p.target_utilization = 1.0;
            p.max = 50;
        };
        SetupBuilder::new()
            .pool_with("mumbai", "ap-south-1", pool)
            .pool_with("sydney", "ap-southeast-2", pool)
            .pool_with("dublin", "eu-west-1", pool)
            .pool_with("lab", "mars-1", pool)
            .config(config)
            .build()
    }

    fn round_at(h: &Harness<RegionalSeasons>, time: LocalTime) -> Round {
        h.round()
            .local_time(time)
            .units("mumbai", 10)
            .units("sydney", 10)
            .units("dublin", 10)
            .units("lab", 10)
            .load("mumbai", 1000.0)
            .load("sydney", 1000.0)
            .load("dublin", 1000.0)
            .load("lab", 1000.0)
            .build()
    }

    /// One round where every pool's multiplier is 1 and its load is 1000 rps: what the plugin
    /// learns as each pool's usual load.
    fn taught(h: &mut Harness<RegionalSeasons>) {
        let ordinary = h
            .round()
            .local_time(local_time(2026, 7, 15, 12, 0)) // a Wednesday: off season in the south
            .pool_local_time("dublin", local_time(2026, 1, 14, 12, 0)) // off season in the north
            .load("mumbai", 1000.0)
            .load("sydney", 1000.0)
            .load("dublin", 1000.0)
            .load("lab", 1000.0)
            .units("mumbai", 10)
            .units("sydney", 10)
            .units("dublin", 10)
            .units("lab", 10)
            .build();
        assert!(h.decide(&ordinary).is_empty(), "no multiplier, no floor");
    }

    #[test]
    fn describes_itself() {
        check_info(&Harness::<RegionalSeasons>::describe()).unwrap();
    }

    #[test]
    fn presets_follow_each_region_season() {
        let mut h = Harness::<RegionalSeasons>::configure(setup("{}")).unwrap();
        taught(&mut h);
        // Wednesday 2026-01-14: South Asia ×1.8, southern hemisphere ×1.4, Europe out of season.
        let v = h.decide(&round_at(&h, local_time(2026, 1, 14, 12, 0)));
        assert_eq!(v.prescale_floor(0), Some(18));
        assert_eq!(v.prescale_floor(1), Some(14));
        assert_eq!(v.prescale_floor(2), None);
        assert_eq!(v.prescale_floor(3), None);
        // Wednesday 2026-06-10: only Europe is in season.
        let v = h.decide(&round_at(&h, local_time(2026, 6, 10, 12, 0)));
        assert_eq!((v.prescale_floor(0), v.prescale_floor(1), v.prescale_floor(2)), (None, None, Some(14)));
    }

    #[test]
    fn saturday_and_holiday_surges_multiply_and_are_capped() {
        let cfg = r#"{"holidays": ["12-25"], "holiday": 2.0, "max_multiplier": 3.0}"#;
        let mut h = Harness::<RegionalSeasons>::configure(setup(cfg)).unwrap();
        taught(&mut h);
        // Saturday 2026-06-13: Europe 1.4 × 1.5 = 2.1; Mars only the Saturday 1.5.
        let v = h.decide(&round_at(&h, local_time(2026, 6, 13, 9, 0)));
        assert_eq!(v.prescale_floor(2), Some(21));
        assert_eq!(v.prescale_floor(3), Some(15));
        // Friday 2026-12-25: Mumbai 1.8 × 2.0 = 3.6, capped at 3.
        let v = h.decide(&round_at(&h, local_time(2026, 12, 25, 9, 0)));
        assert_eq!(v.prescale_floor(0), Some(30));
    }

    #[test]
    fn each_pool_uses_its_own_local_time() {
        let mut h = Harness::<RegionalSeasons>::configure(setup("{}")).unwrap();
        taught(&mut h);
        // Friday in Dublin, already Saturday in Sydney.
        let round = h
            .round()
            .local_time(local_time(2026, 6, 12, 23, 0))
            .pool_local_time("sydney", local_time(2026, 6, 13, 8, 0))
            .units("sydney", 10)
            .load("sydney", 1000.0)
            .build();
        assert_eq!(h.decide(&round).prescale_floor(1), Some(15));
    }

    #[test]
    fn custom_regions_override_presets() {
        let cfg = r#"{"use_region_presets": false, "saturday": 1.0,
            "regions": {"eu-west-1": {"seasons": [{"name": "summer", "months": [5, 9], "multiplier": 1.6}],
                                       "holidays": ["06-10"], "holiday": 1.25}}}"#;
        let mut h = Harness::<RegionalSeasons>::configure(setup(cfg)).unwrap();
        taught(&mut h);
        let v = h.decide(&round_at(&h, local_time(2026, 6, 10, 12, 0)));
        assert_eq!(v.prescale_floor(2), Some(20)); // 1.6 × 1.25
        let v = h.decide(&round_at(&h, local_time(2026, 1, 14, 12, 0)));
        assert!(v.is_empty(), "presets are off: {v:?}");
    }

    #[test]
    fn floor_is_capped_at_max_and_skipped_when_the_proposal_is_higher() {
        let mut h = Harness::<RegionalSeasons>::configure(setup("{}")).unwrap();
        let first = h.round().at(2026, 7, 15, 12, 0).load("mumbai", 1e6).build();
        assert!(h.decide(&first).is_empty());
        let round =
            h.round().at(2026, 1, 14, 12, 0).load("mumbai", 1e6).units("sydney", 40).load("sydney", 1000.0).build();
        let v = h.decide(&round);
        assert_eq!(v.prescale_floor(0), Some(50));
        assert_eq!(v.prescale_floor(1), None);
    }

    #[test]
    fn bad_configs_are_explained() {
        for (cfg, needle) in [
            ("42", "bad config"),
            (r#"{"regions": {"eu-west-1": {"seasons": ["monsoon"]}}}"#, "unknown season preset"),
            (
                r#"{"regions": {"eu-west-1": {"seasons": [{"name": "x", "months": [0, 3], "multiplier": 1.2}]}}}"#,
                "months",
            ),
            (r#"{"holidays": ["02-31"]}"#, "02-31"),
            (r#"{"saturday": -1}"#, "saturday"),
            (r#"{"saturdy": 2}"#, "unknown field"),
        ] {
            let err = Harness::<RegionalSeasons>::configure(setup(cfg)).unwrap_err();
            assert!(err.contains(needle), "{cfg}: {err}");
        }
    }

    #[test]
    fn load_that_already_carries_the_surge_is_not_multiplied_again_and_the_usual_load_is_learned() {
        let mut h = Harness::<RegionalSeasons>::configure(setup("{}")).unwrap();
        taught(&mut h);
        let june_saturday = |h: &Harness<RegionalSeasons>, unix_ms: i64, load: f64| {
            h.round().unix_ms(unix_ms).at(2026, 6, 13, 12, 0).units("dublin", 10).load("dublin", load).build()
        };
        let start = 1_781_092_800_000;
        // Saturday in season (×2.1) while the load still looks like an ordinary day: pre-scale.
        let v = h.decide(&june_saturday(&h, start, 1000.0));
        assert_eq!(v.prescale_floor(2), Some(21));
        // The surge arrived (2100 rps = 1000 usual × 2.1): the floor stays at 21, not 44.
        let v = h.decide(&june_saturday(&h, start + 3_600_000, 2100.0));
        assert_eq!(v.prescale_floor(2), Some(21));
        // A day of 4200 rps (2000 usual): after one half-life the usual load is half way there.
        let v = h.decide(&june_saturday(&h, start + 25 * 3_600_000, 4200.0));
        assert_eq!(v.prescale_floor(2), Some(21), "the floor uses what was usual before the round");
        let v = h.decide(&june_saturday(&h, start + 25 * 3_600_000, 1.0));
        // Usual: 1000 + (1 - 0.5^(24/24)) × (2000 - 1000) = 1500 → 1500 × 2.1 = 3150 → 32 units.
        assert_eq!(v.prescale_floor(2), Some(32));
    }

    #[test]
    fn a_pool_first_seen_on_a_surge_day_takes_that_day_as_usual() {
        let mut h = Harness::<RegionalSeasons>::configure(setup("{}")).unwrap();
        // First round ever on a June Saturday at 2100 rps: usual = 1000, floor = 2100 = 21 units.
        let round = h.round().at(2026, 6, 13, 12, 0).units("dublin", 10).load("dublin", 2100.0).build();
        assert_eq!(h.decide(&round).prescale_floor(2), Some(21));
        assert!(
            Harness::<RegionalSeasons>::configure(setup(r#"{"baseline_half_life_hours": 0}"#))
                .unwrap_err()
                .contains("baseline_half_life_hours")
        );
    }

    #[test]
    fn region_presets_by_name() {
        assert_eq!(region_preset("ap-south-1"), Some("south-asia"));
        assert_eq!(region_preset("ap-southeast-1"), None);
        assert_eq!(region_preset("ap-southeast-2"), Some("southern-hemisphere"));
        assert_eq!(region_preset("us-east-1"), Some("northern-hemisphere"));
    }
}
