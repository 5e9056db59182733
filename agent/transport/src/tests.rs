//! Transport tests: real QUIC on 127.0.0.1, every wait bounded.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType, string::Ia5String};
use rustls::pki_types::PrivatePkcs8KeyDer;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

use crate::pki::{NodeCredentials, PeerIdentity, ca_params, init_ca, issue_node_cert};
use crate::{Inbound, MESH_SERVER_NAME, Transport, TransportConfig, TransportStats};

/// A unique directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wedsync-transport-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA in memory, to issue test credentials quickly.
struct TestCa {
    cert: rustls::pki_types::CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params().unwrap();
        let cert = params.self_signed(&key).unwrap().der().clone();
        Self { cert, issuer: Issuer::new(params, key) }
    }

    fn node(&self, node: &str) -> NodeCredentials {
        NodeCredentials::issue(self.cert.clone(), &self.issuer, PeerIdentity::new(node, "test").unwrap()).unwrap()
    }
}

const WAIT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(credentials: NodeCredentials) -> (Transport, Receiver<Inbound>) {
    start_with(TransportConfig::new(loopback(), credentials)).await
}

async fn start_with(config: TransportConfig) -> (Transport, Receiver<Inbound>) {
    timeout(WAIT, Transport::bind(config)).await.unwrap().unwrap()
}

/// Sends `frame` every 100 ms until it arrives at `rx` (other frames are skipped); panics after
/// [`WAIT`].
async fn send_until_received(from: &Transport, to: SocketAddr, rx: &mut Receiver<Inbound>, frame: &[u8]) -> Inbound {
    let deadline = Instant::now() + WAIT;
    loop {
        from.send(to, frame.to_vec());
        let round = Instant::now() + Duration::from_millis(100);
        while let Ok(Some(inbound)) = timeout(round.saturating_duration_since(Instant::now()), rx.recv()).await {
            if inbound.frame == frame {
                return inbound;
            }
        }
        assert!(Instant::now() < deadline, "frame of {} bytes never arrived at {to}", frame.len());
    }
}

/// Waits until `cond` holds; panics after [`WAIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing arrives at `rx` for `quiet`.
async fn assert_silent(rx: &mut Receiver<Inbound>, quiet: Duration) {
    if let Ok(Some(inbound)) = timeout(quiet, rx.recv()).await {
        panic!("unexpected frame of {} bytes from {}", inbound.frame.len(), inbound.from);
    }
}

async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    timeout(WAIT, fut).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_datagrams_and_streams() {
    let dir = TempDir::new("mesh");
    let ca = init_ca(&dir.path().join("ca")).unwrap();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let paths = issue_node_cert(&dir.path().join("ca"), name, "eu-west", &dir.path().join("nodes")).unwrap();
        let creds = NodeCredentials::load(&ca.cert, &paths.cert, &paths.key).unwrap();
        nodes.push(start(creds).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(t, _)| t.local_addr()).collect();
    assert!(addrs.iter().all(|a| a.port() != 0));

    // Datagrams between every pair, both ways; `from` is the sender's listen address.
    for i in 0..3 {
        for j in 0..3 {
            if i == j {
                continue;
            }
            let frame = format!("ping {i}->{j}").into_bytes();
            let sender = nodes[i].0.clone();
            let got = send_until_received(&sender, addrs[j], &mut nodes[j].1, &frame).await;
            assert_eq!(got.from, addrs[i]);
            assert_eq!(got.peer, *nodes[i].0.identity());
            assert_eq!(got.peer.region, "eu-west");
        }
    }

    // A 200 KiB frame arrives intact, on a stream.
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let sender = nodes[0].0.clone();
    let before = sender.stats();
    sender.send(addrs[2], big.clone());
    let got = bounded(nodes[2].1.recv()).await.unwrap();
    assert_eq!(got.frame, big);
    assert_eq!(got.peer.node, "a");
    eventually("stream counted", || sender.stats().streams_out == before.streams_out + 1).await;

    let sent = nodes[0].0.stats();
    let received = nodes[2].0.stats();
    assert!(sent.datagrams_out >= 2, "{sent:?}");
    assert!(sent.bytes_out >= big.len() as u64, "{sent:?}");
    assert_eq!(received.streams_in, 1, "{received:?}");
    assert!(received.datagrams_in >= 2 && received.bytes_in >= big.len() as u64, "{received:?}");
    assert_eq!(sent.refused_handshakes + received.refused_handshakes, 0);
    assert!(sent.connections_open >= 2, "{sent:?}");

    let peers = nodes[0].0.peers();
    let peer_addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
    assert!(peer_addrs.contains(&addrs[1]) && peer_addrs.contains(&addrs[2]), "{peers:?}");
    assert!(peers.iter().any(|p| p.identity.node == "c"));

    for (t, _) in &nodes {
        bounded(t.close()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_cannot_talk_to_the_fleet() {
    let fleet = TestCa::new();
    let rogue_ca = TestCa::new();
    let (member, mut member_rx) = start(fleet.node("member")).await;
    let (rogue, mut rogue_rx) = start(rogue_ca.node("rogue")).await;

    // Rogue dials the fleet: its TLS refuses the fleet's server certificate.
    for _ in 0..5 {
        rogue.send(member.local_addr(), b"let me in".to_vec());
    }
    // Fleet dials rogue: the fleet refuses the rogue's server certificate.
    for _ in 0..5 {
        member.send(rogue.local_addr(), b"hello?".to_vec());
    }
    eventually("both sides refuse", || member.stats().refused_handshakes > 0 && rogue.stats().refused_handshakes > 0)
        .await;
    eventually("both sides count connect failures", || {
        member.stats().connect_failures > 0 && rogue.stats().connect_failures > 0
    })
    .await;
    assert_silent(&mut member_rx, Duration::from_millis(300)).await;
    assert_silent(&mut rogue_rx, Duration::from_millis(10)).await;
    assert!(member.peers().is_empty() && rogue.peers().is_empty());

    // A client that trusts the fleet CA but presents a foreign certificate is refused by the server
    // (the client-certificate check).
    let mut impostor_creds = rogue_ca.node("impostor");
    impostor_creds = NodeCredentials { ca: fleet.cert.clone(), ..impostor_creds };
    let (impostor, _impostor_rx) = start(impostor_creds).await;
    let refused_before = member.stats().refused_handshakes;
    impostor.send(member.local_addr(), b"let me in".to_vec());
    eventually("server refuses the client certificate", || member.stats().refused_handshakes > refused_before).await;
    eventually("impostor fails to connect", || {
        impostor.send(member.local_addr(), b"let me in".to_vec());
        impostor.stats().connect_failures > 0
    })
    .await;
    // It backs off instead of redialling for every frame.
    for _ in 0..20 {
        impostor.send(member.local_addr(), b"let me in".to_vec());
    }
    eventually("frames dropped while backing off", || impostor.stats().dropped_unreachable > 0).await;
    assert_silent(&mut member_rx, Duration::from_millis(300)).await;
    assert_eq!(member.stats().datagrams_in + member.stats().streams_in, 0);

    for t in [member, rogue, impostor] {
        bounded(t.close()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_certificate_without_identity_is_refused() {
    let fleet = TestCa::new();
    let (member, mut member_rx) = start(fleet.node("member")).await;

    // Signed by the fleet CA, valid for the server name, but with no spiffe identity.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "anonymous");
    params.subject_alt_names = vec![SanType::DnsName(Ia5String::try_from(MESH_SERVER_NAME).unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &fleet.issuer).unwrap();
    let anonymous = NodeCredentials {
        ca: fleet.cert.clone(),
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        identity: PeerIdentity::new("anonymous", "nowhere").unwrap(),
    };
    let (anon, _anon_rx) = start(anonymous).await;
    for _ in 0..3 {
        anon.send(member.local_addr(), b"who am i".to_vec());
    }
    eventually("member refuses the identity-less peer", || member.stats().refused_handshakes > 0).await;
    assert_silent(&mut member_rx, Duration::from_millis(300)).await;
    eventually("member holds no connection", || member.peers().is_empty()).await;
    eventually("the refused side counts a connect failure", || {
        anon.send(member.local_addr(), b"who am i".to_vec());
        anon.stats().connect_failures > 0
    })
    .await;

    bounded(member.close()).await;
    bounded(anon.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injector_blocks_and_heals() {
    let fleet = TestCa::new();
    let (a, mut a_rx) = start(fleet.node("a")).await;
    let (b, mut b_rx) = start(fleet.node("b")).await;
    send_until_received(&a, b.local_addr(), &mut b_rx, b"before").await;

    // Blocked on the sending side.
    a.faults().block(b.local_addr());
    assert!(a.faults().is_blocked(b.local_addr()));
    for _ in 0..5 {
        a.send(b.local_addr(), b"blocked".to_vec());
    }
    assert_silent(&mut b_rx, Duration::from_millis(300)).await;
    assert_eq!(a.stats().dropped_fault, 5);

    // Blocked on the receiving side.
    a.faults().heal();
    b.faults().block_all();
    let before = b.stats().dropped_fault;
    for _ in 0..5 {
        a.send(b.local_addr(), b"blocked too".to_vec());
    }
    eventually("receiver drops", || b.stats().dropped_fault >= before + 5).await;
    assert_silent(&mut b_rx, Duration::from_millis(200)).await;
    // b cannot send either.
    b.send(a.local_addr(), b"from b".to_vec());
    assert_silent(&mut a_rx, Duration::from_millis(200)).await;

    b.faults().heal();
    send_until_received(&a, b.local_addr(), &mut b_rx, b"after").await;
    send_until_received(&b, a.local_addr(), &mut a_rx, b"back").await;

    bounded(a.close()).await;
    bounded(b.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_dropped_and_counted() {
    let fleet = TestCa::new();
    let (a, _a_rx) = start(fleet.node("a")).await;
    let mut small = TransportConfig::new(loopback(), fleet.node("b"));
    small.max_frame = 64 * 1024;
    let (b, mut b_rx) = start_with(small).await;

    // Sending side: refused before queueing.
    b.send(a.local_addr(), vec![0; 64 * 1024 + 1]);
    assert_eq!(b.stats().dropped_oversized, 1);

    // Receiving side: a's limit is 1 MiB, b's 64 KiB.
    send_until_received(&a, b.local_addr(), &mut b_rx, b"warm up").await;
    a.send(b.local_addr(), vec![7; 100 * 1024]);
    eventually("receiver drops the oversized stream", || b.stats().dropped_oversized == 2).await;
    let fits = vec![9; 64 * 1024];
    a.send(b.local_addr(), fits.clone());
    let got = bounded(b_rx.recv()).await.unwrap();
    assert_eq!(got.frame, fits);
    eventually("stream counted", || b.stats().streams_in == 1).await;

    bounded(a.close()).await;
    bounded(b.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_peer_does_not_block() {
    let fleet = TestCa::new();
    let mut config = TransportConfig::new(loopback(), fleet.node("a"));
    config.connect_timeout = Duration::from_millis(300);
    config.send_queue = 8;
    let (a, _a_rx) = start_with(config).await;

    // A UDP socket that never answers, and an address nobody listens on.
    let silent = UdpSocket::bind(loopback()).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let closed_addr = UdpSocket::bind(loopback()).unwrap().local_addr().unwrap();

    let started = Instant::now();
    for _ in 0..1000 {
        a.send(silent_addr, vec![1; 100]);
        a.send(closed_addr, vec![2; 5000]);
    }
    assert!(started.elapsed() < Duration::from_millis(500), "send blocked: {:?}", started.elapsed());
    eventually("connect failures counted", || a.stats().connect_failures >= 2).await;
    let stats = a.stats();
    assert!(stats.dropped_queue_full > 0, "{stats:?}");
    assert_eq!(stats.datagrams_out + stats.streams_out, 0, "{stats:?}");
    assert_eq!(stats.connections_open, 0);
    drop(silent);
    bounded(a.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_prompt_and_final() {
    let fleet = TestCa::new();
    let (a, mut a_rx) = start(fleet.node("a")).await;
    let (b, mut b_rx) = start(fleet.node("b")).await;
    send_until_received(&a, b.local_addr(), &mut b_rx, b"hi").await;
    send_until_received(&b, a.local_addr(), &mut a_rx, b"hi back").await;

    let started = Instant::now();
    bounded(a.close()).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "close took {:?}", started.elapsed());
    // Sending after close drops quietly; closing twice is fine.
    a.send(b.local_addr(), b"late".to_vec());
    assert_eq!(a.stats().dropped_unreachable, 1);
    bounded(a.close()).await;
    // The inbound channel ends.
    while bounded(a_rx.recv()).await.is_some() {}
    // The peer notices.
    eventually("peer sees the close", || b.stats().connections_open == 0).await;
    bounded(b.close()).await;
}

#[tokio::test]
async fn bad_config_is_refused() {
    let creds = NodeCredentials::throwaway("solo", "r").unwrap();
    let mut config = TransportConfig::new(loopback(), creds);
    assert_eq!(config.send_queue, 256);
    assert_eq!(config.inbound_queue, 4096);
    assert_eq!(config.max_frame, 1 << 20);
    assert_eq!(config.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.idle_timeout, Duration::from_secs(10));
    config.inbound_queue = 0;
    let err = Transport::bind(config.clone()).await.unwrap_err();
    assert!(err.to_string().contains("inbound_queue"), "{err}");
    config.inbound_queue = 1;
    config.idle_timeout = Duration::ZERO;
    assert!(Transport::bind(config.clone()).await.is_err());

    // A single node on throwaway credentials runs.
    config.idle_timeout = Duration::from_secs(10);
    let (solo, _rx) = Transport::bind(config).await.unwrap();
    assert_eq!(solo.identity().node, "solo");
    assert_eq!(solo.stats(), TransportStats::default());
    bounded(solo.close()).await;
}

#[test]
fn ipv4_mapped_addresses_are_canonical() {
    let mapped: SocketAddr = "[::ffff:10.0.0.2]:7946".parse().unwrap();
    assert_eq!(crate::transport::canonical(mapped), "10.0.0.2:7946".parse::<SocketAddr>().unwrap());
    let v6: SocketAddr = "[2001:db8::1]:7946".parse().unwrap();
    assert_eq!(crate::transport::canonical(v6), v6);
}
