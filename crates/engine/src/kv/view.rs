//! The read side of the cache, for attention: one layer of one sequence as runs of rows that lie
//! contiguously in memory.

use super::pool::BlockId;
use super::store::Store;
use super::DROPPED;
use crate::kernels::heads::KvRows;

/// Read access to one layer of one sequence's cache.
pub struct SeqView<'a> {
    pub(super) table: &'a [BlockId],
    pub(super) k: &'a Store,
    pub(super) v: &'a Store,
    pub(super) layer: usize,
    pub(super) layers: usize,
    pub(super) bs: usize,
    pub(super) row: usize,
    pub window: Option<usize>,
}

impl SeqView<'_> {
    fn at(&self, pos: usize) -> usize {
        let block = self.table[pos / self.bs];
        debug_assert!(
            block != DROPPED,
            "read of a dropped block at position {pos}"
        );
        ((block as usize * self.layers + self.layer) * self.bs + pos % self.bs) * self.row
    }
    /// Floats per cached row (all KV heads).
    pub fn row(&self) -> usize {
        self.row
    }
    /// Positions `from..to` as runs that lie contiguously in memory: (first position, count,
    /// keys, values), each slice starting at the run's first row with rows `row()` apart.
    pub fn runs(
        &self,
        from: usize,
        to: usize,
    ) -> impl Iterator<Item = (usize, usize, KvRows<'_>, KvRows<'_>)> + '_ {
        let mut p = from;
        std::iter::from_fn(move || {
            if p >= to {
                return None;
            }
            let count = (self.bs - p % self.bs).min(to - p);
            let (a, len) = (self.at(p), count * self.row);
            let run = (p, count, self.k.rows(a..a + len), self.v.rows(a..a + len));
            p += count;
            Some(run)
        })
    }
    /// First position a query at `pos` may attend to.
    pub fn first_visible(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
}
