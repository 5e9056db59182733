//! The fleet PKI: the CA, node certificates and the identity they carry.
//!
//! * [`init_ca`] makes the fleet CA (`ca.pem`, `ca.key`; ECDSA P-256, valid 10 years).
//! * [`issue_node_cert`] signs a node certificate with it (`{node}.pem`, `{node}.key`; ECDSA P-256,
//!   valid 1 year, usable as TLS server and client).
//! * [`NodeCredentials`] is what a running node holds: the CA certificate it trusts, its own
//!   certificate and key, and the [`PeerIdentity`] its certificate carries.
//!
//! Keys are written with mode 0600 and no file is ever overwritten: to reissue, move the old files
//! away first.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use serde::Serialize;
use x509_parser::extensions::GeneralName;

use crate::tls::{MESH_SERVER_NAME, provider};

/// The prefix of the URI SAN that carries a node's identity.
const SPIFFE_PREFIX: &str = "spiffe://wedsync/";
/// Longest node or region name.
const MAX_NAME_LEN: usize = 64;
/// How long a CA certificate is valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a node certificate is valid.
const NODE_VALIDITY_DAYS: i64 = 365;
/// Certificates start being valid this long before they are made, for clocks that lag.
const BACKDATE_SECS: i64 = 3600;

/// The file name of the CA certificate in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The file name of the CA key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// The identity a node's certificate carries.
///
/// It is written in the certificate as the URI SAN `spiffe://wedsync/region/{region}/node/{node}`;
/// both names are 1 to 64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PeerIdentity {
    /// The node's name, unique in the fleet.
    pub node: String,
    /// The region the node belongs to.
    pub region: String,
}

impl PeerIdentity {
    /// An identity, after checking both names.
    pub fn new(node: &str, region: &str) -> Result<Self, PkiError> {
        validate_name("node", node)?;
        validate_name("region", region)?;
        Ok(Self { node: node.to_owned(), region: region.to_owned() })
    }

    /// The URI SAN that carries this identity: `spiffe://wedsync/region/{region}/node/{node}`.
    pub fn uri(&self) -> String {
        format!("{SPIFFE_PREFIX}region/{}/node/{}", self.region, self.node)
    }

    /// Parses a URI SAN written by [`PeerIdentity::uri`].
    fn from_uri(uri: &str) -> Result<Self, PkiError> {
        let bad = |why: String| PkiError::NoIdentity(format!("URI SAN {uri:?}: {why}"));
        let rest = uri
            .strip_prefix(SPIFFE_PREFIX)
            .and_then(|rest| rest.strip_prefix("region/"))
            .ok_or_else(|| bad("expected spiffe://wedsync/region/{region}/node/{node}".to_owned()))?;
        let (region, node) = rest
            .split_once("/node/")
            .ok_or_else(|| bad("expected spiffe://wedsync/region/{region}/node/{node}".to_owned()))?;
        Self::new(node, region).map_err(|e| bad(e.to_string()))
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.node)
    }
}

/// What can go wrong making, loading or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A node or region name is not 1 to 64 characters of `[A-Za-z0-9._-]`.
    #[error("invalid {what} name {value:?}: {reason}")]
    InvalidName {
        /// Which name: `node` or `region`.
        what: &'static str,
        /// The name as given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file the operation would write already exists; nothing was written.
    #[error("{}: already exists; refusing to overwrite it (move it away first)", path.display())]
    Exists {
        /// The file that exists.
        path: PathBuf,
    },
    /// Reading or writing a file, or making a directory, failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// A file does not hold what it should: no PEM block, an unreadable certificate or key, a key that
    /// does not match its certificate, a certificate the CA did not sign or that has expired.
    #[error("{}: {reason}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Making a key or a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The system clock is outside the range a certificate can express.
    #[error("system clock out of range for a certificate: {0}")]
    Clock(String),
    /// A certificate does not carry a valid WedSync identity (or is not a certificate at all).
    #[error("certificate carries no valid identity: {0}")]
    NoIdentity(String),
}

/// Where [`init_ca`] wrote the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    /// The CA certificate (PEM), to give to every node.
    pub cert: PathBuf,
    /// The CA private key (PEM, mode 0600), to keep safe.
    pub key: PathBuf,
}

/// Where [`issue_node_cert`] wrote a node's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// The node certificate (PEM).
    pub cert: PathBuf,
    /// The node private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// Makes a fleet CA in `dir` (created if missing): `ca.pem` (certificate) and `ca.key` (private key,
/// mode 0600). Refuses, writing nothing, if either file exists.
pub fn init_ca(dir: &Path) -> Result<CaPaths, PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_owned(), source })?;
    let paths = CaPaths { cert: dir.join(CA_CERT_FILE), key: dir.join(CA_KEY_FILE) };
    refuse_existing(&[&paths.cert, &paths.key])?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = ca_params()?.self_signed(&key)?;
    write_new(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&paths.cert, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %paths.cert.display(), key = %paths.key.display(), "fleet CA created");
    Ok(paths)
}

/// Signs a certificate for `node` in `region` with the CA in `ca_dir` (`ca.pem`, `ca.key`) and writes
/// it to `out_dir` (created if missing) as `{node}.pem` and `{node}.key` (mode 0600). Refuses,
/// writing nothing, if either file exists or a name is invalid.
pub fn issue_node_cert(ca_dir: &Path, node: &str, region: &str, out_dir: &Path) -> Result<NodePaths, PkiError> {
    let identity = PeerIdentity::new(node, region)?;
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_cert_pem = read_string(&ca_cert_path)?;
    let ca_key_pem = String::from_utf8(read_private(&ca_key_path)?)
        .map_err(|_| invalid(&ca_key_path, "not UTF-8 PEM text".into()))?;
    let ca_key =
        KeyPair::from_pem(&ca_key_pem).map_err(|e| invalid(&ca_key_path, format!("not a usable private key: {e}")))?;
    let ca_cert = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| invalid(&ca_cert_path, format!("no certificate: {e}")))?;
    let ca_spki = spki_of(&ca_cert).map_err(|reason| invalid(&ca_cert_path, reason))?;
    if ca_spki != ca_key.subject_public_key_info() {
        return Err(invalid(
            &ca_key_path,
            format!("key does not belong to the certificate in {}", ca_cert_path.display()),
        ));
    }
    let issuer = Issuer::from_ca_cert_der(&ca_cert, ca_key)
        .map_err(|e| invalid(&ca_cert_path, format!("not a usable CA certificate: {e}")))?;

    fs::create_dir_all(out_dir).map_err(|source| PkiError::Io { path: out_dir.to_owned(), source })?;
    let paths = NodePaths { cert: out_dir.join(format!("{node}.pem")), key: out_dir.join(format!("{node}.key")) };
    refuse_existing(&[&paths.cert, &paths.key])?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = node_params(&identity)?.signed_by(&key, &issuer)?;
    write_new(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&paths.cert, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(%identity, cert = %paths.cert.display(), "node certificate issued");
    Ok(paths)
}

/// Reads the identity a certificate (DER) carries in its URI SAN.
///
/// `cert_der` may be anything: bytes that are not a certificate, a certificate without a SAN, or with
/// no or several `spiffe://wedsync/` URIs, or with invalid names, are an error, never a panic. The
/// certificate's signature is not checked here (the TLS handshake does that).
pub fn identity_of(cert_der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::NoIdentity(format!("not a DER X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::NoIdentity(format!("{} bytes after the certificate", rest.len())));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::NoIdentity(format!("bad subject alternative name extension: {e}")))?
        .ok_or_else(|| PkiError::NoIdentity("no subject alternative name".to_owned()))?;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name
            && uri.starts_with(SPIFFE_PREFIX)
        {
            if found.is_some() {
                return Err(PkiError::NoIdentity("more than one spiffe://wedsync/ URI SAN".to_owned()));
            }
            found = Some(PeerIdentity::from_uri(uri)?);
        }
    }
    found.ok_or_else(|| PkiError::NoIdentity("no spiffe://wedsync/ URI SAN".to_owned()))
}

/// What a running node holds: the fleet CA certificate it trusts, its own certificate and private
/// key, and the identity its certificate carries.
pub struct NodeCredentials {
    pub(crate) ca: CertificateDer<'static>,
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) identity: PeerIdentity,
}

impl NodeCredentials {
    /// Loads and checks credentials from PEM files: the CA certificate, the node certificate and
    /// the node's private key. The certificate must carry a valid identity, be signed by the CA, be
    /// valid now and match the key; an error names the file at fault and says why.
    pub fn load(ca_cert: &Path, cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let ca_der = read_cert(ca_cert)?;
        let cert_der = read_cert(cert)?;
        let key_bytes = read_private(key)?;
        let key_der =
            PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| invalid(key, format!("no private key: {e}")))?;
        let identity = identity_of(&cert_der).map_err(|e| invalid(cert, e.to_string()))?;

        let provider = provider();
        CertifiedKey::from_der(vec![cert_der.clone()], key_der.clone_key(), &provider)
            .map_err(|e| invalid(key, format!("not usable with the certificate in {}: {e}", cert.display())))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca_der.clone()).map_err(|e| invalid(ca_cert, format!("not a usable CA certificate: {e}")))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|e| invalid(ca_cert, format!("not a usable CA certificate: {e}")))?;
        verifier
            .verify_client_cert(&cert_der, &[], UnixTime::now())
            .map_err(|e| invalid(cert, format!("not valid under the CA in {}: {e}", ca_cert.display())))?;
        Ok(Self { ca: ca_der, cert: cert_der, key: key_der, identity })
    }

    /// Credentials from a CA made in memory for this call alone: for a single node that talks to
    /// nobody (no other node trusts this CA).
    pub fn throwaway(node: &str, region: &str) -> Result<Self, PkiError> {
        let identity = PeerIdentity::new(node, region)?;
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let ca_params = ca_params()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        Self::issue(ca.der().clone(), &issuer, identity)
    }

    /// Issues credentials for `identity` from an in-memory CA.
    pub(crate) fn issue(
        ca: CertificateDer<'static>,
        issuer: &Issuer<'_, KeyPair>,
        identity: PeerIdentity,
    ) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = node_params(&identity)?.signed_by(&key, issuer)?;
        Ok(Self { ca, cert: cert.der().clone(), key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(), identity })
    }

    /// The identity this node's certificate carries.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The CA certificate peers must chain to.
    pub(crate) fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The node's certificate chain (its leaf alone).
    pub(crate) fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    /// The node's private key.
    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl Clone for NodeCredentials {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
        }
    }
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// Parameters of a fleet CA certificate.
pub(crate) fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "WedSync");
    dn.push(DnType::CommonName, "WedSync fleet CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params.not_before, params.not_after) = validity(CA_VALIDITY_DAYS)?;
    Ok(params)
}

/// Parameters of a node certificate for `identity`.
fn node_params(identity: &PeerIdentity) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "WedSync");
    dn.push(DnType::OrganizationalUnitName, identity.region.as_str());
    dn.push(DnType::CommonName, identity.node.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::URI(Ia5String::try_from(identity.uri())?),
        SanType::DnsName(Ia5String::try_from(MESH_SERVER_NAME)?),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(NODE_VALIDITY_DAYS)?;
    Ok(params)
}

/// `(not_before, not_after)` for a certificate valid `days` from now (backdated an hour).
fn validity(days: i64) -> Result<(time::OffsetDateTime, time::OffsetDateTime), PkiError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| PkiError::Clock(e.to_string()))?;
    let now = i64::try_from(now.as_secs()).map_err(|e| PkiError::Clock(e.to_string()))?;
    let at = |secs: i64| time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| PkiError::Clock(e.to_string()));
    Ok((at(now - BACKDATE_SECS)?, at(now + days * 86_400)?))
}

fn validate_name(what: &'static str, value: &str) -> Result<(), PkiError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_NAME_LEN {
        "longer than 64 characters"
    } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        "only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(PkiError::InvalidName { what, value: value.to_owned(), reason })
}

fn invalid(path: &Path, reason: String) -> PkiError {
    PkiError::InvalidFile { path: path.to_owned(), reason }
}

/// The DER SubjectPublicKeyInfo of a certificate.
fn spki_of(cert: &[u8]) -> Result<Vec<u8>, String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
    Ok(parsed.public_key().raw.to_vec())
}

/// A private key file's bytes, refused when its mode lets the group or others read or write it
/// (ssh does the same): a key anyone on the host can read is not this node's secret.
fn read_private(path: &Path) -> Result<Vec<u8>, PkiError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            fs::metadata(path).map_err(|source| PkiError::Io { path: path.to_owned(), source })?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(invalid(
                path,
                format!("private key has mode {:04o}: the group or others may read it; chmod 600 it", mode & 0o7777),
            ));
        }
    }
    fs::read(path).map_err(|source| PkiError::Io { path: path.to_owned(), source })
}

fn read_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.to_owned(), source })
}

/// The first certificate in a PEM file.
fn read_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let bytes = fs::read(path).map_err(|source| PkiError::Io { path: path.to_owned(), source })?;
    CertificateDer::from_pem_slice(&bytes).map_err(|e| invalid(path, format!("no certificate: {e}")))
}

fn refuse_existing(paths: &[&Path]) -> Result<(), PkiError> {
    for path in paths {
        match fs::symlink_metadata(path) {
            Ok(_) => return Err(PkiError::Exists { path: path.to_path_buf() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(PkiError::Io { path: path.to_path_buf(), source }),
        }
    }
    Ok(())
}

/// Writes a new file with `mode` (on Unix); never replaces an existing one. A partly written file
/// is removed.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => PkiError::Exists { path: path.to_owned() },
        _ => PkiError::Io { path: path.to_owned(), source },
    })?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(PkiError::Io { path: path.to_owned(), source });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TempDir;

    #[test]
    fn ca_and_node_round_trip() {
        let dir = TempDir::new("pki-round-trip");
        let ca = init_ca(&dir.path().join("ca")).unwrap();
        assert!(ca.cert.is_file() && ca.key.is_file());
        let node = issue_node_cert(&dir.path().join("ca"), "edge-1", "eu-west", &dir.path().join("nodes")).unwrap();
        assert_eq!(node.cert, dir.path().join("nodes/edge-1.pem"));
        let creds = NodeCredentials::load(&ca.cert, &node.cert, &node.key).unwrap();
        assert_eq!(creds.identity(), &PeerIdentity { node: "edge-1".into(), region: "eu-west".into() });
        assert_eq!(identity_of(&creds.cert).unwrap().uri(), "spiffe://wedsync/region/eu-west/node/edge-1");
        assert!(format!("{creds:?}").contains("edge-1"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [&ca.key, &node.key] {
                assert_eq!(fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
            }
        }

        // The CA certificate itself carries no node identity.
        assert!(matches!(identity_of(&creds.ca), Err(PkiError::NoIdentity(_))));
    }

    #[test]
    fn overwrite_is_refused() {
        let dir = TempDir::new("pki-overwrite");
        let ca = init_ca(dir.path()).unwrap();
        let before = fs::read(&ca.key).unwrap();
        let err = init_ca(dir.path()).unwrap_err();
        assert!(matches!(&err, PkiError::Exists { path } if path == &ca.cert), "{err}");
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(&ca.key).unwrap(), before);

        issue_node_cert(dir.path(), "n1", "r1", dir.path()).unwrap();
        let err = issue_node_cert(dir.path(), "n1", "r2", dir.path()).unwrap_err();
        assert!(matches!(err, PkiError::Exists { .. }), "{err}");

        // Only the key exists: still refused, and the certificate is not written.
        let lone = TempDir::new("pki-lone-key");
        fs::write(lone.path().join(CA_KEY_FILE), b"x").unwrap();
        assert!(matches!(init_ca(lone.path()), Err(PkiError::Exists { .. })));
        assert!(!lone.path().join(CA_CERT_FILE).exists());
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = TempDir::new("pki-names");
        init_ca(dir.path()).unwrap();
        let long = "x".repeat(65);
        for (node, region) in [("", "r"), ("n", ""), ("a/b", "r"), ("n", "eu west"), (long.as_str(), "r"), ("ünï", "r")]
        {
            let err = issue_node_cert(dir.path(), node, region, dir.path()).unwrap_err();
            assert!(matches!(err, PkiError::InvalidName { .. }), "{node:?}/{region:?}: {err}");
        }
        let max = "x".repeat(64);
        issue_node_cert(dir.path(), &max, "a.b_c-D9", dir.path()).unwrap();
        assert!(NodeCredentials::throwaway("bad name", "r").is_err());
    }

    #[test]
    fn load_names_the_file_at_fault() {
        let dir = TempDir::new("pki-load");
        let ca = init_ca(&dir.path().join("ca")).unwrap();
        let other = init_ca(&dir.path().join("other")).unwrap();
        let a = issue_node_cert(&dir.path().join("ca"), "a", "r", dir.path()).unwrap();
        let b = issue_node_cert(&dir.path().join("ca"), "b", "r", dir.path()).unwrap();

        let missing = dir.path().join("missing.pem");
        let err = NodeCredentials::load(&missing, &a.cert, &a.key).unwrap_err();
        assert!(matches!(&err, PkiError::Io { path, .. } if path == &missing), "{err}");

        let err = NodeCredentials::load(&ca.cert, &a.cert, &b.key).unwrap_err();
        assert!(matches!(&err, PkiError::InvalidFile { path, .. } if path == &b.key), "{err}");

        let err = NodeCredentials::load(&other.cert, &a.cert, &a.key).unwrap_err();
        assert!(matches!(&err, PkiError::InvalidFile { path, .. } if path == &a.cert), "{err}");

        // A key where a certificate belongs.
        let err = NodeCredentials::load(&ca.cert, &a.key, &a.key).unwrap_err();
        assert!(matches!(&err, PkiError::InvalidFile { path, .. } if path == &a.key), "{err}");

        // The CA key does not match a CA certificate.
        let mixed = dir.path().join("mixed");
        fs::create_dir_all(&mixed).unwrap();
        fs::copy(&ca.cert, mixed.join(CA_CERT_FILE)).unwrap();
        fs::copy(&other.key, mixed.join(CA_KEY_FILE)).unwrap();
        let err = issue_node_cert(&mixed, "c", "r", &mixed).unwrap_err();
        assert!(matches!(&err, PkiError::InvalidFile { path, .. } if path == &mixed.join(CA_KEY_FILE)), "{err}");
    }

    #[test]
    fn private_keys_others_can_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("pki-modes");
        let ca = init_ca(&dir.path().join("ca")).unwrap();
        let a = issue_node_cert(&dir.path().join("ca"), "a", "r", dir.path()).unwrap();
        assert!(NodeCredentials::load(&ca.cert, &a.cert, &a.key).is_ok(), "0600 as written");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&a.key, fs::Permissions::from_mode(mode)).unwrap();
            let err = NodeCredentials::load(&ca.cert, &a.cert, &a.key).unwrap_err();
            assert!(matches!(&err, PkiError::InvalidFile { path, .. } if path == &a.key), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&ca.key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = issue_node_cert(&dir.path().join("ca"), "b", "r", dir.path()).unwrap_err();
        assert!(err.to_string().contains("mode 0644"), "{err}");
        // 0400 is fine.
        fs::set_permissions(&a.key, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(NodeCredentials::load(&ca.cert, &a.cert, &a.key).is_ok());
    }

    #[test]
    fn identity_of_untrusted_bytes_never_panics() {
        assert!(identity_of(&[]).is_err());
        assert!(identity_of(b"definitely not a certificate").is_err());
        assert!(identity_of(&[0x30, 0x82, 0xff, 0xff, 0x01]).is_err());
        let creds = NodeCredentials::throwaway("n", "r").unwrap();
        let der = creds.cert.to_vec();
        assert_eq!(identity_of(&der).unwrap(), *creds.identity());
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            assert!(identity_of(&der[..cut]).is_err());
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(identity_of(&trailing).is_err());
        // Every single-byte flip: an error or some identity, never a panic.
        for i in 0..der.len() {
            let mut flipped = der.clone();
            flipped[i] ^= 0xff;
            let _ = identity_of(&flipped);
        }
    }

    #[test]
    fn uri_parsing() {
        let id = PeerIdentity::from_uri("spiffe://wedsync/region/eu-west/node/edge-1").unwrap();
        assert_eq!((id.node.as_str(), id.region.as_str()), ("edge-1", "eu-west"));
        assert_eq!(id.to_string(), "eu-west/edge-1");
        for bad in [
            "spiffe://wedsync/region/eu-west",
            "spiffe://wedsync/region//node/x",
            "spiffe://wedsync/region/a/b/node/x",
            "spiffe://wedsync/region/a/node/x/y",
            "spiffe://wedsync/node/x",
            "spiffe://other/region/a/node/x",
        ] {
            assert!(PeerIdentity::from_uri(bad).is_err(), "{bad}");
        }
    }
}
