//! Actuators: apply the engine's decisions to the outside world.
//!
//! Each pool is configured with an [`ActuatorSpec`]. `log` pools need nothing here (the decision
//! log already records every decision). Every other pool gets one worker thread that owns all
//! blocking I/O for that pool, so a slow or failing actuator never delays a decision round:
//!
//! * [`Actuators::dispatch`] only swaps the decision into the pool's "latest pending" slot and
//!   wakes the worker. A newer decision replaces an older one that has not started yet, and a
//!   decision being retried is abandoned as soon as a newer one is pending (both are counted as
//!   *superseded*).
//! * `exec` runs a command (no shell) with the decision JSON on stdin and
//!   `WEDSYNC_DECISION_ID` / `WEDSYNC_POOL` in its environment; exit status 0 is success.
//! * `webhook` POSTs the JSON with an `Idempotency-Key` header, the Unix time of the attempt in
//!   `X-Wedsync-Timestamp`, and `X-Wedsync-Signature: sha256=<hex HMAC-SHA256 of
//!   "<timestamp>.<body>">` (so a receiver can refuse a replayed request by its age); 2xx is
//!   success, 408/429/5xx and transport errors are retried, other statuses fail at once.
//! * Failed attempts are retried up to `retries` more times, the delay doubling from `backoff`
//!   (capped at 30 s). The ids of the last 64 successful decisions of each pool are remembered and
//!   never applied again.
//!
//! * Sizes: a pool's real size comes back as JSON, `{"units": N}` (or Kubernetes' `"replicas"`),
//!   from an `exec` actuator's `observe` command (run at start and every `observe_interval`,
//!   between decisions), from the decision command's output, or from a webhook's answer; each
//!   goes to the [`SizeSink`] the agent gave (the decision engine).
//!
//! Outcomes are counted per `(pool, kind)` in [`ActuatorCounters`], which can be registered in a
//! Prometheus registry with [`Actuators::register`].

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::config::{ActuatorSpec, Observe};
use crate::logging::RateLimiter;
use hmac::{Hmac, KeyInit, Mac};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::Sha256;

/// How many successful decision ids each pool remembers (and never applies again).
const RECENT_SUCCESSES: usize = 64;
/// Upper bound of the doubling retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bytes of a command's stdout/stderr (or a webhook's response body) kept for the log.
const CAPTURE_LIMIT: usize = 4096;
/// Characters of captured output quoted in one log line.
const LOG_EXCERPT: usize = 512;
/// How long to wait for a finished command's output pipes to drain.
const PIPE_GRACE: Duration = Duration::from_millis(250);
/// Failure log lines per pool and minute; the rest are counted and summarised.
const LOGS_PER_MINUTE: u32 = 20;
/// `User-Agent` of webhook requests.
const USER_AGENT: &str = concat!("wedsync-agent/", env!("CARGO_PKG_VERSION"));

/// Labels of every actuator metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActuatorLabels {
    /// Pool name.
    pub pool: String,
    /// Actuator kind: `exec` or `webhook`.
    pub kind: &'static str,
}

/// Actuator metric families, shared by all workers. Clones share the same values.
#[derive(Debug, Clone, Default)]
pub struct ActuatorCounters {
    /// Attempts started (first tries and retries).
    pub attempts: Family<ActuatorLabels, Counter>,
    /// Decisions applied successfully.
    pub successes: Family<ActuatorLabels, Counter>,
    /// Decisions given up on after their last attempt (or a permanent error).
    pub failures: Family<ActuatorLabels, Counter>,
    /// Attempts that were retries.
    pub retries: Family<ActuatorLabels, Counter>,
    /// Decisions replaced before they started, or abandoned between retries, for a newer one.
    pub superseded: Family<ActuatorLabels, Counter>,
    /// Wall-clock time of the last success in Unix milliseconds (0: never).
    pub last_success_unix_ms: Family<ActuatorLabels, Gauge>,
    /// Pool sizes reported (by `observe`, a command's output or a webhook's answer).
    pub sizes: Family<ActuatorLabels, Counter>,
    /// `observe` runs that failed or printed no size.
    pub observe_failures: Family<ActuatorLabels, Counter>,
}

impl ActuatorCounters {
    /// Registers the families as `wedsync_actuator_{attempts,successes,failures,retries,superseded}`
    /// (counters; the text exposition appends `_total`) and `wedsync_actuator_last_success_unix_ms`
    /// (gauge), all labelled `pool` and `kind`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("wedsync_actuator_attempts", "Actuator attempts started", self.attempts.clone());
        registry.register("wedsync_actuator_successes", "Decisions applied by an actuator", self.successes.clone());
        registry.register(
            "wedsync_actuator_failures",
            "Decisions an actuator gave up on after retries",
            self.failures.clone(),
        );
        registry.register("wedsync_actuator_retries", "Actuator attempts that were retries", self.retries.clone());
        registry.register(
            "wedsync_actuator_superseded",
            "Decisions dropped by an actuator because a newer one was pending",
            self.superseded.clone(),
        );
        registry.register(
            "wedsync_actuator_sizes",
            "Pool sizes an actuator reported (observe command, command output, webhook answer)",
            self.sizes.clone(),
        );
        registry.register(
            "wedsync_actuator_observe_failures",
            "Runs of an exec actuator's observe command that failed or printed no size",
            self.observe_failures.clone(),
        );
        registry.register(
            "wedsync_actuator_last_success_unix_ms",
            "Time of the last successful actuation, Unix milliseconds (0: never)",
            self.last_success_unix_ms.clone(),
        );
    }

    /// Current values for one label set (zeros if it has no series yet).
    pub fn snapshot(&self, labels: &ActuatorLabels) -> ActuatorStats {
        let count = |family: &Family<ActuatorLabels, Counter>| family.get(labels).map_or(0, |c| c.get());
        let last = self.last_success_unix_ms.get(labels).map_or(0, |g| g.get());
        ActuatorStats {
            kind: labels.kind,
            attempts: count(&self.attempts),
            successes: count(&self.successes),
            failures: count(&self.failures),
            retries: count(&self.retries),
            superseded: count(&self.superseded),
            last_success_unix_ms: (last > 0).then_some(last),
        }
    }
}

/// A point-in-time copy of one pool's actuator counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActuatorStats {
    /// Actuator kind: `exec` or `webhook`.
    pub kind: &'static str,
    /// Attempts started.
    pub attempts: u64,
    /// Decisions applied.
    pub successes: u64,
    /// Decisions given up on.
    pub failures: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Decisions superseded by a newer one.
    pub superseded: u64,
    /// Time of the last success, Unix milliseconds.
    pub last_success_unix_ms: Option<i64>,
}

/// Where reported pool sizes go: `(pool, units)`.
#[derive(Clone)]
pub struct SizeSink(Arc<SizeFn>);

/// What a [`SizeSink`] calls.
type SizeFn = dyn Fn(&str, u32) + Send + Sync;

impl SizeSink {
    /// Sizes go to `f`.
    pub fn new(f: impl Fn(&str, u32) + Send + Sync + 'static) -> SizeSink {
        SizeSink(Arc::new(f))
    }
}

impl std::fmt::Debug for SizeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SizeSink")
    }
}

/// A pool size in a command's output or a webhook's answer: a JSON object whose `units` (or
/// `replicas`) is a whole number of units.
pub fn reported_size(bytes: &[u8]) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let units = value.get("units").or_else(|| value.get("replicas"))?.as_u64()?;
    u32::try_from(units).ok()
}

/// The actuator workers of all non-`log` pools.
#[derive(Debug)]
pub struct Actuators {
    pools: HashMap<String, PoolHandle>,
    counters: ActuatorCounters,
    /// Taken (emptied) by the first [`Actuators::stop`].
    workers: Mutex<Vec<(String, JoinHandle<()>)>>,
}

#[derive(Debug)]
struct PoolHandle {
    labels: ActuatorLabels,
    slot: Arc<Slot>,
    counters: PoolCounters,
    /// False when the worker thread could not be started: dispatches then count as failures.
    running: bool,
}

impl Actuators {
    /// Starts one worker (a plain std thread; blocking I/O is fine there) per pool with a non-`log`
    /// actuator. A pool listed twice keeps its first actuator. Reported sizes are dropped.
    pub fn start(pools: Vec<(String, ActuatorSpec)>) -> Actuators {
        Self::start_with_sizes(pools, SizeSink::new(|_, _| {}))
    }

    /// [`Actuators::start`], handing every pool size an actuator reports to `sizes`.
    pub fn start_with_sizes(pools: Vec<(String, ActuatorSpec)>, sizes: SizeSink) -> Actuators {
        Self::start_audited(pools, sizes, None)
    }

    /// [`Actuators::start_with_sizes`], auditing every decision's outcome (applied, given up,
    /// superseded, abandoned at stop) in `audit`.
    pub fn start_audited(
        pools: Vec<(String, ActuatorSpec)>,
        sizes: SizeSink,
        audit: Option<crate::audit::AuditHandle>,
    ) -> Actuators {
        let counters = ActuatorCounters::default();
        let mut map = HashMap::new();
        let mut workers = Vec::new();
        for (pool, spec) in pools {
            let (method, retries, backoff) = match spec {
                ActuatorSpec::Log => continue,
                ActuatorSpec::Exec { command, observe, timeout, retries, backoff, env } => {
                    (Method::Exec { command, observe, timeout, env }, retries, backoff)
                }
                ActuatorSpec::Webhook { url, secret, timeout, retries, backoff } => {
                    (Method::Webhook { agent: http_agent(timeout), url, secret }, retries, backoff)
                }
            };
            if map.contains_key(&pool) {
                tracing::warn!(pool = %pool, "pool has more than one actuator; keeping the first");
                continue;
            }
            let labels = ActuatorLabels { pool: pool.clone(), kind: method.kind() };
            let pool_counters = PoolCounters::new(&counters, &labels);
            let slot = Arc::new(Slot::default());
            let worker = Worker {
                pool: pool.clone(),
                kind: method.kind(),
                method,
                retries,
                backoff,
                slot: Arc::clone(&slot),
                counters: pool_counters.clone(),
                logs: RateLimiter::per_window(LOGS_PER_MINUTE, Duration::from_secs(60)),
                sizes: sizes.clone(),
                audit: audit.clone(),
            };
            let name = format!("wedsync-act-{}", pool.replace('\0', ""));
            let running = match thread::Builder::new().name(name).spawn(move || worker.run()) {
                Ok(handle) => {
                    workers.push((pool.clone(), handle));
                    true
                }
                Err(e) => {
                    tracing::error!(pool = %pool, kind = labels.kind, error = %e, "cannot start the actuator worker; its decisions will count as failures");
                    false
                }
            };
            map.insert(pool, PoolHandle { labels, slot, counters: pool_counters, running });
        }
        Actuators { pools: map, counters, workers: Mutex::new(workers) }
    }

    /// Why `pool`'s actuator gave up on its latest decision, while none has succeeded since.
    pub fn failing(&self, pool: &str) -> Option<String> {
        let handle = self.pools.get(pool)?;
        if !handle.running {
            return Some("its worker thread could not be started".into());
        }
        handle.slot.lock().failing.clone()
    }

    /// Hands a decision (its serialized JSON, its id and its pool) to the pool's worker. Never
    /// blocks on actuator I/O: a newer decision replaces a pending one that has not started yet
    /// (counted as superseded), a decision already applied successfully is ignored, and `log`-only
    /// or unknown pools are a no-op.
    pub fn dispatch(&self, pool: &str, decision_id: &str, json: Vec<u8>) {
        let Some(handle) = self.pools.get(pool) else {
            tracing::trace!(pool, id = decision_id, "no actuator for pool");
            return;
        };
        if !handle.running {
            handle.counters.failures.inc();
            return;
        }
        let job = Job { id: decision_id.to_owned(), json: json.into() };
        let mut state = handle.slot.lock();
        if state.stopping {
            return;
        }
        if state.recent.iter().any(|id| id == decision_id) {
            drop(state);
            tracing::debug!(pool, id = decision_id, "decision already applied; not dispatched again");
            return;
        }
        let replaced = state.pending.replace(job);
        drop(state);
        handle.slot.wake.notify_one();
        if let Some(old) = replaced
            && old.id != decision_id
        {
            handle.counters.superseded.inc();
            tracing::debug!(pool, id = %old.id, by = decision_id, "pending decision superseded before it started");
        }
    }

    /// Handles to the metric families (clones share values).
    pub fn counters(&self) -> ActuatorCounters {
        self.counters.clone()
    }

    /// Registers the actuator metrics in `registry`; see [`ActuatorCounters::register`].
    pub fn register(&self, registry: &mut Registry) {
        self.counters.register(registry);
    }

    /// Current counters of one pool's actuator; `None` for `log`-only and unknown pools.
    pub fn stats(&self, pool: &str) -> Option<ActuatorStats> {
        self.pools.get(pool).map(|handle| self.counters.snapshot(&handle.labels))
    }

    /// Stops the workers: pending decisions are dropped, in-flight attempts get at most `budget`
    /// (a command still running then is killed; a webhook request ends at its own timeout), and
    /// workers still busy after `budget` are detached.
    /// Later calls find nothing left to stop.
    pub fn stop(&self, budget: Duration) {
        let deadline = Instant::now() + budget;
        self.signal_stop(Some(deadline));
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for (pool, handle) in workers {
            while !handle.is_finished() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                thread::sleep((deadline - now).min(Duration::from_millis(5)));
            }
            if !handle.is_finished() {
                tracing::warn!(pool = %pool, ?budget, "actuator still busy when the stop budget ran out; abandoned");
            } else if handle.join().is_err() {
                tracing::error!(pool = %pool, "actuator worker panicked");
            }
        }
    }

    fn signal_stop(&self, deadline: Option<Instant>) {
        for handle in self.pools.values() {
            if let Some(deadline) = deadline {
                // Already set by an earlier stop: keep the earlier deadline.
                let _ = handle.slot.stop_at.set(deadline);
            }
            handle.slot.lock().stopping = true;
            handle.slot.wake.notify_all();
        }
    }

    #[cfg(test)]
    fn pending_id(&self, pool: &str) -> Option<String> {
        self.pools.get(pool).and_then(|h| h.slot.lock().pending.as_ref().map(|job| job.id.clone()))
    }
}

impl Drop for Actuators {
    /// Workers finish their in-flight attempt (bounded by its own timeout) and exit.
    fn drop(&mut self) {
        self.signal_stop(None);
    }
}

/// One decision waiting for, or being applied by, a worker.
#[derive(Debug)]
struct Job {
    id: String,
    json: Arc<[u8]>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The latest decision not yet started.
    pending: Option<Job>,
    /// Ids of the last successful decisions, oldest first.
    recent: VecDeque<String>,
    stopping: bool,
    /// Why the latest decision failed, until one succeeds (for the `ActuatorFailing` alert).
    failing: Option<String>,
}

/// What a pool's dispatcher and its worker share. The lock is never held during I/O.
#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    wake: Condvar,
    /// When in-flight commands are killed during [`Actuators::stop`].
    stop_at: OnceLock<Instant>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One pool's series of each family.
#[derive(Debug, Clone)]
struct PoolCounters {
    attempts: Counter,
    successes: Counter,
    failures: Counter,
    retries: Counter,
    superseded: Counter,
    last_success_unix_ms: Gauge,
    sizes: Counter,
    observe_failures: Counter,
}

impl PoolCounters {
    fn new(families: &ActuatorCounters, labels: &ActuatorLabels) -> PoolCounters {
        PoolCounters {
            attempts: families.attempts.get_or_create_owned(labels),
            successes: families.successes.get_or_create_owned(labels),
            failures: families.failures.get_or_create_owned(labels),
            retries: families.retries.get_or_create_owned(labels),
            superseded: families.superseded.get_or_create_owned(labels),
            last_success_unix_ms: families.last_success_unix_ms.get_or_create_owned(labels),
            sizes: families.sizes.get_or_create_owned(labels),
            observe_failures: families.observe_failures.get_or_create_owned(labels),
        }
    }
}

#[derive(Debug)]
enum Method {
    Exec { command: Vec<String>, observe: Option<Observe>, timeout: Duration, env: Vec<String> },
    Webhook { agent: ureq::Agent, url: String, secret: String },
}

impl Method {
    fn kind(&self) -> &'static str {
        match self {
            Method::Exec { .. } => "exec",
            Method::Webhook { .. } => "webhook",
        }
    }
}

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    /// Applied; the pool's size, if the actuator reported it.
    Success(Option<u32>),
    /// Worth another attempt.
    Retryable(String),
    /// Another attempt would fail the same way.
    Permanent(String),
    /// Killed because the actuators are stopping.
    Abandoned,
}

/// How a retry delay ended.
enum Wake {
    Elapsed,
    Superseded,
    Stopping,
}

#[derive(Debug)]
struct Worker {
    pool: String,
    kind: &'static str,
    method: Method,
    retries: u32,
    backoff: Duration,
    slot: Arc<Slot>,
    counters: PoolCounters,
    logs: RateLimiter,
    sizes: SizeSink,
    audit: Option<crate::audit::AuditHandle>,
}

/// What a worker does next.
enum Next {
    Job(Job),
    Observe,
    Stop,
}

impl Worker {
    fn run(mut self) {
        let interval = match &self.method {
            Method::Exec { observe: Some(observe), .. } => Some(observe.interval),
            _ => None,
        };
        // The first size report at once: a restarted agent decides nothing until it knows.
        let mut observe_at = interval.map(|_| Instant::now());
        loop {
            match self.next(observe_at) {
                Next::Stop => break,
                Next::Job(job) => self.apply(&job),
                Next::Observe => {
                    self.observe();
                    observe_at = interval.map(|every| Instant::now() + every);
                }
            }
        }
        tracing::debug!(pool = %self.pool, kind = self.kind, "actuator worker stopped");
    }

    /// Waits for the next decision not applied yet, or until `observe_at`.
    fn next(&self, observe_at: Option<Instant>) -> Next {
        let mut state = self.slot.lock();
        loop {
            if state.stopping {
                return Next::Stop;
            }
            if let Some(job) = state.pending.take() {
                if state.recent.iter().any(|id| *id == job.id) {
                    tracing::debug!(pool = %self.pool, id = %job.id, "decision already applied; skipped");
                    continue;
                }
                return Next::Job(job);
            }
            state = match observe_at {
                None => self.slot.wake.wait(state).unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        return Next::Observe;
                    }
                    match self.slot.wake.wait_timeout(state, at - now) {
                        Ok((state, _)) => state,
                        Err(poisoned) => poisoned.into_inner().0,
                    }
                }
            };
        }
    }

    /// Runs the `observe` command once and reports the size it prints.
    fn observe(&mut self) {
        let Method::Exec { observe: Some(observe), timeout, env, .. } = &self.method else { return };
        let outcome = match spawn_and_wait(&self.pool, &observe.command, env, *timeout, None, &self.slot.stop_at) {
            Ok((Exit::Stopped, _, _)) => return,
            Ok((exit, stdout, stderr)) => match exit.failure(*timeout, &stderr) {
                None => reported_size(&stdout)
                    .ok_or_else(|| format!("printed no size ({{\"units\": N}}): {}", excerpt(&stdout))),
                Some(reason) => Err(reason),
            },
            Err((reason, _)) => Err(reason),
        };
        match outcome {
            Ok(units) => self.report(units),
            Err(reason) => {
                self.counters.observe_failures.inc();
                if let Some(suppressed) = self.logs.admit(Instant::now()) {
                    tracing::warn!(pool = %self.pool, kind = self.kind, reason = %reason, suppressed, "observe command failed: the pool's size is not known from it");
                }
            }
        }
    }

    /// Audits what became of a decision (the handle counts and logs a refusal: the outcome
    /// has happened either way).
    fn audit(&self, job: &Job, outcome: &'static str, attempts: u32, detail: serde_json::Value) {
        if let Some(audit) = &self.audit {
            let payload = serde_json::json!({
                "pool": self.pool, "actuator": self.kind, "id": job.id, "outcome": outcome,
                "attempts": attempts, "detail": detail,
            });
            let _ = audit.record(crate::clock::wall_ms(), "actuator.outcome", payload);
        }
    }

    fn report(&self, units: u32) {
        self.counters.sizes.inc();
        tracing::debug!(pool = %self.pool, kind = self.kind, units, "pool size reported");
        (self.sizes.0)(&self.pool, units);
    }

    /// Applies one decision with retries, until success, final failure, supersession or stop.
    fn apply(&mut self, job: &Job) {
        let mut delay = self.backoff;
        let mut attempt: u32 = 0;
        loop {
            if attempt > 0 {
                self.counters.retries.inc();
            }
            self.counters.attempts.inc();
            let outcome = match &self.method {
                Method::Exec { command, timeout, env, .. } => {
                    exec_attempt(&self.pool, command, env, *timeout, job, &self.slot.stop_at)
                }
                Method::Webhook { agent, url, secret } => webhook_attempt(agent, url, secret, job),
            };
            let (reason, permanent) = match outcome {
                Outcome::Success(size) => {
                    self.succeeded(job, attempt);
                    self.audit(job, "applied", attempt + 1, serde_json::json!({ "reported_units": size }));
                    if let Some(units) = size {
                        self.report(units);
                    }
                    return;
                }
                Outcome::Abandoned => {
                    tracing::warn!(pool = %self.pool, kind = self.kind, id = %job.id, attempt = attempt + 1, "actuator stopping; in-flight attempt killed");
                    self.audit(job, "abandoned", attempt + 1, serde_json::Value::Null);
                    return;
                }
                Outcome::Retryable(reason) => (reason, false),
                Outcome::Permanent(reason) => (reason, true),
            };
            let last = permanent || attempt >= self.retries;
            if let Some(suppressed) = self.logs.admit(Instant::now()) {
                tracing::warn!(pool = %self.pool, kind = self.kind, id = %job.id, attempt = attempt + 1, reason = %reason, will_retry = !last, suppressed, "actuator attempt failed");
            }
            if last {
                self.counters.failures.inc();
                if let Some(suppressed) = self.logs.admit(Instant::now()) {
                    tracing::error!(pool = %self.pool, kind = self.kind, id = %job.id, attempts = attempt + 1, suppressed, "actuator gave up on decision");
                }
                self.audit(job, "failed", attempt + 1, serde_json::json!({ "reason": reason, "permanent": permanent }));
                self.slot.lock().failing = Some(reason);
                return;
            }
            match self.wait_backoff(&job.id, delay) {
                Wake::Elapsed => {}
                Wake::Superseded => {
                    self.counters.superseded.inc();
                    tracing::info!(pool = %self.pool, kind = self.kind, id = %job.id, "retries abandoned: a newer decision is pending");
                    self.audit(job, "superseded", attempt + 1, serde_json::json!({ "reason": reason }));
                    return;
                }
                Wake::Stopping => return,
            }
            delay = delay.saturating_mul(2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    fn succeeded(&self, job: &Job, attempt: u32) {
        self.counters.successes.inc();
        self.counters.last_success_unix_ms.set(crate::clock::wall_ms());
        let mut state = self.slot.lock();
        if state.recent.len() >= RECENT_SUCCESSES {
            state.recent.pop_front();
        }
        state.recent.push_back(job.id.clone());
        state.failing = None;
        drop(state);
        tracing::info!(pool = %self.pool, kind = self.kind, id = %job.id, attempts = attempt + 1, "decision applied");
    }

    /// Sleeps `delay`, waking early when a different decision becomes pending or on stop.
    fn wait_backoff(&self, id: &str, delay: Duration) -> Wake {
        let deadline = Instant::now() + delay;
        let mut state = self.slot.lock();
        loop {
            if state.stopping {
                return Wake::Stopping;
            }
            if state.pending.as_ref().is_some_and(|job| job.id != id) {
                return Wake::Superseded;
            }
            let now = Instant::now();
            if now >= deadline {
                return Wake::Elapsed;
            }
            state = match self.slot.wake.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// The agent's HTTP client for what it sends out (webhooks, audit checkpoints, alerts): each
/// request cut off after `timeout`, no redirects followed, any status returned to the caller.
pub(crate) fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .user_agent(USER_AGENT)
        .build()
        .new_agent()
}

/// POSTs `body` (JSON) signed as the webhook actuators sign theirs (`X-Wedsync-Timestamp`,
/// `X-Wedsync-Signature`); `Err` says why it was not accepted (a non-2xx answer included).
pub(crate) fn post_signed(agent: &ureq::Agent, url: &str, secret: &str, id: &str, body: &[u8]) -> Result<(), String> {
    match send_signed(agent, url, secret, id, body) {
        Ok((status, _)) if (200..300).contains(&status) => Ok(()),
        Ok((status, text)) => Err(format!("HTTP {status}: {}", excerpt(text.as_bytes()))),
        Err(e) => Err(e.to_string()),
    }
}

/// One signed POST: the answer's status and (the start of) its body.
fn send_signed(
    agent: &ureq::Agent,
    url: &str,
    secret: &str,
    id: &str,
    body: &[u8],
) -> Result<(u16, String), SendError> {
    let timestamp = u64::try_from(crate::clock::wall_ms() / 1000).unwrap_or(0);
    let signature = signature(secret, timestamp, body).ok_or(SendError::Sign)?;
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", id)
        .header("X-Wedsync-Timestamp", timestamp.to_string())
        .header("X-Wedsync-Signature", signature)
        .send(body)
        .map_err(SendError::Http)?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(CAPTURE_LIMIT as u64)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    Ok((status, text))
}

/// Why a signed POST got no answer.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("cannot sign the body")]
    Sign,
    #[error(transparent)]
    Http(ureq::Error),
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
fn signature(secret: &str, timestamp: u64, body: &[u8]) -> Option<String> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

/// At most [`LOG_EXCERPT`] characters of `bytes`, trimmed, for a log line.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(LOG_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Spawns a detached helper thread.
fn helper(f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new().name("wedsync-act-io".into()).spawn(f).map(drop)
}

/// Drains a pipe on a helper thread, keeping its first [`CAPTURE_LIMIT`] bytes.
fn capture(pipe: Option<impl Read + Send + 'static>) -> Option<mpsc::Receiver<Vec<u8>>> {
    let mut pipe = pipe?;
    let (tx, rx) = mpsc::channel();
    helper(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = CAPTURE_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(kept);
    })
    .ok()?;
    Some(rx)
}

fn collect(rx: Option<mpsc::Receiver<Vec<u8>>>) -> Vec<u8> {
    rx.and_then(|rx| rx.recv_timeout(PIPE_GRACE).ok()).unwrap_or_default()
}

/// How waiting for a command ended.
enum Exit {
    Status(ExitStatus),
    TimedOut,
    Stopped,
    Failed(io::Error),
}

impl Exit {
    /// Why the run failed, with the start of its stderr; `None` when it exited 0 (or was
    /// stopped, which is no failure of the command).
    fn failure(&self, timeout: Duration, stderr: &[u8]) -> Option<String> {
        match self {
            Exit::Status(status) if status.success() => None,
            Exit::Stopped => None,
            Exit::Status(status) => Some(format!("{status}; stderr: {}", excerpt(stderr))),
            Exit::TimedOut => Some(format!("timed out after {timeout:?}; stderr: {}", excerpt(stderr))),
            Exit::Failed(e) => Some(format!("cannot wait for the command: {e}")),
        }
    }
}

/// How a command ended, and the start of its stdout and stderr.
type Ran = (Exit, Vec<u8>, Vec<u8>);

/// Runs `command` (no shell) in its own process group with the decision on stdin (or nothing),
/// for at most `timeout`: how it ended and the start of its stdout and stderr, or why it could
/// not start and whether that is for good. Its environment is cleared but for the agent's
/// variables named in `env`, `WEDSYNC_POOL` and (for a decision) `WEDSYNC_DECISION_ID`.
fn spawn_and_wait(
    pool: &str,
    command: &[String],
    env: &[String],
    timeout: Duration,
    job: Option<&Job>,
    stop_at: &OnceLock<Instant>,
) -> Result<Ran, (String, bool)> {
    let Some((program, args)) = command.split_first() else {
        return Err(("empty command".into(), true));
    };
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for name in env {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.args(args)
        .stdin(if job.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("WEDSYNC_POOL", pool);
    if let Some(job) = job {
        cmd.env("WEDSYNC_DECISION_ID", &job.id);
    }
    #[cfg(unix)]
    {
        // Its own process group, so a timeout kills whatever the command started too.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let permanent = matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied);
            return Err((format!("cannot start {program:?}: {e}"), permanent));
        }
    };
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());
    if let (Some(mut stdin), Some(job)) = (child.stdin.take(), job) {
        let json = Arc::clone(&job.json);
        // On a thread: a command that does not read its stdin must not block us past the timeout.
        // Dropping `stdin` at the end closes it.
        if let Err(e) = helper(move || {
            let _ = stdin.write_all(&json);
        }) {
            kill(&mut child);
            return Err((format!("cannot start a thread: {e}"), false));
        }
    }
    let exit = wait(&mut child, timeout, stop_at);
    Ok((exit, collect(stdout), collect(stderr)))
}

/// One run of an `exec` actuator: the decision on stdin; exit status 0 is success, and a size
/// the command prints (`{"units": N}`) is reported.
fn exec_attempt(
    pool: &str,
    command: &[String],
    env: &[String],
    timeout: Duration,
    job: &Job,
    stop_at: &OnceLock<Instant>,
) -> Outcome {
    let (exit, stdout, stderr) = match spawn_and_wait(pool, command, env, timeout, Some(job), stop_at) {
        Ok(ran) => ran,
        Err((reason, true)) => return Outcome::Permanent(reason),
        Err((reason, false)) => return Outcome::Retryable(reason),
    };
    if matches!(exit, Exit::Stopped) {
        return Outcome::Abandoned;
    }
    match exit.failure(timeout, &stderr) {
        Some(reason) => Outcome::Retryable(reason),
        None => {
            if !stdout.is_empty() {
                tracing::debug!(pool, id = %job.id, stdout = %excerpt(&stdout), "actuator command output");
            }
            Outcome::Success(reported_size(&stdout))
        }
    }
}

/// Waits for `child` at most `timeout` (and not past the stop deadline), killing it on overrun.
fn wait(child: &mut Child, timeout: Duration, stop_at: &OnceLock<Instant>) -> Exit {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Exit::Status(status),
            Ok(None) => {}
            Err(e) => {
                kill(child);
                return Exit::Failed(e);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill(child);
            return Exit::TimedOut;
        }
        if stop_at.get().is_some_and(|stop| now >= *stop) {
            kill(child);
            return Exit::Stopped;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Kills a child that has not been reaped yet, with its process group, and reaps it.
fn kill(child: &mut Child) {
    #[cfg(unix)]
    {
        // The child leads its own group (see `exec_attempt`) and is not reaped, so the group id
        // cannot have been reused.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One POST of a `webhook` actuator, signed with the time of this attempt.
fn webhook_attempt(agent: &ureq::Agent, url: &str, secret: &str, job: &Job) -> Outcome {
    match send_signed(agent, url, secret, job.id.as_str(), &job.json[..]) {
        // The answer may say what the pool runs now.
        Ok((status, body)) if (200..300).contains(&status) => Outcome::Success(reported_size(body.as_bytes())),
        Ok((status, body)) => {
            let reason = format!("HTTP {status}: {}", excerpt(body.as_bytes()));
            if status == 408 || status == 429 || status >= 500 {
                Outcome::Retryable(reason)
            } else {
                Outcome::Permanent(reason)
            }
        }
        Err(SendError::Sign) => Outcome::Permanent("cannot sign the webhook body".into()),
        Err(SendError::Http(
            e @ (ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::TlsRequired
            | ureq::Error::InvalidProxyUrl),
        )) => Outcome::Permanent(e.to_string()),
        Err(SendError::Http(e)) => Outcome::Retryable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::BufRead;
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};

    const POOL: &str = "web";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wedsync-act-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn exec(script: &str, arg: &Path, timeout: Duration, retries: u32, backoff: Duration) -> ActuatorSpec {
        ActuatorSpec::Exec {
            observe: None,
            command: vec!["sh".into(), "-c".into(), script.into(), arg.display().to_string()],
            timeout,
            retries,
            backoff,
            env: crate::config::actuators::DEFAULT_EXEC_ENV.map(String::from).to_vec(),
        }
    }

    fn start(spec: ActuatorSpec) -> Actuators {
        Actuators::start(vec![(POOL.to_owned(), spec)])
    }

    fn stats(actuators: &Actuators) -> ActuatorStats {
        actuators.stats(POOL).unwrap()
    }

    /// Polls `cond` every 10 ms for at most `limit`; whether it came true.
    fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    #[test]
    fn sizes_are_read_from_json_units_or_replicas() {
        assert_eq!(reported_size(br#"{"units": 12}"#), Some(12));
        assert_eq!(reported_size(br#"{"replicas": 3, "ready": 2}"#), Some(3));
        assert_eq!(reported_size(b"{\"units\": 7}\n"), Some(7));
        for bad in [&b"12"[..], br#"{"units": -1}"#, br#"{"units": 1.5}"#, br#"{"units": 5000000000}"#, b"ok", b""] {
            assert_eq!(reported_size(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_observe_command_reports_the_size_at_start_and_then_periodically_and_failures_are_counted() {
        let dir = temp_dir("observe");
        let size = dir.join("size");
        fs::write(&size, r#"{"units": 40}"#).unwrap();
        let reported = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let reported = reported.clone();
            SizeSink::new(move |pool, units| reported.lock().unwrap().push((pool.to_owned(), units)))
        };
        let spec = ActuatorSpec::Exec {
            observe: Some(Observe {
                command: vec!["sh".into(), "-c".into(), "cat \"$0\"".into(), size.display().to_string()],
                interval: Duration::from_secs(1),
            }),
            command: vec!["sh".into(), "-c".into(), r#"cat >/dev/null; echo '{"units": 44}'"#.into()],
            timeout: Duration::from_secs(5),
            retries: 0,
            backoff: Duration::ZERO,
            env: crate::config::actuators::DEFAULT_EXEC_ENV.map(String::from).to_vec(),
        };
        let actuators = Actuators::start_with_sizes(vec![(POOL.to_owned(), spec)], sink);
        assert!(eventually(Duration::from_secs(5), || reported.lock().unwrap().first() == Some(&(POOL.to_owned(), 40))));
        // A decision's command that prints a size reports it too.
        actuators.dispatch(POOL, "d1", br#"{"to": 44}"#.to_vec());
        assert!(eventually(Duration::from_secs(5), || reported.lock().unwrap().contains(&(POOL.to_owned(), 44))));
        // The pool is resized; the next run reports it. Then the command prints garbage.
        fs::write(&size, r#"{"replicas": 41}"#).unwrap();
        assert!(eventually(Duration::from_secs(5), || reported.lock().unwrap().contains(&(POOL.to_owned(), 41))));
        fs::write(&size, "not json").unwrap();
        let failures = || {
            actuators
                .counters()
                .observe_failures
                .get_or_create(&ActuatorLabels { pool: POOL.into(), kind: "exec" })
                .get()
        };
        assert!(eventually(Duration::from_secs(5), || failures() >= 1));
        let sizes = actuators.counters().sizes.get_or_create(&ActuatorLabels { pool: POOL.into(), kind: "exec" }).get();
        assert!(sizes >= 3, "{sizes}");
        actuators.stop(Duration::from_secs(2));
    }

    #[test]
    fn exec_gets_json_on_stdin_and_id_in_env() {
        let dir = temp_dir("stdin");
        let out = dir.join("out");
        let spec = exec(
            r#"cat > "$0"; echo "$WEDSYNC_DECISION_ID" >> "$0"; echo "$WEDSYNC_POOL" >> "$0""#,
            &out,
            Duration::from_secs(10),
            0,
            Duration::from_millis(10),
        );
        let actuators = start(spec);
        let json = r#"{"id":"web:7:12","pool":"web","from":10,"to":12}"#;
        actuators.dispatch(POOL, "web:7:12", json.as_bytes().to_vec());
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).successes == 1), "{:?}", stats(&actuators));
        assert_eq!(fs::read_to_string(&out).unwrap(), format!("{json}web:7:12\nweb\n"));
        let s = stats(&actuators);
        assert_eq!((s.kind, s.attempts, s.retries, s.failures, s.superseded), ("exec", 1, 0, 0, 0));
        assert!(s.last_success_unix_ms.is_some_and(|ms| ms > 1_600_000_000_000));
        actuators.stop(Duration::from_secs(1));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn exec_retries_until_success() {
        let dir = temp_dir("retry");
        let counter = dir.join("count");
        // Fails on runs 1 and 2, succeeds on run 3.
        let script = r#"n=$(cat "$0" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > "$0"; [ "$n" -ge 3 ]"#;
        let actuators = start(exec(script, &counter, Duration::from_secs(10), 5, Duration::from_millis(10)));
        actuators.dispatch(POOL, "web:1:3", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).successes == 1), "{:?}", stats(&actuators));
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.retries, s.successes, s.failures, s.superseded), (3, 2, 1, 0, 0));
        assert_eq!(fs::read_to_string(&counter).unwrap().trim(), "3");
        actuators.stop(Duration::from_secs(1));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn exec_gives_up_after_retries() {
        let actuators = start(ActuatorSpec::Exec {
            observe: None,
            command: vec!["sh".into(), "-c".into(), "echo broken >&2; exit 3".into()],
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(5),
            env: crate::config::actuators::DEFAULT_EXEC_ENV.map(String::from).to_vec(),
        });
        actuators.dispatch(POOL, "web:1:3", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).failures == 1), "{:?}", stats(&actuators));
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.retries, s.successes, s.failures), (3, 2, 0, 1));
        assert_eq!(s.last_success_unix_ms, None);
        actuators.stop(Duration::from_secs(1));
    }

    #[test]
    fn exec_timeout_kills_the_command() {
        let actuators = start(ActuatorSpec::Exec {
            observe: None,
            command: vec!["sleep".into(), "5".into()],
            timeout: Duration::from_millis(100),
            retries: 0,
            backoff: Duration::from_millis(10),
            env: crate::config::actuators::DEFAULT_EXEC_ENV.map(String::from).to_vec(),
        });
        let started = Instant::now();
        actuators.dispatch(POOL, "web:1:3", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(3), || stats(&actuators).failures == 1), "{:?}", stats(&actuators));
        assert!(started.elapsed() < Duration::from_secs(3));
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.retries, s.successes, s.failures), (1, 0, 0, 1));
        actuators.stop(Duration::from_secs(1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn exec_timeout_kills_what_the_command_started() {
        let dir = temp_dir("group");
        let pid_file = dir.join("pid");
        let script = r#"sleep 30 & echo $! > "$0"; wait"#;
        let actuators = start(exec(script, &pid_file, Duration::from_millis(300), 0, Duration::from_millis(10)));
        actuators.dispatch(POOL, "web:1:3", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(3), || stats(&actuators).failures == 1), "{:?}", stats(&actuators));
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        assert!(!pid.is_empty());
        // Gone, or a zombie waiting for its new parent to reap it.
        let dead = || match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => true,
        };
        assert!(eventually(Duration::from_secs(3), dead), "sleep {pid} survived the timeout");
        actuators.stop(Duration::from_secs(1));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_program_fails_without_retry() {
        let actuators = start(ActuatorSpec::Exec {
            observe: None,
            command: vec!["/nonexistent/wedsync-actuator".into()],
            timeout: Duration::from_secs(1),
            retries: 3,
            backoff: Duration::from_millis(10),
            env: crate::config::actuators::DEFAULT_EXEC_ENV.map(String::from).to_vec(),
        });
        actuators.dispatch(POOL, "web:1:3", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(5), || stats(&actuators).failures == 1), "{:?}", stats(&actuators));
        assert_eq!(stats(&actuators).attempts, 1);
        actuators.stop(Duration::from_secs(1));
    }

    #[test]
    fn newer_decisions_supersede_pending_ones() {
        let dir = temp_dir("supersede");
        let out = dir.join("out");
        let script = r#"sleep 0.3; echo "$WEDSYNC_DECISION_ID" >> "$0""#;
        let actuators = start(exec(script, &out, Duration::from_secs(10), 0, Duration::from_millis(10)));
        for i in 0..10 {
            actuators.dispatch(POOL, &format!("web:{i}:5"), b"{}".to_vec());
        }
        let settled = || {
            let s = stats(&actuators);
            s.successes + s.superseded == 10
        };
        assert!(eventually(Duration::from_secs(10), settled), "{:?}", stats(&actuators));
        let runs = lines(&out);
        let s = stats(&actuators);
        assert!(runs.len() <= 3, "{runs:?}");
        assert_eq!(runs.last().map(String::as_str), Some("web:9:5"));
        assert_eq!(s.successes, runs.len() as u64);
        assert_eq!(s.attempts, runs.len() as u64);
        assert!(s.superseded >= 7, "{s:?}");
        actuators.stop(Duration::from_secs(1));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn newer_decision_interrupts_retry_backoff() {
        let dir = temp_dir("interrupt");
        let out = dir.join("out");
        // Decision "old" always fails; anything else succeeds.
        let script = r#"echo "$WEDSYNC_DECISION_ID" >> "$0"; [ "$WEDSYNC_DECISION_ID" != old ]"#;
        let actuators = start(exec(script, &out, Duration::from_secs(10), 5, Duration::from_secs(20)));
        actuators.dispatch(POOL, "old", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(5), || lines(&out).len() == 1));
        let started = Instant::now();
        actuators.dispatch(POOL, "new", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(5), || stats(&actuators).successes == 1), "{:?}", stats(&actuators));
        assert!(started.elapsed() < Duration::from_secs(5));
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.retries, s.successes, s.failures, s.superseded), (2, 0, 1, 0, 1));
        assert_eq!(lines(&out), ["old", "new"]);
        actuators.stop(Duration::from_secs(1));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn dispatch_never_blocks_and_stop_kills_in_flight() {
        let actuators = start(ActuatorSpec::Exec {
            observe: None,
            command: vec!["sleep".into(), "5".into()],
            timeout: Duration::from_secs(30),
            retries: 0,
            backoff: Duration::from_millis(10),
            env: crate::config::actuators::DEFAULT_EXEC_ENV.map(String::from).to_vec(),
        });
        actuators.dispatch(POOL, "web:start:5", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(5), || stats(&actuators).attempts == 1));
        let started = Instant::now();
        for i in 0..10_000 {
            actuators.dispatch(POOL, &format!("web:{i}:5"), b"{\"to\":5}".to_vec());
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.superseded), (1, 9_999));
        assert_eq!(actuators.pending_id(POOL).as_deref(), Some("web:9999:5"));
        let stopping = Instant::now();
        actuators.stop(Duration::from_millis(200));
        assert!(stopping.elapsed() < Duration::from_secs(2), "{:?}", stopping.elapsed());
    }

    #[test]
    fn a_success_is_never_applied_twice() {
        let dir = temp_dir("idempotent");
        let out = dir.join("out");
        let script = r#"echo "$WEDSYNC_DECISION_ID" >> "$0""#;
        let actuators = start(exec(script, &out, Duration::from_secs(10), 0, Duration::from_millis(10)));
        actuators.dispatch(POOL, "web:1:5", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).successes == 1));
        actuators.dispatch(POOL, "web:1:5", b"{}".to_vec());
        assert_eq!(actuators.pending_id(POOL), None);
        actuators.dispatch(POOL, "web:2:6", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).successes == 2));
        actuators.dispatch(POOL, "web:1:5", b"{}".to_vec());
        assert_eq!(actuators.pending_id(POOL), None);
        assert_eq!(lines(&out), ["web:1:5", "web:2:6"]);
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.successes, s.superseded), (2, 2, 0));
        actuators.stop(Duration::from_secs(1));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn log_pools_are_a_no_op() {
        let actuators = Actuators::start(vec![("quiet".to_owned(), ActuatorSpec::Log)]);
        actuators.dispatch("quiet", "quiet:1:2", b"{}".to_vec());
        actuators.dispatch("unknown", "unknown:1:2", b"{}".to_vec());
        assert_eq!(actuators.stats("quiet"), None);
        let quiet = ActuatorLabels { pool: "quiet".into(), kind: "exec" };
        assert!(actuators.counters().attempts.get(&quiet).is_none());
        actuators.stop(Duration::from_millis(10));
    }

    #[test]
    fn metrics_register_with_pool_and_kind_labels() {
        let actuators = start(ActuatorSpec::Exec {
            observe: None,
            command: vec!["true".into()],
            timeout: Duration::from_secs(5),
            retries: 0,
            backoff: Duration::from_millis(10),
            env: crate::config::actuators::DEFAULT_EXEC_ENV.map(String::from).to_vec(),
        });
        let mut registry = Registry::default();
        actuators.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in ["attempts", "successes", "failures", "retries", "superseded"] {
            let series = format!("wedsync_actuator_{name}_total{{pool=\"web\",kind=\"exec\"}} 0");
            assert!(text.contains(&series), "{series} missing from\n{text}");
        }
        assert!(text.contains("wedsync_actuator_last_success_unix_ms{pool=\"web\",kind=\"exec\"} 0"), "{text}");
        actuators.stop(Duration::from_secs(1));
    }

    /// One request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        method_line: String,
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    /// Serves one request per entry of `statuses` on 127.0.0.1 (for at most 15 s), answering each
    /// with that status, and reports every request it read.
    fn serve(statuses: Vec<u16>) -> (String, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut statuses = statuses.into_iter();
            let mut next = statuses.next();
            while let Some(status) = next {
                if Instant::now() >= deadline {
                    break;
                }
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Some(seen) = answer(stream, status) {
                            let _ = tx.send(seen);
                            next = statuses.next();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        });
        (format!("http://{addr}/hooks/scale"), rx)
    }

    fn answer(stream: TcpStream, status: u16) -> Option<Seen> {
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut reader = io::BufReader::new(stream);
        let mut method_line = String::new();
        reader.read_line(&mut method_line).ok()?;
        let mut headers = HashMap::new();
        for _ in 0..100 {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        let length: usize = headers.get("content-length")?.parse().ok()?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let reply = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope");
        reader.get_mut().write_all(reply.as_bytes()).ok()?;
        Some(Seen { method_line: method_line.trim_end().to_owned(), headers, body })
    }

    fn webhook(url: String, retries: u32) -> ActuatorSpec {
        ActuatorSpec::Webhook {
            url,
            secret: "s3cret".into(),
            timeout: Duration::from_secs(5),
            retries,
            backoff: Duration::from_millis(10),
        }
    }

    #[test]
    fn webhook_posts_signed_json() {
        let (url, seen) = serve(vec![200]);
        let actuators = start(webhook(url, 0));
        let json = br#"{"id":"web:3:9","pool":"web","to":9}"#.to_vec();
        actuators.dispatch(POOL, "web:3:9", json.clone());
        let request = seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(request.method_line, "POST /hooks/scale HTTP/1.1");
        assert_eq!(request.body, json);
        let timestamp = request.headers.get("x-wedsync-timestamp").expect("a timestamp").clone();
        let now = crate::clock::wall_ms() / 1000;
        assert!((now - timestamp.parse::<i64>().unwrap()).abs() <= 10, "{timestamp} is the time of the attempt");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(&json);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(expected.len(), "sha256=".len() + 64);
        assert_eq!(request.headers.get("x-wedsync-signature"), Some(&expected));
        assert_eq!(request.headers.get("idempotency-key").map(String::as_str), Some("web:3:9"));
        assert_eq!(request.headers.get("content-type").map(String::as_str), Some("application/json"));
        assert_eq!(request.headers.get("user-agent"), Some(&format!("wedsync-agent/{}", env!("CARGO_PKG_VERSION"))));
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).successes == 1), "{:?}", stats(&actuators));
        let s = stats(&actuators);
        assert_eq!((s.kind, s.attempts, s.retries, s.failures), ("webhook", 1, 0, 0));
        actuators.stop(Duration::from_secs(1));
    }

    #[test]
    fn webhook_retries_server_errors() {
        let (url, seen) = serve(vec![500, 500, 200]);
        let actuators = start(webhook(url, 3));
        actuators.dispatch(POOL, "web:4:2", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).successes == 1), "{:?}", stats(&actuators));
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.retries, s.successes, s.failures), (3, 2, 1, 0));
        let keys: Vec<_> = seen.try_iter().map(|r| r.headers.get("idempotency-key").cloned()).collect();
        assert_eq!(keys, vec![Some("web:4:2".to_owned()); 3]);
        actuators.stop(Duration::from_secs(1));
    }

    #[test]
    fn webhook_client_error_is_permanent() {
        let (url, seen) = serve(vec![400, 200]);
        let actuators = start(webhook(url, 3));
        actuators.dispatch(POOL, "web:5:2", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).failures == 1), "{:?}", stats(&actuators));
        thread::sleep(Duration::from_millis(200));
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.retries, s.successes, s.failures), (1, 0, 0, 1));
        assert_eq!(seen.try_iter().count(), 1);
        actuators.stop(Duration::from_secs(1));
    }

    #[test]
    fn webhook_connection_refused_is_retried() {
        // Bind, then drop, to get a local port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let actuators = start(webhook(format!("http://127.0.0.1:{port}/"), 2));
        actuators.dispatch(POOL, "web:6:2", b"{}".to_vec());
        assert!(eventually(Duration::from_secs(10), || stats(&actuators).failures == 1), "{:?}", stats(&actuators));
        let s = stats(&actuators);
        assert_eq!((s.attempts, s.retries, s.failures), (3, 2, 1));
        actuators.stop(Duration::from_secs(1));
    }
}
