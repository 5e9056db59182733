//! SWIM as the mesh runs it: the foca runtime ([`Outbox`]) that collects what foca asks for
//! during one call, the probe in progress and its direct retries, the suspicions this node
//! raised (direct notices, refutation, the work-around for foca's spurious "you are down"),
//! and local health.

use crate::wire::{
    self, AliveFrame, FRAME_ALIVE, FRAME_PROBE, FRAME_PROBE_ACK, FRAME_SUSPECT, FRAME_SWIM, ProbeAckFrame, ProbeFrame,
    SuspectFrame, frame,
};
use crate::{Mesh, MeshError, MeshEvent, MeshStats, NodeIdentity, check_claim, check_identity, decode_frame};
use foca::{Incarnation, Member, Notification, PostcardCodec, Runtime, State, Timer};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use wedsync_core::Timestamp;

/// Collects what foca asks for during one call, and what the mesh counts.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(crate) timers: Vec<(Duration, Timer<NodeIdentity>)>,
    pub(crate) events: VecDeque<MeshEvent>,
    pub(crate) stats: MeshStats,
    /// This node's SWIM incarnation, as last seen in a packet it sent.
    pub(crate) own_incarnation: Incarnation,
    /// Members declared down since the mesh last looked.
    pub(crate) fresh_downs: u32,
    /// Members declared down, ever.
    downs: u64,
    /// foca just became active (joined).
    pub(crate) became_active: bool,
    /// The set of active members changed.
    pub(crate) members_changed: bool,
    /// Probe replies since the mesh last looked.
    pub(crate) acks: u32,
    /// The SWIM probe in progress.
    pub(crate) probe: Option<CurrentProbe>,
}

/// The member SWIM is probing, as seen in the packets it sends and receives.
#[derive(Debug)]
pub(crate) struct CurrentProbe {
    target: NodeIdentity,
    number: u8,
    answered: bool,
    /// Direct retries left, and when the next is due.
    retries: u32,
    pub(crate) next_retry: Option<Timestamp>,
    /// Until when the end of the probe may be held back for retries.
    hold_until: Option<Timestamp>,
}

impl Outbox {
    pub(crate) fn push(&mut self, to: SocketAddr, data: Vec<u8>) {
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

/// A member this node suspects after its own probe failed.
#[derive(Debug)]
pub(crate) struct Suspicion {
    pub(crate) member: NodeIdentity,
    pub(crate) incarnation: Incarnation,
    /// When to tell it again that it is suspected.
    pub(crate) next_notice: Option<Timestamp>,
    /// When it will be declared down unless it refutes.
    pub(crate) until: Timestamp,
    /// It answered: it is alive.
    refuted: bool,
}

impl Mesh {
    pub(crate) fn scale(&self, d: Duration) -> Duration {
        d.saturating_mul(self.local_health.saturating_add(1))
    }

    fn raise_local_health(&mut self) {
        self.local_health = (self.local_health + 1).min(self.config.max_local_health);
        self.outbox.stats.local_health_max = self.outbox.stats.local_health_max.max(self.local_health);
    }

    pub(crate) fn start_suspicion(
        &mut self,
        now: Timestamp,
        member: NodeIdentity,
        incarnation: Incarnation,
        until: Timestamp,
    ) {
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

    pub(crate) fn send_suspect(&mut self, member: &NodeIdentity, incarnation: Incarnation) {
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
    pub(crate) fn retract_spurious_turn_undead(&mut self, addr: SocketAddr, queued: usize) {
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
    pub(crate) fn finish_suspicion(&mut self, addr: SocketAddr, incarnation: Incarnation) {
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

    pub(crate) fn handle_swim(
        &mut self,
        now: Timestamp,
        peer: Option<(&str, &str)>,
        packet: &[u8],
    ) -> Result<(), MeshError> {
        if peer.is_some() {
            let src = wire::swim_sender(packet).map_err(|e| foca::Error::Decode(Box::new(e)))?;
            check_claim(peer, src.id, src.region)?;
        }
        let result = self.foca.handle_data(packet, &mut self.outbox);
        self.absorb(now);
        Ok(result?)
    }

    pub(crate) fn handle_suspect(
        &mut self,
        now: Timestamp,
        peer: Option<(&str, &str)>,
        bytes: &[u8],
    ) -> Result<(), MeshError> {
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

    pub(crate) fn handle_alive(
        &mut self,
        now: Timestamp,
        peer: Option<(&str, &str)>,
        bytes: &[u8],
    ) -> Result<(), MeshError> {
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
    pub(crate) fn retry_probe(&mut self, now: Timestamp, first: bool) {
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
    pub(crate) fn probe_held_until(&self, now: Timestamp) -> Option<Timestamp> {
        let probe = self.outbox.probe.as_ref().filter(|p| !p.answered)?;
        let until = probe.hold_until.filter(|until| *until > now)?;
        // Strictly later than now, so the held timer is not looked at again in this call.
        Some(probe.next_retry.filter(|retry| *retry > now).map_or(until, |retry| retry.min(until)))
    }

    pub(crate) fn handle_probe(&mut self, peer: Option<(&str, &str)>, bytes: &[u8]) -> Result<(), MeshError> {
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
    pub(crate) fn handle_probe_ack(
        &mut self,
        now: Timestamp,
        peer: Option<(&str, &str)>,
        bytes: &[u8],
    ) -> Result<(), MeshError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{exchange, id};
    use crate::{MemberHealth, Profile};

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
}
