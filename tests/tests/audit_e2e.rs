//! End to end: decisions and calendar changes land in the audit trail, survive a stop, and
//! `wedsync-agent audit verify` detects tampering and says where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};
use wedsync_tests::{AgentProcess, agent_binary, unique_dir};

const POOL: &str = r#"
[[pools]]
name = "checkout"
region = "eu-west"
min = 1
# A fresh pool at its minimum (no size source in this test).
assume_size = 1
max = 40
provisioning_delay = "0s"
demand_metric = "requests"
[pools.actuator]
kind = "exec"
command = ["sh", "-c", "cat > /dev/null"]
"#;

const TOKEN: &str = "audit-token-0123456789";

fn verify(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(agent_binary()).args(["audit", "verify"]).arg(file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn decisions_are_audited_and_tampering_is_found() {
    let state = unique_dir("audit-state");
    let env = [("WEDSYNC__STORAGE__DIR", state.to_str().unwrap()), ("WEDSYNC__API__TOKEN", TOKEN)];
    let mut agent = AgentProcess::start_with_config(POOL, &env);
    let wedding = r#"{"id":"w-a","region":"eu-west","start":"2031-01-01T10:00:00Z","end":"2031-01-01T20:00:00Z"}"#;
    assert_eq!(agent.call("POST", "/v1/weddings", Some(TOKEN), Some(wedding)).0, 201);
    // Demand that changes: several decisions.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut round = 0u32;
    loop {
        let n = if round < 20 { 20 } else { 300 };
        agent.send(format!("requests:{n}|c|#class:media").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
        round += 1;
        let decisions = agent.get_json("/v1/decisions?limit=100")["decisions"].as_array().unwrap().len();
        if decisions >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "too few decisions");
    }
    let (exit, _) = agent.signal_and_wait("TERM", Duration::from_secs(5)).unwrap();
    assert!(exit.success());

    let log = state.join("audit.jsonl");
    let (ok, text) = verify(&log);
    assert!(ok, "{text}");
    assert!(text.contains(": ok: "), "{text}");
    let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();
    assert!(lines.iter().any(|l| l.contains("\"kind\":\"wedding.upsert\"")));
    let decisions = lines.iter().filter(|l| l.contains("\"kind\":\"decision\"")).count();
    assert!(decisions >= 3, "{decisions} decisions audited");
    // What became of them at the actuator, too.
    assert!(
        lines.iter().any(|l| l.contains("\"kind\":\"actuator.outcome\"") && l.contains("\"outcome\":\"applied\"")),
        "no actuator outcome audited"
    );

    // Edit one byte of a middle entry in a copy: verify names the line.
    let tampered = unique_dir("audit-tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    let copy = tampered.join("audit.jsonl");
    let mut edited = lines.clone();
    edited[1] = edited[1].replacen("\"seq\":2", "\"seq\":2 ", 1).replacen("eu-west", "eu-east", 1);
    std::fs::write(&copy, edited.join("\n") + "\n").unwrap();
    let (ok, text) = verify(&copy);
    assert!(!ok, "tampering not detected: {text}");
    assert!(text.contains("line 2"), "{text}");

    // Delete a line: the chain breaks at the line after it.
    let mut deleted = lines.clone();
    deleted.remove(1);
    std::fs::write(&copy, deleted.join("\n") + "\n").unwrap();
    let (ok, text) = verify(&copy);
    assert!(!ok && text.contains("line 2"), "{text}");
}
