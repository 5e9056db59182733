//! End to end: every local input of the real agent is a trust boundary. Each test is an attack a
//! local user or a careless operator could make, run against the release-built binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, unique_dir};

/// A pool whose `exec` actuator's observe command dumps its environment to a file.
fn pool_dumping_env(dump: &std::path::Path, env: &str) -> String {
    format!(
        r#"
[[pools]]
name = "checkout"
region = "test-region"
min = 2
max = 20
capacity_per_unit = 100.0
target_utilization = 0.7
demand_metric = "requests"
demand_tags = ["service:checkout"]
[pools.actuator]
kind = "exec"
command = ["sh", "-c", "cat > /dev/null"]
observe = ["sh", "-c", "env > '{dump}'; echo '{{\"units\": 2}}'"]
{env}
"#,
        dump = dump.display()
    )
}

fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{} was never written", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn exec_commands_never_see_the_agents_secrets() {
    let dir = unique_dir("exec-env");
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("env.txt");
    let secrets = [("WEDSYNC__API__TOKEN", "s3cret-api-token-123"), ("AWS_SECRET_ACCESS_KEY", "hunter2")];
    let agent = AgentProcess::start_with_config(&pool_dumping_env(&dump, ""), &secrets);
    let env = wait_for_file(&dump);
    for (name, value) in secrets {
        assert!(!env.contains(name) && !env.contains(value), "the command saw {name}:\n{env}");
    }
    let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    assert!(names.contains(&"PATH") && names.contains(&"WEDSYNC_POOL"), "{env}");
    assert!(
        names.iter().all(|n| ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "WEDSYNC_POOL", "PWD", "SHLVL", "_"].contains(n)),
        "only the allow-list (and what sh sets itself): {names:?}"
    );
    drop(agent);

    // An operator may pass more by name; never the agent's own configuration variables.
    let dump = dir.join("env-more.txt");
    let _agent = AgentProcess::start_with_config(
        &pool_dumping_env(&dump, r#"env = ["PATH", "KUBECONFIG"]"#),
        &[("KUBECONFIG", "/etc/kube/config")],
    );
    assert!(wait_for_file(&dump).contains("KUBECONFIG=/etc/kube/config"));
    let refused = std::process::Command::new(wedsync_tests::agent_binary())
        .args(["config", "check"])
        .arg({
            let path = dir.join("bad.toml");
            std::fs::write(&path, pool_dumping_env(&dump, r#"env = ["PATH", "WEDSYNC__API__TOKEN"]"#)).unwrap();
            path
        })
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("pools[0].actuator.env") && stderr.contains("WEDSYNC__API__TOKEN"), "{stderr}");
}

/// Reads from `stream` until the server closes it (or `within` passes): whether it closed.
fn closed_by_server(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn slow_clients_cannot_hold_the_api_or_its_descriptors() {
    use std::io::Write;
    let mut agent = AgentProcess::start(&[
        ("WEDSYNC__API__MAX_CONNECTIONS", "32"),
        ("WEDSYNC__API__HEADER_READ_TIMEOUT", "1s"),
        ("WEDSYNC__API__REQUEST_TIMEOUT", "1s"),
        ("WEDSYNC__API__TOKEN", "a-token-of-16-chars-or-more"),
    ]);
    // The open-files soft limit was raised to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let row: Vec<&str> = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    assert_eq!(row[3], row[4], "soft = hard: {limits}");

    // 100 clients that start a request and never finish its headers.
    let slow: Vec<std::net::TcpStream> = (0..100)
        .filter_map(|_| {
            let mut s = std::net::TcpStream::connect(agent.api).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(slow.len(), 100);
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", agent.pid())).unwrap().count();
    // Every one is closed: those past the limit at once, the rest after the header timeout.
    let started = Instant::now();
    for mut s in slow {
        assert!(closed_by_server(&mut s, Duration::from_secs(5)), "a slow client kept its connection");
    }
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert!(fds() < 100, "{} descriptors open after the slow clients went", fds());

    // A request whose body never arrives in full is answered 408, not waited on for ever.
    let mut trickle = std::net::TcpStream::connect(agent.api).unwrap();
    trickle
        .write_all(b"POST /v1/weddings HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer a-token-of-16-chars-or-more\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":")
        .unwrap();
    trickle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut trickle, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    let (status, _) = agent.get("/healthz");
    assert_eq!(status, 200, "the API serves again");
    let metrics = agent.get("/metrics").1;
    let value = |name: &str| wedsync_tests::sample_value(&metrics, name).unwrap_or(0.0);
    assert!(value("wedsync_api_refused_connections_total") >= 60.0, "{metrics}");
    assert!(value("wedsync_api_connection_errors_total") >= 30.0, "{metrics}");
    assert_eq!(value("wedsync_api_request_timeouts_total"), 1.0);
    assert!(agent.is_running());
}

#[test]
fn statsd_takes_a_unix_socket_by_file_mode_and_udp_only_from_allowed_sources() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = unique_dir("statsd-unix");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("statsd.sock");
    // A stale socket from an earlier run is replaced.
    drop(std::os::unix::net::UnixDatagram::bind(&path).unwrap());
    let config = format!("[statsd]\nunix_socket = \"{}\"\nallow = [\"10.0.0.0/8\", \"192.0.2.7\"]\n", path.display());
    let mut agent = AgentProcess::start_with_config(&config, &[]);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "the agent's user and group only");

    // UDP from loopback is not on the list: dropped, counted, logged.
    agent.send(b"udp.hits:1|c");
    let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
    client.send_to(b"unix.hits:5|c|#class:media", &path).unwrap();
    let metrics = agent.wait_for_metrics(Duration::from_secs(10), |m| {
        m.contains(r#"wedsync_app_counter_total{metric="unix.hits""#)
            && wedsync_tests::sample_value(m, "wedsync_statsd_refused_datagrams_total") == Some(1.0)
    });
    assert!(!metrics.contains(r#"metric="udp.hits""#), "a refused datagram's line was stored");
    assert!(agent.log().iter().any(|l| l.contains("not in statsd.allow")), "{:#?}", agent.log());
    let status = agent.get_json("/v1/status");
    assert_eq!(status["config"]["statsd_unix_socket"], path.display().to_string());
    assert_eq!(status["config"]["statsd_allow"], serde_json::json!(["10.0.0.0/8", "192.0.2.7/32"]));
    // The socket goes with the agent.
    agent.signal_and_wait("TERM", Duration::from_secs(10)).expect("stops");
    assert!(!path.exists(), "the socket file is removed at stop");

    // Anything else at the path is never replaced.
    std::fs::write(&path, "precious").unwrap();
    let refused = std::process::Command::new(wedsync_tests::agent_binary())
        .args(["run"])
        .env("WEDSYNC__STATSD__UNIX_SOCKET", &path)
        .env("WEDSYNC__API__LISTEN", "127.0.0.1:0")
        .env("WEDSYNC__STATSD__LISTEN", "127.0.0.1:0")
        .env("WEDSYNC__MESH__ENABLED", "false")
        .env("WEDSYNC__STORAGE__DIR", dir.join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("statsd.unix_socket") && stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn a_damaged_state_database_stops_the_start_with_a_clear_error() {
    use std::io::{Seek, SeekFrom, Write};
    let state = unique_dir("corrupt-state");
    std::fs::create_dir_all(&state).unwrap();
    let calendar = state.join("calendar.toml");
    let weddings: String = (0..20)
        .map(|n| format!("[[weddings]]\nid = \"w-{n}\"\nregion = \"eu-west\"\ntime_zone = \"UTC\"\nstart = \"2027-06-12T13:00:00Z\"\nend = \"2027-06-12T23:00:00Z\"\nguests = 150\n"))
        .collect();
    std::fs::write(&calendar, weddings).unwrap();
    let mut agent = AgentProcess::start(&[
        ("WEDSYNC__STORAGE__DIR", state.to_str().unwrap()),
        ("WEDSYNC__CALENDAR__FILE", calendar.to_str().unwrap()),
    ]);
    agent.signal_and_wait("TERM", Duration::from_secs(10)).expect("stops");
    let path = state.join("state.redb");
    // The calendar and the audit trail are the agent's alone.
    for file in [&path, &state.join("audit.jsonl")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
    }
    // Every page after the header: the stored weddings are in there somewhere.
    let len = std::fs::metadata(&path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(4096)).unwrap();
    file.write_all(&vec![0xA5; (len - 4096) as usize]).unwrap();
    drop(file);
    let mut child = std::process::Command::new(wedsync_tests::agent_binary())
        .args(["run"])
        .env("WEDSYNC__STORAGE__DIR", &state)
        .env("WEDSYNC__API__LISTEN", "127.0.0.1:0")
        .env("WEDSYNC__STATSD__LISTEN", "127.0.0.1:0")
        .env("WEDSYNC__MESH__ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent started on a damaged state database");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a start error, not a panic's 101: {stderr}");
    assert!(
        stderr.contains("state.redb") && stderr.contains("is corrupt") && stderr.contains("move it aside"),
        "{stderr}"
    );
}

#[test]
fn each_token_does_only_what_its_scopes_say() {
    let config = r#"
[api]
read_requires_token = true
[[api.tokens]]
name = "calendar-sync"
token = "calendar-token-0123456789"
scopes = ["calendar"]
[[api.tokens]]
name = "dashboard"
token = "dashboard-token-0123456789"
scopes = ["read"]
"#;
    let agent = AgentProcess::start_with_config(config, &[("WEDSYNC__API__TOKEN", "admin-token-0123456789")]);
    let wedding = r#"{"id":"w-1","region":"test-region","time_zone":"UTC","start":"2027-06-12T13:00:00Z","end":"2027-06-12T23:00:00Z","guests":10}"#;
    let calendar = Some("calendar-token-0123456789");
    let dashboard = Some("dashboard-token-0123456789");
    // Health stays open for probes; every other read needs the read scope.
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.call("GET", "/v1/status", None, None).0, 401);
    assert_eq!(agent.call("GET", "/metrics", calendar, None).0, 403, "calendar may not read");
    assert_eq!(agent.call("GET", "/v1/status", dashboard, None).0, 200);
    // The calendar token changes the calendar and nothing else; the dashboard changes nothing.
    assert_eq!(agent.call("POST", "/v1/weddings", calendar, Some(wedding)).0, 201);
    assert_eq!(agent.call("POST", "/v1/weddings", dashboard, Some(wedding)).0, 403);
    let (status, body) = agent.call("POST", "/v1/plugins/reload", calendar, None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#"lacks the \"plugins\" scope"#), "{body}");
    assert_eq!(agent.call("POST", "/v1/weddings", Some("not-a-token-at-all-000"), Some(wedding)).0, 401);
    // api.token has every scope.
    assert_eq!(agent.call("DELETE", "/v1/weddings/w-1", Some("admin-token-0123456789"), None).0, 204);
    let (_, metrics) = agent.call("GET", "/metrics", dashboard, None);
    for (reason, count) in [("missing", 1.0), ("scope", 3.0), ("wrong", 1.0)] {
        let key = format!(r#"wedsync_api_auth_failures_total{{reason="{reason}"}}"#);
        assert_eq!(wedsync_tests::sample_value(&metrics, &key), Some(count), "{reason}\n{metrics}");
    }
    // Refusals are logged (rate-limited) and audited with who held the token, never the token.
    let lines = agent.log();
    let log = lines.join("\n");
    assert!(log.contains("API call refused"), "{log}");
    let audit_path = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["message"] == "audit log open")
        .and_then(|e| e["path"].as_str().map(str::to_owned))
        .expect("the audit log's path");
    let deadline = Instant::now() + Duration::from_secs(5);
    let audit = loop {
        let text = std::fs::read_to_string(&audit_path).unwrap_or_default();
        if text.matches("\"api.refused\"").count() >= 5 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(audit.matches("\"api.refused\"").count(), 5, "{audit}");
    assert!(audit.contains(r#""holder":"calendar-sync""#), "{audit}");
    for secret in ["calendar-token-0123456789", "dashboard-token-0123456789", "not-a-token-at-all-000"] {
        assert!(!log.contains(secret) && !audit.contains(secret), "{secret} leaked");
    }
}

#[test]
fn sigterm_during_start_stops_the_agent_then() {
    use std::io::BufRead;
    // A cold plugin cache: the four bundled plugins compile (in child processes) during start,
    // which takes seconds; a signal then must not wait for it.
    let dir = unique_dir("term-at-start");
    let mut child = std::process::Command::new(wedsync_tests::agent_binary())
        .args(["run", "--log-format", "json"])
        .env("WEDSYNC__STORAGE__DIR", dir.join("state"))
        .env("WEDSYNC__PLUGINS__CACHE_DIR", dir.join("cold-cache"))
        .env("WEDSYNC__API__LISTEN", "127.0.0.1:0")
        .env("WEDSYNC__STATSD__LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Wait until it is starting (its first log line), then signal.
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("the agent logs as it starts");
    assert!(!first.contains("agent ready"), "start was too quick to test: {first}");
    let sent = Instant::now();
    assert!(std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(5), "SIGTERM during start was not honoured within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    let log: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("stopping during start")) || log.iter().any(|l| l.contains("\"stopped\"")),
        "{}",
        log.join("\n")
    );
    assert!(!log.iter().any(|l| l.contains("agent ready")), "it stopped during start, not after: {}", log.join("\n"));
    eprintln!("stopped {took:?} after SIGTERM during start");
}
