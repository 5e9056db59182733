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

/// The agent binary: `WEDSYNC_AGENT_BIN`, else the one beside this test in the target dir,
/// built (once per test process, by the same cargo and profile) so a test never runs a stale
/// binary: `cargo test -p wedsync-tests` alone does not rebuild another package's binary.
pub fn agent_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("WEDSYNC_AGENT_BIN") {
                return PathBuf::from(path);
            }
            let exe = std::env::current_exe().expect("test executable path");
            let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
            let release = profile_dir.file_name().is_some_and(|name| name == "release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.args(["build", "--quiet", "-p", "wedsync-agent", "--bin", "wedsync-agent"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "building wedsync-agent failed");
            profile_dir.join("wedsync-agent")
        })
        .clone()
}

/// A config file's `[[pools]]` entry: pool `checkout` in the harness's own region
/// (`test-region`), 2 to 50 units of 100 req/s at 70%, its demand the StatsD counter
/// `requests` tagged `service:checkout`.
pub const CHECKOUT_POOL: &str = r#"
[[pools]]
name = "checkout"
region = "test-region"
min = 2
# A fresh pool at its minimum (no size source in this test).
assume_size = 2
max = 50
capacity_per_unit = 100.0
target_utilization = 0.7
provisioning_delay = "0s"
protected_floor = 4
demand_metric = "requests"
demand_tags = ["service:checkout"]
"#;

/// A fresh directory path under the system temp dir (not created).
pub fn unique_dir(what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("wedsync-e2e-{}-{what}-{n}", std::process::id()))
}

/// A running agent process.
pub struct AgentProcess {
    child: Child,
    /// Where its API listens.
    pub api: SocketAddr,
    /// Where its StatsD listener is.
    pub statsd: SocketAddr,
    /// Where its mesh endpoint listens, when the mesh is enabled.
    pub mesh: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    http: ureq::Agent,
    /// Its state directory (where `audit.jsonl` is).
    pub state_dir: PathBuf,
}

impl AgentProcess {
    /// Starts `wedsync-agent run --log-format json` on free loopback ports, with extra
    /// environment variables, and waits (at most 30 s) for its "agent ready" line.
    pub fn start(env: &[(&str, &str)]) -> AgentProcess {
        Self::start_with_args(&[], env)
    }

    /// Like [`AgentProcess::start`], with a config file holding `toml`.
    pub fn start_with_config(toml: &str, env: &[(&str, &str)]) -> AgentProcess {
        let dir = unique_dir("config");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::write(&path, toml).unwrap();
        Self::start_with_args(&["--config", path.to_str().unwrap()], env)
    }

    fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> AgentProcess {
        let mut command = Command::new(agent_binary());
        // Each agent gets its own state directory unless the test names one.
        let state_dir = env
            .iter()
            .find(|(key, _)| *key == "WEDSYNC__STORAGE__DIR")
            .map_or_else(|| unique_dir("state"), |(_, dir)| PathBuf::from(dir));
        command.env("WEDSYNC__STORAGE__DIR", &state_dir);
        command
            .args(["run", "--log-format", "json"])
            .args(args)
            .env("WEDSYNC__API__LISTEN", "127.0.0.1:0")
            .env("WEDSYNC__STATSD__LISTEN", "127.0.0.1:0")
            .env("WEDSYNC__MESH__LISTEN", "127.0.0.1:0")
            .env("WEDSYNC__AGENT__NODE_ID", "test-node")
            .env("WEDSYNC__AGENT__REGION", "test-region")
            // Every agent loads the bundled plugins: share their compiled cache across tests.
            .env("WEDSYNC__PLUGINS__CACHE_DIR", std::env::temp_dir().join("wedsync-e2e-plugin-cache"))
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
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "agent ready"
                {
                    let _ = ready_tx.send((
                        event["api"].as_str().map(str::to_owned),
                        event["statsd"].as_str().map(str::to_owned),
                        event["mesh"].as_str().and_then(|m| m.parse::<SocketAddr>().ok()),
                    ));
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let ready = ready_rx.recv_timeout(Duration::from_secs(30));
        let Ok((Some(api), Some(statsd), mesh)) = ready else {
            let _ = child.kill();
            panic!("agent did not become ready: {:?}\nlog:\n{}", ready, log.lock().unwrap().join("\n"));
        };
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        AgentProcess { child, api: api.parse().unwrap(), statsd: statsd.parse().unwrap(), mesh, log, http, state_dir }
    }

    /// `GET path`: the status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut response = self.http.get(&format!("http://{}{path}", self.api)).call().expect("HTTP GET");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().expect("HTTP body"))
    }

    /// A request with a method, an optional bearer token and an optional JSON body: status and body.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
        let url = format!("http://{}{path}", self.api);
        let mut response = match (method, body) {
            ("GET", _) => with_token(self.http.get(&url), token).call(),
            ("DELETE", _) => with_token(self.http.delete(&url), token).call(),
            ("POST", Some(body)) => {
                with_token(self.http.post(&url), token).header("content-type", "application/json").send(body)
            }
            ("POST", None) => with_token(self.http.post(&url), token).send_empty(),
            _ => panic!("unsupported method {method}"),
        }
        .expect("HTTP call");
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap_or_default())
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

fn with_token<B>(request: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(token) => request.header("authorization", &format!("Bearer {token}")),
        None => request,
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

pub mod real_series;
