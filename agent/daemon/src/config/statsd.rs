//! `[statsd]`: UDP ingest ([`crate::ingest`]).

use serde::{Deserialize, Serialize};

/// `[statsd]`: UDP ingest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsdSection {
    /// Whether to listen for StatsD at all.
    pub enabled: bool,
    /// UDP address to listen on.
    pub listen: String,
    /// A second UDP address, for the series pools' demand is read from (empty: none). It has
    /// its own receive buffer and reader, so a flood of other metrics on `listen` cannot make the
    /// kernel drop demand lines; send demand here and everything else to `listen`.
    pub demand_listen: String,
    /// A Unix datagram socket to listen on as well (DogStatsD's convention; empty: none). Who may
    /// send is decided by its file mode; a full queue makes senders wait or fail, never a silent
    /// drop.
    pub unix_socket: String,
    /// The Unix socket's file mode, octal (default `"0660"`: the agent's user and group).
    pub unix_socket_mode: String,
    /// Who may send UDP datagrams: addresses or networks (`"10.0.0.0/8"`, `"::1"`); empty:
    /// anyone who can reach `listen` (keep it on loopback then). Datagrams from elsewhere are
    /// dropped, counted and logged.
    pub allow: Vec<String>,
    /// Kernel receive buffer to ask for, in bytes (absorbs bursts while the agent is busy).
    pub receive_buffer_bytes: u64,
    /// Most rejected lines logged per second; the rest are only counted.
    pub log_rejects_per_second: u32,
    /// Threads reading the socket, each parsing and recording what it reads; 0: one per CPU the
    /// agent may run on, at most [`AUTO_READERS_MAX`].
    pub readers: u32,
}

/// Most readers `readers = 0` starts: past this, StatsD would take more of a big host's cores
/// than an edge agent should.
pub const AUTO_READERS_MAX: usize = 8;

/// Most readers that may be configured.
pub const READERS_MAX: u64 = 64;

/// How many readers `readers` asks for: itself, or for 0 one per CPU the agent may run on (its
/// affinity and cgroup quota count), at most [`AUTO_READERS_MAX`].
pub fn resolve_readers(readers: u64) -> usize {
    match usize::try_from(readers) {
        Ok(0) | Err(_) => {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).clamp(1, AUTO_READERS_MAX)
        }
        Ok(n) => n,
    }
}

impl Default for StatsdSection {
    fn default() -> Self {
        StatsdSection {
            enabled: true,
            listen: "127.0.0.1:8125".into(),
            demand_listen: String::new(),
            unix_socket: String::new(),
            unix_socket_mode: "0660".into(),
            allow: Vec::new(),
            receive_buffer_bytes: 8 * 1024 * 1024,
            log_rejects_per_second: 5,
            readers: 0,
        }
    }
}
