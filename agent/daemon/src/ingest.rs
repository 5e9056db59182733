//! StatsD/DogStatsD ingest over UDP.
//!
//! Each datagram is parsed line by line; good lines go into the metric store under one lock,
//! bad lines are counted by reason and logged at a limited rate. Nothing a client sends can
//! panic the agent or cost it a line it already accepted.

use crate::clock::{Clock, StoreLock, lock};
use crate::logging::RateLimiter;
use crate::telemetry::{IngestCounters, ReasonLabel};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use wedsync_core::content::IntervalSketch;
use wedsync_core::statsd::{Line, MetricKind, parse_datagram};

/// The tag that names a piece of content (a photo, a post) for viral-content detection.
pub const CONTENT_TAG: &str = "content";

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Why the StatsD listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The UDP socket could not be made or bound.
    #[error("statsd.listen: cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Binds the StatsD socket, asking the kernel for `receive_buffer` bytes of buffer.
/// Returns the socket and the buffer size the kernel granted.
pub fn bind(addr: SocketAddr, receive_buffer: usize) -> Result<(UdpSocket, usize), IngestError> {
    let bind_err = |source| IngestError::Bind { addr, source };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).map_err(bind_err)?;
    // The kernel may cap this (net.core.rmem_max); a smaller buffer is not fatal.
    let _ = socket.set_recv_buffer_size(receive_buffer);
    let granted = socket.recv_buffer_size().unwrap_or(0);
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    let socket = UdpSocket::from_std(socket.into()).map_err(bind_err)?;
    Ok((socket, granted))
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

/// Parses a datagram and records its lines; counts and (rate-limited) logs the bad ones.
/// Counter lines tagged `content:KEY` also feed `content` (the fleet's viral detection) and are
/// stored without that tag.
pub fn ingest_datagram(
    datagram: &[u8],
    from: Option<SocketAddr>,
    clock: &Clock,
    store: &StoreLock,
    counters: &IngestCounters,
    log_limiter: &mut RateLimiter,
    content: Option<&Mutex<IntervalSketch>>,
) -> DatagramOutcome {
    let now = clock.now();
    let wall_ms = content.map(|_| u64::try_from(crate::clock::wall_ms()).unwrap_or(0)).unwrap_or(0);
    let mut outcome = DatagramOutcome::default();
    let mut store = store.lock();
    parse_datagram(datagram, |result| match result {
        Ok(line) => {
            let stripped = content.and_then(|c| take_content(&line, wall_ms, c, counters));
            let line = match &stripped {
                Some(tags) => Line { tags, ..line },
                None => line,
            };
            match store.record(now, &line) {
                Ok(_) => outcome.stored += 1,
                Err(e) => {
                    outcome.refused += 1;
                    counters.refused_by_store.get_or_create(&ReasonLabel { reason: e.label() }).inc();
                    if let Some(suppressed) = log_limiter.admit(std::time::Instant::now()) {
                        tracing::warn!(metric = line.name, kind = %line.kind, from = %Peer(from), suppressed, "statsd line refused: {e}");
                    }
                }
            }
        }
        Err(e) => {
            outcome.rejected += 1;
            counters.reject(e.kind);
            if let Some(suppressed) = log_limiter.admit(std::time::Instant::now()) {
                tracing::warn!(reason = e.kind.label(), from = %Peer(from), suppressed, "{e}");
            }
        }
    });
    drop(store);
    counters.datagrams.inc();
    counters.bytes.inc_by(datagram.len() as u64);
    counters.lines.inc_by(outcome.stored);
    outcome
}

/// Receives datagrams until `stop` is cancelled.
pub async fn serve(
    socket: UdpSocket,
    clock: Clock,
    store: Arc<StoreLock>,
    counters: IngestCounters,
    log_rejects_per_second: u32,
    content: Option<Arc<Mutex<IntervalSketch>>>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut limiter = RateLimiter::new(log_rejects_per_second);
    let mut error_limiter = RateLimiter::new(1);
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((len, from)) => {
                let datagram = buf.get(..len).unwrap_or_default();
                ingest_datagram(datagram, Some(from), &clock, &store, &counters, &mut limiter, content.as_deref());
            }
            Err(e) => {
                counters.receive_errors.inc();
                if let Some(suppressed) = error_limiter.admit(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "statsd receive failed");
                }
            }
        }
    }
    tracing::debug!("statsd ingest stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{HostView, Telemetry};
    use std::sync::RwLock;
    use wedsync_core::statsd::MetricKind;
    use wedsync_core::store::StoreLimits;

    #[test]
    fn garbage_is_counted_and_good_lines_kept() {
        let clock = Clock::start();
        let store = Arc::new(StoreLock::new(wedsync_core::store::MetricStore::new(StoreLimits {
            max_series: 2,
            ..StoreLimits::default()
        })));
        let telemetry = Telemetry::new(clock, store.clone(), Arc::new(RwLock::new(HostView::default())));
        let mut limiter = RateLimiter::new(5);
        let outcome = ingest_datagram(
            b"a:1|c\n\xff\xfe\nb:2|ms|#class:media\nnope\nc:1|c\n",
            None,
            &clock,
            &store,
            &telemetry.ingest,
            &mut limiter,
            None,
        );
        assert_eq!(outcome, DatagramOutcome { stored: 2, rejected: 2, refused: 1 });
        let store = store.lock();
        assert!(store.lookup("a", MetricKind::Counter, "").is_some());
        assert!(store.lookup("b", MetricKind::Timer, "class:media").is_some());
        drop(store);
        let text = telemetry.render().unwrap();
        assert!(text.contains("wedsync_statsd_rejected_lines_total{reason=\"not_utf8\"} 1"), "{text}");
        assert!(text.contains("wedsync_statsd_rejected_lines_total{reason=\"missing_value\"} 1"), "{text}");
        assert!(text.contains("wedsync_statsd_refused_lines_total{reason=\"series_limit\"} 1"), "{text}");
        assert!(text.contains("wedsync_statsd_lines_total 2"), "{text}");
    }

    #[tokio::test]
    async fn udp_datagrams_reach_the_store() {
        let (socket, _) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = socket.local_addr().unwrap();
        let clock = Clock::start();
        let store = Arc::new(StoreLock::new(wedsync_core::store::MetricStore::new(StoreLimits::default())));
        let telemetry = Telemetry::new(clock, store.clone(), Arc::new(RwLock::new(HostView::default())));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(socket, clock, store.clone(), telemetry.ingest.clone(), 5, None, stop.clone()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"hits:3|c\nhits:4|c", addr).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let total = {
                let store = store.lock();
                store
                    .lookup("hits", MetricKind::Counter, "")
                    .and_then(|id| store.view(id, clock.now()).map(|v| v.total()))
            };
            if total == Some(7.0) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "datagram not ingested: {total:?}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
    }
}
