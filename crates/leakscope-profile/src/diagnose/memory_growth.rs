//! How RSS grew over a run, part by part, from the memory breakdowns
//! written beside the periodic profiles (`memory-<pid>-<n>.json`): the
//! evidence of the rules that answer "is it a leak at all?".

use crate::memory::{Breakdown, PartKind};
use crate::trend::RunPoints;
use crate::units::clamp_i64;

use super::thresholds::{MIN_RSS_GROWTH_BYTES, MIN_RSS_GROWTH_SHARE};

/// RSS and its parts over the second half of the judged points (after
/// warm-up, before exit): growth that goes on, not a start-up's (a
/// runtime's first allocations, the profiler's first symbolisation, whose
/// freed memory the allocator keeps, reach their peak early).
#[derive(Debug, Clone)]
pub struct MemoryGrowth {
    pub first: Breakdown,
    pub last: Breakdown,
    /// RSS halfway between, to tell growth that goes on from a step.
    pub middle_rss: u64,
    pub seconds: f64,
}

impl MemoryGrowth {
    /// From breakdowns in time order; `None` with fewer than three.
    pub fn of(memory: &[Breakdown]) -> Option<MemoryGrowth> {
        if memory.len() < 3 {
            return None;
        }
        let judged = RunPoints::of(memory.len()).judged();
        let end = judged.end.checked_sub(1)?;
        let start = (judged.start + end) / 2;
        let first = memory.get(start)?;
        let last = memory.get(end)?;
        let middle = memory.get((start + end) / 2)?;
        (last.time_unix_ms > first.time_unix_ms).then(|| MemoryGrowth {
            first: first.clone(),
            last: last.clone(),
            middle_rss: middle.rss,
            seconds: (last.time_unix_ms - first.time_unix_ms) as f64 / 1e3,
        })
    }

    pub fn rss_delta(&self) -> i64 {
        clamp_i64(self.last.rss) - clamp_i64(self.first.rss)
    }

    /// How one part changed.
    pub fn delta(&self, kind: PartKind) -> i64 {
        clamp_i64(self.last.part(kind)) - clamp_i64(self.first.part(kind))
    }

    /// How many more mappings one part spans.
    pub fn mappings_delta(&self, kind: PartKind) -> i64 {
        let of = |b: &Breakdown| {
            b.parts
                .iter()
                .find(|p| p.kind == kind)
                .map_or(0, |p| i64::from(p.mappings))
        };
        of(&self.last) - of(&self.first)
    }

    /// How the program's live heap changed: its live blocks when both
    /// points know them, else the chunks in use.
    pub fn live_delta(&self) -> i64 {
        match (self.first.heap.live, self.last.heap.live) {
            (Some(a), Some(b)) => clamp_i64(b.amount.bytes) - clamp_i64(a.amount.bytes),
            _ => self.delta(PartKind::HeapInUse),
        }
    }

    /// RSS grew enough to judge, and was still growing in the second half.
    pub fn rss_grows(&self) -> bool {
        let delta = self.rss_delta();
        delta >= MIN_RSS_GROWTH_BYTES
            && delta as f64 >= MIN_RSS_GROWTH_SHARE * self.first.rss as f64
            && self.last.rss > self.middle_rss
    }
}
