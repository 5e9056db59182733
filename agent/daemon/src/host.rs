//! Host metrics read straight from procfs: CPU, memory, load, network, disks and pressure (PSI).
//!
//! sysinfo is not used here because its CPU refresh has a 200 ms floor and it reads more than
//! needed; the agent samples the host several times a second. [`HostCollector`] keeps the
//! previous raw counters and turns them into rates, and reuses one read buffer, so a sample
//! costs a handful of small reads and no parsing allocation beyond the returned
//! [`HostSample`]. The parsers are pure functions over the file text, tested on fixtures.
//!
//! Rates are computed against the previous successful [`HostCollector::sample`]. A counter that
//! goes backwards (a wrap, a device reset) counts as a delta of 0.

use serde::Serialize;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::str::{FromStr, SplitAsciiWhitespace};
use std::time::Instant;

/// Bytes in a diskstats sector: the kernel always counts in 512-byte units.
const SECTOR_BYTES: u64 = 512;

/// CPU time split over the last interval, from `/proc/stat`.
///
/// Every fraction is of all CPU time (all cores together) over the interval, in `0..=1`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Cpu {
    /// Fraction not idle: `1 - (idle + iowait) / total`.
    pub busy: f64,
    /// Fraction in user space (`user + nice`; guest time is already inside `user`).
    pub user: f64,
    /// Fraction in the kernel (`system + irq + softirq`).
    pub system: f64,
    /// Fraction idle with I/O outstanding.
    pub iowait: f64,
    /// Fraction stolen by the hypervisor.
    pub steal: f64,
    /// Busy fraction of each online core (`cpuN` lines, in file order); empty on the first sample.
    pub per_core: Vec<f64>,
    /// Number of online cores (`cpuN` lines).
    pub cores: usize,
}

/// Memory and swap, from `/proc/meminfo`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Memory {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable` (`MemFree + Buffers + Cached` on kernels older than 3.14).
    pub available_bytes: u64,
    /// `total_bytes - available_bytes`.
    pub used_bytes: u64,
    /// `SwapTotal`.
    pub swap_total_bytes: u64,
    /// `SwapTotal - SwapFree`.
    pub swap_used_bytes: u64,
}

/// Load averages and task counts, from `/proc/loadavg`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Load {
    /// 1-minute load average.
    pub one: f64,
    /// 5-minute load average.
    pub five: f64,
    /// 15-minute load average.
    pub fifteen: f64,
    /// Tasks currently runnable.
    pub runnable: u64,
    /// Tasks (threads) that exist.
    pub total_tasks: u64,
}

/// One network interface's throughput, from `/proc/net/dev`.
///
/// Rates are per second over the last interval and 0 on the first sample or for an interface
/// first seen in this sample.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NetInterface {
    /// Interface name, e.g. `eth0` or `lo`.
    pub name: String,
    /// Bytes received per second.
    pub rx_bytes_per_sec: f64,
    /// Bytes sent per second.
    pub tx_bytes_per_sec: f64,
    /// Packets received per second.
    pub rx_packets_per_sec: f64,
    /// Packets sent per second.
    pub tx_packets_per_sec: f64,
    /// Receive errors per second.
    pub rx_errors_per_sec: f64,
    /// Transmit errors per second.
    pub tx_errors_per_sec: f64,
    /// Received packets dropped per second.
    pub rx_drops_per_sec: f64,
    /// Outgoing packets dropped per second.
    pub tx_drops_per_sec: f64,
    /// Bytes received since the interface appeared (the raw counter).
    pub rx_bytes_total: u64,
    /// Bytes sent since the interface appeared (the raw counter).
    pub tx_bytes_total: u64,
}

/// One whole disk's activity, from `/proc/diskstats`.
///
/// Loop, RAM and zram devices and partitions are left out. Rates are per second over the last
/// interval and 0 on the first sample or for a disk first seen in this sample.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Disk {
    /// Device name, e.g. `sda`, `nvme0n1`, `dm-0`.
    pub name: String,
    /// Reads completed per second.
    pub reads_per_sec: f64,
    /// Writes completed per second.
    pub writes_per_sec: f64,
    /// Bytes read per second.
    pub read_bytes_per_sec: f64,
    /// Bytes written per second.
    pub write_bytes_per_sec: f64,
    /// Fraction of the interval the device had I/O in flight (`io_ticks`), in `0..=1`.
    pub busy: f64,
}

/// Pressure stall information for one resource, from `/proc/pressure/<resource>`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResourcePressure {
    /// `some avg10`: percent of the last 10 s some task stalled on the resource.
    pub some_avg10: f64,
    /// `some avg60`: percent of the last 60 s some task stalled on the resource.
    pub some_avg60: f64,
    /// `full avg10`: percent of the last 10 s all non-idle tasks stalled; `None` when the
    /// kernel has no `full` line (CPU before Linux 5.13).
    pub full_avg10: Option<f64>,
    /// Fraction of the last interval some task stalled, in `0..=1`, from the `some total=`
    /// microsecond counter (finer than `avg10`); 0 on the first sample.
    pub some_stall_fraction: f64,
}

/// Pressure stall information for CPU, memory and I/O.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Pressure {
    /// CPU pressure.
    pub cpu: ResourcePressure,
    /// Memory pressure.
    pub memory: ResourcePressure,
    /// I/O pressure.
    pub io: ResourcePressure,
}

/// One reading of the host.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HostSample {
    /// CPU time split over the interval.
    pub cpu: Cpu,
    /// Memory and swap.
    pub memory: Memory,
    /// Load averages.
    pub load: Load,
    /// Every network interface, `lo` included; empty when `/proc/net/dev` is absent.
    pub network: Vec<NetInterface>,
    /// Whole disks; empty when `/proc/diskstats` is absent.
    pub disks: Vec<Disk>,
    /// Pressure stall information; `None` when the kernel has no `/proc/pressure` (older
    /// kernels, PSI disabled, some containers).
    pub pressure: Option<Pressure>,
    /// Seconds since the previous sample; 0 on the first sample (then every rate is 0).
    pub interval_seconds: f64,
}

/// Why a host sample failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A procfs file could not be read (a required one is missing, or the read itself failed).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A procfs file did not have the expected format.
    #[error("cannot parse {} line {line}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number; 0 when the problem is the file as a whole (a required line is
        /// absent).
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

fn parse_error(path: &Path, line: usize, reason: impl Into<String>) -> HostError {
    HostError::Parse { path: path.to_path_buf(), line, reason: reason.into() }
}

/// Reads host metrics from a procfs tree and turns its counters into rates.
#[derive(Debug)]
pub struct HostCollector {
    paths: Paths,
    /// Reused for every file read.
    buf: String,
    /// When the previous successful sample was taken.
    last: Option<Instant>,
    cpu: Pair<CpuSnapshot>,
    net: Pair<Named<NetCounters>>,
    disks: Pair<Named<DiskCounters>>,
    /// `some total=` counters (µs) of cpu, memory, io at the previous sample, when read.
    psi_prev: Option<[u64; 3]>,
}

/// The files read, joined once.
#[derive(Debug)]
struct Paths {
    stat: PathBuf,
    meminfo: PathBuf,
    loadavg: PathBuf,
    net_dev: PathBuf,
    diskstats: PathBuf,
    pressure: [PathBuf; 3],
}

/// The previous and current raw counters of one source; swapped after a successful sample.
#[derive(Debug, Default)]
struct Pair<T> {
    prev: T,
    cur: T,
}

impl HostCollector {
    /// A collector reading the procfs mounted at `procfs_root` (normally `/proc`).
    pub fn new(procfs_root: impl Into<PathBuf>) -> Self {
        let root: PathBuf = procfs_root.into();
        let paths = Paths {
            stat: root.join("stat"),
            meminfo: root.join("meminfo"),
            loadavg: root.join("loadavg"),
            net_dev: root.join("net/dev"),
            diskstats: root.join("diskstats"),
            pressure: [root.join("pressure/cpu"), root.join("pressure/memory"), root.join("pressure/io")],
        };
        Self {
            paths,
            buf: String::with_capacity(8 * 1024),
            last: None,
            cpu: Pair::default(),
            net: Pair::default(),
            disks: Pair::default(),
            psi_prev: None,
        }
    }

    /// Reads procfs once. Rates (CPU fractions, bytes/s, PSI stall rate) are deltas against the
    /// previous call; on the first call they are 0 / empty. `now` comes from the caller.
    ///
    /// A call whose `now` is not after the previous call's is treated like a first call. A
    /// failed call leaves the previous counters untouched, so the next rates span both intervals.
    ///
    /// # Errors
    /// [`HostError::Read`] when `stat`, `meminfo` or `loadavg` cannot be read, or an optional
    /// file (`net/dev`, `diskstats`, `pressure/*`) exists but cannot be read;
    /// [`HostError::Parse`] when any file read is malformed.
    pub fn sample(&mut self, now: Instant) -> Result<HostSample, HostError> {
        let interval = self.last.and_then(|last| now.checked_duration_since(last)).filter(|d| !d.is_zero());
        let secs = interval.map_or(0.0, |d| d.as_secs_f64());

        read_required(&self.paths.stat, &mut self.buf)?;
        parse_stat(&self.buf, &self.paths.stat, &mut self.cpu.cur)?;
        let cpu = if secs > 0.0 { cpu_rates(&self.cpu.prev, &self.cpu.cur) } else { cpu_first(&self.cpu.cur) };

        read_required(&self.paths.meminfo, &mut self.buf)?;
        let memory = parse_meminfo(&self.buf, &self.paths.meminfo)?;

        read_required(&self.paths.loadavg, &mut self.buf)?;
        let load = parse_loadavg(&self.buf, &self.paths.loadavg)?;

        self.net.cur.clear();
        if read_optional(&self.paths.net_dev, &mut self.buf)? {
            parse_net_dev(&self.buf, &self.paths.net_dev, &mut self.net.cur)?;
        }
        let network = net_rates(&self.net.prev, &self.net.cur, secs);

        self.disks.cur.clear();
        if read_optional(&self.paths.diskstats, &mut self.buf)? {
            parse_diskstats(&self.buf, &self.paths.diskstats, &mut self.disks.cur)?;
        }
        let disks = disk_rates(&self.disks.prev, &self.disks.cur, secs);

        let psi = self.read_pressure()?;
        let pressure = psi.map(|readings| {
            let prev = self.psi_prev.filter(|_| secs > 0.0);
            let resource = |i: usize| {
                let r: &PsiReading = &readings[i];
                let stall =
                    prev.map_or(0.0, |p| (r.some_total.saturating_sub(p[i]) as f64 / (secs * 1e6)).clamp(0.0, 1.0));
                ResourcePressure {
                    some_avg10: r.some_avg10,
                    some_avg60: r.some_avg60,
                    full_avg10: r.full_avg10,
                    some_stall_fraction: stall,
                }
            };
            Pressure { cpu: resource(0), memory: resource(1), io: resource(2) }
        });

        // Everything read: commit the counters.
        self.psi_prev = psi.map(|r| [r[0].some_total, r[1].some_total, r[2].some_total]);
        std::mem::swap(&mut self.cpu.prev, &mut self.cpu.cur);
        std::mem::swap(&mut self.net.prev, &mut self.net.cur);
        std::mem::swap(&mut self.disks.prev, &mut self.disks.cur);
        self.last = Some(now);

        Ok(HostSample { cpu, memory, load, network, disks, pressure, interval_seconds: secs })
    }

    /// The three PSI files, or `None` when any of them does not exist.
    fn read_pressure(&mut self) -> Result<Option<[PsiReading; 3]>, HostError> {
        let mut out = [PsiReading::default(); 3];
        for (path, slot) in self.paths.pressure.iter().zip(out.iter_mut()) {
            if !read_optional(path, &mut self.buf)? {
                return Ok(None);
            }
            *slot = parse_pressure(&self.buf, path)?;
        }
        Ok(Some(out))
    }
}

/// Reads `path` into the cleared `buf`.
fn read_into(path: &Path, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_string(buf).map(|_| ())
}

fn read_required(path: &Path, buf: &mut String) -> Result<(), HostError> {
    read_into(path, buf).map_err(|source| HostError::Read { path: path.to_path_buf(), source })
}

/// Reads an optional file: `Ok(false)` when it does not exist (or the kernel does not support
/// it), an error for any other failure.
fn read_optional(path: &Path, buf: &mut String) -> Result<bool, HostError> {
    match read_into(path, buf) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Unsupported) => {
            buf.clear();
            Ok(false)
        }
        Err(source) => Err(HostError::Read { path: path.to_path_buf(), source }),
    }
}

/// Parses the next whitespace-separated field of line `line` as a `T`.
fn next_field<T: FromStr>(
    fields: &mut SplitAsciiWhitespace<'_>,
    path: &Path,
    line: usize,
    what: &str,
) -> Result<T, HostError> {
    let token = fields.next().ok_or_else(|| parse_error(path, line, format!("missing {what}")))?;
    token.parse().map_err(|_| parse_error(path, line, format!("{what}: {token:?} is not a number")))
}

// ---------------------------------------------------------------------------------------------
// /proc/stat

/// The `user nice system idle iowait irq softirq steal` columns of a `cpu` line, in ticks.
type CpuTimes = [u64; 8];
const USER: usize = 0;
const NICE: usize = 1;
const SYSTEM: usize = 2;
const IDLE: usize = 3;
const IOWAIT: usize = 4;
const IRQ: usize = 5;
const SOFTIRQ: usize = 6;
const STEAL: usize = 7;
const CPU_COLUMNS: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

/// The CPU lines of one `/proc/stat` read.
#[derive(Debug, Default, Clone, PartialEq)]
struct CpuSnapshot {
    /// The aggregate `cpu` line.
    total: CpuTimes,
    /// Each `cpuN` line: the core number and its times.
    cores: Vec<(u32, CpuTimes)>,
}

/// Parses the `cpu` and `cpuN` lines of `/proc/stat` into `out` (cleared first). Columns after
/// `steal` (guest time, already counted in `user`) are ignored; columns an old kernel lacks
/// count as 0, but `user nice system idle` must be there.
fn parse_stat(text: &str, path: &Path, out: &mut CpuSnapshot) -> Result<(), HostError> {
    out.cores.clear();
    let mut seen_total = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut fields = line.split_ascii_whitespace();
        let Some(label) = fields.next() else { continue };
        let Some(suffix) = label.strip_prefix("cpu") else {
            if seen_total {
                break; // the cpu lines come first; skip the long `intr` line and the rest
            }
            continue;
        };
        let mut times = CpuTimes::default();
        for (col, name) in CPU_COLUMNS.iter().enumerate() {
            if col > IDLE && fields.clone().next().is_none() {
                break;
            }
            times[col] = next_field(&mut fields, path, n, name)?;
        }
        if suffix.is_empty() {
            out.total = times;
            seen_total = true;
        } else {
            let core = suffix
                .parse::<u32>()
                .map_err(|_| parse_error(path, n, format!("{label:?} is not `cpu` or `cpu<N>`")))?;
            out.cores.push((core, times));
        }
    }
    if !seen_total {
        return Err(parse_error(path, 0, "no aggregate `cpu` line"));
    }
    Ok(())
}

/// Column-wise delta, a counter gone backwards counting as 0.
fn cpu_delta(prev: &CpuTimes, cur: &CpuTimes) -> CpuTimes {
    std::array::from_fn(|i| cur[i].saturating_sub(prev[i]))
}

fn busy_fraction(d: &CpuTimes) -> f64 {
    let total: u64 = d.iter().sum();
    // `(total - idle - iowait) / total`, which is `1 - (idle + iowait) / total` without the
    // rounding of the subtraction.
    if total == 0 { 0.0 } else { total.saturating_sub(d[IDLE] + d[IOWAIT]) as f64 / total as f64 }
}

fn cpu_rates(prev: &CpuSnapshot, cur: &CpuSnapshot) -> Cpu {
    let d = cpu_delta(&prev.total, &cur.total);
    let total: u64 = d.iter().sum();
    let frac = |ticks: u64| if total == 0 { 0.0 } else { ticks as f64 / total as f64 };
    let per_core = cur
        .cores
        .iter()
        .enumerate()
        .map(|(i, (id, times))| {
            // Cores keep their position unless one went offline or came online.
            let before = match prev.cores.get(i) {
                Some((prev_id, t)) if prev_id == id => Some(t),
                _ => prev.cores.iter().find(|(prev_id, _)| prev_id == id).map(|(_, t)| t),
            };
            before.map_or(0.0, |before| busy_fraction(&cpu_delta(before, times)))
        })
        .collect();
    Cpu {
        busy: busy_fraction(&d),
        user: frac(d[USER] + d[NICE]),
        system: frac(d[SYSTEM] + d[IRQ] + d[SOFTIRQ]),
        iowait: frac(d[IOWAIT]),
        steal: frac(d[STEAL]),
        per_core,
        cores: cur.cores.len(),
    }
}

fn cpu_first(cur: &CpuSnapshot) -> Cpu {
    Cpu { cores: cur.cores.len(), ..Cpu::default() }
}

// ---------------------------------------------------------------------------------------------
// /proc/meminfo

/// Parses `/proc/meminfo`. `MemTotal` is required; values are in kB.
fn parse_meminfo(text: &str, path: &Path) -> Result<Memory, HostError> {
    const TOTAL: usize = 0;
    const FREE: usize = 1;
    const AVAILABLE: usize = 2;
    const BUFFERS: usize = 3;
    const CACHED: usize = 4;
    const SWAP_TOTAL: usize = 5;
    const SWAP_FREE: usize = 6;
    const KEYS: [&str; 7] =
        ["MemTotal:", "MemFree:", "MemAvailable:", "Buffers:", "Cached:", "SwapTotal:", "SwapFree:"];
    let mut values: [Option<u64>; 7] = [None; 7];
    let mut found = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        let Some(slot) = KEYS.iter().position(|k| *k == key) else { continue };
        let value: u64 = next_field(&mut fields, path, n, key.trim_end_matches(':'))?;
        let bytes = match fields.next() {
            Some("kB") => value.saturating_mul(1024),
            None => value,
            Some(unit) => return Err(parse_error(path, n, format!("unknown unit {unit:?}"))),
        };
        if values[slot].replace(bytes).is_none() {
            found += 1;
        }
        if found == KEYS.len() {
            break;
        }
    }
    let total = values[TOTAL].ok_or_else(|| parse_error(path, 0, "no MemTotal line"))?;
    let available = values[AVAILABLE].unwrap_or_else(|| {
        // Before Linux 3.14: the classic estimate.
        values[FREE].unwrap_or(0) + values[BUFFERS].unwrap_or(0) + values[CACHED].unwrap_or(0)
    });
    let available = available.min(total);
    let swap_total = values[SWAP_TOTAL].unwrap_or(0);
    let swap_free = values[SWAP_FREE].unwrap_or(0);
    Ok(Memory {
        total_bytes: total,
        available_bytes: available,
        used_bytes: total - available,
        swap_total_bytes: swap_total,
        swap_used_bytes: swap_total.saturating_sub(swap_free),
    })
}

// ---------------------------------------------------------------------------------------------
// /proc/loadavg

/// Parses `/proc/loadavg`: `0.59 0.35 0.23 1/81 17620`.
fn parse_loadavg(text: &str, path: &Path) -> Result<Load, HostError> {
    let mut fields = text.split_ascii_whitespace();
    let one = next_field(&mut fields, path, 1, "1-minute load")?;
    let five = next_field(&mut fields, path, 1, "5-minute load")?;
    let fifteen = next_field(&mut fields, path, 1, "15-minute load")?;
    let tasks = fields.next().ok_or_else(|| parse_error(path, 1, "missing runnable/total tasks"))?;
    let bad = || parse_error(path, 1, format!("{tasks:?} is not runnable/total tasks"));
    let (runnable, total) = tasks.split_once('/').ok_or_else(bad)?;
    Ok(Load {
        one,
        five,
        fifteen,
        runnable: runnable.parse().map_err(|_| bad())?,
        total_tasks: total.parse().map_err(|_| bad())?,
    })
}

// ---------------------------------------------------------------------------------------------
// Named counters (network interfaces, disks)

/// Counters keyed by device name, whose name `String`s are kept and reused across samples so a
/// steady set of devices parses without allocating.
#[derive(Debug, Clone)]
struct Named<T> {
    items: Vec<(String, T)>,
    len: usize,
}

impl<T> Default for Named<T> {
    fn default() -> Self {
        Self { items: Vec::new(), len: 0 }
    }
}

impl<T> Named<T> {
    fn clear(&mut self) {
        self.len = 0;
    }

    fn push(&mut self, name: &str, value: T) {
        if let Some(slot) = self.items.get_mut(self.len) {
            slot.0.clear();
            slot.0.push_str(name);
            slot.1 = value;
        } else {
            self.items.push((name.to_owned(), value));
        }
        self.len += 1;
    }

    fn as_slice(&self) -> &[(String, T)] {
        self.items.get(..self.len).unwrap_or_default()
    }

    /// The counters of `name`, looked for at `hint` (its position now) first.
    fn get(&self, hint: usize, name: &str) -> Option<&T> {
        let items = self.as_slice();
        match items.get(hint) {
            Some((n, v)) if n == name => Some(v),
            _ => items.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        }
    }
}

fn rate(prev: u64, cur: u64, secs: f64) -> f64 {
    cur.saturating_sub(prev) as f64 / secs
}

// ---------------------------------------------------------------------------------------------
// /proc/net/dev

/// The counters of one `/proc/net/dev` line that are reported.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct NetCounters {
    rx_bytes: u64,
    rx_packets: u64,
    rx_errors: u64,
    rx_drops: u64,
    tx_bytes: u64,
    tx_packets: u64,
    tx_errors: u64,
    tx_drops: u64,
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`) into `out` (cleared
/// first).
fn parse_net_dev(text: &str, path: &Path, out: &mut Named<NetCounters>) -> Result<(), HostError> {
    out.clear();
    for (i, line) in text.lines().enumerate().skip(2) {
        let n = i + 1;
        if line.trim_ascii().is_empty() {
            continue;
        }
        let (name, rest) =
            line.split_once(':').ok_or_else(|| parse_error(path, n, "expected `<interface>: <counters>`"))?;
        let name = name.trim_ascii();
        let mut f = rest.split_ascii_whitespace();
        let mut c = NetCounters {
            rx_bytes: next_field(&mut f, path, n, "receive bytes")?,
            rx_packets: next_field(&mut f, path, n, "receive packets")?,
            rx_errors: next_field(&mut f, path, n, "receive errs")?,
            rx_drops: next_field(&mut f, path, n, "receive drop")?,
            ..NetCounters::default()
        };
        // fifo frame compressed multicast
        for what in ["receive fifo", "receive frame", "receive compressed", "receive multicast"] {
            next_field::<u64>(&mut f, path, n, what)?;
        }
        c.tx_bytes = next_field(&mut f, path, n, "transmit bytes")?;
        c.tx_packets = next_field(&mut f, path, n, "transmit packets")?;
        c.tx_errors = next_field(&mut f, path, n, "transmit errs")?;
        c.tx_drops = next_field(&mut f, path, n, "transmit drop")?;
        out.push(name, c);
    }
    Ok(())
}

fn net_rates(prev: &Named<NetCounters>, cur: &Named<NetCounters>, secs: f64) -> Vec<NetInterface> {
    cur.as_slice()
        .iter()
        .enumerate()
        .map(|(i, (name, c))| {
            let mut out = NetInterface {
                name: name.clone(),
                rx_bytes_total: c.rx_bytes,
                tx_bytes_total: c.tx_bytes,
                ..Default::default()
            };
            if let Some(p) = prev.get(i, name).filter(|_| secs > 0.0) {
                out.rx_bytes_per_sec = rate(p.rx_bytes, c.rx_bytes, secs);
                out.tx_bytes_per_sec = rate(p.tx_bytes, c.tx_bytes, secs);
                out.rx_packets_per_sec = rate(p.rx_packets, c.rx_packets, secs);
                out.tx_packets_per_sec = rate(p.tx_packets, c.tx_packets, secs);
                out.rx_errors_per_sec = rate(p.rx_errors, c.rx_errors, secs);
                out.tx_errors_per_sec = rate(p.tx_errors, c.tx_errors, secs);
                out.rx_drops_per_sec = rate(p.rx_drops, c.rx_drops, secs);
                out.tx_drops_per_sec = rate(p.tx_drops, c.tx_drops, secs);
            }
            out
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// /proc/diskstats

/// The counters of one `/proc/diskstats` line that are reported.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct DiskCounters {
    reads: u64,
    sectors_read: u64,
    writes: u64,
    sectors_written: u64,
    /// Milliseconds with I/O in flight.
    io_ticks: u64,
}

/// Devices that are never reported: loop, RAM and compressed-RAM devices.
fn is_virtual_disk(name: &str) -> bool {
    name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram")
}

/// The whole disk `name` would be a partition of: `sda1` → `sda`, `nvme0n1p1` → `nvme0n1`,
/// `mmcblk0p2` → `mmcblk0`. `None` when `name` does not end in a number.
fn partition_parent(name: &str) -> Option<&str> {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() == name.len() || stem.is_empty() {
        return None;
    }
    // `<disk ending in a digit>p<N>`
    match stem.strip_suffix('p') {
        Some(disk) if disk.ends_with(|c: char| c.is_ascii_digit()) => Some(disk),
        _ => Some(stem),
    }
}

/// Parses `/proc/diskstats` into `out` (cleared first), keeping whole disks only: loop, RAM
/// and zram devices are skipped, and so is any partition whose whole disk is in the file.
fn parse_diskstats(text: &str, path: &Path, out: &mut Named<DiskCounters>) -> Result<(), HostError> {
    out.clear();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut f = line.split_ascii_whitespace();
        if f.next().is_none() {
            continue;
        }
        f.next(); // minor
        let name = f.next().ok_or_else(|| parse_error(path, n, "missing device name"))?;
        if is_virtual_disk(name) {
            continue;
        }
        let reads = next_field(&mut f, path, n, "reads completed")?;
        next_field::<u64>(&mut f, path, n, "reads merged")?;
        let sectors_read = next_field(&mut f, path, n, "sectors read")?;
        next_field::<u64>(&mut f, path, n, "time reading")?;
        let writes = next_field(&mut f, path, n, "writes completed")?;
        next_field::<u64>(&mut f, path, n, "writes merged")?;
        let sectors_written = next_field(&mut f, path, n, "sectors written")?;
        next_field::<u64>(&mut f, path, n, "time writing")?;
        next_field::<u64>(&mut f, path, n, "I/Os in progress")?;
        let io_ticks = next_field(&mut f, path, n, "time doing I/O")?;
        out.push(name, DiskCounters { reads, sectors_read, writes, sectors_written, io_ticks });
    }
    // Drop partitions, keeping the reused name buffers. Swapping only permutes the live items,
    // so every check sees the same set of names.
    let len = out.len;
    let mut kept = 0;
    for r in 0..len {
        let is_partition =
            out.items.get(r).and_then(|(name, _)| partition_parent(name)).is_some_and(|parent| {
                out.items.get(..len).unwrap_or_default().iter().any(|(other, _)| other == parent)
            });
        if !is_partition {
            out.items.swap(kept, r);
            kept += 1;
        }
    }
    out.len = kept;
    Ok(())
}

fn disk_rates(prev: &Named<DiskCounters>, cur: &Named<DiskCounters>, secs: f64) -> Vec<Disk> {
    cur.as_slice()
        .iter()
        .enumerate()
        .map(|(i, (name, c))| {
            let mut out = Disk { name: name.clone(), ..Disk::default() };
            if let Some(p) = prev.get(i, name).filter(|_| secs > 0.0) {
                out.reads_per_sec = rate(p.reads, c.reads, secs);
                out.writes_per_sec = rate(p.writes, c.writes, secs);
                out.read_bytes_per_sec = rate(p.sectors_read, c.sectors_read, secs) * SECTOR_BYTES as f64;
                out.write_bytes_per_sec = rate(p.sectors_written, c.sectors_written, secs) * SECTOR_BYTES as f64;
                out.busy = (rate(p.io_ticks, c.io_ticks, secs) / 1000.0).clamp(0.0, 1.0);
            }
            out
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// /proc/pressure/{cpu,memory,io}

/// One `/proc/pressure/<resource>` read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct PsiReading {
    some_avg10: f64,
    some_avg60: f64,
    /// The `some total=` counter, in microseconds.
    some_total: u64,
    full_avg10: Option<f64>,
}

/// Parses a PSI file: a `some` line and an optional `full` line, each
/// `avg10=.. avg60=.. avg300=.. total=..`.
fn parse_pressure(text: &str, path: &Path) -> Result<PsiReading, HostError> {
    let mut out = PsiReading::default();
    let mut seen_some = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut f = line.split_ascii_whitespace();
        let Some(kind) = f.next() else { continue };
        let (mut avg10, mut avg60, mut total) = (None, None, None);
        for pair in f {
            let (key, value) =
                pair.split_once('=').ok_or_else(|| parse_error(path, n, format!("{pair:?} is not key=value")))?;
            let bad = || parse_error(path, n, format!("{key}: {value:?} is not a number"));
            match key {
                "avg10" => avg10 = Some(value.parse::<f64>().map_err(|_| bad())?),
                "avg60" => avg60 = Some(value.parse::<f64>().map_err(|_| bad())?),
                "total" => total = Some(value.parse::<u64>().map_err(|_| bad())?),
                _ => {} // avg300, or a field a later kernel adds
            }
        }
        let missing = |what: &str| parse_error(path, n, format!("`{kind}` line has no {what}"));
        match kind {
            "some" => {
                out.some_avg10 = avg10.ok_or_else(|| missing("avg10"))?;
                out.some_avg60 = avg60.ok_or_else(|| missing("avg60"))?;
                out.some_total = total.ok_or_else(|| missing("total"))?;
                seen_some = true;
            }
            "full" => out.full_avg10 = Some(avg10.ok_or_else(|| missing("avg10"))?),
            other => return Err(parse_error(path, n, format!("{other:?} is not `some` or `full`"))),
        }
    }
    if !seen_some {
        return Err(parse_error(path, 0, "no `some` line"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn p(name: &str) -> PathBuf {
        PathBuf::from("/proc").join(name)
    }

    fn parse_line(err: HostError) -> (PathBuf, usize, String) {
        match err {
            HostError::Parse { path, line, reason } => (path, line, reason),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    const STAT_A: &str = "\
cpu  1000 100 400 8000 200 50 50 0 30 0
cpu0 500 50 200 4000 100 25 25 0 15 0
cpu1 500 50 200 4000 100 25 25 0 15 0
intr 364082 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 531468
btime 1700000000
processes 17620
procs_running 1
procs_blocked 0
softirq 1 2 3 4 5 6 7 8 9 10 11
";

    // Deltas over A: aggregate user 100 nice 20 system 40 idle 200 iowait 20 irq 10 softirq 10
    // steal 0 -> total 400; cpu0 all idle (+200 idle); cpu1 +100 user +20 nice +40 system +20
    // iowait +10 irq +10 softirq -> 200 ticks, 180 busy.
    const STAT_B: &str = "\
cpu  1100 120 440 8200 220 60 60 0 40 0
cpu0 500 50 200 4200 100 25 25 0 15 0
cpu1 600 70 240 4000 120 35 35 0 25 0
intr 364999 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 531999
";

    #[test]
    fn stat_parses_aggregate_and_cores() {
        let mut snap = CpuSnapshot::default();
        parse_stat(STAT_A, &p("stat"), &mut snap).unwrap();
        assert_eq!(snap.total, [1000, 100, 400, 8000, 200, 50, 50, 0]);
        assert_eq!(snap.cores.len(), 2);
        assert_eq!(snap.cores[1], (1, [500, 50, 200, 4000, 100, 25, 25, 0]));
    }

    #[test]
    fn stat_snapshots_give_exact_fractions() {
        let (mut a, mut b) = (CpuSnapshot::default(), CpuSnapshot::default());
        parse_stat(STAT_A, &p("stat"), &mut a).unwrap();
        parse_stat(STAT_B, &p("stat"), &mut b).unwrap();
        let cpu = cpu_rates(&a, &b);
        assert_eq!(cpu.busy, 0.45); // 1 - (200 + 20) / 400
        assert_eq!(cpu.user, 0.3); // (100 + 20) / 400
        assert_eq!(cpu.system, 0.15); // (40 + 10 + 10) / 400
        assert_eq!(cpu.iowait, 0.05);
        assert_eq!(cpu.steal, 0.0);
        assert_eq!(cpu.per_core, vec![0.0, 0.9]);
        assert_eq!(cpu.cores, 2);
    }

    #[test]
    fn stat_counters_going_backwards_count_as_zero() {
        let (mut a, mut b) = (CpuSnapshot::default(), CpuSnapshot::default());
        parse_stat("cpu 100 0 100 800 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0\n", &p("stat"), &mut a).unwrap();
        // user wrapped to 5; idle moved by 100: only idle counts.
        parse_stat("cpu 5 0 100 900 0 0 0 0\ncpu0 5 0 100 900 0 0 0 0\n", &p("stat"), &mut b).unwrap();
        let cpu = cpu_rates(&a, &b);
        assert_eq!(cpu.busy, 0.0);
        assert_eq!(cpu.user, 0.0);
        assert_eq!(cpu.per_core, vec![0.0]);
        // No delta at all: fractions are 0, not NaN.
        let same = cpu_rates(&b, &b);
        assert_eq!((same.busy, same.user), (0.0, 0.0));
    }

    #[test]
    fn stat_cores_are_matched_by_number() {
        let (mut a, mut b) = (CpuSnapshot::default(), CpuSnapshot::default());
        parse_stat("cpu 0 0 0 0\ncpu0 0 0 0 100\ncpu2 0 0 0 100\n", &p("stat"), &mut a).unwrap();
        // cpu1 came online; cpu2 was 50% busy.
        parse_stat("cpu 0 0 0 0\ncpu0 0 0 0 200\ncpu1 7 0 0 7\ncpu2 50 0 0 150\n", &p("stat"), &mut b).unwrap();
        assert_eq!(cpu_rates(&a, &b).per_core, vec![0.0, 0.0, 0.5]);
    }

    #[test]
    fn stat_malformed_names_the_line() {
        let mut snap = CpuSnapshot::default();
        let (path, line, reason) =
            parse_line(parse_stat("cpu 1 2 3 4\ncpu0 1 2 x 4\n", &p("stat"), &mut snap).unwrap_err());
        assert_eq!((path, line), (p("stat"), 2));
        assert!(reason.contains("system") && reason.contains("\"x\""), "{reason}");
        let (_, line, _) = parse_line(parse_stat("cpu 1 2 3\n", &p("stat"), &mut snap).unwrap_err());
        assert_eq!(line, 1);
        let (_, line, reason) = parse_line(parse_stat("intr 1 2\n", &p("stat"), &mut snap).unwrap_err());
        assert_eq!(line, 0);
        assert!(reason.contains("aggregate"));
        let err = parse_stat("cpu 1 2 3 4\ncpuX 1 2 3 4\n", &p("stat"), &mut snap).unwrap_err();
        assert_eq!(err.to_string(), "cannot parse /proc/stat line 2: \"cpuX\" is not `cpu` or `cpu<N>`");
    }

    const MEMINFO: &str = "\
MemTotal:       24684096 kB
MemFree:        22836932 kB
MemAvailable:   24334704 kB
Buffers:            3984 kB
Cached:          1679140 kB
SwapCached:            0 kB
Active:           787164 kB
SwapTotal:       2097148 kB
SwapFree:        2000000 kB
Zswap:                 0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    #[test]
    fn meminfo_in_bytes() {
        let m = parse_meminfo(MEMINFO, &p("meminfo")).unwrap();
        assert_eq!(m.total_bytes, 24_684_096 * 1024);
        assert_eq!(m.available_bytes, 24_334_704 * 1024);
        assert_eq!(m.used_bytes, (24_684_096 - 24_334_704) * 1024);
        assert_eq!(m.swap_total_bytes, 2_097_148 * 1024);
        assert_eq!(m.swap_used_bytes, 97_148 * 1024);
    }

    #[test]
    fn meminfo_without_memavailable_estimates_it() {
        let text = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n";
        let m = parse_meminfo(text, &p("meminfo")).unwrap();
        assert_eq!(m.available_bytes, 310 * 1024);
        assert_eq!(m.used_bytes, 690 * 1024);
        assert_eq!((m.swap_total_bytes, m.swap_used_bytes), (0, 0));
    }

    #[test]
    fn meminfo_malformed_names_the_line() {
        let (_, line, reason) =
            parse_line(parse_meminfo("MemTotal: 1000 kB\nMemFree: lots kB\n", &p("meminfo")).unwrap_err());
        assert_eq!(line, 2);
        assert!(reason.contains("MemFree"), "{reason}");
        let (_, line, reason) = parse_line(parse_meminfo("MemFree: 1 kB\n", &p("meminfo")).unwrap_err());
        assert_eq!(line, 0);
        assert!(reason.contains("MemTotal"), "{reason}");
        let (_, line, _) = parse_line(parse_meminfo("MemTotal: 1 MB\n", &p("meminfo")).unwrap_err());
        assert_eq!(line, 1);
    }

    #[test]
    fn loadavg_parses() {
        let l = parse_loadavg("0.59 0.35 0.23 3/81 17620\n", &p("loadavg")).unwrap();
        assert_eq!(l, Load { one: 0.59, five: 0.35, fifteen: 0.23, runnable: 3, total_tasks: 81 });
        let (_, line, reason) = parse_line(parse_loadavg("0.59 0.35 0.23 381 17620\n", &p("loadavg")).unwrap_err());
        assert_eq!(line, 1);
        assert!(reason.contains("381"), "{reason}");
        assert!(parse_loadavg("0.59 0.35\n", &p("loadavg")).is_err());
    }

    const NET_DEV_A: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9368650    3686    0    0    0     0          0         0  9368650    3686    0    0    0     0       0          0
  eth0: 47219959    2785    1    2    0     0          0         0   254244    1875    3    4    0     0       0          0
";
    const NET_DEV_B: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9368650    3686    0    0    0     0          0         0  9368650    3686    0    0    0     0       0          0
  eth0:47220959    2795    1    3    0     0          0         0   254744    1880    3    4    0     0       0          0
  wg0: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0
";

    #[test]
    fn net_dev_parses_every_interface() {
        let mut out = Named::default();
        parse_net_dev(NET_DEV_A, &p("net/dev"), &mut out).unwrap();
        let names: Vec<_> = out.as_slice().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["lo", "eth0"]);
        assert_eq!(
            out.as_slice()[1].1,
            NetCounters {
                rx_bytes: 47_219_959,
                rx_packets: 2785,
                rx_errors: 1,
                rx_drops: 2,
                tx_bytes: 254_244,
                tx_packets: 1875,
                tx_errors: 3,
                tx_drops: 4
            }
        );
    }

    #[test]
    fn net_dev_rates_and_reused_names() {
        let (mut a, mut b) = (Named::default(), Named::default());
        parse_net_dev(NET_DEV_A, &p("net/dev"), &mut a).unwrap();
        parse_net_dev(NET_DEV_B, &p("net/dev"), &mut b).unwrap();
        let rates = net_rates(&a, &b, 0.5);
        assert_eq!(rates.len(), 3);
        assert_eq!(rates[0].rx_bytes_per_sec, 0.0);
        let eth0 = &rates[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!((eth0.rx_bytes_per_sec, eth0.tx_bytes_per_sec), (2000.0, 1000.0));
        assert_eq!((eth0.rx_packets_per_sec, eth0.tx_packets_per_sec), (20.0, 10.0));
        assert_eq!((eth0.rx_drops_per_sec, eth0.rx_errors_per_sec), (2.0, 0.0));
        assert_eq!((eth0.rx_bytes_total, eth0.tx_bytes_total), (47_220_959, 254_744));
        // A new interface has no rate yet.
        assert_eq!((rates[2].name.as_str(), rates[2].rx_bytes_per_sec, rates[2].tx_bytes_total), ("wg0", 0.0, 20));
        // Parsing fewer interfaces into a used buffer hides the stale ones.
        parse_net_dev(NET_DEV_A, &p("net/dev"), &mut b).unwrap();
        assert_eq!(b.as_slice().len(), 2);
        assert!(b.get(0, "wg0").is_none());
    }

    #[test]
    fn net_dev_malformed_names_the_line() {
        let text = format!("{NET_DEV_A}  eth1 1 2 3\n");
        let (path, line, _) = parse_line(parse_net_dev(&text, &p("net/dev"), &mut Named::default()).unwrap_err());
        assert_eq!((path, line), (p("net/dev"), 5));
        let text = format!("{NET_DEV_A}  eth1: 1 2 3\n");
        let (_, line, reason) = parse_line(parse_net_dev(&text, &p("net/dev"), &mut Named::default()).unwrap_err());
        assert_eq!(line, 5);
        assert!(reason.contains("missing"), "{reason}");
    }

    const DISKSTATS_A: &str = "\
   7       0 loop0 10 0 20 0 0 0 0 0 0 4 0 0 0 0 0 0 0
   1       0 ram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 15964 6080 5596842 28693 4443 22539 5309384 17395 0 9640 46649 4761 42 678136 554 124 7
 254       1 vda1 15000 6000 5500000 28000 4400 22500 5300000 17000 0 9500 46000 4761 42 678136 554
 259       0 nvme0n1 100 0 2000 10 50 0 800 5 0 1000 15
 259       1 nvme0n1p1 90 0 1800 9 40 0 700 4 0 900 13
 179       0 mmcblk0 1 0 8 0 0 0 0 0 0 0 0
 179       1 mmcblk0p1 1 0 8 0 0 0 0 0 0 0 0
 253       0 dm-0 5 0 40 0 5 0 40 0 0 10 0
 253       1 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   8       0 sda 1 0 8 0 0 0 0 0 0 0 0
   8      16 sdb1 1 0 8 0 0 0 0 0 0 0 0
";

    #[test]
    fn diskstats_skips_virtual_devices_and_partitions() {
        let mut out = Named::default();
        parse_diskstats(DISKSTATS_A, &p("diskstats"), &mut out).unwrap();
        let names: Vec<_> = out.as_slice().iter().map(|(n, _)| n.as_str()).collect();
        // sdb1's disk is not in the file, so it is kept.
        assert_eq!(names, ["vda", "nvme0n1", "mmcblk0", "dm-0", "sda", "sdb1"]);
        assert_eq!(
            out.get(0, "vda"),
            Some(&DiskCounters {
                reads: 15964,
                sectors_read: 5_596_842,
                writes: 4443,
                sectors_written: 5_309_384,
                io_ticks: 9640
            })
        );
    }

    #[test]
    fn partition_parents() {
        assert_eq!(partition_parent("sda1"), Some("sda"));
        assert_eq!(partition_parent("sda12"), Some("sda"));
        assert_eq!(partition_parent("nvme0n1p1"), Some("nvme0n1"));
        assert_eq!(partition_parent("mmcblk0p2"), Some("mmcblk0"));
        assert_eq!(partition_parent("nvme0n1"), Some("nvme0n"));
        assert_eq!(partition_parent("sda"), None);
        assert_eq!(partition_parent("123"), None);
    }

    #[test]
    fn diskstats_rates() {
        let (mut a, mut b) = (Named::default(), Named::default());
        parse_diskstats(" 8 0 sda 100 0 1000 0 50 0 2000 0 0 5000 0\n", &p("diskstats"), &mut a).unwrap();
        parse_diskstats(" 8 0 sda 125 0 1400 0 60 0 2800 0 0 5125 0\n", &p("diskstats"), &mut b).unwrap();
        let d = &disk_rates(&a, &b, 0.25)[0];
        assert_eq!(
            *d,
            Disk {
                name: "sda".into(),
                reads_per_sec: 100.0,
                writes_per_sec: 40.0,
                read_bytes_per_sec: 1600.0 * 512.0,
                write_bytes_per_sec: 3200.0 * 512.0,
                busy: 0.5,
            }
        );
        // io_ticks moving faster than the wall clock is clamped.
        parse_diskstats(" 8 0 sda 125 0 1400 0 60 0 2800 0 0 9999 0\n", &p("diskstats"), &mut a).unwrap();
        assert_eq!(disk_rates(&b, &a, 0.25)[0].busy, 1.0);
    }

    #[test]
    fn diskstats_malformed_names_the_line() {
        let text = " 8 0 sda 1 0 8 0 0 0 0 0 0 0 0\n 8 16 sdb 1 0 8 0 0 0\n";
        let (_, line, reason) = parse_line(parse_diskstats(text, &p("diskstats"), &mut Named::default()).unwrap_err());
        assert_eq!(line, 2);
        assert!(reason.contains("sectors written"), "{reason}");
    }

    #[test]
    fn pressure_with_full_line() {
        let text = "some avg10=0.34 avg60=2.40 avg300=2.21 total=27192240\n\
                    full avg10=0.12 avg60=0.00 avg300=0.00 total=0\n";
        let r = parse_pressure(text, &p("pressure/io")).unwrap();
        assert_eq!(
            r,
            PsiReading { some_avg10: 0.34, some_avg60: 2.40, some_total: 27_192_240, full_avg10: Some(0.12) }
        );
    }

    #[test]
    fn pressure_without_full_line() {
        let r = parse_pressure("some avg10=1.50 avg60=0.25 avg300=0.00 total=42\n", &p("pressure/cpu")).unwrap();
        assert_eq!(r, PsiReading { some_avg10: 1.5, some_avg60: 0.25, some_total: 42, full_avg10: None });
    }

    #[test]
    fn pressure_malformed_names_the_line() {
        let text = "some avg10=0.34 avg60=2.40 avg300=2.21 total=1\nfull avg10=x avg60=0 avg300=0 total=0\n";
        let (_, line, reason) = parse_line(parse_pressure(text, &p("pressure/memory")).unwrap_err());
        assert_eq!(line, 2);
        assert!(reason.contains("avg10"), "{reason}");
        let (_, line, _) = parse_line(parse_pressure("some avg10=1 avg60=1\n", &p("pressure/cpu")).unwrap_err());
        assert_eq!(line, 1);
        let (_, line, _) = parse_line(parse_pressure("", &p("pressure/cpu")).unwrap_err());
        assert_eq!(line, 0);
    }

    /// A procfs tree in a fresh temporary directory, removed on drop.
    struct Fixture(PathBuf);

    impl Fixture {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let dir = std::env::temp_dir().join(format!("wedsync-host-{}-{name}-{nanos}", std::process::id()));
            std::fs::create_dir_all(dir.join("net")).unwrap();
            Self(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        fn write_base(&self) {
            self.write("meminfo", MEMINFO);
            self.write("loadavg", "0.59 0.35 0.23 1/81 17620\n");
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn psi(total: u64, full: bool) -> String {
        let mut s = format!("some avg10=1.00 avg60=2.00 avg300=3.00 total={total}\n");
        if full {
            s.push_str("full avg10=0.50 avg60=0.00 avg300=0.00 total=0\n");
        }
        s
    }

    #[test]
    fn collector_rates_across_two_samples() {
        let fx = Fixture::new("rates");
        fx.write_base();
        fx.write("stat", STAT_A);
        fx.write("net/dev", NET_DEV_A);
        fx.write("diskstats", " 8 0 sda 100 0 1000 0 50 0 2000 0 0 5000 0\n 8 1 sda1 1 0 1 0 1 0 1 0 0 1 0\n");
        fx.write("pressure/cpu", &psi(1_000_000, false));
        fx.write("pressure/memory", &psi(2_000_000, true));
        fx.write("pressure/io", &psi(3_000_000, true));

        let mut collector = HostCollector::new(&fx.0);
        let t0 = Instant::now();
        let first = collector.sample(t0).unwrap();
        assert_eq!(first.interval_seconds, 0.0);
        assert_eq!(first.cpu, Cpu { cores: 2, ..Cpu::default() });
        assert_eq!(first.memory.total_bytes, 24_684_096 * 1024);
        assert_eq!(first.load.total_tasks, 81);
        assert_eq!(first.network.len(), 2);
        assert!(first.network.iter().all(|n| n.rx_bytes_per_sec == 0.0 && n.tx_bytes_per_sec == 0.0));
        assert_eq!(first.disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["sda"]);
        let pressure = first.pressure.as_ref().unwrap();
        assert_eq!(pressure.cpu.full_avg10, None);
        assert_eq!(pressure.memory.full_avg10, Some(0.5));
        assert_eq!(pressure.io.some_avg10, 1.0);
        assert_eq!(pressure.io.some_stall_fraction, 0.0);

        fx.write("stat", STAT_B);
        fx.write("net/dev", NET_DEV_B);
        fx.write("diskstats", " 8 0 sda 125 0 1400 0 60 0 2800 0 0 5125 0\n 8 1 sda1 2 0 2 0 2 0 2 0 0 2 0\n");
        fx.write("pressure/cpu", &psi(1_025_000, false)); // 25 ms of 250 ms
        fx.write("pressure/memory", &psi(2_000_000, true)); // none
        fx.write("pressure/io", &psi(3_250_000, true)); // all of it

        let second = collector.sample(t0 + Duration::from_millis(250)).unwrap();
        assert_eq!(second.interval_seconds, 0.25);
        assert_eq!(second.cpu.busy, 0.45);
        assert_eq!(second.cpu.per_core, vec![0.0, 0.9]);
        let eth0 = second.network.iter().find(|n| n.name == "eth0").unwrap();
        assert_eq!((eth0.rx_bytes_per_sec, eth0.tx_bytes_per_sec), (4000.0, 2000.0));
        assert_eq!((eth0.rx_packets_per_sec, eth0.tx_packets_per_sec), (40.0, 20.0));
        assert_eq!(eth0.rx_drops_per_sec, 4.0);
        assert_eq!(second.network.len(), 3);
        let sda = &second.disks[0];
        assert_eq!((sda.reads_per_sec, sda.writes_per_sec), (100.0, 40.0));
        assert_eq!((sda.read_bytes_per_sec, sda.write_bytes_per_sec), (1600.0 * 512.0, 3200.0 * 512.0));
        assert_eq!(sda.busy, 0.5);
        let pressure = second.pressure.as_ref().unwrap();
        assert_eq!(pressure.cpu.some_stall_fraction, 0.1);
        assert_eq!(pressure.memory.some_stall_fraction, 0.0);
        assert_eq!(pressure.io.some_stall_fraction, 1.0);

        // The sample serializes (the API serves it as JSON).
        let json = serde_json::to_value(&second).unwrap();
        assert_eq!(json["cpu"]["busy"], 0.45);
        assert_eq!(json["pressure"]["cpu"]["full_avg10"], serde_json::Value::Null);
    }

    #[test]
    fn collector_without_optional_sources() {
        let fx = Fixture::new("minimal");
        fx.write_base();
        fx.write("stat", STAT_A);
        let mut collector = HostCollector::new(fx.0.clone());
        let t0 = Instant::now();
        let first = collector.sample(t0).unwrap();
        assert_eq!(first.pressure, None);
        assert!(first.network.is_empty() && first.disks.is_empty());
        fx.write("stat", STAT_B);
        let second = collector.sample(t0 + Duration::from_millis(250)).unwrap();
        assert_eq!(second.pressure, None);
        assert_eq!(second.cpu.busy, 0.45);
        // Same instant again: no interval, so no rates.
        let again = collector.sample(t0 + Duration::from_millis(250)).unwrap();
        assert_eq!((again.interval_seconds, again.cpu.busy), (0.0, 0.0));
        assert!(again.cpu.per_core.is_empty());
    }

    #[test]
    fn collector_required_files_and_malformed_files_are_errors() {
        let fx = Fixture::new("errors");
        let mut collector = HostCollector::new(&fx.0);
        let err = collector.sample(Instant::now()).unwrap_err();
        assert!(matches!(&err, HostError::Read { path, .. } if *path == fx.0.join("stat")), "{err}");
        assert!(err.to_string().starts_with(&format!("cannot read {}: ", fx.0.join("stat").display())));

        fx.write("stat", STAT_A);
        let err = collector.sample(Instant::now()).unwrap_err();
        assert!(matches!(&err, HostError::Read { path, .. } if *path == fx.0.join("meminfo")), "{err}");

        fx.write_base();
        fx.write("diskstats", " 8 0 sda 1 0 8 0 0 0 0 0 0 0 0\n 8 16 sdb oops\n");
        let err = collector.sample(Instant::now()).unwrap_err();
        let (path, line, _) = parse_line(err);
        assert_eq!((path, line), (fx.0.join("diskstats"), 2));

        // A failed sample commits nothing: the next one is still the first.
        std::fs::remove_file(fx.0.join("diskstats")).unwrap();
        let t0 = Instant::now();
        let first = collector.sample(t0).unwrap();
        assert_eq!(first.interval_seconds, 0.0);
    }

    #[test]
    fn real_procfs_is_sane() {
        let mut collector = HostCollector::new("/proc");
        let t0 = Instant::now();
        collector.sample(t0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let s = collector.sample(Instant::now()).unwrap();
        assert!(s.cpu.cores >= 1);
        assert_eq!(s.cpu.per_core.len(), s.cpu.cores);
        for f in [s.cpu.busy, s.cpu.user, s.cpu.system, s.cpu.iowait, s.cpu.steal].iter().chain(&s.cpu.per_core) {
            assert!((0.0..=1.0).contains(f), "{f} out of range in {:?}", s.cpu);
        }
        assert!(s.memory.total_bytes > 0);
        assert!(s.memory.available_bytes <= s.memory.total_bytes);
        assert!(s.interval_seconds > 0.0);
        assert!(s.disks.iter().all(|d| (0.0..=1.0).contains(&d.busy)));
        if let Some(p) = &s.pressure {
            assert!((0.0..=1.0).contains(&p.cpu.some_stall_fraction));
        }
        if Path::new("/proc/net/dev").exists() {
            assert!(s.network.iter().any(|n| n.name == "lo"));
        }
    }
}
