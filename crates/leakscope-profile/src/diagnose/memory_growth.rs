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
    /// The program's live heap at each point from `first` to `last`.
    pub live: Vec<i64>,
    pub seconds: f64,
}

/// The program's live heap at each point: its live blocks when every point
/// knows them, else the chunks in use (one measure for all points).
fn live_heap(points: &[Breakdown]) -> Vec<i64> {
    if points.iter().all(|b| b.heap.live.is_some()) {
        points
            .iter()
            .map(|b| b.heap.live.map_or(0, |l| clamp_i64(l.amount.bytes)))
            .collect()
    } else {
        points
            .iter()
            .map(|b| clamp_i64(b.part(PartKind::HeapInUse)))
            .collect()
    }
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
            live: live_heap(&memory[start..=end]),
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

    /// How the program's live heap changed. With four points or more, from
    /// the lower of the first two to the lower of the last two: a point
    /// taken while a burst of work had its blocks allocated (a request in
    /// flight, a batch being built) is not growth, and steady growth shows
    /// in both of the later points.
    pub fn live_delta(&self) -> i64 {
        match self.live.as_slice() {
            [a, b, .., y, z] => (*y).min(*z) - (*a).min(*b),
            [a, .., z] => z - a,
            _ => 0,
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
