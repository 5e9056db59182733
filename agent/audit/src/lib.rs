//! WedSync Edge audit trail: an append-only, hash-chained JSON-lines log and its verifier.
//!
//! Every decision the agent takes (and every calendar change, plugin failure, …) is appended with
//! [`AuditLog::append`]. [`verify_files`] detects any edit, deletion, insertion or reordering of entries and
//! says where (file, line, seq) and why ([`Defect`]).
//!
//! # Format
//!
//! One JSON object per line (`\n`-terminated, UTF-8), fields in exactly this order:
//!
//! ```text
//! {"seq":1,"ts":1700000000000,"kind":"decision","payload":{...},"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! * `seq` starts at 1 and increases by exactly 1 per entry, across rotations.
//! * `ts` is the caller-supplied Unix time in milliseconds (the library reads no clock).
//! * `kind` is a caller-chosen string; `payload` is any JSON value.
//! * `prev` is the previous entry's `hash`; for the first entry (genesis) it is 64 zeros.
//! * `hash` is lowercase hex of `sha256(prev_bytes || canonical)`, where `prev_bytes` are the 32 bytes `prev`
//!   encodes and `canonical` is the serde_json serialization of the entry *without* the `hash` field, i.e.
//!   `{"seq":..,"ts":..,"kind":..,"payload":..,"prev":".."}`.
//!
//! Because `hash` is always the last field, a stored line is literally `canonical` with its closing `}`
//! replaced by `,"hash":"<64 hex>"}`.
//!
//! # Hashing decision: raw line bytes, not re-serialization
//!
//! The writer serializes the entry once and hashes exactly the bytes it writes. The verifier hashes the raw
//! bytes of the stored line up to the `hash` field (plus the closing `}`), i.e. the very same bytes; it parses
//! the line only to check its structure and read `seq`, `prev` and `hash`. It never re-serializes the payload,
//! because re-serialization is not guaranteed to reproduce the written bytes:
//!
//! * object key order depends on serde_json's `preserve_order` feature, which any crate in a build can switch
//!   on through feature unification (today the workspace does not enable it, so maps are sorted `BTreeMap`s);
//! * without the `float_roundtrip` feature serde_json's float parsing is not guaranteed to be exact, so a
//!   parsed-and-reprinted float may differ in its last digit;
//! * equivalent spellings (`1e2` vs `100.0`, `\u0041` vs `A`) would collapse.
//!
//! Hashing raw bytes makes verification independent of serde_json's features and version, and makes the
//! format stricter: *any* byte change in a line is detected -- there are no "semantically equal" edits that
//! slip through. Hex digits must be lowercase and the `hash` field must be last, so every single-byte flip
//! either breaks the JSON/format checks or changes a hashed byte or the stored hash.
//!
//! # Guarantees
//!
//! * **Tamper evidence.** Editing an entry breaks its hash ([`Defect::HashMismatch`]); editing it *and*
//!   recomputing its hash breaks the next entry's `prev` ([`Defect::PrevMismatch`]); deleting, inserting,
//!   duplicating or reordering entries breaks `seq` continuity ([`Defect::SeqGap`], [`Defect::SeqRepeat`]) and
//!   `prev` links. Deleting the first entries is caught because a chain must start at genesis (but see
//!   anchoring below).
//! * **Keyed.** A hash chain alone is rewritten by whoever can write its files. [`AuditLog::checkpoint`]
//!   appends an ed25519 signature over the last entry ([`Checkpoint`]), made with a key kept off the state
//!   directory; [`verify_files_with`] given the trusted public key fails a rewritten chain at the first
//!   checkpoint it crosses, and one whose checkpoints were dropped on [`VerifyOptions::max_unsigned`].
//! * **Not detected by the file alone:** truncating the *tail* of the chain (the last entries, or the newest
//!   files) leaves a shorter but valid chain. Ship checkpoints off the host and verify against the newest
//!   ([`VerifyOptions::expect`]) to detect that.
//! * **Crash safety.** Each line is written with a single `write_all` of a fully built line on an unbuffered,
//!   append-mode file; a crash can only leave a torn last line (no newline), which [`AuditLog::open`] keeps in a
//!   side file, truncates away and reports in [`OpenReport::torn_tail`]. A complete line that does not parse is
//!   never removed. With [`FsyncPolicy::Always`] every [`Receipt`] is durable; with
//!   [`FsyncPolicy::Interval`] / [`FsyncPolicy::Never`] a crash of the machine loses at most the entries above
//!   [`AuditLog::durable_seq`], i.e. those not yet acknowledged as durable.
//! * **Never extends a broken chain.** [`AuditLog::open`] verifies the last complete entry (its hash and its
//!   link to the entry before it) and fails with [`AuditError::Corrupt`] instead of appending to a damaged
//!   file. (It checks the tail only; [`AuditLog::open_verified`] checks the whole chain first and sets a broken
//!   one aside, unchanged, before starting a new one.)
//!
//! # Rotation
//!
//! When an append would push the current file past [`AuditConfig::max_file_bytes`], the file is fsynced and
//! renamed to `<path>.<N>` (N = 1, 2, …; smaller is older) and a new current file is started. Its first entry
//! is an ordinary entry whose `prev` is the last hash of the previous file, so the chain simply continues;
//! [`chain_files`] lists the files in chain order for [`verify_files`].
//!
//! With [`AuditConfig::keep_files`] > 0 the oldest rotated files beyond that count are deleted. The chain
//! then starts in the first kept file, `<path>.<N>` with N ≥ 2; [`verify_files`] accepts a non-genesis start
//! only for a first file named like that, trusts its first entry's `prev` as the anchor and reports it in
//! [`VerifySummary::anchored_at_seq`]. Entries removed from the *front* of such an anchored chain cannot be
//! told apart from pruning; check `anchored_at_seq` against what you expect.
//!
//! # Concurrency
//!
//! One [`AuditLog`] per path and process. The file is not locked; a second writer would corrupt the chain
//! (which [`verify_files`] would then report).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod checkpoint;
mod entry;
mod error;
mod files;
mod log;
mod policy;
mod verify;

pub use checkpoint::{
    CHECKPOINT_KIND, Checkpoint, CheckpointError, PUBLIC_KEY_TAG, SECRET_KEY_TAG, SigningKey, VerifyingKey,
    decode_public_key, decode_secret_key, encode_public_key, encode_secret_key, generate_key,
};
pub use error::{AuditError, Defect, VerifyError};
pub use files::chain_files;
pub use log::{AuditConfig, AuditLog, BrokenChain, DEFAULT_MAX_FILE_BYTES, OpenReport, Receipt, TornTail};
pub use policy::{FsyncPolicy, ParseFsyncPolicyError};
pub use verify::{VerifyOptions, VerifySummary, verify_files, verify_files_with};

/// The `prev` of the first entry of a chain: 64 zeros.
pub const GENESIS_PREV: &str = entry::GENESIS_HEX;
