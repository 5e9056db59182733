//! StatsD/DogStatsD ingest over UDP, on every core.
//!
//! Several reader threads ([`read`]) take datagrams from one socket: the kernel hands each
//! datagram to one of them, so a single busy client is spread over the readers too (separate
//! `SO_REUSEPORT` sockets would pin each client to one reader by its address). Each reader
//! parses its datagram, sorts the lines by the [`Store`] shard they belong to and records each
//! group under that shard's lock, taking a free shard before waiting for a busy one. Bad lines
//! are counted by reason and logged at a limited rate; datagrams the kernel drops because the
//! readers fell behind are counted from the socket's own drop counter ([`SocketDrops`]).
//! Nothing a client sends can panic the agent or cost it a line it already accepted.
//!
//! The agent may listen on two sockets ([`Input`]): `statsd.listen` for everything, and
//! `statsd.demand_listen` for pools' demand series, with its own buffer and reader, so a flood
//! of bulk metrics cannot crowd out the lines decisions are made from. Each series remembers
//! which of them wrote it, and each reader learns the kernel's drop count for its socket with
//! every datagram (`SO_RXQ_OVFL`): the decision thread knows when a pool's demand was read from
//! a socket that was losing datagrams ([`InputLoss`]), and treats that reading as uncertain.

use crate::clock::{Clock, lock};
use crate::logging::RateLimiter;
use crate::store::{ShardGuard, Store};
use crate::telemetry::{IngestCounters, ReasonLabel};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wedsync_core::Timestamp;
use wedsync_core::content::IntervalSketch;
use wedsync_core::statsd::{Line, MetricKind, parse_datagram};
use wedsync_core::store::SeriesKey;

/// The tag that names a piece of content (a photo, a post) for viral-content detection.
pub const CONTENT_TAG: &str = "content";

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// How long a reader blocks on an empty socket before it looks at the stop signal again, should
/// [`wake_readers`] not reach it: long, so that an idle agent's readers barely wake.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the StatsD listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The UDP socket could not be made or bound.
    #[error("{setting}: cannot bind UDP {addr}: {source}")]
    Bind {
        /// The setting that names the address.
        setting: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The Unix socket could not be made.
    #[error("statsd.unix_socket: {path}: {reason}")]
    Unix {
        /// The path asked for.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Binds a StatsD socket (blocking, for reader threads), asking the kernel for
/// `receive_buffer` bytes of buffer and for its drop count with each datagram. Returns the
/// socket and the buffer size the kernel granted.
pub fn bind(addr: SocketAddr, receive_buffer: usize) -> Result<(UdpSocket, usize), IngestError> {
    bind_for("statsd.listen", addr, receive_buffer)
}

/// [`bind`] for the socket `setting` names (errors say which).
pub fn bind_for(
    setting: &'static str,
    addr: SocketAddr,
    receive_buffer: usize,
) -> Result<(UdpSocket, usize), IngestError> {
    let bind_err = |source| IngestError::Bind { setting, addr, source };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).map_err(bind_err)?;
    // The kernel may cap this (net.core.rmem_max); a smaller buffer is not fatal.
    let _ = socket.set_recv_buffer_size(receive_buffer);
    let granted = socket.recv_buffer_size().unwrap_or(0);
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.set_read_timeout(Some(READ_TIMEOUT)).map_err(bind_err)?;
    // Linux only; elsewhere losses are still counted from procfs, just not seen by the rounds.
    if let Err(error) = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RxqOvfl, &1) {
        tracing::warn!(%addr, %error, "cannot ask for the socket's drop count (SO_RXQ_OVFL): rounds will not know when StatsD input is lost");
    }
    Ok((socket.into(), granted))
}

/// One StatsD socket's identity, and what its readers have seen of the kernel's drops on it:
/// the decision thread compares it from round to round.
#[derive(Debug)]
pub struct InputLoss {
    /// The socket's name in metrics and logs: `udp` (`statsd.listen`) or `demand`
    /// (`statsd.demand_listen`).
    pub name: &'static str,
    /// Its input number in each series's sources (`SeriesInfo::sources`).
    pub source: u8,
    /// The newest drop count a reader saw, with bit 32 set once one was seen (the kernel only
    /// sends it after the first drop).
    seen: AtomicU64,
}

impl InputLoss {
    /// An input that has seen no drop yet.
    pub fn new(name: &'static str, source: u8) -> InputLoss {
        InputLoss { name, source, seen: AtomicU64::new(0) }
    }

    /// The kernel's drop count for the socket as of the newest datagram read (0 before any).
    /// It wraps at 2^32; compare for change, not order.
    pub fn drops(&self) -> u32 {
        (self.seen.load(Ordering::Relaxed) & u64::from(u32::MAX)) as u32
    }

    /// Notes the drop count a datagram came with.
    pub(crate) fn saw(&self, drops: u32) {
        self.seen.store((1 << 32) | u64::from(drops), Ordering::Relaxed);
    }
}

/// A datagram's sender for the log (`-` when unknown).
struct Peer(Option<SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("-"),
        }
    }
}

/// What one datagram added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DatagramOutcome {
    /// Lines stored.
    pub stored: u64,
    /// Lines the parser rejected.
    pub rejected: u64,
    /// Lines the store refused.
    pub refused: u64,
}

/// Counts a counter line's `content:` key into the sketch and returns its tags without it, so
/// one series per piece of content never floods the store. `None`: the line has no such tag.
fn take_content(
    line: &Line<'_>,
    wall_ms: u64,
    content: &Mutex<IntervalSketch>,
    counters: &IngestCounters,
) -> Option<String> {
    if line.kind != MetricKind::Counter {
        return None;
    }
    let key = line.tag_pairs().find(|(k, _)| *k == CONTENT_TAG).map(|(_, v)| v)?;
    let count = (line.numbers().sum::<f64>() / line.sample_rate).round();
    if count >= 1.0 {
        match lock(content).record(wall_ms, key, count as u64) {
            Ok(()) => counters.content_keys.inc(),
            Err(_) => counters.content_refused.inc(),
        };
    }
    let rest: Vec<&str> =
        line.tags.split(',').filter(|t| t.split_once(':').is_none_or(|(k, _)| k != CONTENT_TAG)).collect();
    Some(rest.join(","))
}

/// A parsed line with its series's key and shard.
struct Keyed<'a> {
    shard: usize,
    key: SeriesKey,
    line: Line<'a>,
}

/// What every reader shares: where lines go, what is counted, and the log's rate limits.
#[derive(Debug)]
pub struct Ingest {
    clock: Clock,
    store: Arc<Store>,
    counters: IngestCounters,
    /// Counter lines tagged `content:KEY` also feed this (the fleet's viral detection).
    content: Option<Arc<Mutex<IntervalSketch>>>,
    /// Bad lines logged, over all readers.
    line_log: Mutex<RateLimiter>,
    /// Socket errors logged, over all readers.
    error_log: Mutex<RateLimiter>,
    /// Who may send over UDP (empty: anyone).
    allow: Vec<ipnet::IpNet>,
}

impl Ingest {
    /// Ingest into `store`, counting into `counters`, logging at most `log_rejects_per_second`
    /// bad lines a second over all readers.
    pub fn new(
        clock: Clock,
        store: Arc<Store>,
        counters: IngestCounters,
        log_rejects_per_second: u32,
        content: Option<Arc<Mutex<IntervalSketch>>>,
    ) -> Ingest {
        Ingest {
            clock,
            store,
            counters,
            content,
            line_log: Mutex::new(RateLimiter::new(log_rejects_per_second)),
            error_log: Mutex::new(RateLimiter::new(1)),
            allow: Vec::new(),
        }
    }

    /// Admits UDP datagrams only from `allow` (addresses or networks; empty: from anyone).
    pub fn with_allow_list(mut self, allow: Vec<ipnet::IpNet>) -> Ingest {
        self.allow = allow;
        self
    }

    /// Whether a UDP datagram from `from` may be ingested; counts and logs (rate-limited) one
    /// that may not.
    fn admits(&self, from: Option<SocketAddr>) -> bool {
        if self.allow.is_empty() {
            return true;
        }
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = from.map(|a| a.ip().to_canonical());
        if ip.is_some_and(|ip| self.allow.iter().any(|net| net.contains(&ip))) {
            return true;
        }
        self.counters.refused_sources.inc();
        if let Some(suppressed) = lock(&self.line_log).admit(std::time::Instant::now()) {
            tracing::warn!(from = %Peer(from), suppressed, "statsd datagram refused: its source is not in statsd.allow");
        }
        false
    }

    /// Parses a datagram and records its lines; counts and (rate-limited) logs the bad ones.
    /// Counter lines tagged `content:KEY` also feed the content sketch and are stored without
    /// that tag.
    pub fn datagram(&self, datagram: &[u8], from: Option<SocketAddr>) -> DatagramOutcome {
        self.datagram_from(datagram, from, 0)
    }

    /// [`Ingest::datagram`] from input `source` (the socket's number, noted in each series it
    /// writes).
    pub fn datagram_from(&self, datagram: &[u8], from: Option<SocketAddr>, source: u8) -> DatagramOutcome {
        let now = self.clock.now();
        let mut outcome = DatagramOutcome::default();
        let mut lines: Vec<Keyed<'_>> = Vec::with_capacity(64);
        parse_datagram(datagram, |result| match result {
            Ok(line) => match self.content.as_deref() {
                Some(content) if line.kind == MetricKind::Counter && line.tags.contains(CONTENT_TAG) => {
                    self.content_line(now, line, content, from, source, &mut outcome);
                }
                _ => {
                    let key = SeriesKey::of(line.name, line.kind, line.tags);
                    lines.push(Keyed { shard: self.store.shard_of(key), key, line });
                }
            },
            Err(e) => {
                outcome.rejected += 1;
                self.counters.reject(e.kind);
                if let Some(suppressed) = lock(&self.line_log).admit(std::time::Instant::now()) {
                    tracing::warn!(reason = e.kind.label(), from = %Peer(from), suppressed, "{e}");
                }
            }
        });
        // Each shard's lines in the order sent (a gauge's value and its deltas stay in order).
        lines.sort_by_key(|l| l.shard);
        let mut waiting = Vec::new();
        for group in lines.chunk_by(|a, b| a.shard == b.shard) {
            let shard = group.first().map_or(0, |l| l.shard);
            // A shard another reader holds is done last, after the free ones.
            match self.store.try_lock_shard(shard) {
                Some(mut store) => self.record(&mut store, now, group, from, source, &mut outcome),
                None => waiting.push(group),
            }
        }
        for group in waiting {
            let shard = group.first().map_or(0, |l| l.shard);
            self.record(&mut self.store.lock_shard(shard), now, group, from, source, &mut outcome);
        }
        self.counters.datagrams.inc();
        self.counters.bytes.inc_by(datagram.len() as u64);
        self.counters.lines.inc_by(outcome.stored);
        outcome
    }

    fn record(
        &self,
        store: &mut ShardGuard<'_>,
        now: Timestamp,
        lines: &[Keyed<'_>],
        from: Option<SocketAddr>,
        source: u8,
        outcome: &mut DatagramOutcome,
    ) {
        for Keyed { key, line, .. } in lines {
            match store.record_keyed_from(now, line, *key, source) {
                Ok(_) => outcome.stored += 1,
                Err(e) => {
                    outcome.refused += 1;
                    self.counters.refused_by_store.get_or_create(&ReasonLabel { reason: e.label() }).inc();
                    if let Some(suppressed) = lock(&self.line_log).admit(std::time::Instant::now()) {
                        tracing::warn!(metric = line.name, kind = %line.kind, from = %Peer(from), suppressed, "statsd line refused: {e}");
                    }
                }
            }
        }
    }

    /// A counter line that may carry a `content:` tag: counted into the sketch, and recorded
    /// without the tag at once (its tags are a new string the batch could not borrow).
    fn content_line(
        &self,
        now: Timestamp,
        line: Line<'_>,
        content: &Mutex<IntervalSketch>,
        from: Option<SocketAddr>,
        source: u8,
        outcome: &mut DatagramOutcome,
    ) {
        let wall_ms = u64::try_from(crate::clock::wall_ms()).unwrap_or(0);
        let stripped = take_content(&line, wall_ms, content, &self.counters);
        let line = match &stripped {
            Some(tags) => Line { tags, ..line },
            None => line,
        };
        let key = SeriesKey::of(line.name, line.kind, line.tags);
        let shard = self.store.shard_of(key);
        self.record(&mut self.store.lock_shard(shard), now, &[Keyed { shard, key, line }], from, source, outcome);
    }

    fn receive_error(&self, error: &std::io::Error) {
        self.counters.receive_errors.inc();
        if let Some(suppressed) = lock(&self.error_log).admit(std::time::Instant::now()) {
            tracing::warn!(%error, suppressed, "statsd receive failed");
        }
    }
}

/// One reader thread: receives datagrams from `socket` (a clone of one [`bind`] made, with its
/// read timeout) and ingests them as input `loss.source`, noting the kernel's drop count that
/// comes with each in `loss`, until `stop` is cancelled and [`wake_readers`] is called (or the
/// read timeout passes).
pub fn read(socket: UdpSocket, ingest: Arc<Ingest>, loss: Arc<InputLoss>, stop: CancellationToken) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut control = nix::cmsg_space!(u32);
    while !stop.is_cancelled() {
        let received = {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::empty()).map(|msg| {
                let from = msg.address.and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| SocketAddr::from(*v4))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
                });
                let drops = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::RxqOvfl(n) => Some(n),
                        _ => None,
                    })
                });
                (msg.bytes, from, drops)
            })
        };
        match received {
            Ok((len, from, drops)) => {
                if let Some(drops) = drops {
                    loss.saw(drops);
                }
                if ingest.admits(from) {
                    ingest.datagram_from(buf.get(..len).unwrap_or_default(), from, loss.source);
                }
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR | nix::errno::Errno::ETIMEDOUT) => {}
            // Woken to stop: the shut-down socket's read is no error.
            Err(_) if stop.is_cancelled() => {}
            Err(e) => ingest.receive_error(&std::io::Error::from(e)),
        }
    }
    tracing::debug!(socket = loss.name, "statsd reader stopped");
}

/// Binds the StatsD Unix datagram socket at `path` with file mode `mode`, replacing a socket a
/// previous run left there (anything else at `path` is an error, never removed), asking for
/// `receive_buffer` bytes of buffer.
pub fn bind_unix(path: &std::path::Path, mode: u32, receive_buffer: usize) -> Result<UnixDatagram, IngestError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let fail = |reason: String| IngestError::Unix { path: path.to_owned(), reason };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove the old socket: {e}")))?;
        }
        Ok(_) => return Err(fail("is not a socket (something else is there); not replacing it".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let socket = UnixDatagram::bind(path).map_err(|e| fail(format!("cannot bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(format!("cannot set mode {mode:o}: {e}")))?;
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(receive_buffer);
    socket.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| fail(e.to_string()))?;
    Ok(socket)
}

/// [`read`] for the Unix datagram socket: its senders wait when it is full (no kernel drops),
/// and the file mode is the allow-list.
pub fn read_unix(socket: UnixDatagram, ingest: Arc<Ingest>, source: u8, stop: CancellationToken) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !stop.is_cancelled() {
        match socket.recv(&mut buf) {
            // Woken to stop: a shut-down socket reads as empty.
            Ok(0) if stop.is_cancelled() => {}
            Ok(len) => {
                ingest.datagram_from(buf.get(..len).unwrap_or_default(), None, source);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) if stop.is_cancelled() => {}
            Err(e) => ingest.receive_error(&e),
        }
    }
    tracing::debug!("statsd unix reader stopped");
}

/// Wakes every reader blocked on `socket` (after `stop` was cancelled, so they end): shuts the
/// socket down for reading, which Linux does for unconnected UDP sockets too (it answers
/// `ENOTCONN` but still wakes the waiting readers, whose reads then return at once).
pub fn wake_readers(socket: &UdpSocket) {
    let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read);
}

/// Datagrams the kernel dropped on the StatsD socket because its receive buffer was full (the
/// readers fell behind): the socket's own drop counter, read from procfs at scrape time (and by
/// [`watch_drops`], which logs them).
#[derive(Debug, Clone)]
pub struct SocketDrops {
    /// The socket's name in the metric's `socket` label.
    name: &'static str,
    /// The socket's inode, which names it in `/proc/net/udp`.
    inode: u64,
    /// Where procfs is mounted.
    procfs: String,
}

impl SocketDrops {
    /// The drop counter of `socket`, or `None` where procfs does not name it.
    pub fn of(socket: &UdpSocket, procfs: &str) -> Option<SocketDrops> {
        SocketDrops::named("udp", socket, procfs)
    }

    /// [`SocketDrops::of`] a socket called `name` in the metric and the log.
    pub fn named(name: &'static str, socket: &UdpSocket, procfs: &str) -> Option<SocketDrops> {
        let link = std::fs::read_link(format!("{procfs}/self/fd/{}", socket.as_raw_fd())).ok()?;
        let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
        Some(SocketDrops { name, inode, procfs: procfs.to_owned() })
    }

    /// The count now, from `/proc/self/net/udp` or `udp6` (the last field of the socket's row).
    pub fn read(&self) -> Option<u64> {
        ["udp", "udp6"].iter().find_map(|table| {
            let text = std::fs::read_to_string(format!("{}/self/net/{table}", self.procfs)).ok()?;
            udp_table_drops(&text, self.inode)
        })
    }
}

/// How often [`watch_drops`] looks at the socket's drop counter.
pub const DROPS_CHECK_PERIOD: Duration = Duration::from_secs(10);

/// Logs, every [`DROPS_CHECK_PERIOD`] in which the kernel dropped StatsD datagrams, how many (the
/// metric has them all; a log line says that input is being lost), until `stop`.
pub async fn watch_drops(drops: SocketDrops, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(DROPS_CHECK_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last: Option<u64> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let reader = drops.clone();
        let Ok(Some(now)) = tokio::task::spawn_blocking(move || reader.read()).await else { continue };
        if let Some(before) = last
            && now > before
        {
            tracing::warn!(
                socket = drops.name,
                dropped = now - before,
                total = now,
                period = ?DROPS_CHECK_PERIOD,
                "the kernel dropped StatsD datagrams: the readers fell behind (raise statsd.readers, statsd.receive_buffer_bytes and net.core.rmem_max)"
            );
        }
        last = Some(now);
    }
}

/// The drops of the socket with `inode` in a `/proc/net/udp` table.
fn udp_table_drops(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        let row_inode: u64 = fields.get(9)?.parse().ok()?;
        (row_inode == inode).then(|| fields.get(12)?.parse().ok())?
    })
}

/// `wedsync_statsd_kernel_drops_total`, one row per StatsD socket procfs names.
#[derive(Debug, Clone, Default)]
pub struct KernelDrops(pub Vec<SocketDrops>);

impl Collector for KernelDrops {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows: Vec<_> = self.0.iter().filter_map(|s| Some(([("socket", s.name)], s.read()?))).collect();
        if !rows.is_empty() {
            crate::telemetry::counter(
                &mut encoder,
                "wedsync_statsd_kernel_drops",
                "StatsD datagrams the kernel dropped because the socket's receive buffer was full",
                rows,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{HostView, Telemetry};
    use std::sync::RwLock;
    use wedsync_core::statsd::MetricKind;
    use wedsync_core::store::StoreLimits;

    fn ingest(store: &Arc<Store>) -> (Arc<Ingest>, Telemetry, Clock) {
        let clock = Clock::start();
        let telemetry = Telemetry::new(clock, store.clone(), Arc::new(RwLock::new(HostView::default())));
        let ingest = Arc::new(Ingest::new(clock, store.clone(), telemetry.ingest.clone(), 5, None));
        (ingest, telemetry, clock)
    }

    #[test]
    fn garbage_is_counted_and_good_lines_kept() {
        let store = Arc::new(Store::new(StoreLimits { max_series: 2, ..StoreLimits::default() }, 4));
        let (ingest, telemetry, clock) = ingest(&store);
        let outcome = ingest.datagram(b"a:1|c\n\xff\xfe\nb:2|ms|#class:media\nnope\nc:1|c\n", None);
        assert_eq!(outcome, DatagramOutcome { stored: 2, rejected: 2, refused: 1 });
        let all = store.lock_all();
        assert!(all.lookup("a", MetricKind::Counter, "", clock.now()).is_some());
        assert!(all.lookup("b", MetricKind::Timer, "class:media", clock.now()).is_some());
        drop(all);
        let text = telemetry.render().unwrap();
        assert!(text.contains("wedsync_statsd_rejected_lines_total{reason=\"not_utf8\"} 1"), "{text}");
        assert!(text.contains("wedsync_statsd_rejected_lines_total{reason=\"missing_value\"} 1"), "{text}");
        assert!(text.contains("wedsync_statsd_refused_lines_total{reason=\"series_limit\"} 1"), "{text}");
        assert!(text.contains("wedsync_statsd_lines_total 2"), "{text}");
    }

    #[test]
    fn a_gauges_value_and_deltas_apply_in_the_order_sent_across_shards() {
        let store = Arc::new(Store::new(StoreLimits::default(), 8));
        let (ingest, _telemetry, clock) = ingest(&store);
        // Many series interleaved, so their lines land in every shard.
        let mut datagram = String::new();
        for step in ["10", "+5", "-3", "x", "*2"] {
            for q in 0..16 {
                datagram.push_str(&format!("queue{q}:{step}|g\n"));
            }
        }
        let outcome = ingest.datagram(datagram.as_bytes(), None);
        assert_eq!((outcome.stored, outcome.rejected), (48, 32));
        let all = store.lock_all();
        for q in 0..16 {
            let view = all.lookup(&format!("queue{q}"), MetricKind::Gauge, "", clock.now()).unwrap();
            assert_eq!(view.total(), 12.0, "queue{q}");
        }
    }

    #[test]
    fn several_readers_share_one_socket_and_lose_nothing() {
        let (socket, _) = bind("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
        let addr = socket.local_addr().unwrap();
        let store = Arc::new(Store::new(StoreLimits::default(), 8));
        let (ingest, telemetry, clock) = ingest(&store);
        let stop = CancellationToken::new();
        let loss = Arc::new(InputLoss::new("udp", 0));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (socket, ingest, stop) = (socket.try_clone().unwrap(), ingest.clone(), stop.clone());
                let loss = loss.clone();
                std::thread::spawn(move || read(socket, ingest, loss, stop))
            })
            .collect();
        // One client (one source address): the readers still share its datagrams.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagram: String = (0..40).map(|i| format!("hits:1|c|#service:s{}\n", i % 20)).collect();
        // Paced (10 datagrams every 2 ms), so a reader descheduled on a busy test machine does
        // not overflow a default-sized receive buffer (net.core.rmem_max caps the 4 MiB asked).
        for n in 0..500 {
            client.send_to(datagram.as_bytes(), addr).unwrap();
            if n % 10 == 9 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let total = loop {
            let total: f64 = store.lock_all().iter(clock.now()).map(|v| v.total()).sum();
            if total >= 20_000.0 || std::time::Instant::now() > deadline {
                break total;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Stopped readers end at once, not after their read timeout.
        let stopping = std::time::Instant::now();
        stop.cancel();
        wake_readers(&socket);
        for reader in readers {
            reader.join().unwrap();
        }
        assert!(stopping.elapsed() < READ_TIMEOUT / 2, "readers took {:?} to stop", stopping.elapsed());
        assert_eq!(total, 20_000.0);
        assert_eq!(telemetry.ingest.receive_errors.get(), 0, "stopping is not a receive error");
        assert_eq!(store.lock_all().app_series(), 20);
        let drops = SocketDrops::of(&socket, "/proc").expect("the socket is in /proc/self/net/udp");
        assert_eq!(drops.read(), Some(0));
        assert_eq!(loss.drops(), 0, "no drop count came with any datagram");
        let all = store.lock_all();
        assert!(all.iter(clock.now()).all(|v| v.info().sources == 0b1), "every series notes its input");
        drop(all);
        let text = telemetry.render().unwrap();
        assert!(text.contains("wedsync_statsd_lines_total 20000"), "{text}");
    }

    #[test]
    fn datagrams_the_kernel_drops_are_counted() {
        // The smallest buffer the kernel allows, and no reader: most datagrams must be dropped.
        let (socket, _) = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = socket.local_addr().unwrap();
        let drops = SocketDrops::of(&socket, "/proc").expect("the socket is in /proc/self/net/udp");
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            client.send_to(&[b'x'; 1000], addr).unwrap();
        }
        let dropped = drops.read().unwrap();
        assert!(dropped > 100, "{dropped} drops");
        // A reader learns the count from the next datagram it takes (SO_RXQ_OVFL).
        let store = Arc::new(Store::new(StoreLimits::default(), 1));
        let (ingest, _telemetry, clock) = ingest(&store);
        let (loss, stop) = (Arc::new(InputLoss::new("udp", 2)), CancellationToken::new());
        let reader = {
            let (socket, loss, stop) = (socket.try_clone().unwrap(), loss.clone(), stop.clone());
            std::thread::spawn(move || read(socket, ingest, loss, stop))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // The count rides on datagrams queued after the drops: send some.
        while loss.drops() == 0 && std::time::Instant::now() < deadline {
            client.send_to(b"after:1|c", addr).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.cancel();
        wake_readers(&socket);
        reader.join().unwrap();
        // At least what procfs showed (the first "after" datagrams may have been dropped too),
        // at most what it shows now.
        let (seen, now) = (u64::from(loss.drops()), drops.read().unwrap());
        assert!(seen >= dropped && seen <= now, "the reader saw {seen} drops; procfs {dropped}, then {now}");
        assert!(store.lock_all().iter(clock.now()).any(|v| v.info().sources == 0b100));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(KernelDrops(vec![drops])));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("wedsync_statsd_kernel_drops_total{socket=\"udp\"} "), "{text}");
    }

    #[test]
    fn udp_tables_are_read_by_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  471: 0100007F:1FBD 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 31337 2 0000000000000000 42
  472: 0100007F:1FBE 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 31338 2 0000000000000000 7
";
        assert_eq!(udp_table_drops(table, 31338), Some(7));
        assert_eq!(udp_table_drops(table, 31337), Some(42));
        assert_eq!(udp_table_drops(table, 1), None);
        assert_eq!(udp_table_drops("garbage\nrow with few fields", 1), None);
    }
}
