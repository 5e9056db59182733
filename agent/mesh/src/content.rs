//! Fleet-wide viral-content detection, sans-IO: every node's per-interval content sketch goes
//! to its region's coordinator; each coordinator merges its region and sends the regional
//! sketch to every other coordinator; each coordinator then holds the fleet-wide sketch, runs
//! the viral detector and tells its region's members the cache-warm hints.
//!
//! Intervals are aligned to the wall clock ([`wedsync_core::content::IntervalSketch`]), so the
//! stages run as a pipeline inside the interval that follows the one measured: members send at
//! the boundary, coordinators merge their region [`ContentExchange::gather`] later and the fleet
//! sketch is complete twice that after the boundary. A change in traffic is therefore in every
//! coordinator's fleet top within one interval plus two gather delays.
//!
//! Traffic: a member sends one sketch of its [`LOCAL_SKETCH_KEYS`] heaviest keys per interval
//! (≤ [`MAX_SKETCH_BYTES`]); a coordinator receives one from each member of its region, sends
//! one of its region's [`REGIONAL_SKETCH_KEYS`] heaviest keys to each other coordinator, and
//! tells its members the hints and the [`MEMBER_TOP_KEYS`] heaviest keys when they change (and
//! every `HINT_REFRESH_INTERVALS` intervals). The exchange between coordinators is all to
//! all, which suits a handful of regions; many regions would need a tree.

use crate::Mesh;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use wedsync_core::content::{
    CacheHint, ContentSketch, KeyEstimate, MAX_KEY_BYTES, MAX_SKETCH_BYTES, ViralConfig, ViralDetector,
};

/// First byte of a content frame. The mesh's own frames use small tags; the driver routes
/// this one to [`ContentExchange::handle`] and the rest to the [`Mesh`].
pub const FRAME_CONTENT: u8 = 0x20;

/// Most hints or top keys one hints frame carries.
pub const MAX_HINTS: usize = 100;
/// A coordinator re-sends unchanged hints this many intervals apart while there are any
/// (members that missed one catch up; hints a member has not heard about for twice as long are
/// dropped).
const HINT_REFRESH_INTERVALS: u64 = 30;
/// Heaviest keys a coordinator tells its members (the full top stays with the coordinators, so
/// the fan-out to a region's members stays small).
pub const MEMBER_TOP_KEYS: usize = 10;
/// Heaviest keys of a member's interval sent to its coordinator.
pub const LOCAL_SKETCH_KEYS: usize = 64;
/// Heaviest keys of a region's interval sent to the other coordinators: enough that the fleet
/// top 100 is exact unless a key is heavy fleet-wide but outside every region's top 256.
pub const REGIONAL_SKETCH_KEYS: usize = 256;
/// Members' sketches kept per region for at most this many intervals at once.
const MAX_PENDING_SKETCHES: usize = 4096;

/// A cache hint on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HintWire {
    key: String,
    rate_per_s: f64,
    growth: f64,
    since_ms: u64,
    last_seen_ms: u64,
}

/// A top key on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TopWire {
    key: String,
    estimate: u64,
    lower_bound: u64,
    upper_bound: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum ContentFrame {
    /// A member's sketch of the interval starting at `interval` (ms), to its coordinator.
    Local { interval: u64, sketch: Vec<u8> },
    /// A coordinator's merged regional sketch of an interval, to the other coordinators.
    Regional { interval: u64, region: String, sketch: Vec<u8> },
    /// A coordinator's hints and fleet top, to its region's members.
    Hints { hints: Vec<HintWire>, top: Vec<TopWire> },
}

/// Why a content frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContentFrameError {
    /// Not a postcard-encoded content frame.
    #[error("content frame does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// A sketch in it is malformed or too large.
    #[error("content frame holds a bad sketch: {0}")]
    Sketch(#[from] wedsync_core::content::ContentError),
    /// Too many hints, a key that is too long, or a non-finite figure.
    #[error("content frame holds bad hints: {0}")]
    BadHints(&'static str),
}

/// Where this node's sketches and hints go this interval.
#[derive(Debug)]
struct ContentRoute<'a> {
    /// This node's region.
    region: &'a str,
    /// The coordinator of this node's region; `None` when it is this node.
    my_coordinator: Option<SocketAddr>,
    /// Coordinators of the other regions.
    other_coordinators: Vec<SocketAddr>,
    /// The other alive members of this node's region.
    region_members: Vec<SocketAddr>,
}

impl<'a> ContentRoute<'a> {
    /// The route as `mesh` sees the fleet now.
    fn of(mesh: &'a Mesh) -> Self {
        let me = mesh.identity();
        let view = mesh.fleet_view();
        let addr_of = |node: &str| mesh.alive_members().find(|m| m.id == node).map(|m| m.addr);
        let my_coordinator =
            view.regions.get(&me.region).filter(|r| r.coordinator != me.id).and_then(|r| addr_of(&r.coordinator));
        let other_coordinators = view
            .regions
            .iter()
            .filter(|(name, _)| **name != me.region)
            .filter_map(|(_, r)| addr_of(&r.coordinator))
            .collect();
        let region_members = mesh.alive_members().filter(|m| m.region == me.region).map(|m| m.addr).collect();
        ContentRoute { region: &me.region, my_coordinator, other_coordinators, region_members }
    }
}

/// Counters of one node's content exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentStats {
    /// Content frames refused (malformed, oversized, bad keys).
    pub refused: u64,
    /// Sketches that arrived after their interval was merged (left out).
    pub late: u64,
    /// Fleet sketches this node computed as a coordinator.
    pub fleet_intervals: u64,
    /// Content frames this node sent.
    pub frames_out: u64,
    /// Bytes of content frames this node sent.
    pub bytes_out: u64,
}

/// One node's part in viral-content detection: call [`ContentExchange::tick`] at
/// [`ContentExchange::next_tick`] and [`ContentExchange::handle`] for each [`FRAME_CONTENT`]
/// frame.
#[derive(Debug)]
pub struct ContentExchange {
    config: ViralConfig,
    /// Whether this node coordinated its region at its last tick.
    coordinating: bool,
    interval_ms: u64,
    gather_ms: u64,
    detector: ViralDetector,
    /// Sketches of this region's members by interval start (coordinator role).
    pending: BTreeMap<u64, Vec<ContentSketch>>,
    pending_len: usize,
    /// Latest sketch of each region: (interval start, sketch).
    regional: BTreeMap<String, (u64, ContentSketch)>,
    /// Newest interval whose regional sketch this node sent, and whose fleet sketch it computed.
    regional_done: Option<u64>,
    fleet_done: Option<u64>,
    hints: Vec<CacheHint>,
    top: Vec<KeyEstimate>,
    /// When the hints were last set (computed or received).
    hints_at_ms: u64,
    /// When this coordinator last sent hints, and the hint keys and heaviest keys it sent.
    sent: Option<(u64, Vec<String>, Vec<String>)>,
    stats: ContentStats,
}

fn encode(frame: &ContentFrame) -> Option<Vec<u8>> {
    postcard::to_extend(frame, vec![FRAME_CONTENT]).ok()
}

impl ContentExchange {
    /// A node's exchange with this detector configuration.
    pub fn new(config: ViralConfig) -> Self {
        let interval_ms = config.interval_ms.max(1);
        ContentExchange {
            config,
            coordinating: false,
            interval_ms,
            // A fifth of the interval, at least 50 ms of network and scheduling slack.
            gather_ms: (interval_ms / 5).max(50).min(interval_ms / 2),
            detector: ViralDetector::new(config),
            pending: BTreeMap::new(),
            pending_len: 0,
            regional: BTreeMap::new(),
            regional_done: None,
            fleet_done: None,
            hints: Vec::new(),
            top: Vec::new(),
            hints_at_ms: 0,
            sent: None,
            stats: ContentStats::default(),
        }
    }

    /// Delay after an interval's end at which a coordinator merges its region's sketches of it;
    /// the fleet sketch follows one more delay later.
    pub fn gather(&self) -> u64 {
        self.gather_ms
    }

    /// When [`ContentExchange::tick`] should next run: the next interval boundary or stage.
    pub fn next_tick(&self, now_ms: u64) -> u64 {
        let boundary = now_ms - now_ms % self.interval_ms;
        [boundary + self.gather_ms, boundary + 2 * self.gather_ms, boundary + self.interval_ms]
            .into_iter()
            .find(|at| *at > now_ms)
            .unwrap_or(boundary + self.interval_ms)
    }

    /// Runs the stages due at `now_ms` with this node's `closed` interval sketches (interval
    /// start in ms, sketch; from [`wedsync_core::content::IntervalSketch::take_closed`]).
    /// Returns the frames to send (each starting with [`FRAME_CONTENT`]), routed by the fleet
    /// as `mesh` sees it.
    pub fn tick(
        &mut self,
        now_ms: u64,
        closed: impl IntoIterator<Item = (u64, ContentSketch)>,
        mesh: &Mesh,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let route = ContentRoute::of(mesh);
        let out = self.tick_routed(now_ms, closed, &route);
        self.stats.frames_out += out.len() as u64;
        self.stats.bytes_out += out.iter().map(|(_, f)| f.len() as u64).sum::<u64>();
        out
    }

    fn tick_routed(
        &mut self,
        now_ms: u64,
        closed: impl IntoIterator<Item = (u64, ContentSketch)>,
        route: &ContentRoute<'_>,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let boundary = now_ms - now_ms % self.interval_ms;
        let last = boundary.checked_sub(self.interval_ms);
        for (interval, sketch) in closed {
            if sketch.is_empty() {
                continue;
            }
            match route.my_coordinator {
                None => self.add_pending(interval, sketch),
                Some(coordinator) => {
                    if let Some(frame) =
                        encode(&ContentFrame::Local { interval, sketch: sketch.encode_heaviest(LOCAL_SKETCH_KEYS) })
                    {
                        out.push((coordinator, frame));
                    }
                }
            }
        }
        let Some(last) = last else { return out };
        let coordinating = route.my_coordinator.is_none();
        if coordinating && !self.coordinating {
            // Taking over: start from what the previous coordinator last said rather than
            // waiting a whole baseline before hinting again.
            self.detector = ViralDetector::new(self.config);
            if !self.top.is_empty() {
                self.detector.seed(last.saturating_sub(self.interval_ms), &self.top, &self.hints);
            }
        }
        self.coordinating = coordinating;
        if !coordinating {
            // Sketches sent here while this node coordinated are stale now.
            self.pending.clear();
            self.pending_len = 0;
            self.regional_done = Some(last);
            self.fleet_done = Some(last);
            // A member keeps the hints its coordinator sent only while they are refreshed.
            if now_ms.saturating_sub(self.hints_at_ms) > 2 * HINT_REFRESH_INTERVALS * self.interval_ms {
                self.hints.clear();
                self.top.clear();
            }
            return out;
        }
        let since_boundary = now_ms - boundary;
        if since_boundary >= self.gather_ms && self.regional_done.is_none_or(|done| done < last) {
            self.regional_done = Some(last);
            self.merge_region(last, route, &mut out);
        }
        if since_boundary >= 2 * self.gather_ms && self.fleet_done.is_none_or(|done| done < last) {
            self.fleet_done = Some(last);
            self.merge_fleet(now_ms, last, route, &mut out);
        }
        out
    }

    fn add_pending(&mut self, interval: u64, sketch: ContentSketch) {
        if self.regional_done.is_some_and(|done| interval <= done) {
            self.stats.late += 1;
            return;
        }
        if self.pending_len >= MAX_PENDING_SKETCHES {
            return;
        }
        self.pending_len += 1;
        self.pending.entry(interval).or_default().push(sketch);
    }

    /// Merges this region's sketches of `interval` and sends the result to the other coordinators.
    fn merge_region(&mut self, interval: u64, route: &ContentRoute<'_>, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        let later = self.pending.split_off(&(interval + 1));
        let mut region = ContentSketch::new();
        for sketch in self.pending.remove(&interval).into_iter().flatten() {
            region.merge(&sketch);
        }
        self.pending = later;
        self.pending_len = self.pending.values().map(Vec::len).sum();
        if !region.is_empty()
            && let Some(frame) = encode(&ContentFrame::Regional {
                interval,
                region: route.region.to_owned(),
                sketch: region.encode_heaviest(REGIONAL_SKETCH_KEYS),
            })
        {
            for to in &route.other_coordinators {
                out.push((*to, frame.clone()));
            }
        }
        self.regional.insert(route.region.to_owned(), (interval, region));
    }

    /// Merges every region's sketch of `interval` into the fleet sketch, runs the detector and
    /// tells this region's members when the hints or the heaviest keys changed.
    fn merge_fleet(
        &mut self,
        now_ms: u64,
        interval: u64,
        route: &ContentRoute<'_>,
        out: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) {
        // Regions that did not report this interval (partitioned, late) are left out.
        self.regional.retain(|_, (at, _)| *at + 2 * self.interval_ms > interval);
        let mut fleet = ContentSketch::new();
        for (_, (at, sketch)) in self.regional.iter() {
            if *at == interval {
                fleet.merge(sketch);
            }
        }
        self.stats.fleet_intervals += 1;
        self.detector.observe(interval, &fleet);
        self.hints = self.detector.hints(now_ms);
        self.hints.truncate(MAX_HINTS);
        self.top = self.detector.top(MAX_HINTS);
        self.hints_at_ms = now_ms;
        let keys: Vec<String> = self.hints.iter().map(|h| h.key.clone()).collect();
        let mut heaviest: Vec<String> = self.top.iter().take(MEMBER_TOP_KEYS).map(|k| k.key.clone()).collect();
        // The set matters, not the order (which jitters between close counts).
        heaviest.sort();
        let due = match &self.sent {
            None => !keys.is_empty() || !heaviest.is_empty(),
            Some((at, sent_keys, sent_heaviest)) => {
                *sent_keys != keys
                    || *sent_heaviest != heaviest
                    || (!keys.is_empty() && now_ms.saturating_sub(*at) >= HINT_REFRESH_INTERVALS * self.interval_ms)
            }
        };
        if !due {
            return;
        }
        let frame = ContentFrame::Hints {
            hints: self
                .hints
                .iter()
                .map(|h| HintWire {
                    key: h.key.clone(),
                    rate_per_s: h.rate_per_s,
                    growth: h.growth,
                    since_ms: h.since_ms,
                    last_seen_ms: h.last_seen_ms,
                })
                .collect(),
            top: self
                .top
                .iter()
                .take(MEMBER_TOP_KEYS)
                .map(|k| TopWire {
                    key: k.key.clone(),
                    estimate: k.estimate,
                    lower_bound: k.lower_bound,
                    upper_bound: k.upper_bound,
                })
                .collect(),
        };
        if let Some(bytes) = encode(&frame) {
            for to in &route.region_members {
                out.push((*to, bytes.clone()));
            }
        }
        self.sent = Some((now_ms, keys, heaviest));
    }

    /// A content frame from a peer, with or without its [`FRAME_CONTENT`] tag.
    pub fn handle(&mut self, now_ms: u64, payload: &[u8]) -> Result<(), ContentFrameError> {
        let payload = payload.strip_prefix(&[FRAME_CONTENT]).unwrap_or(payload);
        let result = self.handle_inner(now_ms, payload);
        if result.is_err() {
            self.stats.refused += 1;
        }
        result
    }

    fn handle_inner(&mut self, now_ms: u64, payload: &[u8]) -> Result<(), ContentFrameError> {
        match postcard::from_bytes::<ContentFrame>(payload)? {
            ContentFrame::Local { interval, sketch } => {
                check_sketch_len(&sketch)?;
                let sketch = ContentSketch::decode(&sketch)?;
                self.add_pending(interval, sketch);
            }
            ContentFrame::Regional { interval, region, sketch } => {
                check_sketch_len(&sketch)?;
                if region.is_empty() || region.len() > 64 {
                    return Err(ContentFrameError::BadHints("region name"));
                }
                let sketch = ContentSketch::decode(&sketch)?;
                if self.fleet_done.is_some_and(|done| interval <= done) {
                    self.stats.late += 1;
                } else if self.regional.len() < 1024 || self.regional.contains_key(&region) {
                    self.regional.insert(region, (interval, sketch));
                }
            }
            ContentFrame::Hints { hints, top } => {
                if hints.len() > MAX_HINTS || top.len() > MAX_HINTS {
                    return Err(ContentFrameError::BadHints("too many entries"));
                }
                let bad_key = |k: &str| k.is_empty() || k.len() > MAX_KEY_BYTES || k.chars().any(char::is_control);
                if hints.iter().any(|h| bad_key(&h.key) || !h.rate_per_s.is_finite() || !h.growth.is_finite())
                    || top.iter().any(|t| bad_key(&t.key))
                {
                    return Err(ContentFrameError::BadHints("bad key or figure"));
                }
                self.hints = hints
                    .into_iter()
                    .map(|h| CacheHint {
                        key: h.key,
                        rate_per_s: h.rate_per_s,
                        growth: h.growth,
                        since_ms: h.since_ms,
                        last_seen_ms: h.last_seen_ms,
                    })
                    .collect();
                self.top = top
                    .into_iter()
                    .map(|t| KeyEstimate {
                        key: t.key,
                        estimate: t.estimate,
                        lower_bound: t.lower_bound,
                        upper_bound: t.upper_bound,
                    })
                    .collect();
                self.hints_at_ms = now_ms;
            }
        }
        Ok(())
    }

    /// Current cache-warm hints.
    pub fn hints(&self) -> Vec<CacheHint> {
        self.hints.clone()
    }

    /// The fleet's heaviest keys of the last merged interval: up to [`MAX_HINTS`] on a region
    /// coordinator, the [`MEMBER_TOP_KEYS`] heaviest on other members (as they last learned them).
    pub fn top(&self, k: usize) -> Vec<KeyEstimate> {
        self.top.iter().take(k).cloned().collect()
    }

    /// This node's counters.
    pub fn stats(&self) -> ContentStats {
        self.stats
    }
}

fn check_sketch_len(sketch: &[u8]) -> Result<(), ContentFrameError> {
    if sketch.len() > MAX_SKETCH_BYTES {
        return Err(ContentFrameError::BadHints("sketch larger than 8 KiB"));
    }
    Ok(())
}
