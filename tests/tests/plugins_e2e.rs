//! End to end: the real agent runs the bundled WASM policy plugins on every decision round,
//! loads signed plugins from a directory, refuses unsigned ones, and the `plugin` CLI signs,
//! verifies and inspects components.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wedsync_tests::{AgentProcess, agent_binary, unique_dir};

const TOKEN: &str = "plugin-test-token-0123456789";

/// A pool in the agent's own region (the harness names it `test-region`).
const POOL: &str = wedsync_tests::CHECKOUT_POOL;

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
    // Nothing to reload without a plugin directory.
    let (status, body) = agent.call("POST", "/v1/plugins/reload", Some(TOKEN), None);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("plugins.dir"), "{body}");

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
    let agent = AgentProcess::start(&[("WEDSYNC__PLUGINS__ENABLED", "false"), ("WEDSYNC__API__TOKEN", TOKEN)]);
    let (status, body) = agent.get("/v1/plugins");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("plugins.enabled = false"));
    let (status, body) = agent.call("POST", "/v1/plugins/reload", Some(TOKEN), None);
    assert_eq!(status, 404, "{body}");
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
    // The printed config line can be pasted as is; the key file is one line.
    let public = std::fs::read_to_string(keys.join("plugin.pub")).unwrap();
    assert!(public.ends_with('\n') && public.lines().count() == 1, "{public:?}");
    assert!(out.contains(&format!("plugins.trusted_keys = [\"{}\"]", public.trim_end())), "{out}");
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
    // Not watched: only the reload requests below change what is loaded.
    let config = format!(
        "{POOL}\n[plugins]\nbundled = []\ndir = \"{}\"\ntrusted_keys = [\"{}\"]\nwatch_interval = \"0s\"\n",
        plugins.display(),
        public.trim()
    );
    let state = dir.join("state");
    let mut agent = AgentProcess::start_with_config(
        &config,
        &[("WEDSYNC__API__TOKEN", TOKEN), ("WEDSYNC__STORAGE__DIR", state.to_str().unwrap())],
    );
    let body = agent.get_json("/v1/plugins");
    let loaded = body["plugins"].as_array().unwrap();
    assert_eq!(loaded.len(), 1, "{body}");
    assert!(loaded[0]["trust"].as_str().unwrap().starts_with("signed:"), "{body}");
    let refused = body["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{body}");
    assert!(refused[0]["origin"].as_str().unwrap().ends_with("unsigned.wasm"));
    assert!(refused[0]["error"].as_str().unwrap().contains("unsigned"), "{body}");
    let first_sha = loaded_sha(&body).to_owned();

    // A new version, signed with the same key, is deployed in place and hot-reloaded.
    let staged = dir.join("counter-2.wasm");
    std::fs::write(&staged, wedsync_test_guests::VERSION_B).unwrap();
    let (ok, out) =
        cli(&["plugin", "sign", "--key", keys.join("plugin.key").to_str().unwrap(), staged.to_str().unwrap()]);
    assert!(ok, "{out}");
    std::fs::copy(staged.with_extension("wasm.sig"), signed.with_extension("wasm.sig")).unwrap();
    deploy(&signed, wedsync_test_guests::VERSION_B);
    let report = reload(&agent);
    let outcome = outcome_of(&report, "version_a.wasm");
    assert_eq!(outcome["outcome"], "replaced", "{report}");
    assert_eq!(outcome["version"], "2.0.0", "{report}");
    assert_eq!(outcome["replaced"]["sha256"], first_sha.as_str(), "{report}");
    assert_eq!(outcome_of(&report, "unsigned.wasm")["outcome"], "refused", "{report}");
    let body = agent.get_json("/v1/plugins");
    assert_eq!(body["plugins"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["plugins"][0]["version"], "2.0.0", "{body}");
    assert!(body["plugins"][0]["trust"].as_str().unwrap().starts_with("signed:"), "{body}");
    let second_sha = loaded_sha(&body).to_owned();
    assert_ne!(second_sha, first_sha);

    // Bytes that do not match their signature are refused at reload; version 2 stays.
    deploy(&signed, wedsync_test_guests::VERSION_A);
    let report = reload(&agent);
    let outcome = outcome_of(&report, "version_a.wasm");
    assert_eq!(outcome["outcome"], "refused", "{report}");
    assert!(outcome["error"].as_str().unwrap().contains("signature"), "{report}");
    let body = agent.get_json("/v1/plugins");
    assert_eq!(body["plugins"][0]["version"], "2.0.0", "{body}");
    assert_eq!(loaded_sha(&body), second_sha, "{body}");

    // Every outcome is in the audit trail.
    let (exit, _) = agent.signal_and_wait("TERM", Duration::from_secs(5)).unwrap();
    assert!(exit.success());
    let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let loaded = audit.lines().find(|l| l.contains("\"kind\":\"plugin.loaded\"")).expect("plugin.loaded audited");
    assert!(loaded.contains(&first_sha), "{loaded}");
    let refused = audit.lines().find(|l| l.contains("\"kind\":\"plugin.refused\"")).expect("plugin.refused audited");
    assert!(refused.contains("unsigned.wasm"), "{refused}");
    let reloaded = audit.lines().find(|l| l.contains("\"kind\":\"plugin.reloaded\"")).expect("plugin.reloaded audited");
    assert!(reloaded.contains(&second_sha) && reloaded.contains(&first_sha), "{reloaded}");
    assert!(
        audit.lines().any(|l| l.contains("\"kind\":\"plugin.refused\"") && l.contains("version_a.wasm")),
        "the refused reload is audited"
    );
}

#[test]
fn plugins_are_compiled_in_child_processes_at_start_and_at_reload() {
    let dir = unique_dir("child-compile");
    let plugins = dir.join("plugins");
    // Empty: this agent compiles everything (the harness otherwise shares a warm cache).
    let cache = dir.join("cache");
    std::fs::create_dir_all(&plugins).unwrap();
    deploy(&plugins.join("counter.wasm"), wedsync_test_guests::VERSION_A);
    deploy(&plugins.join("broken.wasm"), b"\0asm\x0d\0\x01\0 not really a component");
    let config =
        format!("{POOL}\n[plugins]\ndir = \"{}\"\nallow_unsigned = true\nwatch_interval = \"0s\"\n", plugins.display());
    let agent = AgentProcess::start_with_config(
        &config,
        &[
            ("WEDSYNC__API__TOKEN", TOKEN),
            ("WEDSYNC__PLUGINS__CACHE_DIR", cache.to_str().unwrap()),
            ("RUST_LOG", "info,wedsync_plugin_host=debug"),
        ],
    );
    let compiled_outside =
        |agent: &AgentProcess| agent.log().iter().filter(|l| l.contains("plugin compiled in another process")).count();
    let body = agent.get_json("/v1/plugins");
    assert_eq!(body["plugins"].as_array().unwrap().len(), 5, "{body}");
    // The 4 bundled plugins and the directory's one, each by a child process.
    assert_eq!(compiled_outside(&agent), 5, "{}", agent.log().join("\n"));
    let artifacts = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    };
    assert_eq!(artifacts(), 5);
    // What does not compile is refused as before, with wasmtime's reason.
    let refused = body["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{body}");
    assert!(refused[0]["error"].as_str().unwrap().contains("not a valid WebAssembly component"), "{body}");
    assert!(!agent.log().iter().any(|l| l.contains("compiling here")), "{}", agent.log().join("\n"));

    // A reload compiles the new version in a child process too.
    deploy(&plugins.join("counter.wasm"), wedsync_test_guests::VERSION_B);
    let report = reload(&agent);
    assert_eq!(outcome_of(&report, "counter.wasm")["outcome"], "replaced", "{report}");
    assert_eq!(compiled_outside(&agent), 6, "{}", agent.log().join("\n"));
    assert_eq!(artifacts(), 6);

    // The child's own interface: a component that does not compile exits 3 with the reason.
    let mut child = Command::new(agent_binary())
        .args(["compile-plugin", "--cache-dir", cache.to_str().unwrap(), "--memory-limit", "16777216"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"garbage").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(!out.stderr.is_empty());
}

fn loaded_sha(body: &serde_json::Value) -> &str {
    body["plugins"][0]["sha256"].as_str().unwrap()
}

/// Writes `bytes` to `path` atomically (a temporary name, then a rename), as a deploy would:
/// the watch never reads a half-written component.
fn deploy(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The `counter` plugin's report in `/v1/plugins`, if loaded.
fn counter(body: &serde_json::Value) -> Option<serde_json::Value> {
    body["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "counter").cloned()
}

/// `POST /v1/plugins/reload`, checked for 200: the reload report.
fn reload(agent: &AgentProcess) -> serde_json::Value {
    let (status, body) = agent.call("POST", "/v1/plugins/reload", Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// This file's outcome in a reload report.
fn outcome_of<'a>(report: &'a serde_json::Value, file: &str) -> &'a serde_json::Value {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["origin"].as_str().unwrap().ends_with(file))
        .unwrap_or_else(|| panic!("{file} not in {report}"))
}

/// Sends StatsD load (checkout requests) from a thread until the returned flag is set.
fn feed_load(agent: &AgentProcess) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<u64>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let target = agent.statsd;
    let feeder = std::thread::spawn(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sent = 0u64;
        // Bounded: at most 60 s of load even if the test forgets to stop it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
            let datagram =
                b"requests:40|c|#service:checkout,class:wedding-critical\nrequests:25|c|#service:checkout,class:media";
            socket.send_to(datagram, target).unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    (stop, feeder)
}

/// Waits (bounded) until `/v1/plugins` satisfies `check`; returns that body.
fn wait_plugins(
    agent: &AgentProcess,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let body = agent.get_json("/v1/plugins");
        if check(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "/v1/plugins did not get there within {timeout:?}: {body}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn hot_reload_under_load_misses_no_round() {
    let test_started = Instant::now();
    let dir = unique_dir("hot-reload");
    let plugins = dir.join("plugins");
    let state = dir.join("state");
    std::fs::create_dir_all(&plugins).unwrap();
    let file = plugins.join("counter.wasm");
    deploy(&file, wedsync_test_guests::VERSION_A);
    let config = format!(
        // Swapping back to 1.0.0 is a rollback: allowed here, and audited as one.
        "{POOL}\n[plugins]\ndir = \"{}\"\nallow_unsigned = true\nallow_rollback = true\nwatch_interval = \"100ms\"\n",
        plugins.display()
    );
    let mut agent = AgentProcess::start_with_config(
        &config,
        &[("WEDSYNC__API__TOKEN", TOKEN), ("WEDSYNC__STORAGE__DIR", state.to_str().unwrap())],
    );
    let body = agent.get_json("/v1/plugins");
    let a = counter(&body).expect("counter loaded at start");
    assert_eq!(a["version"], "1.0.0", "{body}");
    let sha_a = a["sha256"].as_str().unwrap().to_owned();
    assert_eq!(body["missed_rounds"], 0, "{body}");

    // The endpoint is a mutating call.
    let (status, _) = agent.call("POST", "/v1/plugins/reload", None, None);
    assert_eq!(status, 401);

    let (stop_load, feeder) = feed_load(&agent);
    // A reload publishes a fresh snapshot: the round count and its time are a pair.
    let first = reload(&agent);
    assert_eq!(outcome_of(&first, "counter.wasm")["outcome"], "unchanged", "{first}");
    let t0 = Instant::now();
    let rounds0 = agent.get_json("/v1/plugins")["rounds"].as_u64().unwrap();

    // Swap A ⇄ B, alternating an explicit reload and the watch.
    let mut sha_b = None::<String>;
    let swaps = 40;
    let swap_deadline = Instant::now() + Duration::from_secs(15);
    for i in 0..swaps {
        assert!(Instant::now() < swap_deadline, "swap {i} not reached within the time bound");
        let (bytes, version) = if i % 2 == 0 {
            (wedsync_test_guests::VERSION_B, "2.0.0")
        } else {
            (wedsync_test_guests::VERSION_A, "1.0.0")
        };
        deploy(&file, bytes);
        let loaded = if i % 4 < 2 {
            let report = reload(&agent);
            let outcome = outcome_of(&report, "counter.wasm");
            // The watch may have been first: then the request found it already in place.
            assert!(outcome["outcome"] == "replaced" || outcome["outcome"] == "unchanged", "{report}");
            let body = agent.get_json("/v1/plugins");
            let loaded = counter(&body).expect("counter stays loaded");
            assert_eq!(loaded["version"], version, "swap {i}: {body}");
            loaded
        } else {
            let body =
                wait_plugins(&agent, Duration::from_secs(5), |b| counter(b).is_some_and(|c| c["version"] == version));
            counter(&body).unwrap()
        };
        let sha = loaded["sha256"].as_str().unwrap().to_owned();
        if version == "1.0.0" {
            assert_eq!(sha, sha_a, "swap {i}");
        } else {
            assert_ne!(sha, sha_a, "swap {i}");
            assert_eq!(sha_b.get_or_insert_with(|| sha.clone()), &sha, "swap {i}");
        }
    }
    let swaps_took = t0.elapsed();
    // The last swap left version A (an even count of swaps).
    let sha_b = sha_b.expect("version B loaded at least once");

    // A broken component for the same file: refused, version A stays.
    deploy(&file, b"\0asm this is not a component");
    let report = reload(&agent);
    let outcome = outcome_of(&report, "counter.wasm");
    assert_eq!(outcome["outcome"], "refused", "{report}");
    let body = agent.get_json("/v1/plugins");
    assert_eq!(counter(&body).unwrap()["sha256"], sha_a.as_str(), "{body}");
    let refused = body["refused"].as_array().unwrap();
    assert!(refused.iter().any(|r| r["origin"].as_str().unwrap().ends_with("counter.wasm")), "{body}");

    // One that fails its configure (found by the watch): refused at install, A still stays.
    deploy(&file, wedsync_test_guests::FAILS_CONFIGURE);
    let body = wait_plugins(&agent, Duration::from_secs(5), |b| {
        b["refused"].as_array().unwrap().iter().any(|r| r["error"].as_str().unwrap().contains("fails-configure"))
    });
    assert_eq!(counter(&body).unwrap()["sha256"], sha_a.as_str(), "{body}");

    // A good version again: loaded, and no longer listed as refused.
    deploy(&file, wedsync_test_guests::VERSION_B);
    let report = reload(&agent);
    let outcome = &outcome_of(&report, "counter.wasm")["outcome"];
    assert!(*outcome == "replaced" || *outcome == "unchanged", "{report}");
    let body = agent.get_json("/v1/plugins");
    assert_eq!(counter(&body).unwrap()["sha256"], sha_b.as_str(), "{body}");
    assert!(body["refused"].as_array().unwrap().is_empty(), "{body}");

    // The file goes: so does its plugin; the bundled ones stay.
    std::fs::remove_file(&file).unwrap();
    let report = reload(&agent);
    // Unless the watch saw it go first (then this pass does not list it at all).
    let gone =
        report["files"].as_array().unwrap().iter().find(|f| f["origin"].as_str().unwrap().ends_with("counter.wasm"));
    assert!(gone.is_none_or(|f| f["outcome"] == "removed"), "{report}");
    let body = agent.get_json("/v1/plugins");
    assert!(counter(&body).is_none(), "{body}");
    assert_eq!(body["plugins"].as_array().unwrap().len(), 4, "{body}");

    // No round was missed or late while all this happened under load, and rounds kept coming
    // (over at least 5 s, so the count means something).
    std::thread::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed()));
    let _ = reload(&agent);
    let elapsed = t0.elapsed();
    let body = agent.get_json("/v1/plugins");
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = feeder.join().unwrap();
    assert!(sent > 100, "load was fed ({sent} datagrams)");
    assert_eq!(body["missed_rounds"], 0, "{body}");
    assert_eq!(body["late_rounds"], 0, "{body}");
    let rounds = body["rounds"].as_u64().unwrap() - rounds0;
    let expected = (elapsed.as_secs_f64() / 0.1) as u64;
    eprintln!(
        "hot reload: {swaps} swaps in {swaps_took:?}; {rounds} rounds in {elapsed:?}; {} reloads",
        body["reloads"]
    );
    assert!(rounds + 3 >= expected, "{rounds} rounds in {elapsed:?} (expected about {expected})");
    assert!(body["reloads"].as_u64().unwrap() >= 10, "{body}");
    assert!(body["last_reload"]["files"].is_array(), "{body}");
    let metrics = agent.get("/metrics").1;
    assert_eq!(wedsync_tests::sample_value(&metrics, "wedsync_decision_rounds_skipped_total "), Some(0.0), "{metrics}");

    // Every load, swap, refusal and removal is in the audit trail.
    let (exit, _) = agent.signal_and_wait("TERM", Duration::from_secs(5)).unwrap();
    assert!(exit.success());
    let audit = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let count = |kind: &str| audit.lines().filter(|l| l.contains(&format!("\"kind\":\"{kind}\""))).count();
    assert!(count("plugin.reloaded") >= 6, "{audit}");
    assert!(count("plugin.rollback") >= 6, "every swap back to 1.0.0 is audited as a rollback: {audit}");
    assert!(count("plugin.refused") >= 2, "{audit}");
    assert_eq!(count("plugin.removed"), 1, "{audit}");
    let swapped = audit.lines().find(|l| l.contains("\"kind\":\"plugin.reloaded\"")).unwrap();
    assert!(swapped.contains("\"replaced\""), "{swapped}");
    assert!(test_started.elapsed() < Duration::from_secs(40), "took {:?}", test_started.elapsed());
}

#[test]
fn adversarial_plugins_never_make_a_round_late() {
    // The agent under test is a debug build: a memory bomb needs ~10 ms (its first call up to
    // ~35 ms) to reach its 16 MiB cap and 1 MiB of output ~3 ms, more than the default 5 ms
    // budget (they would just time out). A 50 ms budget lets each fail its own way; rounds of
    // 200 ms leave room for the worst round (loop + bomb + output, ~110 ms) on a busy machine.
    const ROUND_MS: u64 = 200;
    const BUDGET_MS: u64 = 50;
    let dir = unique_dir("adversaries");
    std::fs::create_dir_all(&dir).unwrap();
    let adversaries: [(&str, &[u8], &str); 5] = [
        ("infinite-loop", wedsync_test_guests::INFINITE_LOOP, "timeout"),
        ("memory-bomb", wedsync_test_guests::MEMORY_BOMB, "memory"),
        ("trap", wedsync_test_guests::TRAP, "trap"),
        ("panic", wedsync_test_guests::PANIC, "trap"),
        ("huge-output", wedsync_test_guests::HUGE_OUTPUT, "output_too_large"),
    ];
    for (name, bytes, _) in adversaries {
        std::fs::write(dir.join(format!("{}.wasm", name.replace('-', "_"))), bytes).unwrap();
    }
    std::fs::write(dir.join("extra_import.wasm"), wedsync_test_guests::EXTRA_IMPORT).unwrap();
    let config = format!(
        "{POOL}\n[engine]\nround_interval = \"{ROUND_MS}ms\"\n[plugins]\ndir = \"{}\"\nallow_unsigned = true\ncall_budget = \"{BUDGET_MS}ms\"\n\
         [plugins.config.huge-output]\nmib = 1\n",
        dir.display()
    );
    let agent = AgentProcess::start_with_config(&config, &[("WEDSYNC__API__TOKEN", TOKEN)]);
    let start = agent.get_json("/v1/plugins");
    let refused = start["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{start}");
    assert!(refused[0]["origin"].as_str().unwrap().ends_with("extra_import.wasm"), "{start}");
    assert!(refused[0]["error"].as_str().unwrap().contains("wedsync:evil/net"), "{start}");
    assert_eq!(start["plugins"].as_array().unwrap().len(), 9, "{start}");

    let (stop_load, feeder) = feed_load(&agent);
    let t0 = Instant::now();
    let rounds0 = start["rounds"].as_u64().unwrap();
    let decisions0 = agent.get_json("/v1/decisions?limit=1000")["decisions"].as_array().unwrap().len();
    // Bounded: every adversary fails (its own way) three times, then is quarantined, within a
    // few rounds.
    let body = wait_plugins(&agent, Duration::from_secs(10), |b| {
        adversaries.iter().all(|(name, _, kind)| {
            b["plugins"].as_array().unwrap().iter().any(|p| {
                p["name"] == *name
                    && p["failures"][*kind].as_u64().unwrap_or(0) >= 1
                    && p["quarantines"].as_u64().unwrap_or(0) >= 1
            })
        })
    });
    // A few more seconds of rounds with them quarantined.
    std::thread::sleep(Duration::from_millis(2500));
    let body_late = agent.get_json("/v1/plugins");
    let elapsed = t0.elapsed();
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    for body in [&body, &body_late] {
        for (name, _, kind) in adversaries {
            let p = body["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
            assert!(p["failures"][kind].as_u64().unwrap() >= 1, "{name}: {p}");
            let failures: u64 = p["failures"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
            assert!(failures >= 3, "{name}: {p}");
            assert!(p["state"] == "quarantined" || p["state"] == "failed", "{name}: {p}");
        }
    }
    for p in body_late["plugins"].as_array().unwrap() {
        if adversaries.iter().any(|(name, _, _)| p["name"] == *name) {
            continue;
        }
        let failures: u64 = p["failures"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(failures, 0, "bundled plugin failed: {p}");
        assert_eq!(p["state"], "active", "{p}");
        assert!(p["calls"].as_u64().unwrap() >= 5, "{p}");
    }
    assert_eq!(body_late["late_rounds"], 0, "{body_late}");
    assert_eq!(body_late["missed_rounds"], 0, "{body_late}");
    let rounds = body_late["rounds"].as_u64().unwrap() - rounds0;
    // The snapshot is refreshed about once a second: allow for that much staleness.
    let expected = (elapsed.as_secs_f64() * 1000.0 / ROUND_MS as f64) as u64;
    eprintln!("adversaries: {rounds} rounds in {elapsed:?}, slowest {} µs", body_late["slowest_round_us"]);
    assert!(rounds + 1000 / ROUND_MS + 2 >= expected, "{rounds} rounds in {elapsed:?} (expected about {expected})");
    let decisions = agent.get_json("/v1/decisions?limit=1000")["decisions"].as_array().unwrap().len();
    assert!(decisions > decisions0, "decisions kept coming ({decisions0} → {decisions})");
}
