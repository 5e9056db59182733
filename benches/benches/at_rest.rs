//! The agent at rest: default intervals, no traffic, measured over a minute
//! (budget: under 0.5% of one core and under 30 MiB resident).
//!
//! Runs the real release binary and reads its CPU time and RSS from procfs.
//! `WEDSYNC_AT_REST_SECONDS` shortens or lengthens the measurement (default 60).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use wedsync_tests::AgentProcess;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn main() {
    // `cargo bench` passes "--bench"; a name filter that is not ours means "not this one".
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if !args.is_empty() && !args.iter().any(|a| "at_rest".contains(a.as_str())) {
        return;
    }
    let seconds: u64 = std::env::var("WEDSYNC_AT_REST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let ticks_per_second = 100.0; // USER_HZ on Linux
    // The harness builds the release binary of this very tree before starting it.
    let mut agent = AgentProcess::start(&[]);
    let pid = agent.pid();
    // Let start-up settle, then measure.
    std::thread::sleep(Duration::from_secs(2));
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let mut peak_rss = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        peak_rss = peak_rss.max(rss_kib(pid));
    }
    let cpu_seconds = (cpu_ticks(pid) - c0) as f64 / ticks_per_second;
    let wall = t0.elapsed().as_secs_f64();
    let cpu_percent = cpu_seconds / wall * 100.0;
    let rss_mib = peak_rss as f64 / 1024.0;
    println!(
        "at_rest: {wall:.1} s wall, {cpu_seconds:.2} s CPU = {cpu_percent:.3}% of one core (budget 0.5%), peak RSS {rss_mib:.1} MiB (budget 30 MiB)"
    );
    assert!(agent.is_running());
    let within = cpu_percent <= 0.5 && rss_mib <= 30.0;
    drop(agent);
    if !within {
        eprintln!("at_rest: OVER BUDGET");
        std::process::exit(1);
    }
}
