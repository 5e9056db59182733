//! Region failure: when every known member of a region is down or suspect, the coordinator of
//! the region best placed to absorb its load proposes a failover. Every node derives the same
//! proposals from the same view, and a proposal's id names the failure it answers, so two
//! coordinators proposing while their views disagree issue the same id and a consumer applies
//! it once. Whether the traffic may legally move there is the data-residency plugin's call.

use crate::{FleetView, MemberHealth, Mesh, NodeState, PoolFigures};
use serde::Serialize;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::time::Duration;
use wedsync_core::Timestamp;
use wedsync_core::TrafficClass;
#[cfg(doc)]
use wedsync_core::engine::Engine;
use wedsync_core::engine::PoolStatus;

/// A proposed failover of a dead region's traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailoverProposal {
    /// `failover:{failed}:{target}:{failure}`, where `failure` hashes the dead members'
    /// identities: the same failure always gets the same id.
    pub id: String,
    /// The region whose every member is down or suspect.
    pub failed_region: String,
    /// Members of it last known, all down or suspect.
    pub failed_members: usize,
    /// The region proposed to take its traffic: the one with the most spare capacity.
    pub target_region: String,
    /// The coordinator of the target region, the only node that issues the proposal.
    pub proposer: String,
    /// Whether this node is the proposer.
    pub issued_here: bool,
    /// The failed region's last known load (requests/s), from its members' gossiped state.
    pub load_to_move: f64,
    /// Spare capacity of the target region (requests/s).
    pub target_spare_capacity: f64,
}

/// This node's share of a failed region's load, for one pool.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverShare {
    /// The proposal's id.
    pub id: String,
    /// The failed region.
    pub failed_region: String,
    /// The pool (by name).
    pub pool: String,
    /// Requests/s this node should expect.
    pub load: f64,
}

/// For every failover proposal targeting this node's region: per pool name, the failed members'
/// last known load of that pool, split over this region's alive members that run the pool
/// (this node included).
pub fn failover_shares(mesh: &Mesh) -> Vec<FailoverShare> {
    let me = mesh.identity();
    let proposals: Vec<FailoverProposal> =
        failover_proposals(mesh).into_iter().filter(|p| p.target_region == me.region).collect();
    if proposals.is_empty() {
        return Vec::new();
    }
    // Read in place under one lock: cloning every member's state on every node every second
    // costs O(members²) across a large fleet.
    let states = mesh.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut shares = Vec::new();
    for proposal in proposals {
        let mut per_pool: BTreeMap<&str, f64> = BTreeMap::new();
        let failed = mesh
            .member_states()
            .filter(|(m, _)| m.region == proposal.failed_region)
            .filter_map(|(m, _)| states.get(&m.id))
            .filter(|s| s.region == proposal.failed_region);
        for state in failed {
            for pool in &state.pools {
                *per_pool.entry(pool.pool.as_str()).or_default() += pool.load;
            }
        }
        for (pool, load) in per_pool {
            let sharers = mesh
                .alive_members()
                .filter(|m| m.region == me.region)
                .filter(|m| states.get(&m.id).is_some_and(|s| s.pools.iter().any(|p| p.pool == pool)))
                .count()
                + 1;
            shares.push(FailoverShare {
                id: proposal.id.clone(),
                failed_region: proposal.failed_region.clone(),
                pool: pool.to_owned(),
                load: load / sharers as f64,
            });
        }
    }
    shares
}

/// Most pools described in one node state (the rest are summed into the node totals only).
pub const MAX_POOLS_IN_STATE: usize = 16;

/// The state a node gossips, from its engine's [`Engine::status`] (or the snapshot of it the
/// daemon's decision thread publishes): its pools' capacity, load and per-class demand, its
/// health (no pool holding on stale metrics) and `active_weddings`, the weddings active in its
/// region now ([`Engine::active_weddings`]). Node id, region and version are filled in by the
/// mesh.
pub fn node_state(status: &[PoolStatus], active_weddings: usize) -> NodeState {
    let mut pools = Vec::with_capacity(status.len().min(MAX_POOLS_IN_STATE));
    let (mut capacity, mut load, mut healthy) = (0.0, 0.0, true);
    for pool in status {
        let pool_capacity = f64::from(pool.available) * pool.spec.capacity_per_unit;
        capacity += pool_capacity;
        load += pool.load.max(0.0);
        healthy &= !pool.holding_stale;
        if pools.len() < MAX_POOLS_IN_STATE {
            let mut class_load = [0f32; TrafficClass::ALL.len()];
            for (slot, class) in class_load.iter_mut().zip(TrafficClass::ALL) {
                *slot = pool.demand.of(class).max(0.0) as f32;
            }
            pools.push(PoolFigures {
                pool: pool.spec.name.clone(),
                capacity: pool_capacity,
                load: pool.load.max(0.0),
                class_load,
            });
        }
    }
    NodeState {
        node: String::new(),
        region: String::new(),
        version: 0,
        capacity,
        load,
        healthy,
        active_weddings: u32::try_from(active_weddings).unwrap_or(u32::MAX),
        pools,
    }
}

/// A node republishes its state at least this often even when nothing changed, so a peer
/// that missed every broadcast still hears it between anti-entropy rounds.
pub const STATE_HEARTBEAT: Duration = Duration::from_secs(30);

/// Whether a node should publish `state` at `now`, given what it last published and when: when
/// it moved ([`state_changed`]), or on the [`STATE_HEARTBEAT`]. The daemon and the fleet
/// simulator both publish by this rule.
pub fn state_due(published: Option<&(NodeState, Timestamp)>, state: &NodeState, now: Timestamp) -> bool {
    published.is_none_or(|(old, at)| state_changed(old, state) || now.saturating_since(*at) >= STATE_HEARTBEAT)
}

/// Whether two states differ enough to be worth gossiping (1% of load or capacity, or any
/// change in health, weddings or pools).
pub fn state_changed(old: &NodeState, new: &NodeState) -> bool {
    let moved = |a: f64, b: f64| (a - b).abs() > 0.01 * a.abs().max(b.abs()).max(1.0);
    moved(old.capacity, new.capacity)
        || moved(old.load, new.load)
        || old.healthy != new.healthy
        || old.active_weddings != new.active_weddings
        || old.pools.len() != new.pools.len()
        || old.pools.iter().zip(&new.pools).any(|(a, b)| a.pool != b.pool || moved(a.capacity, b.capacity))
}

/// The failovers `mesh` derives now: one for every region it knows whose members are all down
/// or suspect (this node's own region never counts as failed).
pub fn failover_proposals(mesh: &Mesh) -> Vec<FailoverProposal> {
    let me = mesh.identity();
    let mut failed: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut alive_regions = std::collections::BTreeSet::new();
    alive_regions.insert(me.region.clone());
    for (member, health) in mesh.member_states() {
        match health {
            MemberHealth::Alive => {
                alive_regions.insert(member.region.clone());
            }
            MemberHealth::Suspect | MemberHealth::Down => {
                failed.entry(member.region.clone()).or_default().push((member.id.clone(), member.incarnation))
            }
        }
    }
    failed.retain(|region, _| !alive_regions.contains(region));
    if failed.is_empty() {
        // The usual case, asked every second on every node: no fleet view to build.
        return Vec::new();
    }
    let loads: BTreeMap<String, f64> = {
        let states = mesh.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failed.values().flatten().filter_map(|(node, _)| states.get(node).map(|s| (node.clone(), s.load))).collect()
    };
    proposals(&me.id, &failed, &loads, &mesh.fleet_view())
}

/// Proposals for every failed region. `failed` maps each region with no alive member to its
/// known down/suspect members as (node id, incarnation).
pub(crate) fn proposals(
    me: &str,
    failed: &BTreeMap<String, Vec<(String, u64)>>,
    loads: &BTreeMap<String, f64>,
    view: &FleetView,
) -> Vec<FailoverProposal> {
    let hasher = foldhash::fast::FixedState::with_seed(0x6661_696c);
    let mut out = Vec::new();
    for (region, members) in failed {
        if members.is_empty() || view.regions.contains_key(region) {
            continue;
        }
        let target = view
            .regions
            .iter()
            .map(|(name, r)| (name, r, r.capacity - r.load))
            .max_by(|a, b| a.2.total_cmp(&b.2).then_with(|| b.0.cmp(a.0)));
        let Some((target_region, target, spare)) = target else { continue };
        let load_to_move: f64 = members.iter().filter_map(|(node, _)| loads.get(node)).sum();
        let mut sorted = members.clone();
        sorted.sort();
        let failure = hasher.hash_one(&sorted);
        out.push(FailoverProposal {
            id: format!("failover:{region}:{target_region}:{failure:016x}"),
            failed_region: region.clone(),
            failed_members: members.len(),
            target_region: target_region.clone(),
            proposer: target.coordinator.clone(),
            issued_here: target.coordinator == me,
            load_to_move,
            target_spare_capacity: spare.max(0.0),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegionView;

    fn region(coordinator: &str, capacity: f64, load: f64) -> RegionView {
        RegionView {
            members: 2,
            healthy: 2,
            capacity,
            load,
            active_weddings: 0,
            coordinator: coordinator.into(),
            pools: BTreeMap::new(),
        }
    }

    #[test]
    fn a_state_is_due_when_new_when_it_moved_or_on_the_heartbeat() {
        let state = |load: f64| NodeState {
            node: "n".into(),
            region: "r".into(),
            version: 1,
            capacity: 1000.0,
            load,
            healthy: true,
            active_weddings: 0,
            pools: Vec::new(),
        };
        let at = Timestamp::from_nanos(5_000_000_000);
        let published = (state(100.0), at);
        assert!(state_due(None, &state(100.0), at), "nothing published yet");
        assert!(!state_due(Some(&published), &state(100.5), at.saturating_add(Duration::from_secs(29))), "under 1%");
        assert!(state_due(Some(&published), &state(102.0), at.saturating_add(Duration::from_secs(1))), "moved 2%");
        assert!(state_due(Some(&published), &state(100.0), at.saturating_add(STATE_HEARTBEAT)), "heartbeat");
    }

    #[test]
    fn the_region_with_most_spare_capacity_takes_over_and_ids_are_stable() {
        let mut view = FleetView::default();
        view.regions.insert("eu".into(), region("e1", 1000.0, 900.0));
        view.regions.insert("us".into(), region("u2", 1000.0, 200.0));
        let failed: BTreeMap<String, Vec<(String, u64)>> =
            [("ap".to_owned(), vec![("a2".to_owned(), 7), ("a1".to_owned(), 3)])].into();
        let states: BTreeMap<String, f64> = [("a1".to_owned(), 100.0), ("a2".to_owned(), 150.0)].into();
        let at_u2 = proposals("u2", &failed, &states, &view);
        let at_e1 = proposals("e1", &failed, &states, &view);
        assert_eq!(at_u2.len(), 1);
        let p = &at_u2[0];
        assert_eq!((p.failed_region.as_str(), p.target_region.as_str(), p.proposer.as_str()), ("ap", "us", "u2"));
        assert!(p.issued_here);
        assert!(!at_e1[0].issued_here, "only the target's coordinator issues it");
        assert_eq!(p.id, at_e1[0].id, "every node names the same failure the same way");
        assert_eq!(p.load_to_move, 250.0);
        assert_eq!(p.target_spare_capacity, 800.0);
        // Member order does not change the id; another failure (new incarnation) does.
        let reordered: BTreeMap<String, Vec<(String, u64)>> =
            [("ap".to_owned(), vec![("a1".to_owned(), 3), ("a2".to_owned(), 7)])].into();
        assert_eq!(proposals("u2", &reordered, &states, &view)[0].id, p.id);
        let later: BTreeMap<String, Vec<(String, u64)>> =
            [("ap".to_owned(), vec![("a1".to_owned(), 4), ("a2".to_owned(), 7)])].into();
        assert_ne!(proposals("u2", &later, &states, &view)[0].id, p.id);
        // A region still in the view (someone alive there) is not failed.
        view.regions.insert("ap".into(), region("a3", 10.0, 0.0));
        assert!(proposals("u2", &failed, &states, &view).is_empty());
    }
}
