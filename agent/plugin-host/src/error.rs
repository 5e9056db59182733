//! The host's error types: one enum per operation, each variant documented.

use std::fmt;
use std::path::PathBuf;

/// Why a [`PluginHost`](crate::PluginHost) could not be created.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A setting is out of range (e.g. a zero call budget).
    #[error("invalid plugin host setting {field}: {reason}")]
    Setting {
        /// The setting's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// wasmtime refused the engine configuration (e.g. the pooling allocator could not reserve
    /// its address space).
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// WASI or the policy imports could not be added to the linker.
    #[error("cannot link the plugin host functions: {0}")]
    Link(String),
    /// The compiled-artifact cache could not be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The epoch ticker thread could not be started.
    #[error("cannot start the plugin epoch ticker thread: {0}")]
    Ticker(#[source] std::io::Error),
}

/// Why a plugin was not loaded (by [`prepare`](crate::PluginHost::prepare),
/// [`install`](crate::PluginHost::install) or [`reconfigure`](crate::PluginHost::reconfigure)).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component is larger than [`HostSettings::max_component_size`](crate::HostSettings).
    #[error("plugin {origin}: component is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Where the plugin came from (a file path, or a bundled plugin's name).
        origin: String,
        /// Its size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The plugin's `describe` names another plugin or version than its signature binds.
    #[error(
        "plugin {origin}: signed as {signed}, but it says it is {described}: refused (a signed build passed off as another)"
    )]
    NotAsSigned {
        /// Where the plugin came from.
        origin: String,
        /// Name and version the signature binds.
        signed: String,
        /// Name and version `describe` returned.
        described: String,
    },
    /// An older version of a loaded plugin, and rollbacks are not allowed.
    #[error(
        "plugin {origin}: {name} {version} is older than the loaded {loaded}: refused (set plugins.allow_rollback = true to put an older build back)"
    )]
    Rollback {
        /// Where the plugin came from.
        origin: String,
        /// The plugin's name.
        name: String,
        /// Its version.
        version: String,
        /// The version loaded now.
        loaded: String,
    },
    /// The plugin has no signature and unsigned plugins are not allowed.
    #[error("plugin {origin}: unsigned, and plugins.allow_unsigned is false")]
    Unsigned {
        /// Where the plugin came from.
        origin: String,
    },
    /// The signature is malformed or no trusted key verifies it.
    #[error("plugin {origin}: bad signature: {reason}")]
    BadSignature {
        /// Where the plugin came from.
        origin: String,
        /// Why it does not verify.
        reason: String,
    },
    /// The bytes are not a valid WebAssembly component (or wasmtime cannot compile it).
    #[error("plugin {origin}: not a valid WebAssembly component: {reason}")]
    Compile {
        /// Where the plugin came from.
        origin: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The component imports something other than `wasi:*@0.2.*` and `wedsync:policy`.
    #[error(
        "plugin {origin}: imports `{import}`, which the host does not provide \
         (only wasi:*@0.2 interfaces and wedsync:policy/log@0.1.0 are allowed)"
    )]
    ForbiddenImport {
        /// Where the plugin came from.
        origin: String,
        /// The import's full name, e.g. `wasi:http/outgoing-handler@0.2.0`.
        import: String,
    },
    /// The component does not fit the `wedsync:policy/policy` world, or imports a WASI
    /// interface the host does not link.
    #[error("plugin {origin}: does not fit the wedsync:policy@0.1.0 policy world: {reason}")]
    World {
        /// Where the plugin came from.
        origin: String,
        /// wasmtime's message (it names the missing export or import).
        reason: String,
    },
    /// Instantiating the component, or calling `describe`, failed.
    #[error("plugin {origin}: {stage} failed: {failure}")]
    Start {
        /// Where the plugin came from.
        origin: String,
        /// `instantiate` or `describe`.
        stage: &'static str,
        /// What happened (a trap, a timeout, a memory-limit hit…).
        failure: CallFailure,
    },
    /// `describe` returned a name or version the host does not accept.
    #[error("plugin {origin}: bad plugin-info: {reason}")]
    BadInfo {
        /// Where the plugin came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// `configure` returned an error message, or failed.
    #[error("plugin {name} ({origin}): configure failed: {message}")]
    Configure {
        /// The plugin's name (from `describe`).
        name: String,
        /// Where the plugin came from.
        origin: String,
        /// The plugin's own error message, or the failure.
        message: String,
    },
    /// The plugin was prepared by another host (another engine) than the one installing it.
    #[error("plugin {origin}: prepared by another plugin host; prepare it with this host's loader")]
    ForeignPrepared {
        /// Where the plugin came from.
        origin: String,
    },
    /// No plugin of this name is loaded.
    #[error("no plugin named {0} is loaded")]
    NotFound(String),
}

/// What kind of failure a plugin call ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The guest trapped (e.g. `unreachable`, a Rust panic, an out-of-bounds access) or a
    /// host function it called failed.
    Trap,
    /// The call ran past its epoch deadline and was interrupted.
    Timeout,
    /// The guest asked for more linear memory (or table space) than its cap.
    Memory,
    /// The returned verdict has more entries or string bytes than allowed.
    OutputTooLarge,
    /// The returned verdict names a pool that does not exist, an admission outside [0, 1], or
    /// a cache key that is empty or longer than 64 bytes.
    BadOutput,
    /// Re-instantiating the plugin (after an earlier failure) failed, including its
    /// `configure` returning an error.
    Instantiate,
}

impl FailureKind {
    /// Every kind, in the order of [`FailureCounts`].
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Trap,
        FailureKind::Timeout,
        FailureKind::Memory,
        FailureKind::OutputTooLarge,
        FailureKind::BadOutput,
        FailureKind::Instantiate,
    ];

    /// A short kebab-case name for logs, metrics and the API (`trap`, `timeout`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::OutputTooLarge => "output-too-large",
            FailureKind::BadOutput => "bad-output",
            FailureKind::Instantiate => "instantiate",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            FailureKind::Trap => 0,
            FailureKind::Timeout => 1,
            FailureKind::Memory => 2,
            FailureKind::OutputTooLarge => 3,
            FailureKind::BadOutput => 4,
            FailureKind::Instantiate => 5,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed plugin call: its kind and a message for the log and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CallFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened, at most 512 bytes.
    pub message: String,
}

impl CallFailure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, 512);
        CallFailure { kind, message }
    }
}

/// Failures counted per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureCounts(pub [u64; 6]);

impl FailureCounts {
    /// Failures of one kind.
    pub fn get(&self, kind: FailureKind) -> u64 {
        self.0[kind.index()]
    }

    /// Failures of every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(crate) fn add(&mut self, kind: FailureKind) {
        self.0[kind.index()] = self.0[kind.index()].saturating_add(1);
    }
}

/// A problem with a key, a signature or a signature check.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key file or key string is not in the expected format.
    #[error("bad key: {0}")]
    BadKey(String),
    /// A signature file is not in the expected format.
    #[error("bad signature file: {0}")]
    BadSignatureFormat(String),
    /// No trusted key verifies the signature.
    #[error("the signature does not verify with any of the {trusted} trusted key(s)")]
    Mismatch {
        /// How many keys were tried.
        trusted: usize,
    },
    /// The operating system's random source failed.
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

/// A problem with the compiled-artifact cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading or writing a cache file failed.
    #[error("compiled plugin cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The cache's secret key file is malformed or readable by others.
    #[error("compiled plugin cache key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A cached artifact failed authentication (it was not written by this host, or was
    /// altered): it is not loaded.
    #[error("compiled plugin cache {path}: artifact failed authentication; refusing to load it")]
    Tampered {
        /// The artifact.
        path: PathBuf,
    },
    /// wasmtime could not serialize or deserialize an artifact.
    #[error("compiled plugin cache {path}: {reason}")]
    Artifact {
        /// The artifact.
        path: PathBuf,
        /// wasmtime's message.
        reason: String,
    },
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while cut > 0 && !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "ééé".to_string();
        truncate_utf8(&mut s, 3);
        assert_eq!(s, "é");
        let mut s = "abc".to_string();
        truncate_utf8(&mut s, 10);
        assert_eq!(s, "abc");
    }

    #[test]
    fn failure_counts_per_kind() {
        let mut c = FailureCounts::default();
        c.add(FailureKind::Timeout);
        c.add(FailureKind::Timeout);
        c.add(FailureKind::Memory);
        assert_eq!(c.get(FailureKind::Timeout), 2);
        assert_eq!(c.get(FailureKind::Memory), 1);
        assert_eq!(c.total(), 3);
        for (i, k) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }
}
