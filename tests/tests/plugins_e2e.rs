//! End to end: the real agent runs the bundled WASM policy plugins on every decision round,
//! loads signed plugins from a directory, refuses unsigned ones, and the `plugin` CLI signs,
//! verifies and inspects components.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wedsync_tests::{AgentProcess, agent_binary, unique_dir};

const TOKEN: &str = "plugin-test-token-0123456789";

/// A pool in the agent's own region (the harness names it `test-region`).
const POOL: &str = r#"
[[pools]]
name = "checkout"
region = "test-region"
min = 2
max = 50
capacity_per_unit = 100.0
target_utilization = 0.7
provisioning_delay = "0s"
protected_floor = 4
demand_metric = "requests"
demand_tags = ["service:checkout"]
"#;

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn plugin_names(agent: &AgentProcess) -> Vec<String> {
    let body = agent.get_json("/v1/plugins");
    body["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn bundled_plugins_run_every_round_and_name_themselves_in_decisions() {
    let agent = AgentProcess::start_with_config(POOL, &[("WEDSYNC__API__TOKEN", TOKEN)]);
    assert_eq!(plugin_names(&agent), ["wedding-day-guard", "regional-seasons", "data-residency", "cost-guard"]);
    let plugins = agent.get_json("/v1/plugins");
    for plugin in plugins["plugins"].as_array().unwrap() {
        assert_eq!(plugin["trust"], "bundled", "{plugin}");
        assert_eq!(plugin["state"], "active", "{plugin}");
        assert_eq!(plugin["sha256"].as_str().unwrap().len(), 64);
    }
    assert!(plugins["refused"].as_array().unwrap().is_empty(), "{plugins}");

    // A 500-guest wedding in the agent's region: wedding-day-guard raises the floor above the
    // engine's own protected floor (4 + 2 + ceil(4 × 0.5) = 8).
    let start = now_ms() - 60_000;
    let wedding = format!(
        r#"{{"id":"w-big","region":"test-region","time_zone":"UTC","start_unix_ms":{start},"end_unix_ms":{},"guests":500}}"#,
        start + 8 * 3_600_000
    );
    let (status, body) = agent.call("POST", "/v1/weddings", Some(TOKEN), Some(&wedding));
    assert_eq!(status, 201, "{body}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut found = None;
    while Instant::now() < deadline && found.is_none() {
        agent.send(b"requests:10|c|#service:checkout,class:wedding-critical");
        std::thread::sleep(Duration::from_millis(100));
        let body = agent.get_json("/v1/decisions?pool=checkout&limit=20");
        found = body["decisions"].as_array().unwrap().iter().find_map(|d| {
            let reasons = d["reasons"].as_array()?;
            reasons
                .iter()
                .find(|r| r["rule"] == "policy" && r["policy"] == "wedding-day-guard")
                .map(|r| (d.clone(), r.clone()))
        });
    }
    let (decision, reason) = found.expect("a decision changed by wedding-day-guard within 20 s");
    assert_eq!(decision["to"], 8, "{decision}");
    assert_eq!(reason["change"], "pre-scale floor of 8", "{reason}");
    let sha = plugins["plugins"][0]["sha256"].as_str().unwrap();
    assert_eq!(reason["version"], sha, "the decision names the plugin's sha256");

    // Every plugin was called, none failed, and no round ran late.
    std::thread::sleep(Duration::from_millis(1200));
    let plugins = agent.get_json("/v1/plugins");
    assert!(plugins["rounds"].as_u64().unwrap() > 10, "{plugins}");
    assert_eq!(plugins["late_rounds"], 0, "{plugins}");
    for plugin in plugins["plugins"].as_array().unwrap() {
        assert!(plugin["calls"].as_u64().unwrap() > 0, "{plugin}");
        let failures: u64 = plugin["failures"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(failures, 0, "{plugin}");
        assert!(plugin["p99_us"].as_f64().unwrap() > 0.0, "{plugin}");
    }
}

#[test]
fn plugins_can_be_turned_off() {
    let agent = AgentProcess::start(&[("WEDSYNC__PLUGINS__ENABLED", "false")]);
    let (status, body) = agent.get("/v1/plugins");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("plugins.enabled = false"));
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(agent_binary()).args(args).output().expect("run wedsync-agent");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_cli_signs_verifies_and_inspects_and_the_agent_trusts_only_signed_plugins() {
    let dir = unique_dir("plugin-cli");
    let keys = dir.join("keys");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (ok, out) = cli(&["plugin", "keygen", "--out", keys.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["plugin", "keygen", "--out", keys.to_str().unwrap()]);
    assert!(!ok && out.contains("refusing to overwrite"), "{out}");

    let signed = plugins.join("version_a.wasm");
    std::fs::write(&signed, wedsync_test_guests::VERSION_A).unwrap();
    let (ok, out) =
        cli(&["plugin", "sign", "--key", keys.join("plugin.key").to_str().unwrap(), signed.to_str().unwrap()]);
    assert!(ok, "{out}");
    let (ok, out) =
        cli(&["plugin", "verify", "--key", keys.join("plugin.pub").to_str().unwrap(), signed.to_str().unwrap()]);
    assert!(ok && out.contains("signature OK"), "{out}");
    let (ok, out) = cli(&["plugin", "inspect", signed.to_str().unwrap()]);
    assert!(ok, "{out}");
    let inspection: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspection["world"], "wedsync:policy/policy@0.1.0");
    assert_eq!(inspection["plugin"]["hooks"]["decide"], true);
    assert!(
        inspection["imports"].as_array().unwrap().iter().any(|i| i.as_str().unwrap().starts_with("wedsync:policy/log"))
    );

    // A tampered copy does not verify; an extra import is named by inspect.
    let tampered = dir.join("tampered.wasm");
    let mut bytes = wedsync_test_guests::VERSION_A.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&tampered, &bytes).unwrap();
    std::fs::copy(signed.with_extension("wasm.sig"), tampered.with_extension("wasm.sig")).unwrap();
    let (ok, out) =
        cli(&["plugin", "verify", "--key", keys.join("plugin.pub").to_str().unwrap(), tampered.to_str().unwrap()]);
    assert!(!ok && out.contains("does NOT verify"), "{out}");
    let evil = dir.join("evil.wasm");
    std::fs::write(&evil, wedsync_test_guests::EXTRA_IMPORT).unwrap();
    let (ok, out) = cli(&["plugin", "inspect", evil.to_str().unwrap()]);
    assert!(!ok && out.contains("wedsync:evil/net"), "{out}");

    // The agent loads the signed plugin and refuses an unsigned one.
    std::fs::write(plugins.join("unsigned.wasm"), wedsync_test_guests::VERSION_B).unwrap();
    let public = std::fs::read_to_string(keys.join("plugin.pub")).unwrap();
    let config = format!(
        "{POOL}\n[plugins]\nbundled = []\ndir = \"{}\"\ntrusted_keys = [\"{}\"]\n",
        plugins.display(),
        public.trim()
    );
    let state = dir.join("state");
    let mut agent = AgentProcess::start_with_config(&config, &[("WEDSYNC__STORAGE__DIR", state.to_str().unwrap())]);
    let body = agent.get_json("/v1/plugins");
    let loaded = body["plugins"].as_array().unwrap();
    assert_eq!(loaded.len(), 1, "{body}");
    assert!(loaded[0]["trust"].as_str().unwrap().starts_with("signed:"), "{body}");
    let refused = body["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{body}");
    assert!(refused[0]["origin"].as_str().unwrap().ends_with("unsigned.wasm"));
    assert!(refused[0]["error"].as_str().unwrap().contains("unsigned"), "{body}");

    // Both outcomes are in the audit trail.
    let (exit, _) = agent.signal_and_wait("TERM", Duration::from_secs(5)).unwrap();
    assert!(exit.success());
    let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let loaded = audit.lines().find(|l| l.contains("\"kind\":\"plugin.loaded\"")).expect("plugin.loaded audited");
    assert!(loaded.contains(loaded_sha(&body)), "{loaded}");
    let refused = audit.lines().find(|l| l.contains("\"kind\":\"plugin.refused\"")).expect("plugin.refused audited");
    assert!(refused.contains("unsigned.wasm"), "{refused}");
}

fn loaded_sha(body: &serde_json::Value) -> &str {
    body["plugins"][0]["sha256"].as_str().unwrap()
}
