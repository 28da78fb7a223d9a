//! growth-outside-heap: RSS grows, and one kind of mapping outside the
//! heap accounts for most of it: thread stacks (threads that never exit),
//! other anonymous memory (an allocator or runtime of its own, mmap'd
//! buffers), mapped files, or loaded objects.

use super::super::evidence::Evidence;
use super::super::thresholds::{CONFIDENCE_OUTSIDE_HEAP, EXPLAINING_SHARE};
use super::super::Finding;
use super::{bytes, finding, Rule};
use crate::memory::PartKind;

pub struct GrowthOutsideHeap;

const ID: &str = "growth-outside-heap";

/// What growth of each part means, and its fix.
fn meaning(kind: PartKind, new_mappings: i64) -> (String, &'static str) {
    match kind {
        PartKind::ThreadStacks => (
            format!("{new_mappings} more thread stacks: threads are started and never exit"),
            "join the threads you start, or run the work on a bounded pool (tokio's blocking pool, rayon); look for a thread spawned per request or per connection that waits forever",
        ),
        PartKind::OtherAnonymous => (
            "anonymous memory outside the heap and stacks grows: an allocator or runtime of its own (a C library's pool, an interpreter), or mmap'd buffers never unmapped".to_string(),
            "find the growing anonymous mappings (leakscope run --memory, /debug/leakscope/memory) and who maps them; a C library's allocator has its own statistics and limits",
        ),
        PartKind::FileBacked => (
            "mapped files grow: files are mapped and never unmapped (or a memory-mapped cache grows)".to_string(),
            "unmap files when done with them, or bound the mapped cache",
        ),
        _ => (
            "loaded objects grow: code is loaded and never unloaded".to_string(),
            "dlclose what you dlopen (plugins, generated code), or load each object once",
        ),
    }
}

impl Rule for GrowthOutsideHeap {
    fn scenario(&self) -> &'static str {
        ID
    }

    fn check(&self, ev: &Evidence) -> Vec<Finding> {
        let Some(g) = &ev.memory else {
            return Vec::new();
        };
        if !g.rss_grows() {
            return Vec::new();
        }
        let rss = g.rss_delta();
        let Some((kind, delta)) = [
            PartKind::ThreadStacks,
            PartKind::OtherAnonymous,
            PartKind::FileBacked,
            PartKind::Code,
            PartKind::Data,
        ]
        .into_iter()
        .map(|k| (k, g.delta(k)))
        .max_by_key(|&(_, d)| d) else {
            return Vec::new();
        };
        if (delta as f64) < EXPLAINING_SHARE * rss as f64 {
            return Vec::new();
        }
        let (what, fix) = meaning(kind, g.mappings_delta(kind));
        let mut f = finding(ID, CONFIDENCE_OUTSIDE_HEAP);
        f.title = format!("memory grows outside the heap: {}", kind.label());
        f.evidence.push(format!(
            "RSS grew {} -> {} in {:.1} s; {} grew by {} ({} -> {}), the heap's blocks in use by {}",
            bytes(g.first.rss as f64),
            bytes(g.last.rss as f64),
            g.seconds,
            kind.label(),
            bytes(delta as f64),
            bytes(g.first.part(kind) as f64),
            bytes(g.last.part(kind) as f64),
            bytes(g.delta(PartKind::HeapInUse) as f64)
        ));
        f.evidence.push(what);
        f.fix = fix.to_string();
        f.claims.push(format!("memory: {}", kind.label()));
        vec![f]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::rules::test_support::*;
    use crate::memory::PartKind::{HeapFree, HeapInUse, OtherAnonymous, ThreadStacks};

    const MIB: u64 = 1 << 20;

    fn flat_heap() -> Run {
        Run::new(|_, b| b.stack(&["app::work", "app::main"], 1000, 4096))
    }

    #[test]
    fn thread_stacks_that_grow_are_threads_that_never_exit() {
        let memory = memory_run(|t| {
            (
                vec![
                    (HeapInUse, 40 * MIB, 1),
                    (HeapFree, 5 * MIB, 1),
                    (ThreadStacks, (1 + 5 * t) * MIB, 4 + 20 * t as u32),
                    (OtherAnonymous, 10 * MIB, 3),
                ],
                MIB,
            )
        });
        let found = GrowthOutsideHeap.check(&flat_heap().evidence().with_memory(&memory));
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.title, "memory grows outside the heap: thread stacks");
        assert!(
            f.evidence[1].contains("more thread stacks: threads are started and never exit"),
            "{f:#?}"
        );
        assert!(f.fix.contains("join the threads"), "{}", f.fix);
    }

    #[test]
    fn anonymous_memory_outside_the_heap_is_named() {
        let memory = memory_run(|t| {
            (
                vec![
                    (HeapInUse, 40 * MIB, 1),
                    (OtherAnonymous, (10 + 10 * t) * MIB, 3 + t as u32),
                ],
                0,
            )
        });
        let f = GrowthOutsideHeap.check(&flat_heap().evidence().with_memory(&memory));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].title.ends_with("other anonymous mappings"),
            "{:?}",
            f[0].title
        );
        // Growth of the heap itself is not this rule's.
        let memory = memory_run(|t| (vec![(HeapInUse, (40 + 10 * t) * MIB, 1)], 0));
        assert!(GrowthOutsideHeap
            .check(&flat_heap().evidence().with_memory(&memory))
            .is_empty());
    }
}
