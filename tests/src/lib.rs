//! Harness for WedSync Edge integration tests: runs the real `wedsync-agent` binary on loopback
//! ports it picks itself, talks to it over real UDP and HTTP, and stops it with real signals.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test harness fails loudly on purpose

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent binary: `WEDSYNC_AGENT_BIN`, else the one beside this test in the target dir
/// (built on demand with the same cargo if it is missing).
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WEDSYNC_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let binary = profile_dir.join("wedsync-agent");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "wedsync-agent", "--bin", "wedsync-agent"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building wedsync-agent failed");
    }
    binary
}

/// A running agent process.
pub struct AgentProcess {
    child: Child,
    /// Where its API listens.
    pub api: SocketAddr,
    /// Where its StatsD listener is.
    pub statsd: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    http: ureq::Agent,
}

impl AgentProcess {
    /// Starts `wedsync-agent run --log-format json` on free loopback ports, with extra
    /// environment variables, and waits (at most 30 s) for its "agent ready" line.
    pub fn start(env: &[(&str, &str)]) -> AgentProcess {
        let mut command = Command::new(agent_binary());
        command
            .args(["run", "--log-format", "json"])
            .env("WEDSYNC__API__LISTEN", "127.0.0.1:0")
            .env("WEDSYNC__STATSD__LISTEN", "127.0.0.1:0")
            .env("WEDSYNC__AGENT__NODE_ID", "test-node")
            .env("WEDSYNC__AGENT__REGION", "test-region")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn wedsync-agent");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    if event["message"] == "agent ready" {
                        let _ = ready_tx.send((
                            event["api"].as_str().map(str::to_owned),
                            event["statsd"].as_str().map(str::to_owned),
                        ));
                    }
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let ready = ready_rx.recv_timeout(Duration::from_secs(30));
        let Ok((Some(api), Some(statsd))) = ready else {
            let _ = child.kill();
            panic!("agent did not become ready: {:?}\nlog:\n{}", ready, log.lock().unwrap().join("\n"));
        };
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        AgentProcess { child, api: api.parse().unwrap(), statsd: statsd.parse().unwrap(), log, http }
    }

    /// `GET path`: the status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut response = self.http.get(&format!("http://{}{path}", self.api)).call().expect("HTTP GET");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().expect("HTTP body"))
    }

    /// `GET path`, checked for 200, parsed as JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// Sends one UDP datagram to the agent's StatsD port.
    pub fn send(&self, datagram: &[u8]) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(datagram, self.statsd).unwrap();
    }

    /// Polls `/metrics` until `check` holds (at most `timeout`); returns the last body.
    pub fn wait_for_metrics(&self, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get("/metrics");
            assert_eq!(status, 200);
            if check(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "condition not met within {timeout:?}; last /metrics:\n{body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends a signal (`TERM`, `INT`) with `kill(1)` and waits up to `timeout` for exit.
    /// Returns the exit status and how long the exit took, or `None` on timeout (then kills).
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let sent = Instant::now();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} failed");
        while sent.elapsed() < timeout {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return Some((exit, sent.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the first sample line in an exposition that starts with `prefix`
/// (metric name and labels, e.g. `wedsync_statsd_lines_total ` or `foo{a="b"}`).
pub fn sample_value(exposition: &str, prefix: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
