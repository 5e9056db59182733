//! The fleet mesh, sans-IO: SWIM membership (foca) plus dissemination of a small, versioned
//! record of each node's state, and the fleet view every node derives from the members it
//! believes alive (regional aggregates and one coordinator per region).
//!
//! Like the engine, [`Mesh`] never reads a clock or touches a socket: feed it datagrams and
//! `now`, drain [`Mesh::poll_transmit`] and [`Mesh::poll_event`], and call
//! [`Mesh::handle_timeout`] when [`Mesh::poll_timeout`] says. The daemon drives it over QUIC;
//! [`sim`] drives many of them in virtual time.
//!
//! Around foca the mesh adds (see [`MeshConfig`]):
//! - **direct probe retries**: when a probed member does not answer in time, the mesh retries
//!   it directly while SWIM asks others, and holds the end of the probe a little while retries
//!   are out; an answer counts as the probe's ack. Random loss then rarely turns into a
//!   suspicion (each suspicion costs a cluster-wide dissemination);
//! - **direct refutation**: a member whose probe failed tells the suspected member so at once
//!   and again every [`MeshConfig::refute_retry`]; the suspect refutes (new incarnation) and
//!   answers the suspecter directly, so the suspicion timeout can be short;
//! - **local health** (Lifeguard): a node whose suspicions prove wrong, or that must refute
//!   suspicions about itself, stretches its probe period, probe timeout and suspicion timeout
//!   by `1 + multiplier`; every successful probe brings the multiplier back down;
//! - **immediate forwarding** of "member down" (SWIM gossip) and of node states (the mesh's
//!   own frames, to a few random members), so news reaches every node within a few hops;
//! - **membership digests**: every second a member tells another a hash of its view; two
//!   settled views that differ start a full exchange, so a member that missed an update
//!   catches up in seconds;
//! - **anti-entropy** (push-pull with digests): members, "down" corrections and the node
//!   states a peer lacks; frequent right after joining, then at an interval that grows with
//!   the fleet so its traffic stays flat;
//! - a **state budget**: a node's own state is passed on at most as often as the fleet's
//!   node-state traffic budget allows;
//! - a work-around for foca 2.0 telling a member "you are down" when its suspicion timer
//!   fires although it refuted in time (which made every refuted suspicion a rejoin).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod content;
pub mod failover;
pub mod measure;
pub mod sim;
mod state;
mod stats;
mod wire;

pub use config::{DEFAULT_MAX_PACKET, MIN_MAX_PACKET, MeshConfig};
pub use failover::{
    FailoverProposal, FailoverShare, MAX_POOLS_IN_STATE, STATE_HEARTBEAT, failover_proposals, failover_shares,
    node_state, state_changed, state_due,
};
pub use state::{CLASSES, MAX_NAME_BYTES, MAX_POOLS, MAX_STATE_BYTES, NodeState, PoolFigures, StateError, StateKey};
pub use stats::{FrameCounts, MemberCounts, MemberHealth, MeshStats, RefusedCounts};

use foca::{Foca, Identity, Incarnation, Member, Notification, PostcardCodec, Runtime, State, Timer};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use state::{StateBroadcasts, StateTable, accept_record, accept_state};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::Duration;
use wedsync_core::Timestamp;
use wire::{
    AliveFrame, DigestFrame, FRAME_ALIVE, FRAME_DIGEST, FRAME_PROBE, FRAME_PROBE_ACK, FRAME_STATES, FRAME_SUSPECT,
    FRAME_SWIM, FRAME_SYNC, PeekIdentity, ProbeAckFrame, ProbeFrame, SuspectFrame, SyncIn, SyncKind, SyncMemberIn,
    SyncMemberOut, SyncOut, frame,
};

/// Most node states one anti-entropy message carries.
pub const MAX_SYNC_STATES: usize = 4096;
/// Most members one anti-entropy message lists.
pub const MAX_SYNC_MEMBERS: usize = 4096;
/// Node states waiting to be piggybacked beyond which this node holds its own back.
const STATE_BACKLOG_LIMIT: usize = 16;
/// Anti-entropy rounds at the fast interval after joining.
const FAST_SYNC_ROUNDS: u32 = 2;

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

impl Identity for NodeIdentity {
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
    /// Low-latency networks (a data centre): 200 ms probe period.
    Lan,
    /// Wide-area: 1 s probe period, longer suspicion.
    Wan,
}

/// Collects what foca asks for during one call, and what the mesh counts.
#[derive(Debug, Default)]
struct Outbox {
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<NodeIdentity>)>,
    events: VecDeque<MeshEvent>,
    stats: MeshStats,
    /// This node's SWIM incarnation, as last seen in a packet it sent.
    own_incarnation: Incarnation,
    /// Members declared down since the mesh last looked.
    fresh_downs: u32,
    /// Members declared down, ever.
    downs: u64,
    /// foca just became active (joined).
    became_active: bool,
    /// The set of active members changed.
    members_changed: bool,
    /// Probe replies since the mesh last looked.
    acks: u32,
    /// The SWIM probe in progress.
    probe: Option<CurrentProbe>,
}

/// The member SWIM is probing, as seen in the packets it sends and receives.
#[derive(Debug)]
struct CurrentProbe {
    target: NodeIdentity,
    number: u8,
    answered: bool,
    /// Direct retries left, and when the next is due.
    retries: u32,
    next_retry: Option<Timestamp>,
    /// Until when the end of the probe may be held back for retries.
    hold_until: Option<Timestamp>,
}

impl Outbox {
    fn push(&mut self, to: SocketAddr, data: Vec<u8>) {
        self.stats.bytes_out += data.len() as u64;
        self.transmits.push_back((to, data));
    }
}

impl Runtime<NodeIdentity> for Outbox {
    fn notify(&mut self, notification: Notification<'_, NodeIdentity>) {
        let event = match notification {
            Notification::MemberUp(id) => {
                self.members_changed = true;
                MeshEvent::MemberUp(id.clone())
            }
            Notification::MemberDown(id) => {
                self.members_changed = true;
                self.fresh_downs += 1;
                self.downs += 1;
                MeshEvent::MemberDown(id.clone())
            }
            Notification::Rename(from, to) => {
                self.members_changed = true;
                MeshEvent::Renamed { from: from.clone(), to: to.clone() }
            }
            Notification::Active => {
                self.became_active = true;
                MeshEvent::Joined
            }
            Notification::Rejoin(_) => {
                self.members_changed = true;
                self.stats.rejoins += 1;
                MeshEvent::Rejoined
            }
            Notification::DataSent(header) => {
                self.own_incarnation = header.src_incarnation;
                self.stats.frames_out.count_swim(&header.message);
                if let foca::Message::Ping(number) = header.message {
                    self.probe = Some(CurrentProbe {
                        target: header.dst.clone(),
                        number,
                        answered: false,
                        retries: 0,
                        next_retry: None,
                        hold_until: None,
                    });
                }
                return;
            }
            Notification::DataReceived(header) => {
                self.stats.frames_in.count_swim(&header.message);
                let answered = match &header.message {
                    foca::Message::Ack(number) => Some((&header.src, *number)),
                    foca::Message::ForwardedAck { origin, probe_number } => Some((origin, *probe_number)),
                    _ => None,
                };
                if let Some((from, number)) = answered {
                    self.acks += 1;
                    if let Some(probe) = self.probe.as_mut().filter(|p| p.number == number && &p.target == from) {
                        probe.answered = true;
                        probe.next_retry = None;
                    }
                }
                return;
            }
            Notification::Idle | Notification::Defunct | Notification::ProbeFailed(..) => return,
        };
        self.events.push_back(event);
    }

    fn send_to(&mut self, to: NodeIdentity, data: &[u8]) {
        let mut framed = Vec::with_capacity(data.len() + 1);
        framed.push(FRAME_SWIM);
        framed.extend_from_slice(data);
        self.push(to.addr, framed);
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
    /// This node's own state is not publishable (non-finite figure, too many pools, …).
    #[error("mesh: this node's state: {0}")]
    BadState(#[from] StateError),
    /// An anti-entropy message did not decode or held too many members or states.
    #[error("mesh: bad state exchange: {0}")]
    BadSync(String),
    /// One of the mesh's own frames did not decode.
    #[error("mesh: bad {kind} frame: {reason}")]
    BadFrame {
        /// Which frame.
        kind: &'static str,
        /// Why it did not decode.
        reason: String,
    },
    /// A datagram with an unknown or missing frame byte.
    #[error("mesh: datagram has unknown frame type {0:?}")]
    UnknownFrame(Option<u8>),
    /// The identity a frame claims is not the one the transport certified for its sender.
    #[error("mesh: frame claims to come from {claimed} but the peer's certificate is for {certified}")]
    IdentityMismatch {
        /// `node@region` the frame claims.
        claimed: String,
        /// `node@region` of the peer's certificate.
        certified: String,
    },
    /// A maximum packet size too small to carry a node state.
    #[error("mesh: a maximum packet of {bytes} bytes is too small (at least {min})")]
    PacketSize {
        /// The size asked for.
        bytes: usize,
        /// The smallest allowed.
        min: usize,
    },
}

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

/// A member this node suspects after its own probe failed.
#[derive(Debug)]
struct Suspicion {
    member: NodeIdentity,
    incarnation: Incarnation,
    /// When to tell it again that it is suspected.
    next_notice: Option<Timestamp>,
    /// When it will be declared down unless it refutes.
    until: Timestamp,
    /// It answered: it is alive.
    refuted: bool,
}

fn health(state: State) -> MemberHealth {
    match state {
        State::Alive => MemberHealth::Alive,
        State::Suspect => MemberHealth::Suspect,
        State::Down => MemberHealth::Down,
    }
}

fn label(id: &str, region: &str) -> String {
    format!("{id}@{region}")
}

/// Refuses `claimed` unless it is the certified `peer` (when the transport knows one).
fn check_identity(peer: Option<(&str, &str)>, claimed: &NodeIdentity) -> Result<(), MeshError> {
    check_claim(peer, &claimed.id, &claimed.region)
}

fn check_claim(peer: Option<(&str, &str)>, claimed_id: &str, claimed_region: &str) -> Result<(), MeshError> {
    match peer {
        Some((id, region)) if claimed_id != id || claimed_region != region => Err(MeshError::IdentityMismatch {
            claimed: label(claimed_id, claimed_region),
            certified: label(id, region),
        }),
        _ => Ok(()),
    }
}

fn decode_frame<'a, T: Deserialize<'a>>(kind: &'static str, bytes: &'a [u8]) -> Result<T, MeshError> {
    postcard::from_bytes(bytes).map_err(|e| MeshError::BadFrame { kind, reason: e.to_string() })
}

/// One node's mesh state machine.
pub struct Mesh {
    /// The identity this node was started with (its id and region never change).
    base: NodeIdentity,
    config: MeshConfig,
    foca: Foca<NodeIdentity, PostcardCodec, SmallRng, StateBroadcasts>,
    outbox: Outbox,
    timers: BTreeMap<(Timestamp, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    states: StateTable,
    own_version: u64,
    /// This node's state changed since it was last passed on.
    own_dirty: bool,
    /// When the state budget next allows passing this node's state on.
    next_state_at: Option<Timestamp>,
    /// Latest time the mesh was given.
    now: Timestamp,
    next_sync: Option<Timestamp>,
    fast_syncs: u32,
    /// Seeds this node announced itself to.
    join_targets: Vec<SocketAddr>,
    suspicions: Vec<Suspicion>,
    local_health: u32,
    /// When to forward the node states that arrived since.
    forward_at: Option<Timestamp>,
    /// Encoded node states new to this node, to forward.
    forward_queue: Vec<Vec<u8>>,
    /// Addresses of the active members (rebuilt when membership changes), for picking
    /// members without walking foca's list.
    member_addrs: Vec<SocketAddr>,
    member_addrs_stale: bool,
    /// Digest of the active members and this node (see [`MeshConfig::digest_interval`]).
    member_hash: u64,
    /// When the set of active members last changed.
    members_changed_at: Timestamp,
    next_digest: Option<Timestamp>,
    /// When a differing digest last started a full exchange.
    last_digest_sync: Option<Timestamp>,
    rng: SmallRng,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("identity", self.identity())
            .field("members", &self.foca.num_members())
            .field("timers", &self.timers.len())
            .field("local_health", &self.local_health)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// A node that knows nobody yet, with the timings tuned for `profile` and a fleet of about
    /// `expected_cluster_size` nodes ([`MeshConfig::new`]); `seed` makes its random choices
    /// reproducible.
    pub fn new(identity: NodeIdentity, profile: Profile, expected_cluster_size: u32, seed: u64) -> Self {
        Self::with_config(identity, MeshConfig::new(profile, expected_cluster_size), seed)
    }

    /// A node that knows nobody yet, with explicit timings.
    pub fn with_config(identity: NodeIdentity, config: MeshConfig, seed: u64) -> Self {
        let states: StateTable = StateTable::default();
        let handler = StateBroadcasts { table: states.clone() };
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            config.foca(),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            handler,
        );
        Mesh {
            base: identity,
            config,
            foca,
            outbox: Outbox::default(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            states,
            own_version: 0,
            own_dirty: false,
            next_state_at: None,
            now: Timestamp::ZERO,
            next_sync: None,
            fast_syncs: 0,
            join_targets: Vec::new(),
            suspicions: Vec::new(),
            local_health: 0,
            forward_at: None,
            forward_queue: Vec::new(),
            member_addrs: Vec::new(),
            member_addrs_stale: true,
            member_hash: 0,
            members_changed_at: Timestamp::ZERO,
            next_digest: None,
            last_digest_sync: None,
            rng: SmallRng::seed_from_u64(seed.rotate_left(17) ^ 0xa5a5),
        }
    }

    /// This node's current identity.
    pub fn identity(&self) -> &NodeIdentity {
        self.foca.identity()
    }

    /// The timings in use.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// Sets the largest frame sent as a datagram (bytes, frame byte included); SWIM packets
    /// are built to fit it and larger ones are refused. Anti-entropy frames are not bound by
    /// it. At least [`MIN_MAX_PACKET`].
    pub fn set_max_packet_size(&mut self, bytes: usize) -> Result<(), MeshError> {
        if bytes < MIN_MAX_PACKET {
            return Err(MeshError::PacketSize { bytes, min: MIN_MAX_PACKET });
        }
        let mut config = self.config.clone();
        config.max_packet_size = bytes;
        self.foca.set_config(config.foca())?;
        self.config = config;
        Ok(())
    }

    fn advance(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
    }

    fn scale(&self, d: Duration) -> Duration {
        d.saturating_mul(self.local_health.saturating_add(1))
    }

    fn raise_local_health(&mut self) {
        self.local_health = (self.local_health + 1).min(self.config.max_local_health);
        self.outbox.stats.local_health_max = self.outbox.stats.local_health_max.max(self.local_health);
    }

    /// Takes in what foca asked for: schedules its timers (stretched by local health), starts
    /// telling newly suspected members, reacts to joining and to members declared down.
    fn absorb(&mut self, now: Timestamp) {
        loop {
            if self.outbox.acks > 0 {
                self.local_health = self.local_health.saturating_sub(self.outbox.acks);
                self.outbox.acks = 0;
            }
            for (after, timer) in std::mem::take(&mut self.outbox.timers) {
                let delay = match &timer {
                    Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. } => self.scale(after),
                    Timer::ChangeSuspectToDown { member_id, incarnation, .. } => {
                        let delay = self.scale(self.config.suspicion);
                        self.start_suspicion(now, member_id.clone(), *incarnation, now.saturating_add(delay));
                        delay
                    }
                    _ => after,
                };
                self.timer_seq += 1;
                self.timers.insert((now.saturating_add(delay), self.timer_seq), timer);
            }
            if std::mem::take(&mut self.outbox.became_active) {
                // Pull the whole membership from the seed at once, then a few fast rounds.
                self.fast_syncs = FAST_SYNC_ROUNDS;
                self.next_sync = Some(now.saturating_add(self.config.fast_sync_interval));
                let target = self.join_targets.first().copied().or_else(|| self.random_member());
                if let Some(to) = target {
                    self.send_sync(to, SyncKind::Request, None);
                }
            }
            if std::mem::take(&mut self.outbox.fresh_downs) > 0 && self.config.forward_downs {
                // Pass "down" on now rather than at the next gossip round.
                if self.foca.gossip(&mut self.outbox).is_ok() {
                    continue;
                }
            }
            break;
        }
        if self.next_sync.is_none() {
            self.next_sync = Some(now.saturating_add(self.config.steady_sync(self.foca.num_members())));
        }
        if std::mem::take(&mut self.outbox.members_changed) {
            self.member_addrs_stale = true;
            self.members_changed_at = now;
        }
        if self.next_digest.is_none()
            && let Some(interval) = self.config.digest_interval
        {
            self.next_digest = Some(now.saturating_add(interval));
        }
        let fresh = std::mem::take(&mut self.states.lock().unwrap_or_else(PoisonError::into_inner).fresh);
        if !fresh.is_empty() {
            self.queue_forward(now, fresh);
        }
    }

    /// Queues encoded node states to forward soon.
    fn queue_forward(&mut self, now: Timestamp, records: Vec<Vec<u8>>) {
        if self.config.forward_states.is_none() {
            return;
        }
        let room = state::MAX_FRESH.saturating_sub(self.forward_queue.len());
        self.forward_queue.extend(records.into_iter().take(room));
        self.schedule_forward(now);
    }

    /// Sends the queued node states to `forward_fanout` random members, in as few frames as
    /// fit a datagram.
    fn send_forward(&mut self) {
        let records = std::mem::take(&mut self.forward_queue);
        if records.is_empty() {
            return;
        }
        let mut frames = Vec::new();
        let mut current = vec![FRAME_STATES];
        for record in &records {
            let Ok(len) = u16::try_from(record.len()) else { continue };
            if current.len() > 1 && current.len() + 2 + record.len() > self.config.max_packet_size {
                frames.push(std::mem::replace(&mut current, vec![FRAME_STATES]));
            }
            current.extend_from_slice(&len.to_be_bytes());
            current.extend_from_slice(record);
        }
        if current.len() > 1 {
            frames.push(current);
        }
        for to in self.random_members(self.config.forward_fanout) {
            for data in &frames {
                self.outbox.stats.frames_out.states += 1;
                self.outbox.push(to, data.clone());
            }
        }
    }

    /// Node states forwarded by a peer: new ones are kept, passed on with SWIM messages and
    /// forwarded in turn.
    fn handle_states(&mut self, now: Timestamp, mut bytes: &[u8]) -> Result<(), MeshError> {
        self.outbox.stats.frames_in.states += 1;
        let malformed = |reason: &str| MeshError::BadFrame { kind: "states", reason: reason.to_owned() };
        let mut fresh = Vec::new();
        let mut refused = 0;
        while !bytes.is_empty() {
            let [hi, lo, rest @ ..] = bytes else { return Err(malformed("truncated record length")) };
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            if len == 0 || len > rest.len() {
                return Err(malformed("record longer than the frame"));
            }
            let (record, tail) = rest.split_at(len);
            bytes = tail;
            match accept_record(&self.states, record) {
                Ok(true) => fresh.push(record.to_vec()),
                Ok(false) => {}
                Err(_) => refused += 1,
            }
        }
        self.outbox.stats.refused.bad_state += refused;
        for record in &fresh {
            // Passed on with SWIM messages too, for members the forwards miss.
            if self.foca.add_broadcast(record).is_err() {
                self.outbox.stats.refused.bad_state += 1;
            }
        }
        if !fresh.is_empty() {
            self.queue_forward(now, fresh);
        }
        Ok(())
    }

    fn schedule_forward(&mut self, now: Timestamp) {
        if let Some(delay) = self.config.forward_states
            && self.forward_at.is_none()
        {
            self.forward_at = Some(now.saturating_add(delay));
        }
    }

    fn start_suspicion(&mut self, now: Timestamp, member: NodeIdentity, incarnation: Incarnation, until: Timestamp) {
        self.outbox.stats.suspicions_raised += 1;
        let next_notice = self.config.refute_retry.map(|retry| {
            self.send_suspect(&member, incarnation);
            now.saturating_add(retry)
        });
        let suspicion = Suspicion { member, incarnation, next_notice, until, refuted: false };
        match self.suspicions.iter_mut().find(|s| s.member.addr == suspicion.member.addr) {
            Some(held) => *held = suspicion,
            None => self.suspicions.push(suspicion),
        }
    }

    fn send_suspect(&mut self, member: &NodeIdentity, incarnation: Incarnation) {
        let notice = SuspectFrame { from: self.foca.identity().clone(), target: member.clone(), incarnation };
        if let Some(bytes) = frame(FRAME_SUSPECT, &notice) {
            self.outbox.stats.frames_out.suspect += 1;
            self.outbox.push(member.addr, bytes);
        }
    }

    /// foca 2.0 tells a suspected member "you are down" when its suspicion timer fires even
    /// if it refuted in time (the member then renews its identity for nothing: a flap at
    /// every refuted suspicion). Unless the member at `addr` really is down now, the notice
    /// queued since `queued` is dropped.
    fn retract_spurious_turn_undead(&mut self, addr: SocketAddr, queued: usize) {
        let down = self.foca.iter_membership_state().any(|m| m.id().addr == addr && m.state() == State::Down);
        if down || self.outbox.transmits.len() <= queued {
            return;
        }
        let mut kept = self.outbox.transmits.split_off(queued);
        kept.retain(|(to, data)| {
            let spurious =
                *to == addr && data.first() == Some(&FRAME_SWIM) && wire::swim_message_is_turn_undead(&data[1..]);
            if spurious {
                self.outbox.stats.frames_out.turn_undead = self.outbox.stats.frames_out.turn_undead.saturating_sub(1);
                self.outbox.stats.bytes_out = self.outbox.stats.bytes_out.saturating_sub(data.len() as u64);
            }
            !spurious
        });
        self.outbox.transmits.extend(kept);
    }

    /// A suspicion's timer fired: the member is down (by us or by someone else) or refuted.
    fn finish_suspicion(&mut self, addr: SocketAddr, incarnation: Incarnation) {
        let Some(at) = self.suspicions.iter().position(|s| s.member.addr == addr && s.incarnation == incarnation)
        else {
            return;
        };
        let suspicion = self.suspicions.swap_remove(at);
        let down = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().addr == addr)
            .is_none_or(|m| m.state() == State::Down && m.id() == &suspicion.member);
        if down {
            self.outbox.stats.declared_down += 1;
        } else if !suspicion.refuted {
            self.outbox.stats.suspicions_refuted += 1;
            self.raise_local_health();
        }
    }

    fn refresh_member_addrs(&mut self) {
        if std::mem::take(&mut self.member_addrs_stale) {
            self.member_addrs.clear();
            self.member_addrs.extend(self.foca.iter_members().map(|m| m.id().addr));
            let hasher = foldhash::fast::FixedState::with_seed(0x6469_6765_7374);
            self.member_hash = std::iter::once(self.foca.identity())
                .chain(self.foca.iter_members().map(|m| m.id()))
                .fold(0, |acc, id| acc ^ hasher.hash_one((id.addr, id.incarnation)));
        }
    }

    fn send_digest(&mut self, now: Timestamp) {
        let Some(to) = self.random_member() else { return };
        let digest = DigestFrame {
            from: self.foca.identity().clone(),
            hash: self.member_hash,
            members: u32::try_from(self.member_addrs.len() + 1).unwrap_or(u32::MAX),
            settled_ms: u64::try_from(now.saturating_since(self.members_changed_at).as_millis()).unwrap_or(u64::MAX),
        };
        if let Some(bytes) = frame(FRAME_DIGEST, &digest) {
            self.outbox.stats.frames_out.digest += 1;
            self.outbox.push(to, bytes);
        }
    }

    /// A peer's digest of the membership: when both views have settled and still differ, one
    /// of them missed something; a full exchange repairs both.
    fn handle_digest(&mut self, now: Timestamp, peer: Option<(&str, &str)>, bytes: &[u8]) -> Result<(), MeshError> {
        let digest: DigestFrame = decode_frame("digest", bytes)?;
        check_identity(peer, &digest.from)?;
        self.outbox.stats.frames_in.digest += 1;
        self.refresh_member_addrs();
        let members = u32::try_from(self.member_addrs.len() + 1).unwrap_or(u32::MAX);
        let differ = digest.hash != self.member_hash || digest.members != members;
        let settle = self.config.settle;
        let settled = now.saturating_since(self.members_changed_at) >= settle
            && Duration::from_millis(digest.settled_ms) >= settle;
        let recently = self.last_digest_sync.is_some_and(|at| now.saturating_since(at) < settle);
        if differ && settled && !recently {
            self.last_digest_sync = Some(now);
            self.outbox.stats.digest_syncs += 1;
            self.send_sync(digest.from.addr, SyncKind::Request, None);
        }
        Ok(())
    }

    fn random_member(&mut self) -> Option<SocketAddr> {
        self.random_members(1).into_iter().next()
    }

    /// Up to `k` distinct active members, at random.
    fn random_members(&mut self, k: usize) -> Vec<SocketAddr> {
        self.refresh_member_addrs();
        let n = self.member_addrs.len();
        let k = k.min(n);
        let mut picked: Vec<SocketAddr> = Vec::with_capacity(k);
        // Few picks among many members: draw until distinct (bounded).
        for _ in 0..k.saturating_mul(4) {
            if picked.len() == k {
                break;
            }
            let addr = self.member_addrs[self.rng.random_range(0..n)];
            if !picked.contains(&addr) {
                picked.push(addr);
            }
        }
        picked
    }

    /// Asks `seed` to let this node in.
    pub fn join(&mut self, now: Timestamp, seed: NodeIdentity) -> Result<(), MeshError> {
        self.advance(now);
        if !self.join_targets.contains(&seed.addr) {
            self.join_targets.push(seed.addr);
        }
        let result = self.foca.announce(seed, &mut self.outbox);
        self.absorb(now);
        Ok(result?)
    }

    /// Asks the node listening at `seed` to let this node in, without knowing its identity
    /// (configuration gives seeds as addresses). SWIM accepts an announce addressed to any
    /// identity at its address. Announcing to this node's own address does nothing.
    pub fn join_addr(&mut self, now: Timestamp, seed: SocketAddr) -> Result<(), MeshError> {
        if seed == self.identity().addr {
            return Ok(());
        }
        let placeholder = NodeIdentity { id: String::new(), region: String::new(), addr: seed, incarnation: 0 };
        self.join(now, placeholder)
    }

    /// A datagram from a peer, without checking who sent it (see
    /// [`Mesh::handle_datagram_from`]). A malformed one is an error; nothing else changes.
    pub fn handle_datagram(&mut self, now: Timestamp, data: &[u8]) -> Result<(), MeshError> {
        self.handle_datagram_from(now, None, data)
    }

    /// A datagram from a peer whose certificate says it is `peer` (node id, region): a frame
    /// claiming another sender is refused with [`MeshError::IdentityMismatch`]. `None`: the
    /// sender is not known, nothing is checked.
    pub fn handle_datagram_from(
        &mut self,
        now: Timestamp,
        peer: Option<(&str, &str)>,
        data: &[u8],
    ) -> Result<(), MeshError> {
        self.advance(now);
        self.outbox.stats.bytes_in += data.len() as u64;
        let result = match data.split_first() {
            Some((&FRAME_SWIM, rest)) => self.handle_swim(now, peer, rest),
            Some((&FRAME_SYNC, rest)) => self.handle_sync(now, peer, rest),
            Some((&FRAME_SUSPECT, rest)) => self.handle_suspect(now, peer, rest),
            Some((&FRAME_ALIVE, rest)) => self.handle_alive(now, peer, rest),
            Some((&FRAME_PROBE, rest)) => self.handle_probe(peer, rest),
            Some((&FRAME_PROBE_ACK, rest)) => self.handle_probe_ack(now, peer, rest),
            Some((&FRAME_STATES, rest)) => self.handle_states(now, rest),
            Some((&FRAME_DIGEST, rest)) => self.handle_digest(now, peer, rest),
            Some((&other, _)) => Err(MeshError::UnknownFrame(Some(other))),
            None => Err(MeshError::UnknownFrame(None)),
        };
        if let Err(e) = &result {
            let refused = &mut self.outbox.stats.refused;
            match e {
                MeshError::Foca(foca::Error::CustomBroadcast(_)) | MeshError::BadState(_) => refused.bad_state += 1,
                MeshError::IdentityMismatch { .. } => refused.identity_mismatch += 1,
                MeshError::BadSync(_) => refused.bad_sync += 1,
                MeshError::UnknownFrame(_) => refused.unknown_frame += 1,
                _ => refused.malformed += 1,
            }
        }
        result
    }

    fn handle_swim(&mut self, now: Timestamp, peer: Option<(&str, &str)>, packet: &[u8]) -> Result<(), MeshError> {
        if peer.is_some() {
            let src = wire::swim_sender(packet).map_err(|e| foca::Error::Decode(Box::new(e)))?;
            check_claim(peer, src.id, src.region)?;
        }
        let result = self.foca.handle_data(packet, &mut self.outbox);
        self.absorb(now);
        Ok(result?)
    }

    fn handle_suspect(&mut self, now: Timestamp, peer: Option<(&str, &str)>, bytes: &[u8]) -> Result<(), MeshError> {
        let notice: SuspectFrame = decode_frame("suspect", bytes)?;
        check_identity(peer, &notice.from)?;
        self.outbox.stats.frames_in.suspect += 1;
        let me = self.foca.identity().clone();
        if notice.target != me {
            // Meant for an identity this node had before it restarted or rejoined.
            self.outbox.stats.refused.stale += 1;
            return Ok(());
        }
        if self.outbox.own_incarnation <= notice.incarnation {
            // foca refutes: a higher incarnation, passed on to a few members.
            let suspected = Member::new(me.clone(), notice.incarnation, State::Suspect);
            let result = self.foca.apply_many(std::iter::once(suspected), true, &mut self.outbox);
            self.outbox.stats.refutations += 1;
            self.raise_local_health();
            self.absorb(now);
            result?;
        }
        let incarnation = self.outbox.own_incarnation.max(notice.incarnation.saturating_add(1));
        let answer = AliveFrame { from: self.foca.identity().clone(), incarnation };
        if let Some(bytes) = frame(FRAME_ALIVE, &answer) {
            self.outbox.stats.frames_out.alive += 1;
            self.outbox.push(notice.from.addr, bytes);
        }
        Ok(())
    }

    fn handle_alive(&mut self, now: Timestamp, peer: Option<(&str, &str)>, bytes: &[u8]) -> Result<(), MeshError> {
        let answer: AliveFrame = decode_frame("alive", bytes)?;
        check_identity(peer, &answer.from)?;
        self.outbox.stats.frames_in.alive += 1;
        let addr = answer.from.addr;
        let alive = Member::new(answer.from, answer.incarnation, State::Alive);
        let result = self.foca.apply_many(std::iter::once(alive), true, &mut self.outbox);
        self.absorb(now);
        let refuted = self
            .suspicions
            .iter_mut()
            .find(|s| s.member.addr == addr && s.incarnation < answer.incarnation && !s.refuted);
        if let Some(suspicion) = refuted {
            suspicion.refuted = true;
            suspicion.next_notice = None;
            self.outbox.stats.suspicions_refuted += 1;
            self.raise_local_health();
        }
        Ok(result?)
    }

    /// Sends a direct retry of the current probe if one is due (or `first`: SWIM just gave up
    /// waiting for the direct answer and asks others).
    fn retry_probe(&mut self, now: Timestamp, first: bool) {
        let budget = self.config.probe_retries;
        // What is left of the probe period, plus the hold.
        let window = self.scale(self.config.probe_period).saturating_sub(self.scale(self.config.probe_rtt))
            + self.scale(self.config.probe_hold);
        let Some(probe) = self.outbox.probe.as_mut().filter(|p| !p.answered) else { return };
        if first {
            probe.retries = budget;
            probe.hold_until = Some(now.saturating_add(window));
        } else if probe.next_retry.is_none_or(|at| at > now) {
            return;
        }
        if probe.retries == 0 {
            probe.next_retry = None;
            return;
        }
        probe.retries -= 1;
        // Spread the retries over the window, the last one early enough to be answered.
        let spacing = window / (budget + 1);
        probe.next_retry = (probe.retries > 0).then(|| now.saturating_add(spacing));
        let retry =
            ProbeFrame { from: self.foca.identity().clone(), target: probe.target.clone(), number: probe.number };
        let to = probe.target.addr;
        if let Some(bytes) = frame(FRAME_PROBE, &retry) {
            self.outbox.stats.frames_out.probe_retry += 1;
            self.outbox.push(to, bytes);
        }
    }

    /// When to look again at the end of the current probe, if it is held back.
    fn probe_held_until(&self, now: Timestamp) -> Option<Timestamp> {
        let probe = self.outbox.probe.as_ref().filter(|p| !p.answered)?;
        let until = probe.hold_until.filter(|until| *until > now)?;
        // Strictly later than now, so the held timer is not looked at again in this call.
        Some(probe.next_retry.filter(|retry| *retry > now).map_or(until, |retry| retry.min(until)))
    }

    fn handle_probe(&mut self, peer: Option<(&str, &str)>, bytes: &[u8]) -> Result<(), MeshError> {
        let retry: ProbeFrame = decode_frame("probe", bytes)?;
        check_identity(peer, &retry.from)?;
        self.outbox.stats.frames_in.probe_retry += 1;
        if &retry.target != self.foca.identity() {
            self.outbox.stats.refused.stale += 1;
            return Ok(());
        }
        let answer = ProbeAckFrame {
            from: self.foca.identity().clone(),
            number: retry.number,
            incarnation: self.outbox.own_incarnation,
        };
        if let Some(bytes) = frame(FRAME_PROBE_ACK, &answer) {
            self.outbox.stats.frames_out.probe_retry += 1;
            self.outbox.push(retry.from.addr, bytes);
        }
        Ok(())
    }

    /// A member answered a direct retry: SWIM is told, as if it had answered the probe.
    fn handle_probe_ack(&mut self, now: Timestamp, peer: Option<(&str, &str)>, bytes: &[u8]) -> Result<(), MeshError> {
        let answer: ProbeAckFrame = decode_frame("probe ack", bytes)?;
        check_identity(peer, &answer.from)?;
        self.outbox.stats.frames_in.probe_retry += 1;
        let waiting = self
            .outbox
            .probe
            .as_ref()
            .is_some_and(|p| !p.answered && p.number == answer.number && p.target == answer.from);
        if !waiting {
            return Ok(());
        }
        let header = foca::Header {
            src: answer.from,
            src_incarnation: answer.incarnation,
            dst: self.foca.identity().clone(),
            message: foca::Message::Ack(answer.number),
        };
        let mut packet = Vec::with_capacity(128);
        foca::Codec::encode_header(&mut PostcardCodec, &header, &mut packet)
            .map_err(|e| foca::Error::Encode(Box::new(e)))?;
        let result = self.foca.handle_data(&packet, &mut self.outbox);
        if self.outbox.probe.as_ref().is_some_and(|p| p.answered) {
            self.outbox.stats.probes_rescued += 1;
        }
        self.absorb(now);
        Ok(result?)
    }

    /// Sends one step of an anti-entropy exchange to `to`: this node's members (but in a
    /// push), and, in answer to `peer`'s list, the states it lacks and the members it lists
    /// that this node knows are down.
    fn send_sync(&mut self, to: SocketAddr, kind: SyncKind, peer: Option<&SyncIn<'_>>) {
        let bytes = {
            let table = self.states.lock().unwrap_or_else(PoisonError::into_inner);
            let version = |id: &str| table.get(id).map_or(0, |s| s.version);
            let me = self.foca.identity();
            let members: Vec<SyncMemberOut<'_>> = if kind == SyncKind::Push {
                Vec::new()
            } else {
                let mine = SyncMemberOut { id: me, incarnation: self.outbox.own_incarnation, version: version(&me.id) };
                std::iter::once(mine)
                    .chain(self.foca.iter_membership_state().filter(|m| m.state() != State::Down).map(|m| {
                        SyncMemberOut { id: m.id(), incarnation: m.incarnation(), version: version(&m.id().id) }
                    }))
                    .take(MAX_SYNC_MEMBERS)
                    .collect()
            };
            let mut states = Vec::new();
            let mut down = Vec::new();
            if let Some(peer) = peer {
                let theirs: HashMap<&str, u64, foldhash::fast::RandomState> =
                    peer.members.iter().map(|m| (m.id.id, m.version)).collect();
                let mut active: HashSet<&str, foldhash::fast::RandomState> =
                    self.foca.iter_members().map(|m| m.id().id.as_str()).collect();
                active.insert(me.id.as_str());
                states = table
                    .by_node
                    .values()
                    .filter(|s| match theirs.get(s.node.as_str()) {
                        Some(v) => *v < s.version,
                        None => active.contains(s.node.as_str()),
                    })
                    .take(MAX_SYNC_STATES)
                    .collect();
                if kind != SyncKind::Request {
                    down = self.known_down(&peer.members);
                }
            }
            if kind == SyncKind::Push && states.is_empty() && down.is_empty() {
                return;
            }
            frame(FRAME_SYNC, &SyncOut { from: me, kind, members, down, states })
        };
        if let Some(bytes) = bytes {
            self.outbox.stats.frames_out.sync += 1;
            self.outbox.push(to, bytes);
        }
    }

    /// Of the identities `listed`, those this node knows are down.
    fn known_down(&self, listed: &[SyncMemberIn<'_>]) -> Vec<&NodeIdentity> {
        let down: HashMap<SocketAddr, &NodeIdentity, foldhash::fast::RandomState> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Down)
            .map(|m| (m.id().addr, m.id()))
            .collect();
        if down.is_empty() {
            return Vec::new();
        }
        listed
            .iter()
            .filter_map(|m| down.get(&m.id.addr).copied().filter(|id| m.id.is(id)))
            .take(MAX_SYNC_MEMBERS)
            .collect()
    }

    /// Applies what a peer's anti-entropy message says about members this node does not know,
    /// knows at a lower incarnation, or believes active when the peer knows them down.
    /// Returns how many members were new.
    fn learn_members(&mut self, members: &[SyncMemberIn<'_>], down: &[PeekIdentity<'_>]) -> Result<usize, MeshError> {
        let me = self.foca.identity().addr;
        let mut updates = Vec::new();
        let mut new = 0;
        {
            let known: HashMap<SocketAddr, &Member<NodeIdentity>, foldhash::fast::RandomState> =
                self.foca.iter_membership_state().map(|m| (m.id().addr, m)).collect();
            for m in members {
                if m.id.addr == me {
                    continue;
                }
                match known.get(&m.id.addr) {
                    Some(held) if m.id.is(held.id()) => {
                        if held.state() != State::Down && m.incarnation > held.incarnation() {
                            updates.push(Member::new(m.id.owned(), m.incarnation, State::Alive));
                        }
                    }
                    // What this node holds wins the address (a newer restart).
                    Some(held) if held.id().incarnation >= m.id.incarnation => {}
                    _ => {
                        new += 1;
                        updates.push(Member::new(m.id.owned(), m.incarnation, State::Alive));
                    }
                }
            }
            for id in down {
                if known.get(&id.addr).is_some_and(|held| id.is(held.id()) && held.state() != State::Down) {
                    updates.push(Member::new(id.owned(), 0, State::Down));
                }
            }
        }
        if !updates.is_empty() {
            self.foca.apply_many(updates.into_iter(), false, &mut self.outbox)?;
        }
        Ok(new)
    }

    fn handle_sync(&mut self, now: Timestamp, peer: Option<(&str, &str)>, bytes: &[u8]) -> Result<(), MeshError> {
        let sync: SyncIn<'_> = postcard::from_bytes(bytes).map_err(|e| MeshError::BadSync(e.to_string()))?;
        if sync.states.len() > MAX_SYNC_STATES || sync.members.len() > MAX_SYNC_MEMBERS {
            return Err(MeshError::BadSync(format!(
                "{} states and {} members (at most {MAX_SYNC_STATES} and {MAX_SYNC_MEMBERS})",
                sync.states.len(),
                sync.members.len()
            )));
        }
        if sync.down.len() > MAX_SYNC_MEMBERS {
            return Err(MeshError::BadSync(format!("{} down members", sync.down.len())));
        }
        check_claim(peer, sync.from.id, sync.from.region)?;
        self.outbox.stats.frames_in.sync += 1;
        let new = self.learn_members(&sync.members, &sync.down);
        self.absorb(now);
        if new.as_ref().is_ok_and(|n| *n > 0) {
            // Still learning members: exchange again soon.
            self.fast_syncs = self.fast_syncs.max(1);
        }
        for state in sync.states.iter().cloned() {
            if accept_state(&self.states, state).is_err() {
                self.outbox.stats.refused.bad_state += 1;
            }
        }
        match sync.kind {
            SyncKind::Request => self.send_sync(sync.from.addr, SyncKind::Reply, Some(&sync)),
            SyncKind::Reply => self.send_sync(sync.from.addr, SyncKind::Push, Some(&sync)),
            SyncKind::Push => {}
        }
        new.map(|_| ())
    }

    /// Fires every timer due at `now`: foca's, the notices to suspected members, the
    /// budgeted publication of this node's state and the periodic anti-entropy exchange.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), MeshError> {
        self.advance(now);
        let mut first_error = None;
        if let Some(retry) = self.config.refute_retry {
            let mut due = Vec::new();
            for s in &mut self.suspicions {
                if let Some(at) = s.next_notice.filter(|at| *at <= now) {
                    s.next_notice = (now < s.until).then(|| at.max(now).saturating_add(retry));
                    due.push((s.member.clone(), s.incarnation));
                }
            }
            for (member, incarnation) in due {
                self.send_suspect(&member, incarnation);
            }
        }
        self.retry_probe(now, false);
        if self.own_dirty && self.next_state_at.is_none_or(|at| at <= now) {
            self.pass_on_own_state(now);
        }
        if let Some(interval) = self.config.digest_interval
            && self.next_digest.is_some_and(|at| at <= now)
        {
            let jitter = self.rng.random_range(0.75..1.25);
            self.next_digest = Some(now.saturating_add(interval.mul_f64(jitter)));
            self.refresh_member_addrs();
            self.send_digest(now);
        }
        if self.forward_at.is_some_and(|at| at <= now) {
            self.forward_at = None;
            self.send_forward();
        }
        if self.next_sync.is_some_and(|at| at <= now) {
            let interval = if self.fast_syncs > 0 {
                self.fast_syncs -= 1;
                self.config.fast_sync_interval
            } else {
                self.config.steady_sync(self.foca.num_members())
            };
            // ±25 % so exchanges do not fall into step across the fleet.
            let jitter = self.rng.random_range(0.75..1.25);
            self.next_sync = Some(now.saturating_add(interval.mul_f64(jitter)));
            if let Some(to) = self.random_member() {
                self.send_sync(to, SyncKind::Request, None);
            }
        }
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let (Timer::ProbeRandomMember(_), Some(until)) = (&timer, self.probe_held_until(now)) {
                // The probed member has not answered but retries are still out: SWIM would
                // suspect it now; wait for them (a little).
                self.timer_seq += 1;
                self.timers.insert((until, self.timer_seq), timer);
                continue;
            }
            let suspicion = match &timer {
                Timer::ChangeSuspectToDown { member_id, incarnation, .. } => Some((member_id.addr, *incarnation)),
                _ => None,
            };
            let indirect = matches!(timer, Timer::SendIndirectProbe { .. });
            let queued = self.outbox.transmits.len();
            if let Err(e) = self.foca.handle_timer(timer, &mut self.outbox) {
                first_error.get_or_insert(e);
            }
            if let Some((addr, incarnation)) = suspicion {
                self.retract_spurious_turn_undead(addr, queued);
                self.finish_suspicion(addr, incarnation);
            }
            if indirect {
                self.retry_probe(now, true);
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
        let notice = self.suspicions.iter().filter_map(|s| s.next_notice).min();
        let state = if self.own_dirty { self.next_state_at } else { None };
        let retry = self.outbox.probe.as_ref().and_then(|p| p.next_retry);
        [timer, self.next_sync, notice, state, self.forward_at, retry, self.next_digest].into_iter().flatten().min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.outbox.transmits.pop_front()
    }

    /// The next membership change.
    pub fn poll_event(&mut self) -> Option<MeshEvent> {
        self.outbox.events.pop_front()
    }

    /// How long this node waits between passing its own state on, for a record of `bytes`:
    /// every member receives each record about `max_transmissions` times.
    fn state_interval(&self, bytes: usize) -> Duration {
        let floor = self.config.min_state_interval;
        let Some(budget) = self.config.state_budget.filter(|b| *b > 0) else { return floor };
        let members = (self.foca.num_members() + 1).max(self.config.expected_size as usize) as f64;
        let copies = f64::from(self.config.max_transmissions) + self.config.forward_fanout as f64;
        let per_round = (bytes as f64 + 2.0) * copies;
        let secs = members * per_round / f64::from(budget);
        floor.max(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }

    fn pass_on_own_state(&mut self, now: Timestamp) {
        if self.foca.custom_broadcast_backlog() >= STATE_BACKLOG_LIMIT {
            // The fleet's states already fill what SWIM messages can carry: adding more would
            // only grow every node's backlog (and the work each message costs). Try again soon.
            self.outbox.stats.states_deferred += 1;
            let retry = self.config.min_state_interval.max(self.config.probe_period);
            self.next_state_at = Some(now.saturating_add(retry));
            return;
        }
        let bytes = {
            let table = self.states.lock().unwrap_or_else(PoisonError::into_inner);
            table.get(&self.base.id).and_then(|s| postcard::to_allocvec(s).ok())
        };
        self.own_dirty = false;
        let Some(bytes) = bytes else { return };
        if self.foca.add_broadcast(&bytes).is_ok() {
            self.outbox.stats.states_published += 1;
            self.queue_forward(now, vec![bytes.clone()]);
        }
        self.next_state_at = Some(now.saturating_add(self.state_interval(bytes.len())));
    }

    /// Publishes this node's state: recorded here at once (its version is assigned here,
    /// increasing; its node and region are this node's), and passed on to the fleet as soon
    /// as the state budget allows; a publication that must wait is replaced by any newer
    /// one. Trailing pools are dropped if the record would exceed [`MAX_STATE_BYTES`].
    pub fn publish_state(&mut self, mut state: NodeState) -> Result<(), MeshError> {
        state.node = self.base.id.clone();
        state.region = self.base.region.clone();
        state.version = self.own_version + 1;
        state.validate()?;
        let mut size = postcard::experimental::serialized_size(&state).map_err(MeshError::Encode)?;
        if size > MAX_STATE_BYTES {
            self.outbox.stats.states_truncated += 1;
            while size > MAX_STATE_BYTES && state.pools.pop().is_some() {
                size = postcard::experimental::serialized_size(&state).map_err(MeshError::Encode)?;
            }
            if size > MAX_STATE_BYTES {
                return Err(StateError::TooLarge(size).into());
            }
        }
        self.own_version = state.version;
        accept_state(&self.states, state)?;
        self.own_dirty = true;
        let now = self.now;
        if self.next_state_at.is_none() && self.config.state_budget.is_some() {
            // The first publication waits a random part of the interval, so a fleet starting
            // together does not publish all at once (joiners pull states by anti-entropy).
            let wait = self.state_interval(size).mul_f64(self.rng.random_range(0.0..1.0));
            self.next_state_at = Some(now.saturating_add(wait));
        }
        if self.next_state_at.is_none_or(|at| at <= now) {
            self.pass_on_own_state(now);
        } else {
            self.outbox.stats.states_deferred += 1;
        }
        Ok(())
    }

    /// Same as [`Mesh::publish_state`].
    pub fn set_own_state(&mut self, state: NodeState) -> Result<(), MeshError> {
        self.publish_state(state)
    }

    /// Leaves the cluster gracefully (peers learn it at once instead of suspecting it).
    pub fn leave(&mut self, now: Timestamp) -> Result<(), MeshError> {
        self.advance(now);
        let result = self.foca.leave_cluster(&mut self.outbox);
        self.absorb(now);
        Ok(result?)
    }

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

    fn id(n: u32) -> NodeIdentity {
        NodeIdentity {
            id: format!("n{n}"),
            region: "eu".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + u16::try_from(n).unwrap())),
            incarnation: 0,
        }
    }

    fn state(load: f64) -> NodeState {
        NodeState {
            node: String::new(),
            region: String::new(),
            version: 0,
            capacity: 100.0,
            load,
            healthy: true,
            active_weddings: 0,
            pools: vec![PoolFigures { pool: "checkout".into(), capacity: 100.0, load, class_load: [1.0; CLASSES] }],
        }
    }

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

    #[test]
    fn garbage_datagrams_are_errors_not_panics() {
        let mut mesh = Mesh::new(id(1), Profile::Lan, 3, 1);
        for junk in [
            &b""[..],
            b"\x00",
            b"\x01\xff\xff",
            b"\x02\xff",
            b"\x03",
            b"\xff\xff\xff\xff",
            &[0x7fu8; 2000],
            &[0u8; 2000],
            &[1u8; 64],
        ] {
            assert!(mesh.handle_datagram(Timestamp::ZERO, junk).is_err());
        }
        let refused = mesh.stats().refused;
        assert_eq!(refused.unknown_frame, 3);
        assert!(refused.malformed + refused.bad_sync >= 5, "{refused:?}");
    }

    /// Delivers every queued datagram between two meshes until both are quiet.
    fn exchange(a: &mut Mesh, b: &mut Mesh, now: Timestamp) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some((to, data)) = a.poll_transmit() {
                moved = true;
                if to == b.identity().addr {
                    let peer = (a.identity().id.clone(), a.identity().region.clone());
                    b.handle_datagram_from(now, Some((&peer.0, &peer.1)), &data).unwrap();
                }
            }
            while let Some((to, data)) = b.poll_transmit() {
                moved = true;
                if to == a.identity().addr {
                    let peer = (b.identity().id.clone(), b.identity().region.clone());
                    a.handle_datagram_from(now, Some((&peer.0, &peer.1)), &data).unwrap();
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the two meshes never went quiet");
    }

    #[test]
    fn joining_by_address_and_checking_identities() {
        let mut seed = Mesh::new(id(1), Profile::Lan, 3, 1);
        let mut joiner = Mesh::new(id(2), Profile::Lan, 3, 2);
        let now = Timestamp::from_millis(5);
        joiner.join_addr(now, seed.identity().addr).unwrap();
        assert!(joiner.join_addr(now, joiner.identity().addr).is_ok(), "own address is ignored");
        exchange(&mut joiner, &mut seed, now);
        assert_eq!(seed.alive_members().next().map(|m| m.id.as_str()), Some("n2"));
        assert_eq!(joiner.alive_members().next().map(|m| m.id.as_str()), Some("n1"));
        assert_eq!(joiner.member_counts(), MemberCounts { alive: 1, suspect: 0, down: 0 });
        assert!(std::iter::from_fn(|| joiner.poll_event()).any(|e| e == MeshEvent::Joined));

        // A SWIM frame from n2 delivered over a connection certified for n3 is refused.
        joiner.join(now, seed.identity().clone()).unwrap();
        let (_, announce) = joiner.poll_transmit().unwrap();
        let err = seed.handle_datagram_from(now, Some(("n3", "eu")), &announce).unwrap_err();
        assert!(
            matches!(&err, MeshError::IdentityMismatch { claimed, certified } if claimed == "n2@eu" && certified == "n3@eu"),
            "{err}"
        );
        let err = seed.handle_datagram_from(now, Some(("n2", "us")), &announce).unwrap_err();
        assert!(matches!(err, MeshError::IdentityMismatch { .. }));
        assert!(seed.handle_datagram_from(now, Some(("n2", "eu")), &announce).is_ok());
        assert!(seed.handle_datagram(now, &announce).is_ok(), "unchecked when the peer is unknown");
        assert_eq!(seed.stats().refused.identity_mismatch, 2);

        // The mesh's own frames are checked too.
        let notice = frame(FRAME_SUSPECT, &SuspectFrame { from: id(2), target: id(1), incarnation: 0 }).unwrap();
        assert!(matches!(
            seed.handle_datagram_from(now, Some(("n9", "eu")), &notice),
            Err(MeshError::IdentityMismatch { .. })
        ));
        let two = id(2);
        let sync = frame(
            FRAME_SYNC,
            &SyncOut { from: &two, kind: SyncKind::Push, members: vec![], down: vec![], states: vec![] },
        )
        .unwrap();
        assert!(matches!(
            seed.handle_datagram_from(now, Some(("n9", "eu")), &sync),
            Err(MeshError::IdentityMismatch { .. })
        ));
        assert!(seed.handle_datagram_from(now, Some(("n2", "eu")), &sync).is_ok());
    }

    /// Delivers every queued datagram among `meshes` until all are quiet.
    fn deliver_all(meshes: &mut [Mesh], now: Timestamp) {
        for _ in 0..64 {
            let mut queued = Vec::new();
            for (i, mesh) in meshes.iter_mut().enumerate() {
                while let Some((to, data)) = mesh.poll_transmit() {
                    queued.push((i, to, data));
                }
            }
            if queued.is_empty() {
                return;
            }
            for (from, to, data) in queued {
                let sender = meshes[from].identity().clone();
                if let Some(receiver) = meshes.iter_mut().find(|m| m.identity().addr == to) {
                    let _ = receiver.handle_datagram_from(now, Some((&sender.id, &sender.region)), &data);
                }
            }
        }
        panic!("the meshes never went quiet");
    }

    #[test]
    fn a_member_that_missed_a_down_catches_up_through_the_digest() {
        let mut meshes: Vec<Mesh> = (1..=3).map(|n| Mesh::new(id(n), Profile::Lan, 3, u64::from(n))).collect();
        let t = Timestamp::from_millis(5);
        let seed = meshes[0].identity().clone();
        for mesh in &mut meshes[1..] {
            mesh.join(t, seed.clone()).unwrap();
        }
        deliver_all(&mut meshes, t);
        assert!(meshes.iter().all(|m| m.member_counts().alive == 2));
        // n1 learns that n3 is down; n2 missed it.
        let gone = meshes[2].identity().clone();
        let later = Timestamp::from_millis(1000);
        let a = &mut meshes[0];
        a.foca.apply_many(std::iter::once(Member::new(gone, 0, State::Down)), true, &mut a.outbox).unwrap();
        a.absorb(later);
        while a.poll_transmit().is_some() {}
        let digests = |a: &mut Mesh, b: &mut Mesh, at: Timestamp| {
            a.refresh_member_addrs();
            a.send_digest(at);
            let sender = a.identity().clone();
            while let Some((to, data)) = a.poll_transmit() {
                if to == b.identity().addr {
                    b.handle_datagram_from(at, Some((&sender.id, &sender.region)), &data).unwrap();
                }
            }
        };
        // Before both views settled, a differing digest changes nothing.
        let (first, rest) = meshes.split_at_mut(1);
        digests(&mut first[0], &mut rest[0], Timestamp::from_millis(2000));
        assert_eq!(rest[0].stats().digest_syncs, 0);
        // Once settled, it starts a full exchange that tells n2.
        let settled = Timestamp::from_millis(5000);
        digests(&mut first[0], &mut rest[0], settled);
        assert_eq!(rest[0].stats().digest_syncs, 1);
        let (a, b) = (&mut first[0], &mut rest[0]);
        for _ in 0..4 {
            let from_b = b.identity().clone();
            while let Some((_, data)) = b.poll_transmit() {
                a.handle_datagram_from(settled, Some((&from_b.id, &from_b.region)), &data).unwrap();
            }
            let from_a = a.identity().clone();
            while let Some((to, data)) = a.poll_transmit() {
                if to == b.identity().addr {
                    b.handle_datagram_from(settled, Some((&from_a.id, &from_a.region)), &data).unwrap();
                }
            }
        }
        assert_eq!(b.member_counts(), MemberCounts { alive: 1, suspect: 0, down: 1 });
        // Equal views: no exchange.
        let calm = Timestamp::from_millis(20_000);
        digests(a, b, calm);
        assert_eq!(b.stats().digest_syncs, 1);
    }

    #[test]
    fn a_suspected_member_refutes_directly() {
        let mut a = Mesh::new(id(1), Profile::Lan, 3, 1);
        let mut b = Mesh::new(id(2), Profile::Lan, 3, 2);
        let now = Timestamp::from_millis(5);
        b.join(now, a.identity().clone()).unwrap();
        exchange(&mut a, &mut b, now);
        // a tells b it is suspected at incarnation 0: b refutes and answers a.
        let me = a.identity().clone();
        a.send_suspect(&b.identity().clone(), 0);
        exchange(&mut a, &mut b, now);
        assert_eq!(b.stats().refutations, 1);
        assert_eq!(b.stats().frames_out.alive, 1);
        assert!(b.stats().local_health > 0);
        let seen = a.member_states().find(|(m, _)| m.id == "n2").map(|(_, h)| h);
        assert_eq!(seen, Some(MemberHealth::Alive));
        assert_eq!(a.foca.iter_membership_state().find(|m| m.id().id == "n2").unwrap().incarnation(), 1);
        // A second notice for the same incarnation is answered without refuting again.
        a.send_suspect(&b.identity().clone(), 0);
        exchange(&mut a, &mut b, now);
        assert_eq!(b.stats().refutations, 1);
        assert_eq!(b.stats().frames_out.alive, 2);
        assert_eq!(a.identity(), &me);
    }

    #[test]
    fn own_state_is_budgeted_and_pools_are_aggregated() {
        let mut a = Mesh::new(id(1), Profile::Lan, 3, 1);
        let mut b = Mesh::new(id(2), Profile::Lan, 3, 2);
        let now = Timestamp::from_millis(5);
        b.join(now, a.identity().clone()).unwrap();
        exchange(&mut a, &mut b, now);
        // The first publication waits a random part of the budget interval (1 s here).
        a.publish_state(state(10.0)).unwrap();
        assert_eq!(a.state_of("n1").unwrap().load, 10.0, "recorded locally at once");
        let t0 = now.saturating_add(Duration::from_secs(2));
        a.handle_timeout(t0).unwrap();
        assert_eq!(a.stats().states_published, 1);
        // Then at most one per interval; a held-back publication is replaced by a newer one.
        let t1 = t0.saturating_add(Duration::from_secs(1));
        a.handle_timeout(t1).unwrap();
        a.publish_state(state(20.0)).unwrap();
        a.publish_state(state(30.0)).unwrap();
        a.publish_state(state(40.0)).unwrap();
        assert_eq!(a.stats().states_published, 2);
        assert_eq!(a.stats().states_deferred, 3);
        assert_eq!(a.state_of("n1").unwrap().load, 40.0);
        assert!(a.poll_timeout().is_some_and(|at| at <= t1.saturating_add(Duration::from_secs(1))));
        let later = t1.saturating_add(Duration::from_secs(2));
        a.handle_timeout(later).unwrap();
        assert_eq!(a.stats().states_published, 3);
        assert!(a.publish_state(state(f64::NAN)).is_err());
        // Too many pools are refused, too-long records lose their trailing pools.
        let mut many = state(1.0);
        many.pools = (0..MAX_POOLS + 1)
            .map(|i| PoolFigures { pool: format!("p{i}"), capacity: 1.0, load: 1.0, class_load: [0.0; CLASSES] })
            .collect();
        assert!(matches!(a.publish_state(many), Err(MeshError::BadState(StateError::TooManyPools { .. }))));
        let mut long = state(1.0);
        long.pools = (0..MAX_POOLS)
            .map(|i| PoolFigures {
                pool: format!("a-rather-long-pool-name-{i:03}"),
                capacity: 1.0,
                load: 1.0,
                class_load: [0.0; CLASSES],
            })
            .collect();
        a.publish_state(long).unwrap();
        assert_eq!(a.stats().states_truncated, 1);
        let kept = a.state_of("n1").unwrap();
        assert!(kept.pools.len() < MAX_POOLS && !kept.pools.is_empty());
        assert!(postcard::to_allocvec(&kept).unwrap().len() <= MAX_STATE_BYTES);
        // b hears of a's state through the gossip that carries it, and aggregates the pools.
        a.publish_state(state(30.0)).unwrap();
        b.publish_state(state(5.0)).unwrap();
        let mut t = later;
        for _ in 0..40 {
            t = t.saturating_add(Duration::from_millis(250));
            a.handle_timeout(t).unwrap();
            b.handle_timeout(t).unwrap();
            exchange(&mut a, &mut b, t);
        }
        let view = b.fleet_view();
        let eu = &view.regions["eu"];
        assert_eq!(eu.members, 2);
        assert_eq!(eu.load, 35.0);
        let checkout = &eu.pools["checkout"];
        assert_eq!((checkout.members, checkout.load, checkout.class_load[0]), (2, 35.0, 2.0));
    }

    #[test]
    fn packet_size_is_bounded() {
        let mut mesh = Mesh::new(id(1), Profile::Lan, 3, 1);
        assert_eq!(mesh.config().max_packet_size, DEFAULT_MAX_PACKET);
        assert!(matches!(mesh.set_max_packet_size(200), Err(MeshError::PacketSize { .. })));
        mesh.set_max_packet_size(1200).unwrap();
        assert_eq!(mesh.config().max_packet_size, 1200);
    }
}
