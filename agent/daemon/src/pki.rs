//! `wedsync-agent ca init` and `cert issue`: the fleet CA and the node certificates the mesh
//! ([`crate::fleet`]) authenticates with (`mesh.ca_cert`, `mesh.cert`, `mesh.key`), made by
//! [`wedsync_transport::pki`]; each says on standard output which file goes where.

use std::path::Path;
use std::process::ExitCode;
use wedsync_transport::pki::{self, PkiError};

/// `ca init`: makes `dir/ca.pem` (for every node) and `dir/ca.key` (for no node).
pub fn ca_init(dir: &Path) -> Result<ExitCode, PkiError> {
    let paths = pki::init_ca(dir)?;
    println!("fleet CA certificate: {}", paths.cert.display());
    println!("fleet CA key:         {} (keep it off the nodes)", paths.key.display());
    Ok(ExitCode::SUCCESS)
}

/// `cert issue`: a certificate and key for one node from the CA in `ca_dir`, written to `out`
/// (default: `ca_dir`).
pub fn cert_issue(node: &str, region: &str, ca_dir: &Path, out: Option<&Path>) -> Result<ExitCode, PkiError> {
    let out = out.unwrap_or(ca_dir);
    let paths = pki::issue_node_cert(ca_dir, node, region, out)?;
    println!("node certificate: {} (mesh.cert)", paths.cert.display());
    println!("node key:         {} (mesh.key)", paths.key.display());
    println!("fleet CA:         {} (mesh.ca_cert)", ca_dir.join("ca.pem").display());
    Ok(ExitCode::SUCCESS)
}
