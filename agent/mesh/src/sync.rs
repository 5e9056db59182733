//! Anti-entropy: membership digests, and the push-pull exchange of members, "down"
//! corrections and the node states a peer lacks; the cache of active members' addresses the
//! digest is computed over.

use crate::state::accept_state;
use crate::wire::{
    DigestFrame, FRAME_DIGEST, FRAME_SYNC, PeekIdentity, SyncIn, SyncKind, SyncMemberIn, SyncMemberOut, SyncOut, frame,
};
use crate::{Mesh, MeshError, NodeIdentity, check_claim, check_identity, decode_frame};
use foca::{Member, State};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::Duration;
use wedsync_core::Timestamp;

/// Most node states one anti-entropy message carries.
pub const MAX_SYNC_STATES: usize = 4096;
/// Most members one anti-entropy message lists.
pub const MAX_SYNC_MEMBERS: usize = 4096;

impl Mesh {
    pub(crate) fn refresh_member_addrs(&mut self) {
        if std::mem::take(&mut self.member_addrs_stale) {
            self.member_addrs.clear();
            self.member_addrs.extend(self.foca.iter_members().map(|m| m.id().addr));
            let hasher = foldhash::fast::FixedState::with_seed(0x6469_6765_7374);
            self.member_hash = std::iter::once(self.foca.identity())
                .chain(self.foca.iter_members().map(|m| m.id()))
                .fold(0, |acc, id| acc ^ hasher.hash_one((id.addr, id.incarnation)));
        }
    }

    pub(crate) fn send_digest(&mut self, now: Timestamp) {
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
    pub(crate) fn handle_digest(
        &mut self,
        now: Timestamp,
        peer: Option<(&str, &str)>,
        bytes: &[u8],
    ) -> Result<(), MeshError> {
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

    /// Sends one step of an anti-entropy exchange to `to`: this node's members (but in a
    /// push), and, in answer to `peer`'s list, the states it lacks and the members it lists
    /// that this node knows are down.
    pub(crate) fn send_sync(&mut self, to: SocketAddr, kind: SyncKind, peer: Option<&SyncIn<'_>>) {
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

    pub(crate) fn handle_sync(
        &mut self,
        now: Timestamp,
        peer: Option<(&str, &str)>,
        bytes: &[u8],
    ) -> Result<(), MeshError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{deliver_all, id};
    use crate::{MemberCounts, Profile};

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
}
