//! Rotation: chain continues across files, tamper detection names the file, keep_files pruning anchors.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use wedsync_audit::{AuditLog, Defect, FsyncPolicy, chain_files, verify_files};

use crate::common::*;

const MAX: u64 = 700;

fn rotated(path: &Path, n: u64) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

fn rotated_log(dir: &TempDir, n: u64, keep: usize) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let (mut log, _) = AuditLog::open(config(&path, FsyncPolicy::Never, MAX, keep)).unwrap();
    append_range(&mut log, 1, n);
    log.sync().unwrap();
    path
}

#[test]
fn rotates_and_verifies_across_files() {
    let dir = TempDir::new("rotate");
    let path = rotated_log(&dir, 30, 0);
    let files = chain_files(&path).unwrap();
    assert!(files.len() >= 4, "expected several files, got {files:?}");
    let k = files.len() as u64 - 1;
    let mut expected: Vec<PathBuf> = (1..=k).map(|n| rotated(&path, n)).collect();
    expected.push(path.clone());
    assert_eq!(files, expected);
    for f in &files {
        let len = fs::metadata(f).unwrap().len();
        assert!(len <= MAX && len > 0, "{} has {len} bytes", f.display());
    }
    // The first entry of each file links to the last entry of the previous one.
    for pair in files.windows(2) {
        let last: Value = serde_json::from_str(read_lines(&pair[0]).last().unwrap()).unwrap();
        let first: Value = serde_json::from_str(&read_lines(&pair[1])[0]).unwrap();
        assert_eq!(first["prev"], last["hash"]);
        assert_eq!(first["seq"].as_u64().unwrap(), last["seq"].as_u64().unwrap() + 1);
    }
    let s = verify_files(&files).unwrap();
    assert_eq!((s.files, s.entries, s.first_seq, s.last_seq, s.anchored_at_seq), (files.len(), 30, 1, 30, None));

    // Reopen and keep going: numbering and chain continue.
    let (mut log, report) = AuditLog::open(config(&path, FsyncPolicy::Never, MAX, 0)).unwrap();
    assert_eq!((report.last_seq, report.rotated_files), (30, files.len() - 1));
    append_range(&mut log, 31, 45);
    drop(log);
    let more = chain_files(&path).unwrap();
    assert!(more.len() > files.len());
    assert_eq!(&more[..files.len() - 1], &files[..files.len() - 1]);
    assert_eq!(verify_files(&more).unwrap().last_seq, 45);
}

#[test]
fn tamper_in_rotated_file_names_that_file() {
    let dir = TempDir::new("rotate_tamper");
    let path = rotated_log(&dir, 30, 0);
    let files = chain_files(&path).unwrap();
    let victim = rotated(&path, 2);
    let mut lines = read_lines(&victim);
    let seq: u64 = serde_json::from_str::<Value>(&lines[1]).unwrap()["seq"].as_u64().unwrap();
    lines[1] = lines[1].replacen("entry-", "entrY-", 1);
    write_lines(&victim, &lines);
    assert_broken(&files, &victim, 2, Some(seq), |d| matches!(d, Defect::HashMismatch { .. }));
}

#[test]
fn missing_or_reordered_rotated_files_detected() {
    let dir = TempDir::new("rotate_missing");
    let path = rotated_log(&dir, 30, 0);
    let files = chain_files(&path).unwrap();
    // Leaving out a middle file: the next file's first entry shows the gap.
    let mut without: Vec<PathBuf> = files.clone();
    without.remove(1);
    let first_of_third: Value = serde_json::from_str(&read_lines(&files[2])[0]).unwrap();
    let found = first_of_third["seq"].as_u64().unwrap();
    assert_broken(&without, &files[2], 1, Some(found), |d| matches!(d, Defect::SeqGap { .. }));
    // Files in the wrong order.
    let mut swapped = files.clone();
    swapped.swap(1, 2);
    assert!(verify_files(&swapped).is_err());
    // Deleting the first line of `.1` is not mistaken for pruning: `.1` must start at genesis.
    let mut lines = read_lines(&files[0]);
    lines.remove(0);
    write_lines(&files[0], &lines);
    assert_broken(&files, &files[0], 1, Some(2), |d| *d == Defect::SeqGap { expected: 1, found: 2 });
}

#[test]
fn keep_files_prunes_oldest_and_verify_anchors() {
    let dir = TempDir::new("rotate_keep");
    let path = rotated_log(&dir, 40, 2);
    let files = chain_files(&path).unwrap();
    assert_eq!(files.len(), 3, "2 rotated + current: {files:?}");
    assert!(!rotated(&path, 1).exists());
    let first: Value = serde_json::from_str(&read_lines(&files[0])[0]).unwrap();
    let first_seq = first["seq"].as_u64().unwrap();
    assert!(first_seq > 1);
    let s = verify_files(&files).unwrap();
    assert_eq!(s.anchored_at_seq, Some(first_seq));
    assert_eq!((s.first_seq, s.last_seq, s.entries), (first_seq, 40, 40 - first_seq + 1));
    // Tampering after the anchor is still detected.
    let mut lines = read_lines(&files[1]);
    assert!(lines.len() >= 2);
    lines.remove(0);
    let found = serde_json::from_str::<Value>(&lines[0]).unwrap()["seq"].as_u64().unwrap();
    write_lines(&files[1], &lines);
    assert_broken(&files, &files[1], 1, Some(found), |d| matches!(d, Defect::SeqGap { .. }));
}

#[test]
fn crash_between_rename_and_first_write_recovers_from_rotated_file() {
    let dir = TempDir::new("rotate_crash");
    let path = rotated_log(&dir, 10, 0);
    let files = chain_files(&path).unwrap();
    let k = files.len() as u64 - 1;
    // Simulate: the current file was renamed away and the new one never got an entry (or never got created).
    fs::rename(&path, rotated(&path, k + 1)).unwrap();
    let (mut log, report) = AuditLog::open(config(&path, FsyncPolicy::Always, MAX, 0)).unwrap();
    assert!(report.created);
    assert_eq!(report.last_seq, 10);
    assert_eq!(log.append(T0, "decision", &payload(11)).unwrap().seq, 11);
    drop(log);
    let s = verify_files(&chain_files(&path).unwrap()).unwrap();
    assert_eq!((s.entries, s.last_seq), (11, 11));
}

#[test]
fn entries_larger_than_max_get_a_file_each() {
    let dir = TempDir::new("rotate_tiny");
    let path = dir.join("audit.jsonl");
    let (mut log, _) = AuditLog::open(config(&path, FsyncPolicy::Never, 10, 0)).unwrap();
    append_range(&mut log, 1, 5);
    // Rotation fsyncs the retired file, so everything before the current entry is durable.
    assert_eq!(log.durable_seq(), 4);
    drop(log);
    let files = chain_files(&path).unwrap();
    assert_eq!(files.len(), 5);
    for f in &files {
        assert_eq!(read_lines(f).len(), 1);
    }
    assert_eq!(verify_files(&files).unwrap().entries, 5);
}
