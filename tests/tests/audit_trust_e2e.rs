//! End to end: the keyed audit trail in front of an attacker who can write the state directory
//! (but not read the signing key), and of an auditor. The release-built agent signs checkpoints
//! and ships them to a receiver off the "host"; `audit verify` finds a rewritten chain (every hash
//! recomputed), a chain whose checkpoints were removed, and a cut-off tail; a restart sets a
//! broken chain aside unchanged and starts a new segment that says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, agent_binary, sample_value, unique_dir};

const TOKEN: &str = "audit-trust-token-0123456789";
const SECRET: &str = "checkpoint-secret-0123456789";

/// Bodies received, each with its signature header.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A one-thread HTTP receiver that answers 200 and keeps every body and signature header.
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut signature) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-wedsync-signature:") {
                    signature = line.trim_end().to_owned();
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_ok() {
                keep.lock().unwrap().push((String::from_utf8_lossy(&body).into_owned(), signature));
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(agent_binary()).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn keygen(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("audit.key");
    let (ok, text) = run(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    key
}

fn config(key: &Path, port: u16) -> String {
    format!(
        r#"
[audit]
signing_key = "{key}"
checkpoint_every = 5
checkpoint_interval = "200ms"
checkpoint_webhook = "http://127.0.0.1:{port}/checkpoints"
checkpoint_secret = "{SECRET}"
checkpoint_allow_http = true
"#,
        key = key.display()
    )
}

fn wedding(i: u32) -> String {
    format!(
        r#"{{"id":"w-{i}","region":"test-region","time_zone":"UTC","start":"2031-06-12T13:00:00Z","end":"2031-06-12T23:00:00Z","guests":10}}"#
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn field(line: &str, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(line).unwrap()[name].clone()
}

/// What a forger with write access but no key does after editing `lines[from]`: relink and
/// rehash every line from there on (the format is documented: sha256 over prev and the line
/// without its hash field).
fn rechain(lines: &mut [String], from: usize) {
    for i in from..lines.len() {
        if i > 0 {
            let prev = field(&lines[i - 1], "hash").as_str().unwrap().to_owned();
            let old = field(&lines[i], "prev").as_str().unwrap().to_owned();
            lines[i] = lines[i].replace(&format!("\"prev\":\"{old}\""), &format!("\"prev\":\"{prev}\""));
        }
        let line = &lines[i];
        let body = &line[..line.len() - 75];
        let prev = hex::decode(field(line, "prev").as_str().unwrap()).unwrap();
        let mut h = Sha256::new();
        h.update(&prev);
        h.update(body.as_bytes());
        h.update(b"}");
        lines[i] = format!("{body},\"hash\":\"{}\"}}", hex::encode(h.finalize()));
    }
}

#[test]
fn a_keyed_trail_shows_a_rewrite_a_removal_and_a_cut_and_a_restart_sets_a_broken_chain_aside() {
    let dir = unique_dir("audit-trust");
    let state = dir.join("state");
    let key = keygen(&dir.join("keys"));
    let public = PathBuf::from(format!("{}.pub", key.display()));
    let (port, shipped) = receiver();
    let toml = config(&key, port);
    let env = [("WEDSYNC__STORAGE__DIR", state.to_str().unwrap()), ("WEDSYNC__API__TOKEN", TOKEN)];
    let mut agent = AgentProcess::start_with_config(&toml, &env);
    for i in 0..12 {
        assert_eq!(agent.call("POST", "/v1/weddings", Some(TOKEN), Some(&wedding(i))).0, 201);
    }
    // Checkpoints are signed every 5 entries and shipped as they are made.
    let metrics = agent.wait_for_metrics(Duration::from_secs(10), |m| {
        sample_value(m, "wedsync_audit_checkpoints_shipped_total").is_some_and(|n| n >= 2.0)
    });
    assert!(sample_value(&metrics, "wedsync_audit_checkpoints_total").unwrap() >= 2.0, "{metrics}");
    let (exit, _) = agent.signal_and_wait("TERM", Duration::from_secs(10)).unwrap();
    assert!(exit.success());

    let log = state.join("audit.jsonl");
    let original = lines(&log);
    let checkpoints = original.iter().filter(|l| l.contains("\"kind\":\"audit.checkpoint\"")).count();
    assert!(checkpoints >= 3, "12 entries, one every 5, one at stop: {checkpoints}");
    assert!(original.last().unwrap().contains("\"kind\":\"audit.checkpoint\""), "the stop signs the tail");
    let (ok, text) = run(&["audit", "verify", log.to_str().unwrap(), "--public-key", public.to_str().unwrap()]);
    assert!(ok && text.contains("checkpoints: ") && text.contains("0 entries after the last one"), "{text}");

    // What reached the receiver: signed bodies naming the node and the checkpoint.
    let received = shipped.lock().unwrap().clone();
    let (body, signature) = received.last().unwrap().clone();
    assert!(signature.to_ascii_lowercase().starts_with("x-wedsync-signature: sha256="), "{signature}");
    assert_eq!(field(&body, "node"), "test-node");
    let newest = dir.join("shipped.json");
    std::fs::write(&newest, &body).unwrap();
    let verify_with = |file: &Path, extra: &[&str]| {
        let mut args = vec!["audit", "verify", file.to_str().unwrap(), "--public-key", public.to_str().unwrap()];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (ok, text) = verify_with(&log, &["--checkpoint", newest.to_str().unwrap()]);
    assert!(ok && text.contains("off-host checkpoint: seq"), "{text}");

    // Attack 1: rewrite a wedding and recompute every hash after it. The hash chain holds; the
    // first checkpoint after the edit does not.
    let forged_dir = dir.join("forged");
    std::fs::create_dir_all(&forged_dir).unwrap();
    let forged = forged_dir.join("audit.jsonl");
    let mut rewritten = original.clone();
    let target = rewritten.iter().position(|l| l.contains("\"id\":\"w-1\"")).unwrap();
    rewritten[target] = rewritten[target].replace("\"guests\":10", "\"guests\":99");
    rechain(&mut rewritten, target);
    write_lines(&forged, &rewritten);
    let (ok, text) = verify_with(&forged, &[]);
    assert!(!ok && text.contains("bad checkpoint"), "{text}");

    // Attack 2: the same rewrite with the checkpoints dropped (renumbered): too long unsigned.
    let mut stripped: Vec<String> =
        rewritten.iter().filter(|l| !l.contains("\"kind\":\"audit.checkpoint\"")).cloned().collect();
    for (i, line) in stripped.iter_mut().enumerate() {
        let seq = field(line, "seq").as_u64().unwrap();
        *line = line.replacen(&format!("{{\"seq\":{seq},"), &format!("{{\"seq\":{},", i + 1), 1);
    }
    rechain(&mut stripped, 0);
    write_lines(&forged, &stripped);
    let (ok, text) = run(&["audit", "verify", forged.to_str().unwrap()]);
    assert!(ok, "without the key the forgery is a valid chain: {text}");
    let (ok, text) = verify_with(&forged, &["--max-unsigned", "5"]);
    assert!(!ok && text.contains("without a checkpoint"), "{text}");

    // Attack 3: cut the tail. Alone the shorter chain verifies; the shipped checkpoint finds it.
    write_lines(&forged, &original[..original.len() - 4]);
    let (ok, text) = verify_with(&forged, &[]);
    assert!(ok, "{text}");
    let (ok, text) = verify_with(&forged, &["--checkpoint", newest.to_str().unwrap()]);
    assert!(!ok && text.contains("truncated"), "{text}");

    // A restart on the rewritten chain: verified at start, set aside byte for byte, a new
    // segment whose first entry says why, and a counter.
    write_lines(&log, &rewritten);
    let damaged = std::fs::read(&log).unwrap();
    let agent = AgentProcess::start_with_config(&toml, &env);
    let metrics = agent.wait_for_metrics(Duration::from_secs(5), |m| {
        sample_value(m, "wedsync_audit_broken_chains_total").is_some_and(|n| n >= 1.0)
    });
    assert_eq!(sample_value(&metrics, "wedsync_audit_broken_chains_total"), Some(1.0));
    assert!(agent.log().iter().any(|l| l.contains("the audit chain does not verify")), "{:?}", agent.log());
    let aside = state.join("audit.jsonl.broken-1").join("audit.jsonl");
    assert_eq!(std::fs::read(&aside).unwrap(), damaged, "set aside unchanged");
    let fresh = lines(&log);
    assert!(fresh[0].contains("\"kind\":\"audit.segment\"") && fresh[0].contains("bad checkpoint"), "{}", fresh[0]);
    drop(agent);
}

#[test]
fn a_signing_key_others_can_read_or_kept_in_the_state_dir_stops_the_start() {
    let dir = unique_dir("audit-key");
    let state = dir.join("state");
    let key = keygen(&dir.join("keys"));
    let attempt = |key: &Path| {
        let cfg = dir.join("agent.toml");
        std::fs::write(&cfg, format!("[audit]\nsigning_key = \"{}\"\n", key.display())).unwrap();
        let started = Instant::now();
        let out = Command::new(agent_binary())
            .args(["run", "--config", cfg.to_str().unwrap()])
            .env("WEDSYNC__STORAGE__DIR", &state)
            .env("WEDSYNC__API__LISTEN", "127.0.0.1:0")
            .env("WEDSYNC__STATSD__LISTEN", "127.0.0.1:0")
            .env("WEDSYNC__PLUGINS__ENABLED", "false")
            .output()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, stderr) = attempt(&key);
    assert!(!ok && stderr.contains("audit.signing_key") && stderr.contains("chmod 600"), "{stderr}");

    std::fs::create_dir_all(&state).unwrap();
    let inside = state.join("audit.key");
    std::fs::copy(&key, &inside).unwrap();
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, stderr) = attempt(&inside);
    assert!(!ok && stderr.contains("outside the state"), "{stderr}");
}
