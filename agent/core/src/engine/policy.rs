//! Policies between the engine's proposals and its clamps.
//!
//! A round first proposes a target, a placement, a purchase split and admission levels for every
//! pool (steps 1–5, prediction and admission of the module docs); a [`RoundPolicy`] then sees
//! all proposals at once and returns, in order, what each policy changes; the engine applies
//! those changes and only then protects and clamps (steps 6–7). A policy can therefore never push
//! a pool outside its bounds, below its protected floor, or shed wedding-critical traffic.
//!
//! The daemon's policies are the WASM plugins (`wedsync-plugin-host`); tests use plain Rust.

use super::pool::Wedding;
use super::{Demand, FailoverLoad, PoolIndex};
use crate::TrafficClass;
use crate::time::Timestamp;
use serde::Serialize;

/// The engine's proposal for one pool in a round, before policies and clamps.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolProposal {
    /// Which pool.
    pub pool: PoolIndex,
    /// Units asked for before the round.
    pub from: u32,
    /// Units the engine proposes.
    pub to: u32,
    /// Units serving now.
    pub serving: u32,
    /// Load estimate (requests/s), failover load included.
    pub load: f64,
    /// Latest demand per class (requests/s, in "average requests").
    pub demand: Demand,
    /// A wedding is active in the pool's region.
    pub protected: bool,
    /// A spike is being followed.
    pub spike: bool,
    /// Metrics are stale: the engine holds.
    pub stale: bool,
    /// Region the capacity would be placed in.
    pub placement: String,
    /// Admission per class (indexed like [`TrafficClass::ALL`]; 1.0 for classes not served).
    pub admission: [f64; 5],
    /// Units of `to` on spot.
    pub spot_units: u32,
    /// A failed region's load this pool takes, when it does.
    pub failover: Option<FailoverLoad>,
}

/// One round as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRound<'a> {
    /// Round number.
    pub epoch: u64,
    /// Engine time.
    pub now: Timestamp,
    /// Wall-clock time, Unix ms.
    pub wall_ms: i64,
    /// A proposal per pool, in configuration order.
    pub pools: &'a [PoolProposal],
    /// Weddings active now in the pools' regions.
    pub weddings: &'a [Wedding],
}

/// What a veto stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VetoKind {
    /// A scale-down this round.
    ScaleDown,
    /// A scale-up this round (ignored while the pool is protected).
    ScaleUp,
    /// Placing capacity outside the pool's home region.
    Placement,
}

/// One change a policy asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyAction {
    /// At least `units`.
    RaiseTarget {
        /// Pool.
        pool: PoolIndex,
        /// Units.
        units: u32,
    },
    /// At most `units` (the floor and minimum still hold).
    LowerTarget {
        /// Pool.
        pool: PoolIndex,
        /// Units.
        units: u32,
    },
    /// A pre-scale floor for this round.
    PrescaleFloor {
        /// Pool.
        pool: PoolIndex,
        /// Units.
        units: u32,
    },
    /// Admit at most `share` of a class (never applied to wedding-critical).
    Admit {
        /// Pool.
        pool: PoolIndex,
        /// Class.
        class: TrafficClass,
        /// Share in [0, 1].
        share: f64,
    },
    /// At most `units` on spot.
    SpotCap {
        /// Pool.
        pool: PoolIndex,
        /// Units.
        units: u32,
    },
    /// Stops a scale-down, scale-up or placement of a pool.
    Veto {
        /// Pool.
        pool: PoolIndex,
        /// What it stops.
        kind: VetoKind,
        /// Why.
        reason: String,
    },
    /// Stops a failover: its load does not move here.
    VetoFailover {
        /// The failover proposal's id.
        id: String,
        /// Why.
        reason: String,
    },
}

impl PolicyAction {
    /// The pool it concerns (`None` for a failover veto, which concerns every pool taking it).
    pub fn pool(&self) -> Option<PoolIndex> {
        match self {
            PolicyAction::RaiseTarget { pool, .. }
            | PolicyAction::LowerTarget { pool, .. }
            | PolicyAction::PrescaleFloor { pool, .. }
            | PolicyAction::Admit { pool, .. }
            | PolicyAction::SpotCap { pool, .. }
            | PolicyAction::Veto { pool, .. } => Some(*pool),
            PolicyAction::VetoFailover { .. } => None,
        }
    }
}

/// What one policy returned for a round.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyVerdict {
    /// The policy's name.
    pub policy: String,
    /// Its version tag (for a plugin, the SHA-256 of its component, hex).
    pub version: String,
    /// Its changes, applied in order.
    pub actions: Vec<PolicyAction>,
}

/// Sees every round's proposals and says what to change. Called once per round, synchronously:
/// an implementation must return within the round's budget (the plugin host enforces one).
pub trait RoundPolicy {
    /// The verdicts, in the order they apply.
    fn review(&mut self, round: &PolicyRound<'_>) -> Vec<PolicyVerdict>;
}

/// No policies: the engine's proposals stand.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPolicy;

impl RoundPolicy for NoPolicy {
    fn review(&mut self, _round: &PolicyRound<'_>) -> Vec<PolicyVerdict> {
        Vec::new()
    }
}
