//! Shared helpers: temp dirs, log fixtures, line surgery and forging.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wedsync_audit::{AuditConfig, AuditLog, Defect, FsyncPolicy, VerifyError, verify_files};

/// A unique temporary directory under `std::env::temp_dir()`, removed on drop.
pub struct TempDir(PathBuf);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TempDir {
    pub fn new(test: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wedsync-audit-{}-{test}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub const T0: u64 = 1_700_000_000_000;

pub fn config(path: &Path, fsync: FsyncPolicy, max_file_bytes: u64, keep_files: usize) -> AuditConfig {
    AuditConfig { path: path.to_path_buf(), fsync, max_file_bytes, keep_files }
}

pub fn payload(i: u64) -> Value {
    json!({"i": i, "note": format!("entry-{i}"), "nested": {"z": [1, 2.5, null], "a": true}})
}

/// Appends entries `from..=to` (ts = T0 + i*1000, kind "decision").
pub fn append_range(log: &mut AuditLog, from: u64, to: u64) {
    for i in from..=to {
        let r = log.append(T0 + i * 1000, "decision", &payload(i)).unwrap();
        assert_eq!(r.seq, i);
    }
}

/// A single-file log with `n` entries at `dir/audit.jsonl`.
pub fn make_log(dir: &TempDir, n: u64) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let (mut log, _) = AuditLog::open(config(&path, FsyncPolicy::Never, 0, 0)).unwrap();
    append_range(&mut log, 1, n);
    log.sync().unwrap();
    path
}

pub fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    fs::write(path, s).unwrap();
}

/// Recomputes the hash of a (possibly edited) line from its own `prev`, as a forger would.
pub fn rehash(line: &str) -> String {
    let body = &line[..line.len() - 75];
    assert!(line[body.len()..].starts_with(",\"hash\":\""), "unexpected line shape: {line}");
    let v: Value = serde_json::from_str(line).unwrap();
    let prev = hex::decode(v["prev"].as_str().unwrap()).unwrap();
    let mut h = Sha256::new();
    h.update(&prev);
    h.update(body.as_bytes());
    h.update(b"}");
    let hash = hex::encode(h.finalize());
    format!("{body},\"hash\":\"{hash}\"}}")
}

/// Asserts that verifying `files` fails at `file` line `line` with seq `seq` and a reason accepted by `want`.
#[track_caller]
pub fn assert_broken(files: &[PathBuf], file: &Path, line: u64, seq: Option<u64>, want: impl Fn(&Defect) -> bool) {
    match verify_files(files) {
        Err(VerifyError::Broken { file: f, line: l, seq: s, reason }) => {
            assert_eq!((f.as_path(), l, s), (file, line, seq), "wrong location; reason: {reason}");
            assert!(want(&reason), "unexpected reason: {reason}");
        }
        other => panic!("expected a broken chain at {} line {line}, got {other:?}", file.display()),
    }
}
