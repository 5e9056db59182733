//! StatsD ingest of the real release agent over real UDP on loopback, at rising offered rates,
//! and of Prometheus' `statsd_exporter` in the same run when `STATSD_EXPORTER` names its binary
//! (goal: at least 2.5 M lines/s with under 1% loss on 2 cores).
//!
//! For each target and each offered rate, one sender thread (its own socket, one source address,
//! as one busy client or a relay is) paces 1,400-byte datagrams (one Ethernet MTU) of the
//! `statsd_ingest` bench's traffic (2,000 series: counters, timers, gauges, DogStatsD tags) for
//! a few seconds; then the harness waits for the target to drain and reads:
//! * lines received: the target's own count (`wedsync_statsd_lines_total`; the exporter's
//!   `statsd_exporter_samples_total`, lines parsed; its `events_total` replays a sampled timer
//!   line `1/rate` times);
//! * datagrams the kernel dropped on the target's socket (`/proc/net/udp`, by port);
//! * the target's CPU time (`/proc/PID/stat`), for lines per CPU-second.
//!
//! The sender shares the machine's cores with the target, as a local client does.
//! `STATSD_LIVE_SECONDS` sets each step's length (default 5); `STATSD_LIVE_RATES` the offered
//! rates in M lines/s (default `0.5,1,1.5,2,2.5,3,3.5,max`); `STATSD_LIVE_DATAGRAM_BYTES` the
//! datagram size (default 1400). Both targets get an 8 MiB receive buffer (the kernel caps it at
//! `net.core.rmem_max`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wedsync_benches::{line_count, traffic};
use wedsync_tests::{AgentProcess, sample_value};

const RECEIVE_BUFFER: usize = 8 << 20;
const LOSS_GOAL: f64 = 0.01;
const RATE_GOAL: f64 = 2.5e6;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<u64> =
        stat[stat.rfind(')').unwrap() + 2..].split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    // clock ticks; 100 per second on Linux's usual USER_HZ
    (fields[11] + fields[12]) as f64 / 100.0
}

/// Drops the kernel counted on the UDP socket bound to `port` (the last field of its row).
fn kernel_drops(port: u16) -> u64 {
    let hex = format!(":{port:04X} ");
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .filter(|row| row.split_whitespace().nth(1).is_some_and(|local| format!("{local} ").contains(&hex)))
                .filter_map(|row| row.split_whitespace().nth(12).and_then(|d| d.parse::<u64>().ok()))
                .collect::<Vec<_>>()
        })
        .sum()
}

/// `GET /metrics` over plain HTTP/1.0.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// The sum of every sample of `name` (all label sets).
fn sum_of(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Something that receives StatsD.
trait Target {
    fn statsd(&self) -> SocketAddr;
    fn pid(&self) -> u32;
    /// Lines it has taken in so far.
    fn lines(&self) -> f64;
}

struct Agent(AgentProcess);

impl Target for Agent {
    fn statsd(&self) -> SocketAddr {
        self.0.statsd
    }
    fn pid(&self) -> u32 {
        self.0.pid()
    }
    fn lines(&self) -> f64 {
        let (_, body) = self.0.get("/metrics");
        sample_value(&body, "wedsync_statsd_lines_total ").unwrap()
    }
}

struct Exporter {
    child: Child,
    statsd: SocketAddr,
    web: SocketAddr,
}

impl Exporter {
    fn start(binary: &str) -> Exporter {
        let free = |proto: &str| -> SocketAddr {
            if proto == "udp" {
                UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
            } else {
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
            }
        };
        let (statsd, web) = (free("udp"), free("tcp"));
        let child = Command::new(binary)
            .arg(format!("--statsd.listen-udp={statsd}"))
            .arg("--statsd.listen-tcp=")
            .arg(format!("--web.listen-address={web}"))
            .arg(format!("--statsd.read-buffer={RECEIVE_BUFFER}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start statsd_exporter");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(web).is_err() {
            assert!(Instant::now() < deadline, "statsd_exporter did not listen on {web}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Exporter { child, statsd, web }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target for Exporter {
    fn statsd(&self) -> SocketAddr {
        self.statsd
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn lines(&self) -> f64 {
        sum_of(&scrape(self.web), "statsd_exporter_samples_total")
    }
}

struct Step {
    offered: Option<f64>,
    sent_lines: f64,
    received_lines: f64,
    seconds: f64,
    kernel_drops: u64,
    cpu: f64,
}

impl Step {
    fn loss(&self) -> f64 {
        1.0 - self.received_lines / self.sent_lines
    }
    fn received_rate(&self) -> f64 {
        self.received_lines / self.seconds
    }
}

/// Sends `datagrams` round and round to `to` at `rate` lines/s (`None`: as fast as one thread
/// can) for `seconds`; returns lines sent and the time it took.
fn send(to: SocketAddr, datagrams: &[Vec<u8>], lines_per: &[usize], rate: Option<f64>, seconds: f64) -> (f64, f64) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(to).unwrap();
    let started = Instant::now();
    let length = Duration::from_secs_f64(seconds);
    let (mut sent, mut i) = (0usize, 0usize);
    // Paced in 1 ms slices: each slice sends what the rate owes by its end.
    let mut slice = 0u64;
    while started.elapsed() < length {
        slice += 1;
        let owed = rate.map_or(usize::MAX, |r| (r * slice as f64 / 1000.0) as usize);
        while sent < owed {
            let d = i % datagrams.len();
            // Loopback drops nothing on the way; a full socket buffer drops at the receiver.
            if socket.send(&datagrams[d]).is_ok() {
                sent += lines_per[d];
            }
            i += 1;
            if rate.is_none() && i % 64 == 0 && started.elapsed() >= length {
                break;
            }
        }
        if let Some(due) = started.checked_add(Duration::from_millis(slice)) {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    (sent as f64, started.elapsed().as_secs_f64())
}

/// Waits until the target's count stops moving (it has worked off what it queued); returns it.
fn drained(target: &dyn Target) -> f64 {
    let mut last = target.lines();
    let mut still = 0;
    while still < 2 {
        std::thread::sleep(Duration::from_millis(300));
        let now = target.lines();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

fn measure(target: &dyn Target, datagrams: &[Vec<u8>], rates: &[Option<f64>], seconds: f64) -> Vec<Step> {
    let lines_per: Vec<usize> = datagrams.iter().map(|d| d.iter().filter(|&&b| b == b'\n').count()).collect();
    // Warm up: every series made once.
    send(target.statsd(), datagrams, &lines_per, Some(200_000.0), 1.0);
    drained(target);
    let port = target.statsd().port();
    rates
        .iter()
        .map(|&rate| {
            let (lines0, drops0, cpu0) = (target.lines(), kernel_drops(port), cpu_seconds(target.pid()));
            let (sent_lines, took) = send(target.statsd(), datagrams, &lines_per, rate, seconds);
            let last = drained(target);
            Step {
                offered: rate,
                sent_lines,
                received_lines: last - lines0,
                seconds: took,
                kernel_drops: kernel_drops(port) - drops0,
                cpu: cpu_seconds(target.pid()) - cpu0,
            }
        })
        .collect()
}

/// Prints the steps; returns the highest received rate with under [`LOSS_GOAL`] loss and
/// whether a step offered at least [`RATE_GOAL`] stayed under it.
fn report(name: &str, steps: &[Step]) -> (Option<f64>, bool) {
    println!("\n{name}");
    println!(
        "| offered (M lines/s) | sent (M lines/s) | received (M lines/s) | loss | kernel drops (datagrams) | CPU (cores) | M lines per CPU-second |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for s in steps {
        println!(
            "| {} | {:.2} | {:.2} | {:.2}% | {} | {:.2} | {:.2} |",
            s.offered.map_or("max".to_owned(), |r| format!("{:.1}", r / 1e6)),
            s.sent_lines / s.seconds / 1e6,
            s.received_rate() / 1e6,
            s.loss() * 100.0,
            s.kernel_drops,
            s.cpu / s.seconds,
            s.received_lines / s.cpu.max(0.01) / 1e6,
        );
    }
    let best = steps
        .iter()
        .filter(|s| s.loss() < LOSS_GOAL)
        .map(Step::received_rate)
        .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))));
    println!(
        "{name}: highest rate with under {:.0}% loss: {}",
        LOSS_GOAL * 100.0,
        best.map_or("none".to_owned(), |r| format!("{:.2} M lines/s", r / 1e6))
    );
    let goal = steps.iter().any(|s| s.sent_lines / s.seconds >= RATE_GOAL * 0.999 && s.loss() < LOSS_GOAL);
    (best, goal)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let seconds: f64 = env_or("STATSD_LIVE_SECONDS", 5.0);
    let bytes: usize = env_or("STATSD_LIVE_DATAGRAM_BYTES", 1_400);
    let rates: Vec<Option<f64>> = std::env::var("STATSD_LIVE_RATES")
        .unwrap_or_else(|_| "0.5,1,1.5,2,2.5,3,3.5,max".into())
        .split(',')
        .map(|r| r.trim().parse::<f64>().ok().map(|m| m * 1e6))
        .collect();
    let datagrams = traffic(200_000, 2_000, bytes);
    println!(
        "statsd_live: {} datagrams of at most {bytes} bytes, {:.1} lines each; {seconds} s per step; {} cores",
        datagrams.len(),
        line_count(&datagrams) as f64 / datagrams.len() as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let agent = Agent(AgentProcess::start(&[("WEDSYNC__STATSD__RECEIVE_BUFFER_BYTES", &RECEIVE_BUFFER.to_string())]));
    let status = agent.0.get_json("/v1/status");
    println!(
        "wedsync-agent: {} StatsD readers, {} store shards",
        status["config"]["statsd_readers"], status["config"]["store_shards"]
    );
    let steps = measure(&agent, &datagrams, &rates, seconds);
    let (_, metrics) = agent.0.get("/metrics");
    let own_drops = sample_value(&metrics, "wedsync_statsd_kernel_drops_total{socket=\"udp\"} ");
    drop(agent);
    let (_, goal) = report("wedsync-agent", &steps);
    println!(
        "wedsync-agent: its own count of kernel drops: {}",
        own_drops.map_or("missing".to_owned(), |d| format!("{d}"))
    );

    match std::env::var("STATSD_EXPORTER") {
        Ok(binary) => {
            let version = Command::new(&binary).arg("--version").output().map(|o| {
                let text = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
                text.lines().next().unwrap_or_default().to_owned()
            });
            println!("\nstatsd_exporter: {}", version.unwrap_or_default());
            let exporter = Exporter::start(&binary);
            let steps = measure(&exporter, &datagrams, &rates, seconds);
            drop(exporter);
            report("statsd_exporter", &steps);
        }
        Err(_) => println!("\nSTATSD_EXPORTER not set: statsd_exporter not measured"),
    }
    println!(
        "wedsync-agent: goal {}: {:.1} M lines/s offered with under {:.0}% loss",
        if goal { "met" } else { "NOT met" },
        RATE_GOAL / 1e6,
        LOSS_GOAL * 100.0
    );
}
