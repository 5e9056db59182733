//! Feeds the audit trail from a dedicated thread, so a slow disk (fsync) never delays a decision
//! round: producers hand entries over a bounded channel and never block; a full channel drops the
//! entry and counts it. [`verify`] is `wedsync-agent audit verify`.

use crate::config::{LoadError, Sources};
use prometheus_client::metrics::counter::Counter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};
use wedsync_audit::{AuditConfig, AuditError, AuditLog};

/// Entries waiting for the writer before new ones are dropped.
const QUEUE: usize = 10_000;
/// How often the writer wakes to honour an interval fsync policy when idle.
const IDLE_TICK: Duration = Duration::from_millis(50);

enum Message {
    Entry { wall_ms: i64, kind: &'static str, payload: serde_json::Value },
    Stop,
}

/// Counters of the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditCounters {
    /// Entries appended.
    pub appended: Counter,
    /// Entries lost: the queue was full or the append failed.
    pub lost: Counter,
    /// Highest sequence number known durable (fsynced).
    pub durable_seq: Arc<AtomicU64>,
}

impl AuditCounters {
    /// Registers the counters in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("wedsync_audit_entries", "Audit entries appended", self.appended.clone());
        registry.register(
            "wedsync_audit_lost_entries",
            "Audit entries lost (queue full or append failed)",
            self.lost.clone(),
        );
        registry.register_collector(Box::new(DurableSeq(self.durable_seq.clone())));
    }
}

const NO_LABELS: [(&str, &str); 0] = [];

/// `wedsync_audit_durable_seq`, read at scrape time.
#[derive(Debug)]
struct DurableSeq(Arc<AtomicU64>);

impl prometheus_client::collector::Collector for DurableSeq {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let seq = self.0.load(Ordering::Relaxed);
        let mut family = encoder.encode_descriptor(
            "wedsync_audit_durable_seq",
            "Highest audit sequence number known fsynced",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        prometheus_client::metrics::gauge::ConstGauge::new(seq as f64).encode(family.encode_family(&NO_LABELS)?)
    }
}

/// A cheap handle that queues audit entries.
#[derive(Debug, Clone)]
pub struct AuditHandle {
    tx: SyncSender<Message>,
    /// The trail's counters.
    pub counters: AuditCounters,
}

impl AuditHandle {
    /// Queues an entry; never blocks. Returns whether it was queued.
    pub fn record(&self, wall_ms: i64, kind: &'static str, payload: serde_json::Value) -> bool {
        match self.tx.try_send(Message::Entry { wall_ms, kind, payload }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.lost.inc();
                false
            }
        }
    }
}

/// The writer thread; stop it with [`AuditWriter::stop`] to flush what was queued.
#[derive(Debug)]
pub struct AuditWriter {
    tx: SyncSender<Message>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditWriter {
    /// Opens the log (recovering a torn tail) and starts the writer.
    pub fn start(config: AuditConfig) -> Result<(AuditWriter, AuditHandle), AuditError> {
        let (log, report) = AuditLog::open(config.clone())?;
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(
                path = %report.path.display(),
                offset = torn.offset,
                removed_bytes = torn.removed_bytes,
                "audit log had a torn last line (crash mid-write); removed it"
            );
        }
        tracing::info!(path = %report.path.display(), last_seq = report.last_seq, "audit log open");
        let (tx, rx) = sync_channel(QUEUE);
        let counters = AuditCounters::default();
        counters.durable_seq.store(log.durable_seq(), Ordering::Relaxed);
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("wedsync-audit".into())
            .spawn(move || write_loop(log, config, rx, thread_counters))
            .map_err(|source| AuditError::Io { path: report.path.clone(), source })?;
        Ok((AuditWriter { tx: tx.clone(), thread: Some(thread) }, AuditHandle { tx, counters }))
    }

    /// Writes what is queued, fsyncs, and stops the thread.
    pub fn stop(mut self) {
        // A blocking send: the writer is draining, so there is room soon.
        let _ = self.tx.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(mut log: AuditLog, config: AuditConfig, rx: Receiver<Message>, counters: AuditCounters) {
    let mut failures = crate::logging::RateLimiter::new(1);
    loop {
        match rx.recv_timeout(IDLE_TICK) {
            Ok(Message::Entry { wall_ms, kind, payload }) => {
                match log.append(u64::try_from(wall_ms).unwrap_or(0), kind, &payload) {
                    Ok(receipt) => {
                        counters.appended.inc();
                        if receipt.durable {
                            counters.durable_seq.store(receipt.seq, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        counters.lost.inc();
                        if let Some(suppressed) = failures.admit(Instant::now()) {
                            tracing::error!(error = %e, suppressed, "audit append failed");
                        }
                        if matches!(e, AuditError::Poisoned { .. }) {
                            // A poisoned log (failed fsync or rotation) is reopened from disk, which
                            // re-verifies its tail and recovers the chain.
                            match AuditLog::open(config.clone()) {
                                Ok((reopened, _)) => log = reopened,
                                Err(e) => tracing::error!(error = %e, "audit log cannot be reopened"),
                            }
                        }
                    }
                }
            }
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Ok(Some(seq)) = log.sync_if_due(Instant::now()) {
            counters.durable_seq.store(seq, Ordering::Relaxed);
        }
    }
    match log.sync() {
        Ok(seq) => {
            counters.durable_seq.store(seq, Ordering::Relaxed);
            tracing::debug!(seq, "audit log flushed");
        }
        Err(e) => tracing::error!(error = %e, "audit log flush at stop failed"),
    }
}

/// Why `audit verify` could not check a log.
#[derive(Debug, thiserror::Error)]
pub enum VerifyCommandError {
    /// No file was given and the configuration that names the default one does not load.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// No file was given and the configuration has no audit trail.
    #[error("the audit trail is disabled (audit.enabled = false)")]
    Disabled,
    /// The log's rotated files could not be listed.
    #[error("{}", path.display())]
    Files {
        /// The current log file.
        path: PathBuf,
        /// Why its files could not be listed.
        source: AuditError,
    },
}

/// `audit verify`: checks the hash chain of `file` (default: the configured log, found through
/// `config` layered as `run --config` would) and its rotated files; prints a summary, or where
/// the chain breaks (a failure, on standard error).
pub fn verify(file: Option<&Path>, config: Option<PathBuf>) -> Result<ExitCode, VerifyCommandError> {
    let file = match file {
        Some(file) => file.to_path_buf(),
        None => {
            let (_, settings) = crate::config::load_settings(&Sources::from_process(config))?;
            crate::config::audit_config(&settings).ok_or(VerifyCommandError::Disabled)?.path
        }
    };
    let files =
        wedsync_audit::chain_files(&file).map_err(|source| VerifyCommandError::Files { path: file.clone(), source })?;
    match wedsync_audit::verify_files(&files) {
        Ok(summary) => {
            println!(
                "{}: ok: {} entries in {} file(s), seq {}..={}, last hash {}{}",
                file.display(),
                summary.entries,
                summary.files,
                summary.first_seq,
                summary.last_seq,
                summary.last_hash,
                summary
                    .anchored_at_seq
                    .map(|s| format!(" (older files pruned; anchored at seq {s})"))
                    .unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: FAILED: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_written_verified_and_flushed_at_stop() {
        let dir = std::env::temp_dir().join(format!("wedsync-audit-writer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = AuditConfig::new(dir.join("audit.jsonl"));
        config.fsync = wedsync_audit::FsyncPolicy::Never;
        let (writer, handle) = AuditWriter::start(config.clone()).unwrap();
        for i in 0..100 {
            assert!(handle.record(1_700_000_000_000 + i, "decision", serde_json::json!({ "i": i })));
        }
        writer.stop();
        assert_eq!(handle.counters.appended.get(), 100);
        assert_eq!(handle.counters.durable_seq.load(Ordering::Relaxed), 100, "stop fsyncs");
        let files = wedsync_audit::chain_files(&config.path).unwrap();
        let summary = wedsync_audit::verify_files(&files).unwrap();
        assert_eq!(summary.entries, 100);
        // After stop nothing more is accepted, and the loss is counted.
        assert!(!handle.record(0, "decision", serde_json::json!({})));
        assert_eq!(handle.counters.lost.get(), 1);
    }
}
