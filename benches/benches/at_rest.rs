//! The agent at rest: default intervals, no traffic, measured over a minute
//! (budget: under 0.5% of one core and under 30 MiB resident), twice, as a user meets it:
//!
//! 1. a cold first start: a fresh state directory, so an empty compiled cache of its own (the
//!    bundled plugins are compiled, in a child process of the agent);
//! 2. a warm restart on the same state directory (the plugins load from the compiled cache).
//!
//! Runs the real release binary and reads its CPU time and RSS from procfs.
//! `WEDSYNC_AT_REST_SECONDS` shortens or lengthens each measurement (default 60).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};
use wedsync_tests::AgentProcess;

const CPU_BUDGET_PERCENT: f64 = 0.5;
const RSS_BUDGET_MIB: f64 = 30.0;

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect()
}

/// utime + stime of the process itself (fields 14 and 15 of the whole line).
fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    fields[11] + fields[12]
}

/// cutime + cstime: its children that have ended (the plugin compilers).
fn children_cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    fields[13] + fields[14]
}

/// A `VmRSS:`-style line of `/proc/PID/status`, KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

struct AtRest {
    cpu_percent: f64,
    peak_rss_mib: f64,
}

impl AtRest {
    fn within(&self) -> bool {
        self.cpu_percent <= CPU_BUDGET_PERCENT && self.peak_rss_mib <= RSS_BUDGET_MIB
    }
}

/// Starts the agent on `state`, lets start-up settle, measures it at rest, stops it.
fn measure(label: &str, state: &Path, seconds: u64) -> AtRest {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let state_dir = state.to_str().unwrap();
    // The default cache location (the harness otherwise shares one cache across tests).
    let cache_dir = state.join("plugin-cache");
    let started = Instant::now();
    let mut agent = AgentProcess::start(&[
        ("WEDSYNC__STORAGE__DIR", state_dir),
        ("WEDSYNC__PLUGINS__CACHE_DIR", cache_dir.to_str().unwrap()),
    ]);
    let ready = started.elapsed();
    let pid = agent.pid();
    let start_cpu = cpu_ticks(pid) as f64 / ticks_per_second;
    // Let start-up settle, then measure.
    std::thread::sleep(Duration::from_secs(2));
    let compilers_cpu = children_cpu_ticks(pid) as f64 / ticks_per_second;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let mut peak_rss = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss = peak_rss.max(status_kib(pid, "VmRSS:"));
    }
    let cpu_seconds = (cpu_ticks(pid) - c0) as f64 / ticks_per_second;
    let high_water = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    // Anonymous memory is the agent's own; file-backed pages (its binary's code, the mapped
    // compiled plugins) also depend on what the page cache holds.
    let (anon, file) = (status_kib(pid, "RssAnon:") as f64 / 1024.0, status_kib(pid, "RssFile:") as f64 / 1024.0);
    let wall = t0.elapsed().as_secs_f64();
    let result = AtRest { cpu_percent: cpu_seconds / wall * 100.0, peak_rss_mib: peak_rss as f64 / 1024.0 };
    println!(
        "at_rest/{label}: ready in {:.2} s ({start_cpu:.2} s CPU, plugin compilers {compilers_cpu:.2} s); at rest \
         {wall:.1} s wall, {cpu_seconds:.2} s CPU = {:.3}% of one core (budget {CPU_BUDGET_PERCENT}%), peak RSS \
         {:.1} MiB (budget {RSS_BUDGET_MIB} MiB; at the end {anon:.1} MiB anonymous, {file:.1} MiB file-backed; \
         high-water mark since start {high_water:.1} MiB)",
        ready.as_secs_f64(),
        result.cpu_percent,
        result.peak_rss_mib,
    );
    assert!(agent.is_running());
    // Stopped as a service manager would, so the restart finds its state as it was left.
    assert!(agent.signal_and_wait("TERM", Duration::from_secs(10)).is_some(), "{label}: the agent did not stop");
    result
}

fn artifacts(cache_dir: &Path) -> usize {
    std::fs::read_dir(cache_dir)
        .map(|entries| {
            entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm")).count()
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes "--bench"; a name filter that is not ours means "not this one".
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if !args.is_empty() && !args.iter().any(|a| "at_rest".contains(a.as_str())) {
        return;
    }
    let seconds: u64 = std::env::var("WEDSYNC_AT_REST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    // The harness builds the release binary of this very tree; before any clock starts.
    wedsync_tests::agent_binary();
    let state = wedsync_tests::unique_dir("at-rest");
    std::fs::create_dir_all(&state).unwrap();
    let cold = measure("cold_first_start", &state, seconds);
    let compiled = artifacts(&state.join("plugin-cache"));
    assert!(compiled >= 4, "the first start left {compiled} compiled plugins in its cache, not the 4 bundled ones");
    let warm = measure("warm_restart", &state, seconds);
    let _ = std::fs::remove_dir_all(&state);
    let mut over = false;
    for (label, result) in [("cold_first_start", &cold), ("warm_restart", &warm)] {
        if !result.within() {
            eprintln!("at_rest/{label}: OVER BUDGET");
            over = true;
        }
    }
    if over {
        std::process::exit(1);
    }
}
