//! Fsync policies and durability accounting.

use std::time::{Duration, Instant};

use wedsync_audit::{AuditLog, FsyncPolicy};

use crate::common::*;

#[test]
fn always_gives_durable_receipts() {
    let dir = TempDir::new("fsync_always");
    let path = dir.join("audit.jsonl");
    let (mut log, _) = AuditLog::open(config(&path, FsyncPolicy::Always, 0, 0)).unwrap();
    for i in 1..=3 {
        let r = log.append(T0, "decision", &payload(i)).unwrap();
        assert!(r.durable);
        assert_eq!(log.durable_seq(), i);
    }
    assert_eq!(log.sync_if_due(Instant::now()).unwrap(), None);
    assert_eq!(log.sync().unwrap(), 3);
}

#[test]
fn never_is_durable_only_after_sync() {
    let dir = TempDir::new("fsync_never");
    let path = dir.join("audit.jsonl");
    let (mut log, _) = AuditLog::open(config(&path, FsyncPolicy::Never, 0, 0)).unwrap();
    for i in 1..=3 {
        assert!(!log.append(T0, "decision", &payload(i)).unwrap().durable);
    }
    assert_eq!(log.durable_seq(), 0);
    assert_eq!(log.sync_if_due(Instant::now() + Duration::from_secs(3600)).unwrap(), None);
    assert_eq!(log.durable_seq(), 0);
    assert_eq!(log.sync().unwrap(), 3);
    assert_eq!(log.durable_seq(), 3);
    assert!(!log.append(T0, "decision", &payload(4)).unwrap().durable);
    assert_eq!((log.last_seq(), log.durable_seq()), (4, 3));
    drop(log);
    // Open fsyncs what it recovers.
    let (log, _) = AuditLog::open(config(&path, FsyncPolicy::Never, 0, 0)).unwrap();
    assert_eq!(log.durable_seq(), 4);
}

#[test]
fn interval_syncs_when_due() {
    let dir = TempDir::new("fsync_interval");
    let path = dir.join("audit.jsonl");
    let policy: FsyncPolicy = "100ms".parse().unwrap();
    let (mut log, _) = AuditLog::open(config(&path, policy, 0, 0)).unwrap();
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);

    // Nothing pending: nothing to do.
    assert_eq!(log.sync_if_due(t0).unwrap(), None);
    assert!(!log.append(T0, "decision", &payload(1)).unwrap().durable);
    assert!(!log.append(T0, "decision", &payload(2)).unwrap().durable);
    // First sync with pending entries happens at once.
    assert_eq!(log.sync_if_due(t0).unwrap(), Some(2));
    assert_eq!(log.durable_seq(), 2);

    log.append(T0, "decision", &payload(3)).unwrap();
    assert_eq!(log.sync_if_due(ms(50)).unwrap(), None);
    assert_eq!(log.durable_seq(), 2);
    assert_eq!(log.sync_if_due(ms(99)).unwrap(), None);
    assert_eq!(log.sync_if_due(ms(100)).unwrap(), Some(3));

    log.append(T0, "decision", &payload(4)).unwrap();
    assert_eq!(log.sync_if_due(ms(150)).unwrap(), None);
    // An instant earlier than the last sync (caller clock oddity) is never "due".
    assert_eq!(log.sync_if_due(t0).unwrap(), None);
    assert_eq!(log.sync_if_due(ms(250)).unwrap(), Some(4));
    assert_eq!(log.sync_if_due(ms(10_000)).unwrap(), None, "nothing pending");

    // An explicit sync works regardless of the interval.
    log.append(T0, "decision", &payload(5)).unwrap();
    assert_eq!(log.sync().unwrap(), 5);
    assert_eq!(log.sync_if_due(ms(20_000)).unwrap(), None);
}
