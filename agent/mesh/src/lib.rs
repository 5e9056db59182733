//! The fleet mesh, sans-IO: SWIM membership (foca) plus dissemination of a small, versioned
//! record of each node's state, and the fleet view every node derives from the members it
//! believes alive (regional aggregates and one coordinator per region).
//!
//! Like the engine, [`Mesh`] never reads a clock or touches a socket: feed it datagrams and
//! `now`, drain [`Mesh::poll_transmit`] and [`Mesh::poll_event`], and call
//! [`Mesh::handle_timeout`] when [`Mesh::poll_timeout`] says. The daemon drives it over QUIC;
//! [`sim`] drives many of them in virtual time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod sim;

use foca::{BroadcastHandler, Config, Foca, Invalidates, Notification, PostcardCodec, Runtime, Timer};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wedsync_core::Timestamp;

/// Largest encoded [`NodeState`] accepted from a peer.
pub const MAX_STATE_BYTES: usize = 512;
/// Most node states one anti-entropy exchange carries.
pub const MAX_SYNC_STATES: usize = 4096;

/// First byte of every datagram: what follows.
const FRAME_SWIM: u8 = 0;
const FRAME_SYNC: u8 = 1;

/// A full state exchange (anti-entropy): the sender's whole table; `reply` asks for the
/// receiver's in return (push-pull).
#[derive(Debug, Serialize, Deserialize)]
struct SyncMessage {
    reply: bool,
    states: Vec<NodeState>,
}

/// Who a node is. A restarted node rejoins with a higher incarnation, which wins over the old
/// identity at the same address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Where its mesh endpoint listens.
    pub addr: SocketAddr,
    /// Bumped at every restart and whenever the node must refute being declared down.
    pub incarnation: u64,
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity { incarnation: self.incarnation.wrapping_add(1), ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// The small record each node disseminates about itself; the newest version wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Node id.
    pub node: String,
    /// Region.
    pub region: String,
    /// Increases with every change the node publishes.
    pub version: u64,
    /// Capacity the node serves (requests/s).
    pub capacity: f64,
    /// Load on it (requests/s).
    pub load: f64,
    /// Whether the node considers itself healthy.
    pub healthy: bool,
    /// Weddings active in its region, as the node sees them.
    pub active_weddings: u32,
}

/// Key of a state broadcast: a newer version of a node's state replaces an older one in the
/// dissemination backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    node: String,
    version: u64,
}

impl Invalidates for StateKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && self.version >= other.version
    }
}

/// Why a peer's state broadcast was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Larger than [`MAX_STATE_BYTES`].
    #[error("node state of {0} bytes is larger than {MAX_STATE_BYTES}")]
    TooLarge(usize),
    /// Not a postcard-encoded [`NodeState`].
    #[error("node state does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// A figure is not a finite, non-negative number.
    #[error("node state of {0:?} holds a negative or non-finite figure")]
    BadFigure(String),
}

type StateTable = Arc<Mutex<BTreeMap<String, NodeState>>>;

/// Keeps the newest state of every node and tells foca what is worth passing on.
#[derive(Debug)]
struct StateBroadcasts {
    table: StateTable,
}

impl BroadcastHandler<NodeIdentity> for StateBroadcasts {
    type Key = StateKey;
    type Error = StateError;

    fn receive_item(&mut self, data: &[u8], _sender: Option<&NodeIdentity>) -> Result<Option<StateKey>, StateError> {
        if data.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLarge(data.len()));
        }
        let state: NodeState = postcard::from_bytes(data)?;
        if !(state.capacity.is_finite() && state.capacity >= 0.0 && state.load.is_finite() && state.load >= 0.0) {
            return Err(StateError::BadFigure(state.node));
        }
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.get(&state.node).is_some_and(|held| held.version >= state.version) {
            return Ok(None);
        }
        let key = StateKey { node: state.node.clone(), version: state.version };
        table.insert(state.node.clone(), state);
        Ok(Some(key))
    }
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// A member became active.
    MemberUp(NodeIdentity),
    /// A member was declared down.
    MemberDown(NodeIdentity),
    /// A member came back with a newer identity at the same address.
    Renamed {
        /// The old identity.
        from: NodeIdentity,
        /// The new one.
        to: NodeIdentity,
    },
    /// This node is known by at least one active member.
    Joined,
    /// This node was declared down and has rejoined with a renewed identity.
    Rejoined,
}

/// Timing profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Low-latency networks: 1 s probe period.
    Lan,
    /// Wide-area: 5 s probe period, longer suspicion.
    Wan,
}

/// Collects what foca asks for during one call.
#[derive(Debug, Default)]
struct Outbox {
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<NodeIdentity>)>,
    events: VecDeque<MeshEvent>,
}

impl Runtime<NodeIdentity> for Outbox {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        let event = match notification {
            Notification::MemberUp(id) => MeshEvent::MemberUp(id.clone()),
            Notification::MemberDown(id) => MeshEvent::MemberDown(id.clone()),
            Notification::Rename(from, to) => MeshEvent::Renamed { from: from.clone(), to: to.clone() },
            Notification::Active => MeshEvent::Joined,
            Notification::Rejoin(_) => MeshEvent::Rejoined,
            _ => return,
        };
        self.events.push_back(event);
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        let mut framed = Vec::with_capacity(data.len() + 1);
        framed.push(FRAME_SWIM);
        framed.extend_from_slice(data);
        self.transmits.push_back((to.addr, framed));
    }

    fn submit_after(&mut self, event: Timer<NodeIdentity>, after: Duration) {
        self.timers.push((after, event));
    }
}

/// Why the mesh refused an input.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A datagram or timer could not be handled (malformed, from an unknown cluster, …).
    #[error("mesh: {0}")]
    Foca(#[from] foca::Error),
    /// A state record could not be encoded.
    #[error("mesh: cannot encode node state: {0}")]
    Encode(postcard::Error),
    /// An anti-entropy message did not decode or held too many states.
    #[error("mesh: bad state exchange: {0}")]
    BadSync(String),
    /// A datagram with an unknown or missing frame byte.
    #[error("mesh: datagram has unknown frame type {0:?}")]
    UnknownFrame(Option<u8>),
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

/// One node's mesh state machine.
pub struct Mesh {
    identity: NodeIdentity,
    foca: Foca<NodeIdentity, PostcardCodec, SmallRng, StateBroadcasts>,
    outbox: Outbox,
    timers: BTreeMap<(Timestamp, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    states: StateTable,
    own_version: u64,
    sync_interval: Duration,
    next_sync: Option<Timestamp>,
    rng: SmallRng,
    /// State records refused from peers (malformed, non-finite figures).
    pub refused_states: u64,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("identity", self.identity())
            .field("members", &self.foca.num_members())
            .field("timers", &self.timers.len())
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// A node that knows nobody yet. `expected_cluster_size` tunes foca's timings; `seed`
    /// makes its random choices reproducible.
    pub fn new(identity: NodeIdentity, profile: Profile, expected_cluster_size: u32, seed: u64) -> Self {
        let size = NonZeroU32::new(expected_cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
        let config = match profile {
            Profile::Lan => Config::new_lan(size),
            Profile::Wan => Config::new_wan(size),
        };
        let states: StateTable = Arc::default();
        let handler = StateBroadcasts { table: states.clone() };
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            config,
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            handler,
        );
        let sync_interval = match profile {
            Profile::Lan => Duration::from_secs(10),
            Profile::Wan => Duration::from_secs(30),
        };
        Mesh {
            identity,
            foca,
            outbox: Outbox::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            states,
            own_version: 0,
            sync_interval,
            next_sync: None,
            rng: SmallRng::seed_from_u64(seed.rotate_left(17) ^ 0xa5a5),
            refused_states: 0,
        }
    }

    /// This node's current identity.
    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    fn absorb(&mut self, now: Timestamp) {
        for (after, timer) in self.outbox.timers.drain(..) {
            self.timer_seq += 1;
            self.timers.insert((now.saturating_add(after), self.timer_seq), timer);
        }
        if self.next_sync.is_none() {
            self.next_sync = Some(now.saturating_add(self.sync_interval));
        }
        // A member that just came up gets our whole table and sends its own back.
        let newcomers: Vec<SocketAddr> = self
            .outbox
            .events
            .iter()
            .filter_map(|e| match e {
                MeshEvent::MemberUp(id) => Some(id.addr),
                _ => None,
            })
            .collect();
        for addr in newcomers {
            self.send_sync(addr, true);
        }
    }

    fn send_sync(&mut self, to: SocketAddr, reply: bool) {
        let states: Vec<NodeState> = {
            let table = self.states.lock().unwrap_or_else(PoisonError::into_inner);
            table.values().take(MAX_SYNC_STATES).cloned().collect()
        };
        if let Ok(mut bytes) = postcard::to_allocvec(&SyncMessage { reply, states }) {
            bytes.insert(0, FRAME_SYNC);
            self.outbox.transmits.push_back((to, bytes));
        }
    }

    fn handle_sync(&mut self, from_bytes: &[u8]) -> Result<(), MeshError> {
        let sync: SyncMessage = postcard::from_bytes(from_bytes).map_err(|e| MeshError::BadSync(e.to_string()))?;
        if sync.states.len() > MAX_SYNC_STATES {
            return Err(MeshError::BadSync(format!("{} states (at most {MAX_SYNC_STATES})", sync.states.len())));
        }
        let mut handler = StateBroadcasts { table: self.states.clone() };
        let mut reply_to = None;
        for state in sync.states {
            if reply_to.is_none() {
                reply_to = self.foca.iter_members().map(|m| m.id()).find(|m| m.id == state.node).map(|m| m.addr);
            }
            match postcard::to_allocvec(&state) {
                Ok(bytes) => {
                    if handler.receive_item(&bytes, None).is_err() {
                        self.refused_states += 1;
                    }
                }
                Err(_) => self.refused_states += 1,
            }
        }
        if sync.reply
            && let Some(addr) = reply_to
        {
            self.send_sync(addr, false);
        }
        Ok(())
    }

    /// Asks `seed` to let this node in.
    pub fn join(&mut self, now: Timestamp, seed: NodeIdentity) -> Result<(), MeshError> {
        let result = self.foca.announce(seed, &mut self.outbox);
        self.absorb(now);
        Ok(result?)
    }

    /// A datagram from a peer. A malformed one is an error; nothing else changes.
    pub fn handle_datagram(&mut self, now: Timestamp, data: &[u8]) -> Result<(), MeshError> {
        match data.split_first() {
            Some((&FRAME_SWIM, rest)) => {
                let result = self.foca.handle_data(rest, &mut self.outbox);
                self.absorb(now);
                Ok(result?)
            }
            Some((&FRAME_SYNC, rest)) => self.handle_sync(rest),
            Some((&other, _)) => Err(MeshError::UnknownFrame(Some(other))),
            None => Err(MeshError::UnknownFrame(None)),
        }
    }

    /// Fires every timer due at `now`, including the periodic anti-entropy exchange with one
    /// random alive member.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), MeshError> {
        if self.next_sync.is_some_and(|at| at <= now) {
            self.next_sync = Some(now.saturating_add(self.sync_interval));
            let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
            if !members.is_empty() {
                let pick = self.rng.random_range(0..members.len());
                self.send_sync(members[pick], true);
            }
        }
        let mut first_error = None;
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let Err(e) = self.foca.handle_timer(timer, &mut self.outbox) {
                first_error.get_or_insert(e);
            }
            self.absorb(now);
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// When [`Mesh::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let timer = self.timers.keys().next().map(|(at, _)| *at);
        match (timer, self.next_sync) {
            (Some(t), Some(s)) => Some(t.min(s)),
            (t, s) => t.or(s),
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.outbox.transmits.pop_front()
    }

    /// The next membership change.
    pub fn poll_event(&mut self) -> Option<MeshEvent> {
        self.outbox.events.pop_front()
    }

    /// Publishes this node's state (its version is assigned here, increasing).
    pub fn publish_state(&mut self, mut state: NodeState) -> Result<(), MeshError> {
        self.own_version += 1;
        state.version = self.own_version;
        state.node = self.identity.id.clone();
        state.region = self.identity.region.clone();
        let bytes = postcard::to_allocvec(&state).map_err(MeshError::Encode)?;
        self.foca.add_broadcast(&bytes)?;
        Ok(())
    }

    /// Leaves the cluster gracefully (peers learn it at once instead of suspecting it).
    pub fn leave(&mut self, now: Timestamp) -> Result<(), MeshError> {
        let result = self.foca.leave_cluster(&mut self.outbox);
        self.absorb(now);
        Ok(result?)
    }

    /// Members believed alive (not counting this node).
    pub fn alive_members(&self) -> impl Iterator<Item = &NodeIdentity> {
        self.foca.iter_members().map(|m| m.id())
    }

    /// The fleet as this node sees it: members believed alive (and itself), their latest
    /// states, per-region aggregates and coordinators.
    pub fn fleet_view(&self) -> FleetView {
        let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let me = self.identity();
        let mut members: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for id in std::iter::once(me).chain(self.alive_members()) {
            members.entry(id.region.clone()).or_default().push(id.id.as_str());
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
            };
            for node in nodes {
                if let Some(s) = states.get(*node) {
                    r.healthy += usize::from(s.healthy);
                    r.capacity += s.capacity;
                    r.load += s.load;
                    r.active_weddings = r.active_weddings.max(s.active_weddings);
                }
            }
            view.regions.insert(region.clone(), r);
        }
        view
    }

    /// The latest state known for `node`.
    pub fn state_of(&self, node: &str) -> Option<NodeState> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner).get(node).cloned()
    }

    /// Records this node's own state locally too, so its view includes it.
    pub fn set_own_state(&mut self, state: NodeState) -> Result<(), MeshError> {
        self.publish_state(state.clone())?;
        let mut own = state;
        own.version = self.own_version;
        own.node = self.identity.id.clone();
        own.region = self.identity.region.clone();
        self.states.lock().unwrap_or_else(PoisonError::into_inner).insert(own.node.clone(), own);
        Ok(())
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
        let others: Vec<&str> = ["n1", "n2", "n3", "n4"].into_iter().filter(|n| *n == winner || *n != "n9").collect();
        assert_eq!(coordinator("eu-west", others.iter().copied()), Some(winner));
    }

    #[test]
    fn newer_state_versions_win_and_bad_ones_are_refused() {
        let table: StateTable = Arc::default();
        let mut handler = StateBroadcasts { table: table.clone() };
        let state = |version, load| NodeState {
            node: "n1".into(),
            region: "eu".into(),
            version,
            capacity: 100.0,
            load,
            healthy: true,
            active_weddings: 0,
        };
        let enc = |s: &NodeState| postcard::to_allocvec(s).unwrap();
        assert!(handler.receive_item(&enc(&state(2, 5.0)), None).unwrap().is_some());
        assert!(handler.receive_item(&enc(&state(1, 9.0)), None).unwrap().is_none(), "older version is stale");
        assert!(handler.receive_item(&enc(&state(2, 9.0)), None).unwrap().is_none(), "same version is stale");
        assert_eq!(table.lock().unwrap()["n1"].load, 5.0);
        assert!(matches!(handler.receive_item(&enc(&state(3, f64::NAN)), None), Err(StateError::BadFigure(_))));
        assert!(matches!(handler.receive_item(&[0xff; 3], None), Err(StateError::Decode(_))));
        assert!(matches!(handler.receive_item(&[0; MAX_STATE_BYTES + 1], None), Err(StateError::TooLarge(_))));
        let key = StateKey { node: "n1".into(), version: 3 };
        assert!(key.invalidates(&StateKey { node: "n1".into(), version: 2 }));
        assert!(!key.invalidates(&StateKey { node: "n2".into(), version: 2 }));
    }

    #[test]
    fn garbage_datagrams_are_errors_not_panics() {
        let id = NodeIdentity {
            id: "n1".into(),
            region: "eu".into(),
            addr: "127.0.0.1:7000".parse().unwrap(),
            incarnation: 0,
        };
        let mut mesh = Mesh::new(id, Profile::Lan, 3, 1);
        for junk in [&b""[..], b"\x00", b"\x01\xff\xff", b"\xff\xff\xff\xff", &[7u8; 2000], &[0u8; 2000]] {
            assert!(mesh.handle_datagram(Timestamp::ZERO, junk).is_err());
        }
    }
}
