//! Wiring: binds the sockets, starts the collectors, the StatsD listener and the API, and stops
//! them all within the shutdown budget.

use crate::actuators::Actuators;
use crate::api;
use crate::audit::AuditWriter;
use crate::calendar::{self, StateDb};
use crate::clock::{Clock, read};
use crate::config::Settings;
use crate::decisions::{self, DecisionLog};
use crate::engine::EngineCommand;
use crate::host::{HostCollector, HostSample};
use crate::ingest;
use crate::process::ProcessSampler;
pub use crate::state::AgentState;
use crate::store::Store;
use crate::telemetry::{HostView, Telemetry};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wedsync_core::Timestamp;
use wedsync_core::engine::Engine;

/// How long the agent waits for its tasks after a stop is asked for.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_millis(1500);

/// How often idle series are expired.
const EXPIRY_PERIOD: Duration = Duration::from_secs(10);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The API port could not be bound.
    #[error("api.listen: cannot bind TCP {addr}: {source}")]
    ApiBind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The StatsD port could not be bound.
    #[error(transparent)]
    Statsd(#[from] ingest::IngestError),
    /// The state database could not be opened.
    #[error(transparent)]
    State(#[from] calendar::StateError),
    /// The audit log could not be opened (or read to verify it).
    #[error("audit.path: {0}")]
    Audit(#[from] wedsync_audit::AuditError),
    /// The audit trail's signing key cannot be used.
    #[error(transparent)]
    AuditKey(#[from] crate::audit::KeyError),
    /// The calendar file could not be loaded.
    #[error(transparent)]
    CalendarFile(#[from] calendar::CalendarFileError),
    /// The mesh could not start.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    /// The plugin host could not start.
    #[error("plugins: {0}")]
    Plugins(#[from] crate::plugins::PluginStartError),
    /// The thread loading plugins failed.
    #[error("plugins: the loading thread failed: {0}")]
    PluginThread(String),
    /// A bound socket could not report its address.
    #[error("cannot read the bound address: {0}")]
    LocalAddr(std::io::Error),
}

/// Host metrics also kept in the store, so later consumers query them like any series.
fn record_host_series(store: &Store, now: Timestamp, sample: &HostSample) {
    store.set_internal_gauge(now, "host.cpu.busy", "", sample.cpu.busy);
    for (i, busy) in sample.cpu.per_core.iter().enumerate() {
        store.set_internal_gauge(now, "host.cpu.core.busy", &format!("core:{i}"), *busy);
    }
    if sample.memory.total_bytes > 0 {
        store.set_internal_gauge(
            now,
            "host.memory.used_ratio",
            "",
            sample.memory.used_bytes as f64 / sample.memory.total_bytes as f64,
        );
    }
    store.set_internal_gauge(now, "host.load.1m", "", sample.load.one);
    if let Some(p) = &sample.pressure {
        store.set_internal_gauge(now, "host.pressure.stall", "resource:cpu", p.cpu.some_stall_fraction);
        store.set_internal_gauge(now, "host.pressure.stall", "resource:memory", p.memory.some_stall_fraction);
        store.set_internal_gauge(now, "host.pressure.stall", "resource:io", p.io.some_stall_fraction);
    }
}

async fn sample_host(state: Arc<AgentState>, stop: CancellationToken) {
    let mut collector = HostCollector::new(&state.settings.procfs);
    let mut ticker = tokio::time::interval(state.settings.host_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failures_logged = crate::logging::RateLimiter::new(1);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        match collector.sample(started) {
            Ok(sample) => {
                let now = state.clock.at(started);
                record_host_series(&state.store, now, &sample);
                let mut view = state.host.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                view.host = Some(sample);
                view.host_at = Some(now);
            }
            Err(e) => {
                state.telemetry.host_collect_errors.inc();
                if let Some(suppressed) = failures_logged.admit(started) {
                    tracing::warn!(error = %e, suppressed, "host sample failed");
                }
            }
        }
        state.telemetry.host_collect_seconds.observe(started.elapsed().as_secs_f64());
    }
}

async fn sample_process(state: Arc<AgentState>, stop: CancellationToken) {
    let mut sampler = ProcessSampler::new();
    let mut ticker = tokio::time::interval(state.settings.process_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let sample = sampler.sample();
        state.host.write().unwrap_or_else(std::sync::PoisonError::into_inner).process = Some(sample);
    }
}

async fn expire_series(state: Arc<AgentState>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(EXPIRY_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let removed = state.store.expire_idle(state.clock.now(), state.settings.series_ttl);
        if removed > 0 {
            tracing::info!(removed, ttl = ?state.settings.series_ttl, "expired idle series");
        }
    }
}

/// Loads the stored calendar into the engine, then the calendar file (stored too, so the
/// database always holds the whole calendar).
fn load_calendar(db: &StateDb, engine: &mut Engine, file: Option<&str>) -> Result<(), StartError> {
    let stored = db.weddings()?;
    let mut loaded = 0usize;
    for wedding in stored {
        let id = wedding.id.clone();
        if let Err(reason) = engine.handle_wedding_upsert(wedding) {
            // Stored by an older version under looser rules: it protects nothing until re-added.
            tracing::error!(id = %id.escape_debug(), %reason, "stored wedding breaks the calendar's rules; not loaded (fix it and add it again)");
        } else {
            loaded += 1;
        }
    }
    let mut from_file = 0usize;
    if let Some(path) = file {
        for wedding in calendar::load_file(Path::new(path))? {
            db.put_wedding(&wedding)?;
            if engine.handle_wedding_upsert(wedding).is_ok() {
                from_file += 1;
            }
        }
    }
    tracing::info!(stored = loaded, from_file, "wedding calendar loaded");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime and most daemons do):
/// the default soft limit of 1,024 is shared by API connections, sockets, plugin files and
/// procfs reads, and a burst of clients must not starve host sampling. Logs what it did.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-files soft limit to the hard limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-files soft limit"),
        },
        Ok((soft, _)) => tracing::debug!(soft, "open-files soft limit is already the hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
}

/// A bound StatsD socket before its readers start.
struct StatsdInput {
    setting: &'static str,
    socket: std::net::UdpSocket,
    bound: SocketAddr,
    drops: Option<ingest::SocketDrops>,
    loss: Arc<ingest::InputLoss>,
}

/// A running agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// Shared state (also what the API serves).
    pub state: Arc<AgentState>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    audit_writer: Option<AuditWriter>,
    alert_delivery: Option<crate::alerts::Delivery>,
}

impl RunningAgent {
    /// Binds every socket and starts every task. Returns once the agent is serving.
    pub async fn start(settings: Settings) -> Result<RunningAgent, StartError> {
        raise_open_files_limit();
        let clock = Clock::start();
        let store = Arc::new(Store::new(settings.store_limits, settings.statsd_readers.saturating_mul(4)));
        let host = Arc::new(RwLock::new(HostView::default()));
        let mut telemetry = Telemetry::new(clock, store.clone(), host.clone());
        let mut engine = Engine::new(settings.engine.clone(), settings.pools.clone());
        let decision_log = Arc::new(Mutex::new(DecisionLog::default()));
        let db = Arc::new(StateDb::open(&crate::config::state_dir(&settings.storage_dir))?);
        load_calendar(&db, &mut engine, settings.calendar_file.as_deref())?;
        decisions::load_profiles(&db, &mut engine);
        telemetry.registry().register(
            "wedsync_log_lines_lost",
            "Log lines that could not be written (standard error's reader gone: a closed pipe, a restarted journald)",
            crate::logging::lost_lines(),
        );
        let round_metrics = decisions::RoundMetrics::register(telemetry.registry());
        let (engine_handle, engine_inbox) = crate::engine::channel(&engine, round_metrics.commands_refused.clone());
        telemetry.registry().register_collector(Box::new(decisions::EngineCollector {
            engine: engine_handle.clone(),
            log: decision_log.clone(),
        }));
        // Sizes the actuators report go to the engine as commands; a full queue is counted (the
        // next report comes at the next observe interval or decision).
        let sizes = {
            let engine = engine_handle.clone();
            crate::actuators::SizeSink::new(move |pool, units| {
                let command = EngineCommand::PoolSize { pool: pool.to_owned(), units, at: clock.now() };
                if let Err(e) = engine.try_send(command) {
                    tracing::warn!(pool, units, error = %e, "reported pool size not handed to the engine");
                }
            })
        };
        // The trail first: the actuators audit what became of each decision.
        let (audit_writer, audit) = match crate::config::audit_config(&settings) {
            Some(config) => {
                let state_dir = crate::config::state_dir(&settings.storage_dir);
                let audit_dir = config.path.parent().map(Path::to_path_buf).unwrap_or_default();
                let keying = crate::audit::Keying::load(
                    &settings.audit_checkpoints,
                    &[state_dir.as_path(), audit_dir.as_path()],
                    &settings.node_id,
                )?;
                let (writer, handle) = AuditWriter::start(config, keying)?;
                handle.counters.register(telemetry.registry());
                (Some(writer), Some(handle))
            }
            None => (None, None),
        };
        let actuators = Arc::new(Actuators::start_audited(
            settings.pools.iter().map(|p| p.name.clone()).zip(settings.actuators.iter().cloned()).collect(),
            sizes,
            audit.clone(),
        ));
        actuators.register(telemetry.registry());
        let api_metrics = api::ApiMetrics::register(telemetry.registry());
        let api_auth_failures = prometheus_client::metrics::family::Family::default();
        telemetry.registry().register(
            "wedsync_api_auth_failures",
            "API calls refused for their bearer token (missing, wrong, lacking the scope, or none configured), by reason",
            api_auth_failures.clone(),
        );

        let listener = tokio::net::TcpListener::bind(settings.api_listen)
            .await
            .map_err(|source| StartError::ApiBind { addr: settings.api_listen, source })?;
        let api_addr = listener.local_addr().map_err(StartError::LocalAddr)?;
        // The StatsD sockets: `statsd.listen`, then `statsd.demand_listen`, numbered in that
        // order as each series's sources.
        let mut statsd = Vec::new();
        let wanted = [
            ("statsd.listen", "udp", settings.statsd_listen),
            ("statsd.demand_listen", "demand", settings.statsd_demand_listen),
        ];
        for (setting, name, addr) in wanted {
            let Some(addr) = addr else { continue };
            let (socket, granted) = ingest::bind_for(setting, addr, settings.statsd_receive_buffer)?;
            let bound = socket.local_addr().map_err(StartError::LocalAddr)?;
            if granted < settings.statsd_receive_buffer {
                tracing::warn!(
                    socket = name,
                    asked = settings.statsd_receive_buffer,
                    granted,
                    "kernel granted a smaller StatsD receive buffer (raise net.core.rmem_max)"
                );
            }
            let drops = ingest::SocketDrops::named(name, &socket, &settings.procfs);
            if drops.is_none() {
                tracing::warn!(
                    socket = name,
                    procfs = %settings.procfs,
                    "cannot find the StatsD socket in procfs: datagrams the kernel drops will not be counted"
                );
            }
            let source = u8::try_from(statsd.len()).unwrap_or(u8::MAX);
            statsd.push(StatsdInput {
                setting,
                socket,
                bound,
                drops,
                loss: Arc::new(ingest::InputLoss::new(name, source)),
            });
        }
        telemetry
            .registry()
            .register_collector(Box::new(ingest::KernelDrops(statsd.iter().filter_map(|i| i.drops.clone()).collect())));
        let unix_statsd = match &settings.statsd_unix_socket {
            Some((path, mode)) => Some((ingest::bind_unix(path, *mode, settings.statsd_receive_buffer)?, path.clone())),
            None => None,
        };
        let fleet = match &settings.mesh {
            Some(mesh) => {
                let (handle, driver) = crate::fleet::start(
                    mesh,
                    &settings.node_id,
                    &settings.region,
                    clock,
                    Arc::new(crate::fleet::EngineLink::new(engine_handle.clone())),
                    None,
                )
                .await?;
                telemetry
                    .registry()
                    .register_collector(Box::new(crate::fleet::FleetCollector { fleet: handle.clone() }));
                Some((handle, driver))
            }
            None => None,
        };
        let plugin_stage = match &settings.plugins {
            Some(plugins) => {
                let state_dir = crate::config::state_dir(&settings.storage_dir);
                let fleet_handle = fleet.as_ref().map(|(handle, _)| handle.clone());
                let lines = telemetry.ingest.lines.clone();
                let (settings, plugins, host, audit) = (settings.clone(), plugins.clone(), host.clone(), audit.clone());
                // Compiling components takes a while on a cold cache: off the async reactor.
                let stage = tokio::task::spawn_blocking(move || {
                    let mut stage = crate::plugins::PluginStage::start(
                        &settings,
                        &plugins,
                        &state_dir,
                        host,
                        fleet_handle,
                        lines,
                        audit,
                    )?;
                    stage.start_loader(&plugins).map_err(|e| StartError::PluginThread(e.to_string()))?;
                    Ok::<_, StartError>(stage)
                })
                .await
                .map_err(|e| StartError::PluginThread(e.to_string()))??;
                Some(stage)
            }
            None => None,
        };
        if !api_addr.ip().is_loopback() {
            tracing::warn!(%api_addr, "API listens beyond loopback; anyone who can reach it can read the agent's metrics");
        }
        let alerts_view = Arc::new(RwLock::new(crate::alerts::AlertsView::default()));
        let alert_counters = crate::alerts::AlertCounters::default();
        alert_counters.register(telemetry.registry(), alerts_view.clone());
        let state = Arc::new(AgentState {
            settings,
            clock,
            store,
            host,
            telemetry,
            api_addr,
            statsd_addr: statsd.first().map(|i| i.bound),
            statsd_demand_addr: statsd.get(1).map(|i| i.bound),
            engine: engine_handle,
            decisions: decision_log,
            db,
            audit,
            actuators,
            fleet: fleet.as_ref().map(|(handle, _)| handle.clone()),
            plugins: plugin_stage.as_ref().map(crate::plugins::PluginStage::snapshot),
            plugin_reload: plugin_stage.as_ref().and_then(crate::plugins::PluginStage::reload_handle),
            api_auth_failures,
            api_auth_log: Mutex::new(crate::logging::RateLimiter::new(1)),
            alerts: alerts_view,
        });
        let alerts_settings = &state.settings.alerts;
        let alert_delivery = if alerts_settings.enabled {
            crate::alerts::Delivery::start(
                &alerts_settings.alertmanager,
                alerts_settings.resend_interval,
                alert_counters.clone(),
            )
        } else {
            None
        };
        let alert_loop = alerts_settings.enabled.then(|| {
            crate::alerts::AlertLoop::new(
                alerts_settings,
                &state.settings.node_id,
                format!("http://{api_addr}"),
                state.alerts.clone(),
                state.plugins.clone(),
                state.audit.clone(),
                alert_counters,
                alert_delivery.as_ref(),
            )
        });
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let ingest = Arc::new(
            ingest::Ingest::new(
                clock,
                state.store.clone(),
                state.telemetry.ingest.clone(),
                state.settings.statsd_log_rejects_per_second,
                state.fleet.as_ref().map(|f| f.content.clone()),
            )
            .with_allow_list(state.settings.statsd_allow.clone()),
        );
        let udp_inputs = u8::try_from(statsd.len()).unwrap_or(u8::MAX);
        let mut input_losses = Vec::new();
        for (n, input) in statsd.into_iter().enumerate() {
            if let Some(drops) = input.drops {
                tasks.spawn(ingest::watch_drops(drops, stop.clone()));
            }
            input_losses.push(input.loss.clone());
            // Blocking reader threads, one per core: off the reactor, and none waits for an
            // epoll wake-up while datagrams are queued. The demand socket carries a few series:
            // one reader of its own keeps up, and never waits behind the bulk.
            let readers = if n == 0 { state.settings.statsd_readers } else { 1 };
            for _ in 0..readers {
                let socket = input.socket.try_clone().map_err(|source| ingest::IngestError::Bind {
                    setting: input.setting,
                    addr: input.bound,
                    source,
                })?;
                let (ingest, loss, stop) = (ingest.clone(), input.loss.clone(), stop.clone());
                tasks.spawn(async move {
                    if let Err(e) = tokio::task::spawn_blocking(move || ingest::read(socket, ingest, loss, stop)).await
                    {
                        tracing::error!(error = %e, "a statsd reader failed");
                    }
                });
            }
            let (stop, socket) = (stop.clone(), input.socket);
            tasks.spawn(async move {
                stop.cancelled().await;
                ingest::wake_readers(&socket);
            });
        }
        if let Some((socket, path)) = unix_statsd {
            // Its senders wait rather than lose datagrams: nothing to watch for drops.
            let reader = socket
                .try_clone()
                .map_err(|e| ingest::IngestError::Unix { path: path.clone(), reason: e.to_string() })?;
            let (ingest, reader_stop) = (ingest.clone(), stop.clone());
            tasks.spawn(async move {
                if let Err(e) =
                    tokio::task::spawn_blocking(move || ingest::read_unix(reader, ingest, udp_inputs, reader_stop))
                        .await
                {
                    tracing::error!(error = %e, "the statsd unix reader failed");
                }
            });
            let stop = stop.clone();
            tasks.spawn(async move {
                stop.cancelled().await;
                let _ = socket.shutdown(std::net::Shutdown::Read);
                let _ = std::fs::remove_file(&path);
            });
        }
        if let Some((_, driver)) = fleet {
            tasks.spawn(crate::fleet::drive(driver, stop.clone()));
        }
        tasks.spawn(sample_host(state.clone(), stop.clone()));
        tasks.spawn(sample_process(state.clone(), stop.clone()));
        tasks.spawn(expire_series(state.clone(), stop.clone()));
        // The engine moves to the decision thread, which owns it from now on. It runs even
        // without pools: the calendar lives in the engine, and the API changes it through
        // the thread.
        let driver = decisions::Driver {
            clock,
            store: state.store.clone(),
            engine,
            inbox: engine_inbox,
            sources: state.settings.demand.clone(),
            input_losses,
            log: state.decisions.clone(),
            audit: state.audit.clone(),
            actuators: state.actuators.clone(),
            db: state.db.clone(),
            metrics: round_metrics,
            alerts: alert_loop,
        };
        let decision_stop = stop.clone();
        // Rounds (and the plugins they call) run on their own thread, never on the reactor.
        tasks.spawn(async move {
            if let Err(e) =
                tokio::task::spawn_blocking(move || decisions::run(driver, plugin_stage, decision_stop)).await
            {
                tracing::error!(error = %e, "the decision thread failed");
            }
        });
        let app = api::router(state.clone());
        let (api_stop, limits) = (stop.clone(), state.settings.api_limits);
        tasks.spawn(async move {
            api::serve(listener, app, limits, api_metrics, api_stop).await;
        });
        tracing::info!(
            node = %state.settings.node_id,
            region = %state.settings.region,
            api = %api_addr,
            statsd = %state.statsd_addr.map_or_else(|| "disabled".to_owned(), |a| a.to_string()),
            mesh = %state.fleet.as_ref().and_then(|f| read(&f.snapshot).addr).map_or_else(|| "disabled".to_owned(), |a| a.to_string()),
            pools = state.settings.pools.len(),
            version = env!("CARGO_PKG_VERSION"),
            "agent ready"
        );
        Ok(RunningAgent { state, stop, tasks, audit_writer, alert_delivery })
    }

    /// Asks every task to stop and waits for them, at most [`SHUTDOWN_BUDGET`]. The audit trail
    /// is flushed last (what is queued is written and fsynced) within the same budget; entries
    /// not durable by then are the only ones a stop can lose. Returns whether all stopped in time.
    pub async fn shutdown(mut self) -> bool {
        let started = Instant::now();
        self.stop.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_BUDGET, async { while self.tasks.join_next().await.is_some() {} })
            .await
            .is_ok();
        if !drained {
            tracing::warn!("tasks did not stop within {SHUTDOWN_BUDGET:?}; aborting them");
            self.tasks.abort_all();
        }
        // Actuators get what is left of the budget for in-flight attempts; the rest are abandoned.
        let actuators = self.state.actuators.clone();
        let left = SHUTDOWN_BUDGET.saturating_sub(started.elapsed()) / 2;
        let _ = tokio::task::spawn_blocking(move || actuators.stop(left)).await;
        // The alerts' last state goes out once more (resolves included), briefly.
        if let Some(delivery) = self.alert_delivery.take() {
            let _ = tokio::time::timeout(ALERT_FLUSH, tokio::task::spawn_blocking(move || delivery.stop())).await;
        }
        let mut flushed = true;
        if let Some(writer) = self.audit_writer.take() {
            let left = SHUTDOWN_BUDGET.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
            flushed = tokio::time::timeout(left, tokio::task::spawn_blocking(move || writer.stop())).await.is_ok();
            if !flushed {
                tracing::warn!("audit log not flushed within the shutdown budget");
            }
        }
        drained && flushed
    }
}

/// SIGINT and SIGTERM handlers, installed before the agent binds anything so that a signal
/// arriving during start-up is never lost (or fatal).
#[derive(Debug)]
pub struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    /// Waits for either signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Why `wedsync-agent run` could not run (or not stop cleanly on a signal).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration does not load or is not valid.
    #[error(transparent)]
    Config(#[from] crate::config::LoadError),
    /// Logging could not be set up.
    #[error(transparent)]
    Logging(#[from] crate::logging::LoggingError),
    /// The async runtime could not be made.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The agent could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// This running binary: `/proc/self/exe` where there is one (it stays this binary even when
/// an upgrade has replaced the file since), else the path it was started from.
fn own_executable() -> Option<std::path::PathBuf> {
    let proc = std::path::PathBuf::from("/proc/self/exe");
    if proc.exists() {
        return Some(proc);
    }
    std::env::current_exe().ok()
}

/// `wedsync-agent run`: loads the configuration (the defaults, `file`, the environment), sets
/// up logging (`log_format` overrides `log.format`), runs the agent on a two-worker runtime and
/// stops it on SIGINT or SIGTERM.
pub fn run(file: Option<std::path::PathBuf>, log_format: Option<crate::config::LogFormat>) -> Result<(), RunError> {
    let (_, mut settings) = crate::config::load_settings(&crate::config::Sources::from_process(file))?;
    if let Some(format) = log_format {
        settings.log_format = format;
    }
    crate::logging::init(settings.log_format, &settings.log_level)?;
    // Plugins compile in child processes of this binary: the agent keeps none of the memory.
    if let Some(program) = own_executable() {
        crate::plugins::compiler::compile_in_child_processes(program);
    }
    // Two workers: the agent must stay light on the hosts it protects.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wedsync-worker")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let outcome = runtime.block_on(async {
        let mut signals = ShutdownSignals::install().map_err(RunError::Signals)?;
        // A signal during start (plugins compiling, a slow disk) stops the agent then, not
        // after: what was starting is dropped (the audit writer flushes what it took).
        let agent = tokio::select! {
            started = RunningAgent::start(settings) => started?,
            signal = signals.recv() => {
                tracing::warn!(signal, "stopping during start: what was still starting is abandoned");
                return Ok(());
            }
        };
        let signal = signals.recv().await;
        tracing::info!(signal, "stopping");
        let clean = agent.shutdown().await;
        tracing::info!(clean, "stopped");
        Ok(())
    });
    // Blocking work abandoned at a signal during start (a plugin load waiting for its compiler
    // process) must not hold the exit.
    runtime.shutdown_timeout(ABANDONED_WORK_WAIT);
    outcome
}

/// How long a stop waits for the alerts' last delivery.
const ALERT_FLUSH: Duration = Duration::from_secs(1);

/// How long the exit waits for blocking work abandoned by a signal during start.
const ABANDONED_WORK_WAIT: Duration = Duration::from_millis(500);
