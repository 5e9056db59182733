//! TEMPORARY STUB (being replaced by the procfs collector).
#![allow(missing_docs)]
use serde::Serialize;
use std::path::PathBuf;
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Cpu {
    pub busy: f64,
    pub user: f64,
    pub system: f64,
    pub iowait: f64,
    pub steal: f64,
    pub per_core: Vec<f64>,
    pub cores: usize,
}
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NetInterface {
    pub name: String,
    pub rx_bytes_per_sec: f64,
    pub tx_bytes_per_sec: f64,
    pub rx_packets_per_sec: f64,
    pub tx_packets_per_sec: f64,
}
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Disk {
    pub name: String,
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    pub busy: f64,
}
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResourcePressure {
    pub some_avg10: f64,
    pub some_stall_fraction: f64,
}
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Pressure {
    pub cpu: ResourcePressure,
    pub memory: ResourcePressure,
    pub io: ResourcePressure,
}
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HostSample {
    pub cpu: Cpu,
    pub memory: Memory,
    pub load: Load,
    pub network: Vec<NetInterface>,
    pub disks: Vec<Disk>,
    pub pressure: Option<Pressure>,
}
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("x")]
    X,
}
pub struct HostCollector;
impl HostCollector {
    pub fn new(_p: impl Into<PathBuf>) -> Self {
        HostCollector
    }
    pub fn sample(&mut self, _now: std::time::Instant) -> Result<HostSample, HostError> {
        Ok(HostSample::default())
    }
}
