//! What a mesh counts for metrics and what it reports about members.

use foca::Message;
use serde::Serialize;

/// Frames by kind: SWIM messages by type, plus the mesh's own frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FrameCounts {
    /// SWIM probes.
    pub ping: u64,
    /// SWIM probe replies.
    pub ack: u64,
    /// SWIM indirect probe cycle (ping-req, indirect ping/ack, forwarded ack).
    pub indirect: u64,
    /// SWIM join requests (and periodic announces).
    pub announce: u64,
    /// SWIM replies to announces, carrying members.
    pub feed: u64,
    /// SWIM dissemination of membership updates and node states.
    pub gossip: u64,
    /// SWIM node-state-only messages.
    pub broadcast: u64,
    /// SWIM notices to members that the sender considers down.
    pub turn_undead: u64,
    /// Anti-entropy exchanges (members and node states).
    pub sync: u64,
    /// "You are suspected" notices sent straight to a suspected member.
    pub suspect: u64,
    /// Refutations sent straight back to the member that suspected us.
    pub alive: u64,
    /// Direct probe retries (and their answers) while SWIM probes indirectly.
    pub probe_retry: u64,
    /// Node states forwarded as soon as they arrived.
    pub states: u64,
    /// Digests of the membership view.
    pub digest: u64,
}

impl FrameCounts {
    pub(crate) fn count_swim<T>(&mut self, message: &Message<T>) {
        let slot = match message {
            Message::Ping(_) => &mut self.ping,
            Message::Ack(_) => &mut self.ack,
            Message::PingReq { .. }
            | Message::IndirectPing { .. }
            | Message::IndirectAck { .. }
            | Message::ForwardedAck { .. } => &mut self.indirect,
            Message::Announce => &mut self.announce,
            Message::Feed => &mut self.feed,
            Message::Gossip => &mut self.gossip,
            Message::Broadcast => &mut self.broadcast,
            Message::TurnUndead => &mut self.turn_undead,
        };
        *slot += 1;
    }

    /// Every frame counted.
    pub fn total(&self) -> u64 {
        self.ping
            + self.ack
            + self.indirect
            + self.announce
            + self.feed
            + self.gossip
            + self.broadcast
            + self.turn_undead
            + self.sync
            + self.suspect
            + self.alive
            + self.probe_retry
            + self.states
            + self.digest
    }
}

/// Frames refused after delivery, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RefusedCounts {
    /// Did not decode, or SWIM refused it (wrong size, from ourselves, …).
    pub malformed: u64,
    /// Unknown or missing frame byte.
    pub unknown_frame: u64,
    /// The identity inside the frame is not the certified peer's.
    pub identity_mismatch: u64,
    /// An anti-entropy exchange that did not decode or was too large.
    pub bad_sync: u64,
    /// Node-state records refused (malformed, non-finite figures, too many pools).
    pub bad_state: u64,
    /// Addressed to an identity this node no longer has (sent before it restarted).
    pub stale: u64,
}

/// What the mesh counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeshStats {
    /// Frames received, by kind (SWIM frames are counted once SWIM decoded them).
    pub frames_in: FrameCounts,
    /// Frames sent, by kind.
    pub frames_out: FrameCounts,
    /// Bytes received in frames (without transport overhead).
    pub bytes_in: u64,
    /// Bytes sent in frames (without transport overhead).
    pub bytes_out: u64,
    /// Frames refused, by reason.
    pub refused: RefusedCounts,
    /// Probes that failed directly but were answered to a direct retry.
    pub probes_rescued: u64,
    /// Members this node suspected after a failed probe.
    pub suspicions_raised: u64,
    /// Of those, how many proved alive (false suspicions refuted).
    pub suspicions_refuted: u64,
    /// Of those, how many this node declared down.
    pub declared_down: u64,
    /// Full anti-entropy exchanges started because a peer's settled view of the membership
    /// differed from this node's.
    pub digest_syncs: u64,
    /// Times this node refuted a suspicion about itself.
    pub refutations: u64,
    /// Times this node learned it had been declared down and rejoined under a renewed
    /// identity.
    pub rejoins: u64,
    /// Local health multiplier now (0 = healthy): probe period, probe timeout and suspicion
    /// timeout are scaled by `1 + local_health`.
    pub local_health: u32,
    /// Highest local health multiplier seen.
    pub local_health_max: u32,
    /// This node's states passed on to the fleet.
    pub states_published: u64,
    /// Publications held back to stay within the state traffic budget (the newest is sent
    /// when the budget allows).
    pub states_deferred: u64,
    /// Publications whose trailing pools were dropped to fit the state size bound.
    pub states_truncated: u64,
}

impl MeshStats {
    /// Refused frames as `(reason, count)`, for metrics labels.
    pub fn refusals(&self) -> [(&'static str, u64); 6] {
        let r = &self.refused;
        [
            ("malformed", r.malformed),
            ("unknown_frame", r.unknown_frame),
            ("identity_mismatch", r.identity_mismatch),
            ("bad_sync", r.bad_sync),
            ("bad_state", r.bad_state),
            ("stale", r.stale),
        ]
    }
}

/// How this node sees a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemberHealth {
    /// Active and answering.
    Alive,
    /// Active, but a probe failed: it is declared down unless it refutes in time.
    Suspect,
    /// Declared down (remembered for a while so an old identity cannot come back).
    Down,
}

/// Members by state (this node not included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemberCounts {
    /// Alive members.
    pub alive: usize,
    /// Suspected members.
    pub suspect: usize,
    /// Members declared down and still remembered.
    pub down: usize,
}
