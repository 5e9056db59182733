//! The fleet mesh, driven for real: the sans-IO [`Mesh`] from `wedsync-mesh` over the
//! mutually-authenticated QUIC [`Transport`], fed this node's state from the engine and the
//! content keys seen in StatsD, and published to the API (`/v1/fleet`, `/v1/cache/hints`) and
//! `/metrics`.

use crate::clock::{Clock, lock};
use crate::config::{MeshProfile, MeshSettings};
use crate::engine::{EngineCommand, EngineHandle};
use crate::logging::RateLimiter;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wedsync_core::Timestamp;
use wedsync_core::content::{CacheHint, IntervalSketch, KeyEstimate, ViralConfig};
use wedsync_mesh::content::{ContentExchange, ContentStats, FRAME_CONTENT};
use wedsync_mesh::{
    FailoverProposal, FailoverShare, FleetView, MemberCounts, MemberHealth, Mesh, MeshEvent, MeshStats, NodeIdentity,
    NodeState, Profile,
};
use wedsync_transport::{
    Inbound, NodeCredentials, PeerIdentity, PkiError, Transport, TransportConfig, TransportError, TransportStats,
};

/// How often the published snapshot (what the API serves) is refreshed at most.
const SNAPSHOT_PERIOD: Duration = Duration::from_millis(250);
/// Time the goodbye gets to leave the host before the endpoint closes.
const LEAVE_GRACE: Duration = Duration::from_millis(100);

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The certificate files could not be loaded or a throwaway CA could not be made.
    #[error("mesh TLS: {0}")]
    Pki(#[from] PkiError),
    /// The certificate names another node or region than this agent's configuration.
    #[error(
        "mesh.cert: the certificate is for node {cert_node:?} in region {cert_region:?}, but this agent is \
         node {node:?} in region {region:?} (issue one with `wedsync-agent cert issue --node {node} --region {region}`)"
    )]
    IdentityMismatch {
        /// Node id in the certificate.
        cert_node: String,
        /// Region in the certificate.
        cert_region: String,
        /// Configured node id.
        node: String,
        /// Configured region.
        region: String,
    },
    /// The QUIC endpoint could not be bound.
    #[error("mesh.listen: {0}")]
    Transport(#[from] TransportError),
    /// Peers could not be told where to reach this node.
    #[error(
        "mesh.advertise: mesh.listen {0} is not an address peers can reach; set mesh.advertise to this node's IP:PORT"
    )]
    NoAdvertise(SocketAddr),
}

/// Members of a region that are not alive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RegionHealth {
    /// Suspected.
    pub suspect: u32,
    /// Declared down.
    pub down: u32,
}

/// One member as `/v1/fleet` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    /// Node id.
    pub node: String,
    /// Region.
    pub region: String,
    /// Mesh address.
    pub addr: SocketAddr,
    /// Incarnation (grows at every restart).
    pub incarnation: u64,
    /// Whether this is the reporting node.
    pub this_node: bool,
    /// Its latest state, when known.
    pub state: Option<NodeState>,
}

/// A QUIC link to a peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    /// Remote address.
    pub addr: SocketAddr,
    /// Node id from its certificate.
    pub node: String,
    /// Region from its certificate.
    pub region: String,
    /// Smoothed round-trip time, milliseconds.
    pub rtt_ms: f64,
}

/// What this node knows of the fleet: `/v1/fleet`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FleetSnapshot {
    /// This node's id.
    pub node: String,
    /// This node's region.
    pub region: String,
    /// This node's mesh address, as advertised.
    pub addr: Option<SocketAddr>,
    /// This node's incarnation.
    pub incarnation: u64,
    /// Members believed alive (this node included), by node id.
    pub members: Vec<MemberReport>,
    /// Members by state.
    pub counts: MemberCounts,
    /// Per region, members suspected and members declared down.
    pub unhealthy: BTreeMap<String, RegionHealth>,
    /// Regions and their aggregates, with each region's coordinator.
    pub view: FleetView,
    /// Regions this node coordinates.
    pub coordinating: Vec<String>,
    /// Failovers proposed for regions whose every node is down or suspect.
    pub failovers: Vec<FailoverProposal>,
    /// QUIC links.
    pub peers: Vec<PeerReport>,
    /// Transport counters.
    pub transport: TransportStats,
    /// Gossip counters.
    pub mesh: MeshStats,
}

/// Cache-warm hints: `/v1/cache/hints`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct HintsSnapshot {
    /// Keys going viral fleet-wide, hottest first.
    pub hints: Vec<CacheHint>,
    /// The fleet's heaviest content keys in the last interval (the top 100 on a region
    /// coordinator, the heaviest few elsewhere).
    pub top: Vec<KeyEstimate>,
    /// Counters of the content exchange (for `/metrics`).
    #[serde(skip)]
    pub stats: ContentStats,
}

/// What the mesh task needs from the rest of its agent: the node's state to gossip, and where
/// its shares of failed regions' load go. The daemon links its engine ([`EngineLink`]); the
/// fleet simulator links each simulated node.
pub trait NodeLink: Send + Sync + std::fmt::Debug {
    /// This node's state now (None: nothing to publish yet).
    fn state(&self, region: &str) -> Option<NodeState>;

    /// This node's shares of failed regions' load, as its mesh computes them now (every state
    /// period; empty when no region it takes over from is down).
    fn failover(&self, now: Timestamp, shares: Vec<FailoverShare>);

    /// A membership change this node's mesh reported at `now`.
    fn event(&self, _now: Timestamp, _event: &MeshEvent) {}
}

/// The daemon's link: the state is the engine's latest view; failover shares go to the
/// decision thread as a command (the mesh task never touches the engine).
#[derive(Debug)]
pub struct EngineLink {
    /// The agent's engine.
    pub engine: EngineHandle,
    /// Logs of refused hand-overs, at most one a second.
    pub refusals_logged: Mutex<RateLimiter>,
}

impl EngineLink {
    /// A link to `engine`.
    pub fn new(engine: EngineHandle) -> Self {
        EngineLink { engine, refusals_logged: Mutex::new(RateLimiter::new(1)) }
    }
}

impl NodeLink for EngineLink {
    fn state(&self, region: &str) -> Option<NodeState> {
        let view = self.engine.view();
        Some(wedsync_mesh::node_state(&view.pools, view.active_weddings(region, crate::clock::wall_ms())))
    }

    /// Hands this node's share of a failed region's load to the engine. The mesh recomputes the
    /// shares every state period, so one that cannot be queued is counted, logged and sent
    /// again then.
    fn failover(&self, now: Timestamp, shares: Vec<FailoverShare>) {
        if shares.is_empty() {
            return;
        }
        if let Err(e) = self.engine.try_send(EngineCommand::Failover { at: now, shares })
            && let Some(suppressed) = lock(&self.refusals_logged).admit(Instant::now())
        {
            tracing::warn!(error = %e, suppressed, "failover shares not handed to the engine; the next state period sends them again");
        }
    }
}

/// Shared between the driver, the API and `/metrics`.
#[derive(Debug)]
pub struct FleetHandle {
    /// What the API serves (shared: the fleet simulator hands a restarted node's new mesh the
    /// same snapshot, so whoever reads it follows the node across incarnations).
    pub snapshot: Arc<RwLock<FleetSnapshot>>,
    /// Cache hints.
    pub hints: RwLock<HintsSnapshot>,
    /// Content keys counted from StatsD, waiting for the next interval.
    pub content: Arc<Mutex<IntervalSketch>>,
    /// The transport (stats, fault injection).
    pub transport: Transport,
    /// Whether `POST /v1/mesh/faults` is allowed.
    pub fault_injection: bool,
}

/// The mesh task's inputs, ready to run.
#[derive(Debug)]
pub struct FleetDriver {
    handle: Arc<FleetHandle>,
    mesh: Mesh,
    inbound: mpsc::Receiver<Inbound>,
    settings: MeshSettings,
    clock: Clock,
    link: Arc<dyn NodeLink>,
    content: ContentExchange,
    /// Failover proposals this node has already announced.
    announced_failovers: std::collections::BTreeSet<String>,
}

fn unix_ms() -> u64 {
    u64::try_from(crate::clock::wall_ms()).unwrap_or(0)
}

/// Loads (or makes) the certificate, binds the QUIC endpoint and builds the mesh. Nothing
/// runs until [`drive`] is spawned.
pub async fn start(
    settings: &MeshSettings,
    node_id: &str,
    region: &str,
    clock: Clock,
    link: Arc<dyn NodeLink>,
    snapshot: Option<Arc<RwLock<FleetSnapshot>>>,
) -> Result<(Arc<FleetHandle>, FleetDriver), FleetError> {
    let credentials = match &settings.tls {
        Some(files) => NodeCredentials::load(files.ca_cert.as_ref(), files.cert.as_ref(), files.key.as_ref())?,
        None => {
            tracing::warn!(
                "mesh: no certificates configured (mesh.ca_cert, mesh.cert, mesh.key); using a throwaway CA that \
                 only this node trusts, so this node is a fleet of one. Make real ones with `wedsync-agent ca init` \
                 and `wedsync-agent cert issue`"
            );
            NodeCredentials::throwaway(node_id, region)?
        }
    };
    let certified: &PeerIdentity = credentials.identity();
    if certified.node != node_id || certified.region != region {
        return Err(FleetError::IdentityMismatch {
            cert_node: certified.node.clone(),
            cert_region: certified.region.clone(),
            node: node_id.to_owned(),
            region: region.to_owned(),
        });
    }
    if settings.advertise.is_none() && settings.listen.ip().is_unspecified() {
        return Err(FleetError::NoAdvertise(settings.listen));
    }
    let (transport, inbound) = Transport::bind(TransportConfig::new(settings.listen, credentials)).await?;
    let advertise = settings.advertise.unwrap_or_else(|| transport.local_addr());
    // The wall clock at start: a restarted node always comes back with a higher incarnation,
    // so peers replace its old identity instead of listing it twice.
    let identity =
        NodeIdentity { id: node_id.to_owned(), region: region.to_owned(), addr: advertise, incarnation: unix_ms() };
    let profile = match settings.profile {
        MeshProfile::Lan => Profile::Lan,
        MeshProfile::Wan => Profile::Wan,
    };
    // The node id keeps nodes started in the same millisecond (the fleet simulator's) apart.
    let seed = unix_ms() ^ u64::from(std::process::id()).rotate_left(32) ^ fnv1a(node_id.as_bytes());
    let mesh = Mesh::new(identity.clone(), profile, settings.expected_size, seed);
    let interval_ms = u64::try_from(settings.content_interval.as_millis()).unwrap_or(1000);
    let first = FleetSnapshot {
        node: identity.id.clone(),
        region: identity.region.clone(),
        addr: Some(advertise),
        incarnation: identity.incarnation,
        ..FleetSnapshot::default()
    };
    let snapshot = match snapshot {
        Some(shared) => {
            *shared.write().unwrap_or_else(std::sync::PoisonError::into_inner) = first;
            shared
        }
        None => Arc::new(RwLock::new(first)),
    };
    let handle = Arc::new(FleetHandle {
        snapshot,
        hints: RwLock::new(HintsSnapshot::default()),
        content: Arc::new(Mutex::new(IntervalSketch::new(interval_ms))),
        transport,
        fault_injection: settings.fault_injection,
    });
    tracing::info!(node = %identity.id, region = %identity.region, addr = %advertise, seeds = settings.seeds.len(), "mesh endpoint ready");
    let content = ContentExchange::new(ViralConfig {
        interval_ms,
        min_rate_per_s: settings.viral_min_rate,
        growth_factor: settings.viral_growth,
        ..ViralConfig::default()
    });
    let driver = FleetDriver {
        handle: handle.clone(),
        mesh,
        inbound,
        settings: settings.clone(),
        clock,
        link,
        content,
        announced_failovers: Default::default(),
    };
    Ok((handle, driver))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl FleetDriver {
    /// The address peers reach this node at.
    pub fn addr(&self) -> SocketAddr {
        self.mesh.identity().addr
    }

    /// Replaces the clock the task runs on (the fleet simulator starts every node's clock
    /// together, once all their endpoints are bound).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Replaces the seeds this node announces itself to (the fleet simulator learns its
    /// nodes' addresses only once their endpoints are bound).
    pub fn set_seeds(&mut self, seeds: Vec<SocketAddr>) {
        self.settings.seeds = seeds;
    }

    fn flush(&mut self) {
        while let Some((to, frame)) = self.mesh.poll_transmit() {
            self.handle.transport.send(to, frame);
        }
        let now = self.clock.now();
        while let Some(event) = self.mesh.poll_event() {
            self.link.event(now, &event);
            match &event {
                MeshEvent::MemberUp(id) => {
                    tracing::info!(node = %id.id, region = %id.region, addr = %id.addr, "mesh: member up")
                }
                MeshEvent::MemberDown(id) => {
                    tracing::warn!(node = %id.id, region = %id.region, addr = %id.addr, "mesh: member down")
                }
                MeshEvent::Renamed { from, to } => tracing::info!(
                    node = %to.id, from = from.incarnation, to = to.incarnation, "mesh: member restarted"
                ),
                MeshEvent::Joined => tracing::info!("mesh: joined the fleet"),
                MeshEvent::Rejoined => tracing::warn!("mesh: was declared down; rejoined with a new incarnation"),
            }
        }
    }

    fn unhealthy_by_region(&self) -> BTreeMap<String, RegionHealth> {
        let mut out: BTreeMap<String, RegionHealth> = BTreeMap::new();
        for (member, health) in self.mesh.member_states() {
            let entry = out.entry(member.region.clone()).or_default();
            match health {
                MemberHealth::Suspect => entry.suspect += 1,
                MemberHealth::Down => entry.down += 1,
                MemberHealth::Alive => {}
            }
        }
        out.retain(|_, h| h.suspect + h.down > 0);
        out
    }

    fn publish_snapshot(&mut self) {
        let me = self.mesh.identity();
        let mut members: Vec<MemberReport> = std::iter::once((me, true))
            .chain(self.mesh.alive_members().map(|m| (m, false)))
            .map(|(id, this_node)| MemberReport {
                node: id.id.clone(),
                region: id.region.clone(),
                addr: id.addr,
                incarnation: id.incarnation,
                this_node,
                state: self.mesh.state_of(&id.id),
            })
            .collect();
        members.sort_by(|a, b| a.node.cmp(&b.node));
        let view = self.mesh.fleet_view();
        let coordinating =
            view.regions.iter().filter(|(_, r)| r.coordinator == me.id).map(|(name, _)| name.clone()).collect();
        let peers = self
            .handle
            .transport
            .peers()
            .into_iter()
            .map(|p| PeerReport {
                addr: p.addr,
                node: p.identity.node,
                region: p.identity.region,
                rtt_ms: p.rtt.as_secs_f64() * 1e3,
            })
            .collect();
        let snapshot = FleetSnapshot {
            node: me.id.clone(),
            region: me.region.clone(),
            addr: Some(me.addr),
            incarnation: me.incarnation,
            members,
            counts: self.mesh.member_counts(),
            unhealthy: self.unhealthy_by_region(),
            failovers: wedsync_mesh::failover_proposals(&self.mesh),
            view,
            coordinating,
            peers,
            transport: self.handle.transport.stats(),
            mesh: self.mesh.stats(),
        };
        for proposal in snapshot.failovers.iter().filter(|p| p.issued_here) {
            if self.announced_failovers.insert(proposal.id.clone()) {
                tracing::warn!(
                    id = %proposal.id,
                    failed_region = %proposal.failed_region,
                    target_region = %proposal.target_region,
                    load_to_move = proposal.load_to_move,
                    "mesh: region failed; this coordinator proposes failing its traffic over"
                );
            }
        }
        *self.handle.snapshot.write().unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        let hints =
            HintsSnapshot { hints: self.content.hints(), top: self.content.top(100), stats: self.content.stats() };
        *self.handle.hints.write().unwrap_or_else(std::sync::PoisonError::into_inner) = hints;
    }

    /// Hands the link this node's shares of failed regions' load: for every failover proposal
    /// targeting this node's region, per pool name, the failed members' last known load of that
    /// pool, split over this region's alive members that run the pool.
    fn apply_failovers(&self, now: Timestamp) {
        self.link.failover(now, wedsync_mesh::failover_shares(&self.mesh));
    }

    fn join_seeds(&mut self, now: Timestamp) {
        let me = self.mesh.identity().addr;
        for seed in self.settings.seeds.clone() {
            if seed == me {
                continue;
            }
            if let Err(e) = self.mesh.join_addr(now, seed) {
                tracing::warn!(%seed, error = %e, "mesh: cannot announce to seed");
            }
        }
    }
}

fn instant_of(clock: &Clock, at: Timestamp) -> tokio::time::Instant {
    tokio::time::Instant::now() + clock.instant_of(at).saturating_duration_since(Instant::now())
}

/// Runs the mesh until `stop`, then leaves the fleet gracefully and closes the endpoint.
pub async fn drive(mut driver: FleetDriver, stop: CancellationToken) {
    let clock = driver.clock;
    driver.join_seeds(clock.now());
    driver.flush();
    // Periods are in the clock's time (the fleet simulator's runs faster than the wall's).
    let mut state_tick = tokio::time::interval(clock.wall(driver.settings.state_interval));
    state_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Seeds are retried while this node knows nobody (they may start after it).
    let mut seed_retry = tokio::time::interval(clock.wall(Duration::from_secs(2)));
    seed_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut published: Option<(NodeState, Timestamp)> = None;
    let snapshot_period = clock.wall(SNAPSHOT_PERIOD);
    let mut last_snapshot: Option<Instant> = None;
    let mut refusals_logged = RateLimiter::new(2);
    loop {
        let wake = driver.mesh.poll_timeout().map(|at| instant_of(&clock, at));
        let content_wake = {
            let now = unix_ms();
            tokio::time::Instant::now() + Duration::from_millis(driver.content.next_tick(now).saturating_sub(now))
        };
        tokio::select! {
            () = stop.cancelled() => break,
            inbound = driver.inbound.recv() => {
                let Some(inbound) = inbound else { break };
                let peer = (inbound.peer.node.as_str(), inbound.peer.region.as_str());
                if inbound.frame.first() == Some(&FRAME_CONTENT) {
                    if let Err(e) = driver.content.handle(unix_ms(), &inbound.frame) {
                        log_refusal(&mut refusals_logged, inbound.from, &inbound.peer, &e);
                    }
                } else if let Err(e) = driver.mesh.handle_datagram_from(clock.now(), Some(peer), &inbound.frame) {
                    log_refusal(&mut refusals_logged, inbound.from, &inbound.peer, &e);
                }
            }
            () = async { if let Some(at) = wake { tokio::time::sleep_until(at).await } else { std::future::pending().await } } => {
                if let Err(e) = driver.mesh.handle_timeout(clock.now()) {
                    tracing::debug!(error = %e, "mesh timer");
                }
            }
            _ = state_tick.tick() => {
                let now = clock.now();
                if let Some(state) = driver.link.state(&driver.mesh.identity().region)
                    && wedsync_mesh::state_due(published.as_ref(), &state, now)
                {
                    match driver.mesh.set_own_state(state.clone()) {
                        Ok(()) => published = Some((state, now)),
                        Err(e) => tracing::warn!(error = %e, "mesh: cannot publish this node's state"),
                    }
                }
                driver.apply_failovers(now);
            }
            () = tokio::time::sleep_until(content_wake) => {
                let now = unix_ms();
                let closed: Vec<_> = {
                    let mut sketch = lock(&driver.handle.content);
                    std::iter::from_fn(|| sketch.take_closed(now)).collect()
                };
                for (to, frame) in driver.content.tick(now, closed, &driver.mesh) {
                    driver.handle.transport.send(to, frame);
                }
            }
            _ = seed_retry.tick() => {
                if driver.mesh.alive_members().next().is_none() {
                    driver.join_seeds(clock.now());
                }
            }
        }
        driver.flush();
        if last_snapshot.is_none_or(|at| at.elapsed() >= snapshot_period) {
            driver.publish_snapshot();
            last_snapshot = Some(Instant::now());
        }
    }
    if let Err(e) = driver.mesh.leave(clock.now()) {
        tracing::debug!(error = %e, "mesh: leave");
    }
    driver.flush();
    tokio::time::sleep(LEAVE_GRACE).await;
    driver.handle.transport.close().await;
    tracing::info!("mesh: left the fleet");
}

fn log_refusal(limiter: &mut RateLimiter, from: SocketAddr, peer: &PeerIdentity, error: &dyn std::fmt::Display) {
    if let Some(suppressed) = limiter.admit(Instant::now()) {
        tracing::warn!(%from, node = %peer.node, region = %peer.region, %error, suppressed, "mesh: refused a frame");
    }
}

/// `/metrics` for the mesh: members by state, traffic, refusals, probe round trips, regions.
#[derive(Debug)]
pub struct FleetCollector {
    /// The mesh's shared state.
    pub fleet: Arc<FleetHandle>,
}

impl prometheus_client::collector::Collector for FleetCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use crate::clock::read;
        use crate::telemetry::{counter, gauge};
        let snapshot = read(&self.fleet.snapshot).clone();
        let t = self.fleet.transport.stats();
        let c = &snapshot.counts;
        gauge(
            &mut encoder,
            "wedsync_mesh_members",
            "Fleet members this node knows, by state (alive includes this node)",
            [
                ([("state", "alive")], (c.alive + 1) as f64),
                ([("state", "suspect")], c.suspect as f64),
                ([("state", "down")], c.down as f64),
            ],
        )?;
        counter(
            &mut encoder,
            "wedsync_mesh_frames",
            "Mesh frames by direction and carrier (QUIC datagram or stream)",
            [
                ([("direction", "out"), ("carrier", "datagram")], t.datagrams_out),
                ([("direction", "in"), ("carrier", "datagram")], t.datagrams_in),
                ([("direction", "out"), ("carrier", "stream")], t.streams_out),
                ([("direction", "in"), ("carrier", "stream")], t.streams_in),
            ],
        )?;
        counter(
            &mut encoder,
            "wedsync_mesh_bytes",
            "Mesh frame bytes by direction",
            [([("direction", "out")], t.bytes_out), ([("direction", "in")], t.bytes_in)],
        )?;
        counter(
            &mut encoder,
            "wedsync_mesh_dropped_frames",
            "Mesh frames dropped before delivery, by reason",
            [
                ([("reason", "send_queue_full")], t.dropped_queue_full),
                ([("reason", "oversized")], t.dropped_oversized),
                ([("reason", "inbound_queue_full")], t.dropped_inbound_full),
                ([("reason", "fault_injection")], t.dropped_fault),
                ([("reason", "unreachable")], t.dropped_unreachable),
            ],
        )?;
        counter(
            &mut encoder,
            "wedsync_mesh_refused_handshakes",
            "QUIC handshakes refused: certificate not from the fleet CA, or no node identity in it",
            [([("reason", "tls")], t.refused_handshakes)],
        )?;
        counter(
            &mut encoder,
            "wedsync_mesh_connect_failures",
            "Connections to peers that failed",
            [(none(), t.connect_failures)],
        )?;
        gauge(
            &mut encoder,
            "wedsync_mesh_connections",
            "Open QUIC connections",
            [(none(), t.connections_open as f64)],
        )?;
        counter(
            &mut encoder,
            "wedsync_mesh_refused_frames",
            "Mesh frames refused after delivery, by reason",
            snapshot.mesh.refusals().into_iter().map(|(reason, n)| ([("reason", reason)], n)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_mesh_peer_rtt_seconds",
            "Smoothed QUIC round-trip time to each connected peer",
            snapshot.peers.iter().map(|p| ([("peer", p.node.as_str())], p.rtt_ms / 1e3)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_mesh_region_members",
            "Alive members per region",
            snapshot.view.regions.iter().map(|(name, r)| ([("region", name.as_str())], r.members as f64)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_mesh_region_load",
            "Load per region (requests/s), from members' gossiped state",
            snapshot.view.regions.iter().map(|(name, r)| ([("region", name.as_str())], r.load)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_mesh_region_capacity",
            "Capacity per region (requests/s), from members' gossiped state",
            snapshot.view.regions.iter().map(|(name, r)| ([("region", name.as_str())], r.capacity)),
        )?;
        gauge(
            &mut encoder,
            "wedsync_mesh_coordinator",
            "1 for each region this node coordinates",
            snapshot.coordinating.iter().map(|region| ([("region", region.as_str())], 1.0)),
        )?;
        let (hints, content) = {
            let snapshot = read(&self.fleet.hints);
            (snapshot.hints.len(), snapshot.stats)
        };
        counter(
            &mut encoder,
            "wedsync_mesh_content_frames",
            "Viral-content exchange frames: sent, refused (malformed), late (after their interval was merged)",
            [
                ([("outcome", "sent")], content.frames_out),
                ([("outcome", "refused")], content.refused),
                ([("outcome", "late")], content.late),
            ],
        )?;
        counter(
            &mut encoder,
            "wedsync_mesh_content_bytes_out",
            "Bytes of viral-content exchange frames sent",
            [(none(), content.bytes_out)],
        )?;
        gauge(
            &mut encoder,
            "wedsync_mesh_cache_hints",
            "Viral content keys hinted for cache warming",
            [(none(), hints as f64)],
        )
    }
}

fn none() -> [(&'static str, &'static str); 0] {
    []
}
