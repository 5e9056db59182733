//! Feeds the audit trail from a dedicated thread, so a slow disk (fsync) never delays a decision
//! round while it keeps up. Producers hand entries over a bounded channel; a full channel makes
//! the producer wait (at most [`QUEUE_WAIT`]) and then fails its operation: an entry is never
//! dropped silently. With `audit.signing_key` the writer signs checkpoints and can ship them off
//! the host. [`verify`] is `wedsync-agent audit verify`, [`keygen`] `wedsync-agent audit keygen`.

use crate::config::{CheckpointSettings, LoadError, Sources};
use prometheus_client::metrics::counter::Counter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wedsync_audit::{AuditConfig, AuditError, AuditLog, Checkpoint, SigningKey, VerifyOptions};

/// Entries waiting for the writer before producers wait.
const QUEUE: usize = 10_000;
/// How long a producer waits for room before its operation fails.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// How often the writer wakes to honour an interval fsync policy and checkpoints when idle.
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
    /// Entries accepted but not written: the append failed even after reopening the log.
    pub lost: Counter,
    /// Entries refused to their producer (queue full for [`QUEUE_WAIT`], or the writer stopped);
    /// the operation that produced them failed.
    pub refused: Counter,
    /// Signed checkpoints appended.
    pub checkpoints: Counter,
    /// Checkpoints delivered to `audit.checkpoint_webhook`.
    pub shipped: Counter,
    /// Failed deliveries to `audit.checkpoint_webhook` (each is retried).
    pub ship_failures: Counter,
    /// Broken chains found at start and set aside.
    pub broken_chains: Counter,
    /// Highest sequence number known durable (fsynced).
    pub durable_seq: Arc<AtomicU64>,
}

impl AuditCounters {
    /// Registers the counters in `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register("wedsync_audit_entries", "Audit entries appended", self.appended.clone());
        registry.register(
            "wedsync_audit_lost_entries",
            "Audit entries accepted but not written (the append failed, also after reopening the log)",
            self.lost.clone(),
        );
        registry.register(
            "wedsync_audit_refused_entries",
            "Audit entries refused to their producer (queue full, or stopped): the operation failed instead",
            self.refused.clone(),
        );
        registry.register("wedsync_audit_checkpoints", "Signed audit checkpoints appended", self.checkpoints.clone());
        registry.register(
            "wedsync_audit_checkpoints_shipped",
            "Audit checkpoints delivered to audit.checkpoint_webhook",
            self.shipped.clone(),
        );
        registry.register(
            "wedsync_audit_checkpoint_ship_failures",
            "Failed deliveries of audit checkpoints (retried)",
            self.ship_failures.clone(),
        );
        registry.register(
            "wedsync_audit_broken_chains",
            "Audit chains that failed verification at start and were set aside",
            self.broken_chains.clone(),
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

/// Why an entry was not taken: the operation that produced it must fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditRefused {
    /// The queue stayed full for [`QUEUE_WAIT`]: the writer is behind (a stalled disk).
    #[error("the audit trail is behind (queue full for {}s): the operation was not carried out", QUEUE_WAIT.as_secs())]
    Full,
    /// The writer has stopped.
    #[error("the audit trail is stopped: the operation was not carried out")]
    Stopped,
}

/// A cheap handle that queues audit entries.
#[derive(Debug, Clone)]
pub struct AuditHandle {
    tx: SyncSender<Message>,
    /// The trail's counters.
    pub counters: AuditCounters,
    refusals_logged: Arc<Mutex<crate::logging::RateLimiter>>,
}

impl AuditHandle {
    /// Queues an entry, waiting up to [`QUEUE_WAIT`] for room. `Err`: the entry was not taken
    /// (counted and logged); the caller must not carry out the operation it describes.
    pub fn record(&self, wall_ms: i64, kind: &'static str, payload: serde_json::Value) -> Result<(), AuditRefused> {
        let deadline = Instant::now() + QUEUE_WAIT;
        let mut message = Message::Entry { wall_ms, kind, payload };
        loop {
            match self.tx.try_send(message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(_)) => return Err(self.refuse(kind, AuditRefused::Full)),
                Err(TrySendError::Disconnected(_)) => return Err(self.refuse(kind, AuditRefused::Stopped)),
            }
        }
    }

    /// Queues an entry only if there is room now: for what happens whatever the trail says (an
    /// API call refused anyway). A refusal is counted and logged.
    pub fn try_record(&self, wall_ms: i64, kind: &'static str, payload: serde_json::Value) -> Result<(), AuditRefused> {
        match self.tx.try_send(Message::Entry { wall_ms, kind, payload }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(self.refuse(kind, AuditRefused::Full)),
            Err(TrySendError::Disconnected(_)) => Err(self.refuse(kind, AuditRefused::Stopped)),
        }
    }

    /// [`AuditHandle::record`] from async code: the wait for room, if any, runs off the runtime.
    pub async fn record_async(
        &self,
        wall_ms: i64,
        kind: &'static str,
        payload: serde_json::Value,
    ) -> Result<(), AuditRefused> {
        match self.tx.try_send(Message::Entry { wall_ms, kind, payload }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(self.refuse(kind, AuditRefused::Stopped)),
            Err(TrySendError::Full(Message::Entry { payload, .. })) => {
                let handle = self.clone();
                tokio::task::spawn_blocking(move || handle.record(wall_ms, kind, payload))
                    .await
                    .unwrap_or(Err(AuditRefused::Stopped))
            }
            Err(TrySendError::Full(Message::Stop)) => Err(self.refuse(kind, AuditRefused::Stopped)),
        }
    }

    fn refuse(&self, kind: &'static str, why: AuditRefused) -> AuditRefused {
        self.counters.refused.inc();
        let admitted = crate::clock::lock(&self.refusals_logged).admit(Instant::now());
        if let Some(suppressed) = admitted {
            tracing::error!(kind, suppressed, "audit entry refused: {why}");
        }
        why
    }
}

/// How the writer keys the chain: the signing key, how often it signs, where checkpoints go.
#[derive(Debug, Default)]
pub struct Keying {
    /// The key that signs checkpoints; `None`: the chain is not keyed.
    pub key: Option<SigningKey>,
    /// A checkpoint after at most this many entries.
    pub every: u64,
    /// ... and at most this long after an entry.
    pub interval: Duration,
    /// `(url, secret)` each checkpoint is POSTed to, and this node's id for the body.
    pub ship: Option<(String, String, String)>,
}

/// Why the audit trail's signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("audit.signing_key: cannot read {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others than the agent's user may read it.
    #[error("audit.signing_key: {} has mode {mode:o}: a signing key readable by group or others signs nothing (chmod 600)", path.display())]
    Mode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It lies in the state directory, where whoever rewrites the trail could read it.
    #[error("audit.signing_key: {} is inside {}: keep the key outside the state and audit directories (whoever can rewrite the trail could read it there)", path.display(), dir.display())]
    InsideStateDir {
        /// The key file.
        path: PathBuf,
        /// The directory it must stay out of.
        dir: PathBuf,
    },
    /// It is not a key file.
    #[error("audit.signing_key: {}: {detail}", path.display())]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl Keying {
    /// Reads the signing key `settings` name (mode and place checked) and the shipping target.
    /// `keep_out` are the directories the key must not lie in (the state and audit directories).
    pub fn load(settings: &CheckpointSettings, keep_out: &[&Path], node_id: &str) -> Result<Keying, KeyError> {
        let key = match &settings.signing_key {
            None => None,
            Some(path) => Some(read_signing_key(path, keep_out)?),
        };
        Ok(Keying {
            key,
            every: settings.every,
            interval: settings.interval,
            ship: settings.webhook.clone().map(|(url, secret)| (url, secret, node_id.to_owned())),
        })
    }
}

fn read_signing_key(path: &Path, keep_out: &[&Path]) -> Result<SigningKey, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| KeyError::Read { path: path.to_path_buf(), source };
    let real = std::fs::canonicalize(path).map_err(read)?;
    for dir in keep_out {
        if let Ok(dir) = std::fs::canonicalize(dir)
            && real.starts_with(&dir)
        {
            return Err(KeyError::InsideStateDir { path: path.to_path_buf(), dir });
        }
    }
    let meta = std::fs::metadata(&real).map_err(read)?;
    if !meta.is_file() || meta.len() > 4096 {
        return Err(KeyError::Format {
            path: path.to_path_buf(),
            detail: "not a key file (a regular file of at most 4 KiB)".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode { path: path.to_path_buf(), mode });
    }
    let text = std::fs::read_to_string(&real)
        .map_err(|_| KeyError::Format { path: path.to_path_buf(), detail: "not readable as text".into() })?;
    wedsync_audit::decode_secret_key(&text).map_err(|detail| KeyError::Format { path: path.to_path_buf(), detail })
}

/// The writer thread; stop it with [`AuditWriter::stop`] to flush what was queued.
#[derive(Debug)]
pub struct AuditWriter {
    tx: SyncSender<Message>,
    thread: Option<std::thread::JoinHandle<()>>,
    shipper: Option<Shipper>,
}

impl AuditWriter {
    /// Verifies the whole chain, opens it (a broken chain is set aside unchanged and a new one
    /// started, its first entry saying why), and starts the writer.
    pub fn start(config: AuditConfig, keying: Keying) -> Result<(AuditWriter, AuditHandle), AuditError> {
        let counters = AuditCounters::default();
        let options = VerifyOptions {
            trusted_key: keying.key.as_ref().map(SigningKey::verifying_key),
            max_unsigned: None,
            expect: None,
        };
        let started = Instant::now();
        let (mut log, report) = AuditLog::open_verified(config.clone(), &options)?;
        if let Some(summary) = &report.verified {
            tracing::info!(
                entries = summary.entries,
                files = summary.files,
                checkpoints = summary.checkpoints,
                signed_through = summary.signed_through.unwrap_or(0),
                took_ms = started.elapsed().as_millis() as u64,
                "audit chain verified"
            );
        }
        if let Some(torn) = &report.torn_tail {
            tracing::warn!(
                path = %report.path.display(),
                offset = torn.offset,
                removed_bytes = torn.removed_bytes,
                kept_in = %torn.saved_to.as_deref().unwrap_or(Path::new("")).display(),
                "audit log had a torn last line (crash mid-write); cut from the chain, its bytes kept"
            );
        }
        if let Some(broken) = &report.broken {
            counters.broken_chains.inc();
            tracing::error!(
                error = %broken.error,
                moved_to = %broken.moved_to.display(),
                "the audit chain does not verify: it is set aside unchanged and a new chain starts"
            );
            let files: Vec<String> = broken.files.iter().map(|f| f.display().to_string()).collect();
            let payload = serde_json::json!({
                "reason": broken.error,
                "moved_to": broken.moved_to.display().to_string(),
                "files": files,
            });
            log.append(u64::try_from(crate::clock::wall_ms()).unwrap_or(0), "audit.segment", &payload)?;
            counters.appended.inc();
        }
        if keying.key.is_none() {
            tracing::warn!(
                "the audit trail is not keyed: whoever can write its files can rewrite it (set audit.signing_key)"
            );
        }
        tracing::info!(path = %report.path.display(), last_seq = log.last_seq(), keyed = keying.key.is_some(), "audit log open");
        let (tx, rx) = sync_channel(QUEUE);
        counters.durable_seq.store(log.durable_seq(), Ordering::Relaxed);
        let shipper =
            keying.ship.clone().map(|(url, secret, node)| Shipper::start(url, secret, node, counters.clone()));
        // Entries not yet signed: the verified tail; after a repaired tail or a new segment,
        // sign at once.
        let unsigned = match (&report.verified, &report.broken) {
            (Some(summary), None) => summary.unsigned_tail,
            _ if log.last_seq() > 0 => keying.every,
            _ => 0,
        };
        let mut state = WriterState {
            log,
            config: config.clone(),
            counters: counters.clone(),
            keying,
            unsigned,
            first_unsigned: (unsigned > 0).then(Instant::now),
            ship: shipper.as_ref().map(Shipper::slot),
            failures: crate::logging::RateLimiter::new(1),
        };
        let thread = std::thread::Builder::new()
            .name("wedsync-audit".into())
            .spawn(move || state.run(rx))
            .map_err(|source| AuditError::Io { path: report.path.clone(), source })?;
        let handle = AuditHandle {
            tx: tx.clone(),
            counters,
            refusals_logged: Arc::new(Mutex::new(crate::logging::RateLimiter::new(1))),
        };
        Ok((AuditWriter { tx, thread: Some(thread), shipper }, handle))
    }

    /// Writes what is queued, signs a last checkpoint, fsyncs, and stops the thread (and the
    /// shipper, after one last attempt at the newest checkpoint). Dropping the writer does the
    /// same: an agent abandoned during start keeps what its trail took.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        // A blocking send: the writer is draining, so there is room soon.
        let _ = self.tx.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(shipper) = self.shipper.take() {
            shipper.stop();
        }
    }
}

/// The writer thread's state.
struct WriterState {
    log: AuditLog,
    config: AuditConfig,
    counters: AuditCounters,
    keying: Keying,
    /// Entries since the last checkpoint.
    unsigned: u64,
    first_unsigned: Option<Instant>,
    ship: Option<Arc<ShipSlot>>,
    failures: crate::logging::RateLimiter,
}

impl WriterState {
    fn run(&mut self, rx: Receiver<Message>) {
        loop {
            match rx.recv_timeout(IDLE_TICK) {
                Ok(Message::Entry { wall_ms, kind, payload }) => self.append(wall_ms, kind, &payload),
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let due = self.unsigned >= self.keying.every
                || self.first_unsigned.is_some_and(|t| t.elapsed() >= self.keying.interval);
            if due {
                self.checkpoint();
            }
            if let Ok(Some(seq)) = self.log.sync_if_due(Instant::now()) {
                self.counters.durable_seq.store(seq, Ordering::Relaxed);
            }
        }
        if self.unsigned > 0 {
            self.checkpoint();
        }
        match self.log.sync() {
            Ok(seq) => {
                self.counters.durable_seq.store(seq, Ordering::Relaxed);
                tracing::debug!(seq, "audit log flushed");
            }
            Err(e) => tracing::error!(error = %e, "audit log flush at stop failed"),
        }
    }

    /// Appends one accepted entry; a failed append is retried once on a reopened log, so an
    /// entry is lost only when the disk refuses it twice (counted and logged).
    fn append(&mut self, wall_ms: i64, kind: &'static str, payload: &serde_json::Value) {
        let ts = u64::try_from(wall_ms).unwrap_or(0);
        let mut result = self.log.append(ts, kind, payload);
        if let Err(e) = &result {
            if let Some(suppressed) = self.failures.admit(Instant::now()) {
                tracing::error!(error = %e, kind, suppressed, "audit append failed; reopening the log and trying again");
            }
            match AuditLog::open(self.config.clone()) {
                Ok((reopened, _)) => {
                    self.log = reopened;
                    result = self.log.append(ts, kind, payload);
                }
                Err(e) => tracing::error!(error = %e, "audit log cannot be reopened"),
            }
        }
        match result {
            Ok(receipt) => {
                self.counters.appended.inc();
                if receipt.durable {
                    self.counters.durable_seq.store(receipt.seq, Ordering::Relaxed);
                }
                if self.keying.key.is_some() {
                    self.unsigned += 1;
                    self.first_unsigned.get_or_insert_with(Instant::now);
                }
            }
            Err(e) => {
                self.counters.lost.inc();
                tracing::error!(error = %e, kind, "audit entry lost: the append failed twice");
            }
        }
    }

    fn checkpoint(&mut self) {
        let Some(key) = &self.keying.key else { return };
        let wall = u64::try_from(crate::clock::wall_ms()).unwrap_or(0);
        match self.log.checkpoint(wall, key) {
            Ok((receipt, checkpoint)) => {
                self.counters.checkpoints.inc();
                if receipt.durable {
                    self.counters.durable_seq.store(receipt.seq, Ordering::Relaxed);
                }
                self.unsigned = 0;
                self.first_unsigned = None;
                if let Some(slot) = &self.ship {
                    slot.offer(checkpoint);
                }
            }
            Err(e) => {
                if let Some(suppressed) = self.failures.admit(Instant::now()) {
                    tracing::error!(error = %e, suppressed, "audit checkpoint failed");
                }
            }
        }
    }
}

/// The newest checkpoint not yet delivered (a newer one replaces it: it covers it).
#[derive(Debug, Default)]
struct ShipSlot {
    state: Mutex<(Option<Checkpoint>, bool)>,
    wake: Condvar,
}

impl ShipSlot {
    fn offer(&self, checkpoint: Checkpoint) {
        crate::clock::lock(&self.state).0 = Some(checkpoint);
        self.wake.notify_one();
    }
}

/// Delivers checkpoints to `audit.checkpoint_webhook` from a thread of its own, so a slow
/// receiver never holds up the trail.
#[derive(Debug)]
struct Shipper {
    slot: Arc<ShipSlot>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shipper {
    fn start(url: String, secret: String, node: String, counters: AuditCounters) -> Shipper {
        let slot = Arc::new(ShipSlot::default());
        let thread_slot = slot.clone();
        let thread = std::thread::Builder::new()
            .name("wedsync-audit-ship".into())
            .spawn(move || ship_loop(&thread_slot, &url, &secret, &node, &counters))
            .map_err(|e| tracing::error!(error = %e, "cannot start the audit checkpoint shipper"))
            .ok();
        Shipper { slot, thread }
    }

    fn slot(&self) -> Arc<ShipSlot> {
        self.slot.clone()
    }

    fn stop(mut self) {
        crate::clock::lock(&self.slot.state).1 = true;
        self.slot.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const SHIP_TIMEOUT: Duration = Duration::from_secs(5);
const SHIP_BACKOFF_MAX: Duration = Duration::from_secs(30);

fn ship_loop(slot: &ShipSlot, url: &str, secret: &str, node: &str, counters: &AuditCounters) {
    let agent = crate::actuators::http_agent(SHIP_TIMEOUT);
    let mut backoff = Duration::from_secs(1);
    let mut logs = crate::logging::RateLimiter::new(1);
    loop {
        let (checkpoint, stopping) = {
            let mut state = crate::clock::lock(&slot.state);
            while state.0.is_none() && !state.1 {
                state = slot.wake.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            (state.0.take(), state.1)
        };
        let Some(checkpoint) = checkpoint else { return };
        let body = serde_json::json!({ "node": node, "checkpoint": checkpoint }).to_string();
        match crate::actuators::post_signed(&agent, url, secret, &format!("audit-{}", checkpoint.seq), body.as_bytes())
        {
            Ok(()) => {
                counters.shipped.inc();
                backoff = Duration::from_secs(1);
            }
            Err(reason) => {
                counters.ship_failures.inc();
                if let Some(suppressed) = logs.admit(Instant::now()) {
                    tracing::warn!(url, seq = checkpoint.seq, reason = %reason, suppressed, "audit checkpoint not delivered; retrying");
                }
                if stopping {
                    return;
                }
                // Keep it unless a newer one arrived meanwhile, then wait before trying again.
                let mut state = crate::clock::lock(&slot.state);
                if state.0.is_none() {
                    state.0 = Some(checkpoint);
                }
                let _ = slot.wake.wait_timeout(state, backoff);
                backoff = (backoff * 2).min(SHIP_BACKOFF_MAX);
            }
        }
        if stopping {
            return;
        }
    }
}

/// Why `audit verify` or `audit keygen` could not run.
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
    /// A key or checkpoint file named on the command line cannot be used.
    #[error("{}: {detail}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// `audit verify`'s arguments.
#[derive(Debug, Default)]
pub struct VerifyArgs {
    /// The current log file; default: the configured one.
    pub file: Option<PathBuf>,
    /// The config file, layered as `run --config` would.
    pub config: Option<PathBuf>,
    /// The trusted public key's file.
    pub public_key: Option<PathBuf>,
    /// Most unsigned entries in a row (0: no limit).
    pub max_unsigned: Option<u64>,
    /// A checkpoint shipped off the host.
    pub checkpoint: Option<PathBuf>,
}

fn input_error(path: &Path) -> impl Fn(String) -> VerifyCommandError + '_ {
    move |detail| VerifyCommandError::Input { path: path.to_path_buf(), detail }
}

fn read_small(path: &Path) -> Result<String, VerifyCommandError> {
    let meta = std::fs::metadata(path).map_err(|e| input_error(path)(e.to_string()))?;
    if meta.len() > 64 * 1024 {
        return Err(input_error(path)(format!("{} bytes: too large for a key or checkpoint", meta.len())));
    }
    std::fs::read_to_string(path).map_err(|e| input_error(path)(e.to_string()))
}

/// A shipped checkpoint: the body the agent POSTs (`{"node", "checkpoint"}`) or the checkpoint.
fn parse_checkpoint(text: &str) -> Result<Checkpoint, String> {
    #[derive(serde::Deserialize)]
    struct Shipped {
        checkpoint: Checkpoint,
    }
    serde_json::from_str::<Shipped>(text)
        .map(|s| s.checkpoint)
        .or_else(|_| serde_json::from_str::<Checkpoint>(text))
        .map_err(|e| format!("not a checkpoint: {e}"))
}

/// `audit verify`: checks the hash chain of the log (default: the configured one) and its rotated
/// files, and its checkpoints against the trusted key; prints a summary, or where the chain breaks
/// (a failure, on standard error).
pub fn verify(args: &VerifyArgs) -> Result<ExitCode, VerifyCommandError> {
    let settings = match (&args.file, &args.config, &args.public_key, args.max_unsigned) {
        // Everything given: the configuration is not needed.
        (Some(_), None, Some(_), Some(_)) | (Some(_), None, None, _) => None,
        _ => Some(crate::config::load_settings(&Sources::from_process(args.config.clone()))?.1),
    };
    let file = match &args.file {
        Some(file) => file.clone(),
        None => {
            let settings = settings.as_ref().ok_or(VerifyCommandError::Disabled)?;
            crate::config::audit_config(settings).ok_or(VerifyCommandError::Disabled)?.path
        }
    };
    let trusted_key = match (&args.public_key, &settings) {
        (Some(path), _) => Some(wedsync_audit::decode_public_key(&read_small(path)?).map_err(input_error(path))?),
        (None, Some(settings)) => match &settings.audit_checkpoints.signing_key {
            Some(path) => match read_signing_key(path, &[]) {
                Ok(key) => Some(key.verifying_key()),
                Err(e) => {
                    eprintln!("note: checkpoints checked only for self-consistency: {e} (give --public-key)");
                    None
                }
            },
            None => None,
        },
        (None, None) => None,
    };
    let max_unsigned = match args.max_unsigned {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(settings.as_ref().map_or(crate::config::DEFAULT_CHECKPOINT_EVERY, |s| s.audit_checkpoints.every)),
    };
    let expect = match &args.checkpoint {
        Some(path) => Some(parse_checkpoint(&read_small(path)?).map_err(input_error(path))?),
        None => None,
    };
    let keyed = trusted_key.is_some();
    let options = VerifyOptions { trusted_key, max_unsigned, expect };
    let files =
        wedsync_audit::chain_files(&file).map_err(|source| VerifyCommandError::Files { path: file.clone(), source })?;
    match wedsync_audit::verify_files_with(&files, &options) {
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
            println!(
                "checkpoints: {}{}; {} entries after the last one; key: {}",
                summary.checkpoints,
                summary.signed_through.map(|s| format!(", signed through seq {s}")).unwrap_or_default(),
                summary.unsigned_tail,
                match (keyed, &summary.checkpoint_key) {
                    (true, _) => "trusted (given)".to_owned(),
                    (false, Some(key)) => format!("{key} (not checked against a trusted key)"),
                    (false, None) => "none".to_owned(),
                }
            );
            if let Some(expect) = &options.expect {
                println!("off-host checkpoint: seq {} found with its signed hash", expect.seq);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: FAILED: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit keygen`: writes a new checkpoint signing key to `out` (mode 0600, never over an
/// existing file) and its public half to `out.pub`.
pub fn keygen(out: &Path) -> Result<ExitCode, VerifyCommandError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let key = wedsync_audit::generate_key().map_err(|e| input_error(out)(e.to_string()))?;
    let mut public_name = out.as_os_str().to_owned();
    public_name.push(".pub");
    let public_path = PathBuf::from(public_name);
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|e| input_error(path)(e.to_string()))
    };
    if public_path.exists() {
        return Err(input_error(&public_path)("exists; not overwritten".into()));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| input_error(dir)(e.to_string()))?;
    }
    write(out, &wedsync_audit::encode_secret_key(&key), 0o600)?;
    write(&public_path, &wedsync_audit::encode_public_key(&key.verifying_key()), 0o644)?;
    println!("secret key: {} (set audit.signing_key; keep it outside the state directory)", out.display());
    println!("public key: {} (for audit verify --public-key)", public_path.display());
    Ok(ExitCode::SUCCESS)
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
        let (writer, handle) = AuditWriter::start(config.clone(), Keying::default()).unwrap();
        for i in 0..100 {
            assert!(handle.record(1_700_000_000_000 + i, "decision", serde_json::json!({ "i": i })).is_ok());
        }
        writer.stop();
        assert_eq!(handle.counters.appended.get(), 100);
        assert_eq!(handle.counters.durable_seq.load(Ordering::Relaxed), 100, "stop fsyncs");
        let files = wedsync_audit::chain_files(&config.path).unwrap();
        let summary = wedsync_audit::verify_files(&files).unwrap();
        assert_eq!(summary.entries, 100);
        // After stop nothing more is accepted, and the refusal is counted.
        assert_eq!(handle.record(0, "decision", serde_json::json!({})), Err(AuditRefused::Stopped));
        assert_eq!(handle.counters.refused.get(), 1);
    }

    #[test]
    fn a_full_queue_fails_the_producer_after_waiting_never_drops_silently() {
        // A queue of one that nobody drains: the writer is stuck (a stalled disk).
        let (tx, _rx) = sync_channel(1);
        let handle = AuditHandle {
            tx,
            counters: AuditCounters::default(),
            refusals_logged: Arc::new(Mutex::new(crate::logging::RateLimiter::new(1))),
        };
        assert_eq!(handle.record(1, "decision", serde_json::json!({})), Ok(()));
        let started = Instant::now();
        assert_eq!(handle.record(2, "decision", serde_json::json!({})), Err(AuditRefused::Full));
        assert!(started.elapsed() >= QUEUE_WAIT, "the producer waited for room first");
        assert_eq!(handle.try_record(3, "api.refused", serde_json::json!({})), Err(AuditRefused::Full));
        assert_eq!(handle.counters.refused.get(), 2);
    }

    #[test]
    fn a_keyed_writer_signs_every_n_entries_and_at_stop() {
        let dir = std::env::temp_dir().join(format!("wedsync-audit-keyed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = AuditConfig::new(dir.join("audit.jsonl"));
        config.fsync = wedsync_audit::FsyncPolicy::Never;
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let public = key.verifying_key();
        let keying = Keying { key: Some(key), every: 4, interval: Duration::from_secs(3600), ship: None };
        let (writer, handle) = AuditWriter::start(config.clone(), keying).unwrap();
        for i in 0..10 {
            handle.record(1_700_000_000_000 + i, "decision", serde_json::json!({ "i": i })).unwrap();
        }
        writer.stop();
        let files = wedsync_audit::chain_files(&config.path).unwrap();
        let options = VerifyOptions { trusted_key: Some(public), max_unsigned: Some(4), expect: None };
        let summary = wedsync_audit::verify_files_with(&files, &options).unwrap();
        // 4 + cp + 4 + cp + 2 + cp (at stop).
        assert_eq!((summary.entries, summary.checkpoints, summary.unsigned_tail), (13, 3, 0));
        assert_eq!(handle.counters.checkpoints.get(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
