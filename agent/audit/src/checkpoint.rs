//! Signed checkpoints: what makes the chain keyed.
//!
//! A hash chain alone shows edits only to someone who knows the right last hash: whoever can
//! write the files can rewrite every entry and recompute every hash. So the writer appends, every
//! so many entries and seconds, a checkpoint entry (kind [`CHECKPOINT_KIND`]) whose payload is an
//! ed25519 signature over the `seq` and `hash` of the entry just before it, made with a key kept
//! outside the state directory. A rewritten chain then fails [`verify_files_with`] at the first
//! checkpoint it crosses, unless the forger holds the key; a chain whose checkpoints were removed
//! fails on [`VerifyOptions::max_unsigned`]. Shipped off the host, the newest checkpoint also
//! shows truncation ([`VerifyOptions::expect`]).
//!
//! The signed message is `b"wedsync-audit-checkpoint-v1\0" || seq (8 bytes, big-endian) ||
//! hash (32 bytes)`.
//!
//! Key files are one line of text, like the plugin keys: `wedsync-audit-key-v1 <64 hex: the
//! ed25519 seed>` and `wedsync-audit-pub-v1 <64 hex: the public key>` (a public key may also be
//! bare hex).
//!
//! [`verify_files_with`]: crate::verify_files_with
//! [`VerifyOptions::max_unsigned`]: crate::VerifyOptions::max_unsigned
//! [`VerifyOptions::expect`]: crate::VerifyOptions::expect

use ed25519_dalek::Signer as _;
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The `kind` of a checkpoint entry. [`AuditLog::append`](crate::AuditLog::append) refuses it:
/// only [`AuditLog::checkpoint`](crate::AuditLog::checkpoint) writes one.
pub const CHECKPOINT_KIND: &str = "audit.checkpoint";
/// Tag of a secret key file.
pub const SECRET_KEY_TAG: &str = "wedsync-audit-key-v1";
/// Tag of a public key file.
pub const PUBLIC_KEY_TAG: &str = "wedsync-audit-pub-v1";

const DOMAIN: &[u8] = b"wedsync-audit-checkpoint-v1\0";

/// A signature over one entry of the chain: its `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The `seq` of the entry signed.
    pub seq: u64,
    /// That entry's hash, 64 lowercase hex digits.
    pub hash: String,
    /// The public key that signed, 64 lowercase hex digits.
    pub key: String,
    /// The ed25519 signature, 128 lowercase hex digits.
    pub sig: String,
}

/// Why a checkpoint does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// A field is not the hex it must be.
    #[error("checkpoint field `{field}` is not {len} lowercase hex digits")]
    Format {
        /// The field.
        field: &'static str,
        /// The number of hex digits it must have.
        len: usize,
    },
    /// Signed with a key other than the trusted one.
    #[error("checkpoint signed by key {found}, not the trusted key {trusted}")]
    UntrustedKey {
        /// The trusted public key.
        trusted: String,
        /// The key the checkpoint names.
        found: String,
    },
    /// The signature does not verify.
    #[error("checkpoint signature does not verify (forged, or the entry it covers was changed)")]
    BadSignature,
}

fn message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 8 + 32);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

fn hex_field<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], CheckpointError> {
    let bytes = text.as_bytes();
    let err = CheckpointError::Format { field, len: N * 2 };
    if bytes.len() != N * 2 || !bytes.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return Err(err);
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(bytes, &mut out).map_err(|_| err)?;
    Ok(out)
}

impl Checkpoint {
    /// Signs the entry `seq` whose hash is `hash`.
    pub fn sign(key: &SigningKey, seq: u64, hash: &[u8; 32]) -> Checkpoint {
        let sig = key.sign(&message(seq, hash));
        Checkpoint {
            seq,
            hash: hex::encode(hash),
            key: hex::encode(key.verifying_key().as_bytes()),
            sig: hex::encode(sig.to_bytes()),
        }
    }

    /// Checks the signature; with `trusted`, also that it is that key's. Without it, a
    /// checkpoint is only self-consistent (anyone can make one with a key of their own).
    pub fn verify(&self, trusted: Option<&VerifyingKey>) -> Result<(), CheckpointError> {
        let hash = hex_field::<32>(&self.hash, "hash")?;
        let key_bytes = hex_field::<32>(&self.key, "key")?;
        let sig = ed25519_dalek::Signature::from_bytes(&hex_field::<64>(&self.sig, "sig")?);
        if let Some(trusted) = trusted
            && trusted.as_bytes() != &key_bytes
        {
            return Err(CheckpointError::UntrustedKey {
                trusted: hex::encode(trusted.as_bytes()),
                found: self.key.clone(),
            });
        }
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| CheckpointError::BadSignature)?;
        key.verify_strict(&message(self.seq, &hash), &sig).map_err(|_| CheckpointError::BadSignature)
    }
}

/// A fresh signing key from the operating system's random source.
pub fn generate_key() -> Result<SigningKey, std::io::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// The secret key file's text. Keep it private (mode 0600) and outside the state directory.
pub fn encode_secret_key(key: &SigningKey) -> String {
    format!("{SECRET_KEY_TAG} {}\n", hex::encode(key.to_bytes()))
}

/// The public key file's text.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_TAG} {}\n", hex::encode(key.as_bytes()))
}

/// Parses a secret key file's text.
pub fn decode_secret_key(text: &str) -> Result<SigningKey, String> {
    tagged_hex(text, SECRET_KEY_TAG, false).map(|seed| SigningKey::from_bytes(&seed))
}

/// Parses a public key: the file's text, or bare hex.
pub fn decode_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = tagged_hex(text, PUBLIC_KEY_TAG, true)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
}

fn tagged_hex(text: &str, tag: &str, bare_ok: bool) -> Result<[u8; 32], String> {
    let text = text.trim();
    let hex_part = match text.split_once(char::is_whitespace) {
        Some((t, rest)) if t == tag => rest.trim(),
        Some((t, _)) => return Err(format!("expected the tag `{tag}`, found `{}`", t.escape_default())),
        None if bare_ok => text,
        None => return Err(format!("expected `{tag} <64 hex digits>`")),
    };
    if hex_part.len() != 64 {
        return Err(format!("expected 64 hex digits, found {}", hex_part.len()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|e| format!("not hex: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_for_its_entry_and_key() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let cp = Checkpoint::sign(&key, 42, &[9u8; 32]);
        assert_eq!(cp.verify(Some(&key.verifying_key())), Ok(()));
        assert_eq!(cp.verify(None), Ok(()));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(matches!(cp.verify(Some(&other.verifying_key())), Err(CheckpointError::UntrustedKey { .. })));
        let moved = Checkpoint { seq: 43, ..cp.clone() };
        assert_eq!(moved.verify(None), Err(CheckpointError::BadSignature));
        let rehashed = Checkpoint { hash: hex::encode([1u8; 32]), ..cp.clone() };
        assert_eq!(rehashed.verify(None), Err(CheckpointError::BadSignature));
        let upper = Checkpoint { sig: cp.sig.to_uppercase(), ..cp };
        assert!(matches!(upper.verify(None), Err(CheckpointError::Format { field: "sig", .. })));
    }

    #[test]
    fn key_files_round_trip() {
        let key = generate_key().unwrap();
        let back = decode_secret_key(&encode_secret_key(&key)).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        let public = decode_public_key(&encode_public_key(&key.verifying_key())).unwrap();
        assert_eq!(public, key.verifying_key());
        assert_eq!(decode_public_key(&hex::encode(public.as_bytes())).unwrap(), public);
        assert!(decode_secret_key(&hex::encode(key.to_bytes())).is_err(), "a bare seed is not a key file");
        assert!(decode_public_key("wedsync-plugin-pub-v1 00").unwrap_err().contains("tag"));
    }
}
