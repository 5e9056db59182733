//! Error types.

use std::io;
use std::path::{Path, PathBuf};

/// What is wrong with one line of an audit file, and what it indicates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    /// The entry's stored hash does not match the hash recomputed from its content: the line was edited.
    #[error("hash mismatch: stored {stored}, computed {computed} (entry was edited)")]
    HashMismatch {
        /// Hash written in the line.
        stored: String,
        /// Hash recomputed from the line's content and its `prev`.
        computed: String,
    },
    /// The entry's `prev` is not the hash of the entry before it: an entry was deleted, inserted or reordered
    /// here, or the previous entry was rewritten with a recomputed hash.
    #[error(
        "prev mismatch: entry links to {found} but the previous entry's hash is {expected} \
         (entry deleted, inserted or reordered, or the previous entry was forged)"
    )]
    PrevMismatch {
        /// Hash of the previous entry (or 64 zeros at genesis).
        expected: String,
        /// `prev` written in this entry.
        found: String,
    },
    /// `seq` jumped forward: entries before this one were deleted, or entries were reordered.
    #[error("seq gap: expected {expected}, found {found} (entries deleted or reordered)")]
    SeqGap {
        /// The sequence number that should have come next.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// `seq` repeated or went backwards: an entry was duplicated, inserted or reordered.
    #[error("seq repeat: expected {expected}, found {found} (entry duplicated, inserted or reordered)")]
    SeqRepeat {
        /// The sequence number that should have come next.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// The line is not a well-formed entry.
    #[error("unparsable line: {detail}")]
    Unparsable {
        /// Why the line was rejected.
        detail: String,
    },
    /// The file's last line has no trailing newline: a write was interrupted (crash mid-append).
    #[error("torn final line: no trailing newline (interrupted write)")]
    TornFinalLine,
    /// A checkpoint entry does not hold: it covers another entry than the one before it, is not
    /// signed by the trusted key, or its signature does not verify.
    #[error("bad checkpoint: {detail}")]
    BadCheckpoint {
        /// What does not hold.
        detail: String,
    },
    /// More entries in a row than the writer leaves unsigned: checkpoints were removed (the chain
    /// was rewritten without the key).
    #[error(
        "{entries} entries in a row without a checkpoint, more than the {max} the writer leaves (checkpoints removed)"
    )]
    UnsignedRun {
        /// Entries since the last checkpoint (or the start).
        entries: u64,
        /// The most the writer leaves.
        max: u64,
    },
    /// The entry an off-host checkpoint signed has another hash here: the chain was rewritten.
    #[error("this entry's hash is {found}, but the off-host checkpoint signed {signed} (chain rewritten)")]
    CheckpointMismatch {
        /// The hash the checkpoint signed.
        signed: String,
        /// The hash found.
        found: String,
    },
}

/// Errors from [`AuditLog`](crate::AuditLog) and [`chain_files`](crate::chain_files).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An I/O operation on `path` failed.
    #[error("audit log I/O error on {path}: {source}")]
    Io {
        /// File or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// While opening, the tail of an audit file did not verify; the log refuses to extend a broken chain.
    /// Nothing was modified. Run [`verify_files`](crate::verify_files) for a full diagnosis.
    #[error("audit log {path} is corrupt at line {line}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// 1-based line number in `path` (0 if it could not be determined).
        line: u64,
        /// What is wrong with that line.
        reason: Defect,
    },
    /// The payload could not be serialized to JSON.
    #[error("audit payload could not be serialized: {0}")]
    Encode(#[from] serde_json::Error),
    /// An earlier write, fsync or rotation failed in a way that leaves the on-disk state uncertain, so the
    /// log refuses further operations. Drop it and [`AuditLog::open`](crate::AuditLog::open) again: opening
    /// re-reads the file and repairs a torn tail.
    #[error("audit log {path} is unusable after an earlier I/O failure; reopen it")]
    Poisoned {
        /// The log's current file.
        path: PathBuf,
    },
    /// The sequence number space (`u64`) is exhausted.
    #[error("audit log sequence numbers exhausted")]
    SeqExhausted,
    /// [`CHECKPOINT_KIND`](crate::CHECKPOINT_KIND) is written only by
    /// [`AuditLog::checkpoint`](crate::AuditLog::checkpoint).
    #[error("audit entry kind {kind:?} is reserved for signed checkpoints")]
    ReservedKind {
        /// The refused kind.
        kind: String,
    },
    /// The configured path has no file name (e.g. it is `/` or ends in `..`).
    #[error("audit log path {path} has no file name")]
    InvalidPath {
        /// The rejected path.
        path: PathBuf,
    },
}

impl AuditError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Io { path: path.to_path_buf(), source }
    }
}

/// Why [`verify_files`](crate::verify_files) rejected a chain.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No files were given.
    #[error("no audit files to verify")]
    NoFiles,
    /// A file could not be read.
    #[error("cannot read audit file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The chain ends before the entry an off-host checkpoint signed: its tail was cut off.
    #[error("audit chain truncated: it ends at seq {last_seq}, but an off-host checkpoint signed seq {signed_seq}")]
    Truncated {
        /// The chain's last seq.
        last_seq: u64,
        /// The seq the checkpoint signed.
        signed_seq: u64,
    },
    /// The checkpoint given to check against does not verify itself.
    #[error("the off-host checkpoint does not verify: {0}")]
    ExpectedCheckpoint(#[source] crate::CheckpointError),
    /// The chain is broken: `file` line `line` (1-based) is the first place where it fails.
    #[error("audit chain broken at {file} line {line}{}: {reason}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
    Broken {
        /// File containing the offending line.
        file: PathBuf,
        /// 1-based line number within `file`.
        line: u64,
        /// The `seq` written in the offending line, if it could be parsed.
        seq: Option<u64>,
        /// What is wrong.
        reason: Defect,
    },
}
