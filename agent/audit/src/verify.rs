//! Full verification of a chain of audit files.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, VerifyingKey};
use crate::entry::{self, GENESIS_HEX, ParsedLine};
use crate::error::{Defect, VerifyError};
use crate::files::{check_hash, check_link, is_pruned_rotation};

/// Result of a successful [`verify_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Number of files verified.
    pub files: usize,
    /// Number of entries verified.
    pub entries: u64,
    /// `seq` of the first entry (0 if there are no entries).
    pub first_seq: u64,
    /// `seq` of the last entry (0 if there are no entries).
    pub last_seq: u64,
    /// Hash of the last entry (64 zeros if there are no entries). Compare it (and `last_seq`) with a value
    /// recorded elsewhere, e.g. the latest [`Receipt`](crate::Receipt), to detect truncation of the tail.
    pub last_hash: String,
    /// `Some(seq)` if the chain does not start at genesis because older rotated files were pruned
    /// (`keep_files`): the first entry's `prev` was trusted as the anchor and verification starts at `seq`.
    /// `None` if the chain starts at genesis (seq 1, prev = 64 zeros).
    pub anchored_at_seq: Option<u64>,
    /// Checkpoint entries found (each verified).
    pub checkpoints: u64,
    /// The newest entry a checkpoint signed, if any.
    pub signed_through: Option<u64>,
    /// Entries after the newest checkpoint (all of them if there is none): what a key does not yet
    /// protect.
    pub unsigned_tail: u64,
    /// The public key of the newest checkpoint (hex), if any.
    pub checkpoint_key: Option<String>,
}

/// What [`verify_files_with`] checks beyond the hash chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Checkpoints must be signed by this key. Without it they are checked only for
    /// self-consistency, which a forger with a key of their own can also produce.
    pub trusted_key: Option<VerifyingKey>,
    /// With a trusted key: the most entries in a row without a checkpoint (the writer's
    /// `checkpoint_every`). More means checkpoints were removed. The tail after the newest
    /// checkpoint counts too: the writer signs before it leaves more.
    pub max_unsigned: Option<u64>,
    /// A checkpoint kept elsewhere (shipped off the host): the chain must hold its entry with the
    /// hash it signed, so a cut-off tail or a rewrite before it is found.
    pub expect: Option<Checkpoint>,
}

/// What the next entry must look like.
struct Expect<'a> {
    /// `None` until the first entry of an anchored chain is seen.
    next: Option<(Option<u64>, [u8; 32])>,
    options: &'a VerifyOptions,
}

/// Verifies a chain of audit files given in chain order (oldest rotated file first, current file last), as
/// returned by [`chain_files`](crate::chain_files).
///
/// Every line of every file must be a well-formed entry whose hash verifies, whose `seq` is one more than the
/// previous entry's (across file boundaries too) and whose `prev` is the previous entry's hash. The first
/// entry must be genesis (seq 1, prev = 64 zeros) unless the first file is named like a rotated file with
/// index greater than 1 (`<name>.<N>`, N ≥ 2) -- what remains after `keep_files` pruned older files -- in which
/// case its first entry is trusted as the anchor and reported in [`VerifySummary::anchored_at_seq`].
///
/// The first failure is returned with its file, 1-based line number, seq (if parsable) and [`Defect`].
pub fn verify_files(files: &[PathBuf]) -> Result<VerifySummary, VerifyError> {
    verify_files_with(files, &VerifyOptions::default())
}

/// [`verify_files`], and the checkpoints: each must sign the entry before it (and, with
/// [`VerifyOptions::trusted_key`], be that key's), runs of unsigned entries must stay within
/// [`VerifyOptions::max_unsigned`], and the chain must hold [`VerifyOptions::expect`]'s entry.
pub fn verify_files_with(files: &[PathBuf], options: &VerifyOptions) -> Result<VerifySummary, VerifyError> {
    let Some(first) = files.first() else { return Err(VerifyError::NoFiles) };
    if let Some(expected) = &options.expect {
        expected.verify(options.trusted_key.as_ref()).map_err(VerifyError::ExpectedCheckpoint)?;
    }
    let mut expect =
        Expect { next: if is_pruned_rotation(first) { None } else { Some((Some(1), [0u8; 32])) }, options };
    let mut summary = VerifySummary {
        files: files.len(),
        entries: 0,
        first_seq: 0,
        last_seq: 0,
        last_hash: GENESIS_HEX.to_owned(),
        anchored_at_seq: None,
        checkpoints: 0,
        signed_through: None,
        unsigned_tail: 0,
        checkpoint_key: None,
    };
    for file in files {
        verify_file(file, &mut expect, &mut summary)?;
    }
    if let Some(expected) = &options.expect
        && summary.last_seq < expected.seq
    {
        return Err(VerifyError::Truncated { last_seq: summary.last_seq, signed_seq: expected.seq });
    }
    Ok(summary)
}

/// The checks of one entry beyond its hash and link: checkpoints, unsigned runs, the expected
/// off-host checkpoint.
fn check_keyed(parsed: &ParsedLine, options: &VerifyOptions, summary: &mut VerifySummary) -> Result<(), Defect> {
    if let Some(expected) = &options.expect
        && parsed.seq == expected.seq
        && parsed.hash_hex != expected.hash
    {
        return Err(Defect::CheckpointMismatch { signed: expected.hash.clone(), found: parsed.hash_hex.clone() });
    }
    match &parsed.checkpoint {
        Some(cp) => {
            if parsed.seq.checked_sub(1) != Some(cp.seq) {
                return Err(Defect::BadCheckpoint {
                    detail: format!("it signs seq {} but follows seq {}", cp.seq, parsed.seq.saturating_sub(1)),
                });
            }
            if cp.hash != parsed.prev_hex {
                return Err(Defect::BadCheckpoint {
                    detail: format!(
                        "it signed seq {} with hash {}, but that entry's hash is now {} (rewritten)",
                        cp.seq, cp.hash, parsed.prev_hex
                    ),
                });
            }
            cp.verify(options.trusted_key.as_ref()).map_err(|e| Defect::BadCheckpoint { detail: e.to_string() })?;
            summary.checkpoints += 1;
            summary.signed_through = Some(cp.seq);
            summary.unsigned_tail = 0;
            summary.checkpoint_key = Some(cp.key.clone());
        }
        None => {
            summary.unsigned_tail += 1;
            if options.trusted_key.is_some()
                && let Some(max) = options.max_unsigned
                && summary.unsigned_tail > max
            {
                return Err(Defect::UnsignedRun { entries: summary.unsigned_tail, max });
            }
        }
    }
    Ok(())
}

fn verify_file(path: &Path, expect: &mut Expect<'_>, summary: &mut VerifySummary) -> Result<(), VerifyError> {
    let io_err = |source| VerifyError::Io { path: path.to_path_buf(), source };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut buf = Vec::with_capacity(512);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
            return Ok(());
        }
        line_no += 1;
        let broken = |seq: Option<u64>, reason: Defect| VerifyError::Broken {
            file: path.to_path_buf(),
            line: line_no,
            seq,
            reason,
        };
        if buf.last() != Some(&b'\n') {
            let seq = entry::parse_line(&buf).ok().map(|p| p.seq);
            return Err(broken(seq, Defect::TornFinalLine));
        }
        buf.pop();
        let parsed = entry::parse_line(&buf).map_err(|detail| broken(None, Defect::Unparsable { detail }))?;
        let seq = Some(parsed.seq);
        check_hash(&parsed).map_err(|d| broken(seq, d))?;
        match expect.next {
            Some((expected_seq, prev)) => check_link(&parsed, expected_seq, &prev).map_err(|d| broken(seq, d))?,
            None => {
                let genesis = parsed.seq == 1 && parsed.prev == [0u8; 32];
                summary.anchored_at_seq = (!genesis).then_some(parsed.seq);
            }
        }
        check_keyed(&parsed, expect.options, summary).map_err(|d| broken(seq, d))?;
        if summary.entries == 0 {
            summary.first_seq = parsed.seq;
        }
        summary.entries += 1;
        summary.last_seq = parsed.seq;
        expect.next = Some((parsed.seq.checked_add(1), parsed.hash));
        summary.last_hash = parsed.hash_hex;
    }
}
