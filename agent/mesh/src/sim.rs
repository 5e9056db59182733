//! A virtual-time simulator: many [`Mesh`] nodes in one process, a network with latency, loss,
//! partitions, kills and restarts, and measurements of what the fleet sees (detection times,
//! false downs, convergence, state dissemination, bytes on the wire). Seeded, so a run is
//! reproducible.
//!
//! Every frame is delivered through [`Mesh::handle_datagram_from`] with the sender's
//! identity, as the QUIC transport does. Byte counts add [`FRAME_OVERHEAD`] per frame for
//! QUIC, UDP and IP headers.

use crate::content::{ContentExchange, FRAME_CONTENT};
use crate::{Mesh, MeshConfig, MeshEvent, MeshStats, NodeIdentity, NodeState, Profile};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use wedsync_core::Timestamp;
use wedsync_core::content::{IntervalSketch, ViralConfig};

/// Bytes of QUIC, UDP and IP headers counted per frame on top of its payload.
pub const FRAME_OVERHEAD: u64 = 60;

/// Incarnation the simulated nodes start with: the daemon uses the wall clock in
/// milliseconds, so identities on the wire have realistic sizes.
const FIRST_INCARNATION: u64 = 1_700_000_000_000;

/// How the simulated network behaves between any two nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    /// Mean one-way latency.
    pub latency: Duration,
    /// Spread around the mean: a datagram takes `latency ± jitter` (uniform).
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
}

impl Network {
    /// A data-centre LAN: 0.5 ms ± 0.5 ms, no loss.
    pub const LAN: Network =
        Network { latency: Duration::from_micros(500), jitter: Duration::from_micros(500), loss: 0.0 };
    /// A wide-area network between regions: 40 ms ± 20 ms, no loss.
    pub const WAN: Network =
        Network { latency: Duration::from_millis(40), jitter: Duration::from_millis(20), loss: 0.0 };

    /// The same network losing `loss` of datagrams.
    pub fn with_loss(self, loss: f64) -> Network {
        Network { loss, ..self }
    }
}

/// What a node saw, compactly: the member is a simulator node index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A member came up.
    Up(usize),
    /// A member was declared down (with the incarnation of the identity declared down).
    Down(usize, u64),
    /// A member came back with a newer identity.
    Renamed(usize),
    /// This node joined.
    Joined,
    /// This node had been declared down and rejoined.
    Rejoined,
}

#[derive(Debug)]
struct SimNode {
    base: NodeIdentity,
    mesh: Option<Mesh>,
    seen: Vec<(Timestamp, Seen)>,
    bytes_sent: u64,
    frames_sent: u64,
    /// Extra loss on every datagram to or from this node.
    loss: f64,
    /// Nodes only reach nodes of the same group.
    group: u32,
    /// Periods during which the node ran: (start, stop, incarnation it started with).
    lifetimes: Vec<(Timestamp, Option<Timestamp>, u64)>,
    /// When its registered wake-up is, and its generation (stale heap entries are skipped).
    wake: Option<Timestamp>,
    wake_gen: u32,
    /// Stats of meshes this node ran before it was killed.
    past_stats: Vec<MeshStats>,
    /// Its part in viral-content detection, when the content layer is on.
    content: Option<SimContent>,
}

/// A node's content exchange and the traffic its clients make.
#[derive(Debug)]
struct SimContent {
    exchange: ContentExchange,
    window: IntervalSketch,
    /// Requests per second this node sees for each content key.
    rates: HashMap<String, u64>,
    /// Until when (ms) its traffic has been counted.
    fed_ms: u64,
    /// Bytes of content frames sent and received, overhead included.
    bytes_sent: u64,
    bytes_received: u64,
}

impl SimContent {
    fn new(config: ViralConfig, rates: HashMap<String, u64>, now_ms: u64) -> Self {
        SimContent {
            exchange: ContentExchange::new(config),
            window: IntervalSketch::new(config.interval_ms),
            rates,
            fed_ms: now_ms,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// Counts the traffic since the last feed, in the interval it happened in.
    fn feed(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.fed_ms);
        if elapsed == 0 {
            return;
        }
        for (key, per_s) in &self.rates {
            let count = per_s.saturating_mul(elapsed) / 1000;
            if count > 0 {
                // Keys are the simulator's own and valid; a refusal would only lose a count.
                let _ = self.window.record(now_ms - 1, key, count);
            }
        }
        self.fed_ms = now_ms;
    }
}

#[derive(Debug)]
enum Kind {
    Deliver {
        from: usize,
        to: usize,
        data: Vec<u8>,
    },
    Wake {
        node: usize,
        generation: u32,
    },
    /// A stage of the content exchange on every running node.
    ContentStage,
}

#[derive(Debug)]
struct Event {
    at: Timestamp,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The simulator.
#[derive(Debug)]
pub struct Simulator {
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize, foldhash::fast::FixedState>,
    queue: BinaryHeap<Reverse<Event>>,
    seq: u64,
    now: Timestamp,
    rng: SmallRng,
    network: Network,
    config: MeshConfig,
    /// Datagrams delivered.
    pub delivered: u64,
    /// Datagrams lost (loss, partition, dead receiver).
    pub dropped: u64,
    /// Inputs the meshes refused.
    pub refused: u64,
    /// Bytes sent by frame type (SWIM, sync, suspect, alive), overhead included.
    pub bytes_by_frame: [u64; 8],
    /// Detector settings of the content layer, when it is on.
    content: Option<ViralConfig>,
}

fn addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 7946)
}

/// Milliseconds since the simulation began.
fn ms(t: Timestamp) -> u64 {
    t.as_nanos() / 1_000_000
}

/// Percentile `p` (0–100) of `values` (nearest rank); `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(sorted.len() - 1)).copied()
}

impl Simulator {
    /// `n` nodes spread round-robin over `regions` regions, none joined yet, with the tuned
    /// timings of `profile` for `n` nodes.
    pub fn new(n: usize, regions: usize, profile: Profile, network: Network, seed: u64) -> Self {
        let size = u32::try_from(n).unwrap_or(u32::MAX);
        Self::with_config(n, regions, MeshConfig::new(profile, size), network, seed)
    }

    /// `n` nodes with explicit timings.
    pub fn with_config(n: usize, regions: usize, config: MeshConfig, network: Network, seed: u64) -> Self {
        let regions = regions.max(1);
        let members: Vec<(String, String)> =
            (0..n).map(|i| (format!("edge-node-{i:05}"), format!("region-{}", i % regions))).collect();
        Self::with_members(&members, config, network, seed)
    }

    /// One node per `(node id, region)` in `members`, none joined yet.
    pub fn with_members(members: &[(String, String)], config: MeshConfig, network: Network, seed: u64) -> Self {
        let n = members.len();
        let nodes: Vec<SimNode> = members
            .iter()
            .enumerate()
            .map(|(i, (id, region))| {
                let base = NodeIdentity {
                    id: id.clone(),
                    region: region.clone(),
                    addr: addr(i),
                    incarnation: FIRST_INCARNATION,
                };
                let mesh = Mesh::with_config(base.clone(), config.clone(), seed ^ ((i as u64) << 20));
                SimNode {
                    base,
                    mesh: Some(mesh),
                    seen: Vec::new(),
                    bytes_sent: 0,
                    frames_sent: 0,
                    loss: 0.0,
                    group: 0,
                    lifetimes: vec![(Timestamp::ZERO, None, FIRST_INCARNATION)],
                    wake: None,
                    wake_gen: 0,
                    past_stats: Vec::new(),
                    content: None,
                }
            })
            .collect();
        let by_addr = nodes.iter().enumerate().map(|(i, node)| (node.base.addr, i)).collect();
        let mut sim = Simulator {
            nodes,
            by_addr,
            queue: BinaryHeap::new(),
            seq: 0,
            now: Timestamp::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            network,
            config,
            delivered: 0,
            dropped: 0,
            refused: 0,
            bytes_by_frame: [0; 8],
            content: None,
        };
        for i in 0..n {
            sim.touch(i);
        }
        sim
    }

    /// Virtual now.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Number of nodes (running or not).
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

    /// A node's id.
    pub fn node_id(&self, i: usize) -> &str {
        &self.nodes[i].base.id
    }

    /// A node's region.
    pub fn region_of(&self, i: usize) -> &str {
        &self.nodes[i].base.region
    }

    /// Whether node `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.mesh.is_some())
    }

    /// Indices of running nodes.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes.iter().enumerate().filter(|(_, n)| n.mesh.is_some()).map(|(i, _)| i)
    }

    /// Changes the network (latency, loss) from now on.
    pub fn set_network(&mut self, network: Network) {
        self.network = network;
    }

    /// Extra loss on every datagram to or from node `i` (a node with a bad link).
    pub fn set_node_loss(&mut self, i: usize, loss: f64) {
        self.nodes[i].loss = loss;
    }

    /// Every node but node 0 announces itself to node 0 by address.
    pub fn join_all(&mut self) {
        self.join_all_by_addr(&[0]);
    }

    /// Every node announces itself by address to every seed in `seeds` (as the daemon does
    /// with its configured seeds), all at the same instant.
    pub fn join_all_by_addr(&mut self, seeds: &[usize]) {
        let seed_addrs: Vec<SocketAddr> = seeds.iter().map(|s| self.nodes[*s].base.addr).collect();
        for i in 0..self.nodes.len() {
            self.join_by_addr(i, &seed_addrs);
        }
    }

    fn join_by_addr(&mut self, i: usize, seeds: &[SocketAddr]) {
        let now = self.now;
        let mut refused = 0;
        if let Some(mesh) = self.nodes[i].mesh.as_mut() {
            for seed in seeds {
                if mesh.join_addr(now, *seed).is_err() {
                    refused += 1;
                }
            }
        }
        self.refused += refused;
        self.flush(i);
    }

    /// Publishes a node's state.
    pub fn publish(&mut self, i: usize, state: NodeState) {
        if let Some(mesh) = self.nodes[i].mesh.as_mut()
            && mesh.publish_state(state).is_err()
        {
            self.refused += 1;
        }
        self.flush(i);
    }

    /// Stops a node abruptly (no leave message).
    pub fn kill(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        if let Some(mesh) = node.mesh.take() {
            node.base.incarnation = node.base.incarnation.max(mesh.identity().incarnation);
            node.past_stats.push(mesh.stats());
            if let Some(last) = node.lifetimes.last_mut() {
                last.1 = Some(now);
            }
        }
        node.wake = None;
        node.wake_gen = node.wake_gen.wrapping_add(1);
    }

    /// Restarts a killed node with a higher incarnation and has it rejoin through node `seed`
    /// (by address).
    pub fn restart(&mut self, i: usize, seed: usize) {
        if self.nodes[i].mesh.is_some() {
            return;
        }
        let now = self.now;
        self.seq += 1;
        let mesh_seed = self.seq ^ 0x5eed ^ ((i as u64) << 24);
        let node = &mut self.nodes[i];
        node.base.incarnation += 1;
        node.mesh = Some(Mesh::with_config(node.base.clone(), self.config.clone(), mesh_seed));
        node.lifetimes.push((now, None, node.base.incarnation));
        if let (Some(config), Some(content)) = (self.content, node.content.as_mut()) {
            let rates = std::mem::take(&mut content.rates);
            let (sent, received) = (content.bytes_sent, content.bytes_received);
            *content = SimContent::new(config, rates, ms(now));
            (content.bytes_sent, content.bytes_received) = (sent, received);
        }
        let seed = self.nodes[seed].base.addr;
        self.join_by_addr(i, &[seed]);
    }

    /// Cuts `group` off from every node outside it (until [`Simulator::heal`]).
    pub fn partition(&mut self, group: impl IntoIterator<Item = usize>) {
        for node in &mut self.nodes {
            node.group = 0;
        }
        for i in group {
            self.nodes[i].group = 1;
        }
    }

    /// Cuts the nodes of `region` off from the others.
    pub fn partition_region(&mut self, region: &str) {
        let group: Vec<usize> = (0..self.nodes.len()).filter(|i| self.nodes[*i].base.region == region).collect();
        self.partition(group);
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        for node in &mut self.nodes {
            node.group = 0;
        }
    }

    fn push(&mut self, at: Timestamp, kind: Kind) {
        self.seq += 1;
        self.queue.push(Reverse(Event { at, seq: self.seq, kind }));
    }

    /// Registers node `i`'s next wake-up if it changed.
    fn touch(&mut self, i: usize) {
        let wake = self.nodes[i].mesh.as_ref().and_then(Mesh::poll_timeout);
        let node = &mut self.nodes[i];
        if wake == node.wake {
            return;
        }
        node.wake = wake;
        node.wake_gen = node.wake_gen.wrapping_add(1);
        let generation = node.wake_gen;
        if let Some(at) = wake {
            let at = at.max(self.now);
            self.push(at, Kind::Wake { node: i, generation });
        }
    }

    fn delay(&mut self) -> Duration {
        let jitter = u64::try_from(self.network.jitter.as_nanos()).unwrap_or(0);
        let mean = u64::try_from(self.network.latency.as_nanos()).unwrap_or(0);
        let ns = if jitter > 0 { (mean + self.rng.random_range(0..=2 * jitter)).saturating_sub(jitter) } else { mean };
        Duration::from_nanos(ns)
    }

    /// Sends what node `i` wants to send and records what it saw.
    fn flush(&mut self, i: usize) {
        let now = self.now;
        let mut out = Vec::new();
        {
            let node = &mut self.nodes[i];
            if let Some(mesh) = node.mesh.as_mut() {
                while let Some(t) = mesh.poll_transmit() {
                    out.push(t);
                }
                while let Some(e) = mesh.poll_event() {
                    let seen = match e {
                        MeshEvent::MemberUp(id) => self.by_addr.get(&id.addr).map(|j| Seen::Up(*j)),
                        MeshEvent::MemberDown(id) => self.by_addr.get(&id.addr).map(|j| Seen::Down(*j, id.incarnation)),
                        MeshEvent::Renamed { to, .. } => self.by_addr.get(&to.addr).map(|j| Seen::Renamed(*j)),
                        MeshEvent::Joined => Some(Seen::Joined),
                        MeshEvent::Rejoined => Some(Seen::Rejoined),
                    };
                    node.seen.extend(seen.map(|s| (now, s)));
                }
            }
        }
        for (to, data) in out {
            self.transmit(i, to, data);
        }
        self.touch(i);
    }

    /// Sends one frame from node `i` through the simulated network.
    fn transmit(&mut self, i: usize, to: SocketAddr, data: Vec<u8>) {
        let size = data.len() as u64 + FRAME_OVERHEAD;
        self.nodes[i].bytes_sent += size;
        self.nodes[i].frames_sent += 1;
        if let Some(slot) = data.first().and_then(|t| self.bytes_by_frame.get_mut(usize::from(*t))) {
            *slot += size;
        }
        if data.first() == Some(&FRAME_CONTENT)
            && let Some(content) = self.nodes[i].content.as_mut()
        {
            content.bytes_sent += size;
        }
        let Some(&j) = self.by_addr.get(&to) else {
            self.dropped += 1;
            return;
        };
        let cut = self.nodes[i].group != self.nodes[j].group;
        let loss = 1.0 - (1.0 - self.network.loss) * (1.0 - self.nodes[i].loss) * (1.0 - self.nodes[j].loss);
        if cut || (loss > 0.0 && self.rng.random_bool(loss.clamp(0.0, 1.0))) {
            self.dropped += 1;
            return;
        }
        let at = self.now.saturating_add(self.delay());
        self.push(at, Kind::Deliver { from: i, to: j, data });
    }

    /// Turns the content layer on: every node counts the content keys its clients ask for (see
    /// [`Simulator::set_content_rate`]) and runs a [`ContentExchange`] with `config`.
    pub fn enable_content(&mut self, config: ViralConfig) {
        if self.content.is_some() {
            return;
        }
        self.content = Some(config);
        let now_ms = ms(self.now);
        for node in &mut self.nodes {
            node.content = Some(SimContent::new(config, HashMap::new(), now_ms));
        }
        self.schedule_content_stage();
    }

    fn schedule_content_stage(&mut self) {
        let Some(exchange) = self.nodes.iter().find_map(|n| n.content.as_ref()) else { return };
        let next = exchange.exchange.next_tick(ms(self.now));
        self.push(Timestamp::from_millis(next), Kind::ContentStage);
    }

    /// Node `i`'s clients ask for `key` `per_second` times a second from now on (0: no more).
    pub fn set_content_rate(&mut self, i: usize, key: &str, per_second: u64) {
        let now_ms = ms(self.now);
        if let Some(content) = self.nodes.get_mut(i).and_then(|n| n.content.as_mut()) {
            content.feed(now_ms);
            if per_second == 0 {
                content.rates.remove(key);
            } else {
                content.rates.insert(key.to_owned(), per_second);
            }
        }
    }

    /// Node `i`'s content exchange (hints, fleet top), when it runs and the layer is on.
    pub fn content(&self, i: usize) -> Option<&ContentExchange> {
        let node = self.nodes.get(i)?;
        node.mesh.as_ref()?;
        node.content.as_ref().map(|c| &c.exchange)
    }

    /// Bytes of content frames node `i` sent and received, overhead included.
    pub fn content_bytes(&self, i: usize) -> (u64, u64) {
        self.nodes.get(i).and_then(|n| n.content.as_ref()).map_or((0, 0), |c| (c.bytes_sent, c.bytes_received))
    }

    fn run_content_stage(&mut self) {
        let now_ms = ms(self.now);
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            let (Some(mesh), Some(content)) = (node.mesh.as_ref(), node.content.as_mut()) else { continue };
            content.feed(now_ms);
            let closed: Vec<_> = std::iter::from_fn(|| content.window.take_closed(now_ms)).collect();
            let out = content.exchange.tick(now_ms, closed, mesh);
            for (to, data) in out {
                self.transmit(i, to, data);
            }
        }
        self.schedule_content_stage();
    }

    /// Runs the fleet until `until` (virtual time).
    pub fn run_until(&mut self, until: Timestamp) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until {
                break;
            }
            let Some(Reverse(event)) = self.queue.pop() else { break };
            self.now = self.now.max(event.at);
            let now = self.now;
            match event.kind {
                Kind::Deliver { from, to, data } if from == to => {
                    // A node announcing to its own address (a former identity of its own).
                    let peer = (self.nodes[to].base.id.clone(), self.nodes[to].base.region.clone());
                    let Some(mesh) = self.nodes[to].mesh.as_mut() else { continue };
                    self.delivered += 1;
                    if mesh.handle_datagram_from(now, Some((&peer.0, &peer.1)), &data).is_err() {
                        self.refused += 1;
                    }
                    self.flush(to);
                }
                Kind::Deliver { to, data, .. } if data.first() == Some(&FRAME_CONTENT) => {
                    let node = &mut self.nodes[to];
                    let (Some(_), Some(content)) = (node.mesh.as_ref(), node.content.as_mut()) else {
                        self.dropped += 1;
                        continue;
                    };
                    self.delivered += 1;
                    content.bytes_received += data.len() as u64 + FRAME_OVERHEAD;
                    if content.exchange.handle(ms(now), &data).is_err() {
                        self.refused += 1;
                    }
                }
                Kind::Deliver { from, to, data } => {
                    let (sender, rest) = if from < to {
                        let (a, b) = self.nodes.split_at_mut(to);
                        (&a[from], &mut b[0])
                    } else {
                        let (a, b) = self.nodes.split_at_mut(from);
                        (&b[0], &mut a[to])
                    };
                    let Some(mesh) = rest.mesh.as_mut() else {
                        self.dropped += 1;
                        continue;
                    };
                    self.delivered += 1;
                    let peer = (sender.base.id.as_str(), sender.base.region.as_str());
                    if mesh.handle_datagram_from(now, Some(peer), &data).is_err() {
                        self.refused += 1;
                    }
                    self.flush(to);
                }
                Kind::Wake { node, generation } => {
                    if self.nodes[node].wake_gen != generation {
                        continue;
                    }
                    self.nodes[node].wake = None;
                    if let Some(mesh) = self.nodes[node].mesh.as_mut()
                        && mesh.handle_timeout(now).is_err()
                    {
                        self.refused += 1;
                    }
                    self.flush(node);
                }
                Kind::ContentStage => self.run_content_stage(),
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs the fleet for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now.saturating_add(d);
        self.run_until(until);
    }

    /// Whether every running node believes exactly the other running nodes alive.
    pub fn converged(&self) -> bool {
        self.unconverged_nodes() == 0
    }

    /// Running nodes whose alive set is not exactly the other running nodes.
    pub fn unconverged_nodes(&self) -> usize {
        let running: HashSet<(SocketAddr, u64), foldhash::fast::FixedState> = self
            .nodes
            .iter()
            .filter_map(|n| n.mesh.as_ref().map(|m| (m.identity().addr, m.identity().incarnation)))
            .collect();
        self.nodes
            .iter()
            .filter_map(|n| n.mesh.as_ref())
            .filter(|mesh| {
                let mut seen = 0;
                let all_running = mesh.alive_members().all(|m| {
                    seen += 1;
                    running.contains(&(m.addr, m.incarnation))
                });
                !(all_running && seen + 1 == running.len())
            })
            .count()
    }

    /// Runs in `step`s until [`Simulator::converged`] or `limit` more virtual time passed;
    /// returns the time it took.
    pub fn run_until_converged(&mut self, step: Duration, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now.saturating_since(start) <= limit {
            if self.converged() {
                return Some(self.now.saturating_since(start));
            }
            self.run_for(step);
        }
        None
    }

    /// When each running node (but the victim) first saw `victim` declared down, after
    /// `since`.
    pub fn down_seen_at(&self, victim: usize, since: Timestamp) -> Vec<Option<Timestamp>> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != victim && n.mesh.is_some())
            .map(|(_, n)| {
                n.seen
                    .iter()
                    .find(|(at, s)| *at >= since && matches!(s, Seen::Down(m, _) if *m == victim))
                    .map(|(at, _)| *at)
            })
            .collect()
    }

    /// When every running node had seen `victim` declared down (after `since`), if all did.
    pub fn down_by_all_at(&self, victim: usize, since: Timestamp) -> Option<Timestamp> {
        let mut last = since;
        for (i, n) in self.nodes.iter().enumerate() {
            if i == victim || n.mesh.is_none() {
                continue;
            }
            let at = n
                .seen
                .iter()
                .rev()
                .take_while(|(at, _)| *at >= since)
                .filter(|(_, s)| matches!(s, Seen::Down(m, _) if *m == victim))
                .map(|(at, _)| *at)
                .last()?;
            last = last.max(at);
        }
        Some(last)
    }

    /// Whether node `j` was running at `at` with an identity at least `incarnation` (a late
    /// "down" about the identity it had before a restart is not about the running node).
    fn was_running(&self, j: usize, at: Timestamp, incarnation: u64) -> bool {
        self.nodes[j]
            .lifetimes
            .iter()
            .any(|(start, stop, first)| *start <= at && stop.is_none_or(|s| at < s) && incarnation >= *first)
    }

    /// Live members declared down after `since`: distinct (member, incarnation) that some
    /// running node saw declared down while the member was running with that identity.
    pub fn false_downs(&self, since: Timestamp) -> usize {
        let mut incidents = HashSet::new();
        for node in &self.nodes {
            for (at, s) in &node.seen {
                if let Seen::Down(j, incarnation) = s
                    && *at >= since
                    && self.was_running(*j, *at, *incarnation)
                {
                    incidents.insert((*j, *incarnation));
                }
            }
        }
        incidents.len()
    }

    /// What node `i` saw.
    pub fn seen(&self, i: usize) -> &[(Timestamp, Seen)] {
        &self.nodes[i].seen
    }

    /// Forgets what every node saw (to bound memory in long runs).
    pub fn clear_seen(&mut self) {
        for node in &mut self.nodes {
            node.seen.clear();
        }
    }

    /// Bytes node `i` sent so far, [`FRAME_OVERHEAD`] included.
    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.nodes[i].bytes_sent
    }

    /// Frames node `i` sent so far.
    pub fn frames_sent(&self, i: usize) -> u64 {
        self.nodes[i].frames_sent
    }

    /// Sum of every node's mesh counters (of running meshes and of killed ones).
    pub fn total_stats(&self) -> MeshStats {
        let mut total = MeshStats::default();
        let all = self.nodes.iter().flat_map(|n| n.past_stats.iter().cloned().chain(n.mesh.as_ref().map(Mesh::stats)));
        for s in all {
            total.suspicions_raised += s.suspicions_raised;
            total.probes_rescued += s.probes_rescued;
            total.suspicions_refuted += s.suspicions_refuted;
            total.declared_down += s.declared_down;
            total.digest_syncs += s.digest_syncs;
            total.refutations += s.refutations;
            total.rejoins += s.rejoins;
            total.local_health_max = total.local_health_max.max(s.local_health_max);
            total.states_published += s.states_published;
            total.states_deferred += s.states_deferred;
            total.states_truncated += s.states_truncated;
            total.bytes_in += s.bytes_in;
            total.bytes_out += s.bytes_out;
            let (o, i) = (&mut total.frames_out, &s.frames_out);
            o.ping += i.ping;
            o.ack += i.ack;
            o.indirect += i.indirect;
            o.announce += i.announce;
            o.feed += i.feed;
            o.gossip += i.gossip;
            o.broadcast += i.broadcast;
            o.turn_undead += i.turn_undead;
            o.sync += i.sync;
            o.suspect += i.suspect;
            o.alive += i.alive;
            o.probe_retry += i.probe_retry;
            o.states += i.states;
            o.digest += i.digest;
            total.frames_in.sync += s.frames_in.sync;
            total.frames_in.turn_undead += s.frames_in.turn_undead;
            total.refused.identity_mismatch += s.refused.identity_mismatch;
            total.refused.malformed += s.refused.malformed;
            total.refused.bad_state += s.refused.bad_state;
            total.refused.bad_sync += s.refused.bad_sync;
            total.refused.stale += s.refused.stale;
        }
        total
    }

    /// Whether every running node computes the same coordinator for every region.
    pub fn coordinators_agree(&self) -> bool {
        let mut views = self.nodes.iter().filter_map(|n| n.mesh.as_ref()).map(|m| {
            m.fleet_view().regions.into_iter().map(|(region, view)| (region, view.coordinator)).collect::<Vec<_>>()
        });
        let Some(first) = views.next() else { return true };
        views.all(|v| v == first)
    }

    /// How many running nodes hold at least `version` of `node`'s state.
    pub fn state_holders(&self, node: usize, version: u64) -> usize {
        let id = &self.nodes[node].base.id;
        self.nodes.iter().filter_map(|n| n.mesh.as_ref()).filter(|m| m.state_version_of(id) >= version).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CLASSES, PoolFigures};

    fn state(load: f64) -> NodeState {
        NodeState {
            node: String::new(),
            region: String::new(),
            version: 0,
            capacity: 1000.0,
            load,
            healthy: true,
            active_weddings: 1,
            pools: vec![PoolFigures { pool: "checkout".into(), capacity: 1000.0, load, class_load: [0.0; CLASSES] }],
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 99.0), None);
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
    }

    #[test]
    fn a_fleet_joins_and_agrees_on_coordinators() {
        let mut sim = Simulator::new(20, 3, Profile::Lan, Network::LAN, 7);
        sim.join_all();
        let took = sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60)).expect("converges");
        assert!(took <= Duration::from_secs(5), "took {took:?}");
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
        sim.run_for(Duration::from_secs(3));
        let id = sim.node_id(3).to_owned();
        let missing: Vec<usize> = (0..10).filter(|i| sim.mesh(*i).unwrap().state_of(&id).is_none()).collect();
        assert!(missing.is_empty(), "state missing at {missing:?}");
        for i in 0..10 {
            assert_eq!(sim.mesh(i).unwrap().state_of(&id).unwrap().load, 250.0);
        }
        // A newer version replaces it everywhere.
        sim.publish(3, state(900.0));
        sim.run_for(Duration::from_secs(5));
        assert!((0..10).all(|i| sim.mesh(i).unwrap().state_of(&id).unwrap().load == 900.0));
        let region = &sim.mesh(0).unwrap().fleet_view().regions["region-1"];
        assert_eq!(region.load, 900.0);
        assert_eq!(region.pools["checkout"].load, 900.0);
    }

    #[test]
    fn a_dead_node_is_detected_and_a_restart_rejoins() {
        let mut sim = Simulator::new(12, 2, Profile::Lan, Network::LAN, 3);
        sim.join_all();
        sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60)).expect("converges");
        let killed_at = sim.now();
        sim.kill(4);
        sim.run_for(Duration::from_secs(5));
        let seen = sim.down_seen_at(4, killed_at);
        assert!(seen.iter().all(Option::is_some), "not everyone saw node 4 down: {seen:?}");
        let last = seen.iter().flatten().max().unwrap().saturating_since(killed_at);
        assert!(last <= Duration::from_secs(3), "all agreed after {last:?}");
        assert!(sim.converged());
        assert!(sim.coordinators_agree());
        sim.restart(4, 0);
        sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(30)).expect("rejoins");
        let id = sim.node_id(4).to_owned();
        let back = sim.mesh(0).unwrap().alive_members().find(|m| m.id == id).unwrap().incarnation;
        assert_eq!(back, FIRST_INCARNATION + 1);
        assert_eq!(sim.false_downs(Timestamp::ZERO), 0);
    }

    #[test]
    fn a_partition_splits_the_view_and_healing_rejoins_it() {
        let mut sim = Simulator::new(8, 2, Profile::Lan, Network::LAN, 5);
        sim.join_all();
        sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60)).expect("converges");
        sim.partition([0, 1, 2, 3]);
        sim.run_for(Duration::from_secs(10));
        assert!(sim.mesh(0).unwrap().alive_members().count() < 7, "the partition is noticed");
        sim.heal();
        // Cut-off members were declared down; they renew their identity and come back.
        let back = sim.run_until_converged(Duration::from_millis(100), Duration::from_secs(60));
        assert!(back.is_some(), "the fleet did not re-form after healing");
    }
}
