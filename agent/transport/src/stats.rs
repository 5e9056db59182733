//! Counters of what the transport sent, received and dropped.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of the transport's counters (all since [`Transport::bind`](crate::Transport::bind),
/// except `connections_open`, which is the number open now).
///
/// Every frame given to [`Transport::send`](crate::Transport::send) is either sent
/// (`datagrams_out` or `streams_out`) or dropped and counted in exactly one `dropped_*` counter; every
/// frame received is either delivered (`datagrams_in` or `streams_in`) or dropped and counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TransportStats {
    /// Frames sent as QUIC datagrams.
    pub datagrams_out: u64,
    /// Frames received as QUIC datagrams and delivered to the consumer.
    pub datagrams_in: u64,
    /// Frames sent on their own unidirectional stream (handed to QUIC in full).
    pub streams_out: u64,
    /// Frames received on a stream and delivered to the consumer.
    pub streams_in: u64,
    /// Payload bytes of the frames counted in `datagrams_out` and `streams_out`.
    pub bytes_out: u64,
    /// Payload bytes of the frames counted in `datagrams_in` and `streams_in`.
    pub bytes_in: u64,
    /// Frames dropped because the peer's send queue was full.
    pub dropped_queue_full: u64,
    /// Frames dropped because they were larger than `max_frame` (sending or receiving).
    pub dropped_oversized: u64,
    /// Received frames dropped because the consumer's queue was full.
    pub dropped_inbound_full: u64,
    /// Frames dropped by the [`FaultInjector`](crate::FaultInjector), either way.
    pub dropped_fault: u64,
    /// Frames dropped because the peer could not be reached: no connection could be made (or one is
    /// being retried after a failure), the connection was lost while sending, or the transport is
    /// closed.
    pub dropped_unreachable: u64,
    /// Handshakes this node refused: a peer certificate from an unknown CA, no certificate, or a
    /// certificate without a valid identity.
    pub refused_handshakes: u64,
    /// Connections this node tried to make and could not (timeout, refusal by either side, error).
    pub connect_failures: u64,
    /// Connections open now, both directions.
    pub connections_open: u64,
}

/// The live counters behind [`TransportStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) streams_out: AtomicU64,
    pub(crate) streams_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_oversized: AtomicU64,
    pub(crate) dropped_inbound_full: AtomicU64,
    pub(crate) dropped_fault: AtomicU64,
    pub(crate) dropped_unreachable: AtomicU64,
    pub(crate) refused_handshakes: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) connections_open: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            datagrams_out: get(&self.datagrams_out),
            datagrams_in: get(&self.datagrams_in),
            streams_out: get(&self.streams_out),
            streams_in: get(&self.streams_in),
            bytes_out: get(&self.bytes_out),
            bytes_in: get(&self.bytes_in),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_oversized: get(&self.dropped_oversized),
            dropped_inbound_full: get(&self.dropped_inbound_full),
            dropped_fault: get(&self.dropped_fault),
            dropped_unreachable: get(&self.dropped_unreachable),
            refused_handshakes: get(&self.refused_handshakes),
            connect_failures: get(&self.connect_failures),
            connections_open: get(&self.connections_open),
        }
    }
}
