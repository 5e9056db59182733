//! Fleet-wide viral-content detection, sans-IO: every node's per-interval content sketch goes
//! to its region's coordinator; each coordinator merges its region and sends the regional
//! sketch to every other coordinator; each coordinator then holds the fleet-wide sketch, runs
//! the viral detector and tells its region's members the cache-warm hints.
//!
//! Traffic stays proportional to regions, not nodes: a member sends one sketch per interval
//! (≤ [`MAX_SKETCH_BYTES`]), a coordinator one per other region plus the hints to its members
//! when they change.

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
/// A coordinator re-sends unchanged hints this many intervals apart (members that missed
/// one catch up; hints a member has not heard about for longer are dropped).
const HINT_REFRESH_INTERVALS: u64 = 10;
/// Regional sketches older than this many intervals are left out of the fleet sketch.
const REGIONAL_FRESH_INTERVALS: u64 = 3;

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
    /// A member's sketch of its last interval, to its region's coordinator.
    Local { sketch: Vec<u8> },
    /// A coordinator's merged regional sketch, to the other coordinators.
    Regional { region: String, sketch: Vec<u8> },
    /// A coordinator's hints, to its region's members.
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
    pub region: &'a str,
    /// The coordinator of this node's region; `None` when it is this node.
    pub my_coordinator: Option<SocketAddr>,
    /// Coordinators of the other regions.
    pub other_coordinators: Vec<SocketAddr>,
    /// The other alive members of this node's region.
    pub region_members: Vec<SocketAddr>,
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

/// One node's part in viral-content detection: drive it with [`ContentExchange::tick`] once per
/// content interval and [`ContentExchange::handle`] for each [`FRAME_CONTENT`] frame.
#[derive(Debug)]
pub struct ContentExchange {
    interval_ms: u64,
    detector: ViralDetector,
    /// Sketches from this region's members since the last tick (coordinator role).
    pending: Vec<ContentSketch>,
    /// Latest sketch of each region, with when it arrived.
    regional: BTreeMap<String, (u64, ContentSketch)>,
    hints: Vec<CacheHint>,
    top: Vec<KeyEstimate>,
    /// When the hints were last set (computed or received).
    hints_at_ms: u64,
    /// When this coordinator last sent hints, and what.
    sent_hints: Option<(u64, Vec<String>)>,
    /// Content frames refused (malformed, oversized, bad keys).
    pub refused: u64,
}

fn encode(frame: &ContentFrame) -> Option<Vec<u8>> {
    postcard::to_allocvec(frame).ok()
}

impl ContentExchange {
    /// A node's exchange with this detector configuration.
    pub fn new(config: ViralConfig) -> Self {
        ContentExchange {
            interval_ms: config.interval_ms.max(1),
            detector: ViralDetector::new(config),
            pending: Vec::new(),
            regional: BTreeMap::new(),
            hints: Vec::new(),
            top: Vec::new(),
            hints_at_ms: 0,
            sent_hints: None,
            refused: 0,
        }
    }

    /// Closes this node's interval with its `local` sketch: returns the frames to send (each
    /// starting with [`FRAME_CONTENT`]), routed by the fleet as `mesh` sees it.
    pub fn tick(&mut self, now_ms: u64, local: ContentSketch, mesh: &Mesh) -> Vec<(SocketAddr, Vec<u8>)> {
        let route = ContentRoute::of(mesh);
        let mut out = self.tick_routed(now_ms, local, &route);
        for (_, frame) in &mut out {
            frame.insert(0, FRAME_CONTENT);
        }
        out
    }

    fn tick_routed(
        &mut self,
        now_ms: u64,
        local: ContentSketch,
        route: &ContentRoute<'_>,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        match route.my_coordinator {
            None => self.coordinate(now_ms, local, route, &mut out),
            Some(coordinator) => {
                if !local.is_empty()
                    && let Some(bytes) = encode(&ContentFrame::Local { sketch: local.encode() })
                {
                    out.push((coordinator, bytes));
                }
                // Sketches sent here while this node coordinated are stale now.
                self.pending.clear();
                // A member keeps the hints its coordinator sent only while they are refreshed.
                if now_ms.saturating_sub(self.hints_at_ms) > 2 * HINT_REFRESH_INTERVALS * self.interval_ms {
                    self.hints.clear();
                    self.top.clear();
                }
            }
        }
        out
    }

    fn coordinate(
        &mut self,
        now_ms: u64,
        local: ContentSketch,
        route: &ContentRoute<'_>,
        out: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) {
        let mut region = local;
        for sketch in self.pending.drain(..) {
            region.merge(&sketch);
        }
        if !region.is_empty()
            && let Some(bytes) =
                encode(&ContentFrame::Regional { region: route.region.to_owned(), sketch: region.encode() })
        {
            for to in &route.other_coordinators {
                out.push((*to, bytes.clone()));
            }
        }
        self.regional.insert(route.region.to_owned(), (now_ms, region));
        let oldest = now_ms.saturating_sub(REGIONAL_FRESH_INTERVALS * self.interval_ms);
        self.regional.retain(|_, (at, _)| *at >= oldest);
        let mut fleet = ContentSketch::new();
        for (_, sketch) in self.regional.values() {
            fleet.merge(sketch);
        }
        self.detector.observe(now_ms, &fleet);
        self.hints = self.detector.hints(now_ms);
        self.hints.truncate(MAX_HINTS);
        self.top = self.detector.top(MAX_HINTS);
        self.hints_at_ms = now_ms;
        let keys: Vec<String> = self.hints.iter().map(|h| h.key.clone()).collect();
        let due = match &self.sent_hints {
            None => !keys.is_empty(),
            Some((at, sent)) => {
                *sent != keys || now_ms.saturating_sub(*at) >= HINT_REFRESH_INTERVALS * self.interval_ms
            }
        };
        if due {
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
            self.sent_hints = Some((now_ms, keys));
        }
    }

    /// A content frame from a peer, with or without its [`FRAME_CONTENT`] tag.
    pub fn handle(&mut self, now_ms: u64, payload: &[u8]) -> Result<(), ContentFrameError> {
        let payload = payload.strip_prefix(&[FRAME_CONTENT]).unwrap_or(payload);
        let result = self.handle_inner(now_ms, payload);
        if result.is_err() {
            self.refused += 1;
        }
        result
    }

    fn handle_inner(&mut self, now_ms: u64, payload: &[u8]) -> Result<(), ContentFrameError> {
        match postcard::from_bytes::<ContentFrame>(payload)? {
            ContentFrame::Local { sketch } => {
                check_sketch_len(&sketch)?;
                // Bounded: at most one interval of a region's members is kept.
                if self.pending.len() < 4096 {
                    self.pending.push(ContentSketch::decode(&sketch)?);
                }
            }
            ContentFrame::Regional { region, sketch } => {
                check_sketch_len(&sketch)?;
                if region.is_empty() || region.len() > 64 {
                    return Err(ContentFrameError::BadHints("region name"));
                }
                let sketch = ContentSketch::decode(&sketch)?;
                if self.regional.len() < 1024 || self.regional.contains_key(&region) {
                    self.regional.insert(region, (now_ms, sketch));
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

    /// The fleet's heaviest keys of the last interval.
    pub fn top(&self, k: usize) -> Vec<KeyEstimate> {
        self.top.iter().take(k).cloned().collect()
    }
}

fn check_sketch_len(sketch: &[u8]) -> Result<(), ContentFrameError> {
    if sketch.len() > MAX_SKETCH_BYTES {
        return Err(ContentFrameError::BadHints("sketch larger than 8 KiB"));
    }
    Ok(())
}
