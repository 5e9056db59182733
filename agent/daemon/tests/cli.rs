//! The command line: `config print`, `config check`, bad config at `run`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wedsync-agent"));
    // The tests must not inherit an operator's overrides.
    for (key, _) in std::env::vars() {
        if key.starts_with("WEDSYNC__") {
            command.env_remove(key);
        }
    }
    command
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wedsync-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_print_shows_effective_config_with_env_applied() {
    let out = agent().args(["config", "print"]).env("WEDSYNC__AGENT__REGION", "eu-west").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("region = \"eu-west\""), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:8125\""), "{text}");
}

#[test]
fn config_check_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/agent.example.toml");
    let out = agent().args(["config", "check", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn config_check_names_every_bad_field() {
    let file = temp_file("bad.toml", "[api]\nlisten = \"300.1.1.1:80\"\n[host]\ninterval = \"soon\"\n");
    let out = agent().args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("api.listen: \"300.1.1.1:80\" is not a socket address"), "{err}");
    assert!(err.contains("host.interval: \"soon\" is not a duration"), "{err}");
}

#[test]
fn config_check_reports_toml_syntax_errors_with_the_file() {
    let file = temp_file("syntax.toml", "[api\nlisten = 1\n");
    let out = agent().args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&file.display().to_string()), "{err}");
}

#[test]
fn run_refuses_an_invalid_config_before_binding_anything() {
    let out = agent().args(["run"]).env("WEDSYNC__STATSD__LISTEN", "nowhere").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("statsd.listen: \"nowhere\" is not a socket address"), "{err}");
}

#[test]
fn alerts_rules_are_prometheus_rules_promtool_accepts() {
    let config = temp_file(
        "alerts.toml",
        "[alerts.rules.shedding]\nfor = \"45s\"\n[alerts.rules.stale_metrics]\nenabled = false\n",
    );
    let out = agent().args(["alerts", "rules", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rules = String::from_utf8(out.stdout).unwrap();
    assert!(rules.contains("alert: PoolShedding") && rules.contains("for: 45s"), "{rules}");
    assert!(!rules.contains("PoolStaleMetrics"), "a rule turned off is left out: {rules}");
    assert!(rules.contains("alert: PoolCapacityForecast") && rules.contains("alert: ActuatorFailing"), "{rules}");
    // Prometheus' own checker (Debian's `prometheus` package; .ci/run installs it).
    let file = temp_file("rules.yml", &rules);
    let check =
        Command::new("promtool").args(["check", "rules"]).arg(&file).output().expect("promtool (Debian's prometheus)");
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success() && said.contains("SUCCESS: 3 rules found"), "{said}");
}
