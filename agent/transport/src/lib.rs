//! The QUIC transport of the WedSync Edge gossip mesh.
//!
//! Agents talk to each other over QUIC ([quinn]) with mutual TLS 1.3 ([rustls] on the aws-lc-rs
//! provider; the hybrid post-quantum key exchange `X25519MLKEM768` is preferred). Only a peer whose
//! certificate chains to the fleet CA, and which carries a WedSync identity, can exchange frames with
//! a node.
//!
//! # Certificates
//!
//! [`pki`] makes the fleet CA ([`pki::init_ca`]) and node certificates ([`pki::issue_node_cert`]),
//! ECDSA P-256 throughout. A node certificate carries
//!
//! * the URI SAN `spiffe://wedsync/region/{region}/node/{node}`: the node's [`PeerIdentity`], read
//!   back after every handshake and attached to every frame received, and
//! * the DNS SAN `wedsync-mesh`: the fixed TLS server name every client verifies, so a node's
//!   certificate does not depend on the address it is reached at.
//!
//! A node loads its credentials with [`NodeCredentials::load`] (CA certificate, its certificate, its
//! key; each file is checked and a bad one is reported by name). A single node that talks to nobody
//! can use [`NodeCredentials::throwaway`].
//!
//! # Frames
//!
//! The transport moves opaque frames (the mesh's encoded messages). [`Transport::send`] never waits:
//! it queues the frame for the peer's task, which keeps one connection per peer (dialled on first
//! use, or the one the peer dialled in) and sends a frame that fits the connection's
//! `max_datagram_size` as a QUIC datagram (unreliable, like UDP) and a larger one on its own
//! unidirectional stream (reliable). Received frames arrive on the bounded channel returned by
//! [`Transport::bind`] as [`Inbound`]s, tagged with the sender's address and identity.
//!
//! One quinn endpoint both listens and dials, so a node's connections come from its listen address:
//! [`Inbound::from`] is the address other nodes send to.
//!
//! Nothing here blocks on a slow consumer or a slow peer: every queue is bounded and a frame that
//! does not fit is dropped and counted in [`TransportStats`]. Nothing a peer sends can panic the
//! node.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use wedsync_transport::{NodeCredentials, Transport, TransportConfig};
//!
//! let creds = NodeCredentials::load("pki/ca.pem".as_ref(), "pki/edge-1.pem".as_ref(), "pki/edge-1.key".as_ref())?;
//! let (transport, mut inbound) = Transport::bind(TransportConfig::new("0.0.0.0:7946".parse()?, creds)).await?;
//! transport.send("10.0.0.2:7946".parse()?, b"ping".to_vec());
//! while let Some(frame) = inbound.recv().await {
//!     println!("{} bytes from {} ({})", frame.frame.len(), frame.peer, frame.from);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fault;
pub mod pki;
mod stats;
mod tls;
mod transport;

#[cfg(test)]
mod tests;

pub use fault::FaultInjector;
pub use pki::{CaPaths, NodeCredentials, NodePaths, PeerIdentity, PkiError, identity_of, init_ca, issue_node_cert};
pub use stats::TransportStats;
pub use tls::{ALPN, MESH_SERVER_NAME};
pub use transport::{Inbound, PeerLink, Transport, TransportConfig, TransportError};
