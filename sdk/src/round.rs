//! One decision round as a plugin sees it: a record per pool.
//!
//! The host sends the pools as columns (`pool-table` in the WIT: lists of numbers cross the
//! component boundary in one copy each, where records cross field by field). [`Round::from_wire`]
//! turns them into one [`PoolState`] and one [`Proposal`] per pool and works out calendar times,
//! so plugins read `round.pools[i].demand` rather than index arithmetic.

use crate::bindings::wedsync::policy::types as wire;
use crate::{ClassFigures, Failover, MetricsSummary, PoolId, RegionId, RegionView, Wedding};

/// Day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

/// Calendar time in a region's own time zone (worked out from the round's Unix time and the
/// region's UTC offset, which the host sends; the plugin has no time-zone database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalTime {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
    /// Day of the week.
    pub weekday: Weekday,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Offset from UTC in minutes (e.g. 330 for Asia/Kolkata).
    pub utc_offset_minutes: i32,
}

/// A pool as the engine sees it this round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolState {
    /// Which pool (its index in `setup.pools`).
    pub pool: PoolId,
    /// Units serving now.
    pub serving: u32,
    /// Units asked for before this round.
    pub target: u32,
    /// The engine's load estimate, requests per second.
    pub load: f64,
    /// The latest demand per class, requests per second.
    pub demand: ClassFigures,
    /// A wedding is active in its region: the protected floor and the reserve hold.
    pub protected: bool,
    /// A load spike is being followed.
    pub spike: bool,
    /// Metrics are stale: the engine holds and never scales in blind.
    pub stale: bool,
    /// Calendar time in the pool's region.
    pub local_time: LocalTime,
}

/// The engine's proposal for one pool this round, before plugins and clamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    /// Which pool.
    pub pool: PoolId,
    /// Units now (the pool's target before the round).
    pub from: u32,
    /// Units the engine proposes.
    pub to: u32,
    /// Where the engine would place the capacity (the cheapest allowed region).
    pub placement: RegionId,
    /// Admission per class it proposes, each in [0, 1] (1 = admit all).
    pub admission: ClassFigures,
    /// Units of `to` the engine would buy on spot.
    pub spot_units: u32,
}

/// One decision round's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// Decision round number (monotonic).
    pub epoch: u64,
    /// Wall-clock time of the round, Unix milliseconds (UTC).
    pub unix_ms: i64,
    /// Calendar time in the agent's region.
    pub local_time: LocalTime,
    /// Host figures.
    pub metrics: MetricsSummary,
    /// Every pool's state, in pool-id order.
    pub pools: Vec<PoolState>,
    /// The engine's proposal per pool, in pool-id order.
    pub proposals: Vec<Proposal>,
    /// Weddings active in the agent's region.
    pub weddings: Vec<Wedding>,
    /// The agent's region in the fleet view (absent when the mesh is off).
    pub fleet: Option<RegionView>,
    /// Failovers proposed this round.
    pub failovers: Vec<Failover>,
}

fn figures(values: &[f64], pool: usize) -> ClassFigures {
    let at = |class: usize| values.get(pool * 5 + class).copied().unwrap_or(0.0);
    ClassFigures {
        wedding_critical: at(0),
        wedding_planning: at(1),
        registration: at(2),
        media: at(3),
        background: at(4),
    }
}

fn push_figures(out: &mut Vec<f64>, f: &ClassFigures) {
    out.extend_from_slice(&[f.wedding_critical, f.wedding_planning, f.registration, f.media, f.background]);
}

impl Round {
    /// The round as the host sent it, one record per pool. Columns shorter than the pool count
    /// (which a correct host never sends) read as zeros rather than failing the round.
    pub fn from_wire(wire: wire::Round) -> Round {
        let mut round = Round {
            epoch: 0,
            unix_ms: 0,
            local_time: crate::calendar::civil_time(0, 0),
            metrics: MetricsSummary { cpu_utilization: 0.0, memory_utilization: 0.0, samples_per_second: 0.0 },
            pools: Vec::new(),
            proposals: Vec::new(),
            weddings: Vec::new(),
            fleet: None,
            failovers: Vec::new(),
        };
        round.refill_from_wire(wire);
        round
    }

    /// [`Round::from_wire`] into `self`, keeping its allocations: the export glue keeps one
    /// `Round` per plugin instance, so a round costs the plugin no allocation of its own.
    pub fn refill_from_wire(&mut self, wire: wire::Round) {
        let t = &wire.pools;
        let n = t.serving.len();
        let pools = &mut self.pools;
        let proposals = &mut self.proposals;
        pools.clear();
        proposals.clear();
        pools.reserve(n);
        proposals.reserve(n);
        // Pools mostly share one region: work each offset's calendar time out once.
        let mut last: Option<(i32, LocalTime)> = None;
        for i in 0..n {
            let id = PoolId::try_from(i).unwrap_or(PoolId::MAX);
            let u32_at = |column: &[u32]| column.get(i).copied().unwrap_or(0);
            let offset = t.utc_offset_minutes.get(i).copied().unwrap_or(0);
            let local_time = match last {
                Some((o, time)) if o == offset => time,
                _ => {
                    let time = crate::calendar::civil_time(wire.unix_ms, offset);
                    last = Some((offset, time));
                    time
                }
            };
            let status = t.status.get(i).copied().unwrap_or(wire::PoolStatus::empty());
            let target = u32_at(&t.target);
            pools.push(PoolState {
                pool: id,
                serving: t.serving[i],
                target,
                load: t.load.get(i).copied().unwrap_or(0.0),
                demand: figures(&t.demand, i),
                protected: status.contains(wire::PoolStatus::PROTECTED),
                spike: status.contains(wire::PoolStatus::SPIKE),
                stale: status.contains(wire::PoolStatus::STALE),
                local_time,
            });
            proposals.push(Proposal {
                pool: id,
                from: target,
                to: t.proposed.get(i).copied().unwrap_or(target),
                placement: u32_at(&t.placement),
                admission: figures(&t.admission, i),
                spot_units: u32_at(&t.spot_units),
            });
        }
        self.epoch = wire.epoch;
        self.unix_ms = wire.unix_ms;
        self.local_time = crate::calendar::civil_time(wire.unix_ms, wire.utc_offset_minutes);
        self.metrics = wire.metrics;
        self.weddings = wire.weddings;
        self.fleet = wire.fleet;
        self.failovers = wire.failovers;
    }

    /// The round as the host would send it (for tools and tests of the wire form). Pools are
    /// written in pool-id order; calendar times travel as UTC offsets.
    pub fn to_wire(&self) -> wire::Round {
        let n = self.pools.len();
        let mut t = wire::PoolTable {
            serving: Vec::with_capacity(n),
            target: Vec::with_capacity(n),
            load: Vec::with_capacity(n),
            demand: Vec::with_capacity(n * 5),
            status: Vec::with_capacity(n),
            utc_offset_minutes: Vec::with_capacity(n),
            proposed: Vec::with_capacity(n),
            placement: Vec::with_capacity(n),
            admission: Vec::with_capacity(n * 5),
            spot_units: Vec::with_capacity(n),
        };
        let mut pools: Vec<&PoolState> = self.pools.iter().collect();
        pools.sort_by_key(|p| p.pool);
        for p in pools {
            t.serving.push(p.serving);
            t.target.push(p.target);
            t.load.push(p.load);
            push_figures(&mut t.demand, &p.demand);
            let mut status = wire::PoolStatus::empty();
            status.set(wire::PoolStatus::PROTECTED, p.protected);
            status.set(wire::PoolStatus::SPIKE, p.spike);
            status.set(wire::PoolStatus::STALE, p.stale);
            t.status.push(status);
            t.utc_offset_minutes.push(p.local_time.utc_offset_minutes);
            let proposal = self.proposal(p.pool).copied().unwrap_or(Proposal {
                pool: p.pool,
                from: p.target,
                to: p.target,
                placement: 0,
                admission: ClassFigures::uniform(1.0),
                spot_units: 0,
            });
            t.proposed.push(proposal.to);
            t.placement.push(proposal.placement);
            push_figures(&mut t.admission, &proposal.admission);
            t.spot_units.push(proposal.spot_units);
        }
        wire::Round {
            epoch: self.epoch,
            unix_ms: self.unix_ms,
            utc_offset_minutes: self.local_time.utc_offset_minutes,
            metrics: self.metrics,
            pools: t,
            weddings: self.weddings.clone(),
            fleet: self.fleet,
            failovers: self.failovers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SetupBuilder;

    #[test]
    fn the_wire_form_round_trips() {
        let setup = SetupBuilder::new()
            .region("eu-west", "Europe/London")
            .region("ap-south", "Asia/Kolkata")
            .pool("checkout", "eu-west")
            .pool("media", "ap-south")
            .build();
        let mut round = crate::testing::RoundBuilder::new(&setup)
            .units("checkout", 3)
            .units("media", 7)
            .demand("media", crate::TrafficClass::Media, 420.0)
            .protected("checkout", true)
            .build();
        // The wire carries offsets; calendar times are worked out from the Unix time.
        round.local_time = crate::calendar::civil_time(round.unix_ms, 60);
        for p in &mut round.pools {
            let offset = if p.pool == 1 { 330 } else { 60 };
            p.local_time = crate::calendar::civil_time(round.unix_ms, offset);
        }
        round.proposals[1].to = 9;
        round.proposals[1].admission.media = 0.5;
        let back = Round::from_wire(round.to_wire());
        assert_eq!(back, round);
        assert_eq!(back.pools[1].local_time.hour, round.pools[0].local_time.hour + 4);
    }

    #[test]
    fn a_refilled_round_is_the_new_round_whatever_the_old_one_held() {
        let setup = SetupBuilder::new()
            .region("eu-west", "UTC")
            .pool("a", "eu-west")
            .pool("b", "eu-west")
            .pool("c", "eu-west")
            .build();
        let big = crate::testing::RoundBuilder::new(&setup).units("a", 3).wedding(200).protected("b", true).build();
        let mut small = crate::testing::RoundBuilder::new(&setup).units("c", 9).build();
        small.pools.truncate(1);
        small.proposals.truncate(1);
        let mut reused = Round::from_wire(big.to_wire());
        let capacity = reused.pools.capacity();
        reused.refill_from_wire(small.to_wire());
        assert_eq!(reused, Round::from_wire(small.to_wire()));
        assert_eq!(reused.pools.len(), 1);
        assert!(reused.weddings.is_empty());
        assert_eq!(reused.pools.capacity(), capacity, "the pools' buffer is kept");
        reused.refill_from_wire(big.to_wire());
        assert_eq!(reused, Round::from_wire(big.to_wire()));
    }

    #[test]
    fn short_columns_read_as_zeros() {
        let mut wire = Round::from_wire(
            crate::testing::RoundBuilder::new(
                &SetupBuilder::new().region("eu-west", "UTC").pool("a", "eu-west").pool("b", "eu-west").build(),
            )
            .build()
            .to_wire(),
        )
        .to_wire();
        wire.pools.demand.truncate(3);
        wire.pools.proposed.clear();
        let round = Round::from_wire(wire);
        assert_eq!(round.pools.len(), 2);
        assert_eq!(round.pools[1].demand, ClassFigures::zero());
        assert_eq!(round.proposals[1].to, round.pools[1].target);
    }
}
