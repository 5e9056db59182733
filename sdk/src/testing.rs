//! A native test harness: build a [`Setup`] and [`Round`]s with sensible defaults, run a
//! [`Policy`] with plain `cargo test` (no WASM runtime), and look at its verdict and logs.
//!
//! ```
//! use wedsync_sdk::testing::{Harness, SetupBuilder};
//! use wedsync_sdk::{PluginInfo, Policy, Round, Setup, Verdict};
//!
//! struct Floor(u32);
//!
//! impl Policy for Floor {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::builder("floor", "0.1.0").build()
//!     }
//!     fn configure(setup: &Setup) -> Result<Self, String> {
//!         Ok(Floor(if setup.config.contains("big") { 10 } else { 3 }))
//!     }
//!     fn decide(&mut self, round: &Round) -> Verdict {
//!         wedsync_sdk::log::info!("epoch {}", round.epoch);
//!         let mut v = Verdict::builder();
//!         for p in &round.pools {
//!             v.raise_target(p.pool, self.0);
//!         }
//!         v.build()
//!     }
//! }
//!
//! let setup = SetupBuilder::new().region("eu-west", "Europe/London").pool("checkout", "eu-west").build();
//! let mut h = Harness::<Floor>::configure(setup).unwrap();
//! let round = h.round().epoch(7).units("checkout", 2).build();
//! let verdict = h.decide(&round);
//! assert_eq!(verdict.raised_target(0), Some(3));
//! assert_eq!(h.logs()[0].message, "epoch 7");
//! ```

use std::fmt;

use crate::calendar::local_time;
use crate::log::{self, LogRecord};
use crate::{
    ClassFigures, Failover, LocalTime, MetricsSummary, PluginInfo, Policy, PoolId, PoolInfo, PoolState, Proposal,
    RegionInfo, RegionView, Round, Setup, TrafficClass, Verdict, Wedding,
};

/// Names a pool in the builders: by name (`"checkout"`) or by id (`0u32`).
pub trait PoolRef {
    /// The pool's id in `setup`; panics (a test failure) when there is no such pool.
    fn pool_id(&self, setup: &Setup) -> PoolId;
}

impl PoolRef for &str {
    fn pool_id(&self, setup: &Setup) -> PoolId {
        match setup.pool_by_name(self) {
            Some((id, _)) => id,
            None => panic!("no pool named {self:?} in the setup"),
        }
    }
}

impl PoolRef for PoolId {
    fn pool_id(&self, setup: &Setup) -> PoolId {
        if setup.pool(*self).is_none() {
            panic!("no pool with id {self} in the setup ({} pools)", setup.pools.len());
        }
        *self
    }
}

/// The defaults a new pool gets from [`SetupBuilder::pool`]: min 1, max 100, protected floor 4,
/// 100 requests/s per unit at 70% utilization, every class, no placements, up to 70% on spot.
pub fn default_pool(name: &str, region: u32) -> PoolInfo {
    PoolInfo {
        name: name.to_owned(),
        region,
        min: 1,
        max: 100,
        protected_floor: 4,
        capacity_per_unit: 100.0,
        target_utilization: 0.7,
        classes: crate::ALL_CLASSES.to_vec(),
        placements: Vec::new(),
        spot_max_fraction: 0.7,
    }
}

/// Builds a [`Setup`]. Regions are added on first mention; the agent's region is the first one
/// unless [`SetupBuilder::local_region`] says otherwise.
#[derive(Debug, Clone)]
pub struct SetupBuilder {
    setup: Setup,
    local_region: Option<String>,
}

impl Default for SetupBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SetupBuilder {
    /// Node `test-node`, no regions or pools, config `{}`.
    pub fn new() -> Self {
        SetupBuilder {
            setup: Setup {
                node: "test-node".into(),
                region: 0,
                regions: Vec::new(),
                pools: Vec::new(),
                config: "{}".into(),
            },
            local_region: None,
        }
    }

    /// The node id.
    pub fn node(mut self, node: &str) -> Self {
        self.setup.node = node.to_owned();
        self
    }

    /// Adds a region (or sets the time zone of one already added).
    pub fn region(mut self, name: &str, time_zone: &str) -> Self {
        let id = self.region_id(name);
        self.setup.regions[id as usize].time_zone = time_zone.to_owned();
        self
    }

    /// The agent's own region (added if new).
    pub fn local_region(mut self, name: &str) -> Self {
        self.region_id(name);
        self.local_region = Some(name.to_owned());
        self
    }

    /// Adds a pool with [`default_pool`]'s figures, homed in `region` (added if new).
    pub fn pool(self, name: &str, region: &str) -> Self {
        self.pool_with(name, region, |_| {})
    }

    /// Adds a pool and lets `edit` change its figures.
    pub fn pool_with(mut self, name: &str, region: &str, edit: impl FnOnce(&mut PoolInfo)) -> Self {
        let region = self.region_id(region);
        let mut pool = default_pool(name, region);
        edit(&mut pool);
        self.setup.pools.push(pool);
        self
    }

    /// Other regions the named pool may be placed in (added if new).
    pub fn placements(mut self, pool: &str, regions: &[&str]) -> Self {
        let ids: Vec<u32> = regions.iter().map(|r| self.region_id(r)).collect();
        match self.setup.pools.iter_mut().find(|p| p.name == pool) {
            Some(p) => p.placements = ids,
            None => panic!("placements for unknown pool {pool:?}: add it first"),
        }
        self
    }

    /// The plugin's config section, as JSON.
    pub fn config(mut self, json: impl Into<String>) -> Self {
        self.setup.config = json.into();
        self
    }

    /// The setup. With no region named, one region `local` is added.
    pub fn build(mut self) -> Setup {
        if self.setup.regions.is_empty() {
            self.region_id("local");
        }
        if let Some(name) = self.local_region.take() {
            self.setup.region = self.region_id(&name);
        }
        self.setup
    }

    fn region_id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.setup.region_id(name) {
            return id;
        }
        self.setup.regions.push(RegionInfo { name: name.to_owned(), time_zone: String::new() });
        u32::try_from(self.setup.regions.len() - 1).unwrap_or(u32::MAX)
    }
}

/// The default round time: Wednesday 2026-06-10 12:00 local (UTC offset 0).
pub fn default_local_time() -> LocalTime {
    local_time(2026, 6, 10, 12, 0)
}

/// Builds a [`Round`] for a setup. Every pool starts serving `max(min, 1)` units with no load,
/// and the engine proposes to keep them, in the pool's home region, admitting everything, no spot.
#[derive(Debug, Clone)]
pub struct RoundBuilder<'a> {
    setup: &'a Setup,
    round: Round,
}

impl<'a> RoundBuilder<'a> {
    /// A quiet round at [`default_local_time`], epoch 1.
    pub fn new(setup: &'a Setup) -> Self {
        let time = default_local_time();
        let mut pools = Vec::with_capacity(setup.pools.len());
        let mut proposals = Vec::with_capacity(setup.pools.len());
        for (i, info) in setup.pools.iter().enumerate() {
            let pool = u32::try_from(i).unwrap_or(u32::MAX);
            let units = info.min.max(1);
            pools.push(PoolState {
                pool,
                serving: units,
                target: units,
                load: 0.0,
                demand: ClassFigures::zero(),
                protected: false,
                spike: false,
                stale: false,
                local_time: time,
            });
            proposals.push(Proposal {
                pool,
                from: units,
                to: units,
                placement: info.region,
                admission: ClassFigures::uniform(1.0),
                spot_units: 0,
            });
        }
        RoundBuilder {
            setup,
            round: Round {
                epoch: 1,
                unix_ms: 1_781_092_800_000, // 2026-06-10T12:00:00Z
                local_time: time,
                metrics: MetricsSummary { cpu_utilization: 0.1, memory_utilization: 0.2, samples_per_second: 1000.0 },
                pools,
                proposals,
                weddings: Vec::new(),
                fleet: None,
                failovers: Vec::new(),
            },
        }
    }

    /// The round number.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.round.epoch = epoch;
        self
    }

    /// The round's wall clock, Unix ms (local times are set apart, with [`Self::at`]).
    pub fn unix_ms(mut self, unix_ms: i64) -> Self {
        self.round.unix_ms = unix_ms;
        self
    }

    /// Local calendar time for the agent's region and every pool (weekday worked out).
    pub fn at(self, year: i32, month: u8, day: u8, hour: u8, minute: u8) -> Self {
        self.local_time(local_time(year, month, day, hour, minute))
    }

    /// Local calendar time for the agent's region and every pool.
    pub fn local_time(mut self, time: LocalTime) -> Self {
        self.round.local_time = time;
        for p in &mut self.round.pools {
            p.local_time = time;
        }
        self
    }

    /// Local calendar time in one pool's region.
    pub fn pool_local_time(mut self, pool: impl PoolRef, time: LocalTime) -> Self {
        self.pool_mut(pool).local_time = time;
        self
    }

    /// The pool serves and targets `units`, and the engine proposes to keep them.
    pub fn units(mut self, pool: impl PoolRef, units: u32) -> Self {
        let id = pool.pool_id(self.setup);
        let state = self.pool_mut(id);
        state.serving = units;
        state.target = units;
        let proposal = self.proposal_mut(id);
        proposal.from = units;
        proposal.to = units;
        self
    }

    /// The engine proposes `to` units for the pool (from its current target).
    pub fn propose(mut self, pool: impl PoolRef, to: u32) -> Self {
        self.proposal_mut(pool).to = to;
        self
    }

    /// The engine would place the pool's capacity in `region` (by name).
    pub fn place(mut self, pool: impl PoolRef, region: &str) -> Self {
        let Some(region) = self.setup.region_id(region) else { panic!("no region named {region:?} in the setup") };
        self.proposal_mut(pool).placement = region;
        self
    }

    /// The engine would buy `units` of the proposal on spot.
    pub fn spot_units(mut self, pool: impl PoolRef, units: u32) -> Self {
        self.proposal_mut(pool).spot_units = units;
        self
    }

    /// The engine proposes to admit `share` of `class`.
    pub fn admission(mut self, pool: impl PoolRef, class: TrafficClass, share: f64) -> Self {
        self.proposal_mut(pool).admission.set(class, share);
        self
    }

    /// Demand of one class on the pool; the pool's load becomes the sum of its demand.
    pub fn demand(mut self, pool: impl PoolRef, class: TrafficClass, rps: f64) -> Self {
        let state = self.pool_mut(pool);
        state.demand.set(class, rps);
        state.load = state.demand.total();
        self
    }

    /// The engine's load estimate for the pool (the per-class demand is left as it is).
    pub fn load(mut self, pool: impl PoolRef, rps: f64) -> Self {
        self.pool_mut(pool).load = rps;
        self
    }

    /// Marks the pool protected (a wedding is active in its region) or not.
    pub fn protected(mut self, pool: impl PoolRef, protected: bool) -> Self {
        self.pool_mut(pool).protected = protected;
        self
    }

    /// Marks a spike on the pool.
    pub fn spike(mut self, pool: impl PoolRef, spike: bool) -> Self {
        self.pool_mut(pool).spike = spike;
        self
    }

    /// Marks the pool's metrics stale.
    pub fn stale(mut self, pool: impl PoolRef, stale: bool) -> Self {
        self.pool_mut(pool).stale = stale;
        self
    }

    /// Host figures.
    pub fn metrics(mut self, metrics: MetricsSummary) -> Self {
        self.round.metrics = metrics;
        self
    }

    /// Adds an active wedding in the agent's region (from an hour ago to eight hours on) and
    /// marks the pools homed in the agent's region protected, as the engine would.
    pub fn wedding(mut self, guests: u32) -> Self {
        let now = self.round.unix_ms;
        self.round.weddings.push(Wedding { guests, start_unix_ms: now - 3_600_000, end_unix_ms: now + 8 * 3_600_000 });
        let home = self.setup.region;
        for state in &mut self.round.pools {
            if self.setup.pool(state.pool).is_some_and(|p| p.region == home) {
                state.protected = true;
            }
        }
        self
    }

    /// The fleet's view of the agent's region.
    pub fn fleet(mut self, view: RegionView) -> Self {
        self.round.fleet = Some(view);
        self
    }

    /// A failover proposal: `load` requests/s move from `failed` to `target` (region names),
    /// taken by `pool` when it is one of the agent's pools.
    pub fn failover(mut self, id: &str, failed: &str, target: &str, load: f64, pool: Option<&str>) -> Self {
        let pool = pool.map(|p| p.pool_id(self.setup));
        self.round.failovers.push(Failover {
            id: id.to_owned(),
            failed_region: failed.to_owned(),
            target_region: target.to_owned(),
            load,
            pool,
        });
        self
    }

    /// Any other change.
    pub fn with(mut self, edit: impl FnOnce(&mut Round)) -> Self {
        edit(&mut self.round);
        self
    }

    /// The round.
    pub fn build(self) -> Round {
        self.round
    }

    fn pool_mut(&mut self, pool: impl PoolRef) -> &mut PoolState {
        let id = pool.pool_id(self.setup);
        match self.round.pools.iter_mut().find(|p| p.pool == id) {
            Some(p) => p,
            None => panic!("pool {id} has no state in this round"),
        }
    }

    fn proposal_mut(&mut self, pool: impl PoolRef) -> &mut Proposal {
        let id = pool.pool_id(self.setup);
        match self.round.proposals.iter_mut().find(|p| p.pool == id) {
            Some(p) => p,
            None => panic!("pool {id} has no proposal in this round"),
        }
    }
}

/// Runs a [`Policy`] natively, the way the agent calls the component: configure once, then one
/// call per round; the policy's log records are collected.
pub struct Harness<P: Policy> {
    policy: P,
    setup: Setup,
    logs: Vec<LogRecord>,
}

impl<P: Policy> fmt::Debug for Harness<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness").field("setup", &self.setup).field("logs", &self.logs).finish_non_exhaustive()
    }
}

impl<P: Policy> Harness<P> {
    /// The policy's description.
    pub fn describe() -> PluginInfo {
        P::describe()
    }

    /// Configures the policy; `Err` is the message the agent would report at load.
    pub fn configure(setup: Setup) -> Result<Self, String> {
        let _ = log::take_native();
        let policy = P::configure(&setup)?;
        Ok(Harness { policy, setup, logs: log::take_native() })
    }

    /// Configures with `config` as the plugin's JSON section of an otherwise unchanged setup.
    pub fn configure_with(setup: &Setup, config: &str) -> Result<Self, String> {
        let mut setup = setup.clone();
        config.clone_into(&mut setup.config);
        Self::configure(setup)
    }

    /// The setup it was configured with.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The policy's state.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// Starts a round for this harness's setup.
    pub fn round(&self) -> RoundBuilder<'_> {
        RoundBuilder::new(&self.setup)
    }

    /// One round.
    pub fn decide(&mut self, round: &Round) -> Verdict {
        let verdict = self.policy.decide(round);
        self.logs.extend(log::take_native());
        verdict
    }

    /// Everything the policy logged so far.
    pub fn logs(&self) -> &[LogRecord] {
        &self.logs
    }

    /// Takes the policy's log records.
    pub fn take_logs(&mut self) -> Vec<LogRecord> {
        std::mem::take(&mut self.logs)
    }

    /// Some log record contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs.iter().any(|r| r.message.contains(text))
    }
}

/// Checks a description the way the agent does at load: name `[a-z0-9-]`, 1–64 bytes; a
/// version; at least one hook.
pub fn check_info(info: &PluginInfo) -> Result<(), String> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(format!("plugin name {:?} must be 1-64 characters of [a-z0-9-]", info.name));
    }
    if info.version.is_empty() {
        return Err("plugin version is empty".into());
    }
    if info.hooks.is_empty() {
        return Err("plugin asks for no hooks".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::Hooks;

    struct Echo {
        floor: u32,
    }

    impl Policy for Echo {
        fn describe() -> PluginInfo {
            PluginInfo::builder("echo", "0.0.1").build()
        }
        fn configure(setup: &Setup) -> Result<Self, String> {
            if setup.config == "bad" {
                return Err("bad config".into());
            }
            log::info("configured");
            Ok(Echo { floor: setup.pools.len() as u32 })
        }
        fn decide(&mut self, round: &Round) -> Verdict {
            crate::log::debug!("round {}", round.epoch);
            let mut v = Verdict::builder();
            for p in &round.proposals {
                if p.is_scale_down() {
                    v.veto_scale_down(p.pool, "no");
                }
                v.raise_target(p.pool, self.floor);
            }
            v.build()
        }
    }

    #[test]
    fn setup_and_round_builders() {
        let setup = SetupBuilder::new()
            .region("eu-west", "Europe/London")
            .pool("a", "eu-west")
            .pool_with("b", "us-east", |p| p.min = 3)
            .placements("a", &["eu-central"])
            .local_region("us-east")
            .config(r#"{"x":1}"#)
            .build();
        assert_eq!(setup.regions.len(), 3);
        assert_eq!(setup.local_region_name(), "us-east");
        assert_eq!(setup.pool_by_name("b").map(|(i, p)| (i, p.min)), Some((1, 3)));
        assert_eq!(setup.pool(0).unwrap().placements, vec![2]);
        assert_eq!(setup.pools_in_region(0).count(), 1);

        let round = RoundBuilder::new(&setup)
            .at(2026, 11, 28, 18, 30)
            .units("a", 5)
            .propose("a", 3)
            .demand(1u32, TrafficClass::Media, 40.0)
            .demand(1u32, TrafficClass::WeddingCritical, 10.0)
            .wedding(300)
            .failover("f1", "eu-west", "us-east", 120.0, Some("b"))
            .build();
        assert!(round.local_time.is_saturday());
        assert_eq!(round.pool_state(0).unwrap().serving, 5);
        assert!(round.proposal(0).unwrap().is_scale_down());
        assert_eq!(round.pool_state(1).unwrap().load, 50.0);
        assert!(round.pool_state(1).unwrap().protected && !round.pool_state(0).unwrap().protected);
        assert_eq!(round.pool_state(1).unwrap().serving, 3);
        assert_eq!(round.failovers[0].pool, Some(1));
        assert!(round.wedding_active());
        assert_eq!(round.largest_wedding_guests(), 300);
    }

    #[test]
    fn harness_runs_a_policy_and_collects_logs() {
        let setup = SetupBuilder::new().pool("a", "eu").pool("b", "eu").build();
        assert_eq!(Harness::<Echo>::configure_with(&setup, "bad").unwrap_err(), "bad config");
        let mut h = Harness::<Echo>::configure(setup).unwrap();
        assert!(h.logged("configured"));
        let round = h.round().units("a", 4).propose("a", 2).epoch(9).build();
        let v = h.decide(&round);
        assert!(v.vetoes_scale_down(0) && !v.vetoes_scale_down(1));
        assert_eq!(v.raised_target(1), Some(2));
        assert!(h.logged("round 9"));
        assert_eq!(h.take_logs().len(), 2);
        assert!(h.logs().is_empty());
        assert_eq!(h.policy().floor, 2);
        check_info(&Harness::<Echo>::describe()).unwrap();
    }

    #[test]
    fn check_info_rejects_bad_names() {
        let mut info = PluginInfo::builder("Bad Name", "1").build();
        assert!(check_info(&info).is_err());
        info.name = "ok-1".into();
        info.hooks = Hooks::empty();
        assert!(check_info(&info).is_err());
    }

    #[test]
    #[should_panic(expected = "no pool named")]
    fn unknown_pool_is_a_test_failure() {
        let setup = SetupBuilder::new().pool("a", "eu").build();
        let _ = RoundBuilder::new(&setup).units("zzz", 1);
    }
}
