//! The memory breakdown of a process that wraps jemalloc, against ground
//! truth: blocks planted (exact bytes from full mode's table), then every
//! other one freed, so that jemalloc keeps half-empty slabs. jemalloc's own
//! statistics must split its anonymous memory into the program's blocks and
//! what it keeps after frees, and the parts must still sum to RSS.

use leakscope::memory::{HeapSource, LiveSource, PartKind};
use leakscope::{Mode, Profiler};

#[global_allocator]
static ALLOC: Profiler<tikv_jemallocator::Jemalloc> = Profiler::wrap(tikv_jemallocator::Jemalloc)
    .with_mode(Mode::Full)
    .with_jemalloc_stats();

const MIB: u64 = 1 << 20;
const BLOCKS: usize = 40_000;
/// Fills jemalloc's 1 KiB size class exactly.
const SIZE: usize = 1024;

#[test]
fn jemallocs_statistics_split_its_memory_into_blocks_and_kept_pages() {
    let before = leakscope::memory::breakdown().expect("breakdown");
    let mut blocks: Vec<Option<Box<[u8]>>> = (0..BLOCKS)
        .map(|i| Some(vec![i as u8; SIZE].into_boxed_slice()))
        .collect();
    let planted = (BLOCKS * SIZE) as u64;

    let full = leakscope::memory::breakdown().expect("breakdown");
    println!("{}", full.render());
    let a = &full.heap.allocator;
    assert_eq!(a.from, HeapSource::JemallocStats, "{a:?}");
    assert!(a.allocator.starts_with("jemalloc 5."), "{}", a.allocator);
    let j = a.jemalloc.expect("jemalloc's statistics");
    assert!(j.allocated >= planted, "{j:?}");
    assert!(
        j.resident >= j.allocated && j.active >= j.allocated,
        "{j:?}"
    );
    let live = full.heap.live.expect("full mode knows the live blocks");
    assert_eq!(live.from, LiveSource::LiveTable);
    assert!(live.amount.bytes >= planted, "{live:?}");
    // The blocks are the heap in use, not "other anonymous memory".
    let in_use = full.part(PartKind::HeapInUse);
    assert!(in_use >= planted, "in use {in_use} < planted {planted}");
    assert!(
        in_use <= j.allocated + 4 * MIB,
        "in use {in_use}, jemalloc allocated {}",
        j.allocated
    );
    assert_eq!(full.sum_of_parts(), full.rss);
    assert!(
        full.part(PartKind::Unexplained) <= full.rss / 50,
        "{}",
        full.render()
    );

    // Free every other block: the slabs stay, half empty.
    for b in blocks.iter_mut().step_by(2) {
        *b = None;
    }
    let freed = planted / 2;
    let half = leakscope::memory::breakdown().expect("breakdown");
    println!("{}", half.render());
    let j2 = half.heap.allocator.jemalloc.expect("jemalloc's statistics");
    // (Less what the first breakdown and its rendering left allocated.)
    assert!(
        j.allocated - j2.allocated >= freed - MIB / 4,
        "allocated {} -> {}",
        j.allocated,
        j2.allocated
    );
    // What jemalloc keeps grew by (nearly) what was freed: no page of a
    // half-used slab can go back.
    let kept_growth = half.part(PartKind::HeapFree) as i64 - full.part(PartKind::HeapFree) as i64;
    assert!(
        kept_growth >= (freed * 9 / 10) as i64,
        "kept grew by {kept_growth}, freed {freed}"
    );
    assert!(
        half.heap.allocator.free_bytes() >= freed * 9 / 10,
        "{:?}",
        half.heap.allocator
    );
    // And RSS did not move with it: not a leak, the allocator.
    let rss_change = half.rss as i64 - full.rss as i64;
    assert!(
        rss_change.abs() < (freed / 4) as i64,
        "RSS changed by {rss_change}"
    );
    assert_eq!(half.sum_of_parts(), half.rss);
    assert!(
        half.notes.iter().any(|n| n.contains("dirty")),
        "{:?}",
        half.notes
    );
    assert!(half.part(PartKind::HeapInUse) < full.part(PartKind::HeapInUse) - freed * 9 / 10);
    drop(blocks);
    assert!(before.heap.allocator.jemalloc.is_some());
}
