//! Plugin signing: ed25519 detached signatures over a component's SHA-256.
//!
//! A signature covers the 32-byte SHA-256 digest of the component's bytes (not the bytes
//! themselves), so a plugin can be verified from its digest alone.
//!
//! # File formats
//!
//! All three are one line of ASCII text: a tag, one space, lower-case hex, an optional
//! newline. Leading and trailing white space is ignored.
//!
//! | file | contents |
//! |---|---|
//! | secret key | `wedsync-plugin-key-v1 <64 hex digits: the 32-byte ed25519 seed>` |
//! | public key | `wedsync-plugin-pub-v1 <64 hex digits: the 32-byte ed25519 public key>` |
//! | signature  | `wedsync-plugin-sig-v2 <name> <version> <128 hex digits: the 64-byte ed25519 signature>` |
//! | old signature | `wedsync-plugin-sig-v1 <128 hex digits>` |
//!
//! A v2 signature binds the plugin's name and version (as its `describe` returns them): it
//! covers `SHA-256("wedsync-plugin-sig-v2\0" ‖ name ‖ "\0" ‖ version ‖ "\0" ‖ SHA-256(component))`,
//! and the host refuses a component whose `describe` says otherwise, so a signed build cannot
//! be passed off as another plugin or version. A v1 signature (and raw 64 bytes) covers the
//! component's digest alone; it still verifies, with a warning.
//!
//! A public key may also be given as its bare 64 hex digits (e.g. in the agent's config).

use crate::error::SignError;
use ed25519_dalek::Signer as _;
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// Tag of a secret key file.
pub const SECRET_KEY_TAG: &str = "wedsync-plugin-key-v1";
/// Tag of a public key file.
pub const PUBLIC_KEY_TAG: &str = "wedsync-plugin-pub-v1";
/// Tag of an old signature file (the digest alone).
pub const SIGNATURE_TAG: &str = "wedsync-plugin-sig-v1";
/// Tag of a signature file that binds the plugin's name and version.
pub const SIGNATURE_TAG_V2: &str = "wedsync-plugin-sig-v2";

/// The name and version a v2 signature binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIdentity {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// A decoded signature file: the signature, and what it binds when it is v2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// The ed25519 signature.
    pub signature: Signature,
    /// The name and version it binds (v2); `None` for v1, which binds the digest alone.
    pub identity: Option<SignedIdentity>,
}

/// What a v2 signature signs: the statement's SHA-256.
fn statement(identity: &SignedIdentity, digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SIGNATURE_TAG_V2.as_bytes());
    h.update([0]);
    h.update(identity.name.as_bytes());
    h.update([0]);
    h.update(identity.version.as_bytes());
    h.update([0]);
    h.update(digest);
    h.finalize().into()
}

/// Signs a component as the plugin `identity` names (a v2 signature).
pub fn sign_bound(key: &SigningKey, identity: &SignedIdentity, component: &[u8]) -> Signature {
    key.sign(&statement(identity, &sha256(component)))
}

/// A v2 signature file's text.
pub fn encode_bound_signature(identity: &SignedIdentity, signature: &Signature) -> String {
    format!("{SIGNATURE_TAG_V2} {} {} {}\n", identity.name, identity.version, hex::encode(signature.to_bytes()))
}

/// Parses a signature file of either version (or raw 64 bytes: v1).
pub fn decode_signature_file(bytes: &[u8]) -> Result<SignatureFile, SignError> {
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Some(rest) = text.trim().strip_prefix(SIGNATURE_TAG_V2)
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let [name, version, sig] = fields[..] else {
            return Err(SignError::BadSignatureFormat(format!(
                "expected `{SIGNATURE_TAG_V2} <name> <version> <128 hex digits>`"
            )));
        };
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(SignError::BadSignatureFormat(format!(
                "plugin name {:?} is not [a-z0-9-]{{1,64}}",
                name.escape_default().to_string()
            )));
        }
        if version.len() > 64 || !version.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SignError::BadSignatureFormat("version is not 1 to 64 printable ASCII characters".into()));
        }
        let raw = tagged_hex::<64>(&format!("{SIGNATURE_TAG} {sig}"), SIGNATURE_TAG, false)
            .map_err(SignError::BadSignatureFormat)?;
        return Ok(SignatureFile {
            signature: Signature::from_bytes(&raw),
            identity: Some(SignedIdentity { name: name.to_owned(), version: version.to_owned() }),
        });
    }
    decode_signature(bytes).map(|signature| SignatureFile { signature, identity: None })
}

/// Checks a signature file's signature over the component whose SHA-256 is `digest` against
/// each trusted key; returns the index of the first key that verifies it.
pub fn verify_file_digest(
    trusted: &[VerifyingKey],
    digest: &[u8; 32],
    file: &SignatureFile,
) -> Result<usize, SignError> {
    match &file.identity {
        Some(identity) => verify_digest(trusted, &statement(identity, digest), &file.signature),
        None => verify_digest(trusted, digest, &file.signature),
    }
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

/// A fresh signing key from the operating system's random source.
pub fn generate_keypair() -> Result<SigningKey, SignError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SignError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// Signs a component: an ed25519 signature over its SHA-256 digest.
pub fn sign(key: &SigningKey, component: &[u8]) -> Signature {
    key.sign(&sha256(component))
}

/// Checks `signature` over `component` against each trusted key; returns the index of the
/// first key that verifies it.
pub fn verify(trusted: &[VerifyingKey], component: &[u8], signature: &Signature) -> Result<usize, SignError> {
    verify_digest(trusted, &sha256(component), signature)
}

/// Like [`verify`], given the component's SHA-256 digest.
pub fn verify_digest(trusted: &[VerifyingKey], digest: &[u8; 32], signature: &Signature) -> Result<usize, SignError> {
    trusted
        .iter()
        .position(|key| key.verify_strict(digest, signature).is_ok())
        .ok_or(SignError::Mismatch { trusted: trusted.len() })
}

/// A short id for a public key: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&sha256(key.as_bytes())[..8])
}

/// The secret key file's text (see the [module docs](self)). Keep it private (mode 0600).
pub fn encode_secret_key(key: &SigningKey) -> String {
    format!("{SECRET_KEY_TAG} {}\n", hex::encode(key.to_bytes()))
}

/// Parses a secret key file's text.
pub fn decode_secret_key(text: &str) -> Result<SigningKey, SignError> {
    let bytes = tagged_hex::<32>(text, SECRET_KEY_TAG, false).map_err(SignError::BadKey)?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// The public key file's text (see the [module docs](self)).
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_TAG} {}\n", hex::encode(key.as_bytes()))
}

/// Parses a public key: the file's text, or bare hex.
pub fn decode_public_key(text: &str) -> Result<VerifyingKey, SignError> {
    let bytes = tagged_hex::<32>(text, PUBLIC_KEY_TAG, true).map_err(SignError::BadKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| SignError::BadKey(format!("not an ed25519 public key: {e}")))
}

/// The signature file's text (see the [module docs](self)).
pub fn encode_signature(signature: &Signature) -> String {
    format!("{SIGNATURE_TAG} {}\n", hex::encode(signature.to_bytes()))
}

/// Parses a signature file: its text, or the raw 64 signature bytes.
pub fn decode_signature(bytes: &[u8]) -> Result<Signature, SignError> {
    if let Ok(text) = std::str::from_utf8(bytes)
        && text.trim_start().starts_with(SIGNATURE_TAG)
    {
        let raw = tagged_hex::<64>(text, SIGNATURE_TAG, false).map_err(SignError::BadSignatureFormat)?;
        return Ok(Signature::from_bytes(&raw));
    }
    let raw: [u8; 64] = bytes.try_into().map_err(|_| {
        SignError::BadSignatureFormat(format!(
            "expected `{SIGNATURE_TAG} <128 hex digits>` or 64 raw bytes, got {} bytes",
            bytes.len()
        ))
    })?;
    Ok(Signature::from_bytes(&raw))
}

/// Parses `<tag> <hex>` (or bare hex when `bare_ok`) into `N` bytes.
fn tagged_hex<const N: usize>(text: &str, tag: &str, bare_ok: bool) -> Result<[u8; N], String> {
    let text = text.trim();
    let hex_part = match text.split_once(char::is_whitespace) {
        Some((t, rest)) if t == tag => rest.trim(),
        Some((t, _)) => return Err(format!("expected the tag `{tag}`, found `{}`", t.escape_default())),
        None if bare_ok => text,
        None => return Err(format!("expected `{tag} <{} hex digits>`", N * 2)),
    };
    if hex_part.len() != N * 2 {
        return Err(format!("expected {} hex digits, found {}", N * 2, hex_part.len()));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_part, &mut out).map_err(|e| format!("not hex: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn sign_and_verify_round_trip_through_files() {
        let key = generate_keypair().unwrap();
        let other = generate_keypair().unwrap();
        let component = b"\0asm component bytes";
        let sig = sign(&key, component);

        let key2 = decode_secret_key(&encode_secret_key(&key)).unwrap();
        assert_eq!(key2.to_bytes(), key.to_bytes());
        let public = decode_public_key(&encode_public_key(&key.verifying_key())).unwrap();
        let bare = decode_public_key(&hex::encode(key.verifying_key().as_bytes())).unwrap();
        assert_eq!(public, bare);
        let sig2 = decode_signature(encode_signature(&sig).as_bytes()).unwrap();
        assert_eq!(sig2, sig);
        assert_eq!(decode_signature(&sig.to_bytes()).unwrap(), sig);

        assert_eq!(verify(&[other.verifying_key(), public], component, &sig2).unwrap(), 1);
        assert!(matches!(verify(&[other.verifying_key()], component, &sig), Err(SignError::Mismatch { trusted: 1 })));
        assert!(verify(&[public], b"\0asm component bytez", &sig).is_err());
        assert!(verify(&[], component, &sig).is_err());
        assert_eq!(key_id(&public).len(), 16);
    }

    #[test]
    fn malformed_files_are_refused_with_a_reason() {
        assert!(matches!(decode_secret_key("nope"), Err(SignError::BadKey(_))));
        assert!(decode_secret_key("wedsync-plugin-pub-v1 00").is_err());
        assert!(decode_secret_key(&format!("{SECRET_KEY_TAG} {}", "zz".repeat(32))).is_err());
        assert!(decode_public_key("abcd").is_err());
        assert!(matches!(decode_signature(b"short"), Err(SignError::BadSignatureFormat(_))));
        assert!(decode_signature(format!("{SIGNATURE_TAG} 00").as_bytes()).is_err());
    }
}
