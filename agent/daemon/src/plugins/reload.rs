//! Hot reload of the plugin directory.
//!
//! A thread of its own (`wedsync-plugin-loader`) polls `plugins.dir` every
//! `plugins.watch_interval` with a cheap fingerprint (name, length and mtime of each `*.wasm`
//! and `*.wasm.sig`). Only when that changes, or when `POST /v1/plugins/reload` asks, it reads
//! the files, skips those whose content (component and signature) it already staged, and
//! verifies and compiles the others with the host's [`Loader`]. The pass goes to the decision
//! thread, which installs it between two rounds (`PluginStage::apply_reloads`): a round in
//! flight finishes on the old version, a same-name plugin is swapped atomically, and a plugin
//! that fails to install leaves the old version in place.

use super::files::{config_name, read_dir};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use wedsync_plugin_host::policy::Setup;
use wedsync_plugin_host::{Loader, Prepared, signing};

/// What identifies a plugin file's content: the SHA-256 of its component and of its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentKey {
    component: [u8; 32],
    signature: Option<[u8; 32]>,
}

impl ContentKey {
    /// The key of a component and its optional signature.
    pub fn of(component: &[u8], signature: Option<&[u8]>) -> ContentKey {
        ContentKey { component: signing::sha256(component), signature: signature.map(signing::sha256) }
    }
}

/// One file's cheap identity, for change detection without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    name: std::ffi::OsString,
    len: u64,
    modified: Option<SystemTime>,
}

/// The directory's fingerprint: a [`Stamp`] per `*.wasm` and `*.wasm.sig`, by name; or why
/// the directory cannot be listed.
pub fn fingerprint(dir: &Path) -> Result<Vec<Stamp>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    let mut stamps: Vec<Stamp> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".wasm") || name.ends_with(".wasm.sig")
        })
        .map(|e| {
            let meta = e.metadata().ok();
            Stamp {
                name: e.file_name(),
                len: meta.as_ref().map_or(0, std::fs::Metadata::len),
                modified: meta.and_then(|m| m.modified().ok()),
            }
        })
        .collect();
    stamps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(stamps)
}

/// What one pass does with each file (pure: unit-tested).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Files to verify and compile (new or changed).
    pub stage: Vec<PathBuf>,
    /// Files whose content is unchanged.
    pub unchanged: Vec<PathBuf>,
    /// Files known before and gone now.
    pub removed: Vec<PathBuf>,
}

/// Decides a pass. `current`: the files now and their content; `seen`: what the watch last
/// staged per file; `applied`: what is installed per file; `present`: files that exist but
/// could not be read (never taken for removed). A watch pass stages what changed since it was
/// last seen; an explicit request (`explicit`) also retries whatever is not installed as is.
pub fn plan(
    current: &BTreeMap<PathBuf, ContentKey>,
    seen: &BTreeMap<PathBuf, ContentKey>,
    applied: &BTreeMap<PathBuf, ContentKey>,
    present: &BTreeSet<PathBuf>,
    explicit: bool,
) -> Plan {
    let mut plan = Plan::default();
    let baseline = if explicit { applied } else { seen };
    for (path, key) in current {
        if baseline.get(path) == Some(key) {
            plan.unchanged.push(path.clone());
        } else {
            plan.stage.push(path.clone());
        }
    }
    let known: BTreeSet<&PathBuf> = seen.keys().chain(applied.keys()).collect();
    plan.removed = known.into_iter().filter(|p| !current.contains_key(*p) && !present.contains(*p)).cloned().collect();
    plan
}

/// One file's part in a reload pass, as `/v1/plugins` and `POST /v1/plugins/reload` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileOutcome {
    /// The file.
    pub origin: String,
    /// `loaded` (new), `replaced` (a new version of a loaded plugin), `unchanged`, `refused`
    /// or `removed`.
    pub outcome: &'static str,
    /// The plugin's name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Its version, when loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its SHA-256, when loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The version and SHA-256 it replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<Replaced>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileOutcome {
    pub(super) fn new(origin: String, outcome: &'static str) -> FileOutcome {
        FileOutcome { origin, outcome, plugin: None, version: None, sha256: None, replaced: None, error: None }
    }
}

/// A version a reload replaced.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Replaced {
    /// Its version.
    pub version: String,
    /// Its SHA-256.
    pub sha256: String,
}

/// What a reload pass did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// When it was applied, Unix milliseconds.
    pub at_unix_ms: i64,
    /// `watch` or `request`.
    pub trigger: &'static str,
    /// Each plugin file's outcome.
    pub files: Vec<FileOutcome>,
}

/// A request for a reload pass; the decision thread answers on `reply` once it is applied.
#[derive(Debug)]
pub struct ReloadRequest {
    reply: tokio::sync::oneshot::Sender<ReloadReport>,
}

/// Why a reload could not be asked for.
#[derive(Debug, thiserror::Error)]
#[error("the plugin loader thread has stopped")]
pub struct LoaderStopped;

/// What the loader thread is told.
#[derive(Debug)]
enum Control {
    /// Run a pass now (`POST /v1/plugins/reload`).
    Reload(ReloadRequest),
    /// The agent is stopping: end now rather than at the next wake.
    Stop,
}

/// Asks the loader thread for a reload pass (held by the API).
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    requests: mpsc::Sender<Control>,
}

impl ReloadHandle {
    /// Asks for a pass; the receiver gets its report once the decision thread applied it.
    pub fn request(&self) -> Result<tokio::sync::oneshot::Receiver<ReloadReport>, LoaderStopped> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.send(Control::Reload(ReloadRequest { reply })).map_err(|_| LoaderStopped)?;
        Ok(answer)
    }
}

/// The running loader thread, stopped and joined when the decision thread's state drops.
pub(super) struct LoaderThread {
    /// Reload requests (cloned into each [`ReloadHandle`]) and the stop message.
    control: mpsc::Sender<Control>,
    /// Staged passes, applied between rounds.
    pub(super) passes: mpsc::Receiver<Pass>,
    thread: std::thread::JoinHandle<()>,
}

/// One file's result, from the loader thread to the decision thread.
pub(super) enum Staged {
    Prepared { path: PathBuf, key: ContentKey, prepared: Box<Prepared> },
    Refused { origin: String, error: String },
    Unchanged { origin: String },
    Removed { path: PathBuf },
}

/// A pass, ready to apply.
pub(super) struct Pass {
    pub(super) files: Vec<Staged>,
    pub(super) reply: Option<tokio::sync::oneshot::Sender<ReloadReport>>,
    /// The directory (as an origin) when it could be listed: its earlier refusal is over.
    pub(super) listed: Option<String>,
}

/// Installed content per file, shared by the decision thread (writes) and the loader (reads).
pub(super) type Applied = Arc<Mutex<BTreeMap<PathBuf, ContentKey>>>;

/// The decision thread's side of hot reload.
pub(super) struct ReloadState {
    pub(super) setup: Setup,
    pub(super) order: Vec<String>,
    pub(super) bundled: Vec<String>,
    /// The plugin each directory file installed.
    pub(super) from_dir: BTreeMap<PathBuf, String>,
    pub(super) applied: Applied,
    /// Start-time view for the loader: what it has seen per file.
    seen: BTreeMap<PathBuf, ContentKey>,
    stop: Arc<AtomicBool>,
    /// `None` until [`ReloadState::start_loader`] (and without a `plugins.dir`).
    pub(super) loader: Option<LoaderThread>,
    pub(super) count: u64,
    pub(super) last: Option<ReloadReport>,
}

impl ReloadState {
    /// `order` and `bundled` as configured: the call order after a reload follows them.
    pub(super) fn new(setup: Setup, order: Vec<String>, bundled: Vec<String>) -> ReloadState {
        ReloadState {
            setup,
            order,
            bundled,
            from_dir: BTreeMap::new(),
            applied: Arc::default(),
            seen: BTreeMap::new(),
            stop: Arc::default(),
            loader: None,
            count: 0,
            last: None,
        }
    }

    /// A directory file read at start.
    pub(super) fn seen(&mut self, path: PathBuf, key: ContentKey) {
        self.seen.insert(path, key);
    }

    /// A directory file installed at start.
    pub(super) fn installed(&mut self, path: PathBuf, key: ContentKey, name: &str) {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner).insert(path.clone(), key);
        self.from_dir.insert(path, name.to_owned());
    }

    pub(super) fn count(&self) -> u64 {
        self.count
    }

    pub(super) fn last(&self) -> Option<&ReloadReport> {
        self.last.as_ref()
    }

    /// Starts the `wedsync-plugin-loader` thread for `dir`, polled every `interval` (if any).
    pub(super) fn start_loader(
        &mut self,
        loader: Loader,
        dir: PathBuf,
        interval: Option<Duration>,
        config: BTreeMap<String, String>,
    ) -> std::io::Result<()> {
        let (control, requests) = mpsc::channel();
        let (passes, passes_rx) = mpsc::channel();
        let watcher = Watcher {
            loader,
            dir,
            interval,
            config,
            seen: std::mem::take(&mut self.seen),
            applied: self.applied.clone(),
            requests,
            passes,
            stop: self.stop.clone(),
        };
        let thread = std::thread::Builder::new().name("wedsync-plugin-loader".into()).spawn(move || watcher.run())?;
        self.loader = Some(LoaderThread { control, passes: passes_rx, thread });
        Ok(())
    }

    /// A handle for reload requests, once the loader runs.
    pub(super) fn reload_handle(&self) -> Option<ReloadHandle> {
        self.loader.as_ref().map(|l| ReloadHandle { requests: l.control.clone() })
    }
}

/// What the loader thread owns.
struct Watcher {
    loader: Loader,
    dir: PathBuf,
    interval: Option<Duration>,
    config: BTreeMap<String, String>,
    seen: BTreeMap<PathBuf, ContentKey>,
    applied: Applied,
    requests: mpsc::Receiver<Control>,
    passes: mpsc::Sender<Pass>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn run(mut self) {
        // Without a watch the thread still wakes now and then, to notice the agent stopping.
        let wait = self.interval.unwrap_or(Duration::from_millis(500));
        let mut last_fingerprint = None;
        while !self.stop.load(Ordering::Relaxed) {
            let reply = match self.requests.recv_timeout(wait) {
                Ok(Control::Reload(request)) => Some(request.reply),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                // The decision thread's state holds a sender until it drops.
                Ok(Control::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let explicit = reply.is_some();
            if !explicit && self.interval.is_none() {
                continue;
            }
            // Taken before reading: a change made while the pass reads is seen by the next poll.
            let now = fingerprint(&self.dir);
            if !explicit && last_fingerprint.as_ref() == Some(&now) {
                continue;
            }
            last_fingerprint = Some(now);
            let (files, listed) = self.pass(explicit);
            if self.stop.load(Ordering::Relaxed) {
                break; // a pass cut short by shutdown is not applied
            }
            let changed = files.iter().any(|f| !matches!(f, Staged::Unchanged { .. }));
            let listed = listed.then(|| self.dir.display().to_string());
            if (changed || explicit) && self.passes.send(Pass { files, reply, listed }).is_err() {
                break; // the decision thread has ended
            }
        }
    }

    /// Reads the directory and stages what changed (verify + compile happen here); also
    /// tells whether the directory could be listed.
    fn pass(&mut self, explicit: bool) -> (Vec<Staged>, bool) {
        let (sources, failures) = read_dir(&self.dir);
        let dir_origin = self.dir.display().to_string();
        let mut out: Vec<Staged> = Vec::new();
        let mut present = BTreeSet::new();
        for failure in failures {
            if failure.origin == dir_origin {
                // The directory cannot be listed: keep every plugin as it is.
                out.push(Staged::Refused { origin: failure.origin, error: failure.error });
                return (out, false);
            }
            present.insert(PathBuf::from(&failure.origin));
            out.push(Staged::Refused { origin: failure.origin, error: failure.error });
        }
        let current: BTreeMap<PathBuf, ContentKey> =
            sources.iter().map(|(path, s)| (path.clone(), ContentKey::of(&s.bytes, s.signature.as_deref()))).collect();
        let applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let plan = plan(&current, &self.seen, &applied, &present, explicit);
        for (path, source) in sources {
            if self.stop.load(Ordering::Relaxed) {
                break; // shutting down: compiling the rest would only delay it
            }
            let Some(key) = current.get(&path).copied() else { continue };
            // After this pass every file present is seen as it is now.
            self.seen.insert(path.clone(), key);
            if !plan.stage.contains(&path) {
                out.push(Staged::Unchanged { origin: source.origin });
                continue;
            }
            let origin = source.origin.clone();
            let config = self.config.get(&config_name(&origin)).map_or("{}", String::as_str);
            match self.loader.prepare(source, config) {
                Ok(prepared) => out.push(Staged::Prepared { path, key, prepared: Box::new(prepared) }),
                Err(e) => out.push(Staged::Refused { origin, error: e.to_string() }),
            }
        }
        for path in plan.removed {
            self.seen.remove(&path);
            out.push(Staged::Removed { path });
        }
        (out, true)
    }
}

impl Drop for ReloadState {
    /// The stage is dropped when the decision thread ends: the loader is stopped and joined,
    /// so nothing compiles or writes the compiled cache after the agent says it has stopped.
    /// At worst this waits for the one component being compiled.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(LoaderThread { control, thread, .. }) = self.loader.take() {
            // An error means the thread has already ended.
            let _ = control.send(Control::Stop);
            if thread.join().is_err() {
                tracing::error!("the plugin loader thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ContentKey {
        ContentKey { component: [n; 32], signature: None }
    }

    fn files(entries: &[(&str, u8)]) -> BTreeMap<PathBuf, ContentKey> {
        entries.iter().map(|(p, n)| (PathBuf::from(p), key(*n))).collect()
    }

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn dropping_the_state_stops_and_joins_the_loader_thread() {
        let dir = std::env::temp_dir().join(format!("wedsync-loader-join-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let host = wedsync_plugin_host::PluginHost::new(wedsync_plugin_host::HostSettings::default()).unwrap();
        let setup =
            Setup { node: "node-1".into(), region: 0, regions: Vec::new(), pools: Vec::new(), config: "{}".into() };
        let mut state = ReloadState::new(setup, Vec::new(), Vec::new());
        // Not watched: without the stop message the thread would sleep on in 500 ms waits.
        state.start_loader(host.loader(), dir.clone(), None, BTreeMap::new()).unwrap();
        let handle = state.reload_handle().unwrap();
        let answer = handle.request().unwrap();
        drop(state);
        // Joined: the thread, and with it the request channel's receiver, is gone.
        assert!(matches!(handle.request(), Err(LoaderStopped)));
        // The pass asked for was never applied, and its reply channel is closed, not left hanging.
        assert!(answer.blocking_recv().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_watch_pass_stages_new_and_changed_files_and_reports_gone_ones() {
        let seen = files(&[("/p/a.wasm", 1), ("/p/b.wasm", 2), ("/p/c.wasm", 3)]);
        let current = files(&[("/p/a.wasm", 1), ("/p/b.wasm", 9), ("/p/d.wasm", 4)]);
        let plan = plan(&current, &seen, &seen, &BTreeSet::new(), false);
        assert_eq!(plan.stage, paths(&["/p/b.wasm", "/p/d.wasm"]));
        assert_eq!(plan.unchanged, paths(&["/p/a.wasm"]));
        assert_eq!(plan.removed, paths(&["/p/c.wasm"]));
    }

    #[test]
    fn a_refused_file_is_retried_by_a_request_but_not_by_the_watch() {
        // b.wasm was seen (and refused): it is not installed.
        let seen = files(&[("/p/a.wasm", 1), ("/p/b.wasm", 2)]);
        let applied = files(&[("/p/a.wasm", 1)]);
        let current = seen.clone();
        let watch = plan(&current, &seen, &applied, &BTreeSet::new(), false);
        assert!(watch.stage.is_empty(), "{watch:?}");
        let request = plan(&current, &seen, &applied, &BTreeSet::new(), true);
        assert_eq!(request.stage, paths(&["/p/b.wasm"]));
        assert_eq!(request.unchanged, paths(&["/p/a.wasm"]));
        assert!(request.removed.is_empty());
    }

    #[test]
    fn a_signature_change_is_a_content_change() {
        let a = ContentKey::of(b"component", None);
        let b = ContentKey::of(b"component", Some(b"sig"));
        assert_ne!(a, b);
        assert_eq!(b, ContentKey::of(b"component", Some(b"sig")));
    }

    #[test]
    fn an_unreadable_file_is_not_taken_for_removed() {
        let seen = files(&[("/p/a.wasm", 1), ("/p/b.wasm", 2)]);
        let current = files(&[("/p/a.wasm", 1)]);
        let present: BTreeSet<PathBuf> = [PathBuf::from("/p/b.wasm")].into();
        let plan = plan(&current, &seen, &seen, &present, false);
        assert!(plan.removed.is_empty(), "{plan:?}");
        // An installed file that vanished is removed even if the watch never saw it.
        let applied = files(&[("/p/z.wasm", 7)]);
        let plan2 = super::plan(&current, &BTreeMap::new(), &applied, &BTreeSet::new(), false);
        assert_eq!(plan2.removed, paths(&["/p/z.wasm"]));
    }

    #[test]
    fn the_fingerprint_sees_content_signature_and_removal_changes_only() {
        let dir = std::env::temp_dir().join(format!("wedsync-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.wasm"), b"one").unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        let first = fingerprint(&dir).unwrap();
        assert_eq!(first.len(), 1);
        std::fs::write(dir.join("notes.txt"), b"still ignored").unwrap();
        assert_eq!(fingerprint(&dir).unwrap(), first);
        std::fs::write(dir.join("a.wasm.sig"), b"sig").unwrap();
        let second = fingerprint(&dir).unwrap();
        assert_ne!(second, first);
        std::fs::write(dir.join("a.wasm"), b"three").unwrap();
        assert_ne!(fingerprint(&dir).unwrap(), second);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(fingerprint(&dir).is_err());
    }
}
