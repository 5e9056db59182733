//! The mesh's own frames. Every datagram starts with a frame byte; SWIM frames are foca's
//! packets, the others are postcard-encoded messages defined here.

use crate::{NodeIdentity, NodeState};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A foca packet.
pub(crate) const FRAME_SWIM: u8 = 0;
/// Anti-entropy: members and node states ([`SyncMessage`]).
pub(crate) const FRAME_SYNC: u8 = 1;
/// "You are suspected" ([`SuspectFrame`]).
pub(crate) const FRAME_SUSPECT: u8 = 2;
/// "I am alive" ([`AliveFrame`]).
pub(crate) const FRAME_ALIVE: u8 = 3;
/// A direct probe retry ([`ProbeFrame`]).
pub(crate) const FRAME_PROBE: u8 = 4;
/// The answer to a [`ProbeFrame`] ([`ProbeAckFrame`]).
pub(crate) const FRAME_PROBE_ACK: u8 = 5;
/// Node states new to the sender, forwarded at once: after the frame byte, records of a
/// big-endian `u16` length and an encoded [`NodeState`].
pub(crate) const FRAME_STATES: u8 = 6;
/// A digest of the sender's view of the membership ([`DigestFrame`]).
pub(crate) const FRAME_DIGEST: u8 = 7;

/// Step of an anti-entropy exchange (push-pull with digests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SyncKind {
    /// The sender's members and the state versions it holds; asks for a [`SyncKind::Reply`].
    Request,
    /// The replier's members and versions, plus the states the requester lacks.
    Reply,
    /// The states the replier lacks; ends the exchange.
    Push,
}

/// A member as the sender sees it, with the version of its state the sender holds.
#[derive(Debug, Serialize)]
pub(crate) struct SyncMemberOut<'a> {
    pub(crate) id: &'a NodeIdentity,
    /// SWIM incarnation.
    pub(crate) incarnation: u16,
    /// Version of the member's state the sender holds (0: none).
    pub(crate) version: u64,
}

/// [`SyncMemberOut`] as received, read without allocating.
#[derive(Debug, Deserialize)]
pub(crate) struct SyncMemberIn<'a> {
    #[serde(borrow)]
    pub(crate) id: PeekIdentity<'a>,
    pub(crate) incarnation: u16,
    pub(crate) version: u64,
}

/// One step of an anti-entropy exchange, as sent.
#[derive(Debug, Serialize)]
pub(crate) struct SyncOut<'a> {
    pub(crate) from: &'a NodeIdentity,
    pub(crate) kind: SyncKind,
    /// Active members (the sender first); empty in a [`SyncKind::Push`].
    pub(crate) members: Vec<SyncMemberOut<'a>>,
    /// Identities the receiver listed as active that the sender knows are down (in a reply
    /// and in a push).
    pub(crate) down: Vec<&'a NodeIdentity>,
    /// States newer than the receiver's (by the versions it listed).
    pub(crate) states: Vec<&'a NodeState>,
}

/// One step of an anti-entropy exchange, as received (identities borrowed).
#[derive(Debug, Deserialize)]
pub(crate) struct SyncIn<'a> {
    #[serde(borrow)]
    pub(crate) from: PeekIdentity<'a>,
    pub(crate) kind: SyncKind,
    #[serde(borrow)]
    pub(crate) members: Vec<SyncMemberIn<'a>>,
    #[serde(borrow)]
    pub(crate) down: Vec<PeekIdentity<'a>>,
    pub(crate) states: Vec<NodeState>,
}

/// Sent by a member whose probe of `target` failed, straight to `target`, until it refutes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SuspectFrame {
    pub(crate) from: NodeIdentity,
    pub(crate) target: NodeIdentity,
    /// The SWIM incarnation under suspicion.
    pub(crate) incarnation: u16,
}

/// A suspected member's answer to a [`SuspectFrame`]: its identity at a higher incarnation.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AliveFrame {
    pub(crate) from: NodeIdentity,
    pub(crate) incarnation: u16,
}

/// Sent straight to a member whose SWIM probe went unanswered, while SWIM asks others to
/// probe it: a second and third chance for a direct answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProbeFrame {
    pub(crate) from: NodeIdentity,
    pub(crate) target: NodeIdentity,
    /// The SWIM probe number.
    pub(crate) number: u8,
}

/// The answer to a [`ProbeFrame`], with the answering member's SWIM incarnation.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ProbeAckFrame {
    pub(crate) from: NodeIdentity,
    pub(crate) number: u8,
    pub(crate) incarnation: u16,
}

/// A digest of the active members as the sender sees them (itself included), so two members
/// whose settled views differ notice and exchange them in full.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DigestFrame {
    pub(crate) from: NodeIdentity,
    /// XOR of a hash of every active member's address and incarnation.
    pub(crate) hash: u64,
    pub(crate) members: u32,
    /// How long the sender's view has not changed (ms).
    pub(crate) settled_ms: u64,
}

/// `message` postcard-encoded after `tag`.
pub(crate) fn frame<T: Serialize>(tag: u8, message: &T) -> Option<Vec<u8>> {
    let out = vec![tag];
    postcard::to_extend(message, out).ok()
}

/// A [`NodeIdentity`] read without allocating (same encoding).
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct PeekIdentity<'a> {
    pub(crate) id: &'a str,
    pub(crate) region: &'a str,
    pub(crate) addr: SocketAddr,
    pub(crate) incarnation: u64,
}

impl PeekIdentity<'_> {
    /// Whether it is `id`.
    pub(crate) fn is(&self, id: &NodeIdentity) -> bool {
        self.addr == id.addr && self.incarnation == id.incarnation && self.id == id.id && self.region == id.region
    }

    pub(crate) fn owned(self) -> NodeIdentity {
        NodeIdentity {
            id: self.id.to_owned(),
            region: self.region.to_owned(),
            addr: self.addr,
            incarnation: self.incarnation,
        }
    }
}

/// Whether a SWIM packet is a "you are down" notice.
pub(crate) fn swim_message_is_turn_undead(packet: &[u8]) -> bool {
    postcard::take_from_bytes::<foca::Header<PeekIdentity<'_>>>(packet)
        .is_ok_and(|(header, _)| matches!(header.message, foca::Message::TurnUndead))
}

/// The sender a SWIM packet claims, read before foca handles the packet.
pub(crate) fn swim_sender(packet: &[u8]) -> Result<PeekIdentity<'_>, postcard::Error> {
    let (header, _): (foca::Header<PeekIdentity<'_>>, _) = postcard::take_from_bytes(packet)?;
    Ok(header.src)
}
