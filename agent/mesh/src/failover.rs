//! Region failure: when every known member of a region is down or suspect, the coordinator of
//! the region best placed to absorb its load proposes a failover. Every node derives the same
//! proposals from the same view, and a proposal's id names the failure it answers, so two
//! coordinators proposing while their views disagree issue the same id and a consumer applies
//! it once. Whether the traffic may legally move there is the data-residency plugin's call.

use crate::{FleetView, MemberHealth, Mesh, NodeState};
use serde::Serialize;
use std::collections::BTreeMap;
use std::hash::BuildHasher;

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
    let states: BTreeMap<String, NodeState> =
        failed.values().flatten().filter_map(|(node, _)| mesh.state_of(node).map(|s| (node.clone(), s))).collect();
    proposals(&me.id, &failed, &states, &mesh.fleet_view())
}

/// Proposals for every failed region. `failed` maps each region with no alive member to its
/// known down/suspect members as (node id, incarnation).
pub(crate) fn proposals(
    me: &str,
    failed: &BTreeMap<String, Vec<(String, u64)>>,
    states: &BTreeMap<String, NodeState>,
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
        let load_to_move: f64 = members.iter().filter_map(|(node, _)| states.get(node)).map(|s| s.load).sum();
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
    fn the_region_with_most_spare_capacity_takes_over_and_ids_are_stable() {
        let mut view = FleetView::default();
        view.regions.insert("eu".into(), region("e1", 1000.0, 900.0));
        view.regions.insert("us".into(), region("u2", 1000.0, 200.0));
        let failed: BTreeMap<String, Vec<(String, u64)>> =
            [("ap".to_owned(), vec![("a2".to_owned(), 7), ("a1".to_owned(), 3)])].into();
        let mut states = BTreeMap::new();
        for (node, load) in [("a1", 100.0), ("a2", 150.0)] {
            let state = NodeState {
                node: node.into(),
                region: "ap".into(),
                version: 1,
                capacity: 0.0,
                load,
                healthy: true,
                active_weddings: 0,
                pools: Vec::new(),
            };
            states.insert(node.to_owned(), state);
        }
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
