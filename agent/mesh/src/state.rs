//! The small, versioned record each node disseminates about itself ([`NodeState`]), how a
//! received one is checked, and the table of the newest state of every node.

use crate::NodeIdentity;
use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use wedsync_core::TrafficClass;

/// Largest encoded [`NodeState`] accepted from a peer or published. It leaves room in a
/// 1,100-byte SWIM packet for the header (two identities) and a few membership updates.
pub const MAX_STATE_BYTES: usize = 768;
/// Most pools one [`NodeState`] describes.
pub const MAX_POOLS: usize = 16;
/// Longest node id, region or pool name (bytes) a state may carry.
pub const MAX_NAME_BYTES: usize = 128;
/// Number of traffic classes in [`PoolFigures::class_load`], in [`TrafficClass::ALL`] order.
pub const CLASSES: usize = TrafficClass::ALL.len();

/// One pool's figures as its node publishes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolFigures {
    /// Pool name.
    pub pool: String,
    /// Capacity the pool serves (requests/s).
    pub capacity: f64,
    /// Load on it (requests/s).
    pub load: f64,
    /// Load per traffic class (requests/s), in [`TrafficClass::ALL`] order: wedding-critical,
    /// wedding-planning, registration, media, background.
    pub class_load: [f32; CLASSES],
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
    /// Per-pool figures (at most [`MAX_POOLS`]).
    pub pools: Vec<PoolFigures>,
}

fn figure_ok(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

impl NodeState {
    /// Checks what a peer cannot be trusted with: figures finite and non-negative, at most
    /// [`MAX_POOLS`] pools, names at most [`MAX_NAME_BYTES`].
    pub fn validate(&self) -> Result<(), StateError> {
        if self.node.len() > MAX_NAME_BYTES || self.region.len() > MAX_NAME_BYTES {
            return Err(StateError::BadName(truncated(&self.node)));
        }
        if self.pools.len() > MAX_POOLS {
            return Err(StateError::TooManyPools { node: self.node.clone(), pools: self.pools.len() });
        }
        if !(figure_ok(self.capacity) && figure_ok(self.load)) {
            return Err(StateError::BadFigure(self.node.clone()));
        }
        for pool in &self.pools {
            if pool.pool.len() > MAX_NAME_BYTES {
                return Err(StateError::BadName(truncated(&pool.pool)));
            }
            let classes_ok = pool.class_load.iter().all(|x| figure_ok(f64::from(*x)));
            if !(figure_ok(pool.capacity) && figure_ok(pool.load) && classes_ok) {
                return Err(StateError::BadFigure(self.node.clone()));
            }
        }
        Ok(())
    }
}

fn truncated(name: &str) -> String {
    name.chars().take(32).collect()
}

/// The first fields of an encoded [`NodeState`], read without allocating: most state records
/// a node receives are copies of one it already holds.
#[derive(Deserialize)]
struct StatePrefix<'a> {
    node: &'a str,
    #[serde(rename = "region")]
    _region: &'a str,
    version: u64,
}

/// Key of a state broadcast: a newer version of a node's state replaces an older one in the
/// dissemination backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    /// Hash of `node`: the backlog is scanned at every new broadcast, so most keys are told
    /// apart without comparing strings.
    node_hash: u64,
    node: String,
    version: u64,
}

impl StateKey {
    fn new(node: &str, version: u64) -> Self {
        use std::hash::BuildHasher;
        let node_hash = foldhash::fast::FixedState::with_seed(0x7374_6174).hash_one(node);
        StateKey { node_hash, node: node.to_owned(), version }
    }
}

impl Invalidates for StateKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node_hash == other.node_hash && self.version >= other.version && self.node == other.node
    }
}

/// Why a peer's state record was refused.
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
    /// More than [`MAX_POOLS`] pools.
    #[error("node state of {node:?} describes {pools} pools (at most {MAX_POOLS})")]
    TooManyPools {
        /// The node.
        node: String,
        /// How many pools it described.
        pools: usize,
    },
    /// A node, region or pool name longer than [`MAX_NAME_BYTES`].
    #[error("node state holds a name longer than {MAX_NAME_BYTES} bytes ({0:?}…)")]
    BadName(String),
}

/// Most records of fresh states waiting to be forwarded.
pub(crate) const MAX_FRESH: usize = 256;

/// Newest state of every node, by node id, and the records of those that arrived through
/// SWIM since the mesh last looked (to forward them).
#[derive(Debug, Default)]
pub(crate) struct States {
    pub(crate) by_node: HashMap<String, NodeState, foldhash::fast::RandomState>,
    pub(crate) fresh: Vec<Vec<u8>>,
}

impl States {
    pub(crate) fn get(&self, node: &str) -> Option<&NodeState> {
        self.by_node.get(node)
    }
}

/// Shared between the mesh and the broadcast handler foca owns.
pub(crate) type StateTable = Arc<Mutex<States>>;

/// Stores `state` if it is newer than the one held; whether it was.
pub(crate) fn accept_state(table: &StateTable, state: NodeState) -> Result<bool, StateError> {
    state.validate()?;
    let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
    if table.get(&state.node).is_some_and(|held| held.version >= state.version) {
        return Ok(false);
    }
    table.by_node.insert(state.node.clone(), state);
    Ok(true)
}

/// Stores the encoded state `data` if it is newer than the one held; whether it was.
pub(crate) fn accept_record(table: &StateTable, data: &[u8]) -> Result<bool, StateError> {
    if data.len() > MAX_STATE_BYTES {
        return Err(StateError::TooLarge(data.len()));
    }
    let (prefix, _): (StatePrefix<'_>, _) = postcard::take_from_bytes(data)?;
    let held = table.lock().unwrap_or_else(PoisonError::into_inner).get(prefix.node).map(|s| s.version);
    if held.is_some_and(|v| v >= prefix.version) {
        return Ok(false);
    }
    accept_state(table, postcard::from_bytes(data)?)
}

/// Keeps the newest state of every node and tells foca what is worth passing on.
#[derive(Debug)]
pub(crate) struct StateBroadcasts {
    pub(crate) table: StateTable,
}

impl BroadcastHandler<NodeIdentity> for StateBroadcasts {
    type Key = StateKey;
    type Error = StateError;

    fn receive_item(&mut self, data: &[u8], sender: Option<&NodeIdentity>) -> Result<Option<StateKey>, StateError> {
        if data.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLarge(data.len()));
        }
        let (prefix, _): (StatePrefix<'_>, _) = postcard::take_from_bytes(data)?;
        let local = sender.is_none();
        {
            let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            let stale = table.get(prefix.node).is_some_and(|held| {
                // This node's own records were stored already; they are passed on anyway.
                if local { held.version > prefix.version } else { held.version >= prefix.version }
            });
            if stale {
                return Ok(None);
            }
        }
        let state: NodeState = postcard::from_bytes(data)?;
        state.validate()?;
        let key = StateKey::new(&state.node, state.version);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.by_node.insert(state.node.clone(), state);
        if !local && table.fresh.len() < MAX_FRESH {
            table.fresh.push(data.to_vec());
        }
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn state(version: u64, load: f64) -> NodeState {
        NodeState {
            node: "n1".into(),
            region: "eu".into(),
            version,
            capacity: 100.0,
            load,
            healthy: true,
            active_weddings: 0,
            pools: vec![PoolFigures {
                pool: "checkout".into(),
                capacity: 100.0,
                load,
                class_load: [1.0, 2.0, 3.0, 4.0, 5.0],
            }],
        }
    }

    fn enc(s: &NodeState) -> Vec<u8> {
        postcard::to_allocvec(s).unwrap()
    }

    #[test]
    fn newer_state_versions_win_and_bad_ones_are_refused() {
        let table: StateTable = Arc::default();
        let mut handler = StateBroadcasts { table: table.clone() };
        let peer = NodeIdentity {
            id: "n2".into(),
            region: "eu".into(),
            addr: "127.0.0.1:7000".parse().unwrap(),
            incarnation: 0,
        };
        let from = Some(&peer);
        assert!(handler.receive_item(&enc(&state(2, 5.0)), from).unwrap().is_some());
        assert!(handler.receive_item(&enc(&state(1, 9.0)), from).unwrap().is_none(), "older version is stale");
        assert!(handler.receive_item(&enc(&state(2, 9.0)), from).unwrap().is_none(), "same version is stale");
        assert_eq!(table.lock().unwrap().get("n1").unwrap().load, 5.0);
        assert!(matches!(handler.receive_item(&enc(&state(3, f64::NAN)), from), Err(StateError::BadFigure(_))));
        let mut negative_class = state(3, 1.0);
        negative_class.pools[0].class_load[2] = -1.0;
        assert!(matches!(handler.receive_item(&enc(&negative_class), from), Err(StateError::BadFigure(_))));
        let mut infinite_pool = state(3, 1.0);
        infinite_pool.pools[0].capacity = f64::INFINITY;
        assert!(matches!(handler.receive_item(&enc(&infinite_pool), from), Err(StateError::BadFigure(_))));
        let mut many = state(3, 1.0);
        many.pools = (0..=MAX_POOLS)
            .map(|i| PoolFigures { pool: format!("p{i}"), capacity: 1.0, load: 1.0, class_load: [0.0; CLASSES] })
            .collect();
        assert!(matches!(handler.receive_item(&enc(&many), from), Err(StateError::TooManyPools { .. })));
        assert!(matches!(handler.receive_item(&[0xff; 3], from), Err(StateError::Decode(_))));
        assert!(matches!(handler.receive_item(&[0; MAX_STATE_BYTES + 1], from), Err(StateError::TooLarge(_))));
        // A truncated record decodes its prefix but not the rest.
        let whole = enc(&state(4, 1.0));
        assert!(matches!(handler.receive_item(&whole[..whole.len() - 3], from), Err(StateError::Decode(_))));
        assert_eq!(table.lock().unwrap().get("n1").unwrap().version, 2, "no refused record was stored");
        // The node's own record, stored already, is still passed on when added locally.
        assert!(accept_state(&table, state(5, 2.0)).unwrap());
        assert!(handler.receive_item(&enc(&state(5, 2.0)), None).unwrap().is_some());
        assert!(handler.receive_item(&enc(&state(5, 2.0)), from).unwrap().is_none());
        let key = StateKey::new("n1", 3);
        assert!(key.invalidates(&StateKey::new("n1", 2)));
        assert!(!key.invalidates(&StateKey::new("n1", 4)));
        assert!(!key.invalidates(&StateKey::new("n2", 2)));
    }

    #[test]
    fn a_full_state_fits_the_bound() {
        // Sixteen pools with short names and long node/region names stay under the bound (longer
        // pool names make the publisher drop trailing pools, see `Mesh::publish_state`).
        let mut s = state(u64::MAX, 1e12);
        s.node = "edge-eu-west-1-node-0042".into();
        s.region = "eu-west-1".into();
        s.pools = (0..MAX_POOLS)
            .map(|i| PoolFigures { pool: format!("p-{i:02}"), capacity: 1e9, load: 1e9, class_load: [1e6; CLASSES] })
            .collect();
        let bytes = enc(&s).len();
        assert!(bytes <= MAX_STATE_BYTES, "{bytes} bytes");
    }
}
