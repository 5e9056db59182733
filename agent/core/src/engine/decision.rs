//! What the engine decides, and why.

use crate::TrafficClass;
use crate::time::Timestamp;
use serde::Serialize;

/// How a target capacity is split across purchase options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct PurchaseMix {
    /// Units on reserved capacity (the baseline).
    pub reserved: u32,
    /// Units on demand.
    pub on_demand: u32,
    /// Units on spot (never serving wedding-critical traffic).
    pub spot: u32,
}

impl PurchaseMix {
    /// Total units.
    pub fn total(&self) -> u32 {
        self.reserved + self.on_demand + self.spot
    }
}

/// The fraction of each class's demand to admit (1.0 = all).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Admission {
    /// The class.
    pub class: TrafficClass,
    /// Fraction of its demand to admit, in [0, 1].
    pub admit: f64,
}

/// One rule that shaped a decision, with the figures it acted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Reason {
    /// Target tracking: desired = ceil(load / (capacity per unit × target utilization)).
    TargetTracking {
        /// Load estimate used (requests/s).
        load: f64,
        /// Utilization of the current capacity relative to the target (1.0 = on target).
        utilization_vs_target: f64,
        /// Units the load needs.
        desired: u32,
    },
    /// A spike was detected on the 10 Hz series; the fast load estimate was used.
    Spike {
        /// Baseline load before the spike.
        baseline: f64,
        /// Recent load.
        recent: f64,
        /// Noise level (σ) of the baseline.
        sigma: f64,
    },
    /// During a spike the load kept climbing for 30 s: it was projected one provisioning delay
    /// ahead, so the capacity asked for now fits the demand when it arrives.
    Climb {
        /// Growth of the load per minute, at the slowest rate between the window's quarters
        /// (1.5 = 50% a minute).
        growth_per_minute: f64,
        /// The projected load (requests/s).
        projected: f64,
        /// How far ahead, seconds (the provisioning delay).
        ahead_seconds: f64,
    },
    /// The pool's demand was read while input was being lost (datagrams dropped on a socket
    /// carrying it), so the reading is only a lower bound; it was planned for because even that
    /// exceeds what serves now.
    LossyInput {
        /// The demand read (requests/s, weighted): the real demand is at least this.
        lower_bound: f64,
        /// What the pool's serving capacity serves (requests/s).
        servable: f64,
    },
    /// Pre-scaled for the forecast peak (learned weekly profile × current level × seasons) over
    /// the horizon.
    Predictive {
        /// Forecast peak demand (requests/s).
        forecast_peak: f64,
        /// How far ahead it looked, seconds (provisioning delay + horizon).
        horizon_seconds: u64,
        /// Units it asked for (the forecast's uplift taken at the forecast quantile).
        units: u32,
    },
    /// A failed region's load was added: this pool's region was chosen to take it over.
    Failover {
        /// The failover proposal's id (the same on every node that derives it).
        id: String,
        /// The failed region.
        from_region: String,
        /// Load added (requests/s).
        added_load: f64,
    },
    /// A policy (a WASM plugin in the daemon) changed the proposal.
    Policy {
        /// The policy's name.
        policy: String,
        /// Its version tag (for a plugin, the SHA-256 of its component).
        version: String,
        /// What it changed, in a short sentence.
        change: String,
    },
    /// One decision may multiply capacity by at most this much.
    ScaleUpCapped {
        /// The cap factor.
        factor: u32,
        /// What was wanted.
        wanted: u32,
    },
    /// Scale-down held to the highest desired capacity over the stabilization window.
    Stabilized {
        /// Window, seconds.
        window_seconds: u64,
        /// Highest desired capacity in it.
        highest_desired: u32,
    },
    /// Scale-down limited in size or frequency.
    ScaleDownRateLimited {
        /// What was wanted.
        wanted: u32,
    },
    /// Metrics stale for several rounds: holding, never scaling in blind.
    StaleMetrics {
        /// Consecutive rounds without fresh demand.
        rounds: u32,
    },
    /// A wedding is active in the region: no scale-down below the protected floor.
    Protected {
        /// Active weddings in the region.
        active_weddings: u32,
        /// The floor held.
        floor: u32,
    },
    /// Clamped to the pool's minimum.
    ClampedToMin {
        /// The minimum.
        min: u32,
    },
    /// Clamped to the pool's maximum.
    ClampedToMax {
        /// The maximum.
        max: u32,
        /// What was wanted.
        wanted: u32,
    },
    /// Capacity serves all demand again: every class fully admitted.
    FullAdmission {
        /// Total demand (requests/s).
        demand: f64,
        /// What the available capacity serves (requests/s).
        servable: f64,
    },
    /// Demand exceeds what the capacity can serve: classes degraded in the configured order.
    Degraded {
        /// Total demand (requests/s).
        demand: f64,
        /// What the available capacity serves (requests/s).
        servable: f64,
        /// Capacity held back for wedding-critical traffic (requests/s), when protected.
        reserved_for_wedding_critical: f64,
    },
}

/// A decision for one pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Deterministic id: `pool:epoch:target`. The same inputs give the same id, so an actuator
    /// seeing it twice can ignore the repeat.
    pub id: String,
    /// The pool's name.
    pub pool: String,
    /// The pool's home region.
    pub region: String,
    /// Where the capacity is placed: the cheapest allowed region (the home region while it is
    /// protected).
    pub placement: String,
    /// Decision round (monotonic time / round interval).
    pub epoch: u64,
    /// When it was taken (engine time).
    pub at: Timestamp,
    /// Capacity before (units).
    pub from: u32,
    /// Capacity asked for (units).
    pub to: u32,
    /// How `to` splits by purchase option.
    pub mix: PurchaseMix,
    /// Estimated cost per hour of `to` with that mix.
    pub cost_per_hour: f64,
    /// Per-class admission levels.
    pub admission: Vec<Admission>,
    /// Rules that fired, in the order applied.
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// Whether it scales up, down, or only changes admission.
    pub fn direction(&self) -> Direction {
        match self.to.cmp(&self.from) {
            std::cmp::Ordering::Greater => Direction::Up,
            std::cmp::Ordering::Less => Direction::Down,
            std::cmp::Ordering::Equal => Direction::Hold,
        }
    }
}

/// Which way a decision moves capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// More capacity.
    Up,
    /// Less capacity.
    Down,
    /// Same capacity (admission changed).
    Hold,
}
