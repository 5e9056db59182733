//! What a node knows of the fleet: members and how it sees them, its counters, the latest
//! node states, and the fleet view (per-region and per-pool aggregates, one coordinator per
//! region).

use crate::{CLASSES, MemberCounts, MemberHealth, Mesh, MeshStats, NodeIdentity, NodeState};
use foca::State;
use serde::Serialize;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::PoisonError;

/// Capacity and load of one pool name across a region's alive members.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct PoolAggregate {
    /// Members reporting this pool.
    pub members: usize,
    /// Sum of capacity (requests/s).
    pub capacity: f64,
    /// Sum of load (requests/s).
    pub load: f64,
    /// Sum of load per traffic class (requests/s), in [`wedsync_core::TrafficClass::ALL`] order.
    pub class_load: [f64; CLASSES],
}

/// Aggregates of one region, from the members believed alive.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionView {
    /// Alive members (including this node, when in the region).
    pub members: usize,
    /// Members whose state says healthy.
    pub healthy: usize,
    /// Sum of capacity (requests/s).
    pub capacity: f64,
    /// Sum of load (requests/s).
    pub load: f64,
    /// Most active weddings any member reports.
    pub active_weddings: u32,
    /// The member that issues region-wide decisions (rendezvous hashing over alive members).
    pub coordinator: String,
    /// Per pool name, summed over the members reporting it.
    pub pools: BTreeMap<String, PoolAggregate>,
}

/// What a node knows about the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct FleetView {
    /// Per region, by name.
    pub regions: BTreeMap<String, RegionView>,
}

/// The rendezvous-hashing winner for `region` among `members` (node ids): every node that
/// believes the same members alive picks the same coordinator.
pub fn coordinator<'a>(region: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let hasher = foldhash::fast::FixedState::with_seed(0x6d65_7368);
    members.into_iter().max_by_key(|node| {
        let score = hasher.hash_one((region, *node));
        (score, *node)
    })
}

fn health(state: State) -> MemberHealth {
    match state {
        State::Alive => MemberHealth::Alive,
        State::Suspect => MemberHealth::Suspect,
        State::Down => MemberHealth::Down,
    }
}

impl Mesh {
    /// Members believed alive (not counting this node); suspected members count as alive
    /// until declared down.
    pub fn alive_members(&self) -> impl Iterator<Item = &NodeIdentity> {
        self.foca.iter_members().map(|m| m.id())
    }

    /// Every member this node knows of (not counting itself), with how it sees it. Members
    /// declared down are remembered for a day.
    pub fn member_states(&self) -> impl Iterator<Item = (&NodeIdentity, MemberHealth)> {
        self.foca.iter_membership_state().map(|m| (m.id(), health(m.state())))
    }

    /// Members by state (this node not included).
    pub fn member_counts(&self) -> MemberCounts {
        let mut counts = MemberCounts::default();
        for (_, h) in self.member_states() {
            match h {
                MemberHealth::Alive => counts.alive += 1,
                MemberHealth::Suspect => counts.suspect += 1,
                MemberHealth::Down => counts.down += 1,
            }
        }
        counts
    }

    /// Membership updates and node states waiting to be piggybacked on SWIM messages.
    pub fn broadcast_backlog(&self) -> (usize, usize) {
        (self.foca.updates_backlog(), self.foca.custom_broadcast_backlog())
    }

    /// What the mesh counted since it started.
    pub fn stats(&self) -> MeshStats {
        let mut stats = self.outbox.stats.clone();
        stats.local_health = self.local_health;
        stats
    }

    /// The fleet as this node sees it: members believed alive (and itself), their latest
    /// states, per-region and per-pool aggregates and coordinators.
    pub fn fleet_view(&self) -> FleetView {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let me = self.identity();
        let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for id in std::iter::once(me).chain(self.alive_members()) {
            members.entry(id.region.as_str()).or_default().push(id.id.as_str());
        }
        let mut view = FleetView::default();
        for (region, nodes) in &members {
            let mut r = RegionView {
                members: nodes.len(),
                healthy: 0,
                capacity: 0.0,
                load: 0.0,
                active_weddings: 0,
                coordinator: coordinator(region, nodes.iter().copied()).unwrap_or_default().to_owned(),
                pools: BTreeMap::new(),
            };
            for node in nodes {
                let Some(s) = states.get(node) else { continue };
                r.healthy += usize::from(s.healthy);
                r.capacity += s.capacity;
                r.load += s.load;
                r.active_weddings = r.active_weddings.max(s.active_weddings);
                for pool in &s.pools {
                    // The name is cloned once per region, not once per member.
                    let agg = match r.pools.get_mut(pool.pool.as_str()) {
                        Some(agg) => agg,
                        None => r.pools.entry(pool.pool.clone()).or_default(),
                    };
                    agg.members += 1;
                    agg.capacity += pool.capacity;
                    agg.load += pool.load;
                    for (sum, x) in agg.class_load.iter_mut().zip(pool.class_load) {
                        *sum += f64::from(x);
                    }
                }
            }
            view.regions.insert((*region).to_owned(), r);
        }
        view
    }

    /// Membership updates and node states waiting to be passed on (SWIM's dissemination
    /// backlogs).
    pub fn backlog(&self) -> (usize, usize) {
        (self.foca.updates_backlog(), self.foca.custom_broadcast_backlog())
    }

    /// The latest state known for `node`.
    pub fn state_of(&self, node: &str) -> Option<NodeState> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner).get(node).cloned()
    }

    /// The version of the latest state known for `node` (0: none), without copying it.
    pub fn state_version_of(&self, node: &str) -> u64 {
        self.states.lock().unwrap_or_else(PoisonError::into_inner).get(node).map_or(0, |s| s.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_is_the_same_whatever_the_order() {
        let a = coordinator("eu-west", ["n1", "n2", "n3", "n4"]);
        let b = coordinator("eu-west", ["n4", "n3", "n1", "n2"]);
        assert_eq!(a, b);
        assert!(a.is_some());
        assert_eq!(coordinator("eu-west", std::iter::empty()), None);
        // Removing a non-coordinator keeps the coordinator.
        let winner = a.unwrap();
        let others: Vec<&str> = ["n1", "n2", "n3", "n4"].into_iter().filter(|n| *n == winner || *n != "n1").collect();
        assert_eq!(coordinator("eu-west", others.iter().copied()), Some(winner));
    }
}
