//! The plugin host: one engine, one store per plugin, calls under budgets, quarantine.

use crate::cache::CompiledCache;
use crate::error::{CacheError, CallFailure, FailureCounts, FailureKind, HostError, LoadError};
use crate::exports::{Exports, TypedPolicyPre};
use crate::external::{ExternalCompileError, ExternalCompiler};
use crate::policy::{Adjustment, Hooks, PluginInfo, Policy, Round, Setup, Verdict, VetoTarget};
use crate::sandbox::{LimitExceeded, LogRate, PluginCtx, PluginLog};
use crate::signing::{self, VerifyingKey};
use crate::ticker::Ticker;
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Store};
use wedsync_core::Timestamp;

/// Longest cache-hint key a plugin may return, in bytes (as the WIT says).
pub const MAX_CACHE_KEY: usize = 64;

/// When a failing plugin is set aside, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantinePolicy {
    /// Failures within `window` that quarantine a plugin.
    pub failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// The first quarantine's length; each further one doubles it.
    pub initial_backoff: Duration,
    /// The longest quarantine. A plugin that stays out of quarantine this long after its last
    /// release starts again from `initial_backoff`.
    pub max_backoff: Duration,
}

impl Default for QuarantinePolicy {
    /// 3 failures in 60 s; 30 s, doubling up to 10 min.
    fn default() -> Self {
        QuarantinePolicy {
            failures: 3,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
        }
    }
}

/// The host's settings.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Most wall-clock time one `decide` call may take before it is interrupted (default
    /// 5 ms). The call is stopped within about this budget plus the ticker's wake-up latency.
    pub call_budget: Duration,
    /// Most wall-clock time instantiation, `describe` and `configure` may each take (default
    /// 20 ms): rare calls, off the per-round path except when a plugin is re-instantiated
    /// after a failure.
    pub setup_budget: Duration,
    /// Most linear memory one plugin instance may have, in bytes (default 16 MiB).
    pub memory_limit: usize,
    /// Most elements a plugin's tables may have (default 100,000: interpreters built as
    /// components, e.g. componentize-py's, have large function tables).
    pub table_elements: usize,
    /// Most entries (adjustments + vetoes + cache hints) in one verdict (default 1,024).
    pub max_output_entries: usize,
    /// Most string bytes (veto reasons, failover ids, cache keys) in one verdict
    /// (default 64 KiB).
    pub max_output_bytes: usize,
    /// Plugin instances that may exist at once: sizes the pooling allocator (default 64; a
    /// hot swap briefly needs two for one plugin).
    pub max_instances: u32,
    /// Largest component accepted, in bytes (default 16 MiB).
    pub max_component_size: usize,
    /// Keys whose signatures are trusted.
    pub trusted_keys: Vec<VerifyingKey>,
    /// SHA-256 digests of components trusted without a signature: the bundled plugins, which
    /// are compiled into the agent's own binary.
    pub pinned_digests: Vec<[u8; 32]>,
    /// Load unsigned or badly signed plugins (with a warning at every load) instead of
    /// refusing them (default false).
    pub allow_unsigned: bool,
    /// Replace a plugin by an older version of itself (default false: refused, as a signed
    /// older build put back would otherwise be taken silently). Allowed, it is reported in
    /// [`Installed::rolled_back`].
    pub allow_rollback: bool,
    /// Directory of the compiled-artifact cache; `None`: compile on every load.
    pub cache_dir: Option<PathBuf>,
    /// Compiles what the cache does not hold outside this process (see
    /// [`external`](crate::external)); `None`, or without a `cache_dir`: in this process.
    pub external_compiler: Option<Arc<dyn ExternalCompiler>>,
    /// When failing plugins are quarantined.
    pub quarantine: QuarantinePolicy,
    /// How many log lines (log import, stdout, stderr) each plugin may write.
    pub log_rate: LogRate,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            call_budget: Duration::from_millis(5),
            setup_budget: Duration::from_millis(20),
            memory_limit: 16 << 20,
            table_elements: 100_000,
            max_output_entries: 1024,
            max_output_bytes: 64 << 10,
            max_instances: 64,
            max_component_size: 16 << 20,
            trusted_keys: Vec::new(),
            pinned_digests: Vec::new(),
            allow_unsigned: false,
            allow_rollback: false,
            cache_dir: None,
            external_compiler: None,
            quarantine: QuarantinePolicy::default(),
            log_rate: LogRate::default(),
        }
    }
}

/// A component to load, as read from disk or bundled.
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// The component's bytes (a WASI 0.2 component exporting the policy world).
    pub bytes: Vec<u8>,
    /// The detached signature file's bytes (see [`signing`](crate::signing)), if any.
    pub signature: Option<Vec<u8>>,
    /// Where it came from, for messages (a path, or `bundled:<name>`).
    pub origin: String,
}

/// How a plugin's origin was established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A trusted key verified its signature.
    Signed {
        /// The key's id ([`signing::key_id`]).
        key_id: String,
        /// The name and version the signature binds (a v2 signature); `None`: an old v1
        /// signature over the digest alone.
        identity: Option<signing::SignedIdentity>,
    },
    /// Its SHA-256 is pinned by the agent ([`HostSettings::pinned_digests`]: a bundled plugin).
    Pinned,
    /// It has no signature (loaded because unsigned plugins are allowed).
    Unsigned,
    /// Its signature did not verify (loaded because unsigned plugins are allowed).
    BadSignature {
        /// Why.
        reason: String,
    },
}

/// A verified, compiled plugin, ready to [`install`](PluginHost::install). It can be made on
/// another thread ([`Loader`]) and sent to the host's thread.
pub struct Prepared {
    origin: String,
    sha256: [u8; 32],
    size: usize,
    pre: TypedPolicyPre,
    config: String,
    trust: Trust,
    from_cache: bool,
    compiled_externally: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("origin", &self.origin)
            .field("sha256", &hex::encode(self.sha256))
            .field("size", &self.size)
            .field("trust", &self.trust)
            .field("from_cache", &self.from_cache)
            .field("compiled_externally", &self.compiled_externally)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Where it came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// The component's SHA-256, hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
    /// The component's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// How its origin was established.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }
    /// Its native code came from the compiled cache (no compilation).
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
    /// It was compiled by the [`ExternalCompiler`], then loaded from the compiled cache.
    pub fn compiled_externally(&self) -> bool {
        self.compiled_externally
    }
}

/// What [`install`](PluginHost::install) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The plugin's name (from `describe`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// The version and SHA-256 of the plugin it replaced, if any.
    pub replaced: Option<(String, String)>,
    /// It replaced a newer version of itself (allowed by [`HostSettings::allow_rollback`]).
    pub rolled_back: bool,
}

/// One plugin's part in a round.
#[derive(Debug, Clone)]
pub struct PluginOutcome {
    /// The plugin's name.
    pub name: Arc<str>,
    /// Its version.
    pub version: Arc<str>,
    /// Its SHA-256, hex (for the audit trail).
    pub sha256: Arc<str>,
    /// Its verdict, or why there is none (the round goes on without it).
    pub result: Result<Verdict, CallFailure>,
    /// Wall-clock time of the call (with re-instantiation, when it needed one).
    pub elapsed: Duration,
    /// Set when this failure put the plugin in quarantine: until when.
    pub quarantined_until: Option<Timestamp>,
}

/// Why a plugin was not called this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// It is quarantined until then.
    Quarantined {
        /// The end of the quarantine.
        until: Timestamp,
    },
    /// Its hooks do not ask for this round (a failover-only plugin on a round without
    /// failovers).
    NotHooked,
}

/// A plugin not called this round.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The plugin's name.
    pub name: Arc<str>,
    /// Why.
    pub reason: SkipReason,
}

/// The plugins' part in one decision round, in call order.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    /// The plugins called, in the configured order.
    pub outcomes: Vec<PluginOutcome>,
    /// The plugins not called.
    pub skipped: Vec<Skipped>,
}

impl RoundReport {
    /// The verdicts of the plugins that succeeded, in call order, with their outcome.
    pub fn verdicts(&self) -> impl Iterator<Item = (&PluginOutcome, &Verdict)> {
        self.outcomes.iter().filter_map(|o| o.result.as_ref().ok().map(|v| (o, v)))
    }

    /// The failures, in call order.
    pub fn failures(&self) -> impl Iterator<Item = (&PluginOutcome, &CallFailure)> {
        self.outcomes.iter().filter_map(|o| o.result.as_ref().err().map(|f| (o, f)))
    }
}

/// A plugin's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    /// Called every round it hooks.
    Active,
    /// Set aside after repeated failures; tried again after its quarantine.
    Quarantined,
    /// Its last call failed and its instance was discarded; it is re-instantiated on its next
    /// call.
    Failed,
}

impl PluginState {
    /// `active`, `quarantined` or `failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PluginState::Active => "active",
            PluginState::Quarantined => "quarantined",
            PluginState::Failed => "failed",
        }
    }
}

/// One plugin's status, for the API.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// The rounds it wants.
    pub hooks: Hooks,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Where it came from.
    pub origin: String,
    /// How its origin was established.
    pub trust: Trust,
    /// Its state.
    pub state: PluginState,
    /// Calls made (decide calls, failed or not).
    pub calls: u64,
    /// Failures per kind.
    pub failures: FailureCounts,
    /// The latest failure.
    pub last_failure: Option<CallFailure>,
    /// Median call time (`None` before the first call).
    pub p50: Option<Duration>,
    /// 99th percentile call time.
    pub p99: Option<Duration>,
    /// End of its current quarantine.
    pub quarantined_until: Option<Timestamp>,
    /// Times it was quarantined.
    pub quarantines: u32,
    /// Log lines written.
    pub log_lines: u64,
    /// Log lines dropped by the rate limit.
    pub log_dropped: u64,
}

/// Everything about a component that can be learnt without installing it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Size in bytes.
    pub size: usize,
    /// SHA-256, hex.
    pub sha256: String,
    /// Its imports (e.g. `wasi:cli/stdout@0.2.0`).
    pub imports: Vec<String>,
    /// The imports the host refuses.
    pub forbidden_imports: Vec<String>,
    /// Its exports (e.g. `describe`).
    pub exports: Vec<String>,
    /// `Ok` when it fits the `wedsync:policy/policy@0.1.0` world, else why not.
    pub world: Result<(), String>,
    /// What `describe` returned (name, version, description, hooks), when it fits the world.
    pub info: Option<PluginInfo>,
    /// Why `describe` could not be called, when it could not.
    pub describe_error: Option<String>,
}

/// Verifies and compiles plugins; cheap to clone, `Send + Sync`, so loads can run on a
/// background thread while the host keeps deciding.
#[derive(Clone)]
pub struct Loader {
    engine: Engine,
    linker: Arc<Linker<PluginCtx>>,
    cache: Option<Arc<CompiledCache>>,
    trusted: Arc<[VerifyingKey]>,
    pinned: Arc<[[u8; 32]]>,
    allow_unsigned: bool,
    max_component_size: usize,
    cache_refused: Arc<AtomicU64>,
    external: Option<Arc<dyn ExternalCompiler>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("cache", &self.cache)
            .field("trusted", &self.trusted.len())
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// Verifies the signature, compiles (or loads from the compiled cache), checks the imports
    /// and links: everything but instantiation. `config_json` is the plugin's own config
    /// section, handed to its `configure` at install. With an [`ExternalCompiler`], a
    /// component the cache does not hold is compiled by it, then loaded from the cache.
    pub fn prepare(&self, source: PluginSource, config_json: &str) -> Result<Prepared, LoadError> {
        let PluginSource { bytes, signature, origin } = source;
        if bytes.len() > self.max_component_size {
            return Err(LoadError::TooLarge { origin, size: bytes.len(), max: self.max_component_size });
        }
        let sha256 = signing::sha256(&bytes);
        let trust = self.check_signature(&origin, &sha256, signature.as_deref())?;

        let mut cached = self.load_cached(&origin, &sha256);
        let from_cache = cached.is_some();
        let mut compiled_externally = false;
        if cached.is_none()
            && let Some(external) = &self.external
            && self.cache.is_some()
        {
            match external.compile(&bytes) {
                Ok(()) => {
                    cached = self.load_cached(&origin, &sha256);
                    compiled_externally = cached.is_some();
                    if compiled_externally {
                        tracing::debug!(origin = %origin, "plugin compiled in another process");
                    } else {
                        tracing::warn!(
                            origin = %origin,
                            "the plugin compiler process left no usable artifact in the compiled cache; compiling here"
                        );
                    }
                }
                Err(ExternalCompileError::Invalid(reason)) => return Err(LoadError::Compile { origin, reason }),
                Err(ExternalCompileError::Unavailable(why)) => {
                    tracing::warn!(origin = %origin, error = %why, "cannot compile the plugin in another process; compiling here");
                }
            }
        }
        let in_cache = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => wasmtime::component::Component::from_binary(&self.engine, &bytes)
                .map_err(|e| LoadError::Compile { origin: origin.clone(), reason: error_text(&e) })?,
        };

        let component_type = component.component_type();
        if let Some((import, _)) = component_type.imports(&self.engine).find(|(name, _)| !import_allowed(name)) {
            return Err(LoadError::ForbiddenImport { origin, import: import.to_string() });
        }
        if !in_cache
            && let Some(cache) = &self.cache
            && let Err(e) = cache.store(&sha256, &component)
        {
            tracing::warn!(origin = %origin, error = %e, "cannot write the compiled plugin cache");
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(TypedPolicyPre::new)
            .map_err(|e| LoadError::World { origin: origin.clone(), reason: error_text(&e) })?;
        Ok(Prepared {
            origin,
            sha256,
            size: bytes.len(),
            pre,
            config: config_json.to_string(),
            trust,
            from_cache,
            compiled_externally,
        })
    }

    /// The component's artifact from the compiled cache, if it holds a good one (a bad one is
    /// logged, and counted when its authentication fails).
    fn load_cached(&self, origin: &str, sha256: &[u8; 32]) -> Option<wasmtime::component::Component> {
        let cache = self.cache.as_ref()?;
        match cache.load(&self.engine, sha256) {
            Ok(found) => found,
            Err(e) => {
                if matches!(e, CacheError::Tampered { .. }) {
                    self.cache_refused.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(origin = %origin, error = %e, "compiled plugin cache entry not used; compiling");
                None
            }
        }
    }

    /// Cached artifacts refused because their authentication failed (then recompiled).
    pub fn cache_refusals(&self) -> u64 {
        self.cache_refused.load(Ordering::Relaxed)
    }

    /// The compiled cache, when one is configured.
    pub fn cache(&self) -> Option<&CompiledCache> {
        self.cache.as_deref()
    }

    fn check_signature(&self, origin: &str, sha256: &[u8; 32], signature: Option<&[u8]>) -> Result<Trust, LoadError> {
        if self.pinned.contains(sha256) {
            return Ok(Trust::Pinned);
        }
        let outcome = match signature {
            None => Err(None),
            Some(sig) => signing::decode_signature_file(sig)
                .and_then(|file| signing::verify_file_digest(&self.trusted, sha256, &file).map(|i| (i, file.identity)))
                .map(|(i, identity)| (self.trusted.get(i).map(signing::key_id).unwrap_or_default(), identity))
                .map_err(|e| Some(e.to_string())),
        };
        match outcome {
            Ok((key_id, identity)) => {
                if identity.is_none() {
                    tracing::warn!(
                        origin,
                        "plugin signed with an old v1 signature, which does not bind its name and version: re-sign it (`wedsync-agent plugin sign`)"
                    );
                }
                Ok(Trust::Signed { key_id, identity })
            }
            Err(None) if self.allow_unsigned => {
                tracing::warn!(origin, "loading an UNSIGNED plugin (plugins.allow_unsigned = true)");
                Ok(Trust::Unsigned)
            }
            Err(Some(reason)) if self.allow_unsigned => {
                tracing::warn!(origin, reason = %reason, "loading a plugin whose signature does NOT verify (plugins.allow_unsigned = true)");
                Ok(Trust::BadSignature { reason })
            }
            Err(None) => Err(LoadError::Unsigned { origin: origin.to_string() }),
            Err(Some(reason)) => Err(LoadError::BadSignature { origin: origin.to_string(), reason }),
        }
    }
}

/// `wasi:*@0.2.*`, and the policy package's own interfaces.
fn import_allowed(name: &str) -> bool {
    if let Some(rest) = name.strip_prefix("wasi:") {
        return rest.split_once('@').is_some_and(|(_, version)| version.starts_with("0.2."));
    }
    matches!(name.split_once('@'), Some(("wedsync:policy/log" | "wedsync:policy/types", v)) if v.starts_with("0.1."))
}

/// wasmtime's message with its causes, one line.
pub(crate) fn error_text(e: &wasmtime::Error) -> String {
    let mut text = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        if text.len() > 1024 {
            break;
        }
    }
    text
}

/// One live instance of a plugin: its store and bindings.
struct Live {
    store: Store<PluginCtx>,
    policy: Exports,
}

/// The parts of the host that plugin calls use.
struct Runtime {
    loader: Loader,
    ticker: Ticker,
    budget: Duration,
    setup_budget: Duration,
    memory_limit: usize,
    table_elements: usize,
    max_output_entries: usize,
    max_output_bytes: usize,
    quarantine: QuarantinePolicy,
    log_rate: LogRate,
}

impl Runtime {
    fn new_store(&self, log: &Arc<PluginLog>) -> Store<PluginCtx> {
        let mut store =
            Store::new(&self.loader.engine, PluginCtx::new(Arc::clone(log), self.memory_limit, self.table_elements));
        store.limiter(|ctx| &mut ctx.limiter);
        store.epoch_deadline_trap();
        store
    }

    /// Runs `f` on `store` under `budget`.
    fn guarded<R>(
        &self,
        store: &mut Store<PluginCtx>,
        budget: Duration,
        otherwise: FailureKind,
        f: impl FnOnce(&mut Store<PluginCtx>) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        store.set_epoch_deadline(1);
        store.data_mut().limiter.hit = false;
        let armed = self.ticker.arm(Instant::now() + budget);
        let result = f(store);
        drop(armed);
        result.map_err(|e| classify(&e, store.data().limiter.hit, otherwise, budget))
    }

    fn instantiate(&self, pre: &TypedPolicyPre, log: &Arc<PluginLog>) -> Result<Live, CallFailure> {
        let mut store = self.new_store(log);
        let policy = self.guarded(&mut store, self.setup_budget, FailureKind::Instantiate, |s| pre.instantiate(s))?;
        Ok(Live { store, policy })
    }

    fn configure(&self, live: &mut Live, setup: &Setup) -> Result<Result<(), String>, CallFailure> {
        let Live { store, policy } = live;
        self.guarded(store, self.setup_budget, FailureKind::Trap, |s| policy.call_configure(s, setup))
    }

    /// A fresh, configured instance (after a failure), or why not.
    fn restart(&self, pre: &TypedPolicyPre, log: &Arc<PluginLog>, setup: &Setup) -> Result<Live, CallFailure> {
        let mut live = self.instantiate(pre, log)?;
        match self.configure(&mut live, setup)? {
            Ok(()) => Ok(live),
            Err(message) => {
                Err(CallFailure::new(FailureKind::Instantiate, format!("configure refused its config: {message}")))
            }
        }
    }

    /// Instantiates, describes and configures a plugin for installation.
    fn start(
        &self,
        pre: &TypedPolicyPre,
        log: &Arc<PluginLog>,
        setup: &Setup,
        origin: &str,
    ) -> Result<(Live, PluginInfo), LoadError> {
        let start_err = |stage, failure| LoadError::Start { origin: origin.to_string(), stage, failure };
        let mut live = self.instantiate(pre, log).map_err(|f| start_err("instantiate", f))?;
        let info = {
            let Live { store, policy } = &mut live;
            self.guarded(store, self.setup_budget, FailureKind::Trap, |s| policy.call_describe(s))
                .map_err(|f| start_err("describe", f))?
        };
        check_info(&info).map_err(|reason| LoadError::BadInfo { origin: origin.to_string(), reason })?;
        log.set_name(Arc::from(info.name.as_str()));
        let configure_err = |message: String| LoadError::Configure {
            name: info.name.clone(),
            origin: origin.to_string(),
            message: {
                let mut m = message;
                crate::error::truncate_utf8(&mut m, 1024);
                m
            },
        };
        match self.configure(&mut live, setup) {
            Ok(Ok(())) => Ok((live, info)),
            Ok(Err(message)) => Err(configure_err(message)),
            Err(failure) => Err(configure_err(failure.to_string())),
        }
    }

    fn check_verdict(&self, v: &Verdict, pools: usize) -> Result<(), CallFailure> {
        let entries = v.adjustments.len() + v.vetoes.len() + v.cache_hints.len();
        if entries > self.max_output_entries {
            return Err(CallFailure::new(
                FailureKind::OutputTooLarge,
                format!("verdict has {entries} entries, more than the {} allowed", self.max_output_entries),
            ));
        }
        let bytes: usize = v
            .vetoes
            .iter()
            .map(|veto| {
                veto.reason.len()
                    + match &veto.target {
                        VetoTarget::Failover(id) => id.len(),
                        _ => 0,
                    }
            })
            .chain(v.cache_hints.iter().map(|h| h.key.len()))
            .sum();
        if bytes > self.max_output_bytes {
            return Err(CallFailure::new(
                FailureKind::OutputTooLarge,
                format!("verdict has {bytes} string bytes, more than the {} allowed", self.max_output_bytes),
            ));
        }
        let bad = |what: String| Err(CallFailure::new(FailureKind::BadOutput, what));
        for a in &v.adjustments {
            let pool = match a {
                Adjustment::RaiseTarget(u)
                | Adjustment::LowerTarget(u)
                | Adjustment::PrescaleFloor(u)
                | Adjustment::SpotCap(u) => u.pool,
                Adjustment::Admit(c) => {
                    if !(c.admit.is_finite() && (0.0..=1.0).contains(&c.admit)) {
                        return bad(format!("admission {} for pool {} is not in [0, 1]", c.admit, c.pool));
                    }
                    c.pool
                }
            };
            if pool as usize >= pools {
                return bad(format!("adjustment names pool {pool}; there are {pools} pools"));
            }
        }
        for veto in &v.vetoes {
            if let VetoTarget::ScaleDown(p) | VetoTarget::ScaleUp(p) | VetoTarget::Placement(p) = veto.target
                && p as usize >= pools
            {
                return bad(format!("veto names pool {p}; there are {pools} pools"));
            }
        }
        for h in &v.cache_hints {
            if h.key.is_empty() || h.key.len() > MAX_CACHE_KEY {
                return bad(format!("cache key of {} bytes (1 to {MAX_CACHE_KEY} allowed)", h.key.len()));
            }
        }
        Ok(())
    }
}

/// Tells a timeout, a memory-limit hit and a trap apart.
fn classify(e: &wasmtime::Error, limit_hit: bool, otherwise: FailureKind, budget: Duration) -> CallFailure {
    if limit_hit || e.downcast_ref::<LimitExceeded>().is_some() {
        let detail = e.downcast_ref::<LimitExceeded>().map(|l| l.0.clone()).unwrap_or_else(|| error_text(e));
        return CallFailure::new(FailureKind::Memory, detail);
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            CallFailure::new(FailureKind::Timeout, format!("interrupted after its {budget:?} budget"))
        }
        Some(_) => CallFailure::new(FailureKind::Trap, error_text(e)),
        None => CallFailure::new(otherwise, error_text(e)),
    }
}

/// Names are `[a-z0-9-]{1,64}`; versions 1 to 64 printable ASCII characters.
fn check_info(info: &PluginInfo) -> Result<(), String> {
    let name_ok = !info.name.is_empty()
        && info.name.len() <= 64
        && info.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(format!("name {:?} is not 1 to 64 of [a-z0-9-]", truncated(&info.name)));
    }
    if info.version.is_empty() || info.version.len() > 64 || !info.version.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("version {:?} is not 1 to 64 printable ASCII characters", truncated(&info.version)));
    }
    Ok(())
}

fn truncated(s: &str) -> String {
    let mut s = s.to_string();
    crate::error::truncate_utf8(&mut s, 80);
    s
}

/// Wants this round: every round with `decide`, rounds with failovers with `failover`.
fn wants(hooks: Hooks, round: &Round) -> bool {
    hooks.contains(Hooks::DECIDE) || (hooks.contains(Hooks::FAILOVER) && !round.failovers.is_empty())
}

/// One installed plugin.
struct Plugin {
    name: Arc<str>,
    version: Arc<str>,
    sha_hex: Arc<str>,
    origin: String,
    info: PluginInfo,
    trust: Trust,
    pre: TypedPolicyPre,
    setup: Setup,
    log: Arc<PluginLog>,
    live: Option<Live>,
    calls: u64,
    failures: FailureCounts,
    last_failure: Option<CallFailure>,
    times: Option<Histogram<u32>>,
    recent: VecDeque<Timestamp>,
    quarantined_until: Option<Timestamp>,
    quarantines: u32,
    level: u32,
    last_release: Option<Timestamp>,
}

fn new_histogram() -> Option<Histogram<u32>> {
    // 1 ns to 100 s, 2 significant digits: a few KiB per plugin (valid bounds: never `None`).
    Histogram::new_with_bounds(1, 100_000_000_000, 2).ok()
}

impl Plugin {
    /// Counts a failure, discards the instance, and quarantines after too many.
    fn fail(&mut self, now: Timestamp, failure: &CallFailure, policy: &QuarantinePolicy) -> Option<Timestamp> {
        self.live = None;
        self.failures.add(failure.kind);
        self.last_failure = Some(failure.clone());
        while self.recent.front().is_some_and(|t| now.saturating_since(*t) >= policy.window) {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        tracing::warn!(
            target: "wedsync_plugin",
            plugin = &*self.name,
            version = &*self.version,
            kind = failure.kind.as_str(),
            error = %failure.message,
            "plugin call failed; its instance is discarded"
        );
        if self.recent.len() < policy.failures as usize {
            return None;
        }
        if self.last_release.is_some_and(|r| now.saturating_since(r) >= policy.max_backoff) {
            self.level = 0;
        }
        let factor = 1u32.checked_shl(self.level.min(31)).unwrap_or(u32::MAX);
        let backoff = policy.initial_backoff.saturating_mul(factor).min(policy.max_backoff);
        let until = now.saturating_add(backoff);
        self.level = self.level.saturating_add(1);
        self.quarantines = self.quarantines.saturating_add(1);
        self.quarantined_until = Some(until);
        self.recent.clear();
        tracing::error!(
            target: "wedsync_plugin",
            plugin = &*self.name,
            version = &*self.version,
            failures = policy.failures,
            window = ?policy.window,
            backoff = ?backoff,
            "plugin quarantined after repeated failures"
        );
        Some(until)
    }

    fn status(&self) -> PluginStatus {
        let q = |q: f64| {
            self.times.as_ref().filter(|h| !h.is_empty()).map(|h| Duration::from_nanos(h.value_at_quantile(q)))
        };
        let state = if self.quarantined_until.is_some() {
            PluginState::Quarantined
        } else if self.live.is_none() && self.last_failure.is_some() {
            PluginState::Failed
        } else {
            PluginState::Active
        };
        PluginStatus {
            name: self.name.to_string(),
            version: self.version.to_string(),
            description: self.info.description.clone(),
            hooks: self.info.hooks,
            sha256: self.sha_hex.to_string(),
            origin: self.origin.clone(),
            trust: self.trust.clone(),
            state,
            calls: self.calls,
            failures: self.failures,
            last_failure: self.last_failure.clone(),
            p50: q(0.5),
            p99: q(0.99),
            quarantined_until: self.quarantined_until,
            quarantines: self.quarantines,
            log_lines: self.log.written(),
            log_dropped: self.log.dropped(),
        }
    }
}

/// An instance outside the plugin table (no quarantine, no stats): for tools and benchmarks.
pub struct DetachedInstance {
    live: Live,
}

impl std::fmt::Debug for DetachedInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedInstance").finish_non_exhaustive()
    }
}

/// The plugin host. Its calls are synchronous and bounded by the call budget: run it on a
/// dedicated thread, never on an async reactor.
pub struct PluginHost {
    rt: Runtime,
    plugins: Vec<Plugin>,
    allow_rollback: bool,
}

/// Orders two versions: dot-separated numeric parts compare as numbers (`1.10` after `1.9`; a
/// leading `v` and anything from `-` or `+` on are ignored), otherwise as text.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn numeric(v: &str) -> Option<Vec<u64>> {
        let core = v.strip_prefix('v').unwrap_or(v);
        let core = core.split(['-', '+']).next().unwrap_or(core);
        core.split('.').map(|part| part.parse().ok()).collect()
    }
    match (numeric(a), numeric(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("plugins", &self.plugins.iter().map(|p| &*p.name).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The engine configuration the host uses.
pub(crate) fn engine_config(settings: &HostSettings) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    let n = settings.max_instances;
    pool.total_component_instances(n)
        // A Rust component has 2-3 core instances (its module, shims); other toolchains more.
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n.min(64))
        .max_memory_size(settings.memory_limit)
        .table_elements(settings.table_elements)
        // A freed slot is reset in place (only its resident pages, found with PAGEMAP_SCAN on
        // Linux 6.7+) rather than decommitted: the next instantiation takes no page faults.
        .linear_memory_keep_resident(256 << 10)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        // Only for native unwinders and profilers (wasm backtraces do not need it): smaller
        // artifacts and no unwind-table registration on every load.
        .native_unwind_info(false)
        // No native-to-wasm offset map: about 10% smaller artifacts, so a warm start maps and
        // checks less; trap messages still name the wasm function, without its offset.
        .generate_address_map(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

impl PluginHost {
    /// Creates the engine (pooling allocator, epoch interruption), the WASI linker, the epoch
    /// ticker and, when configured, the compiled cache.
    pub fn new(settings: HostSettings) -> Result<PluginHost, HostError> {
        let setting = |field, reason: &str| Err(HostError::Setting { field, reason: reason.to_string() });
        if settings.call_budget.is_zero() {
            return setting("call_budget", "must be more than zero");
        }
        if settings.setup_budget.is_zero() {
            return setting("setup_budget", "must be more than zero");
        }
        if settings.memory_limit < 64 << 10 {
            return setting("memory_limit", "must be at least one 64 KiB page");
        }
        if settings.max_instances == 0 {
            return setting("max_instances", "must be at least 1");
        }
        let engine = Engine::new(&engine_config(&settings)).map_err(|e| HostError::Engine(error_text(&e)))?;
        let mut linker = Linker::<PluginCtx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| HostError::Link(error_text(&e)))?;
        Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |ctx| ctx).map_err(|e| HostError::Link(error_text(&e)))?;
        let cache = match &settings.cache_dir {
            Some(dir) => Some(Arc::new(CompiledCache::open(dir, &engine)?)),
            None => None,
        };
        let ticker = Ticker::start(engine.clone()).map_err(HostError::Ticker)?;
        let loader = Loader {
            engine,
            linker: Arc::new(linker),
            cache,
            trusted: settings.trusted_keys.clone().into(),
            pinned: settings.pinned_digests.clone().into(),
            allow_unsigned: settings.allow_unsigned,
            max_component_size: settings.max_component_size,
            cache_refused: Arc::new(AtomicU64::new(0)),
            external: settings.external_compiler.clone(),
        };
        Ok(PluginHost {
            rt: Runtime {
                loader,
                ticker,
                budget: settings.call_budget,
                setup_budget: settings.setup_budget,
                memory_limit: settings.memory_limit,
                table_elements: settings.table_elements,
                max_output_entries: settings.max_output_entries,
                max_output_bytes: settings.max_output_bytes,
                quarantine: settings.quarantine,
                log_rate: settings.log_rate,
            },
            plugins: Vec::new(),
            allow_rollback: settings.allow_rollback,
        })
    }

    /// A loader that prepares plugins on another thread.
    pub fn loader(&self) -> Loader {
        self.rt.loader.clone()
    }

    /// The engine (for [`Inspection`]s and tools).
    pub fn engine(&self) -> &Engine {
        &self.rt.loader.engine
    }

    /// Same as [`Loader::prepare`].
    pub fn prepare(&self, source: PluginSource, config_json: &str) -> Result<Prepared, LoadError> {
        self.rt.loader.prepare(source, config_json)
    }

    /// Instantiates a prepared plugin, calls `describe`, then `configure` with `setup` (whose
    /// `config` is replaced by the plugin's own config given to `prepare`), and installs it.
    /// A plugin of the same name is replaced at once (at its place in the call order) only
    /// when all this succeeds; otherwise the old one stays.
    pub fn install(&mut self, prepared: Prepared, setup: &Setup) -> Result<Installed, LoadError> {
        if !Engine::same(prepared.pre.engine(), &self.rt.loader.engine) {
            return Err(LoadError::ForeignPrepared { origin: prepared.origin });
        }
        let Prepared { origin, sha256, pre, config, trust, .. } = prepared;
        let mut setup = setup.clone();
        setup.config = config;
        let log = PluginLog::new(Arc::from(origin.as_str()), self.rt.log_rate);
        let (live, info) = self.rt.start(&pre, &log, &setup, &origin)?;
        if let Trust::Signed { identity: Some(signed), .. } = &trust
            && (signed.name != info.name || signed.version != info.version)
        {
            return Err(LoadError::NotAsSigned {
                origin,
                signed: format!("{} {}", signed.name, signed.version),
                described: format!("{} {}", info.name, info.version),
            });
        }
        let older = self
            .plugins
            .iter()
            .find(|p| *p.name == *info.name)
            .filter(|old| version_order(&info.version, &old.version) == std::cmp::Ordering::Less)
            .map(|old| old.version.to_string());
        if let Some(loaded) = &older
            && !self.allow_rollback
        {
            return Err(LoadError::Rollback {
                origin,
                name: info.name.clone(),
                version: info.version.clone(),
                loaded: loaded.clone(),
            });
        }
        let sha_hex = hex::encode(sha256);
        let plugin = Plugin {
            name: Arc::from(info.name.as_str()),
            version: Arc::from(info.version.as_str()),
            sha_hex: Arc::from(sha_hex.as_str()),
            origin,
            trust,
            pre,
            setup,
            log,
            live: Some(live),
            calls: 0,
            failures: FailureCounts::default(),
            last_failure: None,
            times: new_histogram(),
            recent: VecDeque::new(),
            quarantined_until: None,
            quarantines: 0,
            level: 0,
            last_release: None,
            info,
        };
        let installed = Installed {
            name: plugin.name.to_string(),
            version: plugin.version.to_string(),
            sha256: sha_hex,
            replaced: None,
            rolled_back: older.is_some(),
        };
        tracing::info!(
            target: "wedsync_plugin",
            plugin = &*plugin.name,
            version = &*plugin.version,
            sha256 = &*plugin.sha_hex,
            origin = %plugin.origin,
            "plugin installed"
        );
        match self.plugins.iter().position(|p| p.name == plugin.name) {
            Some(i) => {
                let old = std::mem::replace(&mut self.plugins[i], plugin);
                Ok(Installed { replaced: Some((old.version.to_string(), old.sha_hex.to_string())), ..installed })
            }
            None => {
                self.plugins.push(plugin);
                Ok(installed)
            }
        }
    }

    /// Gives a plugin a new setup (e.g. after the agent's config was reloaded; `setup.config`
    /// is its own config): a fresh instance is configured, and replaces the current one only
    /// if `configure` succeeds.
    pub fn reconfigure(&mut self, name: &str, setup: &Setup) -> Result<(), LoadError> {
        let rt = &self.rt;
        let p = self.plugins.iter_mut().find(|p| &*p.name == name).ok_or_else(|| LoadError::NotFound(name.into()))?;
        let (live, _) = rt.start(&p.pre, &p.log, setup, &p.origin)?;
        p.live = Some(live);
        p.setup = setup.clone();
        Ok(())
    }

    /// Removes a plugin; returns whether it was loaded.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.plugins.len();
        self.plugins.retain(|p| &*p.name != name);
        before != self.plugins.len()
    }

    /// Sets the call order: the plugins named here first, in this order; the others after
    /// them in their current order. Unknown names are ignored.
    pub fn set_order<S: AsRef<str>>(&mut self, order: &[S]) {
        let rank = |p: &Plugin| order.iter().position(|n| n.as_ref() == &*p.name).unwrap_or(usize::MAX);
        self.plugins.sort_by_key(rank);
    }

    /// Whether no plugin is installed.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The plugins' names in call order.
    pub fn names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.name.to_string()).collect()
    }

    /// Calls every plugin that wants this round, in order, and reports each one's verdict or
    /// failure. `now` (the caller's clock) drives quarantine. A failed plugin's instance is
    /// discarded (re-instantiated on its next call) and the round goes on without it.
    pub fn decide(&mut self, now: Timestamp, round: &Round) -> RoundReport {
        debug_assert!(round.pools.is_consistent(), "a pool table with columns of different lengths");
        let rt = &self.rt;
        let mut report = RoundReport { outcomes: Vec::with_capacity(self.plugins.len()), skipped: Vec::new() };
        for p in &mut self.plugins {
            if let Some(until) = p.quarantined_until {
                if now < until {
                    report
                        .skipped
                        .push(Skipped { name: Arc::clone(&p.name), reason: SkipReason::Quarantined { until } });
                    continue;
                }
                p.quarantined_until = None;
                p.last_release = Some(now);
                tracing::info!(target: "wedsync_plugin", plugin = &*p.name, "plugin released from quarantine");
            }
            if !wants(p.info.hooks, round) {
                report.skipped.push(Skipped { name: Arc::clone(&p.name), reason: SkipReason::NotHooked });
                continue;
            }
            let start = Instant::now();
            let result = call_decide(rt, p, round);
            let elapsed = start.elapsed();
            p.calls = p.calls.saturating_add(1);
            if let Some(h) = &mut p.times {
                h.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1));
            }
            let quarantined_until = match &result {
                Ok(_) => None,
                Err(failure) => p.fail(now, failure, &rt.quarantine),
            };
            report.outcomes.push(PluginOutcome {
                name: Arc::clone(&p.name),
                version: Arc::clone(&p.version),
                sha256: Arc::clone(&p.sha_hex),
                result,
                elapsed,
                quarantined_until,
            });
        }
        report
    }

    /// Every plugin's status, in call order.
    pub fn plugins(&self) -> Vec<PluginStatus> {
        self.plugins.iter().map(Plugin::status).collect()
    }

    /// One plugin's status.
    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        self.plugins.iter().find(|p| &*p.name == name).map(Plugin::status)
    }

    /// Epoch interruptions made so far (calls stopped at their deadline).
    pub fn interruptions(&self) -> u64 {
        self.rt.ticker.fired()
    }

    /// Compiles a component and tells what it is: size, SHA-256, imports (and which are
    /// refused), exports, whether it fits the policy world and, if so, what `describe` says
    /// (called in a sandboxed instance under the usual budget). No signature check.
    pub fn inspect(&self, bytes: &[u8]) -> Result<Inspection, LoadError> {
        let engine = &self.rt.loader.engine;
        let origin = "inspect";
        let component = wasmtime::component::Component::from_binary(engine, bytes)
            .map_err(|e| LoadError::Compile { origin: origin.into(), reason: error_text(&e) })?;
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let forbidden_imports = imports.iter().filter(|n| !import_allowed(n)).cloned().collect();
        let exports = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        let mut inspection = Inspection {
            size: bytes.len(),
            sha256: hex::encode(signing::sha256(bytes)),
            imports,
            forbidden_imports,
            exports,
            world: Ok(()),
            info: None,
            describe_error: None,
        };
        if !inspection.forbidden_imports.is_empty() {
            inspection.world =
                Err(format!("imports {} that the host refuses", inspection.forbidden_imports.join(", ")));
            return Ok(inspection);
        }
        match self.rt.loader.linker.instantiate_pre(&component).and_then(TypedPolicyPre::new) {
            Err(e) => inspection.world = Err(error_text(&e)),
            Ok(pre) => {
                let log = PluginLog::new(Arc::from(origin), self.rt.log_rate);
                match self.rt.instantiate(&pre, &log) {
                    Err(f) => inspection.describe_error = Some(format!("instantiate: {f}")),
                    Ok(mut live) => {
                        let Live { store, policy } = &mut live;
                        match self
                            .rt
                            .guarded(store, self.rt.setup_budget, FailureKind::Trap, |s| policy.call_describe(s))
                        {
                            Ok(info) => inspection.info = Some(info),
                            Err(f) => inspection.describe_error = Some(format!("describe: {f}")),
                        }
                    }
                }
            }
        }
        Ok(inspection)
    }

    /// Instantiates and configures a prepared plugin outside the plugin table: for tools
    /// and benchmarks (e.g. instantiation cost, many resident instances).
    pub fn instantiate_detached(&self, prepared: &Prepared, setup: &Setup) -> Result<DetachedInstance, LoadError> {
        if !Engine::same(prepared.pre.engine(), &self.rt.loader.engine) {
            return Err(LoadError::ForeignPrepared { origin: prepared.origin.clone() });
        }
        let log = PluginLog::new(Arc::from(prepared.origin.as_str()), self.rt.log_rate);
        let mut setup = setup.clone();
        setup.config = prepared.config.clone();
        let (live, _) = self.rt.start(&prepared.pre, &log, &setup, &prepared.origin)?;
        Ok(DetachedInstance { live })
    }

    /// Instantiates a prepared plugin without calling anything in it (the cost of
    /// instantiation from its `InstancePre` alone).
    pub fn instantiate_bare(&self, prepared: &Prepared) -> Result<DetachedInstance, CallFailure> {
        if !Engine::same(prepared.pre.engine(), &self.rt.loader.engine) {
            return Err(CallFailure::new(FailureKind::Instantiate, "prepared by another plugin host"));
        }
        let log = PluginLog::new(Arc::from(prepared.origin.as_str()), self.rt.log_rate);
        Ok(DetachedInstance { live: self.rt.instantiate(&prepared.pre, &log)? })
    }

    /// Calls `decide` on a detached instance under the usual budget and output checks
    /// (`pools`: how many pools its setup had).
    pub fn call_detached(
        &self,
        instance: &mut DetachedInstance,
        round: &Round,
        pools: usize,
    ) -> Result<Verdict, CallFailure> {
        if !Engine::same(instance.live.store.engine(), &self.rt.loader.engine) {
            return Err(CallFailure::new(FailureKind::Trap, "instance of another plugin host"));
        }
        let Live { store, policy } = &mut instance.live;
        let verdict = self.rt.guarded(store, self.rt.budget, FailureKind::Trap, |s| policy.call_decide(s, round))?;
        self.rt.check_verdict(&verdict, pools)?;
        Ok(verdict)
    }
}

fn call_decide(rt: &Runtime, p: &mut Plugin, round: &Round) -> Result<Verdict, CallFailure> {
    let live = match &mut p.live {
        Some(live) => live,
        None => p.live.insert(rt.restart(&p.pre, &p.log, &p.setup)?),
    };
    let Live { store, policy } = live;
    let verdict = rt.guarded(store, rt.budget, FailureKind::Trap, |s| policy.call_decide(s, round))?;
    rt.check_verdict(&verdict, p.setup.pools.len())?;
    Ok(verdict)
}

/// Compiles `bytes` in a small host of its own and inspects it (see
/// [`PluginHost::inspect`]).
pub fn inspect(bytes: &[u8]) -> Result<Inspection, LoadError> {
    let host = PluginHost::new(HostSettings { max_instances: 2, ..HostSettings::default() })
        .map_err(|e| LoadError::Compile { origin: "inspect".into(), reason: e.to_string() })?;
    host.inspect(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _assert_send() {
        fn is_send<T: Send>() {}
        fn is_send_sync<T: Send + Sync>() {}
        is_send::<Prepared>();
        is_send_sync::<Loader>();
        is_send::<PluginHost>();
    }

    #[test]
    fn import_names() {
        assert!(import_allowed("wasi:cli/environment@0.2.0"));
        assert!(import_allowed("wasi:io/streams@0.2.6"));
        assert!(import_allowed("wedsync:policy/log@0.1.0"));
        assert!(import_allowed("wedsync:policy/types@0.1.0"));
        assert!(!import_allowed("wasi:cli/environment@0.3.0"));
        assert!(!import_allowed("wasi:cli/environment"));
        assert!(!import_allowed("wedsync:policy/log"));
        assert!(!import_allowed("wedsync:policy/secrets@0.1.0"));
        assert!(!import_allowed("evil:net/socket@1.0.0"));
        assert!(!import_allowed("env"));
    }

    #[test]
    fn plugin_info_checks() {
        let info = |name: &str, version: &str| PluginInfo {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            hooks: Hooks::DECIDE,
        };
        assert!(check_info(&info("cost-guard", "1.0.0")).is_ok());
        assert!(check_info(&info("Cost", "1.0.0")).is_err());
        assert!(check_info(&info("", "1.0.0")).is_err());
        assert!(check_info(&info("a", "")).is_err());
        assert!(check_info(&info("a", "1 0")).is_err());
        assert!(check_info(&info(&"a".repeat(65), "1")).is_err());
    }

    #[test]
    fn hooks_choose_the_rounds() {
        use crate::policy::{Failover, MetricsSummary, PoolTable};
        let mut round = Round {
            epoch: 1,
            unix_ms: 0,
            utc_offset_minutes: 0,
            metrics: MetricsSummary { cpu_utilization: 0.0, memory_utilization: 0.0, samples_per_second: 0.0 },
            pools: PoolTable::with_capacity(0),
            weddings: vec![],
            fleet: None,
            failovers: vec![],
        };
        assert!(wants(Hooks::DECIDE, &round));
        assert!(!wants(Hooks::FAILOVER, &round));
        assert!(!wants(Hooks::empty(), &round));
        round.failovers.push(Failover {
            id: "f".into(),
            failed_region: "a".into(),
            target_region: "b".into(),
            load: 1.0,
            pool: None,
        });
        assert!(wants(Hooks::FAILOVER, &round));
        assert!(wants(Hooks::DECIDE | Hooks::FAILOVER, &round));
    }

    #[test]
    fn engine_builds_with_defaults() {
        let host = PluginHost::new(HostSettings::default());
        assert!(host.is_ok(), "{host:?}");
        assert!(PluginHost::new(HostSettings { call_budget: Duration::ZERO, ..HostSettings::default() }).is_err());
    }
}
