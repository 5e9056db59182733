//! The fleet mesh measured in the virtual-time simulator (issue 5): crash detection at 10, 100
//! and 1,000 nodes (LAN) and 1,000 (WAN), the loss trade-off curve (detection vs false downs
//! per hour), cold start, node-state dissemination, traffic per node and the simulator's own
//! CPU for 10 virtual minutes of 1,000 nodes. Prints a table; every figure is from the
//! simulator, seeded, so a run is reproducible.
//!
//! `cargo bench -p wedsync-benches --bench mesh_sim` runs the full plan (several minutes of
//! CPU); `MESH_SIM_PLAN=quick` runs a small version, `MESH_SIM_PLAN=content` only the
//! viral-content part at 1,000 nodes.

fn main() -> std::io::Result<()> {
    // `cargo bench` passes `--bench`; under `cargo test --benches` there is nothing quick to
    // check that the mesh's own tests do not.
    if !std::env::args().any(|a| a == "--bench") {
        println!("mesh_sim: run with `cargo bench -p wedsync-benches --bench mesh_sim`");
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match std::env::var("MESH_SIM_PLAN").as_deref() {
        Ok("quick") => wedsync_mesh::measure::run_report(&wedsync_mesh::measure::Plan::quick(), &mut out),
        Ok("content") => wedsync_mesh::measure::content_report(&wedsync_mesh::measure::Plan::full(), &mut out),
        _ => wedsync_mesh::measure::run_report(&wedsync_mesh::measure::Plan::full(), &mut out),
    }
}
