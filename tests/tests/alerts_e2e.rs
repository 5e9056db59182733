//! End to end with a real Alertmanager (Debian's `prometheus-alertmanager`): a wedding-day
//! shedding incident in the real agent reaches Alertmanager's tier-1 webhook receiver (this
//! test) as a `page` naming the wedding; unacknowledged, tier 2 gets it after the wedding-day
//! delay; acknowledged through the API, it goes no further; its resolve follows when the demand
//! falls back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, sample_value, unique_dir};

const TOKEN: &str = "alerts-e2e-token-0123456789";

/// Alertmanager's webhook notifications, as JSON.
type Received = Arc<Mutex<Vec<serde_json::Value>>>;

fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Received = Arc::default();
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body)
            {
                json["_path"] = serde_json::Value::String(path);
                keep.lock().unwrap().push(json);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_alertmanager(hook_port: u16) -> (Alertmanager, u16) {
    let dir = unique_dir("alertmanager");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: tier1\n  group_by: ['alertname', 'pool', 'class', 'escalation_tier']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             \x20 routes:\n    - matchers: ['escalation_tier=\"2\"']\n      receiver: tier2\n    - matchers: ['escalation_tier=\"3\"']\n      receiver: tier3\n\
             receivers:\n  - name: tier1\n    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/tier1\n        send_resolved: true\n\
             \x20 - name: tier2\n    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/tier2\n        send_resolved: true\n\
             \x20 - name: tier3\n    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/tier3\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (Debian package; .ci/run installs it)");
    let am = Alertmanager(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = ureq::get(&format!("http://127.0.0.1:{port}/-/ready")).call().is_ok_and(|r| r.status() == 200);
        if ready {
            return (am, port);
        }
        assert!(Instant::now() < deadline, "Alertmanager did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pool(am_port: u16) -> String {
    format!(
        r#"
[alerts]
alertmanager = ["http://127.0.0.1:{am_port}"]
resend_interval = "1s"
[alerts.rules.shedding]
for = "1s"
[alerts.escalation]
tiers = 3
wedding_delay = "2s"

[[pools]]
name = "checkout"
region = "test-region"
min = 1
max = 2
assume_size = 2
capacity_per_unit = 100.0
target_utilization = 0.7
provisioning_delay = "0s"
demand_metric = "requests"
demand_tags = ["service:checkout"]
"#
    )
}

/// Sends `media` and 20 wedding-critical requests/s of checkout demand until `until`.
fn demand(to: std::net::SocketAddr, media: u32, until: Instant) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    while Instant::now() < until {
        let datagram = format!(
            "requests:{}|c|#service:checkout,class:media\nrequests:2|c|#service:checkout,class:wedding-critical",
            media / 10
        );
        socket.send_to(datagram.as_bytes(), to).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(
    got: &Received,
    timeout: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = got.lock().unwrap().iter().find(|n| check(n)) {
            return found.clone();
        }
        assert!(Instant::now() < deadline, "{what} did not reach the receiver; got {:?}", got.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_wedding_day_shedding_incident_pages_through_alertmanager_and_resolves() {
    let (hook_port, got) = receiver();
    let (_am, am_port) = start_alertmanager(hook_port);
    let state = unique_dir("alerts-state");
    let env = [("WEDSYNC__API__TOKEN", TOKEN), ("WEDSYNC__STORAGE__DIR", state.to_str().unwrap())];
    let agent = AgentProcess::start_with_config(&pool(am_port), &env);
    let now = jiff::Timestamp::now();
    let wedding = format!(
        r#"{{"id":"w-ana-ben","region":"test-region","time_zone":"UTC","start":"{}","end":"{}","guests":120}}"#,
        now - jiff::SignedDuration::from_hours(1),
        now + jiff::SignedDuration::from_hours(2)
    );
    assert_eq!(agent.call("POST", "/v1/weddings", Some(TOKEN), Some(&wedding)).0, 201);

    // 1,000 media requests/s on a pool whose max serves 200: media is shed.
    let onset = Instant::now();
    let (firing, took, escalated, acked) = std::thread::scope(|s| {
        s.spawn(|| demand(agent.statsd, 1000, onset + Duration::from_secs(14)));
        let firing = wait_for(&got, Duration::from_secs(15), "the firing page", |n| {
            n["_path"] == "/tier1" && n["status"] == "firing" && n["alerts"][0]["labels"]["alertname"] == "PoolShedding"
        });
        let took = onset.elapsed();
        // Nobody acknowledges: tier 2 gets it after the wedding-day delay (2 s here, 30 s by default).
        let tier2 =
            wait_for(&got, Duration::from_secs(10), "tier 2", |n| n["_path"] == "/tier2" && n["status"] == "firing");
        let escalated = onset.elapsed() - took;
        assert_eq!(tier2["alerts"][0]["labels"]["escalation_tier"], "2", "{tier2}");
        // Acknowledged (by the token's holder): no tier 3.
        let view = agent.get_json("/v1/alerts");
        let fingerprint = view["firing"][0]["fingerprint"].as_str().unwrap().to_owned();
        let (status, body) = agent.call("POST", &format!("/v1/alerts/{fingerprint}/ack"), Some(TOKEN), None);
        assert_eq!(status, 200, "{body}");
        let (status, _) = agent.call("POST", &format!("/v1/alerts/{fingerprint}/ack"), None, None);
        assert_eq!(status, 401, "an ack needs a token");
        std::thread::sleep(Duration::from_secs(5));
        (firing, took, escalated, body)
    });
    assert!(acked.contains("\"acknowledged\""), "{acked}");
    assert!(!got.lock().unwrap().iter().any(|n| n["_path"] == "/tier3"), "acknowledged alerts escalate no further");
    eprintln!("page -> tier 2 unacknowledged: {escalated:?} (wedding_delay 2 s)");
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["severity"], "page", "a wedding is active: one level up: {alert}");
    assert_eq!(alert["labels"]["weddings"], "w-ana-ben", "{alert}");
    assert_eq!(alert["labels"]["class"], "media", "{alert}");
    assert_eq!(alert["labels"]["pool"], "checkout", "{alert}");
    assert!(alert["annotations"]["description"].as_str().unwrap().contains("req/s turned away"), "{alert}");
    eprintln!("demand onset -> page at the receiver: {took:?} (rule `for` 1 s)");
    let view = agent.get_json("/v1/alerts");
    assert!(
        view["firing"].as_array().is_some_and(|f| !f.is_empty()) || !view["resolved"].as_array().unwrap().is_empty(),
        "{view}"
    );
    let metrics = agent.get("/metrics").1;
    assert!(
        sample_value(&metrics, "wedsync_alertmanager_posts_total{outcome=\"ok\"}").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // The demand falls back within what the pool serves: the resolve follows.
    std::thread::scope(|s| {
        s.spawn(|| demand(agent.statsd, 50, Instant::now() + Duration::from_secs(8)));
        wait_for(&got, Duration::from_secs(15), "the resolve", |n| {
            n["status"] == "resolved" && n["alerts"][0]["labels"]["alertname"] == "PoolShedding"
        });
    });
    let view = agent.get_json("/v1/alerts");
    assert!(view["resolved"].as_array().unwrap().iter().any(|a| a["labels"]["alertname"] == "PoolShedding"), "{view}");
    // Audited when they happened (the writer thread appends moments after).
    let deadline = Instant::now() + Duration::from_secs(5);
    let audit = loop {
        let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
        let both = ["alert.fired", "alert.escalated", "alert.acknowledged", "alert.resolved"]
            .iter()
            .all(|kind| audit.contains(&format!("\"kind\":\"{kind}\"")));
        if both || Instant::now() > deadline {
            break audit;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for kind in ["alert.fired", "alert.escalated", "alert.acknowledged", "alert.resolved"] {
        assert!(audit.contains(&format!("\"kind\":\"{kind}\"")), "{kind} not audited: {audit}");
    }
}
