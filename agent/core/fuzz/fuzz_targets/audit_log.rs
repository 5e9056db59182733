//! Fuzzes the audit verifier with arbitrary log files: it reports a defect or a summary, never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("wedsync-fuzz-audit-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path: PathBuf = dir.join("audit.jsonl");
    if std::fs::write(&path, data).is_ok() {
        let _ = wedsync_audit::verify_files(std::slice::from_ref(&path));
    }
});
