//! Pools and the wedding calendar, as the engine sees them (validated, typed).

use crate::TrafficClass;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Price of one unit for one hour, by purchase option.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitCost {
    /// Reserved (committed) capacity.
    pub reserved: f64,
    /// On-demand capacity.
    pub on_demand: f64,
    /// Spot (pre-emptible) capacity.
    pub spot: f64,
}

impl Default for UnitCost {
    fn default() -> Self {
        UnitCost { reserved: 0.06, on_demand: 0.10, spot: 0.03 }
    }
}

/// A pool the engine decides for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSpec {
    /// Unique name.
    pub name: String,
    /// Region it runs in.
    pub region: String,
    /// Fewest units.
    pub min: u32,
    /// Most units.
    pub max: u32,
    /// Requests/s one unit serves at full utilization.
    pub capacity_per_unit: f64,
    /// Requests/s of each class (in [`TrafficClass::ALL`] order) one unit serves at full
    /// utilization, where a class costs more or less than the pool's average request.
    pub class_capacity: [f64; 5],
    /// Utilization to aim for (0, 1].
    pub target_utilization: f64,
    /// Traffic classes the pool serves.
    pub classes: Vec<TrafficClass>,
    /// Time from asking for a unit to its serving traffic.
    #[serde(with = "humantime_serde")]
    pub provisioning_delay: Duration,
    /// Fewest units while a wedding is active in the region.
    pub protected_floor: u32,
    /// IANA time zone of the pool's region (seasons and the weekly profile are local).
    pub time_zone: String,
    /// Unit prices in the home region.
    pub cost: UnitCost,
    /// Other regions the pool may run in, with their prices. The engine places capacity in the
    /// cheapest allowed region, and never moves it away from a protected home region.
    pub placements: Vec<Placement>,
    /// Units to assume the pool runs until a size is observed
    /// ([`crate::engine::Engine::handle_pool_state`]). `None`: the engine decides nothing for
    /// the pool until its size is observed (it would otherwise "decide" from a size it made up).
    pub assume_size: Option<u32>,
}

/// A region a pool may also run in, and its prices there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// The region.
    pub region: String,
    /// Unit prices there.
    #[serde(default)]
    pub cost: UnitCost,
}

impl PoolSpec {
    /// Requests/s one unit should carry (capacity × target utilization).
    pub fn target_load_per_unit(&self) -> f64 {
        self.capacity_per_unit * self.target_utilization
    }

    /// How many "average requests" of capacity one request of `class` takes.
    pub fn class_weight(&self, class: TrafficClass) -> f64 {
        let i = TrafficClass::ALL.iter().position(|c| *c == class).unwrap_or(0);
        let cap = self.class_capacity[i];
        if cap.is_finite() && cap > 0.0 { self.capacity_per_unit / cap } else { 1.0 }
    }

    /// Whether the pool serves `class`.
    pub fn serves(&self, class: TrafficClass) -> bool {
        self.classes.contains(&class)
    }
}

/// A wedding on the calendar. Times are Unix milliseconds (UTC); the time zone is kept for
/// region-local reasoning (seasons, plugins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wedding {
    /// Unique id.
    pub id: String,
    /// Region whose pools it protects.
    pub region: String,
    /// IANA time zone of the venue, e.g. `Europe/London`.
    pub time_zone: String,
    /// Start of the day's events, Unix ms.
    pub start_unix_ms: i64,
    /// End of the day's events, Unix ms.
    pub end_unix_ms: i64,
    /// Guests and vendors expected.
    pub guests: u32,
}

/// The longest a wedding may last.
pub const MAX_WEDDING_MS: i64 = 7 * 86_400_000;

/// Earliest start accepted: 2000-01-01T00:00:00Z (Unix ms).
pub const EARLIEST_WEDDING_MS: i64 = 946_684_800_000;

/// Latest end accepted: 2200-01-01T00:00:00Z (Unix ms).
pub const LATEST_WEDDING_MS: i64 = 7_258_118_400_000;

/// Most guests a wedding may declare.
pub const MAX_GUESTS: u32 = 100_000;

/// Most weddings the engine keeps at once: past it a new one is refused (a replaced one is not).
pub const MAX_WEDDINGS: usize = 10_000;

/// What is wrong with a wedding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeddingError {
    /// The id is empty, too long or holds other characters than identifiers may.
    #[error("id {0:?} must be 1 to 64 letters, digits, '-', '_', '.' or ':'")]
    BadId(String),
    /// The region is empty.
    #[error("region is empty")]
    EmptyRegion,
    /// The region is too long or holds other characters than identifiers may.
    #[error("region {0:?} must be 1 to 32 letters, digits, '-', '_' or '.'")]
    BadRegion(String),
    /// The time zone is not in the tz database.
    #[error("time zone {0:?} is not in the tz database (e.g. \"Europe/London\")")]
    UnknownTimeZone(String),
    /// A time is outside the years 2000 to 2199.
    #[error("{field} ({value}) is outside 2000-01-01 to 2200-01-01 (Unix ms)")]
    OutOfRange {
        /// `start_unix_ms` or `end_unix_ms`.
        field: &'static str,
        /// The value.
        value: i64,
    },
    /// More guests than [`MAX_GUESTS`].
    #[error("guests ({0}) is more than {MAX_GUESTS}")]
    TooManyGuests(u32),
    /// The engine already keeps [`MAX_WEDDINGS`].
    #[error("the calendar already holds {MAX_WEDDINGS} weddings; remove past ones first")]
    CalendarFull,
    /// It ends before it starts.
    #[error("end ({end}) is not after start ({start})")]
    EndNotAfterStart {
        /// Start, Unix ms.
        start: i64,
        /// End, Unix ms.
        end: i64,
    },
    /// It lasts longer than [`MAX_WEDDING_MS`].
    #[error("lasts more than 7 days")]
    TooLong,
}

impl Wedding {
    /// Checks the fields; returns what is wrong.
    pub fn validate(&self) -> Result<(), WeddingError> {
        // Identifiers end up in log lines, metrics and audit entries: no spaces, newlines or
        // control characters that could forge a line there.
        let identifier = |v: &str, max: usize, extra: &[u8]| {
            !v.is_empty()
                && v.len() <= max
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || extra.contains(&b))
        };
        if !identifier(&self.id, 64, b":") {
            return Err(WeddingError::BadId(self.id.clone()));
        }
        if self.region.is_empty() {
            return Err(WeddingError::EmptyRegion);
        }
        if !identifier(&self.region, 32, b"") {
            return Err(WeddingError::BadRegion(self.region.clone()));
        }
        if self.end_unix_ms <= self.start_unix_ms {
            return Err(WeddingError::EndNotAfterStart { start: self.start_unix_ms, end: self.end_unix_ms });
        }
        // Checked: i64::MIN..i64::MAX must not wrap into a short wedding.
        if self.end_unix_ms.checked_sub(self.start_unix_ms).is_none_or(|length| length > MAX_WEDDING_MS) {
            return Err(WeddingError::TooLong);
        }
        if self.time_zone.len() > 64 || jiff::tz::TimeZone::get(&self.time_zone).is_err() {
            return Err(WeddingError::UnknownTimeZone(self.time_zone.chars().take(64).collect()));
        }
        for (field, value) in [("start_unix_ms", self.start_unix_ms), ("end_unix_ms", self.end_unix_ms)] {
            if !(EARLIEST_WEDDING_MS..=LATEST_WEDDING_MS).contains(&value) {
                return Err(WeddingError::OutOfRange { field, value });
            }
        }
        if self.guests > MAX_GUESTS {
            return Err(WeddingError::TooManyGuests(self.guests));
        }
        Ok(())
    }

    /// Whether it is active at `wall_ms`: from `lead` before its start until `trail` after its end.
    pub fn is_active(&self, wall_ms: i64, lead: Duration, trail: Duration) -> bool {
        let lead = i64::try_from(lead.as_millis()).unwrap_or(i64::MAX);
        let trail = i64::try_from(trail.as_millis()).unwrap_or(i64::MAX);
        wall_ms >= self.start_unix_ms.saturating_sub(lead) && wall_ms <= self.end_unix_ms.saturating_add(trail)
    }
}
