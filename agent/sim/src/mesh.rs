//! The mesh a fleet run gossips over, behind one trait so the same run drives either
//!
//! - [`VirtualMesh`]: the sans-IO `wedsync-mesh` code in the mesh crate's seeded virtual-time
//!   simulator over a simulated WAN, in this thread (`--virtual`; deterministic; 1,000 nodes), or
//! - the daemon's real mesh: one QUIC endpoint per node on loopback with certificates from a
//!   fleet CA, each driven by the agent's own mesh task (the daemon implements this trait).
//!
//! Times are scenario time: a real mesh's clock runs at the run's speed, so its timers and the
//! figures it reports are in the same seconds as the scenario.

use wedsync_core::Timestamp;
use wedsync_mesh::sim::{Network, Simulator};
use wedsync_mesh::{FailoverShare, MeshConfig, NodeState};

/// The fleet's mesh as a run sees it: node `i` is the `i`-th member the mesh was made with.
pub trait FleetMesh {
    /// What the mesh is, for the report (for example "QUIC on loopback, 6 endpoints").
    fn describe(&self) -> String;

    /// Lets the mesh reach scenario time `now`: a virtual mesh runs its events up to it; a real
    /// one waits until its clock gets there.
    fn advance(&mut self, now: Timestamp);

    /// The mesh's own now (a real mesh's clock can be ahead of a run that fell behind).
    fn now(&self) -> Timestamp;

    /// Stops node `i` abruptly, as a crash would: no goodbye.
    fn kill(&mut self, i: usize);

    /// Starts killed node `i` again (a new incarnation) and has it rejoin through node `seed`.
    fn restart(&mut self, i: usize, seed: usize);

    /// Node `i`'s state now. The mesh publishes it as the daemon does: when it moved, else on
    /// the heartbeat.
    fn offer_state(&mut self, i: usize, state: NodeState);

    /// Node `i`'s shares of failed regions' load, as its mesh computes them now.
    fn failover_shares(&mut self, i: usize) -> Vec<FailoverShare>;

    /// Whether every running node sees exactly the other running nodes alive.
    fn converged(&self) -> bool;

    /// Whether every running node computes the same coordinator for every region.
    fn coordinators_agree(&self) -> bool;

    /// Each region's coordinator as the first running node sees it.
    fn coordinators(&self) -> Option<Vec<(String, String)>>;

    /// When the last running node (other than `victim`) saw `victim` down, at or after `since`;
    /// None if one never did.
    fn down_by_all_at(&self, victim: usize, since: Timestamp) -> Option<Timestamp>;

    /// Bytes node `i` sent over the run, every incarnation, with
    /// [`wedsync_mesh::sim::FRAME_OVERHEAD`] per frame.
    fn bytes_sent(&self, i: usize) -> u64;

    /// How far behind its mesh's clock the run (or a real mesh's own tasks) fell at worst,
    /// scenario seconds (a virtual mesh never runs ahead).
    fn max_lag_s(&self) -> f64 {
        0.0
    }

    /// Called once at the end of the run (a real mesh leaves and closes its endpoints).
    fn finish(&mut self) {}
}

/// The mesh in virtual time: [`Simulator`] over [`Network::WAN`].
pub struct VirtualMesh {
    sim: Simulator,
    /// Per node, the state last gossiped and when.
    published: Vec<Option<(NodeState, Timestamp)>>,
}

impl VirtualMesh {
    /// A mesh of `members` (node id, region), seeded; every node announces itself to `seeds`.
    pub fn new(members: &[(String, String)], config: MeshConfig, seed: u64, seeds: &[usize]) -> VirtualMesh {
        let mut sim = Simulator::with_members(members, config, Network::WAN, seed);
        sim.join_all_by_addr(seeds);
        VirtualMesh { sim, published: vec![None; members.len()] }
    }
}

impl FleetMesh for VirtualMesh {
    fn describe(&self) -> String {
        format!("virtual time, {} nodes over a simulated WAN (seeded)", self.sim.len())
    }

    fn advance(&mut self, now: Timestamp) {
        self.sim.run_until(now);
    }

    fn now(&self) -> Timestamp {
        self.sim.now()
    }

    fn kill(&mut self, i: usize) {
        self.sim.kill(i);
    }

    fn restart(&mut self, i: usize, seed: usize) {
        self.sim.restart(i, seed);
        self.published[i] = None;
    }

    fn offer_state(&mut self, i: usize, state: NodeState) {
        let now = self.sim.now();
        if wedsync_mesh::state_due(self.published[i].as_ref(), &state, now) {
            self.sim.publish(i, state.clone());
            self.published[i] = Some((state, now));
        }
    }

    fn failover_shares(&mut self, i: usize) -> Vec<FailoverShare> {
        self.sim.mesh(i).map(wedsync_mesh::failover_shares).unwrap_or_default()
    }

    fn converged(&self) -> bool {
        self.sim.converged()
    }

    fn coordinators_agree(&self) -> bool {
        self.sim.coordinators_agree()
    }

    fn coordinators(&self) -> Option<Vec<(String, String)>> {
        let observer = self.sim.running().next().and_then(|i| self.sim.mesh(i))?;
        Some(observer.fleet_view().regions.into_iter().map(|(region, view)| (region, view.coordinator)).collect())
    }

    fn down_by_all_at(&self, victim: usize, since: Timestamp) -> Option<Timestamp> {
        self.sim.down_by_all_at(victim, since)
    }

    fn bytes_sent(&self, i: usize) -> u64 {
        self.sim.bytes_sent(i)
    }
}
