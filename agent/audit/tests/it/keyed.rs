//! The keyed chain: signed checkpoints, the trusted key, removed checkpoints, off-host checkpoints,
//! and a broken chain set aside at open.

use std::fs;
use std::slice::from_ref;

use serde_json::Value;
use wedsync_audit::{
    AuditError, AuditLog, CHECKPOINT_KIND, Checkpoint, Defect, FsyncPolicy, SigningKey, VerifyError, VerifyOptions,
    chain_files, verify_files_with,
};

use crate::common::*;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn trusted(k: &SigningKey, max_unsigned: Option<u64>) -> VerifyOptions {
    VerifyOptions { trusted_key: Some(k.verifying_key()), max_unsigned, expect: None }
}

/// Entries 1..=5, a checkpoint (6), 7..=11, a checkpoint (12); returns the second checkpoint.
fn keyed_log(dir: &TempDir, k: &SigningKey) -> (std::path::PathBuf, Checkpoint) {
    let path = dir.join("audit.jsonl");
    let (mut log, _) = AuditLog::open(config(&path, FsyncPolicy::Never, 0, 0)).unwrap();
    append_range(&mut log, 1, 5);
    let (r, _) = log.checkpoint(T0, k).unwrap();
    assert_eq!(r.seq, 6);
    append_range(&mut log, 7, 11);
    let (r, cp) = log.checkpoint(T0, k).unwrap();
    assert_eq!((r.seq, cp.seq), (12, 11));
    log.sync().unwrap();
    (path, cp)
}

/// Rewrites every line from index `from` on so that the chain links again, as a forger
/// without the key would after editing a line.
fn rechain(lines: &mut [String], from: usize) {
    for i in from..lines.len() {
        if i > 0 {
            let prev_hash = serde_json::from_str::<Value>(&lines[i - 1]).unwrap()["hash"].as_str().unwrap().to_owned();
            let old_prev = serde_json::from_str::<Value>(&lines[i]).unwrap()["prev"].as_str().unwrap().to_owned();
            lines[i] = lines[i].replace(&format!("\"prev\":\"{old_prev}\""), &format!("\"prev\":\"{prev_hash}\""));
        }
        lines[i] = rehash(&lines[i]);
    }
}

#[test]
fn a_keyed_chain_verifies_with_its_key() {
    let dir = TempDir::new("keyed_ok");
    let k = key(1);
    let (path, _) = keyed_log(&dir, &k);
    let summary = verify_files_with(&chain_files(&path).unwrap(), &trusted(&k, Some(5))).unwrap();
    assert_eq!((summary.entries, summary.checkpoints, summary.signed_through), (12, 2, Some(11)));
    assert_eq!(summary.unsigned_tail, 0);
    assert_eq!(summary.checkpoint_key.as_deref(), Some(hex::encode(k.verifying_key().as_bytes()).as_str()));
}

#[test]
fn a_rewritten_chain_fails_at_the_first_checkpoint_it_crosses() {
    let dir = TempDir::new("keyed_rewrite");
    let k = key(1);
    let (path, _) = keyed_log(&dir, &k);
    let mut lines = read_lines(&path);
    lines[2] = lines[2].replace("entry-3", "entry-X");
    rechain(&mut lines, 2);
    write_lines(&path, &lines);
    // The hash chain alone holds: the forger recomputed every hash.
    assert!(wedsync_audit::verify_files(from_ref(&path)).is_err(), "the old checkpoint no longer matches");
    match verify_files_with(from_ref(&path), &trusted(&k, Some(5))) {
        Err(VerifyError::Broken { line: 6, reason: Defect::BadCheckpoint { .. }, .. }) => {}
        other => panic!("expected a bad checkpoint at line 6, got {other:?}"),
    }
}

#[test]
fn a_chain_re_signed_with_another_key_fails_with_the_trusted_key() {
    let dir = TempDir::new("keyed_other");
    let (path, _) = keyed_log(&dir, &key(2));
    // Self-consistent without a trusted key ...
    assert!(verify_files_with(from_ref(&path), &VerifyOptions::default()).is_ok());
    // ... but not the operator's.
    match verify_files_with(from_ref(&path), &trusted(&key(1), Some(5))) {
        Err(VerifyError::Broken { line: 6, reason: Defect::BadCheckpoint { detail }, .. }) => {
            assert!(detail.contains("not the trusted key"), "{detail}")
        }
        other => panic!("expected an untrusted checkpoint, got {other:?}"),
    }
}

#[test]
fn a_chain_whose_checkpoints_were_removed_fails_on_its_unsigned_run() {
    let dir = TempDir::new("keyed_removed");
    let path = make_log(&dir, 8);
    match verify_files_with(from_ref(&path), &trusted(&key(1), Some(5))) {
        Err(VerifyError::Broken { line: 6, reason: Defect::UnsignedRun { entries: 6, max: 5 }, .. }) => {}
        other => panic!("expected an unsigned run at line 6, got {other:?}"),
    }
}

#[test]
fn an_off_host_checkpoint_shows_a_cut_tail_and_a_rewrite() {
    let dir = TempDir::new("keyed_offhost");
    let k = key(1);
    let (path, shipped) = keyed_log(&dir, &k);
    let options = VerifyOptions { expect: Some(shipped.clone()), ..trusted(&k, Some(5)) };
    assert!(verify_files_with(from_ref(&path), &options).is_ok());

    let lines = read_lines(&path);
    write_lines(&path, &lines[..8]);
    // Without the shipped checkpoint the shorter chain looks whole.
    assert!(verify_files_with(from_ref(&path), &trusted(&k, Some(5))).is_ok());
    match verify_files_with(from_ref(&path), &options) {
        Err(VerifyError::Truncated { last_seq: 8, signed_seq: 11 }) => {}
        other => panic!("expected truncation, got {other:?}"),
    }

    // Rewritten past the last checkpoint in the file, with the tail replaced: the shipped hash differs.
    let mut lines = lines;
    lines[10] = lines[10].replace("entry-11", "entry-Y");
    rechain(&mut lines, 10);
    write_lines(&path, &lines[..11]);
    match verify_files_with(from_ref(&path), &options) {
        Err(VerifyError::Broken { line: 11, reason: Defect::CheckpointMismatch { .. }, .. }) => {}
        other => panic!("expected a mismatch with the shipped checkpoint, got {other:?}"),
    }
}

#[test]
fn callers_cannot_write_a_checkpoint_entry() {
    let dir = TempDir::new("keyed_reserved");
    let path = dir.join("audit.jsonl");
    let (mut log, _) = AuditLog::open(config(&path, FsyncPolicy::Never, 0, 0)).unwrap();
    match log.append(T0, CHECKPOINT_KIND, &serde_json::json!({})) {
        Err(AuditError::ReservedKind { .. }) => {}
        other => panic!("expected ReservedKind, got {other:?}"),
    }
    assert_eq!(log.last_seq(), 0);
}

#[test]
fn open_verified_sets_a_broken_chain_aside_unchanged_and_starts_anew() {
    let dir = TempDir::new("keyed_aside");
    let path = make_log(&dir, 5);
    let mut lines = read_lines(&path);
    lines[1] = lines[1].replace("entry-2", "entry-Z");
    write_lines(&path, &lines);
    let damaged = fs::read(&path).unwrap();

    let (mut log, report) =
        AuditLog::open_verified(config(&path, FsyncPolicy::Never, 0, 0), &VerifyOptions::default()).unwrap();
    let broken = report.broken.expect("the break is reported");
    assert!(broken.error.contains("line 2"), "{}", broken.error);
    assert_eq!(broken.moved_to, dir.join("audit.jsonl.broken-1"));
    assert_eq!(fs::read(broken.moved_to.join("audit.jsonl")).unwrap(), damaged, "moved byte for byte");
    assert_eq!(log.last_seq(), 0, "a new chain");
    assert_eq!(log.append(T0, "audit.segment", &serde_json::json!({"error": broken.error})).unwrap().seq, 1);
    drop(log);
    assert_eq!(wedsync_audit::verify_files(&chain_files(&path).unwrap()).unwrap().entries, 1);
}

#[test]
fn open_verified_repairs_only_a_torn_tail() {
    let dir = TempDir::new("keyed_torn");
    let path = make_log(&dir, 3);
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":4,").unwrap();
    let (log, report) =
        AuditLog::open_verified(config(&path, FsyncPolicy::Never, 0, 0), &VerifyOptions::default()).unwrap();
    assert!(report.broken.is_none());
    assert_eq!(report.torn_tail.unwrap().removed_bytes, 9);
    assert_eq!(log.last_seq(), 3);
}
