//! `wedsync-agent sim`'s engine room: a whole fleet on one machine under a scenario, scored
//! against a baseline autoscaler written to Kubernetes HPA's documented defaults.
//!
//! - [`scenario`]: the scenario file format and the built-in scenarios.
//! - [`load`]: the load model (each region's clients over time, and where a dead region's go).
//! - [`mesh`]: the mesh a run gossips over: virtual time here, or the daemon's real QUIC mesh.
//! - [`fleet`]: the run: one decision engine per node with its round policy (the daemon's
//!   plugins), gossiping over the mesh, answered by the capacity model; the HPA beside it.
//! - [`report`]: `report.md`, `report.json` and the plots.
#![forbid(unsafe_code)]

pub mod fleet;
pub mod load;
pub mod mesh;
pub mod report;
pub mod scenario;

pub use fleet::{FleetError, FleetResult, MeshFactory, MeshPlan, RunOptions, mesh_plan, run, run_on};
pub use mesh::{FleetMesh, VirtualMesh};
pub use scenario::{Scenario, ScenarioError};
