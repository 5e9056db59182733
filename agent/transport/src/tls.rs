//! TLS 1.3 and QUIC configuration: mutual authentication against the fleet CA.
//!
//! Every configuration is built with an explicit aws-lc-rs [`CryptoProvider`]: the process may link
//! other rustls users with another provider (ureq uses ring), so the process-wide default is never
//! consulted.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;

use crate::pki::NodeCredentials;
use crate::transport::TransportError;

/// The TLS server name every node certificate carries (DNS SAN) and every client verifies.
pub const MESH_SERVER_NAME: &str = "wedsync-mesh";

/// The ALPN protocol of the mesh.
pub const ALPN: &[u8] = b"wedsync-mesh/1";

/// The crypto provider of every configuration: aws-lc-rs, whose default key exchange groups put
/// the hybrid post-quantum `X25519MLKEM768` first (the `prefer-post-quantum` feature).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(credentials: &NodeCredentials) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    roots.add(credentials.ca_cert().clone())?;
    Ok(Arc::new(roots))
}

/// The server side: TLS 1.3 only, client certificates required and verified against the fleet CA.
pub(crate) fn server_config(
    credentials: &NodeCredentials,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(credentials)?, provider.clone()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(credentials.cert_chain(), credentials.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

/// The client side: TLS 1.3 only, the server verified against the fleet CA with the name
/// [`MESH_SERVER_NAME`], our certificate presented.
pub(crate) fn client_config(
    credentials: &NodeCredentials,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TransportError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(credentials)?)
        .with_client_auth_cert(credentials.cert_chain(), credentials.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use rustls::NamedGroup;

    use super::*;

    #[test]
    fn post_quantum_key_exchange_is_preferred() {
        let provider = provider();
        assert_eq!(provider.kx_groups.first().map(|g| g.name()), Some(NamedGroup::X25519MLKEM768));
    }

    #[test]
    fn configs_build_from_throwaway_credentials() {
        let creds = NodeCredentials::throwaway("n", "r").unwrap();
        let transport = Arc::new(quinn::TransportConfig::default());
        server_config(&creds, transport.clone()).unwrap();
        client_config(&creds, transport).unwrap();
    }
}
