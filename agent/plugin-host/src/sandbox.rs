//! What a plugin's store holds: WASI 0.2 with no capabilities, the memory limiter, and the
//! rate-limited log that the `wedsync:policy/log` import, stdout and stderr write to.

use crate::policy::wedsync::policy::log as wit_log;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Longest log line kept (longer ones are cut).
const MAX_LINE: usize = 1024;

/// How many log lines a plugin may write: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogRate {
    /// Lines that may be written at once after a quiet spell.
    pub burst: u32,
    /// Lines per second sustained.
    pub per_second: f64,
}

impl Default for LogRate {
    /// 20 lines at once, 10 a second sustained.
    fn default() -> Self {
        LogRate { burst: 20, per_second: 10.0 }
    }
}

struct Bucket {
    /// The plugin's name (its origin until `describe` names it).
    name: Arc<str>,
    tokens: f64,
    last: Instant,
    /// Lines dropped since the last one written (reported with the next one).
    dropped_since: u64,
}

/// One plugin's log: shared by its successive stores, so re-instantiation does not reset the
/// rate limit.
pub(crate) struct PluginLog {
    rate: LogRate,
    bucket: Mutex<Bucket>,
    written: AtomicU64,
    dropped: AtomicU64,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    Log,
    Stdout,
    Stderr,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Log => "log",
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
        }
    }
}

impl PluginLog {
    pub(crate) fn new(name: Arc<str>, rate: LogRate) -> Arc<Self> {
        Arc::new(PluginLog {
            rate,
            bucket: Mutex::new(Bucket { name, tokens: f64::from(rate.burst), last: Instant::now(), dropped_since: 0 }),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Names the plugin (once `describe` said its name).
    pub(crate) fn set_name(&self, name: Arc<str>) {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner()).name = name;
    }

    /// Lines written to the agent's log.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Lines dropped by the rate limit.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes one line under the plugin's name, unless the rate limit drops it.
    pub(crate) fn line(&self, level: wit_log::Level, source: Source, message: &str) {
        let (name, dropped_before) = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.saturating_duration_since(b.last).as_secs_f64() * self.rate.per_second;
            b.tokens = (b.tokens + refill).min(f64::from(self.rate.burst));
            b.last = now;
            if b.tokens < 1.0 {
                b.dropped_since = b.dropped_since.saturating_add(1);
                drop(b);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            b.tokens -= 1.0;
            (Arc::clone(&b.name), std::mem::take(&mut b.dropped_since))
        };
        self.written.fetch_add(1, Ordering::Relaxed);
        let mut end = message.len().min(MAX_LINE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        let plugin = &*name;
        let stream = source.as_str();
        if dropped_before > 0 {
            tracing::warn!(target: "wedsync_plugin", plugin, dropped = dropped_before, "plugin log rate limit dropped lines");
        }
        match level {
            wit_log::Level::Trace => tracing::trace!(target: "wedsync_plugin", plugin, stream, "{message}"),
            wit_log::Level::Debug => tracing::debug!(target: "wedsync_plugin", plugin, stream, "{message}"),
            wit_log::Level::Info => tracing::info!(target: "wedsync_plugin", plugin, stream, "{message}"),
            wit_log::Level::Warn => tracing::warn!(target: "wedsync_plugin", plugin, stream, "{message}"),
            wit_log::Level::Error => tracing::error!(target: "wedsync_plugin", plugin, stream, "{message}"),
        }
    }
}

/// Refuses linear-memory and table growth past the caps; a refusal traps the call with
/// [`LimitExceeded`] so the host can tell it from other traps.
pub(crate) struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    pub(crate) hit: bool,
}

/// The error a [`Limiter`] refusal traps with.
#[derive(Debug)]
pub(crate) struct LimitExceeded(pub(crate) String);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitExceeded {}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Err(wasmtime::Error::new(LimitExceeded(format!(
                "linear memory would grow from {current} to {desired} bytes, past the cap of {} bytes",
                self.memory_bytes
            ))));
        }
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = true;
            return Err(wasmtime::Error::new(LimitExceeded(format!(
                "table would grow from {current} to {desired} elements, past the cap of {}",
                self.table_elements
            ))));
        }
        Ok(true)
    }
}

/// A plugin store's data.
pub(crate) struct PluginCtx {
    /// Built on first use: well-behaved plugins never call WASI, and building a context on
    /// every (re-)instantiation would cost more than the instantiation's own bookkeeping.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    log: Arc<PluginLog>,
}

impl PluginCtx {
    pub(crate) fn new(log: Arc<PluginLog>, memory_bytes: usize, table_elements: usize) -> Self {
        PluginCtx {
            wasi: None,
            table: ResourceTable::new(),
            limiter: Limiter { memory_bytes, table_elements, hit: false },
            log,
        }
    }
}

/// WASI 0.2 with no capabilities: no files, sockets, environment or arguments; frozen clocks;
/// stdout and stderr go to the plugin's log.
fn capability_free_wasi(log: &Arc<PluginLog>) -> WasiCtx {
    let mut b = WasiCtxBuilder::new();
    b.stdout(LogPipe { log: Arc::clone(log), source: Source::Stdout })
        .stderr(LogPipe { log: Arc::clone(log), source: Source::Stderr })
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .insecure_random_seed(0);
    b.build()
}

impl WasiView for PluginCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let log = &self.log;
        let ctx = self.wasi.get_or_insert_with(|| capability_free_wasi(log));
        WasiCtxView { ctx, table: &mut self.table }
    }
}

impl wit_log::Host for PluginCtx {
    fn log(&mut self, level: wit_log::Level, message: String) {
        self.log.line(level, Source::Log, &message);
    }
}

impl crate::policy::wedsync::policy::types::Host for PluginCtx {}

/// Plugins have no clock: both WASI clocks read zero (decisions stay replayable).
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A plugin's stdout or stderr: lines go to its log.
struct LogPipe {
    log: Arc<PluginLog>,
    source: Source,
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter { log: Arc::clone(&self.log), source: self.source, buf: Vec::new() })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 uses this; the host links WASIp2 alone.
        wasmtime_wasi::p2::pipe::SinkOutputStream.async_stream()
    }
}

/// Buffers a stream's bytes into lines.
struct LineWriter {
    log: Arc<PluginLog>,
    source: Source,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let level = match self.source {
            Source::Stderr => wit_log::Level::Warn,
            _ => wit_log::Level::Info,
        };
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.is_empty() {
            self.log.line(level, self.source, text);
        }
        self.buf.clear();
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            if self.buf.len() < MAX_LINE {
                let room = MAX_LINE - self.buf.len();
                self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            if chunk.ends_with(b"\n") {
                self.emit();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_drops_and_counts() {
        let log = PluginLog::new("t".into(), LogRate { burst: 3, per_second: 0.0 });
        for _ in 0..10 {
            log.line(wit_log::Level::Info, Source::Log, "hello");
        }
        assert_eq!(log.written(), 3);
        assert_eq!(log.dropped(), 7);
    }

    #[test]
    fn line_writer_splits_lines_and_caps_length() {
        let log = PluginLog::new("t".into(), LogRate { burst: 100, per_second: 0.0 });
        let mut w = LineWriter { log: Arc::clone(&log), source: Source::Stdout, buf: Vec::new() };
        w.write(Bytes::from_static(b"one\ntwo\nthr")).ok();
        assert_eq!(log.written(), 2);
        w.write(Bytes::from(vec![b'x'; 10_000])).ok();
        assert!(w.buf.len() <= MAX_LINE);
        drop(w);
        assert_eq!(log.written(), 3);
    }

    #[test]
    fn wasi_is_built_on_first_use_only() {
        let mut ctx = PluginCtx::new(PluginLog::new("t".into(), LogRate::default()), 1 << 20, 10);
        assert!(ctx.wasi.is_none());
        let _ = ctx.ctx();
        assert!(ctx.wasi.is_some());
    }

    #[test]
    fn limiter_refuses_past_the_cap() {
        let mut l = Limiter { memory_bytes: 1 << 20, table_elements: 10, hit: false };
        assert!(l.memory_growing(0, 1 << 20, None).unwrap_or(false));
        assert!(!l.hit);
        assert!(l.memory_growing(1 << 20, 2 << 20, None).is_err());
        assert!(l.hit);
    }
}
