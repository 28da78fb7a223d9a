//! allocator-keeps-freed-memory: RSS grows while the live heap stays flat,
//! and the growth is heap memory the allocator keeps after frees (glibc's
//! bins, thread caches, the tops of its arenas). Not a leak: the program
//! freed it. The fix is chosen from where the kept memory sits.

use super::super::evidence::Evidence;
use super::super::memory_growth::MemoryGrowth;
use super::super::thresholds::{
    CONFIDENCE_ALLOCATOR, CONFIDENCE_ALLOCATOR_BESIDE_GROWTH, EXPLAINING_SHARE, FLAT_LIVE_SHARE,
};
use super::super::Finding;
use super::{bytes, finding, Rule};
use crate::memory::{fragmentation, HeapSource, JemallocStats, PartKind};

pub struct AllocatorKeepsFreed;

const ID: &str = "allocator-keeps-freed-memory";

/// The fix that fits where the kept memory is.
fn fix_for(g: &MemoryGrowth) -> String {
    let a = &g.last.heap.allocator;
    if let Some(j) = &a.jemalloc {
        return jemalloc_fix(j);
    }
    let holes = a.free_in_bins + a.fast_bins + a.tcache;
    let arenas = a.arenas.len();
    if a.top_bytes > holes {
        format!(
            "most of it ({}) is free memory at the top of glibc's arenas, which trimming returns: call malloc_trim(0) after bursts of allocation, or lower the trim threshold (MALLOC_TRIM_THRESHOLD_=131072, or mallopt(M_TRIM_THRESHOLD))",
            bytes(a.top_bytes as f64)
        )
    } else {
        format!(
            "most of it ({}) is holes between blocks in use{}, which glibc cannot give back: set MALLOC_ARENA_MAX=2 (threads share fewer arenas and reuse each other's holes), or use jemalloc (tikv-jemallocator) whose dirty_decay_ms/muzzy_decay_ms return freed pages over time",
            bytes(holes as f64),
            if arenas > 1 {
                format!(" spread over {arenas} per-thread arenas")
            } else {
                String::new()
            }
        )
    }
}

/// jemalloc keeps freed pages until they decay (dirty, then muzzy), and
/// pages of slabs that still hold one block (`active - allocated`).
fn jemalloc_fix(j: &JemallocStats) -> String {
    let decaying = j.dirty + j.muzzy;
    let in_slabs = j.active.saturating_sub(j.allocated);
    if decaying >= in_slabs {
        format!(
            "most of it ({}) is freed pages jemalloc has not yet returned (dirty and muzzy pages, which decay over dirty_decay_ms and muzzy_decay_ms, 10 s each by default): return them sooner with _RJEM_MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0 (or MALLOC_CONF for an unprefixed jemalloc), or purge after bursts (mallctl arena.4096.purge)",
            bytes(decaying as f64)
        )
    } else {
        format!(
            "most of it ({}) is the free part of pages that still hold live blocks (slabs of one size class, mostly empty), which no decay returns: fewer arenas mix lifetimes less (narenas:1 or percpu_arena:percpu in _RJEM_MALLOC_CONF), and keeping long-lived blocks apart from short-lived ones of the same size lets slabs empty",
            bytes(in_slabs as f64)
        )
    }
}

impl Rule for AllocatorKeepsFreed {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        let Some(g) = &ev.memory else {
            return Vec::new();
        };
        let allocator = &g.last.heap.allocator;
        if allocator.from == HeapSource::None || !g.rss_grows() {
            return Vec::new();
        }
        let rss = g.rss_delta();
        let freed = g.delta(PartKind::HeapFree);
        let live = g.live_delta();
        if (freed as f64) < EXPLAINING_SHARE * rss as f64 {
            return Vec::new();
        }
        let flat = (live as f64) <= FLAT_LIVE_SHARE * rss as f64;
        if !flat && !ev.heap_grows() {
            return Vec::new();
        }
        // The live heap grows too (a leak beside the allocator's keeping).
        let beside_growth = !flat || ev.heap_grows();
        let mut f = finding(
            ID,
            if beside_growth {
                CONFIDENCE_ALLOCATOR_BESIDE_GROWTH
            } else {
                CONFIDENCE_ALLOCATOR
            },
        );
        f.evidence.push(format!(
            "RSS grew {} -> {} in {:.1} s while the program's live heap changed by {}",
            bytes(g.first.rss as f64),
            bytes(g.last.rss as f64),
            g.seconds,
            bytes(live as f64)
        ));
        let kept_by = if allocator.allocator.is_empty() {
            "the allocator"
        } else {
            allocator.allocator.as_str()
        };
        let kept = bytes(g.last.part(PartKind::HeapFree) as f64);
        f.evidence.push(match &allocator.jemalloc {
            Some(j) => format!(
                "memory {kept_by} keeps after frees grew by {} to {kept}: {} of dirty and {} of muzzy pages not yet returned, {} free in pages that still hold blocks",
                bytes(freed as f64),
                bytes(j.dirty as f64),
                bytes(j.muzzy as f64),
                bytes(j.active.saturating_sub(j.allocated) as f64)
            ),
            None => format!(
                "memory {kept_by} keeps after frees grew by {} to {kept}: {} in bins, {} in fast bins, {} in thread caches, {} at the top of its arenas",
                bytes(freed as f64),
                bytes(allocator.free_in_bins as f64),
                bytes(allocator.fast_bins as f64),
                bytes(allocator.tcache as f64),
                bytes(allocator.top_bytes as f64)
            ),
        });
        if let Some((i, worst)) = allocator
            .arenas
            .iter()
            .enumerate()
            .max_by(|a, b| fragmentation(a.1).total_cmp(&fragmentation(b.1)))
        {
            f.evidence.push(format!(
                "{} arenas; the most fragmented ({}) is {:.0}% free below its top",
                allocator.arenas.len(),
                if i == 0 {
                    "the main arena".to_string()
                } else {
                    format!("arena {i}")
                },
                fragmentation(worst) * 100.0
            ));
        }
        if beside_growth {
            f.evidence.push(
                "the live heap grows too: see the other findings for what keeps it".to_string(),
            );
        }
        f.fix = fix_for(g);
        vec![f]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;
    use crate::memory::PartKind::{Code, HeapFree, HeapInUse};

    const MIB: u64 = 1 << 20;

    /// A run whose live heap is flat (or grows by `leak` per second).
    fn heap(leak: i64) -> Run {
        Run::new(move |t, b| b.stack(&["app::work", "app::main"], 1000 + leak * t, 4096))
    }

    #[test]
    fn freed_memory_kept_in_holes_is_not_a_leak_and_the_fix_fits() {
        let run = heap(0);
        let memory = memory_run(|t| {
            (
                vec![
                    (HeapInUse, 40 * MIB, 1),
                    (HeapFree, (10 + 12 * t) * MIB, 1),
                    (Code, 20 * MIB, 9),
                ],
                MIB,
            )
        });
        let found = AllocatorKeepsFreed.check(&run.evidence().with_memory(&memory));
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.confidence, CONFIDENCE_ALLOCATOR);
        assert!(f.evidence[0].starts_with("RSS grew"), "{f:#?}");
        assert!(
            f.evidence[1].contains("glibc 2.36 keeps after frees grew by"),
            "{f:#?}"
        );
        assert!(f.fix.contains("MALLOC_ARENA_MAX=2"), "{}", f.fix);
        // The same memory at the arenas' tops: trimming returns it.
        let memory = memory_run(|t| {
            let free = (10 + 12 * t) * MIB;
            (
                vec![
                    (HeapInUse, 40 * MIB, 1),
                    (HeapFree, free, 1),
                    (Code, 20 * MIB, 9),
                ],
                free - MIB,
            )
        });
        let f = AllocatorKeepsFreed.check(&run.evidence().with_memory(&memory));
        assert!(f[0].fix.contains("malloc_trim(0)"), "{}", f[0].fix);
    }

    #[test]
    fn jemalloc_keeping_freed_pages_gets_jemallocs_fix() {
        let with_jemalloc = |dirty: u64, slack: u64| {
            let mut memory = memory_run(|t| {
                (
                    vec![(HeapInUse, 40 * MIB, 1), (HeapFree, (10 + 12 * t) * MIB, 1)],
                    0,
                )
            });
            for m in &mut memory {
                let j = JemallocStats {
                    allocated: 40 * MIB,
                    active: 40 * MIB + slack,
                    resident: 40 * MIB + m.part(HeapFree),
                    dirty,
                    ..JemallocStats::default()
                };
                m.heap.allocator = crate::memory::AllocatorHeap::from_jemalloc("5.3.0", j);
            }
            AllocatorKeepsFreed.check(&heap(0).evidence().with_memory(&memory))
        };
        let f = with_jemalloc(100 * MIB, 2 * MIB);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert!(
            f[0].evidence[1].contains("jemalloc 5.3.0 keeps after frees"),
            "{f:#?}"
        );
        assert!(f[0].evidence[1].contains("dirty"), "{f:#?}");
        assert!(f[0].fix.contains("dirty_decay_ms"), "{}", f[0].fix);
        assert!(!f[0].fix.contains("MALLOC_ARENA_MAX"), "{}", f[0].fix);
        // Kept in half-empty slabs: decay does not help.
        let f = with_jemalloc(MIB, 100 * MIB);
        assert!(f[0].fix.contains("slabs"), "{}", f[0].fix);
    }

    #[test]
    fn a_live_heap_that_grows_as_much_is_not_explained_by_the_allocator() {
        // RSS grows with the heap in use: not this rule's.
        let memory = memory_run(|t| {
            (
                vec![(HeapInUse, (40 + 12 * t) * MIB, 1), (HeapFree, 10 * MIB, 1)],
                MIB,
            )
        });
        assert!(AllocatorKeepsFreed
            .check(&heap(0).evidence().with_memory(&memory))
            .is_empty());
        // Flat RSS: nothing to explain.
        let memory = memory_run(|_| (vec![(HeapInUse, 40 * MIB, 1), (HeapFree, 10 * MIB, 1)], MIB));
        assert!(AllocatorKeepsFreed
            .check(&heap(0).evidence().with_memory(&memory))
            .is_empty());
    }

    #[test]
    fn a_burst_in_flight_at_the_last_point_is_not_live_growth() {
        // The last running point (second 7) is taken while a burst has its
        // blocks allocated: the live heap was flat at every other point.
        let memory = memory_run(|t| {
            let burst = if t == 7 { 20 * MIB } else { 0 };
            (
                vec![
                    (HeapInUse, 40 * MIB + burst, 1),
                    (HeapFree, (10 + 12 * t) * MIB, 1),
                ],
                MIB,
            )
        });
        let f = AllocatorKeepsFreed.check(&heap(0).evidence().with_memory(&memory));
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].confidence, CONFIDENCE_ALLOCATOR);
    }

    #[test]
    fn beside_a_real_leak_it_is_said_with_less_confidence() {
        let memory = memory_run(|t| {
            (
                vec![
                    (HeapInUse, (40 + 4 * t) * MIB, 1),
                    (HeapFree, (10 + 12 * t) * MIB, 1),
                ],
                MIB,
            )
        });
        let run = heap(1000);
        let f = AllocatorKeepsFreed.check(&run.evidence().with_memory(&memory));
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].confidence, CONFIDENCE_ALLOCATOR_BESIDE_GROWTH);
        assert!(f[0]
            .evidence
            .iter()
            .any(|e| e.contains("the live heap grows too")));
    }
}
