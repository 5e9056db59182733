//! Tampered copies of a real single-file log: each is detected at the right line with the right reason.

use std::fs;
use std::path::PathBuf;
use std::slice::from_ref;

use wedsync_audit::{Defect, verify_files};

use crate::common::*;

const N: u64 = 10;

/// A real 10-entry log, plus the path of a copy to tamper with.
fn fixture(test: &str) -> (TempDir, Vec<String>, PathBuf) {
    let dir = TempDir::new(test);
    let original = make_log(&dir, N);
    assert_eq!(verify_files(from_ref(&original)).unwrap().entries, N);
    let lines = read_lines(&original);
    let copy = dir.join("copy.jsonl");
    (dir, lines, copy)
}

fn tampered(test: &str, edit: impl FnOnce(&mut Vec<String>)) -> (TempDir, PathBuf) {
    let (dir, mut lines, copy) = fixture(test);
    edit(&mut lines);
    write_lines(&copy, &lines);
    (dir, copy)
}

#[test]
fn untouched_copy_verifies() {
    let (_dir, copy) = tampered("untouched", |_| {});
    let s = verify_files(&[copy]).unwrap();
    assert_eq!((s.entries, s.first_seq, s.last_seq, s.anchored_at_seq), (N, 1, N, None));
}

#[test]
fn edited_payload_byte() {
    let (_dir, copy) = tampered("edit_payload", |l| l[4] = l[4].replacen("entry-5", "entry-6", 1));
    assert_broken(from_ref(&copy), &copy, 5, Some(5), |d| matches!(d, Defect::HashMismatch { .. }));
}

#[test]
fn changed_ts() {
    let (_dir, copy) = tampered("edit_ts", |l| {
        let ts = format!("\"ts\":{}", T0 + 3000);
        assert!(l[2].contains(&ts));
        l[2] = l[2].replacen(&ts, &format!("\"ts\":{}", T0 + 3001), 1);
    });
    assert_broken(from_ref(&copy), &copy, 3, Some(3), |d| matches!(d, Defect::HashMismatch { .. }));
}

#[test]
fn deleted_middle_line() {
    let (_dir, copy) = tampered("delete_middle", |l| {
        l.remove(4);
    });
    assert_broken(from_ref(&copy), &copy, 5, Some(6), |d| *d == Defect::SeqGap { expected: 5, found: 6 });
}

#[test]
fn inserted_duplicate_line() {
    let (_dir, copy) = tampered("insert_dup", |l| {
        let dup = l[3].clone();
        l.insert(4, dup);
    });
    assert_broken(from_ref(&copy), &copy, 5, Some(4), |d| *d == Defect::SeqRepeat { expected: 5, found: 4 });
}

#[test]
fn swapped_lines() {
    let (_dir, copy) = tampered("swap", |l| l.swap(5, 6));
    assert_broken(from_ref(&copy), &copy, 6, Some(7), |d| *d == Defect::SeqGap { expected: 6, found: 7 });
}

#[test]
fn deleted_first_line() {
    let (_dir, copy) = tampered("delete_first", |l| {
        l.remove(0);
    });
    assert_broken(from_ref(&copy), &copy, 1, Some(2), |d| *d == Defect::SeqGap { expected: 1, found: 2 });
}

#[test]
fn recomputed_hash_forgery_caught_by_next_prev() {
    let (dir, lines, _) = fixture("forge_middle");
    let mut forged = lines.clone();
    forged[4] = rehash(&lines[4].replacen("entry-5", "entry-F", 1));
    assert_ne!(forged[4], lines[4]);
    let copy = dir.join("forged.jsonl");
    write_lines(&copy, &forged);
    assert_broken(from_ref(&copy), &copy, 6, Some(6), |d| matches!(d, Defect::PrevMismatch { .. }));
}

#[test]
fn forged_genesis_prev() {
    let (_dir, copy) = tampered("forge_genesis", |l| {
        l[0] = rehash(&l[0].replacen(wedsync_audit::GENESIS_PREV, &"11".repeat(32), 1));
    });
    assert_broken(from_ref(&copy), &copy, 1, Some(1), |d| matches!(d, Defect::PrevMismatch { .. }));
}

#[test]
fn garbage_middle_line() {
    let (_dir, copy) = tampered("garbage", |l| l[2] = "this is not an audit entry".to_owned());
    assert_broken(from_ref(&copy), &copy, 3, None, |d| matches!(d, Defect::Unparsable { .. }));
}

#[test]
fn blank_line_inserted() {
    let (_dir, copy) = tampered("blank", |l| l.insert(3, String::new()));
    assert_broken(from_ref(&copy), &copy, 4, None, |d| matches!(d, Defect::Unparsable { .. }));
}

#[test]
fn extra_field_or_reformatting_detected() {
    // Semantically equivalent JSON is still a change: the hash covers the raw bytes.
    let (_dir, copy) = tampered("reformat", |l| l[1] = l[1].replacen("{\"seq\":2,", "{\"seq\": 2,", 1));
    assert_broken(from_ref(&copy), &copy, 2, Some(2), |d| matches!(d, Defect::HashMismatch { .. }));
    let (_dir, copy) = tampered("uppercase_hash", |l| {
        let (head, hash) = l[1].split_at(l[1].len() - 66);
        let upper = head.to_owned() + &hash.to_uppercase();
        l[1] = upper;
    });
    let err = verify_files(&[copy]).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn crlf_line_endings_detected() {
    let (dir, lines, copy) = fixture("crlf");
    let s: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    fs::write(&copy, s).unwrap();
    assert_broken(from_ref(&copy), &copy, 1, None, |d| matches!(d, Defect::Unparsable { .. }));
    drop(dir);
}
