//! Fuzzes the audit verifier with arbitrary log files, with and without a trusted checkpoint
//! key, an unsigned-run limit and an off-host checkpoint (read from the input's first line): it
//! reports a defect or a summary, never panics; nothing verifies as signed by a key it never saw.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use wedsync_audit::{Checkpoint, SigningKey, VerifyOptions, verify_files, verify_files_with};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("wedsync-fuzz-audit-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path: PathBuf = dir.join("audit.jsonl");
    if std::fs::write(&path, data).is_ok() {
        let files = std::slice::from_ref(&path);
        let _ = verify_files(files);
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let expect = data
            .split(|b| *b == b'\n')
            .next()
            .and_then(|line| serde_json::from_slice::<Checkpoint>(line).ok());
        let options = VerifyOptions { trusted_key: Some(key.verifying_key()), max_unsigned: Some(5), expect };
        if let Ok(summary) = verify_files_with(files, &options) {
            // Fuzzed bytes cannot hold a checkpoint signed by a key they never saw.
            assert_eq!(summary.checkpoints, 0, "{summary:?}");
            assert!(summary.entries <= 5);
        }
    }
});
