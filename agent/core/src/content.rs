//! Fleet-wide "viral content" detection from per-node top-k sketches (issue 5).
//!
//! Each agent counts the content keys it sees in its StatsD metrics (a counter tagged
//! `content:<key>`) into a [`ContentSketch`], one per interval ([`IntervalSketch`]). Closed
//! interval sketches travel over the mesh ([`ContentSketch::encode`], at most
//! [`MAX_SKETCH_BYTES`] each), are merged by region coordinators and then across regions
//! ([`ContentSketch::merge`]), and a [`ViralDetector`] fed one fleet-wide sketch per interval
//! turns keys whose rate jumps into [`CacheHint`]s for every edge.
//!
//! The sketch is the Apache DataSketches frequent-items sketch (the `datasketches` crate), a
//! Misra-Gries variant with deterministic bounds: for every key it reports a lower bound (never
//! above the true count) and an upper bound (never below it), and those guarantees survive merges.
//! Its serialized form is the library's, so it is compatible with the other DataSketches ports.
//!
//! # Map size and wire size
//!
//! No single map size both fits a full sketch of worst-case keys in [`MAX_SKETCH_BYTES`] and
//! tracks 100 keys: the library keeps up to `0.75 * map size` keys and a 64-byte key takes 76
//! bytes, so a full 128-map (96 keys, fewer than 100, and about half that right after a purge)
//! is 7,328 bytes while a full 256-map (192 keys) is already 14,624. So the in-memory map is
//! sized for accuracy ([`SKETCH_MAP_SIZE`] = 2048: up to 1,536 keys, worst-case error
//! `3.5 / 2048` = 0.17% of the interval's weight) and the wire form is trimmed: when the
//! library's image is larger than [`MAX_SKETCH_BYTES`], [`ContentSketch::encode`] keeps the
//! heaviest keys that fit (107 worst-case keys, 8,164 bytes; more when keys are shorter) and
//! raises the sketch's maximum error by the count of the heaviest key it left out. Every bound
//! stays valid: a kept key keeps its count (its lower bound) and its upper bound grows by that
//! amount; a dropped key's upper bound becomes the new maximum error, at least its old one.
//!
//! Measured on 100 nodes × 50,000 events of 64-byte keys drawn from a Zipf law over 10,000 keys
//! (exponent 1.0, 30% of each node's events from its own favourites), the fleet top-100 recall
//! after encode, decode and merge was 19% with a 256-map, 65% with 1024, 77% with 2048 and 79%
//! with 4096; with 10% local favourites it was 35%, 99%, 99% and 99%. Past 2048 the 8 KiB wire
//! limit, not the map, is what loses keys.
//!
//! # Untrusted input
//!
//! [`ContentSketch::decode`] reads bytes from peers. The library's deserializer returns errors
//! for truncated and inconsistent images, but it is not hardened against every hostile image:
//! it allocates a table of `2^lg_cur_map_size` slots (up to 2^30, tens of GiB) before reading
//! the items, it does not check the maximum error against the stream weight (so later estimates
//! and merges can overflow, which panics in debug builds), merging and updating panic when the
//! total weight would overflow `u64`, and it ignores trailing bytes. So `decode` first walks the
//! whole image itself (size, header, table size, weights, keys, exact length) and only then
//! hands it to the library; [`ContentSketch::record`] and [`ContentSketch::try_merge`] check for
//! weight overflow before the library can panic.
//!
//! Everything here is sans-IO and deterministic: callers pass time, the library hashes with a
//! fixed seed, and ties are broken by key.

use std::collections::{BTreeMap, HashSet, VecDeque};

use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use serde::Serialize;

/// Largest encoded sketch, in bytes: what one sketch may take on the wire.
pub const MAX_SKETCH_BYTES: usize = 8 * 1024;
/// Longest content key, in bytes; longer keys are refused.
pub const MAX_KEY_BYTES: usize = 64;
/// The frequent-items sketch's maximum map size: it tracks up to three quarters of it (1,536 keys)
/// in memory; [`ContentSketch::encode`] trims to what fits in [`MAX_SKETCH_BYTES`]. See the module
/// documentation for why and for measurements.
pub const SKETCH_MAP_SIZE: usize = 2048;
/// Largest number of closed intervals an [`IntervalSketch`] holds for [`IntervalSketch::take_closed`];
/// older ones are dropped.
pub const MAX_PENDING_INTERVALS: usize = 4;
/// Largest [`ViralConfig::baseline_intervals`]; [`ViralDetector::new`] clamps to it. The detector
/// keeps every tracked key's count for each baseline interval (up to 1,536 keys each).
pub const MAX_BASELINE_INTERVALS: usize = 600;
/// Smallest baseline rate (per second) a growth factor is measured against, so that a key never
/// seen before has a finite growth.
pub const BASELINE_FLOOR_PER_S: f64 = 1.0;

// The library's frequent-items image (DataSketches serial version 1), little-endian:
//   byte 0 preamble longs (1 empty, 4 not), 1 serial version, 2 family, 3 lg max map size,
//   4 lg current map size, 5 flags, 6..8 unused;
//   non-empty only: 8..12 active items (u32), 12..16 unused, 16..24 stream weight, 24..32 offset
//   (the maximum error), then one u64 count per item, then each item as u32 length + UTF-8 bytes.
const PREAMBLE_LONGS_EMPTY: u8 = 1;
const PREAMBLE_LONGS_NONEMPTY: u8 = 4;
const SERIAL_VERSION: u8 = 1;
const FAMILY_FREQUENCY: u8 = 10;
const EMPTY_FLAG_MASK: u8 = 5;
const EMPTY_IMAGE_BYTES: usize = 8;
const PREAMBLE_BYTES: usize = 32;
/// Bytes an item takes besides its key: its u64 count and its u32 key length.
const ITEM_OVERHEAD_BYTES: usize = 12;
const LG_MIN_MAP_SIZE: u8 = 3;
const LG_MAX_MAP_SIZE: u8 = 30;
const LG_SKETCH_MAP_SIZE: u8 = SKETCH_MAP_SIZE.trailing_zeros() as u8;
/// Largest current-table size accepted from a peer: 2048 slots (1,536 keys) is more than an
/// 8 KiB image can hold (at most 627 one-byte keys), and bounds what the library allocates while
/// decoding (about 70 KiB).
const LG_MAX_DECODED_TABLE: u8 = 11;

const _: () = assert!(SKETCH_MAP_SIZE.is_power_of_two());
const _: () = assert!(LG_SKETCH_MAP_SIZE >= LG_MIN_MAP_SIZE && LG_SKETCH_MAP_SIZE <= LG_MAX_DECODED_TABLE);
const _: () = assert!(SKETCH_MAP_SIZE * 3 / 4 >= 100);

/// Why a content key, a sketch or a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    /// The content key is empty.
    #[error("content key is empty")]
    EmptyKey,
    /// The content key is longer than [`MAX_KEY_BYTES`].
    #[error("content key is {len} bytes, longer than {MAX_KEY_BYTES}")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// The content key contains a control character.
    #[error("content key contains a control character")]
    KeyControlChar,
    /// Adding the count would overflow the sketch's total weight (`u64`).
    #[error("sketch total weight would overflow")]
    WeightOverflow,
    /// The encoded sketch is longer than [`MAX_SKETCH_BYTES`].
    #[error("encoded sketch is {len} bytes, longer than {MAX_SKETCH_BYTES}")]
    TooLarge {
        /// The encoded length in bytes.
        len: usize,
    },
    /// The encoded sketch is not a valid frequent-items image of content keys.
    #[error("malformed content sketch: {0}")]
    Malformed(String),
    /// A [`ViralConfig`] field is out of range.
    #[error("invalid viral detector config: {0}")]
    InvalidConfig(&'static str),
}

/// One key's estimated count in a sketch, with bounds that always contain the true count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyEstimate {
    /// The content key.
    pub key: String,
    /// The library's estimate (equal to the upper bound).
    pub estimate: u64,
    /// A count the true count is never below.
    pub lower_bound: u64,
    /// A count the true count is never above.
    pub upper_bound: u64,
}

/// A top-k sketch of content keys: the DataSketches frequent-items sketch of `String` keys.
#[derive(Debug, Clone)]
pub struct ContentSketch {
    inner: FrequentItemsSketch<String>,
}

impl Default for ContentSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl ContentSketch {
    /// An empty sketch with a map of [`SKETCH_MAP_SIZE`]: it tracks up to 1,536 keys, and encodes
    /// within [`MAX_SKETCH_BYTES`] (trimmed to the heaviest keys that fit).
    pub fn new() -> Self {
        match FrequentItemsSketch::new(SKETCH_MAP_SIZE) {
            Ok(inner) => Self { inner },
            // The size is a power of two in the library's range, asserted at compile time above.
            Err(_) => unreachable!("SKETCH_MAP_SIZE is a valid frequent-items map size"),
        }
    }

    /// Counts `count` occurrences of `key`; a count of zero is accepted and changes nothing.
    ///
    /// # Errors
    ///
    /// The key is empty, longer than [`MAX_KEY_BYTES`] or contains a control character, or the
    /// total weight would overflow `u64`. The sketch is unchanged then.
    pub fn record(&mut self, key: &str, count: u64) -> Result<(), ContentError> {
        validate_key(key)?;
        if count == 0 {
            return Ok(());
        }
        if self.inner.total_weight().checked_add(count).is_none() {
            return Err(ContentError::WeightOverflow);
        }
        self.inner.update_with_count_ref(key, count);
        Ok(())
    }

    /// Adds `other`'s counts to this sketch, as if this sketch had seen both streams.
    ///
    /// In the impossible-in-practice case that the combined total weight overflows `u64`,
    /// `other` is ignored; [`ContentSketch::try_merge`] reports it instead.
    pub fn merge(&mut self, other: &ContentSketch) {
        // Ignoring the overflow is the documented behaviour; `try_merge` reports it.
        let _ = self.try_merge(other);
    }

    /// Like [`ContentSketch::merge`], but says when it could not merge.
    ///
    /// # Errors
    ///
    /// [`ContentError::WeightOverflow`] if the combined total weight would overflow `u64`; this
    /// sketch is unchanged then.
    pub fn try_merge(&mut self, other: &ContentSketch) -> Result<(), ContentError> {
        if self.inner.total_weight().checked_add(other.inner.total_weight()).is_none() {
            return Err(ContentError::WeightOverflow);
        }
        self.inner.merge(&other.inner);
        Ok(())
    }

    /// The `k` keys with the highest estimates, highest first (ties by higher lower bound, then
    /// by key).
    pub fn top(&self, k: usize) -> Vec<KeyEstimate> {
        if k == 0 {
            return Vec::new();
        }
        // With the threshold at the maximum error, "no false negatives" lists every tracked key.
        let mut rows: Vec<KeyEstimate> = self
            .inner
            .frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0)
            .into_iter()
            .map(|row| KeyEstimate {
                key: row.item().clone(),
                estimate: row.estimate(),
                lower_bound: row.lower_bound(),
                upper_bound: row.upper_bound(),
            })
            .collect();
        rows.sort_by(|a, b| {
            b.estimate.cmp(&a.estimate).then_with(|| b.lower_bound.cmp(&a.lower_bound)).then_with(|| a.key.cmp(&b.key))
        });
        rows.truncate(k);
        rows
    }

    /// The sum of all counts recorded into this sketch and the sketches merged into it.
    pub fn total_weight(&self) -> u64 {
        self.inner.total_weight()
    }

    /// The largest difference between any key's upper and lower bound (the library's offset);
    /// an untracked key's true count is at most this.
    pub fn maximum_error(&self) -> u64 {
        self.inner.maximum_error()
    }

    /// Whether nothing has been counted (total weight zero).
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The sketch in the library's serialized form, at most [`MAX_SKETCH_BYTES`] long.
    ///
    /// When the library's image would be longer (long keys), the heaviest keys that fit are kept
    /// and the maximum error grows by the count of the heaviest key left out, so all bounds stay
    /// valid (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let bytes = self.inner.serialize();
        if bytes.len() <= MAX_SKETCH_BYTES {
            return bytes;
        }
        self.encode_trimmed(usize::MAX)
    }

    /// Like [`ContentSketch::encode`], keeping at most the `keys` heaviest keys (a summary for
    /// peers that only need the heavy hitters); bounds stay valid the same way.
    pub fn encode_heaviest(&self, keys: usize) -> Vec<u8> {
        if self.inner.num_active_items() <= keys {
            return self.encode();
        }
        self.encode_trimmed(keys)
    }

    fn encode_trimmed(&self, max_keys: usize) -> Vec<u8> {
        let mut rows: Vec<(String, u64)> = self
            .inner
            .frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0)
            .into_iter()
            .map(|row| (row.item().clone(), row.lower_bound()))
            .collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut size = PREAMBLE_BYTES;
        let mut keep = rows.len().min(max_keys);
        for (i, (key, _)) in rows.iter().enumerate().take(keep) {
            let item = ITEM_OVERHEAD_BYTES + key.len();
            if size + item > MAX_SKETCH_BYTES {
                keep = i;
                break;
            }
            size += item;
        }
        let dropped_max = rows.get(keep).map_or(0, |row| row.1);
        rows.truncate(keep);
        // offset + any count <= total weight, so this cannot saturate; saturating keeps it panic-free.
        let offset = self.inner.maximum_error().saturating_add(dropped_max);
        let mut lg_cur = LG_MIN_MAP_SIZE;
        while (1usize << lg_cur) * 3 / 4 < rows.len() && lg_cur < LG_SKETCH_MAP_SIZE {
            lg_cur += 1;
        }
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&[
            PREAMBLE_LONGS_NONEMPTY,
            SERIAL_VERSION,
            FAMILY_FREQUENCY,
            LG_SKETCH_MAP_SIZE,
            lg_cur,
            0, // flags: not empty
            0,
            0,
        ]);
        // At most 8 KiB of items: the count fits a u32.
        out.extend_from_slice(&u32::try_from(rows.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.inner.total_weight().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        for (_, count) in &rows {
            out.extend_from_slice(&count.to_le_bytes());
        }
        for (key, _) in &rows {
            // Keys are at most MAX_KEY_BYTES long.
            out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
        }
        out
    }

    /// Reads a sketch sent by a peer.
    ///
    /// Accepts any frequent-items image of `String` keys (so other DataSketches ports too) that
    /// is at most [`MAX_SKETCH_BYTES`] long, whose keys follow the rules of
    /// [`ContentSketch::record`], appear once each, and whose counts, maximum error and total
    /// weight are consistent. The result has this node's map size whatever the sender's.
    ///
    /// # Errors
    ///
    /// [`ContentError::TooLarge`], a key error, or [`ContentError::Malformed`]; never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, ContentError> {
        if bytes.len() > MAX_SKETCH_BYTES {
            return Err(ContentError::TooLarge { len: bytes.len() });
        }
        let image = Image::parse(bytes)?;
        let decoded = FrequentItemsSketch::<String>::deserialize(bytes)
            .map_err(|error| ContentError::Malformed(error.message().to_owned()))?;
        if decoded.total_weight() != image.stream_weight
            || decoded.maximum_error() != image.offset
            || decoded.num_active_items() != image.items
        {
            return Err(malformed("library and validator disagree on the image"));
        }
        // Re-home the items in a sketch of this node's map size; the weights were checked, so
        // nothing here can overflow.
        let mut sketch = Self::new();
        sketch.inner.merge(&decoded);
        Ok(sketch)
    }
}

/// What [`Image::parse`] learned from a valid image.
struct Image {
    stream_weight: u64,
    offset: u64,
    items: usize,
}

impl Image {
    /// Walks a whole frequent-items image and checks everything the library's deserializer
    /// trusts or ignores, before the library allocates anything.
    fn parse(bytes: &[u8]) -> Result<Self, ContentError> {
        let mut r = Reader { bytes, pos: 0 };
        let pre_longs = r.u8()? & 0x3F;
        let serial_version = r.u8()?;
        let family = r.u8()?;
        let lg_max = r.u8()?;
        let lg_cur = r.u8()?;
        let flags = r.u8()?;
        r.take(2)?;
        if family != FAMILY_FREQUENCY {
            return Err(malformed("not a frequent-items sketch"));
        }
        if serial_version != SERIAL_VERSION {
            return Err(malformed("unknown serial version"));
        }
        if !(LG_MIN_MAP_SIZE..=LG_MAX_MAP_SIZE).contains(&lg_max) {
            return Err(malformed("map size out of range"));
        }
        if lg_cur < LG_MIN_MAP_SIZE || lg_cur > lg_max || lg_cur > LG_MAX_DECODED_TABLE {
            return Err(malformed("table size out of range"));
        }
        let empty_flag = flags & EMPTY_FLAG_MASK != 0;
        match pre_longs {
            PREAMBLE_LONGS_EMPTY if empty_flag => {
                return if bytes.len() == EMPTY_IMAGE_BYTES {
                    Ok(Self { stream_weight: 0, offset: 0, items: 0 })
                } else {
                    Err(malformed("trailing bytes after an empty sketch"))
                };
            }
            PREAMBLE_LONGS_NONEMPTY if !empty_flag => {}
            _ => return Err(malformed("inconsistent preamble")),
        }
        let items = usize::try_from(r.u32()?).map_err(|_| malformed("too many items"))?;
        if items > (1usize << lg_cur) * 3 / 4 {
            return Err(malformed("more items than the table holds"));
        }
        r.take(4)?;
        let stream_weight = r.u64()?;
        let offset = r.u64()?;
        if stream_weight == 0 {
            return Err(malformed("non-empty sketch with zero weight"));
        }
        // Each item needs at least its count, its key length and one key byte.
        if items.saturating_mul(ITEM_OVERHEAD_BYTES + 1) > r.remaining() {
            return Err(malformed("truncated items"));
        }
        let mut sum = offset;
        for _ in 0..items {
            let count = r.u64()?;
            if count == 0 {
                return Err(malformed("item with zero count"));
            }
            sum = sum.checked_add(count).ok_or_else(|| malformed("counts overflow"))?;
        }
        // Purges and merges keep (sum of counts + maximum error) <= total weight; checking it
        // here means no estimate, merge or later record can overflow.
        if sum > stream_weight {
            return Err(malformed("counts and maximum error exceed the total weight"));
        }
        let mut seen = HashSet::with_capacity(items);
        for _ in 0..items {
            let len = usize::try_from(r.u32()?).map_err(|_| malformed("key too long"))?;
            if len > MAX_KEY_BYTES {
                return Err(ContentError::KeyTooLong { len });
            }
            let key = std::str::from_utf8(r.take(len)?).map_err(|_| malformed("key is not UTF-8"))?;
            validate_key(key)?;
            if !seen.insert(key) {
                return Err(malformed("key appears twice"));
            }
        }
        if r.remaining() != 0 {
            return Err(malformed("trailing bytes after the items"));
        }
        Ok(Self { stream_weight, offset, items })
    }
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ContentError> {
        let end =
            self.pos.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or_else(|| malformed("truncated"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8, ContentError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ContentError> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(buf))
    }

    fn u64(&mut self) -> Result<u64, ContentError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buf))
    }
}

fn malformed(reason: &str) -> ContentError {
    ContentError::Malformed(reason.to_owned())
}

fn validate_key(key: &str) -> Result<(), ContentError> {
    if key.is_empty() {
        return Err(ContentError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ContentError::KeyTooLong { len: key.len() });
    }
    if key.chars().any(char::is_control) {
        return Err(ContentError::KeyControlChar);
    }
    Ok(())
}

/// Per-node windowing: counts go into the current interval's sketch; an interval closes when
/// time reaches its end, and [`IntervalSketch::take_closed`] hands closed intervals out.
///
/// Intervals are aligned to multiples of the interval length (`start = now - now % interval`), so
/// every node's interval starts at the same instants and coordinators merge sketches by start.
#[derive(Debug, Clone)]
pub struct IntervalSketch {
    interval_ms: u64,
    current: Option<(u64, ContentSketch)>,
    closed: VecDeque<(u64, ContentSketch)>,
}

impl IntervalSketch {
    /// A windowing of `interval_ms` milliseconds (zero is taken as one).
    pub fn new(interval_ms: u64) -> Self {
        Self { interval_ms: interval_ms.max(1), current: None, closed: VecDeque::new() }
    }

    /// The interval length in milliseconds.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// Counts `count` occurrences of `key` at `now_ms`, closing the current interval if `now_ms`
    /// is past it. A record older than the current interval (time going backwards) counts in the
    /// current interval.
    ///
    /// # Errors
    ///
    /// As [`ContentSketch::record`]; nothing changes then.
    pub fn record(&mut self, now_ms: u64, key: &str, count: u64) -> Result<(), ContentError> {
        validate_key(key)?;
        let start = self.start_of(now_ms);
        self.roll(start);
        let (_, sketch) = self.current.get_or_insert_with(|| (start, ContentSketch::new()));
        sketch.record(key, count)
    }

    /// The oldest closed interval not yet taken, as its start (ms) and its sketch; closes the
    /// current interval first if `now_ms` is past it. Intervals with nothing counted are never
    /// returned. At most [`MAX_PENDING_INTERVALS`] closed intervals wait; older ones are dropped.
    pub fn take_closed(&mut self, now_ms: u64) -> Option<(u64, ContentSketch)> {
        let start = self.start_of(now_ms);
        self.roll(start);
        self.closed.pop_front()
    }

    fn start_of(&self, now_ms: u64) -> u64 {
        now_ms - now_ms % self.interval_ms
    }

    fn roll(&mut self, start: u64) {
        if self.current.as_ref().is_some_and(|(current, _)| start > *current)
            && let Some((current, sketch)) = self.current.take()
            && !sketch.is_empty()
        {
            self.closed.push_back((current, sketch));
            while self.closed.len() > MAX_PENDING_INTERVALS {
                self.closed.pop_front();
            }
        }
    }
}

/// Intervals a key's baseline must rest on (at least; all of them while warming up) before it can
/// become a hint.
pub const MIN_KNOWN_INTERVALS: usize = 3;

/// Settings of the [`ViralDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViralConfig {
    /// Length of one interval (one fleet sketch), in milliseconds.
    pub interval_ms: u64,
    /// Fleet-wide rate (per second, from the key's guaranteed lower bound) a key must reach.
    pub min_rate_per_s: f64,
    /// How many times its average over the previous `baseline_intervals` the rate must be.
    pub growth_factor: f64,
    /// How many previous intervals the baseline averages; no hint is given before that many
    /// intervals have been observed.
    pub baseline_intervals: usize,
    /// How long a hint lives after the last interval in which its key was at or above
    /// `min_rate_per_s`, in milliseconds.
    pub hint_ttl_ms: u64,
    /// Most hints kept and returned; the coldest are dropped first.
    pub max_hints: usize,
}

impl Default for ViralConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            min_rate_per_s: 50.0,
            growth_factor: 3.0,
            baseline_intervals: 10,
            hint_ttl_ms: 300_000,
            max_hints: 100,
        }
    }
}

impl ViralConfig {
    /// Checks every field is in range.
    ///
    /// # Errors
    ///
    /// [`ContentError::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ContentError> {
        if self.interval_ms == 0 {
            return Err(ContentError::InvalidConfig("interval_ms must be positive"));
        }
        if !self.min_rate_per_s.is_finite() || self.min_rate_per_s < 0.0 {
            return Err(ContentError::InvalidConfig("min_rate_per_s must be a finite number >= 0"));
        }
        if !self.growth_factor.is_finite() || self.growth_factor < 1.0 {
            return Err(ContentError::InvalidConfig("growth_factor must be a finite number >= 1"));
        }
        if self.baseline_intervals == 0 || self.baseline_intervals > MAX_BASELINE_INTERVALS {
            return Err(ContentError::InvalidConfig("baseline_intervals must be in 1..=600"));
        }
        if self.hint_ttl_ms == 0 {
            return Err(ContentError::InvalidConfig("hint_ttl_ms must be positive"));
        }
        if self.max_hints == 0 {
            return Err(ContentError::InvalidConfig("max_hints must be positive"));
        }
        Ok(())
    }

    /// The config with every field forced into range, so the detector never misbehaves.
    fn sanitized(self) -> Self {
        let finite_or = |value: f64, default: f64| if value.is_finite() { value } else { default };
        Self {
            interval_ms: self.interval_ms.max(1),
            min_rate_per_s: finite_or(self.min_rate_per_s, 0.0).max(0.0),
            growth_factor: finite_or(self.growth_factor, 1.0).max(1.0),
            baseline_intervals: self.baseline_intervals.clamp(1, MAX_BASELINE_INTERVALS),
            hint_ttl_ms: self.hint_ttl_ms,
            max_hints: self.max_hints,
        }
    }
}

/// A content key every edge should keep warm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheHint {
    /// The content key.
    pub key: String,
    /// Its fleet-wide rate (per second, guaranteed lower bound) in the last interval it was at or
    /// above the minimum rate.
    pub rate_per_s: f64,
    /// The largest growth factor (rate over baseline rate) measured while the hint was live.
    pub growth: f64,
    /// Start of the interval in which the key first qualified, in milliseconds.
    pub since_ms: u64,
    /// End of the last interval in which the key was at or above the minimum rate, in
    /// milliseconds; the hint lives until `last_seen_ms + hint_ttl_ms`.
    pub last_seen_ms: u64,
}

/// Fleet-wide viral detection over merged per-interval sketches.
///
/// A key becomes a hint in an interval where its rate (from its guaranteed lower bound, so never
/// overstated) is at least [`ViralConfig::min_rate_per_s`] and at least
/// [`ViralConfig::growth_factor`] times its average over the previous
/// [`ViralConfig::baseline_intervals`] observed intervals (a key absent from an interval counts
/// zero there; the baseline is at least [`BASELINE_FLOOR_PER_S`]). No hint is given until that
/// many intervals have been observed, so a fresh detector does not flag everything popular. A
/// hinted key stays hinted while its rate stays at or above the minimum, and its hint expires
/// [`ViralConfig::hint_ttl_ms`] after the last such interval.
#[derive(Debug, Clone)]
pub struct ViralDetector {
    config: ViralConfig,
    /// Per past interval: each key's count, and whether that list is complete (an unlisted key
    /// counted zero) or a seed (an unlisted key's count is unknown).
    history: VecDeque<(BTreeMap<String, u64>, bool)>,
    last_start: Option<u64>,
    last_top: Vec<KeyEstimate>,
    hints: BTreeMap<String, CacheHint>,
}

impl ViralDetector {
    /// A detector with no history. Out-of-range fields (see [`ViralConfig::validate`]) are forced
    /// into range.
    pub fn new(config: ViralConfig) -> Self {
        Self {
            config: config.sanitized(),
            history: VecDeque::new(),
            last_start: None,
            last_top: Vec::new(),
            hints: BTreeMap::new(),
        }
    }

    /// Feeds the merged fleet sketch of the interval starting at `interval_start_ms`. Intervals
    /// must come in order: one starting at or before the last observed one is ignored.
    pub fn observe(&mut self, interval_start_ms: u64, fleet_sketch: &ContentSketch) {
        if self.last_start.is_some_and(|last| interval_start_ms <= last) {
            return;
        }
        let config = self.config;
        let interval_s = config.interval_ms as f64 / 1000.0;
        let interval_end = interval_start_ms.saturating_add(config.interval_ms);
        self.hints.retain(|_, hint| hint.last_seen_ms.saturating_add(config.hint_ttl_ms) > interval_start_ms);

        let rows = fleet_sketch.top(usize::MAX);
        let warmed_up = self.history.len() >= config.baseline_intervals;
        for row in &rows {
            let rate = row.lower_bound as f64 / interval_s;
            if rate < config.min_rate_per_s {
                continue;
            }
            let (known, baseline_count) = self
                .history
                .iter()
                .filter_map(|(counts, complete)| counts.get(&row.key).copied().or(complete.then_some(0)))
                .fold((0usize, 0u64), |(n, sum), count| (n + 1, sum.saturating_add(count)));
            let baseline_rate = baseline_count as f64 / known.max(1) as f64 / interval_s;
            let growth = rate / baseline_rate.max(BASELINE_FLOOR_PER_S);
            let known_enough = known >= config.baseline_intervals.min(MIN_KNOWN_INTERVALS);
            if let Some(hint) = self.hints.get_mut(&row.key) {
                hint.rate_per_s = rate;
                hint.growth = hint.growth.max(growth);
                hint.last_seen_ms = interval_end;
            } else if warmed_up && known_enough && growth >= config.growth_factor {
                let hint = CacheHint {
                    key: row.key.clone(),
                    rate_per_s: rate,
                    growth,
                    since_ms: interval_start_ms,
                    last_seen_ms: interval_end,
                };
                self.hints.insert(row.key.clone(), hint);
            }
        }
        if self.hints.len() > config.max_hints {
            let mut ranked: Vec<&CacheHint> = self.hints.values().collect();
            ranked.sort_by(hotter_first);
            let dropped: Vec<String> = ranked[config.max_hints..].iter().map(|hint| hint.key.clone()).collect();
            for key in dropped {
                self.hints.remove(&key);
            }
        }

        self.history.push_back((rows.iter().map(|row| (row.key.clone(), row.lower_bound)).collect(), true));
        while self.history.len() > config.baseline_intervals {
            self.history.pop_front();
        }
        self.last_top = rows;
        self.last_start = Some(interval_start_ms);
    }

    /// Starts a detector from what another one last published, so a node taking over as
    /// coordinator hints at once instead of after its warm-up: `top` (the fleet's heaviest keys
    /// of an interval) stands for every baseline interval, and `hints` stay live. Keys `top`
    /// lists have that baseline at once; the others are unknown until
    /// [`MIN_KNOWN_INTERVALS`] intervals have been observed (never a false hint from missing
    /// knowledge).
    pub fn seed(&mut self, interval_start_ms: u64, top: &[KeyEstimate], hints: &[CacheHint]) {
        let counts: BTreeMap<String, u64> = top.iter().map(|k| (k.key.clone(), k.lower_bound)).collect();
        self.history.clear();
        for _ in 0..self.config.baseline_intervals {
            self.history.push_back((counts.clone(), false));
        }
        self.hints = hints.iter().take(self.config.max_hints).map(|h| (h.key.clone(), h.clone())).collect();
        self.last_top = top.to_vec();
        self.last_start = Some(interval_start_ms);
    }

    /// Whether enough intervals were observed (or seeded) for hints to be given.
    pub fn is_warm(&self) -> bool {
        self.history.len() >= self.config.baseline_intervals
    }

    /// Hints live at `now_ms`, hottest (highest rate) first, at most [`ViralConfig::max_hints`].
    pub fn hints(&self, now_ms: u64) -> Vec<CacheHint> {
        let mut live: Vec<&CacheHint> = self
            .hints
            .values()
            .filter(|hint| hint.last_seen_ms.saturating_add(self.config.hint_ttl_ms) > now_ms)
            .collect();
        live.sort_by(hotter_first);
        live.into_iter().take(self.config.max_hints).cloned().collect()
    }

    /// The fleet top-`k` of the last observed interval.
    pub fn top(&self, k: usize) -> Vec<KeyEstimate> {
        self.last_top.iter().take(k).cloned().collect()
    }
}

fn hotter_first(a: &&CacheHint, b: &&CacheHint) -> std::cmp::Ordering {
    b.rate_per_s
        .total_cmp(&a.rate_per_s)
        .then_with(|| b.last_seen_ms.cmp(&a.last_seen_ms))
        .then_with(|| a.key.cmp(&b.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// SplitMix64: a small deterministic generator for test streams.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Samples ranks `0..n` with probability proportional to `1 / (rank + 1)^s`.
    struct Zipf {
        cdf: Vec<f64>,
    }

    impl Zipf {
        fn new(n: usize, s: f64) -> Self {
            let mut cdf = Vec::with_capacity(n);
            let mut sum = 0.0;
            for rank in 0..n {
                sum += 1.0 / ((rank + 1) as f64).powf(s);
                cdf.push(sum);
            }
            cdf.iter_mut().for_each(|c| *c /= sum);
            Self { cdf }
        }

        fn sample(&self, rng: &mut Rng) -> usize {
            let u = rng.unit();
            self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
        }
    }

    /// A worst-case key: exactly [`MAX_KEY_BYTES`] long.
    fn wide_key(i: usize) -> String {
        let key = format!("content/{i:0>56}");
        assert_eq!(key.len(), MAX_KEY_BYTES);
        key
    }

    fn sketch_of(counts: &[(&str, u64)]) -> ContentSketch {
        let mut sketch = ContentSketch::new();
        for (key, count) in counts {
            sketch.record(key, *count).unwrap();
        }
        sketch
    }

    fn keys_of(rows: &[KeyEstimate]) -> Vec<&str> {
        rows.iter().map(|row| row.key.as_str()).collect()
    }

    /// The exact top `k` as (key, count), heaviest first, ties by key.
    fn exact_top(counts: &HashMap<String, u64>, k: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = counts.iter().map(|(key, count)| (key.clone(), *count)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    /// Every tracked key's bounds contain its true count; every untracked key's true count is at
    /// most the maximum error.
    fn assert_bounds_hold(sketch: &ContentSketch, exact: &HashMap<String, u64>) {
        let rows = sketch.top(usize::MAX);
        let tracked: HashMap<&str, &KeyEstimate> = rows.iter().map(|row| (row.key.as_str(), row)).collect();
        for (key, truth) in exact {
            match tracked.get(key.as_str()) {
                Some(row) => assert!(
                    row.lower_bound <= *truth && *truth <= row.upper_bound,
                    "{key}: {truth} outside [{}, {}]",
                    row.lower_bound,
                    row.upper_bound
                ),
                None => assert!(*truth <= sketch.maximum_error(), "{key}: {truth} > {}", sketch.maximum_error()),
            }
        }
        for row in &rows {
            assert!(exact.contains_key(&row.key), "{} was never recorded", row.key);
        }
        assert_eq!(sketch.total_weight(), exact.values().sum::<u64>());
    }

    #[test]
    fn record_refuses_bad_keys_and_leaves_the_sketch_unchanged() {
        let mut sketch = ContentSketch::new();
        assert_eq!(sketch.record("", 1), Err(ContentError::EmptyKey));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(sketch.record(&long, 1), Err(ContentError::KeyTooLong { len: MAX_KEY_BYTES + 1 }));
        for bad in ["a\nb", "tab\there", "del\u{7f}", "c1\u{85}", "\0"] {
            assert_eq!(sketch.record(bad, 1), Err(ContentError::KeyControlChar), "{bad:?}");
        }
        assert!(sketch.is_empty());
        assert_eq!(sketch.total_weight(), 0);
        sketch.record(&"k".repeat(MAX_KEY_BYTES), 1).unwrap();
        sketch.record("mariage/été 🎉", 1).unwrap();
        sketch.record("zero", 0).unwrap();
        assert_eq!(sketch.total_weight(), 2);
        assert_eq!(sketch.top(10).len(), 2);
    }

    #[test]
    fn weight_overflow_is_an_error_not_a_panic() {
        let mut sketch = sketch_of(&[("a", u64::MAX - 1)]);
        assert_eq!(sketch.record("b", 2), Err(ContentError::WeightOverflow));
        sketch.record("b", 1).unwrap();
        assert_eq!(sketch.total_weight(), u64::MAX);
        let other = sketch_of(&[("c", 1)]);
        assert_eq!(sketch.try_merge(&other), Err(ContentError::WeightOverflow));
        sketch.merge(&other);
        assert_eq!(sketch.total_weight(), u64::MAX);
        assert_eq!(keys_of(&sketch.top(5)), ["a", "b"]);
    }

    #[test]
    fn top_is_ordered_by_estimate_then_key() {
        let sketch = sketch_of(&[("a", 5), ("b", 10), ("c", 1), ("b", 2), ("d", 5)]);
        let top = sketch.top(10);
        assert_eq!(keys_of(&top), ["b", "a", "d", "c"]);
        // Few keys: the counts are exact.
        assert_eq!(top[0], KeyEstimate { key: "b".into(), estimate: 12, lower_bound: 12, upper_bound: 12 });
        assert_eq!(keys_of(&sketch.top(2)), ["b", "a"]);
        assert!(sketch.top(0).is_empty());
        assert_eq!(sketch.total_weight(), 23);
        assert_eq!(sketch.maximum_error(), 0);
        assert!(!sketch.is_empty());
        assert!(ContentSketch::new().top(3).is_empty());
    }

    /// (key, count) updates in order.
    type Stream = Vec<(String, u64)>;

    /// Heavy keys `heavy-00..19` with well-separated counts, spread over two streams together with
    /// 6,000 light keys each (so both sketches purge).
    fn two_streams() -> (Stream, Stream) {
        let mut rng = Rng(7);
        let mut left = Vec::new();
        let mut right = Vec::new();
        for i in 0..20u64 {
            let total = 3_000 - 100 * i;
            let share = total * (30 + rng.next_u64() % 40) / 100;
            left.push((format!("heavy-{i:02}"), share));
            right.push((format!("heavy-{i:02}"), total - share));
        }
        for i in 0..6_000u64 {
            left.push((format!("light-left-{i}"), 1 + rng.next_u64() % 3));
            right.push((format!("light-right-{i}"), 1 + rng.next_u64() % 3));
        }
        // Interleave heavy and light events so purges happen in the middle of the heavy counts.
        for stream in [&mut left, &mut right] {
            let mut split: Vec<(String, u64)> = Vec::new();
            for (key, count) in stream.drain(..) {
                let half = count / 2;
                if half > 0 {
                    split.push((key.clone(), half));
                }
                split.push((key, count - half));
            }
            for i in (1..split.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                split.swap(i, j);
            }
            *stream = split;
        }
        (left, right)
    }

    #[test]
    fn merge_equals_the_sketch_of_the_combined_stream_for_heavy_hitters() {
        let (left_stream, right_stream) = two_streams();
        let mut left = ContentSketch::new();
        let mut right = ContentSketch::new();
        let mut combined = ContentSketch::new();
        let mut exact: HashMap<String, u64> = HashMap::new();
        for (key, count) in &left_stream {
            left.record(key, *count).unwrap();
            combined.record(key, *count).unwrap();
            *exact.entry(key.clone()).or_default() += count;
        }
        for (key, count) in &right_stream {
            right.record(key, *count).unwrap();
            combined.record(key, *count).unwrap();
            *exact.entry(key.clone()).or_default() += count;
        }
        assert!(left.maximum_error() > 0 && combined.maximum_error() > 0, "the streams must force purges");
        let mut merged = left.clone();
        merged.merge(&right);

        let want: Vec<String> = (0..20).map(|i| format!("heavy-{i:02}")).collect();
        assert_eq!(keys_of(&merged.top(20)), want);
        assert_eq!(keys_of(&combined.top(20)), want);
        assert_eq!(merged.total_weight(), combined.total_weight());
        assert_bounds_hold(&merged, &exact);
        assert_bounds_hold(&combined, &exact);
        // Merging is symmetric for the heavy hitters.
        let mut reversed = right.clone();
        reversed.merge(&left);
        assert_eq!(keys_of(&reversed.top(20)), want);
        // Merging an empty sketch changes nothing.
        let before = merged.top(usize::MAX);
        merged.merge(&ContentSketch::new());
        assert_eq!(merged.top(usize::MAX), before);
    }

    /// One node's stream: 64-byte keys drawn from a Zipf law over 10,000 keys, a tenth of them from
    /// the node's own favourites (a node-specific permutation of the same law).
    fn node_stream(node: usize, events: usize, zipf: &Zipf, keys: &[String], rng: &mut Rng) -> Vec<usize> {
        (0..events)
            .map(|_| {
                let rank = zipf.sample(rng);
                if rng.unit() < 0.1 { (rank * 7_919 + node * 131 + 17) % keys.len() } else { rank }
            })
            .collect()
    }

    fn recall(want: &[(String, u64)], got: &[KeyEstimate]) -> usize {
        let got: HashSet<&str> = got.iter().map(|row| row.key.as_str()).collect();
        want.iter().filter(|(key, _)| got.contains(key.as_str())).count()
    }

    #[test]
    fn worst_case_keys_encode_within_the_limit_and_the_fleet_top_100_survives() {
        let keys: Vec<String> = (0..10_000).map(wide_key).collect();
        let zipf = Zipf::new(keys.len(), 1.2);
        let mut rng = Rng(42);

        // A full sketch of 10,000 distinct worst-case keys.
        let mut full = ContentSketch::new();
        for (i, key) in keys.iter().enumerate() {
            full.record(key, 1 + (i as u64 * 7_919) % 1_000).unwrap();
        }
        assert!(full.top(usize::MAX).len() > 700);
        assert!(full.inner.serialize().len() > 50_000, "the library's own image is far too large");
        let bytes = full.encode();
        assert!(bytes.len() <= MAX_SKETCH_BYTES, "{} bytes", bytes.len());
        assert_eq!(bytes.len(), 32 + 107 * 76);

        // 100 nodes, each with its own mix, each sending its encoded sketch.
        let mut exact: HashMap<String, u64> = HashMap::new();
        let mut received = Vec::new();
        for node in 0..100 {
            let mut sketch = ContentSketch::new();
            let mut local: HashMap<String, u64> = HashMap::new();
            for key in node_stream(node, 50_000, &zipf, &keys, &mut rng) {
                sketch.record(&keys[key], 1).unwrap();
                *local.entry(keys[key].clone()).or_default() += 1;
                *exact.entry(keys[key].clone()).or_default() += 1;
            }
            let bytes = sketch.encode();
            assert!(bytes.len() <= MAX_SKETCH_BYTES, "node {node}: {} bytes", bytes.len());
            let decoded = ContentSketch::decode(&bytes).unwrap();
            assert_bounds_hold(&decoded, &local);
            if node == 0 {
                // One node: its own top 100 all survive the wire.
                let want = exact_top(&local, 100);
                assert_eq!(recall(&want, &sketch.top(100)), 100);
                assert_eq!(recall(&want, &decoded.top(100)), 100);
            }
            received.push(decoded);
        }
        let want = exact_top(&exact, 100);

        // A coordinator merging the 100 node sketches.
        let mut fleet = ContentSketch::new();
        for sketch in &received {
            fleet.merge(sketch);
        }
        assert_eq!(fleet.total_weight(), 5_000_000);
        assert_bounds_hold(&fleet, &exact);
        assert_eq!(recall(&want, &fleet.top(usize::MAX)), 100, "every fleet heavy hitter is still tracked");
        let top = fleet.top(100);
        assert!(recall(&want, &top) >= 98, "fleet top-100 recall {}", recall(&want, &top));
        assert_eq!(keys_of(&top[..20]), want[..20].iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>());
        // The fleet view sent on over the wire once more.
        let again = ContentSketch::decode(&fleet.encode()).unwrap();
        assert!(recall(&want, &again.top(100)) >= 98, "re-encoded recall {}", recall(&want, &again.top(100)));
        assert_bounds_hold(&again, &exact);

        // Five region coordinators merging 20 members each, then each other's encoded sketches:
        // every region view passes through the 107-key wire limit, so keys near rank 100 that
        // are just below a region's top 107 lose that region's count. The bounds still hold.
        let mut regions: Vec<ContentSketch> = (0..5).map(|_| ContentSketch::new()).collect();
        for (node, sketch) in received.iter().enumerate() {
            regions[node % 5].merge(sketch);
        }
        let mut hierarchical = ContentSketch::new();
        for region in &regions {
            let bytes = region.encode();
            assert!(bytes.len() <= MAX_SKETCH_BYTES);
            hierarchical.merge(&ContentSketch::decode(&bytes).unwrap());
        }
        assert_bounds_hold(&hierarchical, &exact);
        let top = hierarchical.top(100);
        assert!(recall(&want, &top) >= 85, "two-level recall {}", recall(&want, &top));
        assert_eq!(keys_of(&top[..20]), want[..20].iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>());
    }

    #[test]
    fn trimming_keeps_the_heaviest_keys_and_valid_bounds() {
        let mut sketch = ContentSketch::new();
        let mut exact = HashMap::new();
        for i in 0..300 {
            let count = 1_000 - i as u64 * 3;
            sketch.record(&wide_key(i), count).unwrap();
            exact.insert(wide_key(i), count);
        }
        let bytes = sketch.encode();
        assert_eq!(bytes.len(), 32 + 107 * 76);
        // The library reads the trimmed image directly too.
        let raw = FrequentItemsSketch::<String>::deserialize(&bytes).unwrap();
        assert_eq!(raw.num_active_items(), 107);
        let decoded = ContentSketch::decode(&bytes).unwrap();
        let want: Vec<String> = (0..107).map(wide_key).collect();
        assert_eq!(decoded.top(usize::MAX).into_iter().map(|row| row.key).collect::<Vec<_>>(), want);
        // The heaviest key left out had 1000 - 107 * 3.
        assert_eq!(decoded.maximum_error(), 1_000 - 107 * 3);
        assert_eq!(decoded.top(1)[0].lower_bound, 1_000);
        assert_bounds_hold(&decoded, &exact);
        // Short keys are not trimmed: the image is the library's own.
        let small = sketch_of(&[("a", 3), ("b", 1)]);
        assert_eq!(small.encode(), small.inner.serialize());
        assert_eq!(ContentSketch::decode(&small.encode()).unwrap().top(5), small.top(5));
        assert!(ContentSketch::decode(&ContentSketch::new().encode()).unwrap().is_empty());
    }

    fn valid_image() -> Vec<u8> {
        sketch_of(&[("alpha", 30), ("beta", 20), ("gamma", 10)]).encode()
    }

    /// A non-empty image built by hand: header fields, counts and keys.
    fn image(lg_max: u8, lg_cur: u8, weight: u64, offset: u64, items: &[(&[u8], u64)]) -> Vec<u8> {
        let mut out = vec![PREAMBLE_LONGS_NONEMPTY, SERIAL_VERSION, FAMILY_FREQUENCY, lg_max, lg_cur, 0, 0, 0];
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&weight.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        for (_, count) in items {
            out.extend_from_slice(&count.to_le_bytes());
        }
        for (key, _) in items {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
        }
        out
    }

    #[test]
    fn decode_refuses_truncated_garbage_oversized_and_hostile_images() {
        let good = valid_image();
        assert!(ContentSketch::decode(&good).is_ok());
        for len in 0..good.len() {
            assert!(ContentSketch::decode(&good[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(ContentSketch::decode(&trailing), Err(ContentError::Malformed(_))));
        assert!(ContentSketch::decode(b"definitely not a sketch").is_err());
        assert!(ContentSketch::decode(&[0xFF; 64]).is_err());
        let oversized = vec![0u8; MAX_SKETCH_BYTES + 1];
        assert_eq!(ContentSketch::decode(&oversized).err(), Some(ContentError::TooLarge { len: MAX_SKETCH_BYTES + 1 }));

        // The hand-made image is accepted when it is consistent...
        let ok = image(11, 3, 10, 2, &[(b"a", 5), (b"b", 3)]);
        let sketch = ContentSketch::decode(&ok).unwrap();
        assert_eq!(sketch.top(1)[0], KeyEstimate { key: "a".into(), estimate: 7, lower_bound: 5, upper_bound: 7 });
        // ...including from a sender with another map size.
        assert!(ContentSketch::decode(&image(4, 3, 10, 2, &[(b"a", 5), (b"b", 3)])).is_ok());
        // A table of 2^30 slots would make the library allocate tens of GiB before reading items.
        assert!(matches!(ContentSketch::decode(&image(30, 30, 10, 0, &[])), Err(ContentError::Malformed(_))));
        assert!(ContentSketch::decode(&image(31, 3, 10, 0, &[])).is_err());
        // Maximum error beyond the weight would overflow estimates and merges.
        assert!(ContentSketch::decode(&image(11, 3, 10, u64::MAX, &[(b"a", 5)])).is_err());
        assert!(ContentSketch::decode(&image(11, 3, 10, 6, &[(b"a", 5)])).is_err());
        assert!(ContentSketch::decode(&image(11, 3, u64::MAX, 0, &[(b"a", u64::MAX), (b"b", 1)])).is_err());
        assert!(ContentSketch::decode(&image(11, 3, 0, 0, &[])).is_err());
        assert!(ContentSketch::decode(&image(11, 3, 10, 0, &[(b"a", 0)])).is_err());
        assert!(ContentSketch::decode(&image(11, 3, 10, 0, &[(b"a", 2), (b"a", 3)])).is_err());
        assert!(ContentSketch::decode(&image(11, 3, 10, 0, &[(b"x"[..0].as_ref(), 2)])).is_err());
        // More items than the declared table holds.
        let many: Vec<(Vec<u8>, u64)> = (0..7).map(|i| (vec![b'a' + i], 1)).collect();
        let many: Vec<(&[u8], u64)> = many.iter().map(|(key, count)| (key.as_slice(), *count)).collect();
        assert!(ContentSketch::decode(&image(11, 3, 10, 0, &many)).is_err());
        // Keys breaking the rules.
        assert_eq!(
            ContentSketch::decode(&image(11, 3, 10, 0, &[(b"a\nb", 2)])).err(),
            Some(ContentError::KeyControlChar)
        );
        let long = vec![b'k'; MAX_KEY_BYTES + 1];
        assert_eq!(
            ContentSketch::decode(&image(11, 3, 10, 0, &[(&long, 2)])).err(),
            Some(ContentError::KeyTooLong { len: MAX_KEY_BYTES + 1 })
        );
        assert!(ContentSketch::decode(&image(11, 3, 10, 0, &[(&[0xC3, 0x28], 2)])).is_err());
        // A key length pointing past the end.
        let mut bad_len = image(11, 3, 10, 0, &[(b"abc", 2)]);
        let at = bad_len.len() - 7;
        bad_len[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ContentSketch::decode(&bad_len).is_err());
        // Empty images: flags must agree and nothing may follow.
        let empty = ContentSketch::new().encode();
        assert_eq!(empty.len(), 8);
        let mut flagless = empty.clone();
        flagless[5] = 0;
        assert!(ContentSketch::decode(&flagless).is_err());
        let mut longer = empty.clone();
        longer.extend_from_slice(&[0; 24]);
        assert!(ContentSketch::decode(&longer).is_err());
        // Another family (a theta sketch id) and another serial version.
        let mut family = good.clone();
        family[2] = 3;
        assert!(ContentSketch::decode(&family).is_err());
        let mut version = good.clone();
        version[1] = 2;
        assert!(ContentSketch::decode(&version).is_err());
    }

    #[test]
    fn interval_sketch_closes_intervals_as_time_passes() {
        let mut windows = IntervalSketch::new(1_000);
        assert_eq!(windows.interval_ms(), 1_000);
        windows.record(100, "a", 1).unwrap();
        windows.record(999, "a", 1).unwrap();
        assert!(windows.take_closed(999).is_none());
        let (start, sketch) = windows.take_closed(1_000).unwrap();
        assert_eq!(start, 0);
        assert_eq!(sketch.top(1)[0].estimate, 2);
        assert!(windows.take_closed(5_000).is_none());

        // A record in a later interval closes the current one.
        windows.record(5_500, "b", 3).unwrap();
        windows.record(6_200, "c", 4).unwrap();
        // A late record counts in the current interval.
        windows.record(5_900, "c", 1).unwrap();
        let (start, sketch) = windows.take_closed(6_300).unwrap();
        assert_eq!((start, keys_of(&sketch.top(5))), (5_000, vec!["b"]));
        assert!(windows.take_closed(6_999).is_none());
        let (start, sketch) = windows.take_closed(7_000).unwrap();
        assert_eq!((start, sketch.top(1)[0].estimate), (6_000, 5));

        // A refused key does not close the interval; empty intervals are never handed out.
        windows.record(8_000, "d", 0).unwrap();
        assert_eq!(windows.record(9_000, "", 1), Err(ContentError::EmptyKey));
        assert!(windows.take_closed(20_000).is_none());

        // Closed intervals nobody takes are bounded.
        for i in 0..10u64 {
            windows.record(30_000 + i * 1_000, "e", 1).unwrap();
        }
        let taken: Vec<u64> = std::iter::from_fn(|| windows.take_closed(50_000)).map(|(start, _)| start).collect();
        assert_eq!(taken, [36_000, 37_000, 38_000, 39_000]);
        assert_eq!(IntervalSketch::new(0).interval_ms(), 1);
    }

    fn config() -> ViralConfig {
        ViralConfig { max_hints: 100, ..ViralConfig::default() }
    }

    /// Ten steady keys at 200/s (one sketch per 1 s interval) plus `extra` counts.
    fn interval(extra: &[(&str, u64)]) -> ContentSketch {
        let mut sketch = ContentSketch::new();
        for i in 0..10 {
            sketch.record(&format!("steady-{i}"), 200).unwrap();
        }
        for (key, count) in extra {
            sketch.record(key, *count).unwrap();
        }
        sketch
    }

    #[test]
    fn a_key_jumping_100x_becomes_a_hint_in_the_first_interval_it_crosses() {
        let mut detector = ViralDetector::new(config());
        for i in 0..12u64 {
            detector.observe(i * 1_000, &interval(&[("post/42", 2), ("slow-riser", 100 + 5 * i)]));
            assert!(detector.hints(i * 1_000 + 1_000).is_empty(), "interval {i}");
        }
        // 2/s -> 200/s.
        detector.observe(12_000, &interval(&[("post/42", 200), ("slow-riser", 170)]));
        let hints = detector.hints(13_000);
        assert_eq!(hints.len(), 1, "{hints:?}");
        let hint = &hints[0];
        assert_eq!(hint.key, "post/42");
        assert_eq!(hint.rate_per_s, 200.0);
        assert_eq!(hint.growth, 100.0);
        assert_eq!((hint.since_ms, hint.last_seen_ms), (12_000, 13_000));
        assert_eq!(detector.top(3)[0].key, "post/42");
        assert_eq!(detector.top(100).len(), 12);
    }

    #[test]
    fn a_seeded_detector_hints_listed_keys_at_once_and_unknown_keys_after_a_few_intervals() {
        let mut previous = ViralDetector::new(config());
        for i in 0..12u64 {
            previous.observe(i * 1_000, &interval(&[("post/7", 2)]));
        }
        // A new coordinator starts from the previous one's published top and hints.
        let mut detector = ViralDetector::new(config());
        assert!(!detector.is_warm());
        detector.seed(11_000, &previous.top(100), &previous.hints(12_000));
        assert!(detector.is_warm());
        detector.observe(12_000, &interval(&[("post/7", 300), ("never-seen", 300)]));
        let keys: Vec<String> = detector.hints(13_000).into_iter().map(|h| h.key).collect();
        assert_eq!(keys, ["post/7"], "a listed key's baseline is known; an unlisted one's is not");
        detector.observe(13_000, &interval(&[("post/7", 300), ("never-seen", 300)]));
        detector.observe(14_000, &interval(&[("post/7", 300), ("never-seen", 300)]));
        assert_eq!(detector.hints(15_000).len(), 1, "steady at 300/s for the intervals it was watched");
        detector.observe(15_000, &interval(&[("post/7", 300), ("never-seen", 300), ("late-riser", 300)]));
        detector.observe(16_000, &interval(&[("post/7", 300), ("never-seen", 300)]));
        detector.observe(17_000, &interval(&[("post/7", 300), ("never-seen", 300)]));
        detector.observe(18_000, &interval(&[("post/7", 300), ("never-seen", 300), ("late-riser", 3_000)]));
        let keys: Vec<String> = detector.hints(19_000).into_iter().map(|h| h.key).collect();
        assert_eq!(keys, ["late-riser", "post/7"], "known for {MIN_KNOWN_INTERVALS} intervals, it can be hinted");
    }

    #[test]
    fn no_hints_before_the_baseline_fills_nor_below_the_minimum_rate() {
        let mut detector = ViralDetector::new(config());
        // Popular from the start: no baseline yet, so no hint.
        for i in 0..10u64 {
            detector.observe(i * 1_000, &interval(&[("new-but-steady", 500)]));
        }
        assert!(detector.hints(10_000).is_empty());
        // Growth of 40x but only 40/s: below the 50/s minimum.
        detector.observe(10_000, &interval(&[("new-but-steady", 500), ("quiet", 40)]));
        assert!(detector.hints(11_000).is_empty());
    }

    #[test]
    fn hints_stay_while_hot_then_expire_after_the_ttl() {
        let config = ViralConfig { hint_ttl_ms: 5_000, ..config() };
        let mut detector = ViralDetector::new(config);
        for i in 0..10u64 {
            detector.observe(i * 1_000, &interval(&[]));
        }
        // Viral for 20 intervals: the baseline catches up, but the hint stays while the rate holds.
        for i in 10..30u64 {
            detector.observe(i * 1_000, &interval(&[("bride-video", 300)]));
        }
        let hints = detector.hints(30_000);
        assert_eq!(hints.len(), 1);
        assert_eq!((hints[0].since_ms, hints[0].last_seen_ms), (10_000, 30_000));
        assert_eq!(hints[0].growth, 300.0);
        // Then it cools down below the minimum rate.
        detector.observe(30_000, &interval(&[("bride-video", 10)]));
        assert_eq!(detector.hints(34_999).len(), 1);
        assert!(detector.hints(35_000).is_empty());
        // Observing later intervals forgets it too.
        detector.observe(36_000, &interval(&[]));
        assert!(detector.hints(30_000).is_empty());
    }

    #[test]
    fn max_hints_keeps_the_hottest() {
        let mut detector = ViralDetector::new(ViralConfig { max_hints: 3, ..config() });
        for i in 0..10u64 {
            detector.observe(i * 1_000, &interval(&[]));
        }
        detector.observe(10_000, &interval(&[("v1", 100), ("v2", 500), ("v3", 300), ("v4", 400), ("v5", 200)]));
        let hints = detector.hints(11_000);
        assert_eq!(hints.iter().map(|hint| hint.key.as_str()).collect::<Vec<_>>(), ["v2", "v4", "v3"]);
        // A later, hotter key displaces the coldest.
        detector.observe(11_000, &interval(&[("v6", 1_000)]));
        let hints = detector.hints(12_000);
        assert_eq!(hints.iter().map(|hint| hint.key.as_str()).collect::<Vec<_>>(), ["v6", "v2", "v4"]);
    }

    #[test]
    fn stale_intervals_are_ignored() {
        let mut detector = ViralDetector::new(config());
        detector.observe(5_000, &interval(&[("a", 1)]));
        detector.observe(5_000, &interval(&[("b", 1_000)]));
        detector.observe(4_000, &interval(&[("c", 1_000)]));
        assert!(detector.top(100).iter().all(|row| row.key != "b" && row.key != "c"));
    }

    #[test]
    fn config_validation_and_sanitising() {
        assert_eq!(ViralConfig::default().validate(), Ok(()));
        let bad = [
            ViralConfig { interval_ms: 0, ..ViralConfig::default() },
            ViralConfig { min_rate_per_s: f64::NAN, ..ViralConfig::default() },
            ViralConfig { min_rate_per_s: -1.0, ..ViralConfig::default() },
            ViralConfig { growth_factor: 0.5, ..ViralConfig::default() },
            ViralConfig { growth_factor: f64::INFINITY, ..ViralConfig::default() },
            ViralConfig { baseline_intervals: 0, ..ViralConfig::default() },
            ViralConfig { baseline_intervals: MAX_BASELINE_INTERVALS + 1, ..ViralConfig::default() },
            ViralConfig { hint_ttl_ms: 0, ..ViralConfig::default() },
            ViralConfig { max_hints: 0, ..ViralConfig::default() },
        ];
        for config in bad {
            assert!(matches!(config.validate(), Err(ContentError::InvalidConfig(_))), "{config:?}");
            // The detector still works on whatever it is given.
            let mut detector = ViralDetector::new(config);
            for i in 0..3u64 {
                detector.observe(i * 1_000, &interval(&[("x", 1_000 * i)]));
            }
            let _ = detector.hints(3_000);
        }
    }

    #[test]
    fn hints_serialize() {
        let hint = CacheHint { key: "k".into(), rate_per_s: 1.5, growth: 3.0, since_ms: 1, last_seen_ms: 2 };
        let text = toml::to_string(&hint).unwrap();
        assert!(text.contains("key = \"k\"") && text.contains("rate_per_s = 1.5"), "{text}");
        let row = KeyEstimate { key: "k".into(), estimate: 3, lower_bound: 2, upper_bound: 3 };
        assert!(toml::to_string(&row).unwrap().contains("lower_bound = 2"));
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,4}",
            "[a-z/0-9]{40,64}",
            proptest::sample::select(vec!["hot".to_string(), "warm".to_string(), "wedding/ü".to_string()]),
        ]
    }

    proptest! {
        #[test]
        fn decode_of_encode_preserves_the_top(
            events in proptest::collection::vec((key_strategy(), 1u64..1_000), 0..400),
        ) {
            let mut sketch = ContentSketch::new();
            for (key, count) in &events {
                sketch.record(key, *count).unwrap();
            }
            let bytes = sketch.encode();
            prop_assert!(bytes.len() <= MAX_SKETCH_BYTES);
            let decoded = ContentSketch::decode(&bytes).unwrap();
            prop_assert_eq!(decoded.total_weight(), sketch.total_weight());
            let original = sketch.top(usize::MAX);
            let after = decoded.top(usize::MAX);
            if bytes == sketch.inner.serialize() {
                prop_assert_eq!(after, original);
            } else {
                // Trimmed: the heaviest keys are kept with their counts, in the same order.
                let by_count: HashMap<&str, u64> = original.iter().map(|row| (row.key.as_str(), row.lower_bound)).collect();
                prop_assert!(after.len() >= 100);
                let min_kept = after.iter().map(|row| row.lower_bound).min().unwrap_or(0);
                for row in &after {
                    prop_assert_eq!(Some(row.lower_bound), by_count.get(row.key.as_str()).copied());
                }
                for row in original.iter().filter(|row| row.lower_bound > min_kept) {
                    prop_assert!(after.iter().any(|kept| kept.key == row.key), "{} dropped", row.key);
                }
                for (a, b) in after.iter().zip(after.iter().skip(1)) {
                    prop_assert!(a.lower_bound >= b.lower_bound);
                }
            }
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..9_000)) {
            if let Ok(sketch) = ContentSketch::decode(&bytes) {
                prop_assert!(sketch.encode().len() <= MAX_SKETCH_BYTES);
            }
        }

        #[test]
        fn decode_never_panics_on_damaged_images(
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<proptest::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = sketch_of(&[("alpha", 30), ("beta", 20), ("gamma", 10), ("delta", 5)]).encode();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Ok(sketch) = ContentSketch::decode(&bytes) {
                let again = sketch.encode();
                prop_assert!(again.len() <= MAX_SKETCH_BYTES);
                let mut merged = sketch.clone();
                merged.merge(&sketch);
                let _ = merged.top(10);
                prop_assert!(ContentSketch::decode(&again).is_ok());
            }
        }
    }
}
