//! Real processes on loopback: five agents with certificates from one fleet CA (made by the
//! agent's own `ca init` / `cert issue`) form a mesh over QUIC; a `kill -9` is detected, the
//! node rejoins when restarted, an agent with another CA's certificate is refused, a partition
//! made with the transport's fault-injection hook heals, and a viral content key becomes a
//! cache hint on every node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, agent_binary, unique_dir};

const TOKEN: &str = "mesh-test-token-0123456789";

fn cli(args: &[&str]) {
    let output = Command::new(agent_binary()).args(args).output().unwrap();
    assert!(output.status.success(), "wedsync-agent {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

struct Fleet {
    ca: PathBuf,
}

impl Fleet {
    fn new() -> Fleet {
        let ca = unique_dir("ca");
        cli(&["ca", "init", "--dir", ca.to_str().unwrap()]);
        Fleet { ca }
    }

    fn issue(&self, node: &str, region: &str) {
        cli(&["cert", "issue", "--node", node, "--region", region, "--ca-dir", self.ca.to_str().unwrap()]);
    }

    fn start(&self, node: &str, region: &str, seeds: &[SocketAddr]) -> AgentProcess {
        start_with_ca(&self.ca, node, region, seeds)
    }
}

fn start_with_ca(ca: &Path, node: &str, region: &str, seeds: &[SocketAddr]) -> AgentProcess {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let config = format!(
        "[agent]\nnode_id = \"{node}\"\nregion = \"{region}\"\n[api]\ntoken = \"{TOKEN}\"\n\
         [mesh]\nseeds = [{}]\nca_cert = \"{ca}/ca.pem\"\ncert = \"{ca}/{node}.pem\"\nkey = \"{ca}/{node}.key\"\n\
         fault_injection = true\ncontent_interval = \"500ms\"\nviral_min_rate = 20.0\n",
        seeds.join(", "),
        ca = ca.display(),
    );
    // The harness names every agent "test-node"; these must match the certificates.
    let agent = AgentProcess::start_with_config(
        &config,
        &[("WEDSYNC__AGENT__NODE_ID", node), ("WEDSYNC__AGENT__REGION", region)],
    );
    assert!(agent.mesh.is_some(), "mesh address in the ready line");
    agent
}

/// Node ids a node believes alive (itself included).
fn alive(agent: &AgentProcess) -> BTreeSet<String> {
    let fleet = agent.get_json("/v1/fleet");
    fleet["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["node"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Polls every 100 ms until `check` holds for every agent, at most `limit`; returns the time taken.
fn wait_all(agents: &[&AgentProcess], limit: Duration, what: &str, check: impl Fn(&AgentProcess) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if agents.iter().all(|a| check(a)) {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            let views: Vec<_> = agents.iter().map(|a| alive(a)).collect();
            panic!("{what}: not reached within {limit:?}; views: {views:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn five_agents_converge_detect_a_kill_rejoin_refuse_strangers_and_heal_a_partition() {
    let fleet = Fleet::new();
    let nodes = [("n1", "eu"), ("n2", "eu"), ("n3", "us"), ("n4", "us"), ("n5", "ap")];
    for (node, region) in nodes {
        fleet.issue(node, region);
    }
    let first = fleet.start("n1", "eu", &[]);
    let seed = first.mesh.unwrap();
    let mut agents = vec![first];
    for (node, region) in &nodes[1..] {
        agents.push(fleet.start(node, region, &[seed]));
    }
    let all = names(&["n1", "n2", "n3", "n4", "n5"]);
    let refs: Vec<&AgentProcess> = agents.iter().collect();
    let took = wait_all(&refs, Duration::from_secs(20), "5 agents converge", |a| alive(a) == all);
    eprintln!("5 agents converged in {took:?}");

    // Every node derives the same coordinator per region.
    let coordinators: Vec<Value> = agents
        .iter()
        .map(|a| {
            let fleet = a.get_json("/v1/fleet");
            let regions = fleet["view"]["regions"].as_object().cloned().unwrap_or_default();
            Value::Object(regions.into_iter().map(|(name, r)| (name, r["coordinator"].clone())).collect())
        })
        .collect();
    assert!(coordinators.windows(2).all(|w| w[0] == w[1]), "coordinators differ: {coordinators:?}");
    assert_eq!(coordinators[0].as_object().map(|o| o.len()), Some(3), "{coordinators:?}");

    // kill -9 of n5: every other agent declares it gone within 5 s.
    let mut n5 = agents.pop().unwrap();
    n5.signal_and_wait("KILL", Duration::from_secs(5)).expect("n5 killed");
    let four = names(&["n1", "n2", "n3", "n4"]);
    let refs: Vec<&AgentProcess> = agents.iter().collect();
    let detected = wait_all(&refs, Duration::from_secs(15), "kill -9 detected", |a| alive(a) == four);
    eprintln!("kill -9 detected by all in {detected:?}");
    assert!(detected <= Duration::from_secs(5), "kill -9 detected by all only after {detected:?} (goal: 5 s)");

    // Restarted (new incarnation, new port), it rejoins.
    agents.push(fleet.start("n5", "ap", &[seed]));
    let refs: Vec<&AgentProcess> = agents.iter().collect();
    let rejoined = wait_all(&refs, Duration::from_secs(20), "n5 rejoins", |a| alive(a) == all);
    eprintln!("restarted n5 rejoined in {rejoined:?}");

    // An agent whose certificate comes from another CA is refused.
    let foreign = unique_dir("foreign-ca");
    cli(&["ca", "init", "--dir", foreign.to_str().unwrap()]);
    cli(&["cert", "issue", "--node", "intruder", "--region", "eu", "--ca-dir", foreign.to_str().unwrap()]);
    let intruder = start_with_ca(&foreign, "intruder", "eu", &[seed]);
    std::thread::sleep(Duration::from_secs(3));
    for agent in &agents {
        assert!(!alive(agent).contains("intruder"), "the intruder got in");
    }
    assert_eq!(alive(&intruder), names(&["intruder"]), "the intruder sees nobody");
    // The handshake fails both ways: the fleet's certificates do not chain to the intruder's
    // CA, and its certificate does not chain to the fleet's. (The server-side refusal of a
    // foreign client certificate is covered in wedsync-transport's own tests.)
    intruder.wait_for_metrics(Duration::from_secs(5), |text| {
        text.lines().any(|l| l.starts_with("wedsync_mesh_refused_handshakes_total") && !l.ends_with(" 0"))
    });
    let fleet_metrics =
        agents[0].wait_for_metrics(Duration::from_secs(5), |text| text.contains("wedsync_mesh_members"));
    assert!(fleet_metrics.contains("wedsync_mesh_members{state=\"alive\"} 5"), "{fleet_metrics}");
    drop(intruder);

    // Partition n2 away with the fault-injection hook; both sides notice; heal; all converge.
    let n2 = &agents[1];
    let (status, body) = n2.call("POST", "/v1/mesh/faults", Some(TOKEN), Some(r#"{"block_all": true}"#));
    assert_eq!(status, 200, "{body}");
    let others: Vec<&AgentProcess> = agents.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, a)| a).collect();
    let without_n2 = names(&["n1", "n3", "n4", "n5"]);
    wait_all(&others, Duration::from_secs(15), "partition seen by the majority", |a| alive(a) == without_n2);
    wait_all(&[n2], Duration::from_secs(15), "partition seen by n2", |a| alive(a) == names(&["n2"]));
    let (status, body) = n2.call("POST", "/v1/mesh/faults", Some(TOKEN), Some(r#"{"heal": true}"#));
    assert_eq!(status, 200, "{body}");
    let refs: Vec<&AgentProcess> = agents.iter().collect();
    let healed = wait_all(&refs, Duration::from_secs(30), "partition heals", |a| alive(a) == all);
    eprintln!("partition healed in {healed:?}");

    // Fault injection needs the token.
    let (status, _) = n2.call("POST", "/v1/mesh/faults", None, Some(r#"{"heal": true}"#));
    assert_eq!(status, 401);
    // Each injection is in the audit trail (queued before it takes effect; the writer thread
    // appends it moments later); the refused one too.
    let refused = |l: &str| l.contains("\"kind\":\"api.refused\"") && l.contains("/v1/mesh/faults");
    let deadline = Instant::now() + Duration::from_secs(5);
    let audit = loop {
        let audit = std::fs::read_to_string(n2.state_dir.join("audit.jsonl")).unwrap();
        if audit.lines().any(refused) || Instant::now() > deadline {
            break audit;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let faults: Vec<&str> = audit.lines().filter(|l| l.contains("\"kind\":\"mesh.faults\"")).collect();
    assert!(faults.len() >= 2 && faults[0].contains("\"block_all\":true"), "{audit}");
    assert!(audit.lines().any(refused), "{audit}");

    // A content key going viral on two nodes becomes a cache hint on every node.
    let burst: String = (0..50).map(|_| "photo.view:10|c|#content:album-42,class:media\n").collect();
    let started = Instant::now();
    let hinted = loop {
        agents[0].send(burst.as_bytes());
        agents[2].send(burst.as_bytes());
        let all_hinted = agents.iter().all(|a| {
            a.get_json("/v1/cache/hints")["hints"].as_array().is_some_and(|h| h.iter().any(|h| h["key"] == "album-42"))
        });
        if all_hinted {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "viral key never hinted everywhere");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("viral key hinted on every node {hinted:?} after the burst began");
}
