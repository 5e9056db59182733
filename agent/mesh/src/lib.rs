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
mod publish;
pub mod sim;
mod state;
mod stats;
mod swim;
mod sync;
mod view;
mod wire;

pub use config::{DEFAULT_MAX_PACKET, MIN_MAX_PACKET, MeshConfig};
pub use failover::{
    FailoverProposal, FailoverShare, MAX_POOLS_IN_STATE, STATE_HEARTBEAT, failover_proposals, failover_shares,
    node_state, state_changed, state_due,
};
pub use state::{CLASSES, MAX_NAME_BYTES, MAX_POOLS, MAX_STATE_BYTES, NodeState, PoolFigures, StateError, StateKey};
pub use stats::{FrameCounts, MemberCounts, MemberHealth, MeshStats, RefusedCounts};
pub use sync::{MAX_SYNC_MEMBERS, MAX_SYNC_STATES};
pub use view::{FleetView, PoolAggregate, RegionView, coordinator};

use foca::{Foca, Identity, PostcardCodec, Timer};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use state::{StateBroadcasts, StateTable};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::PoisonError;
use swim::{Outbox, Suspicion};
use wedsync_core::Timestamp;
use wire::{
    FRAME_ALIVE, FRAME_DIGEST, FRAME_PROBE, FRAME_PROBE_ACK, FRAME_STATES, FRAME_SUSPECT, FRAME_SWIM, FRAME_SYNC,
    SyncKind,
};

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

    /// Leaves the cluster gracefully (peers learn it at once instead of suspecting it).
    pub fn leave(&mut self, now: Timestamp) -> Result<(), MeshError> {
        self.advance(now);
        let result = self.foca.leave_cluster(&mut self.outbox);
        self.absorb(now);
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{SuspectFrame, SyncOut, frame};

    pub(crate) fn id(n: u32) -> NodeIdentity {
        NodeIdentity {
            id: format!("n{n}"),
            region: "eu".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + u16::try_from(n).unwrap())),
            incarnation: 0,
        }
    }

    pub(crate) fn state(load: f64) -> NodeState {
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
    pub(crate) fn exchange(a: &mut Mesh, b: &mut Mesh, now: Timestamp) {
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
    pub(crate) fn deliver_all(meshes: &mut [Mesh], now: Timestamp) {
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
    fn packet_size_is_bounded() {
        let mut mesh = Mesh::new(id(1), Profile::Lan, 3, 1);
        assert_eq!(mesh.config().max_packet_size, DEFAULT_MAX_PACKET);
        assert!(matches!(mesh.set_max_packet_size(200), Err(MeshError::PacketSize { .. })));
        mesh.set_max_packet_size(1200).unwrap();
        assert_eq!(mesh.config().max_packet_size, 1200);
    }
}
