//! Row access to the round's [`PoolTable`] (the WIT sends pools as columns so that they cross
//! into the plugin in one copy per column; callers mostly think in pools).

use crate::policy::{PoolStatus, PoolTable, RegionId};

/// One pool's entries in a [`PoolTable`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolRow {
    /// Units serving now.
    pub serving: u32,
    /// Units asked for before the round.
    pub target: u32,
    /// Load estimate, requests per second.
    pub load: f64,
    /// Demand per class, requests per second, in `traffic-class` order.
    pub demand: [f64; 5],
    /// Flags.
    pub status: PoolStatus,
    /// UTC offset of the pool's region now, minutes.
    pub utc_offset_minutes: i32,
    /// Units the engine proposes.
    pub proposed: u32,
    /// Region the engine would place the capacity in.
    pub placement: RegionId,
    /// Admission per class the engine proposes, in `traffic-class` order.
    pub admission: [f64; 5],
    /// Units of `proposed` on spot.
    pub spot_units: u32,
}

impl PoolTable {
    /// An empty table with room for `pools` pools.
    pub fn with_capacity(pools: usize) -> PoolTable {
        PoolTable {
            serving: Vec::with_capacity(pools),
            target: Vec::with_capacity(pools),
            load: Vec::with_capacity(pools),
            demand: Vec::with_capacity(pools * 5),
            status: Vec::with_capacity(pools),
            utc_offset_minutes: Vec::with_capacity(pools),
            proposed: Vec::with_capacity(pools),
            placement: Vec::with_capacity(pools),
            admission: Vec::with_capacity(pools * 5),
            spot_units: Vec::with_capacity(pools),
        }
    }

    /// Pools in the table.
    pub fn len(&self) -> usize {
        self.serving.len()
    }

    /// No pools.
    pub fn is_empty(&self) -> bool {
        self.serving.is_empty()
    }

    /// Empties the table, keeping its allocations for the next round.
    pub fn clear(&mut self) {
        self.serving.clear();
        self.target.clear();
        self.load.clear();
        self.demand.clear();
        self.status.clear();
        self.utc_offset_minutes.clear();
        self.proposed.clear();
        self.placement.clear();
        self.admission.clear();
        self.spot_units.clear();
    }

    /// Appends the next pool (pool ids are positions: push pools in id order).
    pub fn push(&mut self, row: &PoolRow) {
        self.serving.push(row.serving);
        self.target.push(row.target);
        self.load.push(row.load);
        self.demand.extend_from_slice(&row.demand);
        self.status.push(row.status);
        self.utc_offset_minutes.push(row.utc_offset_minutes);
        self.proposed.push(row.proposed);
        self.placement.push(row.placement);
        self.admission.extend_from_slice(&row.admission);
        self.spot_units.push(row.spot_units);
    }

    /// Pool `i`'s entries, when it is in the table.
    pub fn row(&self, i: usize) -> Option<PoolRow> {
        let five = |column: &[f64]| -> Option<[f64; 5]> { column.get(i * 5..i * 5 + 5)?.try_into().ok() };
        Some(PoolRow {
            serving: *self.serving.get(i)?,
            target: *self.target.get(i)?,
            load: *self.load.get(i)?,
            demand: five(&self.demand)?,
            status: *self.status.get(i)?,
            utc_offset_minutes: *self.utc_offset_minutes.get(i)?,
            proposed: *self.proposed.get(i)?,
            placement: *self.placement.get(i)?,
            admission: five(&self.admission)?,
            spot_units: *self.spot_units.get(i)?,
        })
    }

    /// Every column has one entry per pool (five for `demand` and `admission`).
    pub fn is_consistent(&self) -> bool {
        let n = self.len();
        [
            self.target.len(),
            self.load.len(),
            self.status.len(),
            self.utc_offset_minutes.len(),
            self.proposed.len(),
            self.placement.len(),
            self.spot_units.len(),
        ]
        .iter()
        .all(|len| *len == n)
            && self.demand.len() == n * 5
            && self.admission.len() == n * 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_and_come_out() {
        let mut t = PoolTable::with_capacity(2);
        assert!(t.is_empty() && t.is_consistent());
        let a = PoolRow {
            serving: 4,
            target: 4,
            load: 300.0,
            demand: [1.0, 2.0, 3.0, 4.0, 5.0],
            status: PoolStatus::PROTECTED,
            utc_offset_minutes: 60,
            proposed: 5,
            placement: 1,
            admission: [1.0, 1.0, 0.5, 0.5, 0.0],
            spot_units: 2,
        };
        let b = PoolRow { serving: 9, status: PoolStatus::SPIKE | PoolStatus::STALE, ..a };
        t.push(&a);
        t.push(&b);
        assert_eq!((t.len(), t.row(0), t.row(1), t.row(2)), (2, Some(a), Some(b), None));
        assert!(t.is_consistent());
        t.demand.pop();
        assert!(!t.is_consistent());
        assert_eq!(t.row(1), None);
        t.clear();
        assert!(t.is_empty() && t.is_consistent());
    }
}
