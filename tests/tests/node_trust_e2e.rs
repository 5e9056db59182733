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
