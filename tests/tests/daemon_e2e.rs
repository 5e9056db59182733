//! End to end: the real binary on loopback ports, real UDP datagrams, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use wedsync_tests::{AgentProcess, sample_value};

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn statsd_lines_show_up_in_metrics_and_status() {
    let mut agent = AgentProcess::start(&[]);
    agent.send(b"checkout.latency:12|ms|#class:wedding-critical,wedding:w-123,region:eu-west\ncheckout.latency:30|ms|#region:eu-west,wedding:w-123,class:wedding-critical");
    agent.send(b"checkout.requests:5|c|#class:wedding-critical\ncheckout.requests:1|c|@0.1|#class:wedding-critical");
    agent.send(b"queue.depth:7|g\nqueue.depth:+3|g\nguests:alice|s\nguests:bob|s\nguests:alice|s\nupload.bytes:1024|d|#class:media\nupload.size:2048|h");

    let metrics = agent.wait_for_metrics(WAIT, |m| m.contains("wedsync_statsd_lines_total 11"));
    let counter = r#"wedsync_app_counter_total{metric="checkout.requests",class="wedding-critical"}"#;
    assert_eq!(sample_value(&metrics, counter), Some(15.0), "{metrics}");
    assert_eq!(sample_value(&metrics, r#"wedsync_app_gauge{metric="queue.depth"}"#), Some(10.0));
    assert_eq!(sample_value(&metrics, r#"wedsync_app_set_unique{metric="guests"}"#), Some(2.0));
    let observations = r#"wedsync_app_observations_total{metric="checkout.latency",class="wedding-critical",region="eu-west",wedding="w-123",kind="timer"}"#;
    assert_eq!(sample_value(&metrics, observations), Some(2.0), "{metrics}");
    let p99 = r#"wedsync_app_quantile{metric="checkout.latency",class="wedding-critical",region="eu-west",wedding="w-123",kind="timer",quantile="0.99",window="60s"}"#;
    let p99 = sample_value(&metrics, p99).expect("p99 exported");
    assert!((p99 - 30.0).abs() <= 0.5, "p99 {p99}");
    assert!(
        metrics
            .contains(r#"wedsync_app_observations_total{metric="upload.bytes",class="media",kind="distribution"} 1"#)
    );
    assert!(metrics.contains(r#"wedsync_app_observations_total{metric="upload.size",kind="histogram"} 1"#));
    assert!(metrics.trim_end().ends_with("# EOF"), "OpenMetrics exposition ends with # EOF");

    let status = agent.get_json("/v1/status");
    assert_eq!(status["node"], "test-node");
    assert_eq!(status["region"], "test-region");
    assert_eq!(status["statsd"]["lines"], 11);
    assert_eq!(status["config"]["statsd_listen"], agent.statsd.to_string());
    let busiest = status["busiest_series"].as_array().unwrap();
    assert!(busiest.iter().any(|s| s["name"] == "checkout.requests"), "{status}");

    assert!(agent.is_running());
    let (exit, took) = agent.signal_and_wait("TERM", Duration::from_secs(5)).expect("exits on SIGTERM");
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(took < Duration::from_secs(2), "SIGTERM must stop the agent within 2 s, took {took:?}");
}

/// Several readers on one socket, four clients at once: every line sent is either stored or in
/// a datagram the kernel dropped (and counted), and the series hold exactly what was stored.
#[test]
fn statsd_readers_share_the_load_and_every_line_is_accounted_for() {
    const CLIENTS: usize = 4;
    const DATAGRAMS: usize = 500;
    const LINES: usize = 40;
    let agent = AgentProcess::start(&[("WEDSYNC__STATSD__READERS", "2")]);
    let status = agent.get_json("/v1/status");
    assert_eq!(status["config"]["statsd_readers"], 2, "{status}");
    assert_eq!(status["config"]["store_shards"], 8, "{status}");
    let statsd = agent.statsd;
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            s.spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                for d in 0..DATAGRAMS {
                    let datagram: String = (0..LINES)
                        .map(|l| format!("load.hits:1|c|#client:c{client},series:s{},class:media\n", (d + l) % 25))
                        .collect();
                    socket.send_to(datagram.as_bytes(), statsd).unwrap();
                    if d % 50 == 49 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            });
        }
    });
    let sent = (CLIENTS * DATAGRAMS * LINES) as f64;
    let accounted = |m: &str| {
        let stored = sample_value(m, "wedsync_statsd_lines_total ").unwrap_or(0.0);
        let dropped = sample_value(m, r#"wedsync_statsd_kernel_drops_total{socket="udp"} "#).unwrap_or(f64::NAN);
        stored + dropped * LINES as f64
    };
    let metrics = agent.wait_for_metrics(WAIT, |m| accounted(m) == sent);
    let stored = sample_value(&metrics, "wedsync_statsd_lines_total ").unwrap();
    let in_series: f64 = metrics
        .lines()
        .filter(|l| l.starts_with(r#"wedsync_app_counter_total{metric="load.hits""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(in_series, stored, "every stored line is in its series");
    let series = metrics.lines().filter(|l| l.starts_with(r#"wedsync_app_counter_total{metric="load.hits""#)).count();
    assert_eq!(series, CLIENTS * 25, "one series per client and tag, none split across shards");
    assert!(stored >= sent * 0.5, "most lines arrive on loopback: {stored} of {sent}");
}

#[test]
fn garbage_is_counted_and_the_agent_keeps_serving() {
    let mut agent = AgentProcess::start(&[("WEDSYNC__STORE__MAX_SERIES", "3")]);
    agent.send(b"good:1|c\nno value here\nbad:abc|c\nworse:1|zz\n\xff\xfe\xfd\n_e{1,1}:a|b\nlat:-5|ms");
    agent.send(&[0u8; 2048]);
    let oversized = format!("big:1|c|#{}", "t".repeat(9000));
    agent.send(oversized.as_bytes());
    // Readers share the socket, so a later datagram can be stored before an earlier one: wait
    // until "good" holds its place before filling the cap.
    agent.wait_for_metrics(WAIT, |m| sample_value(m, r#"wedsync_app_counter_total{metric="good"}"#) == Some(1.0));
    // Past the cardinality cap of 3: "good", s1 and s2 fit; s3 and s4 are refused.
    agent.send(b"s1:1|c\ns2:1|c\ns3:1|c\ns4:1|c");

    let metrics = agent.wait_for_metrics(WAIT, |m| {
        sample_value(m, r#"wedsync_statsd_refused_lines_total{reason="series_limit"}"#) == Some(2.0)
    });
    for (reason, count) in [
        ("missing_value", 2.0), // "no value here" and the NUL-filled datagram
        ("bad_value", 1.0),
        ("unknown_type", 1.0),
        ("not_utf8", 1.0),
        ("unsupported", 1.0),
        ("negative_value", 1.0),
        ("line_too_long", 1.0),
    ] {
        let key = format!(r#"wedsync_statsd_rejected_lines_total{{reason="{reason}"}}"#);
        assert_eq!(sample_value(&metrics, &key), Some(count), "{reason}\n{metrics}");
    }
    assert_eq!(sample_value(&metrics, r#"wedsync_store_refused_series_total{limit="all"}"#), Some(2.0));
    assert_eq!(sample_value(&metrics, r#"wedsync_app_counter_total{metric="good"}"#), Some(1.0));
    // Still serving, and the rejects were logged with their reason.
    assert_eq!(agent.get("/healthz").0, 200);
    assert!(agent.log().iter().any(|l| l.contains("\"reason\":\"bad_value\"")), "{:#?}", agent.log());
    assert!(agent.is_running());
}

#[test]
fn host_metrics_are_sampled_sub_second() {
    let agent = AgentProcess::start(&[("WEDSYNC__HOST__INTERVAL", "100ms")]);
    let metrics = agent.wait_for_metrics(WAIT, |m| {
        // Per-core rates need two samples, so this also shows sampling goes on.
        m.contains(r#"wedsync_host_cpu_core_busy_ratio{core="0"}"#)
            && m.contains("wedsync_process_resident_memory_bytes")
    });
    assert!(metrics.contains(r#"wedsync_host_cpu_core_busy_ratio{core="0"}"#));
    assert!(metrics.contains(r#"wedsync_host_memory_bytes{kind="total"}"#));
    assert!(metrics.contains(r#"wedsync_host_load{window="1m"}"#));
    let status = agent.get_json("/v1/status");
    assert!(status["host"]["cpu"]["cores"].as_u64().unwrap() >= 1, "{status}");
    assert!(status["host"]["memory"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(status["process"]["resident_bytes"].as_u64().unwrap() > 0);
    // Sampling at 100 ms, the latest sample is never much older than that.
    let age = status["host_sample_age_ms"].as_u64().unwrap();
    assert!(age < 1000, "host sample {age} ms old");
}

#[test]
fn api_errors_are_json() {
    let agent = AgentProcess::start(&[]);
    let (status, body) = agent.get("/nope");
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "no route for GET /nope");
    assert_eq!(agent.get_json("/healthz")["status"], "ok");
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut agent = AgentProcess::start(&[]);
    let (exit, took) = agent.signal_and_wait("INT", Duration::from_secs(5)).expect("exits on SIGINT");
    assert!(exit.success(), "{exit:?}");
    assert!(took < Duration::from_secs(2), "SIGINT must stop the agent within 2 s, took {took:?}");
    assert!(agent.log().iter().any(|l| l.contains("\"message\":\"stopped\"")));
}

/// A closed stderr (a pipe whose reader left, a restarted journald) loses log lines, nothing
/// more: the agent keeps serving and stops on SIGTERM. (tracing-subscriber's default reported a
/// failed write with `eprintln!`, which panicked on the same broken stderr in every thread that
/// logged: the API died and SIGTERM went unheard.)
#[test]
fn a_closed_stderr_costs_log_lines_not_the_agent() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(wedsync_tests::agent_binary())
        .args(["run", "--log-format", "json"])
        .env("WEDSYNC__STORAGE__DIR", wedsync_tests::unique_dir("closed-stderr"))
        .env("WEDSYNC__API__LISTEN", "127.0.0.1:0")
        .env("WEDSYNC__STATSD__LISTEN", "127.0.0.1:0")
        .env("WEDSYNC__MESH__ENABLED", "false")
        .env("WEDSYNC__PLUGINS__CACHE_DIR", std::env::temp_dir().join("wedsync-e2e-plugin-cache"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .find(|e| e["message"] == "agent ready")
        .expect("agent ready");
    let api = ready["api"].as_str().unwrap().to_owned();
    let statsd = ready["statsd"].as_str().unwrap().to_owned();
    drop(lines); // the reader leaves: every later log write fails with EPIPE
    let healthz = || {
        let mut s = std::net::TcpStream::connect(&api).ok()?;
        std::io::Write::write_all(&mut s, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").ok()?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).ok()?;
        Some(answer)
    };
    // A bad StatsD line is logged from a reader thread: the agent writes to the closed stderr.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        client.send_to(b"no value here", &statsd).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(healthz().is_some_and(|a| a.starts_with("HTTP/1.1 200")), "the API stopped serving");
    }
    assert!(child.try_wait().unwrap().is_none(), "the agent exited");
    // The lines it could not write are counted.
    let metrics = {
        let mut s = std::net::TcpStream::connect(&api).unwrap();
        std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
        answer
    };
    let lost = sample_value(&metrics, "wedsync_log_lines_lost_total").unwrap_or(0.0);
    assert!(lost >= 3.0, "three bad lines logged to a closed stderr, {lost} counted lost");
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM went unheard");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
