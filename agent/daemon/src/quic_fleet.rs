//! The fleet simulator's real mesh: every simulated node gets the agent's own mesh task
//! ([`crate::fleet::drive`]) over its own QUIC endpoint on loopback, with a certificate issued by
//! a fleet CA made for the run (the same files `wedsync-agent ca init` and `cert issue` write,
//! loaded the way `run` loads them). The mesh's clock runs at the simulation's speed, so its
//! timers (probe period, suspicion, state heartbeat) keep their scenario-time meaning and the
//! figures it reports are in scenario seconds.
//!
//! A node's engine lives in the simulator's loop; its [`SimLink`] carries the engine's state to
//! the mesh task and the mesh's failover shares back, as [`crate::fleet::EngineLink`] does in the
//! daemon.

use crate::clock::{Clock, lock};
use crate::config::{MeshProfile, MeshSettings, MeshTlsFiles};
use crate::fleet::{FleetDriver, FleetError, FleetHandle, FleetSnapshot, NodeLink};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wedsync_core::Timestamp;
use wedsync_mesh::sim::FRAME_OVERHEAD;
use wedsync_mesh::{FailoverShare, MeshEvent, NodeState};
use wedsync_sim::{FleetMesh, MeshPlan};

/// Most nodes the real mesh runs: each is a QUIC endpoint and a mesh task in this process.
/// Larger fleets are what `--virtual` is for.
pub const MAX_QUIC_NODES: usize = 200;
/// The fastest the mesh's clock may run: at 1000x a 1 s probe period is 1 ms of wall time.
pub const MAX_SPEED: f64 = 1000.0;
/// Most membership-down events kept per node (a run's outages make a few per victim).
const MAX_DOWNS: usize = 10_000;
/// Time the mesh tasks get to leave when the run ends.
const LEAVE_WAIT: Duration = Duration::from_secs(3);

/// Why the real mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicFleetError {
    /// Too many nodes for one process.
    #[error("{0} nodes: the real QUIC mesh runs at most {MAX_QUIC_NODES} (one endpoint each); use --virtual")]
    TooMany(usize),
    /// The speed is not usable.
    #[error("--speed {0}: must be a number above 0 and at most 1000")]
    Speed(f64),
    /// The async runtime could not start.
    #[error("async runtime: {0}")]
    Runtime(std::io::Error),
    /// The run's certificates could not be made.
    #[error("fleet certificates in {dir}: {source}")]
    Pki {
        /// Where they were being written.
        dir: PathBuf,
        /// Why.
        source: wedsync_transport::PkiError,
    },
    /// A node's mesh could not start.
    #[error("node {node}: {source}")]
    Node {
        /// The node.
        node: String,
        /// Why.
        source: FleetError,
    },
}

/// What passes between a simulated node's engine (in the simulator's loop) and its mesh task.
#[derive(Debug, Default)]
pub struct SimLink {
    inner: Mutex<LinkState>,
}

#[derive(Debug, Default)]
struct LinkState {
    /// The engine's latest state.
    state: Option<NodeState>,
    /// The mesh's latest failover shares, not yet taken by the engine.
    shares: Option<Vec<FailoverShare>>,
    /// When this node's mesh declared which member down.
    downs: Vec<(Timestamp, String)>,
}

impl NodeLink for SimLink {
    fn state(&self, _region: &str) -> Option<NodeState> {
        lock(&self.inner).state.clone()
    }

    fn failover(&self, _now: Timestamp, shares: Vec<FailoverShare>) {
        lock(&self.inner).shares = Some(shares);
    }

    fn event(&self, now: Timestamp, event: &MeshEvent) {
        if let MeshEvent::MemberDown(member) = event {
            let mut inner = lock(&self.inner);
            if inner.downs.len() < MAX_DOWNS {
                inner.downs.push((now, member.id.clone()));
            }
        }
    }
}

struct QuicNode {
    id: String,
    region: String,
    link: Arc<SimLink>,
    /// The first incarnation's handle: its snapshot is every incarnation's.
    first: Arc<FleetHandle>,
    /// The running incarnation's handle (None: killed). It stays after the run ends, for the
    /// figures.
    running: Option<Arc<FleetHandle>>,
    /// The running incarnation's mesh task and its stop token.
    task: Option<(JoinHandle<()>, CancellationToken)>,
    /// Handles of killed incarnations, closed at the end.
    dead: Vec<Arc<FleetHandle>>,
}

/// The fleet's mesh over real QUIC: one endpoint and mesh task per node, in this process.
pub struct QuicFleet {
    runtime: Runtime,
    clock: Clock,
    expected_size: u32,
    pki: PathBuf,
    nodes: Vec<QuicNode>,
    /// Bound nodes' mesh tasks, waiting for [`QuicFleet::launch`].
    pending: Vec<FleetDriver>,
    seeds: Vec<usize>,
    max_lag_s: f64,
    /// The mesh runtime's worst lateness waking a timer, wall nanoseconds: the mesh tasks'
    /// share of falling behind, which the simulator's own loop does not see.
    runtime_late_ns: Arc<AtomicU64>,
}

impl QuicFleet {
    /// [`QuicFleet::bind`], then [`QuicFleet::launch`].
    pub fn start(plan: &MeshPlan, speed: f64, pki: &Path) -> Result<QuicFleet, QuicFleetError> {
        let mut fleet = Self::bind(plan, speed, pki)?;
        fleet.launch();
        Ok(fleet)
    }

    /// Makes a fleet CA in `pki` (a fresh directory), issues every member a certificate and
    /// binds each member's endpoint on 127.0.0.1. Nothing is sent until [`QuicFleet::launch`];
    /// meanwhile each node's [`FleetHandle`] is there for its plugin stage.
    pub fn bind(plan: &MeshPlan, speed: f64, pki: &Path) -> Result<QuicFleet, QuicFleetError> {
        Self::check(plan.members.len(), speed)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sim-mesh")
            .enable_all()
            .build()
            .map_err(QuicFleetError::Runtime)?;
        let pki_error = |source| QuicFleetError::Pki { dir: pki.to_owned(), source };
        wedsync_transport::init_ca(pki).map_err(pki_error)?;
        let mut fleet = QuicFleet {
            runtime,
            clock: Clock::with_speed(speed),
            expected_size: u32::try_from(plan.members.len()).unwrap_or(u32::MAX),
            pki: pki.to_owned(),
            nodes: Vec::new(),
            pending: Vec::new(),
            seeds: plan.seeds.clone(),
            max_lag_s: 0.0,
            runtime_late_ns: Arc::new(AtomicU64::new(0)),
        };
        for (id, region) in &plan.members {
            wedsync_transport::issue_node_cert(pki, id, region, pki).map_err(pki_error)?;
            let link = Arc::new(SimLink::default());
            let (handle, driver) = fleet.bind_node(id, region, link.clone(), None)?;
            fleet.pending.push(driver);
            fleet.nodes.push(QuicNode {
                id: id.clone(),
                region: region.clone(),
                link,
                first: handle.clone(),
                running: Some(handle),
                task: None,
                dead: Vec::new(),
            });
        }
        Ok(fleet)
    }

    /// Starts every bound node's mesh task, each announcing itself to the plan's seeds. The
    /// mesh's clock starts now (the run's t = 0) and runs at the fleet's speed. Once only.
    pub fn launch(&mut self) {
        self.runtime.spawn(watch_lateness(self.runtime_late_ns.clone()));
        let seeds: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter_map(|s| self.nodes.get(*s)?.running.as_ref())
            .map(|h| h.transport.local_addr())
            .collect();
        self.clock = Clock::with_speed(self.clock.speed());
        for (i, mut driver) in std::mem::take(&mut self.pending).into_iter().enumerate() {
            driver.set_seeds(seeds.clone());
            driver.set_clock(self.clock);
            let handle = self.nodes[i].first.clone();
            self.spawn(i, handle, driver);
        }
    }

    /// The members, in node order, as (node id, region).
    pub fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes.iter().map(|n| (n.id.as_str(), n.region.as_str()))
    }

    /// Node `i`'s handle: its snapshot (what its API would serve, and what its plugin stage
    /// reads) follows the node across restarts.
    pub fn handle(&self, i: usize) -> Option<Arc<FleetHandle>> {
        self.nodes.get(i).map(|n| n.first.clone())
    }

    /// Whether a fleet of `nodes` can run at `speed` (checked before anything starts).
    pub fn check(nodes: usize, speed: f64) -> Result<(), QuicFleetError> {
        if nodes > MAX_QUIC_NODES {
            return Err(QuicFleetError::TooMany(nodes));
        }
        if !(speed.is_finite() && speed > 0.0 && speed <= MAX_SPEED) {
            return Err(QuicFleetError::Speed(speed));
        }
        Ok(())
    }

    /// A node's `[mesh]` settings; its seeds are set once every endpoint's address is known.
    fn settings(&self, id: &str) -> MeshSettings {
        let file = |name: String| self.pki.join(name).display().to_string();
        MeshSettings {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise: None,
            seeds: Vec::new(),
            profile: MeshProfile::Wan,
            expected_size: self.expected_size,
            tls: Some(MeshTlsFiles {
                ca_cert: file("ca.pem".into()),
                cert: file(format!("{id}.pem")),
                key: file(format!("{id}.key")),
            }),
            state_interval: Duration::from_secs(1),
            content_interval: Duration::from_secs(1),
            viral_min_rate: 50.0,
            viral_growth: 3.0,
            fault_injection: false,
        }
    }

    fn bind_node(
        &self,
        id: &str,
        region: &str,
        link: Arc<SimLink>,
        snapshot: Option<Arc<RwLock<FleetSnapshot>>>,
    ) -> Result<(Arc<FleetHandle>, FleetDriver), QuicFleetError> {
        let settings = self.settings(id);
        self.runtime
            .block_on(crate::fleet::start(&settings, id, region, self.clock, link, snapshot))
            .map_err(|source| QuicFleetError::Node { node: id.to_owned(), source })
    }

    fn spawn(&mut self, i: usize, handle: Arc<FleetHandle>, driver: FleetDriver) {
        let stop = CancellationToken::new();
        let task = self.runtime.spawn(crate::fleet::drive(driver, stop.clone()));
        self.nodes[i].running = Some(handle);
        self.nodes[i].task = Some((task, stop));
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Arc<FleetHandle>)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.running.as_ref().map(|h| (i, h)))
    }

    fn sent(handle: &FleetHandle) -> u64 {
        let t = handle.transport.stats();
        t.bytes_out + (t.datagrams_out + t.streams_out) * FRAME_OVERHEAD
    }
}

impl FleetMesh for QuicFleet {
    fn describe(&self) -> String {
        format!(
            "real QUIC, one endpoint per node on 127.0.0.1 with certificates from a fleet CA made for the run, \
             the agent's own mesh task on each; the mesh's clock at {}x the wall clock",
            self.clock.speed()
        )
    }

    fn advance(&mut self, now: Timestamp) {
        let due = self.clock.instant_of(now);
        let wall_now = Instant::now();
        if due > wall_now {
            std::thread::sleep(due - wall_now);
        } else {
            let behind = self.clock.now().saturating_since(now).as_secs_f64();
            self.max_lag_s = self.max_lag_s.max(behind);
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn kill(&mut self, i: usize) {
        let Some(node) = self.nodes.get_mut(i) else { return };
        if let Some(handle) = node.running.take() {
            // A crash: no goodbye, and nothing gets through to or from the node any more.
            handle.transport.faults().block_all();
            if let Some((task, _)) = node.task.take() {
                task.abort();
            }
            node.dead.push(handle);
        }
    }

    fn restart(&mut self, i: usize, seed: usize) {
        if self.nodes.get(i).is_none_or(|n| n.running.is_some()) {
            return;
        }
        let seed_addr = self
            .nodes
            .get(seed)
            .and_then(|n| n.running.as_ref())
            .or_else(|| self.nodes.iter().find_map(|n| n.running.as_ref()))
            .map(|h| h.transport.local_addr());
        let node = &self.nodes[i];
        let (id, region, link) = (node.id.clone(), node.region.clone(), node.link.clone());
        let snapshot = Some(node.first.snapshot.clone());
        match self.bind_node(&id, &region, link, snapshot) {
            Ok((handle, mut driver)) => {
                driver.set_seeds(seed_addr.into_iter().collect());
                self.spawn(i, handle, driver);
            }
            Err(e) => tracing::warn!(node = %id, error = %e, "sim: a restarted node's mesh could not start"),
        }
    }

    fn offer_state(&mut self, i: usize, state: NodeState) {
        if let Some(node) = self.nodes.get(i) {
            lock(&node.link.inner).state = Some(state);
        }
    }

    fn failover_shares(&mut self, i: usize) -> Vec<FailoverShare> {
        self.nodes.get(i).and_then(|n| lock(&n.link.inner).shares.take()).unwrap_or_default()
    }

    fn converged(&self) -> bool {
        let snapshots: Vec<_> = self.running().map(|(_, h)| crate::clock::read(&h.snapshot).clone()).collect();
        let running: std::collections::BTreeSet<(String, u64)> =
            snapshots.iter().map(|s| (s.node.clone(), s.incarnation)).collect();
        snapshots.iter().all(|s| {
            let alive: std::collections::BTreeSet<(String, u64)> =
                s.members.iter().map(|m| (m.node.clone(), m.incarnation)).collect();
            alive == running
        })
    }

    fn coordinators_agree(&self) -> bool {
        let mut views = self.running().map(|(_, h)| coordinators_of(h));
        let Some(first) = views.next() else { return true };
        views.all(|v| v == first)
    }

    fn coordinators(&self) -> Option<Vec<(String, String)>> {
        self.running().next().map(|(_, h)| coordinators_of(h))
    }

    fn down_by_all_at(&self, victim: usize, since: Timestamp) -> Option<Timestamp> {
        let victim_id = &self.nodes.get(victim)?.id;
        let mut last = since;
        for (i, _) in self.running() {
            if i == victim {
                continue;
            }
            let inner = lock(&self.nodes[i].link.inner);
            let seen =
                inner.downs.iter().filter(|(at, id)| *at >= since && id == victim_id).map(|(at, _)| *at).min()?;
            last = last.max(seen);
        }
        Some(last)
    }

    fn bytes_sent(&self, i: usize) -> u64 {
        let Some(node) = self.nodes.get(i) else { return 0 };
        node.dead.iter().chain(&node.running).map(|h| Self::sent(h)).sum()
    }

    fn max_lag_s(&self) -> f64 {
        let runtime = Duration::from_nanos(self.runtime_late_ns.load(Ordering::Relaxed)).as_secs_f64();
        self.max_lag_s.max(runtime * self.clock.speed())
    }

    fn finish(&mut self) {
        let mut tasks = Vec::new();
        let mut handles = Vec::new();
        for node in &mut self.nodes {
            if let Some((task, stop)) = node.task.take() {
                // The mesh task leaves the fleet on the way out.
                stop.cancel();
                tasks.push(task);
            }
            handles.extend(node.dead.iter().chain(&node.running).cloned());
        }
        self.runtime.block_on(async move {
            let _ = tokio::time::timeout(LEAVE_WAIT, async {
                for task in tasks {
                    let _ = task.await;
                }
                for handle in handles {
                    handle.transport.close().await;
                }
            })
            .await;
        });
        let _ = std::fs::remove_dir_all(&self.pki);
    }
}

/// How often the lateness watch wakes, wall time.
const WATCH_PERIOD: Duration = Duration::from_millis(5);

/// Wakes every [`WATCH_PERIOD`] on the mesh runtime and keeps the worst lateness: when the mesh
/// tasks saturate the runtime (a burst of TLS handshakes at high speed), their timers fire late
/// by the same amount. Ends with the runtime.
async fn watch_lateness(worst_ns: Arc<AtomicU64>) {
    loop {
        let due = tokio::time::Instant::now() + WATCH_PERIOD;
        tokio::time::sleep_until(due).await;
        let late = tokio::time::Instant::now().saturating_duration_since(due);
        worst_ns.fetch_max(u64::try_from(late.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

fn coordinators_of(handle: &FleetHandle) -> Vec<(String, String)> {
    let snapshot = crate::clock::read(&handle.snapshot);
    snapshot.view.regions.iter().map(|(region, view)| (region.clone(), view.coordinator.clone())).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use wedsync_mesh::{MeshConfig, PoolFigures, Profile};

    fn plan() -> MeshPlan {
        let members = [("eu-1", "eu-west"), ("eu-2", "eu-west"), ("us-1", "us-east")];
        MeshPlan {
            members: members.iter().map(|(n, r)| ((*n).to_owned(), (*r).to_owned())).collect(),
            config: MeshConfig::new(Profile::Wan, 3),
            seed: 1,
            seeds: vec![0, 2],
        }
    }

    fn state(load: f64) -> NodeState {
        NodeState {
            node: String::new(),
            region: String::new(),
            version: 0,
            capacity: 1000.0,
            load,
            healthy: true,
            active_weddings: 0,
            pools: vec![PoolFigures { pool: "web".into(), capacity: 1000.0, load, class_load: [0.0; 5] }],
        }
    }

    /// Steps the fleet's clock a quarter of a scenario second at a time, offering every running
    /// node's state, until `done` or `limit_s` scenario seconds; returns the seconds it took.
    fn until(fleet: &mut QuicFleet, limit_s: u64, mut done: impl FnMut(&mut QuicFleet) -> bool) -> Option<f64> {
        let start = fleet.now();
        for step in 1..=limit_s * 4 {
            let now = Timestamp::from_nanos(start.as_nanos() + step * 250_000_000);
            fleet.advance(now);
            for i in 0..fleet.nodes.len() {
                fleet.offer_state(i, state(100.0 * (i + 1) as f64));
            }
            if done(fleet) {
                return Some(now.saturating_since(start).as_secs_f64());
            }
        }
        None
    }

    #[test]
    fn real_endpoints_converge_see_a_crash_hand_its_load_over_and_take_a_restart_back() {
        let pki = std::env::temp_dir().join(format!("wedsync-quic-fleet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&pki);
        let mut fleet = QuicFleet::start(&plan(), 20.0, &pki).unwrap();
        assert!(fleet.describe().contains("QUIC") && fleet.describe().contains("20x"), "{}", fleet.describe());
        // Every node certificate came from the run's CA, on disk as operators' are.
        assert!(pki.join("ca.pem").exists() && pki.join("us-1.key").exists());

        assert!(until(&mut fleet, 30, |f| f.converged()).is_some(), "the fleet never converged");
        assert!(until(&mut fleet, 10, |f| f.coordinators_agree()).is_some());
        let coordinators = fleet.coordinators().unwrap();
        assert_eq!(coordinators.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), ["eu-west", "us-east"]);

        // us-east's only node crashes: both eu nodes see it down and take over its load.
        // Every node's state reached eu-1 (gossip of states starts once the mesh settled).
        let states_known = |f: &mut QuicFleet| {
            let handle = f.nodes[0].running.clone().unwrap();
            let snapshot = crate::clock::read(&handle.snapshot);
            snapshot.members.len() == 3 && snapshot.members.iter().all(|m| m.state.is_some())
        };
        assert!(until(&mut fleet, 60, states_known).is_some(), "states never spread");
        let watched = fleet.handle(2).unwrap();
        let first_incarnation = crate::clock::read(&watched.snapshot).incarnation;
        let since = fleet.now();
        fleet.kill(2);
        let mut shares = Vec::new();
        let detected = until(&mut fleet, 60, |f| {
            shares.extend(f.failover_shares(0));
            f.down_by_all_at(2, since).is_some() && !shares.is_empty()
        });
        assert!(detected.is_some(), "the crash was never seen by all, or no failover share: {shares:?}");
        let seen = fleet.down_by_all_at(2, since).unwrap().saturating_since(since).as_secs_f64();
        assert!(seen > 0.5 && seen < 30.0, "detected after {seen} s");
        let share = &shares[0];
        assert_eq!((share.failed_region.as_str(), share.pool.as_str()), ("us-east", "web"));
        // us-1 carried 300 req/s; eu-west's two nodes take half each.
        assert!((share.load - 150.0).abs() < 1e-6, "{share:?}");
        assert!(until(&mut fleet, 30, |f| f.converged()).is_some(), "not converged without the dead node");

        // It comes back with a new incarnation and a new endpoint, and is taken back.
        fleet.restart(2, 0);
        assert!(until(&mut fleet, 30, |f| f.converged()).is_some(), "the restarted node was not taken back");
        // The first incarnation's handle (what its plugin stage holds) shows the new one.
        let now_seen = crate::clock::read(&watched.snapshot).clone();
        assert!(now_seen.incarnation > first_incarnation && now_seen.members.len() == 3, "{now_seen:?}");
        assert!(fleet.bytes_sent(2) > 0 && fleet.bytes_sent(0) > fleet.bytes_sent(2));
        fleet.finish();
        assert!(!pki.exists(), "the run's keys are removed at the end");
    }

    #[test]
    fn a_busy_mesh_runtime_shows_as_lateness() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let worst = Arc::new(AtomicU64::new(0));
        runtime.block_on(async {
            let watch = tokio::spawn(watch_lateness(worst.clone()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Hog the runtime's only thread: the watch's timer cannot fire meanwhile.
            std::thread::sleep(Duration::from_millis(60));
            tokio::time::sleep(Duration::from_millis(20)).await;
            watch.abort();
        });
        let late = Duration::from_nanos(worst.load(Ordering::Relaxed));
        assert!(late >= Duration::from_millis(40), "{late:?}");
    }

    #[test]
    fn fleets_too_large_or_too_fast_are_refused() {
        let dir = std::env::temp_dir().join(format!("wedsync-quic-refused-{}", std::process::id()));
        let mut big = plan();
        big.members = (0..=MAX_QUIC_NODES).map(|i| (format!("n-{i}"), "eu-west".to_owned())).collect();
        let err = QuicFleet::start(&big, 10.0, &dir).err().unwrap().to_string();
        assert!(err.contains("--virtual"), "{err}");
        for speed in [0.0, -1.0, f64::NAN, 5000.0] {
            let err = QuicFleet::start(&plan(), speed, &dir).err().unwrap().to_string();
            assert!(err.contains("--speed"), "{err}");
        }
        assert!(!dir.exists(), "nothing was written");
    }
}
