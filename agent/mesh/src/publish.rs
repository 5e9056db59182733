//! Dissemination of node states: this node's own state, passed on as often as the state
//! budget allows, and the forwarding of node states new to this node to a few random members.

use crate::state::{self, accept_record, accept_state};
use crate::wire::FRAME_STATES;
use crate::{MAX_STATE_BYTES, Mesh, MeshError, NodeState, StateError};
use rand::RngExt;
use std::sync::PoisonError;
use std::time::Duration;
use wedsync_core::Timestamp;

/// Node states waiting to be piggybacked beyond which this node holds its own back.
const STATE_BACKLOG_LIMIT: usize = 16;

impl Mesh {
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

    pub(crate) fn pass_on_own_state(&mut self, now: Timestamp) {
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

    /// Queues encoded node states to forward soon.
    pub(crate) fn queue_forward(&mut self, now: Timestamp, records: Vec<Vec<u8>>) {
        if self.config.forward_states.is_none() {
            return;
        }
        let room = state::MAX_FRESH.saturating_sub(self.forward_queue.len());
        self.forward_queue.extend(records.into_iter().take(room));
        self.schedule_forward(now);
    }

    /// Sends the queued node states to `forward_fanout` random members, in as few frames as
    /// fit a datagram.
    pub(crate) fn send_forward(&mut self) {
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
    pub(crate) fn handle_states(&mut self, now: Timestamp, mut bytes: &[u8]) -> Result<(), MeshError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{exchange, id, state};
    use crate::{CLASSES, MAX_POOLS, PoolFigures, Profile};

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
}
