//! Crash simulation: torn last lines are reported by verify and repaired by open.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::slice::from_ref;

use wedsync_audit::{AuditError, AuditLog, Defect, FsyncPolicy, GENESIS_PREV, chain_files, verify_files};

use crate::common::*;

fn append_raw(path: &std::path::Path, bytes: &[u8]) {
    OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

#[test]
fn torn_last_line_is_reported_then_truncated() {
    let dir = TempDir::new("torn_partial");
    let path = make_log(&dir, 4);
    let good_len = fs::metadata(&path).unwrap().len();
    let partial = br#"{"seq":5,"ts":1700000005000,"kind":"deci"#;
    append_raw(&path, partial);

    assert_broken(from_ref(&path), &path, 5, None, |d| *d == Defect::TornFinalLine);

    let (mut log, report) = AuditLog::open(config(&path, FsyncPolicy::Always, 0, 0)).unwrap();
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!(
        (torn.offset, torn.removed_bytes, torn.reason.clone()),
        (good_len, partial.len() as u64, Defect::TornFinalLine)
    );
    let saved = torn.saved_to.expect("the torn bytes are kept");
    assert_eq!(saved, dir.join(&format!("audit.jsonl.torn-{good_len}")));
    assert_eq!(fs::read(&saved).unwrap(), partial, "the cut bytes are kept byte for byte");
    assert_eq!(report.last_seq, 4);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(log.append(T0, "decision", &payload(5)).unwrap().seq, 5);
    drop(log);
    assert_eq!(verify_files(&chain_files(&path).unwrap()).unwrap().entries, 5);
}

#[test]
fn complete_line_missing_only_its_newline_is_torn() {
    let dir = TempDir::new("torn_no_newline");
    let path = make_log(&dir, 3);
    let lines = read_lines(&path);
    // Rewrite so the last (valid) line lacks its newline, as if the final byte never made it to disk.
    let mut text = lines.join("\n");
    fs::write(&path, &text).unwrap();
    assert_broken(from_ref(&path), &path, 3, Some(3), |d| *d == Defect::TornFinalLine);
    let (log, report) = AuditLog::open(config(&path, FsyncPolicy::Always, 0, 0)).unwrap();
    assert_eq!(report.torn_tail.unwrap().reason, Defect::TornFinalLine);
    assert_eq!(log.last_seq(), 2);
    text.truncate(text.rfind('\n').unwrap() + 1);
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_complete_line_that_does_not_parse_is_refused_never_deleted() {
    let dir = TempDir::new("torn_garbage");
    let path = make_log(&dir, 4);
    append_raw(&path, b"\0\0\0\0\0\0\n");
    let before = fs::read(&path).unwrap();
    assert_broken(from_ref(&path), &path, 5, None, |d| matches!(d, Defect::Unparsable { .. }));
    match AuditLog::open(config(&path, FsyncPolicy::Always, 0, 0)) {
        Err(AuditError::Corrupt { line: 5, reason: Defect::Unparsable { .. }, .. }) => {}
        other => panic!("expected Corrupt at line 5, got {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), before, "a complete line is never cut");
}

#[test]
fn only_one_torn_line_is_repaired() {
    let dir = TempDir::new("torn_twice");
    let path = make_log(&dir, 4);
    append_raw(&path, b"garbage\n{\"seq\":");
    let before = fs::read(&path).unwrap();
    match AuditLog::open(config(&path, FsyncPolicy::Always, 0, 0)) {
        Err(AuditError::Corrupt { line: 5, reason: Defect::Unparsable { .. }, .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), before, "a refused open must not modify the file");
}

#[test]
fn file_holding_only_a_torn_line() {
    let dir = TempDir::new("torn_only");
    let path = dir.join("audit.jsonl");
    fs::write(&path, br#"{"seq":1,"ts":17"#).unwrap();
    let (mut log, report) = AuditLog::open(config(&path, FsyncPolicy::Always, 0, 0)).unwrap();
    assert_eq!(report.torn_tail.unwrap().offset, 0);
    assert_eq!((report.last_seq, report.last_hash.as_str()), (0, GENESIS_PREV));
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    log.append(T0, "decision", &payload(1)).unwrap();
    drop(log);
    assert_eq!(verify_files(&[path]).unwrap().entries, 1);
}

#[test]
fn long_lines_tail_scan() {
    // Lines longer than the tail-scan chunk must still be recovered correctly.
    let dir = TempDir::new("torn_long");
    let path = dir.join("audit.jsonl");
    let (mut log, _) = AuditLog::open(config(&path, FsyncPolicy::Never, 0, 0)).unwrap();
    let big = serde_json::json!({"blob": "x".repeat(40_000)});
    for _ in 0..3 {
        log.append(T0, "big", &big).unwrap();
    }
    let hash = log.last_hash().to_owned();
    drop(log);
    append_raw(&path, &vec![b'y'; 50_000]);
    let (log, report) = AuditLog::open(config(&path, FsyncPolicy::Never, 0, 0)).unwrap();
    assert_eq!(report.torn_tail.unwrap().removed_bytes, 50_000);
    assert_eq!((log.last_seq(), log.last_hash()), (3, hash.as_str()));
}
