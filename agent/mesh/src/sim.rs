//! A virtual-time simulator: many [`Mesh`] nodes in one process, a network with latency, loss,
//! partitions, kills and restarts, and measurements of what the fleet sees. Seeded, so a run is
//! reproducible.

use crate::{Mesh, MeshEvent, NodeIdentity, NodeState, Profile};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use wedsync_core::Timestamp;

/// How the simulated network behaves between any two nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    /// One-way latency.
    pub latency: Duration,
    /// Extra random latency, uniform in [0, jitter].
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
}

impl Network {
    /// A data-centre LAN: 0.5 ms ± 0.5 ms, no loss.
    pub const LAN: Network =
        Network { latency: Duration::from_micros(500), jitter: Duration::from_micros(500), loss: 0.0 };
}

#[derive(Debug)]
struct SimNode {
    base: NodeIdentity,
    mesh: Option<Mesh>,
    events: Vec<(Timestamp, MeshEvent)>,
    bytes_sent: u64,
}

/// The simulator.
#[derive(Debug)]
pub struct Simulator {
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    in_flight: BTreeMap<(Timestamp, u64), (usize, Vec<u8>)>,
    seq: u64,
    now: Timestamp,
    rng: SmallRng,
    network: Network,
    profile: Profile,
    /// Nodes cut off from everyone outside their group.
    partition: Option<BTreeSet<usize>>,
    /// Datagrams delivered and dropped.
    pub delivered: u64,
    /// Datagrams lost (loss, partition, dead receiver).
    pub dropped: u64,
    /// Inputs the meshes refused.
    pub refused: u64,
}

fn addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 7946)
}

impl Simulator {
    /// `n` nodes spread round-robin over `regions` regions (`r0`, `r1`, …), none joined yet.
    pub fn new(n: usize, regions: usize, profile: Profile, network: Network, seed: u64) -> Self {
        let regions = regions.max(1);
        let nodes: Vec<SimNode> = (0..n)
            .map(|i| {
                let base = NodeIdentity {
                    id: format!("n{i}"),
                    region: format!("r{}", i % regions),
                    addr: addr(i),
                    incarnation: 0,
                };
                let mesh =
                    Mesh::new(base.clone(), profile, u32::try_from(n).unwrap_or(u32::MAX), seed ^ (i as u64) << 20);
                SimNode { base, mesh: Some(mesh), events: Vec::new(), bytes_sent: 0 }
            })
            .collect();
        let by_addr = nodes.iter().enumerate().map(|(i, node)| (node.base.addr, i)).collect();
        Simulator {
            nodes,
            by_addr,
            in_flight: BTreeMap::new(),
            seq: 0,
            now: Timestamp::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            network,
            profile,
            partition: None,
            delivered: 0,
            dropped: 0,
            refused: 0,
        }
    }

    /// Virtual now.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Number of nodes (alive or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node's mesh, if it is running.
    pub fn mesh(&self, i: usize) -> Option<&Mesh> {
        self.nodes.get(i).and_then(|n| n.mesh.as_ref())
    }

    /// Every node but node 0 asks node 0 to let it in.
    pub fn join_all(&mut self) {
        let seed = self.nodes.first().map(|n| n.base.clone());
        if let Some(seed) = seed {
            for i in 1..self.nodes.len() {
                self.join(i, seed.clone());
            }
        }
    }

    fn join(&mut self, i: usize, seed: NodeIdentity) {
        let now = self.now;
        if let Some(mesh) = self.nodes[i].mesh.as_mut()
            && mesh.join(now, seed).is_err()
        {
            self.refused += 1;
        }
        self.flush(i);
    }

    /// Publishes a node's state.
    pub fn publish(&mut self, i: usize, state: NodeState) {
        if let Some(mesh) = self.nodes[i].mesh.as_mut()
            && mesh.set_own_state(state).is_err()
        {
            self.refused += 1;
        }
    }

    /// Stops a node abruptly (no leave message).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].mesh = None;
    }

    /// Restarts a killed node with a higher incarnation and has it rejoin through node `seed`.
    pub fn restart(&mut self, i: usize, seed: usize) {
        let node = &mut self.nodes[i];
        node.base.incarnation += 1;
        let n = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        self.nodes[i].mesh = Some(Mesh::new(self.nodes[i].base.clone(), self.profile, n, self.seq ^ 0x5eed));
        let seed = self.nodes[seed].base.clone();
        self.join(i, seed);
    }

    /// Cuts `group` off from every node outside it (until [`Simulator::heal`]).
    pub fn partition(&mut self, group: impl IntoIterator<Item = usize>) {
        self.partition = Some(group.into_iter().collect());
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    fn flush(&mut self, i: usize) {
        let mut out = Vec::new();
        let now = self.now;
        let node = &mut self.nodes[i];
        if let Some(mesh) = node.mesh.as_mut() {
            while let Some(t) = mesh.poll_transmit() {
                out.push(t);
            }
            while let Some(e) = mesh.poll_event() {
                node.events.push((now, e));
            }
        }
        for (to, data) in out {
            self.nodes[i].bytes_sent += data.len() as u64;
            let Some(&j) = self.by_addr.get(&to) else {
                self.dropped += 1;
                continue;
            };
            let cut = self.partition.as_ref().is_some_and(|g| g.contains(&i) != g.contains(&j));
            if cut || (self.network.loss > 0.0 && self.rng.random_bool(self.network.loss.clamp(0.0, 1.0))) {
                self.dropped += 1;
                continue;
            }
            let jitter_ns = u64::try_from(self.network.jitter.as_nanos()).unwrap_or(0);
            let extra = if jitter_ns > 0 { self.rng.random_range(0..=jitter_ns) } else { 0 };
            let at = self.now.saturating_add(self.network.latency + Duration::from_nanos(extra));
            self.seq += 1;
            self.in_flight.insert((at, self.seq), (j, data));
        }
    }

    /// Runs the fleet until `until` (virtual time).
    pub fn run_until(&mut self, until: Timestamp) {
        loop {
            let next_packet = self.in_flight.keys().next().map(|(at, _)| *at);
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.mesh.as_ref().and_then(Mesh::poll_timeout).map(|t| (t, i)))
                .min();
            let next = match (next_packet, next_timer) {
                (Some(p), Some((t, _))) => p.min(t),
                (Some(p), None) => p,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_packet == Some(next) {
                if let Some(((_, _), (j, data))) = self.in_flight.pop_first() {
                    let now = self.now;
                    match self.nodes[j].mesh.as_mut() {
                        Some(mesh) => {
                            self.delivered += 1;
                            if mesh.handle_datagram(now, &data).is_err() {
                                self.refused += 1;
                            }
                            self.flush(j);
                        }
                        None => self.dropped += 1,
                    }
                }
            } else if let Some((_, i)) = next_timer {
                let now = self.now;
                if let Some(mesh) = self.nodes[i].mesh.as_mut()
                    && mesh.handle_timeout(now).is_err()
                {
                    self.refused += 1;
                }
                self.flush(i);
            }
        }
        self.now = self.now.max(until);
    }

    /// Whether every running node believes exactly the other running nodes alive.
    pub fn converged(&self) -> bool {
        let running: BTreeSet<&str> =
            self.nodes.iter().filter(|n| n.mesh.is_some()).map(|n| n.base.id.as_str()).collect();
        self.nodes.iter().filter_map(|n| n.mesh.as_ref().map(|m| (n, m))).all(|(n, mesh)| {
            let seen: BTreeSet<&str> = mesh.alive_members().map(|m| m.id.as_str()).collect();
            seen.len() + 1 == running.len() && seen.iter().all(|id| running.contains(id) && *id != n.base.id)
        })
    }

    /// Runs in `step`s until [`Simulator::converged`] or `limit` more virtual time passed;
    /// returns the time it took.
    pub fn run_until_converged(&mut self, step: Duration, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now.saturating_since(start) <= limit {
            if self.converged() {
                return Some(self.now.saturating_since(start));
            }
            let next = self.now.saturating_add(step);
            self.run_until(next);
        }
        None
    }

    /// When each running node first saw `victim` declared down, after `since`.
    pub fn down_seen_at(&self, victim: usize, since: Timestamp) -> Vec<Option<Timestamp>> {
        let id = &self.nodes[victim].base.id;
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != victim && n.mesh.is_some())
            .map(|(_, n)| {
                n.events
                    .iter()
                    .find(|(at, e)| *at >= since && matches!(e, MeshEvent::MemberDown(m) if m.id == *id))
                    .map(|(at, _)| *at)
            })
            .collect()
    }

    /// Bytes sent by node `i` so far.
    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.nodes[i].bytes_sent
    }

    /// Whether every running node computes the same coordinator for every region.
    pub fn coordinators_agree(&self) -> bool {
        let mut views = self.nodes.iter().filter_map(|n| n.mesh.as_ref()).map(|m| {
            m.fleet_view().regions.into_iter().map(|(region, view)| (region, view.coordinator)).collect::<Vec<_>>()
        });
        let Some(first) = views.next() else { return true };
        views.all(|v| v == first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(load: f64) -> NodeState {
        NodeState {
            node: String::new(),
            region: String::new(),
            version: 0,
            capacity: 1000.0,
            load,
            healthy: true,
            active_weddings: 1,
        }
    }

    #[test]
    fn a_fleet_joins_and_agrees_on_coordinators() {
        let mut sim = Simulator::new(20, 3, Profile::Lan, Network::LAN, 7);
        sim.join_all();
        let took = sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60)).expect("converges");
        eprintln!("20 nodes converged in {took:?}; {} datagrams delivered", sim.delivered);
        assert!(took <= Duration::from_secs(30), "took {took:?}");
        assert!(sim.coordinators_agree());
        let view = sim.mesh(5).unwrap().fleet_view();
        assert_eq!(view.regions.len(), 3);
        assert_eq!(view.regions.values().map(|r| r.members).sum::<usize>(), 20);
    }

    #[test]
    fn node_states_reach_every_node() {
        let mut sim = Simulator::new(10, 2, Profile::Lan, Network::LAN, 11);
        sim.join_all();
        sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60)).expect("converges");
        sim.publish(3, state(250.0));
        let deadline = sim.now().saturating_add(Duration::from_secs(10));
        sim.run_until(deadline);
        let missing: Vec<usize> = (0..10).filter(|i| sim.mesh(*i).unwrap().state_of("n3").is_none()).collect();
        assert!(
            missing.is_empty(),
            "n3's state missing at {missing:?}; sim {:?}",
            (sim.delivered, sim.dropped, sim.refused)
        );
        for i in 0..10 {
            let seen = sim.mesh(i).unwrap().state_of("n3").expect("state of n3 known");
            assert_eq!(seen.load, 250.0);
        }
        // A newer version replaces it everywhere.
        sim.publish(3, state(900.0));
        let deadline = sim.now().saturating_add(Duration::from_secs(10));
        sim.run_until(deadline);
        assert!((0..10).all(|i| sim.mesh(i).unwrap().state_of("n3").unwrap().load == 900.0));
        let region = &sim.mesh(0).unwrap().fleet_view().regions["r1"];
        assert_eq!(region.load, 900.0);
    }

    #[test]
    fn a_dead_node_is_detected_and_a_restart_rejoins() {
        let mut sim = Simulator::new(12, 2, Profile::Lan, Network::LAN, 3);
        sim.join_all();
        sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60)).expect("converges");
        let killed_at = sim.now();
        sim.kill(4);
        sim.run_until(killed_at.saturating_add(Duration::from_secs(30)));
        let seen = sim.down_seen_at(4, killed_at);
        assert!(seen.iter().all(Option::is_some), "not everyone saw n4 down: {seen:?}");
        let last = seen.iter().flatten().max().unwrap().saturating_since(killed_at);
        let first = seen.iter().flatten().min().unwrap().saturating_since(killed_at);
        eprintln!("n4 first declared down after {first:?}, by all after {last:?}");
        assert!(last <= Duration::from_secs(30), "all agreed after {last:?}");
        assert!(sim.converged());
        assert!(sim.coordinators_agree());
        sim.restart(4, 0);
        sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60)).expect("rejoins");
        assert_eq!(sim.mesh(0).unwrap().alive_members().find(|m| m.id == "n4").unwrap().incarnation, 1);
    }

    #[test]
    fn a_partition_splits_the_view_and_healing_rejoins_it() {
        let mut sim = Simulator::new(8, 2, Profile::Lan, Network::LAN, 5);
        sim.join_all();
        sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60)).expect("converges");
        sim.partition([0, 1, 2, 3]);
        let t = sim.now().saturating_add(Duration::from_secs(30));
        sim.run_until(t);
        assert!(sim.mesh(0).unwrap().alive_members().count() < 7, "the partition is noticed");
        sim.heal();
        // Cut-off members were declared down; they renew their identity and come back.
        let back = sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(120));
        assert!(back.is_some(), "the fleet did not re-form after healing");
    }
}
