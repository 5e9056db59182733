//! The load model: what each region's clients ask for at a scenario time, and where they go
//! when their region is down.

use crate::scenario::{Event, Scenario, ScenarioError, parse_hh_mm};
use jiff::tz::TimeZone;
use wedsync_core::TrafficClass;
use wedsync_core::engine::pool::Wedding;

/// Requests/s per class, in [`TrafficClass::ALL`] order.
pub type Rates = [f64; 5];

/// Length of a Saturday rush's rise.
const RUSH_RISE_S: f64 = 300.0;

/// Demand per region over time, from a scenario. Deterministic.
#[derive(Debug, Clone)]
pub struct LoadModel {
    scenario: Scenario,
    zones: Vec<TimeZone>,
    rush_minute: Vec<Option<u32>>,
    /// Per region: (outage start, end) in seconds.
    outages: Vec<Vec<(f64, f64)>>,
    /// History growth: demand at the start of the history is this much below demand at t = 0.
    history_growth: f64,
}

impl LoadModel {
    /// The model of `scenario`.
    pub fn new(scenario: &Scenario) -> Result<LoadModel, ScenarioError> {
        let mut zones = Vec::new();
        let mut rush_minute = Vec::new();
        for (i, r) in scenario.regions.iter().enumerate() {
            let zone = TimeZone::get(&r.time_zone).map_err(|e| ScenarioError::Invalid {
                name: scenario.name.clone(),
                field: format!("regions[{i}].time_zone"),
                reason: e.to_string(),
            })?;
            zones.push(zone);
            rush_minute.push(r.daily.as_ref().and_then(|d| d.saturday_rush.as_deref()).and_then(parse_hh_mm));
        }
        let mut outages = vec![Vec::new(); scenario.regions.len()];
        for e in &scenario.events {
            if let Event::Outage { region, at, duration } = e
                && let Some(i) = scenario.region_index(region)
            {
                let from = at.as_secs_f64();
                let to = duration.map_or(f64::INFINITY, |d| from + d.as_secs_f64());
                outages[i].push((from, to));
            }
        }
        let history_growth = scenario.history.as_ref().map_or(1.0, |h| h.growth);
        Ok(LoadModel { scenario: scenario.clone(), zones, rush_minute, outages, history_growth })
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Whether region `r` is down at `t`.
    pub fn is_down(&self, r: usize, t: f64) -> bool {
        self.outages.get(r).is_some_and(|o| o.iter().any(|(from, to)| (*from..*to).contains(&t)))
    }

    /// When region `r` first goes down, if it does.
    pub fn outage_start(&self, r: usize) -> Option<f64> {
        self.outages.get(r)?.iter().map(|(from, _)| *from).reduce(f64::min)
    }

    /// What region `r`'s own clients ask for at `t` (seconds from the start; negative in the
    /// history), wherever they are served.
    pub fn own_demand(&self, r: usize, t: f64) -> Rates {
        let Some(region) = self.scenario.regions.get(r) else { return [0.0; 5] };
        let base = region.base.as_array();
        let shape = self.daily_factor(r, t) * self.history_factor(t);
        let mut out = [0.0; 5];
        for (i, class) in TrafficClass::ALL.iter().enumerate() {
            out[i] = base[i] * shape * self.event_factor(r, *class, t);
        }
        out
    }

    /// What every region receives at `t`: its own clients while it is up, plus, once the
    /// failover delay has passed, an even share of each down region's clients among that
    /// region's `failover_to` regions that are up. Also returns the demand with nowhere to go.
    pub fn routed(&self, t: f64) -> (Vec<Rates>, Rates) {
        let n = self.scenario.regions.len();
        let mut out = vec![[0.0; 5]; n];
        let mut lost = [0.0; 5];
        let delay = self.scenario.failover_delay.as_secs_f64();
        for r in 0..n {
            let own = self.own_demand(r, t);
            if !self.is_down(r, t) {
                add(&mut out[r], &own, 1.0);
                continue;
            }
            let moved = self.outages[r].iter().any(|(from, to)| t >= from + delay && t < *to);
            let targets: Vec<usize> = if moved {
                self.scenario.regions[r]
                    .failover_to
                    .iter()
                    .filter_map(|name| self.scenario.region_index(name))
                    .filter(|&to| !self.is_down(to, t))
                    .collect()
            } else {
                Vec::new()
            };
            if targets.is_empty() {
                add(&mut lost, &own, 1.0);
            } else {
                let share = 1.0 / targets.len() as f64;
                for to in targets {
                    add(&mut out[to], &own, share);
                }
            }
        }
        (out, lost)
    }

    /// Seconds from the start at which region `r`'s demand first departs from its usual shape:
    /// its first surge, or the arrival of a failed region's clients. None: no such event.
    pub fn onset_s(&self, r: usize) -> Option<f64> {
        let name = &self.scenario.regions.get(r)?.name;
        let delay = self.scenario.failover_delay.as_secs_f64();
        let mut onset: Option<f64> = None;
        let mut earliest = |t: f64| onset = Some(onset.map_or(t, |o: f64| o.min(t)));
        for e in &self.scenario.events {
            if let Event::Surge { region, at, .. } = e
                && region == name
            {
                earliest(at.as_secs_f64());
            }
        }
        for (from, region) in self.scenario.regions.iter().enumerate() {
            if region.failover_to.iter().any(|to| to == name)
                && let Some(start) = self.outage_start(from)
            {
                earliest(start + delay);
            }
        }
        if let Some(rush) = self.next_rush(r) {
            earliest(rush);
        }
        onset
    }

    /// The first Saturday rush in region `r` within the scenario, seconds from the start.
    fn next_rush(&self, r: usize) -> Option<f64> {
        let minute = (*self.rush_minute.get(r)?)?;
        let zone = self.zones.get(r)?;
        let start = self.scenario.start.to_zoned_datetime(zone.clone());
        for day in 0..8 {
            let date = start.date().checked_add(jiff::Span::new().days(day)).ok()?;
            if date.weekday() != jiff::civil::Weekday::Saturday {
                continue;
            }
            let at = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0).to_zoned_datetime(zone.clone()).ok()?;
            let t = at.timestamp().duration_since(self.scenario.start).as_secs_f64();
            return (t >= 0.0 && t <= self.scenario.duration_s()).then_some(t);
        }
        None
    }

    /// The weddings on the scenario's calendar.
    pub fn weddings(&self) -> Vec<Wedding> {
        let mut out = Vec::new();
        for block in &self.scenario.weddings {
            let Some(r) = self.scenario.region_index(&block.region) else { continue };
            let start = self.scenario.wall_ms(block.at.as_secs_f64());
            let end = start + i64::try_from(block.duration.as_millis()).unwrap_or(i64::MAX / 4);
            for _ in 0..block.count {
                out.push(Wedding {
                    id: format!("{}-w{}", block.region, out.len() + 1),
                    region: block.region.clone(),
                    time_zone: self.scenario.regions[r].time_zone.clone(),
                    start_unix_ms: start,
                    end_unix_ms: end,
                    guests: block.guests,
                });
            }
        }
        out
    }

    /// Weddings active in region `r` at `t`.
    pub fn active_weddings(&self, r: usize, t: f64) -> u32 {
        let Some(region) = self.scenario.regions.get(r) else { return 0 };
        self.scenario
            .weddings
            .iter()
            .filter(|w| w.region == region.name)
            .filter(|w| (w.at.as_secs_f64()..w.at.as_secs_f64() + w.duration.as_secs_f64()).contains(&t))
            .map(|w| w.count)
            .sum()
    }

    fn history_factor(&self, t: f64) -> f64 {
        let Some(history) = &self.scenario.history else { return 1.0 };
        let span = history.duration.as_secs_f64();
        if t >= 0.0 || span <= 0.0 {
            return 1.0;
        }
        // Linear from 1/growth at the history's start to 1 at t = 0.
        let fraction = ((t + span) / span).clamp(0.0, 1.0);
        let low = 1.0 / self.history_growth;
        low + (1.0 - low) * fraction
    }

    fn daily_factor(&self, r: usize, t: f64) -> f64 {
        let Some(daily) = self.scenario.regions.get(r).and_then(|x| x.daily.as_ref()) else { return 1.0 };
        let Some(zone) = self.zones.get(r) else { return 1.0 };
        let Ok(at) = jiff::Timestamp::from_millisecond(self.scenario.wall_ms(t)) else { return 1.0 };
        let local = at.to_zoned_datetime(zone.clone());
        let minute = f64::from(local.hour()) * 60.0 + f64::from(local.minute()) + f64::from(local.second()) / 60.0;
        let hours = minute / 60.0;
        let bump = if (8.0..20.0).contains(&hours) {
            (std::f64::consts::PI * (hours - 14.0) / 12.0).cos().powi(2)
        } else {
            0.0
        };
        let mut factor = 1.0 + (daily.peak - 1.0) * bump;
        if local.weekday() == jiff::civil::Weekday::Saturday {
            factor *= match self.rush_minute.get(r).copied().flatten() {
                None => daily.saturday,
                Some(rush) => {
                    let since = (minute - f64::from(rush)) * 60.0;
                    let evening = (22.0 * 60.0 - minute) * 60.0;
                    if since < 0.0 || evening < 0.0 {
                        1.0
                    } else {
                        let rise = (since / RUSH_RISE_S).min(1.0);
                        1.0 + (daily.saturday - 1.0) * rise
                    }
                }
            };
        }
        factor
    }

    fn event_factor(&self, r: usize, class: TrafficClass, t: f64) -> f64 {
        let name = &self.scenario.regions[r].name;
        let mut factor = 1.0;
        for e in &self.scenario.events {
            match e {
                Event::Surge { region, classes, at, ramp, peak, hold, decay } => {
                    if region != name || !(classes.is_empty() || classes.contains(&class)) {
                        continue;
                    }
                    factor *= surge_factor(
                        t,
                        at.as_secs_f64(),
                        ramp.as_secs_f64(),
                        *peak,
                        hold.as_secs_f64(),
                        decay.map(|d| d.as_secs_f64()),
                    );
                }
                Event::Season { region, at, ramp, peak } => {
                    if region != "*" && region != name {
                        continue;
                    }
                    let fraction = ((t - at.as_secs_f64()) / ramp.as_secs_f64()).clamp(0.0, 1.0);
                    factor *= 1.0 + (peak - 1.0) * fraction;
                }
                Event::Outage { .. } => {}
            }
        }
        factor
    }
}

/// A surge's multiplier at `t`: geometric rise over `ramp`, `hold` at `peak`, geometric fall.
fn surge_factor(t: f64, at: f64, ramp: f64, peak: f64, hold: f64, decay: Option<f64>) -> f64 {
    if t < at {
        return 1.0;
    }
    let since = t - at;
    if since < ramp {
        return peak.powf(since / ramp);
    }
    let Some(decay) = decay else { return peak };
    let falling = since - ramp - hold;
    if falling <= 0.0 {
        peak
    } else if falling < decay {
        peak.powf(1.0 - falling / decay)
    } else {
        1.0
    }
}

fn add(into: &mut Rates, rates: &Rates, share: f64) {
    for (a, b) in into.iter_mut().zip(rates) {
        *a += b * share;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_REGIONS: &str = r#"
name = "t"
start = "2026-06-13T08:00:00Z"   # a Saturday
duration = "1h"
failover_delay = "30s"
[[regions]]
name = "eu-west"
failover_to = ["eu-central"]
[regions.base]
wedding_critical = 10.0
media = 100.0
[[regions]]
name = "eu-central"
[regions.base]
media = 50.0
[[events]]
kind = "surge"
region = "eu-west"
classes = ["media"]
at = "5m"
ramp = "5m"
peak = 100.0
hold = "10m"
decay = "10m"
[[events]]
kind = "outage"
region = "eu-west"
at = "40m"
duration = "10m"
"#;

    fn model() -> LoadModel {
        LoadModel::new(&Scenario::parse("t", TWO_REGIONS).unwrap()).unwrap()
    }

    #[test]
    fn a_surge_rises_geometrically_holds_and_falls() {
        let m = model();
        assert_eq!(m.own_demand(0, 0.0), [10.0, 0.0, 0.0, 100.0, 0.0]);
        // Half way up a 100× ramp: 10×; wedding-critical untouched.
        let half = m.own_demand(0, 450.0);
        assert!((half[3] - 1000.0).abs() < 1e-6 && half[0] == 10.0, "{half:?}");
        assert!((m.own_demand(0, 900.0)[3] - 10_000.0).abs() < 1e-6);
        assert!((m.own_demand(0, 1500.0)[3] - 1000.0).abs() < 1e-6, "half way down");
        assert_eq!(m.own_demand(0, 2000.0)[3], 100.0);
        assert_eq!(m.onset_s(0), Some(300.0));
    }

    #[test]
    fn a_dead_regions_clients_move_after_the_failover_delay_only_where_allowed() {
        let m = model();
        let (before, lost) = m.routed(2390.0);
        assert_eq!((before[0][3], before[1][3], lost[3]), (100.0, 50.0, 0.0));
        // Down, not yet moved: its clients are lost.
        let (during, lost) = m.routed(2410.0);
        assert_eq!((during[0][3], during[1][3], lost[3]), (0.0, 50.0, 100.0));
        // Moved to eu-central.
        let (moved, lost) = m.routed(2440.0);
        assert_eq!((moved[0][3], moved[1][3], lost[3]), (0.0, 150.0, 0.0));
        assert_eq!(moved[1][0], 10.0, "wedding-critical moves too");
        // Back up after 10 minutes.
        assert_eq!(m.routed(3001.0).0[0][3], 100.0);
        assert_eq!(m.onset_s(1), Some(2430.0));
        // eu-central has no failover_to: had it died, its clients would have nowhere to go.
        assert!(m.scenario().regions[1].failover_to.is_empty());
    }

    #[test]
    fn a_saturday_rush_steps_up_within_five_minutes_in_local_time() {
        let text = r#"
name = "t"
start = "2026-06-13T07:00:00Z"
duration = "4h"
[[regions]]
name = "eu-west"
time_zone = "Europe/London"
[regions.base]
media = 100.0
[regions.daily]
saturday = 4.0
saturday_rush = "10:00"
"#;
        let m = LoadModel::new(&Scenario::parse("t", text).unwrap()).unwrap();
        // 10:00 in London in June is 09:00 UTC: two hours after the start.
        assert_eq!(m.onset_s(0), Some(7200.0));
        assert_eq!(m.own_demand(0, 7190.0)[3], 100.0);
        assert!((m.own_demand(0, 7350.0)[3] - 250.0).abs() < 1e-6, "half way up");
        assert_eq!(m.own_demand(0, 7500.0)[3], 400.0);
    }
}
