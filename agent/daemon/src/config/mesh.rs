//! `[mesh]`: membership and state gossip with the rest of the fleet, checked into the
//! [`MeshSettings`] the mesh driver ([`crate::fleet`]) and the simulated fleet
//! ([`crate::quic_fleet`]) start from.

use super::errors::Checker;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// `[mesh]`: membership and state gossip with the rest of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshSection {
    /// Whether to join a fleet at all.
    pub enabled: bool,
    /// UDP address the QUIC endpoint listens on.
    pub listen: String,
    /// Address peers reach this node at, when it differs from `listen` (NAT, `0.0.0.0`).
    /// Empty: the bound listen address.
    pub advertise: String,
    /// Peers to join through (`IP:PORT`); empty makes a fleet of one until others join it.
    pub seeds: Vec<String>,
    /// Timing profile: `"lan"` (data centre, 500 ms probes) or `"wan"` (PoPs across the internet).
    pub profile: String,
    /// About how many nodes the fleet has; tunes gossip fan-out and timeouts.
    pub expected_size: u32,
    /// PEM file of the fleet CA. The three TLS files are set together or not at all; when none
    /// is set the agent makes a throwaway CA that only this node trusts (a fleet of one).
    pub ca_cert: String,
    /// PEM certificate of this node, issued by the fleet CA (`wedsync-agent cert issue`).
    pub cert: String,
    /// PEM private key of this node.
    pub key: String,
    /// How often this node republishes its state (pools, load, health) when it has changed.
    pub state_interval: String,
    /// Interval of the content-key sketches (`content:` StatsD tags) merged across the fleet.
    pub content_interval: String,
    /// Fleet-wide rate (per second) a content key must reach to become a cache-warm hint.
    pub viral_min_rate: f64,
    /// How much faster than its recent average a key must grow to become a hint.
    pub viral_growth: f64,
    /// Allows `POST /v1/mesh/faults` to cut this node off from peers (tests, game days).
    pub fault_injection: bool,
}

impl Default for MeshSection {
    fn default() -> Self {
        MeshSection {
            enabled: true,
            listen: "127.0.0.1:7946".into(),
            advertise: String::new(),
            seeds: Vec::new(),
            profile: "lan".into(),
            expected_size: 16,
            ca_cert: String::new(),
            cert: String::new(),
            key: String::new(),
            state_interval: "1s".into(),
            content_interval: "1s".into(),
            viral_min_rate: 50.0,
            viral_growth: 3.0,
            fault_injection: false,
        }
    }
}

/// Gossip timing profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeshProfile {
    /// Low-latency networks.
    Lan,
    /// Wide-area links.
    Wan,
}

/// Where the node's mesh certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshTlsFiles {
    /// Fleet CA certificate (PEM).
    pub ca_cert: String,
    /// This node's certificate (PEM).
    pub cert: String,
    /// This node's private key (PEM).
    pub key: String,
}

/// The checked `[mesh]` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshSettings {
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Address advertised to peers, when set.
    pub advertise: Option<SocketAddr>,
    /// Seed peers.
    pub seeds: Vec<SocketAddr>,
    /// Timing profile.
    pub profile: MeshProfile,
    /// Expected fleet size.
    pub expected_size: u32,
    /// Certificates; `None` means a throwaway single-node CA.
    pub tls: Option<MeshTlsFiles>,
    /// State republish interval.
    #[serde(with = "humantime_serde")]
    pub state_interval: Duration,
    /// Content sketch interval.
    #[serde(with = "humantime_serde")]
    pub content_interval: Duration,
    /// Fleet-wide rate a content key must reach to become a hint.
    pub viral_min_rate: f64,
    /// Growth factor a content key must show to become a hint.
    pub viral_growth: f64,
    /// Whether the fault-injection endpoint is enabled.
    pub fault_injection: bool,
}

impl MeshSection {
    /// Checks every field into `c`; `None` when the mesh is off (or its listen address is bad).
    pub(super) fn validate(&self, c: &mut Checker) -> Option<MeshSettings> {
        let m = self;
        if !m.enabled {
            return None;
        }
        let listen = c.socket_addr("mesh.listen", &m.listen);
        let advertise = if m.advertise.is_empty() {
            None
        } else {
            let addr = c.socket_addr("mesh.advertise", &m.advertise);
            if addr.is_some_and(|a| a.ip().is_unspecified() || a.port() == 0) {
                c.fail("mesh.advertise", format!("{:?} must be a reachable IP and a non-zero port", m.advertise));
            }
            addr
        };
        let seeds: Vec<SocketAddr> = m
            .seeds
            .iter()
            .enumerate()
            .filter_map(|(i, seed)| c.socket_addr(&format!("mesh.seeds[{i}]"), seed))
            .collect();
        let profile = match m.profile.as_str() {
            "lan" => MeshProfile::Lan,
            "wan" => MeshProfile::Wan,
            other => {
                c.fail("mesh.profile", format!("{other:?} is not a profile (expected \"lan\" or \"wan\")"));
                MeshProfile::Lan
            }
        };
        let expected_size = c.range("mesh.expected_size", u64::from(m.expected_size), 1, 100_000);
        let files = [("mesh.ca_cert", &m.ca_cert), ("mesh.cert", &m.cert), ("mesh.key", &m.key)];
        let set = files.iter().filter(|(_, v)| !v.is_empty()).count();
        if set != 0 && set != files.len() {
            for (field, value) in files {
                if value.is_empty() {
                    c.fail(field, "is empty, but the other mesh TLS files are set (set all three or none)".into());
                }
            }
        }
        let tls = (set == files.len()).then(|| MeshTlsFiles {
            ca_cert: m.ca_cert.clone(),
            cert: m.cert.clone(),
            key: m.key.clone(),
        });
        let state_interval =
            c.duration("mesh.state_interval", &m.state_interval, Duration::from_millis(100), Duration::from_secs(300));
        let content_interval = c.duration(
            "mesh.content_interval",
            &m.content_interval,
            Duration::from_millis(250),
            Duration::from_secs(60),
        );
        if !(m.viral_min_rate.is_finite() && m.viral_min_rate > 0.0) {
            c.fail("mesh.viral_min_rate", format!("{} must be a positive number", m.viral_min_rate));
        }
        if !(m.viral_growth.is_finite() && m.viral_growth >= 1.0) {
            c.fail("mesh.viral_growth", format!("{} must be a number of at least 1", m.viral_growth));
        }
        Some(MeshSettings {
            listen: listen?,
            advertise,
            seeds,
            profile,
            expected_size: u32::try_from(expected_size).unwrap_or(u32::MAX),
            tls,
            state_interval,
            content_interval,
            viral_min_rate: m.viral_min_rate,
            viral_growth: m.viral_growth,
            fault_injection: m.fault_injection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::valid;

    #[test]
    fn mesh_defaults_to_a_fleet_of_one_on_loopback() {
        let mesh = valid().validate().unwrap().mesh.expect("mesh is on by default");
        assert!(mesh.listen.ip().is_loopback());
        assert!(mesh.seeds.is_empty());
        assert_eq!(mesh.tls, None, "no certificates: a throwaway CA");
        assert_eq!(mesh.profile, MeshProfile::Lan);
        let mut off = valid();
        off.mesh.enabled = false;
        assert_eq!(off.validate().unwrap().mesh, None);
    }

    #[test]
    fn mesh_fields_are_checked() {
        let mut config = valid();
        config.mesh.seeds = vec!["127.0.0.1:7000".into(), "nope".into()];
        config.mesh.profile = "moon".into();
        config.mesh.cert = "/etc/wedsync/node.pem".into();
        config.mesh.advertise = "0.0.0.0:7946".into();
        config.mesh.viral_growth = 0.5;
        config.mesh.state_interval = "1ms".into();
        let errors = config.validate().unwrap_err();
        for field in [
            "mesh.seeds[1]",
            "mesh.profile",
            "mesh.ca_cert",
            "mesh.key",
            "mesh.advertise",
            "mesh.viral_growth",
            "mesh.state_interval",
        ] {
            assert!(errors.names(field), "{field} not named in {errors}");
        }
        assert!(!errors.names("mesh.seeds[0]"));
        assert!(!errors.names("mesh.cert"));
    }
}
