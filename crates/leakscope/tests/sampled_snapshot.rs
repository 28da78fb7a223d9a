//! Heap snapshots in sampled mode: the blocks come from a walk of glibc's
//! heap, the allocation stacks from the sampled blocks. Holder chains,
//! pinning and lost blocks need blocks, not stacks: they are exact; figures
//! grouped by allocation stack cover the sampled blocks and say so.
//!
//! Own runner (`harness = false`), each case on a thread with a new stack,
//! as in `snapshot_holders.rs`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;

use bytes::Bytes;
use leakscope::snapshot::{BlocksFrom, LeakKind, NodeKind};
use leakscope::{Mode, Profiler};

mod common;
use common::watchdog;

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Sampled).with_seed(11);

static SAMPLED_CACHE: Mutex<Option<HashMap<u64, Bytes>>> = Mutex::new(None);

const BUFFER: usize = 256 * 1024;
const BUFFERS: u64 = 64;

#[inline(never)]
fn receive_buffer(i: u64) -> Bytes {
    Bytes::from(vec![i as u8; BUFFER])
}

#[inline(never)]
fn remember_one_byte_of_each(n: u64) -> Vec<usize> {
    let mut inside = Vec::new();
    for i in 0..n {
        let buffer = receive_buffer(i);
        let one_byte = buffer.slice(100..101);
        inside.push(one_byte.as_ptr() as usize ^ usize::MAX);
        SAMPLED_CACHE
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(i, one_byte);
    }
    black_box(inside)
}

fn one_byte_slices_pin_whole_buffers_in_sampled_mode() {
    let hidden = std::thread::spawn(|| remember_one_byte_of_each(BUFFERS))
        .join()
        .unwrap();
    let snap = leakscope::snapshot().expect("a sampled-mode snapshot");
    let report = snap.report();
    assert_eq!(report.blocks_from, BlocksFrom::HeapWalk);
    // Every buffer is a block, sampled or not, and is known to be pinned.
    for &h in &hidden {
        let block = snap
            .block_at((h ^ usize::MAX) as *const u8)
            .expect("the walk found the buffer");
        assert!(block.size >= BUFFER as u64, "{block:?}");
        assert_eq!(block.kind, LeakKind::StillReachable);
        assert!(block.pinned_by_slices.is_some(), "not pinned: {block:#?}");
        assert_eq!(block.chain[0].node.kind, NodeKind::Static);
        assert!(block.chain[0].node.name.ends_with("SAMPLED_CACHE"));
    }
    // One pinning finding for all of them, with the sampled ones' stack.
    let pin = report
        .pinned
        .iter()
        .find(|p| p.chain[0].node.name.ends_with("SAMPLED_CACHE"))
        .unwrap_or_else(|| panic!("no pinning held by the static: {:#?}", report.pinned));
    assert_eq!(pin.buffers.blocks, BUFFERS);
    let sampled = pin.with_stacks.expect("sampled buffers counted");
    assert!(
        (1..BUFFERS).contains(&sampled.blocks),
        "{sampled:?} of {BUFFERS} buffers sampled"
    );
    assert!(
        pin.buffer_site
            .iter()
            .any(|f| f.ends_with("receive_buffer")),
        "site {:?}",
        pin.buffer_site
    );
    // The totals are exact; what has stacks is a part.
    assert!(report.totals.live.blocks > BUFFERS);
    assert!(report.with_stacks.blocks < report.totals.live.blocks);
    let heap = report.glibc_heap.as_ref().expect("the walk's counts");
    assert!(heap.total().in_use.bytes + heap.mmapped.bytes >= BUFFERS * BUFFER as u64);
}

#[inline(never)]
fn forget_blocks() -> usize {
    // A cycle of two blocks and a lone block, unreachable.
    let a = Box::into_raw(Box::new([0usize; 8]));
    let b = Box::into_raw(Box::new([0usize; 8]));
    // SAFETY: both boxes are live and own 8 words.
    unsafe {
        (*a)[0] = b as usize;
        (*b)[0] = a as usize;
    }
    let lone = Box::into_raw(Box::new([3usize; 40]));
    black_box((
        a as usize ^ usize::MAX,
        b as usize ^ usize::MAX,
        lone as usize ^ usize::MAX,
    ))
    .2
}

fn lost_blocks_are_found_without_tracking() {
    let lone = std::thread::spawn(forget_blocks).join().unwrap();
    let snap = leakscope::snapshot().expect("a sampled-mode snapshot");
    let block = snap
        .block_at((lone ^ usize::MAX) as *const u8)
        .expect("the walk found the lone block");
    assert_eq!(block.kind, LeakKind::DefinitelyLost);
    assert!(snap.report().totals.definitely_lost.blocks >= 2);
}

trait Job: Send {
    fn pixels(&self) -> usize;
}

struct ResizeJob {
    pixels: Vec<u8>,
}

impl Job for ResizeJob {
    fn pixels(&self) -> usize {
        self.pixels.len()
    }
}

/// A queue entry: a trait object (its vtable pointer in the entry's first
/// words) and an id.
struct Queued {
    job: Box<dyn Job>,
    id: u64,
}

// Boxed entries: each is a heap block of its own, the one named here.
#[allow(clippy::vec_box)]
static QUEUE: Mutex<Vec<Box<Queued>>> = Mutex::new(Vec::new());

#[inline(never)]
fn queue_jobs() -> usize {
    let mut queue = QUEUE.lock().unwrap();
    for id in 0..16 {
        queue.push(Box::new(Queued {
            job: Box::new(ResizeJob {
                pixels: vec![id as u8; 4096],
            }),
            id,
        }));
    }
    black_box(
        queue
            .iter()
            .map(|q| q.job.pixels() as u64 + q.id)
            .sum::<u64>(),
    );
    // SAFETY: the last job is a ResizeJob, boxed just above.
    let last = unsafe { &*(&*queue[15].job as *const dyn Job).cast::<ResizeJob>() };
    last.pixels.as_ptr() as usize ^ usize::MAX
}

/// A block with no allocation stack (not sampled) is named by what its
/// first words refer to: here a trait object's vtable, whose first entry
/// is the concrete type's drop glue.
fn blocks_without_stacks_are_named_by_their_vtables() {
    let hidden = std::thread::spawn(queue_jobs).join().unwrap();
    let snap = leakscope::snapshot().expect("a sampled-mode snapshot");
    let block = snap
        .block_at((hidden ^ usize::MAX) as *const u8)
        .expect("the walk found the pixels");
    let names: Vec<&str> = block.chain.iter().map(|l| l.node.name.as_str()).collect();
    assert!(names[0].ends_with("QUEUE"), "{names:#?}");
    assert!(
        names
            .iter()
            .any(|n| n.contains("refers to core::ptr::drop_in_place<sampled_snapshot::ResizeJob>")),
        "{names:#?}"
    );
}

static KEPT_FRAMES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Frames read at one allocation stack: the first of 8 MiB, the others of
/// 1 MiB.
#[inline(never)]
fn read_frames(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| vec![7u8; if i == 0 { 8 << 20 } else { 1 << 20 }])
        .collect()
}

/// Sixteen 1 MiB frames kept by a static, and one 8 MiB frame of the same
/// allocation stack in the hand of the thread taking the snapshot: the
/// group's largest block is on that thread's stack or in its registers,
/// most of its sampled bytes are the static's.
fn a_groups_holders_are_ranked_by_the_bytes_they_keep() {
    // On a thread that ends, so that no stale word of its stack holds the
    // kept frames.
    let (in_hand, kept) = std::thread::spawn(|| {
        let mut frames = read_frames(17);
        let in_hand = frames.remove(0);
        let kept: Vec<usize> = frames
            .iter()
            .map(|f| f.as_ptr() as usize ^ usize::MAX)
            .collect();
        KEPT_FRAMES.lock().unwrap().extend(frames);
        (in_hand, kept)
    })
    .join()
    .unwrap();
    let snap = leakscope::snapshot().expect("a sampled-mode snapshot");
    black_box(&in_hand);
    let report = snap.report();
    let group = report
        .groups
        .iter()
        .find(|g| {
            g.kind == LeakKind::StillReachable && g.site.iter().any(|f| f.contains("read_frames"))
        })
        .unwrap_or_else(|| panic!("no group of read_frames: {:#?}", report.groups));
    // The kept frames whose allocation stack was sampled.
    let sampled: Vec<u64> = kept
        .iter()
        .filter_map(|&h| snap.block_at((h ^ usize::MAX) as *const u8))
        .filter(|b| b.chain.last().is_some_and(|l| !l.node.site.is_empty()))
        .map(|b| b.size)
        .collect();
    assert!(
        sampled.len() >= 9,
        "{} of 16 kept frames sampled",
        sampled.len()
    );
    // The group's chain is its largest block's: the one in hand.
    assert_ne!(group.chain[0].node.kind, NodeKind::Static, "{group:#?}");
    assert!(group.chain.last().unwrap().node.size >= Some(8 << 20));
    // Its first holder is the static, with every sampled kept frame.
    let first = &group.holders[0];
    assert_eq!(first.chain[0].node.kind, NodeKind::Static, "{group:#?}");
    assert!(first.chain[0].node.name.ends_with("KEPT_FRAMES"));
    assert_eq!(first.amount.blocks, sampled.len() as u64, "{group:#?}");
    assert_eq!(first.amount.bytes, sampled.iter().sum::<u64>());
    // The frame in hand is a holder of its own.
    assert!(
        group.holders[1..]
            .iter()
            .any(|h| h.amount.blocks == 1 && h.chain[0].node.kind != NodeKind::Static),
        "{group:#?}"
    );
    assert_eq!(
        group.holders.iter().map(|h| h.amount.bytes).sum::<u64>(),
        group.amount.bytes
    );
}

const CASES: &[(&str, fn())] = &[
    (
        "one_byte_slices_pin_whole_buffers_in_sampled_mode",
        one_byte_slices_pin_whole_buffers_in_sampled_mode,
    ),
    (
        "lost_blocks_are_found_without_tracking",
        lost_blocks_are_found_without_tracking,
    ),
    (
        "blocks_without_stacks_are_named_by_their_vtables",
        blocks_without_stacks_are_named_by_their_vtables,
    ),
    (
        "a_groups_holders_are_ranked_by_the_bytes_they_keep",
        a_groups_holders_are_ranked_by_the_bytes_they_keep,
    ),
];

fn main() {
    watchdog(300);
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = Vec::new();
    for (i, (name, case)) in CASES.iter().enumerate() {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let outcome = std::thread::Builder::new()
            .name(format!("case-{i}"))
            .stack_size((16 + i) << 20)
            .spawn(case)
            .unwrap()
            .join();
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        eprintln!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
