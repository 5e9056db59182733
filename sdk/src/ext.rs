//! Look-ups and small computations on the WIT records.

use crate::{ClassFigures, PoolId, PoolInfo, PoolState, Proposal, RegionId, RegionInfo, Round, Setup, TrafficClass};

/// The five traffic classes, most important first.
pub const ALL_CLASSES: [TrafficClass; 5] = [
    TrafficClass::WeddingCritical,
    TrafficClass::WeddingPlanning,
    TrafficClass::Registration,
    TrafficClass::Media,
    TrafficClass::Background,
];

impl TrafficClass {
    /// The class's name as in the WIT and the agent's config (`wedding-critical`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficClass::WeddingCritical => "wedding-critical",
            TrafficClass::WeddingPlanning => "wedding-planning",
            TrafficClass::Registration => "registration",
            TrafficClass::Media => "media",
            TrafficClass::Background => "background",
        }
    }

    /// Parses a class name (`wedding-critical`, `wedding_critical` also accepted).
    pub fn parse(name: &str) -> Option<Self> {
        ALL_CLASSES.into_iter().find(|c| c.as_str() == name || c.as_str().replace('-', "_") == name)
    }
}

impl ClassFigures {
    /// The same figure for every class.
    pub fn uniform(value: f64) -> Self {
        ClassFigures {
            wedding_critical: value,
            wedding_planning: value,
            registration: value,
            media: value,
            background: value,
        }
    }

    /// Zero for every class.
    pub fn zero() -> Self {
        Self::uniform(0.0)
    }

    /// The figure of one class.
    pub fn get(&self, class: TrafficClass) -> f64 {
        match class {
            TrafficClass::WeddingCritical => self.wedding_critical,
            TrafficClass::WeddingPlanning => self.wedding_planning,
            TrafficClass::Registration => self.registration,
            TrafficClass::Media => self.media,
            TrafficClass::Background => self.background,
        }
    }

    /// Sets the figure of one class.
    pub fn set(&mut self, class: TrafficClass, value: f64) {
        match class {
            TrafficClass::WeddingCritical => self.wedding_critical = value,
            TrafficClass::WeddingPlanning => self.wedding_planning = value,
            TrafficClass::Registration => self.registration = value,
            TrafficClass::Media => self.media = value,
            TrafficClass::Background => self.background = value,
        }
    }

    /// Sum over all classes.
    pub fn total(&self) -> f64 {
        ALL_CLASSES.iter().map(|c| self.get(*c)).sum()
    }

    /// Sum over every class except `wedding-critical`.
    pub fn non_critical(&self) -> f64 {
        self.total() - self.wedding_critical
    }
}

impl Setup {
    /// The pool with this id.
    pub fn pool(&self, id: PoolId) -> Option<&PoolInfo> {
        self.pools.get(id as usize)
    }

    /// The region with this id.
    pub fn region(&self, id: RegionId) -> Option<&RegionInfo> {
        self.regions.get(id as usize)
    }

    /// The id and description of the pool named `name`.
    pub fn pool_by_name(&self, name: &str) -> Option<(PoolId, &PoolInfo)> {
        self.pools.iter().enumerate().find(|(_, p)| p.name == name).map(|(i, p)| (index_id(i), p))
    }

    /// The id of the region named `name`.
    pub fn region_id(&self, name: &str) -> Option<RegionId> {
        self.regions.iter().position(|r| r.name == name).map(index_id)
    }

    /// The region's name, or `""` for an unknown id.
    pub fn region_name(&self, id: RegionId) -> &str {
        self.region(id).map_or("", |r| r.name.as_str())
    }

    /// The name of the pool's home region, or `""` for an unknown pool.
    pub fn pool_region_name(&self, pool: PoolId) -> &str {
        self.pool(pool).map_or("", |p| self.region_name(p.region))
    }

    /// The agent's own region's name.
    pub fn local_region_name(&self) -> &str {
        self.region_name(self.region)
    }

    /// Pools whose home region is `region`, with their ids.
    pub fn pools_in_region(&self, region: RegionId) -> impl Iterator<Item = (PoolId, &PoolInfo)> {
        self.pools.iter().enumerate().filter(move |(_, p)| p.region == region).map(|(i, p)| (index_id(i), p))
    }
}

impl PoolInfo {
    /// Requests per second one unit carries at the target utilization.
    pub fn effective_capacity_per_unit(&self) -> f64 {
        let util =
            if self.target_utilization > 0.0 && self.target_utilization <= 1.0 { self.target_utilization } else { 1.0 };
        self.capacity_per_unit * util
    }

    /// Units that carry `load` requests per second at the target utilization, rounded up
    /// (0 for no load or a pool without capacity per unit).
    pub fn units_for(&self, load: f64) -> u32 {
        units_for(load, self.effective_capacity_per_unit())
    }

    /// `units` clamped to the pool's `[min, max]`.
    pub fn clamp_units(&self, units: u32) -> u32 {
        units.max(self.min).min(self.max.max(self.min))
    }

    /// The pool serves `class`.
    pub fn serves(&self, class: TrafficClass) -> bool {
        self.classes.contains(&class)
    }
}

/// `ceil(load / per_unit)` as units, saturating; 0 when either is not positive or not finite.
pub(crate) fn units_for(load: f64, per_unit: f64) -> u32 {
    if !(load.is_finite() && per_unit.is_finite()) || load <= 0.0 || per_unit <= 0.0 {
        return 0;
    }
    let units = (load / per_unit).ceil();
    if units >= f64::from(u32::MAX) { u32::MAX } else { units as u32 }
}

impl Round {
    /// The state of the pool with this id this round.
    pub fn pool_state(&self, pool: PoolId) -> Option<&PoolState> {
        self.pools.iter().find(|p| p.pool == pool)
    }

    /// The engine's proposal for the pool with this id this round.
    pub fn proposal(&self, pool: PoolId) -> Option<&Proposal> {
        self.proposals.iter().find(|p| p.pool == pool)
    }

    /// A wedding is active in the agent's region (from the calendar or the fleet view).
    pub fn wedding_active(&self) -> bool {
        !self.weddings.is_empty() || self.fleet.is_some_and(|f| f.active_weddings > 0)
    }

    /// The most guests of any active wedding (0 when none).
    pub fn largest_wedding_guests(&self) -> u32 {
        self.weddings.iter().map(|w| w.guests).max().unwrap_or(0)
    }
}

impl Proposal {
    /// The engine proposes fewer units than now.
    pub fn is_scale_down(&self) -> bool {
        self.to < self.from
    }

    /// The engine proposes more units than now.
    pub fn is_scale_up(&self) -> bool {
        self.to > self.from
    }
}

fn index_id(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_for_rounds_up_and_guards() {
        assert_eq!(units_for(101.0, 100.0), 2);
        assert_eq!(units_for(100.0, 100.0), 1);
        assert_eq!(units_for(0.0, 100.0), 0);
        assert_eq!(units_for(f64::NAN, 100.0), 0);
        assert_eq!(units_for(10.0, 0.0), 0);
        assert_eq!(units_for(1e300, 1.0), u32::MAX);
    }

    #[test]
    fn classes_round_trip() {
        for c in ALL_CLASSES {
            assert_eq!(TrafficClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(TrafficClass::parse("wedding_critical"), Some(TrafficClass::WeddingCritical));
        assert_eq!(TrafficClass::parse("nope"), None);
        let mut f = ClassFigures::zero();
        f.set(TrafficClass::Media, 3.0);
        f.set(TrafficClass::WeddingCritical, 2.0);
        assert_eq!(f.total(), 5.0);
        assert_eq!(f.non_critical(), 3.0);
    }
}
