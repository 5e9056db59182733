//! Timings of the mesh, tuned per profile and expected cluster size.
//!
//! Detection time of a crash is roughly: time until some member probes the dead one
//! (exponential with mean ≈ the probe period, so p99 ≈ 4.6 periods), one more period to
//! notice the failed probe, the suspicion timeout, then dissemination of "down". The probe
//! period is therefore short, and the suspicion timeout can be short too because a suspected
//! member is told directly (and again every [`MeshConfig::refute_retry`]) and answers the
//! suspecter directly, instead of relying on gossip alone to carry suspicion and refutation.

use crate::Profile;
use foca::{Config, PeriodicParams};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// Largest mesh frame carried as a single datagram by default (bytes, frame byte included):
/// the QUIC transport carries datagrams of about 1,150 bytes.
pub const DEFAULT_MAX_PACKET: usize = 1100;
/// Smallest allowed maximum packet: a full node state plus a SWIM header.
pub const MIN_MAX_PACKET: usize = crate::MAX_STATE_BYTES + 320;

/// Every timing and extension of the mesh. [`MeshConfig::new`] gives the tuned values;
/// [`MeshConfig::stock`] gives foca's own profile without the mesh's extensions (for
/// comparison).
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    /// Which profile these timings came from.
    pub profile: Profile,
    /// Fleet size the timings were tuned for; the state budget assumes at least this many
    /// members until more are known.
    pub expected_size: u32,
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long to wait for a direct probe reply before asking others to probe.
    pub probe_rtt: Duration,
    /// How many members are asked to probe indirectly (also the fan-out of immediate gossip).
    pub indirect_probes: usize,
    /// Direct retries sent to a member that did not answer its probe in time, alongside the
    /// indirect probes (spread over the rest of the probe period and the hold; 0: none).
    pub probe_retries: u32,
    /// How long the end of an unanswered probe (when SWIM would suspect the member) may be
    /// held back while direct retries are still out.
    pub probe_hold: Duration,
    /// How many times each membership update and node state is passed on by each node.
    pub max_transmissions: u8,
    /// How long a suspected member has to refute before it is declared down.
    pub suspicion: Duration,
    /// Periodic gossip (when there is something to pass on): how often, to how many.
    pub gossip_period: Duration,
    /// Members each periodic gossip goes to.
    pub gossip_fanout: usize,
    /// Periodic announce to a random member (discovers members).
    pub announce_period: Duration,
    /// Periodic announce to members declared down (heals partitions).
    pub announce_down_period: Duration,
    /// How often a suspected member is told again that it is suspected (`None`: never told
    /// directly, only through gossip).
    pub refute_retry: Option<Duration>,
    /// Most a node's local health multiplier can grow (0 disables local health awareness).
    pub max_local_health: u32,
    /// Whether a node that learns of a member declared down passes it on at once instead of
    /// waiting for the next gossip round.
    pub forward_downs: bool,
    /// Node states new to a node are passed on to a few members this soon after they
    /// arrive (gathering those that arrive meanwhile), instead of waiting for the next probe
    /// or gossip round. `None`: only with probes and periodic gossip.
    pub forward_states: Option<Duration>,
    /// Members each of those forwards goes to.
    pub forward_fanout: usize,
    /// Anti-entropy interval in a settled fleet, at least (see [`MeshConfig::sync_per_member`]).
    pub sync_interval: Duration,
    /// Added to the anti-entropy interval per known member, so its traffic stays flat in N.
    pub sync_per_member: Duration,
    /// How often a digest of this node's view of the membership goes to a random member
    /// (`None`: never). Two views that differ once both have settled for
    /// [`MeshConfig::settle`] start a full exchange, so a member that missed an update
    /// catches up in seconds rather than at the next anti-entropy round.
    pub digest_interval: Option<Duration>,
    /// How long a view must go unchanged before a differing digest counts.
    pub settle: Duration,
    /// Anti-entropy interval right after joining and while exchanges still teach new members.
    pub fast_sync_interval: Duration,
    /// Bytes per second of node-state traffic each node should receive at most: a node's own
    /// state is passed on at most every
    /// `members × size × (max_transmissions + forward_fanout) / budget` (every member receives
    /// each state about that many times). `None`: every publication is passed on at once.
    pub state_budget: Option<u32>,
    /// A node's own state is passed on at most this often, whatever the budget.
    pub min_state_interval: Duration,
    /// Largest frame sent as a datagram (bytes, frame byte included). Anti-entropy frames
    /// may be larger (the transport sends those on streams).
    pub max_packet_size: usize,
}

fn log10_size(expected_cluster_size: u32) -> f64 {
    f64::from(expected_cluster_size.max(2)).log10()
}

fn max_tx(expected_cluster_size: u32) -> u8 {
    // foca's (and memberlist's) rule, 4 × log10(N + 1), but at least 8: small fleets spend
    // three on the immediate forward of "down" and need a few more to reach every member.
    let tx = f64::from(expected_cluster_size.saturating_add(1)).log10() * 4.0;
    if tx >= 16.0 {
        16
    } else if tx <= 8.0 {
        8
    } else {
        tx as u8
    }
}

impl MeshConfig {
    /// Tuned timings for `profile` and a fleet of about `expected_cluster_size` nodes.
    pub fn new(profile: Profile, expected_cluster_size: u32) -> Self {
        let n = expected_cluster_size.max(1);
        let log_n = log10_size(n);
        match profile {
            Profile::Lan => MeshConfig {
                profile,
                expected_size: n,
                // Some member probes a dead one within ≈ 4.6 periods (p99): 0.9 s up to 100
                // nodes. Larger fleets have a looser goal (5 s at 1,000) and every message costs
                // each receiver a scan of its member list, so the period grows to 0.4 s there.
                probe_period: Duration::from_secs_f64(0.2 * (log_n - 1.0).clamp(1.0, 2.0)),
                // A generous LAN round trip (the indirect cycle and retries get the rest).
                probe_rtt: Duration::from_millis(80),
                indirect_probes: 3,
                // Four direct retries over the last 220 ms: at 10 % loss a live member is
                // suspected about once per 10⁵ probes instead of once per 130.
                probe_retries: 4,
                probe_hold: Duration::from_millis(100),
                max_transmissions: max_tx(n),
                // 0.6 s at 10 nodes, 0.8 s at 100, 1.2 s at 1,000: at least six direct
                // "you are suspected" notices, each a chance to refute.
                suspicion: Duration::from_secs_f64((0.4 * log_n).max(0.6)),
                // A fallback only: "down" and node states are forwarded at once, suspicions are
                // told to the suspect directly; a node state keeps the backlog busy, so a
                // fast period would send a message every period.
                // Like the probe period, it grows to 2 s at 1,000 nodes.
                gossip_period: Duration::from_secs_f64((log_n - 1.0).clamp(1.0, 2.0)),
                gossip_fanout: 2,
                announce_period: Duration::from_secs(30),
                announce_down_period: Duration::from_secs(10),
                refute_retry: Some(Duration::from_millis(100)),
                max_local_health: 8,
                forward_downs: true,
                forward_states: Some(Duration::from_millis(20)),
                forward_fanout: 3,
                sync_interval: Duration::from_secs(10),
                sync_per_member: Duration::from_millis(200),
                digest_interval: Some(Duration::from_secs(1)),
                settle: Duration::from_secs(2),
                fast_sync_interval: Duration::from_secs(1),
                state_budget: Some(4 * 1024),
                min_state_interval: Duration::from_secs(1),
                max_packet_size: DEFAULT_MAX_PACKET,
            },
            Profile::Wan => MeshConfig {
                profile,
                expected_size: n,
                probe_period: Duration::from_secs(1),
                probe_rtt: Duration::from_millis(400),
                indirect_probes: 4,
                probe_retries: 4,
                probe_hold: Duration::from_millis(500),
                max_transmissions: max_tx(n),
                suspicion: Duration::from_secs_f64((1.5 * log_n).max(3.0)),
                gossip_period: Duration::from_secs(1),
                gossip_fanout: 2,
                announce_period: Duration::from_secs(60),
                announce_down_period: Duration::from_secs(30),
                refute_retry: Some(Duration::from_millis(300)),
                max_local_health: 8,
                forward_downs: true,
                forward_states: Some(Duration::from_millis(100)),
                forward_fanout: 3,
                sync_interval: Duration::from_secs(30),
                sync_per_member: Duration::from_millis(400),
                digest_interval: Some(Duration::from_secs(2)),
                settle: Duration::from_secs(4),
                fast_sync_interval: Duration::from_secs(3),
                state_budget: Some(4 * 1024),
                min_state_interval: Duration::from_secs(5),
                max_packet_size: DEFAULT_MAX_PACKET,
            },
        }
    }

    /// foca's stock profile (`Config::new_lan` / `Config::new_wan`) with none of the mesh's
    /// extensions: no direct suspicion notices, no local health, no immediate forwarding,
    /// anti-entropy every 10 s (LAN) / 30 s (WAN), no state budget.
    pub fn stock(profile: Profile, expected_cluster_size: u32) -> Self {
        let size = std::num::NonZeroU32::new(expected_cluster_size.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let stock = match profile {
            Profile::Lan => Config::new_lan(size),
            Profile::Wan => Config::new_wan(size),
        };
        let gossip = stock.periodic_gossip.clone();
        MeshConfig {
            profile,
            expected_size: expected_cluster_size.max(1),
            probe_period: stock.probe_period,
            probe_rtt: stock.probe_rtt,
            indirect_probes: stock.num_indirect_probes.get(),
            probe_retries: 0,
            probe_hold: Duration::ZERO,
            max_transmissions: stock.max_transmissions.get(),
            suspicion: stock.suspect_to_down_after,
            gossip_period: gossip.as_ref().map_or(Duration::from_millis(200), |g| g.frequency),
            gossip_fanout: gossip.as_ref().map_or(3, |g| g.num_members.get()),
            announce_period: stock.periodic_announce.as_ref().map_or(Duration::from_secs(30), |p| p.frequency),
            announce_down_period: stock
                .periodic_announce_to_down_members
                .as_ref()
                .map_or(Duration::from_secs(65), |p| p.frequency),
            refute_retry: None,
            max_local_health: 0,
            forward_downs: false,
            forward_states: None,
            forward_fanout: stock.num_indirect_probes.get(),
            sync_interval: match profile {
                Profile::Lan => Duration::from_secs(10),
                Profile::Wan => Duration::from_secs(30),
            },
            sync_per_member: Duration::ZERO,
            digest_interval: None,
            settle: Duration::from_secs(10),
            fast_sync_interval: match profile {
                Profile::Lan => Duration::from_secs(10),
                Profile::Wan => Duration::from_secs(30),
            },
            state_budget: None,
            min_state_interval: Duration::ZERO,
            max_packet_size: DEFAULT_MAX_PACKET,
        }
    }

    /// The foca configuration these timings make. Probe period and timeout are fixed for the
    /// life of a foca instance; the mesh stretches them itself for local health.
    pub(crate) fn foca(&self) -> Config {
        let nz = |n: usize| NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN);
        Config {
            probe_period: self.probe_period.max(Duration::from_millis(1)),
            probe_rtt: self.probe_rtt.clamp(Duration::from_micros(500), self.probe_period / 2),
            num_indirect_probes: nz(self.indirect_probes),
            max_transmissions: NonZeroU8::new(self.max_transmissions.max(1)).unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: self.suspicion.max(Duration::from_millis(1)),
            remove_down_after: Some(Duration::from_secs(24 * 3600)),
            // The frame byte is ours.
            max_packet_size: nz(self.max_packet_size.saturating_sub(1)),
            notify_down_members: true,
            periodic_announce: Some(PeriodicParams { frequency: self.announce_period, num_members: nz(1) }),
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: self.announce_down_period,
                num_members: nz(2),
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: self.gossip_period,
                num_members: nz(self.gossip_fanout),
            }),
        }
    }

    /// Steady anti-entropy interval with `members` known.
    pub(crate) fn steady_sync(&self, members: usize) -> Duration {
        let per = self.sync_per_member.saturating_mul(u32::try_from(members).unwrap_or(u32::MAX));
        self.sync_interval.max(per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_grow_with_the_fleet_and_stay_valid() {
        let small = MeshConfig::new(Profile::Lan, 10);
        let large = MeshConfig::new(Profile::Lan, 1000);
        assert!(small.suspicion < large.suspicion);
        assert!(small.max_transmissions < large.max_transmissions);
        assert_eq!((small.max_transmissions, large.max_transmissions), (8, 12));
        for config in [small, large, MeshConfig::new(Profile::Wan, 1000), MeshConfig::stock(Profile::Lan, 100)] {
            let foca = config.foca();
            assert!(foca.probe_rtt < foca.probe_period);
            assert_eq!(foca.max_packet_size.get(), DEFAULT_MAX_PACKET - 1);
        }
        assert_eq!(MeshConfig::new(Profile::Lan, 1000).steady_sync(1000), Duration::from_secs(200));
        assert_eq!(MeshConfig::new(Profile::Lan, 10).steady_sync(10), Duration::from_secs(10));
    }
}
