//! The endpoint, the per-peer send tasks and the connection readers.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, ConnectionError, IdleTimeout, RecvStream, SendDatagramError, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use crate::fault::FaultInjector;
use crate::pki::{NodeCredentials, PeerIdentity, identity_of};
use crate::stats::{Counters, TransportStats, add, bump};
use crate::tls::{self, MESH_SERVER_NAME};

/// Default [`TransportConfig::send_queue`].
pub(crate) const DEFAULT_SEND_QUEUE: usize = 256;
/// Default [`TransportConfig::inbound_queue`].
pub(crate) const DEFAULT_INBOUND_QUEUE: usize = 4096;
/// Default [`TransportConfig::max_frame`]: 1 MiB.
pub(crate) const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Default [`TransportConfig::connect_timeout`].
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`TransportConfig::idle_timeout`].
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest accepted [`TransportConfig::idle_timeout`].
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);
/// Streams a peer may have open towards us at once (each may buffer up to `max_frame`); also the
/// number of streams we write to one peer at once.
const MAX_STREAMS: u32 = 16;
/// QUIC datagram buffers, each way.
const DATAGRAM_BUFFER: usize = 1 << 20;
/// First wait after a failed connection attempt; doubled after each failure up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest wait between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A connection that has lived this long was not refused: the backoff starts over.
const PROVEN: Duration = Duration::from_secs(1);
/// A peer task with nothing to send for this long ends (a later send starts a new one).
const PEER_IDLE: Duration = Duration::from_secs(60);
/// At most one warning per kind of trouble in this interval; the rest are logged at debug.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How long [`Transport::close`] waits for connections to close cleanly.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Application close codes.
const CODE_CLOSING: u32 = 0;
const CODE_NO_IDENTITY: u32 = 1;
const CODE_TOO_LARGE: u32 = 2;

/// How to run a [`Transport`].
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The UDP address to listen on, and to dial from (port 0 picks one).
    pub listen: SocketAddr,
    /// The node's certificate, key and fleet CA.
    pub credentials: NodeCredentials,
    /// Frames queued per peer before further ones are dropped (default 256).
    pub send_queue: usize,
    /// Received frames queued for the consumer before further ones are dropped (default 4096).
    pub inbound_queue: usize,
    /// The largest frame sent or accepted, in bytes (default 1 MiB).
    pub max_frame: usize,
    /// How long a connection attempt may take (default 2 s).
    pub connect_timeout: Duration,
    /// A connection that hears nothing for this long is closed (default 10 s); keep-alives are sent at
    /// a third of it. At least 100 ms.
    pub idle_timeout: Duration,
}

impl TransportConfig {
    /// A configuration with the default queues, frame limit and timeouts.
    pub fn new(listen: SocketAddr, credentials: NodeCredentials) -> Self {
        Self {
            listen,
            credentials,
            send_queue: DEFAULT_SEND_QUEUE,
            inbound_queue: DEFAULT_INBOUND_QUEUE,
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    fn validate(&self) -> Result<(), TransportError> {
        let bad =
            |field: &'static str, reason: &str| Err(TransportError::InvalidConfig { field, reason: reason.to_owned() });
        if self.send_queue == 0 {
            return bad("send_queue", "must be at least 1");
        }
        if self.inbound_queue == 0 {
            return bad("inbound_queue", "must be at least 1");
        }
        if self.max_frame == 0 {
            return bad("max_frame", "must be at least 1");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be more than 0");
        }
        if self.idle_timeout < MIN_IDLE_TIMEOUT {
            return bad("idle_timeout", "must be at least 100 ms");
        }
        Ok(())
    }

    /// The QUIC transport parameters, the same on both sides.
    fn quic(&self) -> Result<quinn::TransportConfig, TransportError> {
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| TransportError::InvalidConfig { field: "idle_timeout", reason: "too large".to_owned() })?;
        let mut quic = quinn::TransportConfig::default();
        quic.max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.idle_timeout / 3))
            .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
            .datagram_send_buffer_size(DATAGRAM_BUFFER)
            .max_concurrent_uni_streams(VarInt::from_u32(MAX_STREAMS))
            .max_concurrent_bidi_streams(VarInt::from_u32(0));
        Ok(quic)
    }
}

/// What can go wrong starting a [`Transport`].
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A field of [`TransportConfig`] is out of range.
    #[error("invalid transport config: {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The TLS configuration could not be built from the credentials.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built from the CA certificate.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The TLS configuration is not usable for QUIC.
    #[error("QUIC TLS configuration: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// [`Transport::bind`] was not called within a tokio runtime.
    #[error("the mesh transport must be started within a tokio runtime")]
    NoRuntime,
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
}

/// A frame received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The peer's UDP address: the address it listens on, which other nodes send to.
    pub from: SocketAddr,
    /// The identity in the peer's certificate.
    pub peer: PeerIdentity,
    /// The frame, as the peer sent it.
    pub frame: Vec<u8>,
}

/// A peer this node has an open connection with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLink {
    /// The peer's UDP address.
    pub addr: SocketAddr,
    /// The identity in the peer's certificate.
    pub identity: PeerIdentity,
    /// QUIC's current round-trip time estimate.
    pub rtt: Duration,
}

/// The mesh transport: one QUIC endpoint that listens and dials, with a connection per peer.
///
/// A cheap handle: clones share the endpoint. The endpoint closes on [`close`](Self::close) or when
/// the last handle is dropped.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.inner.shared;
        f.debug_struct("Transport").field("local_addr", &shared.local_addr).field("identity", &shared.identity).finish()
    }
}

/// Owned by the [`Transport`] handles only (tasks hold [`Shared`]): dropping the last handle shuts
/// the endpoint down.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

/// State shared by the handles and the tasks.
struct Shared {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    identity: PeerIdentity,
    local_addr: SocketAddr,
    send_queue: usize,
    max_frame: usize,
    connect_timeout: Duration,
    runtime: tokio::runtime::Handle,
    counters: Counters,
    faults: FaultInjector,
    /// Taken at shutdown, so the consumer's receiver ends once the readers have stopped.
    inbound: Mutex<Option<mpsc::Sender<Inbound>>>,
    /// The connection used to send to each peer address.
    links: Mutex<HashMap<SocketAddr, Link>>,
    /// The queue of each peer task.
    queues: Mutex<HashMap<SocketAddr, Queue>>,
    next_queue: AtomicU64,
    closing: AtomicBool,
    started: Instant,
    warn_refused: WarnGate,
    warn_connect: WarnGate,
    warn_inbound_full: WarnGate,
    warn_oversized: WarnGate,
}

struct Link {
    conn: Connection,
    identity: PeerIdentity,
}

struct Queue {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Transport {
    /// Binds the endpoint and starts accepting connections. Returns the handle and the receiver of
    /// the frames peers send; the receiver ends after [`close`](Self::close).
    ///
    /// Must be called within a tokio runtime; the transport's tasks run on it.
    pub async fn bind(config: TransportConfig) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        let quic = Arc::new(config.quic()?);
        let server_config = tls::server_config(&config.credentials, quic.clone())?;
        let client_config = tls::client_config(&config.credentials, quic)?;
        let bind_error = |source| TransportError::Bind { addr: config.listen, source };
        let endpoint = quinn::Endpoint::server(server_config, config.listen).map_err(bind_error)?;
        let local_addr = endpoint.local_addr().map_err(bind_error)?;
        let (tx, rx) = mpsc::channel(config.inbound_queue);
        let identity = config.credentials.identity().clone();
        let shared = Arc::new(Shared {
            endpoint,
            client_config,
            identity,
            local_addr,
            send_queue: config.send_queue,
            max_frame: config.max_frame,
            connect_timeout: config.connect_timeout,
            runtime,
            counters: Counters::default(),
            faults: FaultInjector::default(),
            inbound: Mutex::new(Some(tx)),
            links: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            next_queue: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            started: Instant::now(),
            warn_refused: WarnGate::default(),
            warn_connect: WarnGate::default(),
            warn_inbound_full: WarnGate::default(),
            warn_oversized: WarnGate::default(),
        });
        tokio::spawn(accept_loop(shared.clone()));
        info!(%local_addr, identity = %shared.identity, "mesh transport listening");
        Ok((Transport { inner: Arc::new(Handle { shared }) }, rx))
    }

    /// The address the endpoint is bound to (with the port picked, if port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.shared.local_addr
    }

    /// This node's identity, from its certificate.
    pub fn identity(&self) -> &PeerIdentity {
        &self.inner.shared.identity
    }

    /// Queues `frame` for the peer listening at `to`; never waits, never blocks.
    ///
    /// The peer's task connects (one cached connection per peer, reconnecting with backoff after a
    /// failure) and sends a frame that fits the connection's `max_datagram_size` as a QUIC datagram
    /// and a larger one on its own unidirectional stream. A frame is dropped and counted if it is
    /// larger than `max_frame`, the peer is blocked by the [`FaultInjector`], the peer's queue is full
    /// or the peer cannot be reached.
    pub fn send(&self, to: SocketAddr, frame: Vec<u8>) {
        let to = canonical(to);
        let shared = &self.inner.shared;
        let c = &shared.counters;
        if frame.len() > shared.max_frame {
            bump(&c.dropped_oversized);
            if shared.warn_oversized.allow(shared.started) {
                warn!(%to, len = frame.len(), max = shared.max_frame, "frame larger than max_frame dropped");
            }
            return;
        }
        if shared.faults.is_blocked(to) {
            bump(&c.dropped_fault);
            return;
        }
        if shared.closing.load(Ordering::Acquire) {
            bump(&c.dropped_unreachable);
            return;
        }
        let mut queues = lock(&shared.queues);
        let mut frame = frame;
        // At most twice: a closed queue (its task has ended) is replaced once.
        for _ in 0..2 {
            let queue = queues.entry(to).or_insert_with(|| shared.start_peer(to));
            match queue.tx.try_send(frame) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    bump(&c.dropped_queue_full);
                    return;
                }
                Err(TrySendError::Closed(back)) => {
                    queues.remove(&to);
                    frame = back;
                }
            }
        }
        bump(&c.dropped_unreachable);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        self.inner.shared.counters.snapshot()
    }

    /// The peers with an open connection, by address.
    pub fn peers(&self) -> Vec<PeerLink> {
        let links = lock(&self.inner.shared.links);
        let mut peers: Vec<PeerLink> = links
            .iter()
            .filter(|(_, link)| link.conn.close_reason().is_none())
            .map(|(addr, link)| PeerLink { addr: *addr, identity: link.identity.clone(), rtt: link.conn.rtt() })
            .collect();
        peers.sort_by_key(|p| p.addr);
        peers
    }

    /// The fault injector, to simulate partitions.
    pub fn faults(&self) -> &FaultInjector {
        &self.inner.shared.faults
    }

    /// Closes every connection and the endpoint, and waits (at most about a second) for the peers to
    /// be told. Frames sent afterwards are dropped; the inbound receiver ends once the readers stop.
    pub async fn close(&self) {
        let shared = &self.inner.shared;
        shared.shutdown();
        if tokio::time::timeout(CLOSE_WAIT, shared.endpoint.wait_idle()).await.is_err() {
            debug!("endpoint not idle after {CLOSE_WAIT:?}; closing anyway");
        }
        info!(local_addr = %shared.local_addr, "mesh transport closed");
    }
}

impl Shared {
    /// Stops accepting and sending: ends the peer tasks, closes the connections and the endpoint.
    fn shutdown(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.queues).clear();
        lock(&self.inbound).take();
        self.endpoint.close(VarInt::from_u32(CODE_CLOSING), b"closing");
    }

    /// Starts the task that sends to `to`; returns its queue.
    fn start_peer(self: &Arc<Self>, to: SocketAddr) -> Queue {
        let (tx, rx) = mpsc::channel(self.send_queue);
        let id = self.next_queue.fetch_add(1, Ordering::Relaxed);
        self.runtime.spawn(peer_task(self.clone(), to, id, rx));
        Queue { id, tx }
    }

    /// The open connection to `to`, if any.
    fn link(&self, to: SocketAddr) -> Option<Connection> {
        let links = lock(&self.links);
        links.get(&to).filter(|link| link.conn.close_reason().is_none()).map(|link| link.conn.clone())
    }

    /// Takes a verified connection into service: it becomes the one used to send to its peer (the
    /// newest wins; an older one stays open until it dies) and its reader starts.
    fn adopt(self: &Arc<Self>, conn: Connection, identity: PeerIdentity) {
        let addr = canonical(conn.remote_address());
        let replaced = lock(&self.links).insert(addr, Link { conn: conn.clone(), identity: identity.clone() });
        if replaced.is_some_and(|old| old.conn.close_reason().is_none()) {
            debug!(%addr, peer = %identity, "second connection with peer; sending on the newer one");
        }
        bump(&self.counters.connections_open);
        let inbound = lock(&self.inbound).clone();
        debug!(%addr, peer = %identity, side = ?conn.side(), "connection up");
        tokio::spawn(read_connection(self.clone(), conn, identity, inbound));
    }

    /// Counts a frame that arrived from `from` and hands it to the consumer.
    fn deliver(
        &self,
        inbound: Option<&mpsc::Sender<Inbound>>,
        from: SocketAddr,
        peer: &PeerIdentity,
        frame: Vec<u8>,
        stream: bool,
    ) {
        let c = &self.counters;
        if self.faults.is_blocked(from) {
            bump(&c.dropped_fault);
            return;
        }
        let Some(tx) = inbound else { return };
        // Reserve first and count before handing over, so a consumer that has the frame sees it
        // counted.
        match tx.try_reserve() {
            Ok(permit) => {
                bump(if stream { &c.streams_in } else { &c.datagrams_in });
                add(&c.bytes_in, frame.len());
                permit.send(Inbound { from, peer: peer.clone(), frame });
            }
            Err(TrySendError::Full(())) => {
                bump(&c.dropped_inbound_full);
                if self.warn_inbound_full.allow(self.started) {
                    warn!(%from, "inbound queue full: frames dropped (consumer too slow)");
                }
            }
            Err(TrySendError::Closed(())) => {}
        }
    }

    /// Counts a handshake that failed or was refused; `dialled` for connections we started.
    fn handshake_failed(&self, addr: SocketAddr, error: &ConnectionError, dialled: bool) {
        if dialled {
            bump(&self.counters.connect_failures);
        }
        if refused_locally(error) {
            bump(&self.counters.refused_handshakes);
            if self.warn_refused.allow(self.started) {
                warn!(%addr, %error, "handshake refused: peer certificate not from the fleet CA");
            } else {
                debug!(%addr, %error, "handshake refused");
            }
        } else if dialled && self.warn_connect.allow(self.started) {
            warn!(%addr, %error, "cannot connect to peer");
        } else {
            debug!(%addr, %error, dialled, "handshake failed");
        }
    }

    /// Closes a connection whose certificate carries no valid identity.
    fn refuse_identity(&self, conn: &Connection, reason: &str, dialled: bool) {
        let addr = conn.remote_address();
        conn.close(VarInt::from_u32(CODE_NO_IDENTITY), b"no valid identity");
        bump(&self.counters.refused_handshakes);
        if dialled {
            bump(&self.counters.connect_failures);
        }
        if self.warn_refused.allow(self.started) {
            warn!(%addr, reason, "connection refused: peer certificate carries no valid identity");
        } else {
            debug!(%addr, reason, "connection refused: no valid identity");
        }
    }
}

/// Accepts connections until the endpoint closes.
async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.closing.load(Ordering::Acquire) {
            incoming.refuse();
            continue;
        }
        tokio::spawn(accept(shared.clone(), incoming));
    }
    debug!("endpoint closed; no longer accepting");
}

/// Completes an incoming handshake and adopts the connection.
async fn accept(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let addr = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => return shared.handshake_failed(addr, &error, false),
    };
    // The handshake is bounded by the idle timeout.
    match connecting.await {
        Ok(conn) => match peer_identity(&conn) {
            Ok(identity) => shared.adopt(conn, identity),
            Err(reason) => shared.refuse_identity(&conn, &reason, false),
        },
        Err(error) => shared.handshake_failed(addr, &error, false),
    }
}

/// Dials `to`; on success the connection is adopted.
async fn connect(shared: &Arc<Shared>, to: SocketAddr) -> Option<Connection> {
    let connecting = match shared.endpoint.connect_with(shared.client_config.clone(), to, MESH_SERVER_NAME) {
        Ok(connecting) => connecting,
        Err(error) => {
            bump(&shared.counters.connect_failures);
            if shared.warn_connect.allow(shared.started) {
                warn!(%to, %error, "cannot connect to peer");
            }
            return None;
        }
    };
    // Dropping `connecting` on timeout abandons the attempt.
    let conn = match tokio::time::timeout(shared.connect_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            shared.handshake_failed(to, &error, true);
            return None;
        }
        Err(_) => {
            shared.handshake_failed(to, &ConnectionError::TimedOut, true);
            return None;
        }
    };
    match peer_identity(&conn) {
        Ok(identity) => {
            shared.adopt(conn.clone(), identity);
            Some(conn)
        }
        Err(reason) => {
            shared.refuse_identity(&conn, &reason, true);
            None
        }
    }
}

/// The identity in the leaf certificate the peer presented.
fn peer_identity(conn: &Connection) -> Result<PeerIdentity, String> {
    let any = conn.peer_identity().ok_or("no peer certificate")?;
    let chain = any.downcast::<Vec<CertificateDer<'static>>>().map_err(|_| "unexpected peer identity type")?;
    let leaf = chain.first().ok_or("empty certificate chain")?;
    identity_of(leaf).map_err(|e| e.to_string())
}

/// Whether the handshake failed because this side's TLS refused the peer (a TLS alert we raised).
fn refused_locally(error: &ConnectionError) -> bool {
    match error {
        ConnectionError::TransportError(e) => (0x100..=0x1ff).contains(&u64::from(e.code)),
        _ => false,
    }
}

/// Whether the peer closed a connection because it refused our certificate.
fn refused_by_peer(error: &ConnectionError) -> bool {
    match error {
        ConnectionError::ConnectionClosed(close) => (0x100..=0x1ff).contains(&u64::from(close.error_code)),
        ConnectionError::ApplicationClosed(close) => close.error_code == VarInt::from_u32(CODE_NO_IDENTITY),
        _ => false,
    }
}

/// Sends the frames queued for `to`, connecting as needed.
async fn peer_task(shared: Arc<Shared>, to: SocketAddr, id: u64, mut rx: mpsc::Receiver<Vec<u8>>) {
    let streams = Arc::new(Semaphore::new(MAX_STREAMS as usize));
    let mut backoff = BACKOFF_MIN;
    let mut retry_at: Option<Instant> = None;
    // The last connection this task dialled: if the peer refuses us after our side of the handshake
    // completed (TLS 1.3 clients finish first), the attempt counts as failed.
    let mut dialled: Option<(Connection, Instant)> = None;
    loop {
        let frame = match tokio::time::timeout(PEER_IDLE, rx.recv()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(_) => {
                // Idle: end, unless a frame slipped in (send() queues under the same lock).
                let mut queues = lock(&shared.queues);
                if rx.is_empty() {
                    if queues.get(&to).is_some_and(|q| q.id == id) {
                        queues.remove(&to);
                    }
                    return;
                }
                continue;
            }
        };
        let c = &shared.counters;
        if shared.closing.load(Ordering::Acquire) {
            bump(&c.dropped_unreachable);
            continue;
        }
        if shared.faults.is_blocked(to) {
            bump(&c.dropped_fault);
            continue;
        }
        let link = shared.link(to);
        if link.is_some() && dialled.as_ref().is_none_or(|(_, at)| at.elapsed() >= PROVEN) {
            backoff = BACKOFF_MIN;
        }
        if link.is_none()
            && let Some((prev, _)) = dialled.take()
            && prev.close_reason().is_some_and(|error| refused_by_peer(&error))
        {
            // Counted in connect_failures by the connection's reader.
            retry_at = Some(Instant::now() + backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        let conn = match link {
            Some(conn) => conn,
            None if retry_at.is_some_and(|at| Instant::now() < at) => {
                bump(&c.dropped_unreachable);
                continue;
            }
            None => match connect(&shared, to).await {
                Some(conn) => {
                    retry_at = None;
                    dialled = Some((conn.clone(), Instant::now()));
                    conn
                }
                None => {
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    bump(&c.dropped_unreachable);
                    continue;
                }
            },
        };
        send_frame(&shared, to, conn, frame, &streams).await;
    }
}

/// Sends one frame on `conn`: as a datagram if it fits, else on its own stream (written by a task
/// of its own, at most [`MAX_STREAMS`] at once per peer).
async fn send_frame(shared: &Arc<Shared>, to: SocketAddr, conn: Connection, frame: Vec<u8>, streams: &Arc<Semaphore>) {
    let c = &shared.counters;
    let len = frame.len();
    let data = Bytes::from(frame);
    if conn.max_datagram_size().is_some_and(|max| len <= max) {
        // Waits while the datagram buffer is full: backpressure into the bounded queue.
        match conn.send_datagram_wait(data.clone()).await {
            Ok(()) => {
                bump(&c.datagrams_out);
                add(&c.bytes_out, len);
                return;
            }
            Err(SendDatagramError::ConnectionLost(error)) => {
                debug!(%to, %error, "connection lost while sending a datagram");
                bump(&c.dropped_unreachable);
                return;
            }
            // The path shrank or the peer takes no datagrams: use a stream.
            Err(SendDatagramError::TooLarge | SendDatagramError::UnsupportedByPeer | SendDatagramError::Disabled) => {}
        }
    }
    let Ok(permit) = streams.clone().acquire_owned().await else {
        bump(&c.dropped_unreachable);
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let c = &shared.counters;
        match write_stream(&conn, data).await {
            Ok(()) => {
                bump(&c.streams_out);
                add(&c.bytes_out, len);
            }
            Err(error) => {
                debug!(%to, %error, len, "stream send failed");
                bump(&c.dropped_unreachable);
            }
        }
    });
}

async fn write_stream(conn: &Connection, data: Bytes) -> Result<(), String> {
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    send.write_chunk(data).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())
}

/// Reads datagrams and streams from a connection until it closes, then forgets it.
async fn read_connection(
    shared: Arc<Shared>,
    conn: Connection,
    identity: PeerIdentity,
    inbound: Option<mpsc::Sender<Inbound>>,
) {
    let addr = canonical(conn.remote_address());
    let reason = loop {
        tokio::select! {
            datagram = conn.read_datagram() => match datagram {
                Ok(datagram) if datagram.len() > shared.max_frame => bump(&shared.counters.dropped_oversized),
                Ok(datagram) => shared.deliver(inbound.as_ref(), addr, &identity, Vec::from(datagram), false),
                Err(error) => break error,
            },
            stream = conn.accept_uni() => match stream {
                Ok(stream) => {
                    tokio::spawn(read_stream(shared.clone(), stream, addr, identity.clone(), inbound.clone()));
                }
                Err(error) => break error,
            },
        }
    };
    {
        let mut links = lock(&shared.links);
        if links.get(&addr).is_some_and(|link| link.conn.stable_id() == conn.stable_id()) {
            links.remove(&addr);
        }
    }
    shared.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
    if conn.side().is_client() && refused_by_peer(&reason) {
        // Our side of the handshake had completed, but the peer refused our certificate.
        bump(&shared.counters.connect_failures);
        if shared.warn_connect.allow(shared.started) {
            warn!(%addr, %reason, "peer refused our certificate");
        }
    }
    debug!(%addr, peer = %identity, %reason, "connection closed");
}

/// Reads one frame from a stream.
async fn read_stream(
    shared: Arc<Shared>,
    mut stream: RecvStream,
    from: SocketAddr,
    peer: PeerIdentity,
    inbound: Option<mpsc::Sender<Inbound>>,
) {
    match stream.read_to_end(shared.max_frame).await {
        Ok(frame) => shared.deliver(inbound.as_ref(), from, &peer, frame, true),
        Err(quinn::ReadToEndError::TooLong) => {
            let _ = stream.stop(VarInt::from_u32(CODE_TOO_LARGE));
            bump(&shared.counters.dropped_oversized);
            if shared.warn_oversized.allow(shared.started) {
                warn!(%from, %peer, max = shared.max_frame, "stream frame larger than max_frame dropped");
            }
        }
        Err(error) => debug!(%from, %peer, %error, "stream read failed"),
    }
}

/// Lets one warning through per [`WARN_INTERVAL`].
#[derive(Debug, Default)]
struct WarnGate {
    /// Milliseconds since `started` of the last warning, plus one (0: never).
    last: AtomicU64,
}

impl WarnGate {
    fn allow(&self, started: Instant) -> bool {
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let interval = u64::try_from(WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < interval {
            return false;
        }
        self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// The address as peers know it: an IPv4-mapped IPv6 address (as a dual-stack socket reports an IPv4
/// peer) becomes the IPv4 address.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
