//! The line format: building a line for an append and parsing/hashing a stored line.
//!
//! See the crate documentation for the format and why the hash covers the raw line bytes.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::{CHECKPOINT_KIND, Checkpoint};

/// Hex form of the genesis `prev` (32 zero bytes).
pub(crate) const GENESIS_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The bytes that precede the hash value at the end of every line.
const HASH_MARKER: &[u8] = b",\"hash\":\"";
/// Length of the fixed line suffix `,"hash":"<64 hex>"}` (without the newline).
const SUFFIX_LEN: usize = HASH_MARKER.len() + 64 + 2;

/// The hashed part of an entry. Field order here IS the on-disk field order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    ts: u64,
    kind: &'a str,
    payload: &'a serde_json::Value,
    prev: &'a str,
}

/// Full-line schema used to check that a stored line is well formed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    seq: u64,
    #[allow(dead_code)]
    ts: u64,
    kind: String,
    #[allow(dead_code)]
    payload: IgnoredAny,
    prev: String,
    hash: String,
}

/// A checkpoint entry's payload, read only for lines of that kind.
#[derive(Deserialize)]
struct StoredCheckpoint {
    payload: Checkpoint,
}

/// A serialized entry ready to be written with one `write_all`.
pub(crate) struct BuiltLine {
    /// The complete line including the trailing `\n`.
    pub(crate) bytes: Vec<u8>,
    /// Hex of the entry hash.
    pub(crate) hash_hex: String,
    /// The entry hash.
    pub(crate) hash: [u8; 32],
}

/// A stored line that is well formed (its hash may still be wrong: compare `hash` with `computed`).
#[derive(Debug)]
pub(crate) struct ParsedLine {
    pub(crate) seq: u64,
    pub(crate) prev: [u8; 32],
    pub(crate) prev_hex: String,
    /// The hash stored in the line.
    pub(crate) hash: [u8; 32],
    pub(crate) hash_hex: String,
    /// The hash recomputed from `prev` and the line's bytes.
    pub(crate) computed: [u8; 32],
    /// The signed checkpoint, for an entry of kind [`CHECKPOINT_KIND`].
    pub(crate) checkpoint: Option<Checkpoint>,
}

impl ParsedLine {
    /// Whether the stored hash matches the recomputed one.
    pub(crate) fn hash_ok(&self) -> bool {
        self.hash == self.computed
    }
}

/// Serializes an entry and computes its hash.
pub(crate) fn build_line(
    seq: u64,
    ts: u64,
    kind: &str,
    payload: &serde_json::Value,
    prev_hex: &str,
    prev: &[u8; 32],
) -> Result<BuiltLine, serde_json::Error> {
    let mut bytes = Vec::with_capacity(192 + kind.len());
    serde_json::to_writer(&mut bytes, &Canonical { seq, ts, kind, payload, prev: prev_hex })?;
    // `bytes` is now the canonical form `{"seq":..,"prev":".."}`; the hash covers exactly these bytes.
    let hash = chain_hash(prev, &bytes, b"");
    let hash_hex = hex::encode(hash);
    // Replace the closing `}` with `,"hash":"<hex>"}` + newline.
    bytes.truncate(bytes.len().saturating_sub(1));
    bytes.extend_from_slice(HASH_MARKER);
    bytes.extend_from_slice(hash_hex.as_bytes());
    bytes.extend_from_slice(b"\"}\n");
    Ok(BuiltLine { bytes, hash_hex, hash })
}

/// `sha256(prev || a || b)`.
fn chain_hash(prev: &[u8; 32], a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(a);
    h.update(b);
    h.finalize().into()
}

/// Decodes exactly 64 lowercase hex digits.
fn decode_hex32(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Parses one stored line (without its trailing newline) and recomputes its hash.
///
/// `Err` carries a human-readable reason the line is not a well-formed entry.
pub(crate) fn parse_line(line: &[u8]) -> Result<ParsedLine, String> {
    if line.len() < SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return Err("line does not end with a `\"hash\":\"<64 hex>\"}` field".to_owned());
    }
    let body_len = line.len() - SUFFIX_LEN;
    let (body, suffix) = line.split_at(body_len);
    if !suffix.starts_with(HASH_MARKER) {
        return Err("`hash` is not the last field of the line".to_owned());
    }
    let hash_bytes = &suffix[HASH_MARKER.len()..HASH_MARKER.len() + 64];
    let hash = decode_hex32(hash_bytes).ok_or_else(|| "`hash` is not 64 lowercase hex digits".to_owned())?;
    let stored: Stored = serde_json::from_slice(line).map_err(|e| format!("invalid JSON entry: {e}"))?;
    let prev =
        decode_hex32(stored.prev.as_bytes()).ok_or_else(|| "`prev` is not 64 lowercase hex digits".to_owned())?;
    if stored.hash.as_bytes() != hash_bytes {
        // Only reachable with escape sequences inside the hash string.
        return Err("`hash` is not written in canonical form".to_owned());
    }
    let computed = chain_hash(&prev, body, b"}");
    let checkpoint = if stored.kind == CHECKPOINT_KIND {
        let entry: StoredCheckpoint =
            serde_json::from_slice(line).map_err(|e| format!("invalid checkpoint payload: {e}"))?;
        Some(entry.payload)
    } else {
        None
    };
    Ok(ParsedLine { seq: stored.seq, prev, prev_hex: stored.prev, hash, hash_hex: stored.hash, computed, checkpoint })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn genesis() -> [u8; 32] {
        [0u8; 32]
    }

    #[test]
    fn built_line_has_documented_shape_and_parses_back() {
        let payload = json!({"z": 1, "a": [1.5, "x\ny"], "m": {"k": null}});
        let line = build_line(1, 1_700_000_000_000, "decision", &payload, GENESIS_HEX, &genesis()).unwrap();
        let text = std::str::from_utf8(&line.bytes).unwrap();
        assert!(text.starts_with("{\"seq\":1,\"ts\":1700000000000,\"kind\":\"decision\",\"payload\":{"), "{text}");
        assert!(text.ends_with(&format!(",\"prev\":\"{GENESIS_HEX}\",\"hash\":\"{}\"}}\n", line.hash_hex)));
        assert_eq!(text.matches('\n').count(), 1, "payload newlines must be escaped");

        let parsed = parse_line(&line.bytes[..line.bytes.len() - 1]).unwrap();
        assert!(parsed.hash_ok());
        assert_eq!(parsed.seq, 1);
        assert_eq!(parsed.prev, genesis());
        assert_eq!(parsed.prev_hex, GENESIS_HEX);
        assert_eq!(parsed.hash, line.hash);
        assert_eq!(parsed.hash_hex, line.hash_hex);
    }

    #[test]
    fn hash_is_sha256_of_prev_bytes_and_line_without_hash_field() {
        let payload = json!({"b": 2, "a": 1});
        let prev = [7u8; 32];
        let prev_hex = hex::encode(prev);
        let line = build_line(5, 9, "k", &payload, &prev_hex, &prev).unwrap();
        let canonical = format!("{{\"seq\":5,\"ts\":9,\"kind\":\"k\",\"payload\":{payload},\"prev\":\"{prev_hex}\"}}");
        let mut h = Sha256::new();
        h.update(prev);
        h.update(canonical.as_bytes());
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(line.hash, expected);
        assert_eq!(line.hash_hex, hex::encode(expected));
    }

    #[test]
    fn workspace_serde_json_sorts_object_keys() {
        // Documented property of the workspace's serde_json build (no `preserve_order`). The log does not
        // depend on it -- hashes cover the raw line bytes -- but it makes lines for equal payloads identical.
        let v: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap();
        assert_eq!(v.to_string(), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn rejects_malformed_lines() {
        let line = build_line(1, 2, "k", &json!({}), GENESIS_HEX, &genesis()).unwrap();
        let good = &line.bytes[..line.bytes.len() - 1];
        assert!(parse_line(good).is_ok());

        let upper = String::from_utf8(good.to_vec()).unwrap().replace(&line.hash_hex, &line.hash_hex.to_uppercase());
        if upper.as_bytes() != good {
            assert!(parse_line(upper.as_bytes()).is_err(), "uppercase hex must be rejected");
        }
        assert!(parse_line(b"").is_err());
        assert!(parse_line(b"not json at all, definitely not an entry of the audit log at all at all").is_err());
        let extra = String::from_utf8(good.to_vec()).unwrap().replacen("{\"seq\"", "{\"x\":1,\"seq\"", 1);
        assert!(parse_line(extra.as_bytes()).unwrap_err().contains("invalid JSON"));
        let dup = String::from_utf8(good.to_vec()).unwrap().replacen("{\"seq\":1", "{\"seq\":1,\"seq\":1", 1);
        assert!(parse_line(dup.as_bytes()).is_err());
    }
}
