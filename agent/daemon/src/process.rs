//! TEMPORARY STUB
#![allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq)]
pub struct ProcessSample {
    pub cpu_fraction: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
}
pub struct ProcessSampler;
impl ProcessSampler {
    pub fn new() -> Self {
        ProcessSampler
    }
    pub fn sample(&mut self) -> ProcessSample {
        ProcessSample::default()
    }
}
impl Default for ProcessSampler { fn default() -> Self { Self::new() } }
