//! Fuzzes the mesh's datagram decoder (SWIM frames and state exchanges from peers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wedsync_core::Timestamp;
use wedsync_mesh::{Mesh, NodeIdentity, Profile};

fuzz_target!(|data: &[u8]| {
    let id = NodeIdentity { id: "n0".into(), region: "r0".into(), addr: "10.0.0.1:7946".parse().unwrap(), incarnation: 0 };
    let mut mesh = Mesh::new(id, Profile::Lan, 8, 1);
    let _ = mesh.handle_datagram(Timestamp::ZERO, data);
    let _ = mesh.handle_timeout(Timestamp::from_millis(60_000));
    while mesh.poll_transmit().is_some() {}
    let _ = mesh.fleet_view();
});
