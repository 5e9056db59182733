//! Scenario files: the regions of a fleet, their traffic, and what happens to it.
//!
//! A scenario is TOML. Times inside it (`at`, `ramp`, …) are durations from the scenario's
//! `start` ("90s", "5m", "2h", "3days"); `start` itself is an RFC 3339 instant, so the agents'
//! calendars, seasons and plugins see the scenario's date, not today's.
//!
//! ```toml
//! name = "viral-saturday"
//! about = "a post goes viral on a peak-season Saturday"
//! start = "2026-06-13T09:00:00Z"   # the wall clock at t = 0
//! duration = "40m"
//! round = "100ms"                  # the engines' round interval (default 100 ms)
//! failover_delay = "30s"           # how long the global load balancer takes to move a dead
//!                                  # region's clients (default 30 s)
//!
//! [[regions]]
//! name = "eu-west"
//! time_zone = "Europe/London"
//! nodes = 2                        # agents in the region; the region's traffic is split evenly
//! failover_to = ["eu-central"]     # where its clients may go if it dies (data residency)
//! [regions.pool]                   # each node's pool (defaults as shown)
//! min = 2
//! max = 400
//! capacity_per_unit = 100.0        # requests/s per unit at full utilization
//! target_utilization = 0.7
//! provisioning_delay = "60s"
//! protected_floor = 4              # while a wedding is active in the region
//! [regions.base]                   # requests/s of each class for the whole region
//! wedding_critical = 50.0
//! wedding_planning = 100.0
//! registration = 200.0
//! media = 150.0
//! background = 50.0
//! [regions.daily]                  # optional: a local-time daily shape (multiplies base)
//! peak = 1.5                       # at 14:00 local, a smooth rise from 08:00 and fall to 20:00
//! saturday = 2.0                   # all day on Saturdays
//! saturday_rush = "10:00"          # optional: on Saturdays the day's demand steps up here,
//!                                  # within 5 minutes, instead of rising smoothly
//!
//! [[events]]                       # a surge: multiplies a region's classes
//! kind = "surge"
//! region = "eu-west"
//! classes = ["registration"]       # default: every class
//! at = "5m"
//! ramp = "5m"                      # geometric rise from 1× to peak
//! peak = 100.0
//! hold = "10m"
//! decay = "10m"                    # geometric fall back to 1× (default: none, holds to the end)
//!
//! [[events]]                       # an outage: the region's agents die, its clients move
//! kind = "outage"
//! region = "us-east"
//! at = "10m"
//! duration = "15m"                 # default: until the end
//!
//! [[events]]                       # a season: demand grows linearly between two instants
//! kind = "season"
//! region = "eu-west"               # or "*" for every region
//! at = "0s"
//! ramp = "60days"
//! peak = 3.0
//!
//! [[weddings]]                     # weddings on the calendar (each protects its region)
//! region = "eu-west"
//! count = 40                       # ids are "<region>-w<n>"
//! at = "0s"
//! duration = "8h"
//! guests = 150
//!
//! [history]                        # optional: time before `start` the engines learn their
//! duration = "84days"              # weekly profiles from (one sample per 5 minutes)
//! growth = 3.0                     # demand grew 3× over it (linearly), into the season
//! ```
//!
//! Every error names the scenario and the field.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;
use wedsync_core::TrafficClass;

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("scenario {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML is malformed or a field has the wrong type or an unknown name.
    #[error("scenario {name}: {message}")]
    Syntax {
        /// The scenario (its file or built-in name).
        name: String,
        /// What the TOML parser said, with the line and column.
        message: String,
    },
    /// A field's value is out of range or inconsistent with another.
    #[error("scenario {name}: {field}: {reason}")]
    Invalid {
        /// The scenario.
        name: String,
        /// The field, e.g. `events[2].region`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No built-in scenario has this name and no file has this path.
    #[error("no scenario {0:?}: not a built-in ({1}) and not a file")]
    Unknown(String, String),
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// One line on what it shows.
    #[serde(default)]
    pub about: String,
    /// Wall clock at t = 0.
    pub start: jiff::Timestamp,
    /// How long it runs.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The engines' round interval.
    #[serde(with = "humantime_serde", default = "default_round")]
    pub round: Duration,
    /// How long a dead region's clients take to reach the regions they fail over to.
    #[serde(with = "humantime_serde", default = "default_failover_delay")]
    pub failover_delay: Duration,
    /// The regions.
    pub regions: Vec<RegionSpec>,
    /// Surges, outages and seasons.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Weddings on the calendar.
    #[serde(default)]
    pub weddings: Vec<WeddingBlock>,
    /// Time before `start` the engines learn their weekly profiles from.
    #[serde(default)]
    pub history: Option<History>,
}

fn default_round() -> Duration {
    Duration::from_millis(100)
}

fn default_failover_delay() -> Duration {
    Duration::from_secs(30)
}

/// A region of the fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    /// Region name (as the agents' `agent.region`).
    pub name: String,
    /// IANA time zone.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Agents in the region.
    #[serde(default = "default_nodes")]
    pub nodes: u32,
    /// Regions its clients may move to when it dies.
    #[serde(default)]
    pub failover_to: Vec<String>,
    /// Each node's pool.
    #[serde(default)]
    pub pool: PoolShape,
    /// The region's demand per class, requests/s.
    pub base: ClassRates,
    /// A daily shape in local time.
    #[serde(default)]
    pub daily: Option<Daily>,
}

fn default_time_zone() -> String {
    "UTC".into()
}

fn default_nodes() -> u32 {
    2
}

/// Each node's pool in a region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolShape {
    /// Fewest units.
    pub min: u32,
    /// Most units.
    pub max: u32,
    /// Requests/s per unit at full utilization.
    pub capacity_per_unit: f64,
    /// Utilization aimed for.
    pub target_utilization: f64,
    /// Time from asking for a unit to its serving.
    #[serde(with = "humantime_serde")]
    pub provisioning_delay: Duration,
    /// Fewest units while a wedding is active in the region.
    pub protected_floor: u32,
}

impl Default for PoolShape {
    fn default() -> Self {
        PoolShape {
            min: 2,
            max: 400,
            capacity_per_unit: 100.0,
            target_utilization: 0.7,
            provisioning_delay: Duration::from_secs(60),
            protected_floor: 4,
        }
    }
}

/// Requests/s per traffic class.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassRates {
    /// Wedding-critical.
    pub wedding_critical: f64,
    /// Wedding planning.
    pub wedding_planning: f64,
    /// Registration.
    pub registration: f64,
    /// Media uploads.
    pub media: f64,
    /// Background work.
    pub background: f64,
}

impl ClassRates {
    /// The rates in [`TrafficClass::ALL`] order.
    pub fn as_array(&self) -> [f64; 5] {
        [self.wedding_critical, self.wedding_planning, self.registration, self.media, self.background]
    }
}

/// A daily demand shape in the region's local time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Daily {
    /// Multiplier at 14:00 local (1 at night).
    #[serde(default = "one")]
    pub peak: f64,
    /// Multiplier on Saturdays, all day.
    #[serde(default = "one")]
    pub saturday: f64,
    /// On Saturdays, the local time ("HH:MM") the day's rise happens at, within five minutes.
    #[serde(default)]
    pub saturday_rush: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// Something that happens to the traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// Some classes of a region multiply, then fall back.
    Surge {
        /// The region.
        region: String,
        /// The classes (default: all).
        #[serde(default)]
        classes: Vec<TrafficClass>,
        /// When it starts.
        #[serde(with = "humantime_serde")]
        at: Duration,
        /// Geometric rise from 1× to `peak`.
        #[serde(with = "humantime_serde")]
        ramp: Duration,
        /// The multiplier at its height.
        peak: f64,
        /// How long it stays at its height.
        #[serde(with = "humantime_serde", default)]
        hold: Duration,
        /// Geometric fall back to 1× (none: it holds to the end).
        #[serde(with = "humantime_serde", default)]
        decay: Option<Duration>,
    },
    /// A region's agents die; its clients move to its `failover_to` regions.
    Outage {
        /// The region.
        region: String,
        /// When.
        #[serde(with = "humantime_serde")]
        at: Duration,
        /// How long (none: to the end).
        #[serde(with = "humantime_serde", default)]
        duration: Option<Duration>,
    },
    /// Demand grows linearly from 1× to `peak` over `ramp`, then stays there.
    Season {
        /// The region, or `*` for all.
        region: String,
        /// When the growth starts.
        #[serde(with = "humantime_serde")]
        at: Duration,
        /// How long it grows.
        #[serde(with = "humantime_serde")]
        ramp: Duration,
        /// The multiplier reached.
        peak: f64,
    },
}

/// Weddings on the calendar: `count` of them in a region, all at the same time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeddingBlock {
    /// The region.
    pub region: String,
    /// How many.
    #[serde(default = "one_wedding")]
    pub count: u32,
    /// When they start.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// How long they last.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Guests at each.
    #[serde(default = "default_guests")]
    pub guests: u32,
}

fn one_wedding() -> u32 {
    1
}

fn default_guests() -> u32 {
    120
}

/// Time before the scenario the engines learn from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// How far back it goes.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Demand at t = 0 over demand at the history's start (a season's growth; linear between).
    #[serde(default = "one")]
    pub growth: f64,
}

/// A built-in scenario.
#[derive(Debug, Clone, Copy)]
pub struct BuiltIn {
    /// Its name.
    pub name: &'static str,
    /// Its file.
    pub toml: &'static str,
}

/// The built-in scenarios (the files in `agent/sim/scenarios/`).
pub const BUILT_IN: [BuiltIn; 5] = [
    BuiltIn { name: "viral-saturday", toml: include_str!("../scenarios/viral-saturday.toml") },
    BuiltIn { name: "wedding-day", toml: include_str!("../scenarios/wedding-day.toml") },
    BuiltIn { name: "region-outage", toml: include_str!("../scenarios/region-outage.toml") },
    BuiltIn { name: "season-ramp", toml: include_str!("../scenarios/season-ramp.toml") },
    BuiltIn { name: "quick", toml: include_str!("../scenarios/quick.toml") },
];

/// The built-in names, comma-separated (for messages).
pub fn built_in_names() -> String {
    BUILT_IN.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
}

/// Most nodes a scenario may declare (the fleet runs on one machine).
pub const MAX_NODES: u32 = 10_000;
/// Most rounds per node a scenario may need.
pub const MAX_ROUNDS: u64 = 5_000_000;

impl Scenario {
    /// A built-in by name, or a file by path.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some(b) = BUILT_IN.iter().find(|b| b.name == name_or_path) {
            return Scenario::parse(b.name, b.toml);
        }
        let path = std::path::Path::new(name_or_path);
        if !path.exists() {
            return Err(ScenarioError::Unknown(name_or_path.to_owned(), built_in_names()));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: name_or_path.to_owned(), source })?;
        Scenario::parse(name_or_path, &text)
    }

    /// Parses and validates a scenario; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Syntax { name: origin.to_owned(), message: e.to_string() })?;
        scenario.validate(origin)?;
        Ok(scenario)
    }

    /// Region index by name.
    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }

    /// Nodes in the whole fleet.
    pub fn total_nodes(&self) -> u32 {
        self.regions.iter().map(|r| r.nodes).sum()
    }

    /// Seconds.
    pub fn duration_s(&self) -> f64 {
        self.duration.as_secs_f64()
    }

    /// Wall clock at `t` seconds, Unix ms.
    pub fn wall_ms(&self, t: f64) -> i64 {
        self.start.as_millisecond() + (t * 1000.0) as i64
    }

    /// The same scenario with every region's node count scaled so the fleet has about `nodes`
    /// nodes (at least one per region), keeping the regions' proportions, and each region's
    /// traffic scaled with its nodes, so every node carries what it did (a thousand nodes
    /// sharing six nodes' traffic would each sit at their pool's minimum).
    pub fn with_nodes(mut self, nodes: u32) -> Scenario {
        let total = self.total_nodes().max(1);
        let mut left = nodes.max(self.regions.len() as u32);
        let count = self.regions.len();
        for (i, region) in self.regions.iter_mut().enumerate() {
            let share = if i + 1 == count {
                left
            } else {
                ((u64::from(region.nodes) * u64::from(nodes) / u64::from(total)) as u32)
                    .max(1)
                    .min(left.saturating_sub((count - i - 1) as u32))
            };
            let factor = f64::from(share.max(1)) / f64::from(region.nodes.max(1));
            let b = &mut region.base;
            for rate in
                [&mut b.wedding_critical, &mut b.wedding_planning, &mut b.registration, &mut b.media, &mut b.background]
            {
                *rate *= factor;
            }
            region.nodes = share.max(1);
            left = left.saturating_sub(share);
        }
        self
    }

    fn validate(&self, origin: &str) -> Result<(), ScenarioError> {
        let bad = |field: String, reason: String| ScenarioError::Invalid { name: origin.to_owned(), field, reason };
        if self.regions.is_empty() {
            return Err(bad("regions".into(), "at least one region is needed".into()));
        }
        if self.duration.is_zero() {
            return Err(bad("duration".into(), "must be more than 0".into()));
        }
        if self.round < Duration::from_millis(10) || self.round > Duration::from_secs(3600) {
            return Err(bad("round".into(), format!("{:?} is outside 10ms..=1h", self.round)));
        }
        let rounds = self.duration.as_nanos() / self.round.as_nanos().max(1);
        if rounds > u128::from(MAX_ROUNDS) {
            return Err(bad("duration".into(), format!("{rounds} rounds of {:?}; at most {MAX_ROUNDS}", self.round)));
        }
        let mut names = BTreeSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            let field = |f: &str| format!("regions[{i}].{f}");
            if r.name.is_empty() || r.name.len() > 64 {
                return Err(bad(field("name"), "must be 1 to 64 characters".into()));
            }
            if !names.insert(r.name.as_str()) {
                return Err(bad(field("name"), format!("{:?} appears twice", r.name)));
            }
            if r.nodes == 0 {
                return Err(bad(field("nodes"), "at least one node".into()));
            }
            if let Err(e) = jiff::tz::TimeZone::get(&r.time_zone) {
                return Err(bad(field("time_zone"), format!("{:?}: {e}", r.time_zone)));
            }
            let p = &r.pool;
            if p.min == 0 || p.min > p.max {
                return Err(bad(field("pool"), format!("need 1 <= min <= max, got min {} max {}", p.min, p.max)));
            }
            if !(p.capacity_per_unit.is_finite() && p.capacity_per_unit > 0.0) {
                return Err(bad(field("pool.capacity_per_unit"), "must be a positive number".into()));
            }
            if !(p.target_utilization > 0.0 && p.target_utilization <= 1.0) {
                return Err(bad(field("pool.target_utilization"), "must be in (0, 1]".into()));
            }
            if p.protected_floor > p.max {
                return Err(bad(
                    field("pool.protected_floor"),
                    format!("{} is above max {}", p.protected_floor, p.max),
                ));
            }
            if r.base.as_array().iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(bad(field("base"), "rates must be finite and not negative".into()));
            }
            if let Some(d) = &r.daily {
                if !(d.peak.is_finite() && d.peak > 0.0 && d.saturday.is_finite() && d.saturday > 0.0) {
                    return Err(bad(field("daily"), "peak and saturday must be positive".into()));
                }
                if let Some(rush) = &d.saturday_rush
                    && parse_hh_mm(rush).is_none()
                {
                    return Err(bad(field("daily.saturday_rush"), format!("{rush:?} is not HH:MM")));
                }
            }
        }
        for (i, r) in self.regions.iter().enumerate() {
            for to in &r.failover_to {
                if !names.contains(to.as_str()) || *to == r.name {
                    return Err(bad(format!("regions[{i}].failover_to"), format!("{to:?} is not another region")));
                }
            }
        }
        let known = |region: &str| names.contains(region);
        for (i, e) in self.events.iter().enumerate() {
            let field = |f: &str| format!("events[{i}].{f}");
            match e {
                Event::Surge { region, peak, ramp, .. } => {
                    if !known(region) {
                        return Err(bad(field("region"), format!("{region:?} is not a region")));
                    }
                    if !(peak.is_finite() && *peak > 0.0 && *peak <= 10_000.0) {
                        return Err(bad(field("peak"), "must be in (0, 10000]".into()));
                    }
                    if ramp.is_zero() {
                        return Err(bad(field("ramp"), "must be more than 0 (use 1s for a step)".into()));
                    }
                }
                Event::Outage { region, .. } => {
                    if !known(region) {
                        return Err(bad(field("region"), format!("{region:?} is not a region")));
                    }
                }
                Event::Season { region, peak, ramp, .. } => {
                    if region != "*" && !known(region) {
                        return Err(bad(field("region"), format!("{region:?} is not a region (or \"*\")")));
                    }
                    if !(peak.is_finite() && *peak > 0.0 && *peak <= 1000.0) {
                        return Err(bad(field("peak"), "must be in (0, 1000]".into()));
                    }
                    if ramp.is_zero() {
                        return Err(bad(field("ramp"), "must be more than 0".into()));
                    }
                }
            }
        }
        for (i, w) in self.weddings.iter().enumerate() {
            if !known(&w.region) {
                return Err(bad(format!("weddings[{i}].region"), format!("{:?} is not a region", w.region)));
            }
            if w.duration.is_zero() || w.count == 0 || w.count > 10_000 {
                return Err(bad(format!("weddings[{i}]"), "needs a duration and 1 to 10000 weddings".into()));
            }
        }
        if let Some(h) = &self.history
            && !(h.growth.is_finite() && h.growth > 0.0 && h.duration <= Duration::from_secs(366 * 86_400))
        {
            return Err(bad("history".into(), "growth must be positive and duration at most a year".into()));
        }
        if self.total_nodes() > MAX_NODES {
            return Err(bad("regions".into(), format!("{} nodes; at most {MAX_NODES}", self.total_nodes())));
        }
        Ok(())
    }
}

/// "HH:MM" → minutes after midnight.
pub(crate) fn parse_hh_mm(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_parses() {
        for b in BUILT_IN {
            let s = Scenario::parse(b.name, b.toml).unwrap_or_else(|e| panic!("{}: {e}", b.name));
            assert_eq!(s.name, b.name);
            assert!(!s.about.is_empty(), "{}", b.name);
        }
    }

    #[test]
    fn errors_name_the_scenario_and_the_field() {
        let base = r#"
name = "t"
start = "2026-06-13T09:00:00Z"
duration = "10m"
[[regions]]
name = "eu-west"
[regions.base]
media = 100.0
"#;
        assert!(Scenario::parse("t.toml", base).is_ok());
        let e = Scenario::parse(
            "t.toml",
            &format!("{base}[[events]]\nkind = \"outage\"\nregion = \"mars\"\nat = \"1m\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.toml") && e.contains("events[0].region") && e.contains("mars"), "{e}");
        let e = Scenario::parse("t.toml", &base.replace("media", "medya")).unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("medya"), "{e}");
        let e = Scenario::parse("t.toml", &base.replace("10m", "ten minutes")).unwrap_err().to_string();
        assert!(e.contains("duration"), "{e}");
        let e = Scenario::parse("t.toml", &base.replace("name = \"eu-west\"", "name = \"eu-west\"\nnodes = 0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("regions[0].nodes"), "{e}");
        let e = Scenario::parse(
            "t.toml",
            &base.replace("name = \"eu-west\"", "name = \"eu-west\"\nfailover_to = [\"eu-west\"]"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("failover_to"), "{e}");
        assert!(matches!(Scenario::load("no-such-scenario"), Err(ScenarioError::Unknown(..))));
    }

    #[test]
    fn node_counts_scale_with_the_regions_proportions() {
        let s = Scenario::load("viral-saturday").unwrap();
        let regions = s.regions.len() as u32;
        let scaled = s.clone().with_nodes(1000);
        assert_eq!(scaled.total_nodes(), 1000);
        assert!(scaled.regions.iter().all(|r| r.nodes >= 1));
        // Each node carries what it did: eu-west's 2 nodes become 333 with 166.5× the traffic.
        let (before, after) = (&s.regions[0], &scaled.regions[0]);
        let per_node = |r: &RegionSpec| r.base.media / f64::from(r.nodes);
        assert!((per_node(before) - per_node(after)).abs() < 1e-9, "{} vs {}", per_node(before), per_node(after));
        assert_eq!(s.with_nodes(1).total_nodes(), regions, "at least one per region");
    }
}
