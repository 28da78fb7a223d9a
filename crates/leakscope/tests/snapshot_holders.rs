//! Heap snapshots find who holds memory: planted structures with known
//! chains and sizes.
//!
//! This binary has its own runner (`harness = false`): a conservative scan
//! treats every thread's stack as a root, and the standard harness keeps a
//! thread per pending test whose (reused) stack may hold stale addresses
//! from an earlier test. Here the cases run one after another, each on a
//! thread with a new stack, with no other test thread alive.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::mpsc;
use std::sync::Mutex;

use bytes::Bytes;
use leakscope::snapshot::{LeakKind, NodeKind};
use leakscope::{Mode, Profiler};

mod common;
use common::{go_pprof, watchdog};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

static REQUEST_CACHE: Mutex<Option<HashMap<u64, Bytes>>> = Mutex::new(None);

const BUFFER: usize = 256 * 1024;

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
        REQUEST_CACHE
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(i, one_byte);
    }
    black_box(inside)
}

fn a_static_map_of_one_byte_slices_pins_whole_buffers() {
    // Filled on a thread that then exits, so that no stale copy of a buffer
    // pointer stays behind on a live stack (conservative scanning would
    // count it as a second holder).
    let hidden = std::thread::spawn(|| remember_one_byte_of_each(8))
        .join()
        .unwrap();
    let snap = leakscope::snapshot().expect("snapshot");
    for &h in &hidden {
        let block = snap
            .block_at((h ^ usize::MAX) as *const u8)
            .expect("the buffer is a tracked block");
        assert_eq!(block.size, BUFFER as u64);
        assert_eq!(block.kind, LeakKind::StillReachable);
        // A 1-byte slice pins it (conservative scanning may add a stale
        // word or two to the bytes counted as views).
        let views = block
            .pinned_by_slices
            .unwrap_or_else(|| panic!("not reported as pinned: {block:#?}"));
        assert!(
            (1..=64).contains(&views),
            "{views} bytes of views: {block:#?}"
        );
        let root = &block.chain[0].node;
        assert_eq!(root.kind, NodeKind::Static);
        assert!(root.name.ends_with("REQUEST_CACHE"), "root {root:?}");
        let holder = block.holder.expect("dominated by the map's table");
        assert_eq!(holder.kind, NodeKind::Heap);
        assert!(
            holder.name.ends_with("remember_one_byte_of_each"),
            "holder {holder:?}"
        );
        // static -> table -> buffer
        assert_eq!(block.chain.len(), 3, "{:#?}", block.chain);
        assert_eq!(block.chain[1].node, holder);
    }
    let report = snap.report();
    let pin = report
        .pinned
        .iter()
        .find(|p| {
            p.buffer_site
                .first()
                .is_some_and(|f| f.ends_with("receive_buffer"))
        })
        .expect("a pinning finding for the buffers");
    assert_eq!(pin.buffers.blocks, 8);
    assert_eq!(pin.buffers.bytes, 8 * BUFFER as u64);
    assert!(
        (8..=8 * 64).contains(&pin.slice_bytes),
        "{}",
        pin.slice_bytes
    );
    assert!(pin.holder.name.ends_with("remember_one_byte_of_each"));
    assert!(pin.chain[0].node.name.ends_with("REQUEST_CACHE"));
    // The static retains every buffer (plus the table and the slices'
    // shared headers).
    let holder = report
        .holders
        .iter()
        .find(|h| h.node.name.ends_with("REQUEST_CACHE"))
        .expect("the static is a top holder");
    assert!(
        holder.retained.bytes >= 8 * BUFFER as u64,
        "{:?}",
        holder.retained
    );
    assert!(
        holder.retained.bytes < 8 * BUFFER as u64 + 64 * 1024,
        "{:?}",
        holder.retained
    );
    REQUEST_CACHE.lock().unwrap().take();
}

/// Slices an application keeps, and a stale copy of the first half of
/// their words elsewhere (as a freed `Vec`'s old elements are left in a
/// block that reused its memory): a second holder of those buffers, which
/// moves their dominator up to the program itself.
static KEPT_SLICES: Mutex<Vec<Bytes>> = Mutex::new(Vec::new());
static STALE_WORDS: Mutex<Vec<usize>> = Mutex::new(Vec::new());
const KEPT: usize = 12;
const KEPT_BUFFER: usize = 64 * 1024;

#[inline(never)]
fn keep_slices_and_a_stale_copy() -> Vec<usize> {
    let mut starts = Vec::new();
    for i in 0..KEPT {
        let body = Bytes::from(vec![i as u8; KEPT_BUFFER]);
        let kept = body.slice(0..4);
        starts.push(kept.as_ptr() as usize ^ usize::MAX);
        if i < KEPT / 2 {
            STALE_WORDS
                .lock()
                .unwrap()
                .extend([kept.as_ptr() as usize, kept.len()]);
        }
        KEPT_SLICES.lock().unwrap().push(kept);
    }
    black_box(starts)
}

fn stale_copies_of_slices_do_not_hide_the_pinning() {
    let hidden = std::thread::spawn(keep_slices_and_a_stale_copy)
        .join()
        .unwrap();
    let snap = leakscope::snapshot().expect("snapshot");
    for (i, &h) in hidden.iter().enumerate() {
        let block = snap
            .block_at((h ^ usize::MAX) as *const u8)
            .expect("the buffer is a tracked block");
        assert_eq!(block.size, KEPT_BUFFER as u64);
        let views = block
            .pinned_by_slices
            .unwrap_or_else(|| panic!("buffer {i} not reported as pinned: {block:#?}"));
        // 4 bytes here, and 4 more in the stale copy for the first half.
        assert!((4..=64).contains(&views), "buffer {i}: {views} bytes");
        assert!(
            block.chain[0].node.name.ends_with("KEPT_SLICES"),
            "buffer {i}: {block:#?}"
        );
    }
    let report = snap.report();
    let pin = report
        .pinned
        .iter()
        .find(|p| p.chain.iter().any(|l| l.node.name.ends_with("KEPT_SLICES")))
        .unwrap_or_else(|| panic!("no pinning under the static: {:#?}", report.pinned));
    assert_eq!(pin.buffers.blocks, KEPT as u64, "{pin:#?}");
    assert_eq!(pin.buffers.bytes, (KEPT * KEPT_BUFFER) as u64);
    assert!(
        !report
            .pinned
            .iter()
            .any(|p| p.chain.iter().any(|l| l.node.name.ends_with("STALE_WORDS"))),
        "{:#?}",
        report.pinned
    );
    // Freed, not cleared: a cleared vector's unused capacity would keep
    // stale words for the next case's scans.
    drop(std::mem::take(&mut *KEPT_SLICES.lock().unwrap()));
    drop(std::mem::take(&mut *STALE_WORDS.lock().unwrap()));
}

static RELEASE_HOLDER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[inline(never)]
fn hold_vec_on_stack(ready: mpsc::Sender<usize>) {
    let v = vec![7u8; 100_000];
    black_box(&v);
    ready.send(v.as_ptr() as usize ^ usize::MAX).unwrap();
    // Parking allocates nothing (a channel's first blocking receive would):
    // stopped anywhere from here on, the thread is not inside the
    // allocator, whose frame would then hold the vector's address.
    while !RELEASE_HOLDER.load(std::sync::atomic::Ordering::Acquire) {
        std::thread::park();
    }
    black_box(&v);
}

fn a_vec_on_a_thread_stack_is_held_by_that_frame() {
    let (ready_tx, ready_rx) = mpsc::channel();
    let t = std::thread::Builder::new()
        .name("stack-holder".into())
        .spawn(move || hold_vec_on_stack(ready_tx))
        .unwrap();
    let hidden = ready_rx.recv().unwrap();
    let snap = leakscope::snapshot().expect("snapshot");
    let block = snap
        .block_at((hidden ^ usize::MAX) as *const u8)
        .expect("tracked");
    assert_eq!(block.size, 100_000);
    assert_eq!(block.kind, LeakKind::StillReachable);
    assert_eq!(block.chain.len(), 2, "{:#?}", block.chain);
    let root = &block.chain[0].node;
    assert_eq!(root.kind, NodeKind::Stack, "{root:?}");
    assert_eq!(
        root.name,
        "thread stack-holder: snapshot_holders::hold_vec_on_stack"
    );
    RELEASE_HOLDER.store(true, std::sync::atomic::Ordering::Release);
    t.thread().unpark();
    t.join().unwrap();
}

#[inline(never)]
fn spawn_task_holding_buffer(
    rt: &tokio::runtime::Runtime,
    ready: mpsc::Sender<usize>,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        let buffer = vec![3u8; 200_000];
        ready.send(buffer.as_ptr() as usize ^ usize::MAX).unwrap();
        let _ = stop_rx.await;
        black_box(&buffer);
    });
    stop_tx
}

#[inline(never)]
fn scrub_stack() {
    let mut scratch = [0u64; 4096];
    for (i, w) in scratch.iter_mut().enumerate() {
        *w = black_box(i as u64);
    }
    black_box(&scratch);
}

fn a_buffer_owned_by_a_tokio_task_is_held_by_the_task() {
    // One worker, so the scrubbing tasks below run on the thread that ran
    // the holding task.
    // A stack size no exited thread had, so that glibc maps a new (zeroed)
    // stack instead of reusing a cached one full of stale words.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_stack_size(64 << 20)
        .build()
        .unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = spawn_task_holding_buffer(&rt, ready_tx);
    let hidden = ready_rx.recv().unwrap();
    // Let the workers run other tasks that use their stacks, so no stale
    // copy of the buffer's address stays in a worker's stack or registers
    // (a conservative scan would count it as a second holder).
    rt.block_on(async {
        let scrubbers: Vec<_> = (0..16)
            .map(|_| tokio::spawn(async { scrub_stack() }))
            .collect();
        for s in scrubbers {
            s.await.unwrap();
        }
    });
    // A stale copy of a pointer into the task's state can still sit in a
    // word the conservative scan reads (a register spill, a waker): take up
    // to three snapshots; the assertions below hold on the one used.
    let mut attempts = 0;
    let (block, holder) = loop {
        attempts += 1;
        let snap = leakscope::snapshot().expect("snapshot");
        let block = snap
            .block_at((hidden ^ usize::MAX) as *const u8)
            .expect("tracked");
        assert_eq!(block.kind, LeakKind::StillReachable);
        match block.holder.clone() {
            Some(holder) => break (block, holder),
            None if attempts < 3 => continue,
            None => panic!("dominated by the task: {:#?}", block.chain),
        }
    };
    assert_eq!(holder.kind, NodeKind::Heap);
    assert!(
        holder
            .site
            .iter()
            .any(|f| f.ends_with("spawn_task_holding_buffer")),
        "the task was spawned in spawn_task_holding_buffer: {holder:#?}"
    );
    assert!(block.chain.len() >= 3, "{:#?}", block.chain);
    stop.send(()).unwrap();
    drop(rt);
}

struct Node {
    _payload: [u8; 1000],
    next: Mutex<Option<std::sync::Arc<Node>>>,
}

#[inline(never)]
fn make_unreachable_things() -> [usize; 3] {
    // An Arc cycle: a -> b -> a, then both handles dropped.
    let a = std::sync::Arc::new(Node {
        _payload: [1; 1000],
        next: Mutex::new(None),
    });
    let b = std::sync::Arc::new(Node {
        _payload: [2; 1000],
        next: Mutex::new(Some(a.clone())),
    });
    *a.next.lock().unwrap() = Some(b.clone());
    let (pa, pb) = (
        std::sync::Arc::as_ptr(&a) as usize,
        std::sync::Arc::as_ptr(&b) as usize,
    );
    drop((a, b));
    // A leaked box with no pointer left.
    let leaked = Box::leak(Box::new([9u8; 5000])).as_ptr() as usize;
    [pa ^ usize::MAX, pb ^ usize::MAX, leaked ^ usize::MAX]
}

fn cycles_and_forgotten_blocks_are_unreachable() {
    // On a thread that then exits, so no stale copy of a pointer stays on a
    // live stack.
    let hidden = std::thread::spawn(make_unreachable_things).join().unwrap();
    let snap = leakscope::snapshot().expect("snapshot");
    let kinds: Vec<LeakKind> = hidden
        .iter()
        .map(|&h| {
            snap.block_at((h ^ usize::MAX) as *const u8)
                .expect("tracked")
                .kind
        })
        .collect();
    let lost = |k: &LeakKind| matches!(k, LeakKind::DefinitelyLost | LeakKind::IndirectlyLost);
    assert!(kinds.iter().all(lost), "{kinds:?}");
    // One of the cycle is its leader (definitely lost), the other indirect.
    assert!(
        kinds[..2].contains(&LeakKind::DefinitelyLost)
            && kinds[..2].contains(&LeakKind::IndirectlyLost),
        "{kinds:?}"
    );
    assert_eq!(kinds[2], LeakKind::DefinitelyLost);
    let report = snap.report();
    assert!(report.totals.definitely_lost.bytes >= 5000);
}

fn go_tool_pprof_shows_the_chain_of_the_refs_profile() {
    let _hidden = remember_one_byte_of_each(2);
    let snap = leakscope::snapshot().expect("snapshot");
    let path = std::env::temp_dir().join(format!("leakscope-refs-{}.pb.gz", std::process::id()));
    snap.write_refs_pprof(&path).unwrap();
    let traces = go_pprof(&[
        std::ffi::OsStr::new("-traces"),
        std::ffi::OsStr::new("-symbolize=none"),
        path.as_os_str(),
    ]);
    let trace = traces
        .split("-----------+")
        .find(|t| t.contains("receive_buffer (heap)"))
        .unwrap_or_else(|| panic!("no trace of the buffers:\n{traces}"));
    assert!(
        trace.contains("static snapshot_holders::REQUEST_CACHE"),
        "{trace}"
    );
    assert!(
        trace.contains("remember_one_byte_of_each (heap)"),
        "{trace}"
    );
    std::fs::remove_file(&path).ok();
    REQUEST_CACHE.lock().unwrap().take();
}

static REGISTRY: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());

#[inline(never)]
fn register_weights(n: usize) {
    for _ in 0..n {
        REGISTRY.lock().unwrap().push(vec![1; 1024]);
    }
}

/// A `Vec<u64>` owns its 8 KiB buffer although its capacity word says 1024:
/// that is not a 1 KiB view pinning 8 KiB.
fn vectors_of_words_own_their_buffers() {
    std::thread::spawn(|| register_weights(64)).join().unwrap();
    let snap = leakscope::snapshot().expect("snapshot");
    let held = REGISTRY.lock().unwrap();
    for v in held.iter() {
        let block = snap.block_at(v.as_ptr().cast()).expect("tracked");
        assert_eq!(block.size, 8192);
        assert_eq!(block.pinned_by_slices, None, "{block:#?}");
    }
    assert!(
        !snap.report().pinned.iter().any(|p| p
            .buffer_site
            .first()
            .is_some_and(|f| f.ends_with("register_weights"))),
        "{:#?}",
        snap.report().pinned
    );
    drop(held);
    REGISTRY.lock().unwrap().clear();
}

static READ_BUFFERS: Mutex<Vec<bytes::BytesMut>> = Mutex::new(Vec::new());

/// Read buffers whose front was consumed: each `BytesMut` points into the
/// middle of its block, with its capacity running to the block's end.
/// Returns each block's start, hidden from the scan.
#[inline(never)]
fn fill_and_consume_read_buffers(n: usize) -> Vec<usize> {
    use bytes::{Buf, BufMut};
    let mut starts = Vec::new();
    let mut held = READ_BUFFERS.lock().unwrap();
    for i in 0..n {
        let mut b = bytes::BytesMut::with_capacity(16 * 1024);
        b.put_bytes(i as u8, 10_000);
        starts.push(b.as_ptr() as usize ^ usize::MAX);
        // Empty for even ones (all read), partly read for odd ones.
        b.advance(if i % 2 == 0 { 10_000 } else { 8448 });
        held.push(b);
    }
    black_box(starts)
}

/// A read buffer that has consumed its front owns the rest: it pins
/// nothing, although it points into the middle of its block.
fn consumed_read_buffers_are_owners_not_slices() {
    let starts = std::thread::spawn(|| fill_and_consume_read_buffers(16))
        .join()
        .unwrap();
    let snap = leakscope::snapshot().expect("snapshot");
    for &s in &starts {
        let block = snap
            .block_at((s ^ usize::MAX) as *const u8)
            .expect("tracked");
        assert_eq!(block.size, 16 * 1024);
        assert_eq!(block.pinned_by_slices, None, "{block:#?}");
    }
    READ_BUFFERS.lock().unwrap().clear();
}

/// A node of a doubly linked list, as intrusive lists (a runtime's task
/// list, an LRU) lay them out.
struct ListNode {
    _prev: *mut ListNode,
    next: *mut ListNode,
    _payload: [u64; 4],
}

/// The list's head: both ends, reachable from a static.
struct List {
    first: *mut ListNode,
    _last: *mut ListNode,
}

static LIST: std::sync::atomic::AtomicPtr<List> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

#[inline(never)]
fn build_list(n: usize) {
    let mut first: *mut ListNode = std::ptr::null_mut();
    let mut last: *mut ListNode = std::ptr::null_mut();
    for _ in 0..n {
        let node = Box::into_raw(Box::new(ListNode {
            _prev: last,
            next: std::ptr::null_mut(),
            _payload: [7; 4],
        }));
        if last.is_null() {
            first = node;
        } else {
            // SAFETY: `last` is a live node this function allocated.
            unsafe { (*last).next = node };
        }
        last = node;
    }
    let list = Box::into_raw(Box::new(List { first, _last: last }));
    LIST.store(list, std::sync::atomic::Ordering::SeqCst);
}

#[inline(never)]
fn free_list() {
    let list = LIST.swap(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst);
    // SAFETY: the list and its nodes were made by `build_list` with
    // `Box::into_raw`, and only this function frees them.
    unsafe {
        let list = Box::from_raw(list);
        let mut at = list.first;
        while !at.is_null() {
            let node = Box::from_raw(at);
            at = node.next;
        }
    }
}

/// Analysis steps for a heap holding a list of `n` nodes and `n` tokio
/// tasks that never complete (each on the runtime's intrusive task list).
fn steps_with_lists_of(n: usize) -> (u64, leakscope::Snapshot) {
    std::thread::spawn(move || build_list(n)).join().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        for i in 0..n {
            let state = vec![i as u8; 64];
            tokio::spawn(async move {
                std::future::pending::<()>().await;
                black_box(state);
            });
        }
        tokio::task::yield_now().await;
    });
    let snap = leakscope::snapshot().expect("snapshot");
    drop(runtime);
    // Freed on another thread too, so that no stale copy of a node's address
    // stays in this thread's frames, where the next, larger list may reuse it
    // (one stray word into a doubly linked list makes every node reachable
    // two ways, and nothing but the super-root dominates them).
    std::thread::spawn(free_list).join().unwrap();
    (snap.analysis_steps(), snap)
}

fn analysis_work_grows_linearly_with_lists_and_task_lists() {
    let (small, _) = steps_with_lists_of(10_000);
    let (large, snap) = steps_with_lists_of(100_000);
    println!("analysis steps: {small} with 10k-node lists, {large} with 100k");
    // Ten times the blocks; at most a quarter more per block for the
    // logarithmic factor of path compression (the old iterative dominator
    // algorithm took about 100 times the steps here).
    assert!(
        large as f64 <= small as f64 * 12.5,
        "{small} analysis steps with 10k-node lists, {large} with 100k"
    );
    // Chains stay short to print however deep the list: the middle is elided.
    let report = snap.report();
    assert!(report.holders.iter().all(|h| h.chain.len() <= 32));
    assert!(report.retention.iter().all(|r| r.path.len() <= 32));
    assert!(
        report
            .retention
            .iter()
            .any(|r| r.path.first().is_some_and(|p| p.ends_with("LIST"))
                && r.path.iter().any(|p| p == "...")),
        "no elided path from the list's static"
    );
    // (Which node retains the list is not asserted: one stray word into a
    // doubly linked list, such as a stale pointer left in a reused block,
    // makes every node reachable two ways; the dominator algorithm itself is
    // checked against oracles in its unit tests.)
}

/// 48 MiB of 16 KiB blocks, each pointing to a random earlier one, held
/// by one vector in a static.
static MESH: Mutex<Vec<Box<[usize]>>> = Mutex::new(Vec::new());

#[inline(never)]
fn build_mesh(blocks: usize) {
    let mut mesh = MESH.lock().unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15usize;
    for i in 0..blocks {
        let mut block = vec![0usize; 2048].into_boxed_slice();
        if i > 0 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            block[seed % 2048] = mesh[seed % i].as_ptr() as usize;
        }
        mesh.push(block);
    }
}

/// Helpers scanning shares of the blocks on other cores give the analysis
/// a single scan gives: the same totals, holders, groups and steps.
fn several_cores_give_the_analysis_of_one() {
    std::thread::spawn(|| build_mesh(3072)).join().unwrap();
    let take = |cores| {
        leakscope::snapshot_with(leakscope::SnapshotOptions {
            cores: Some(cores),
            ..leakscope::SnapshotOptions::default()
        })
        .expect("snapshot")
    };
    let one = take(1);
    let three = take(3);
    assert_eq!(one.scan_processes(), 1);
    // 48 MiB is enough for two helpers; which shares each takes depends on
    // timing, and one may find none left.
    assert!(three.scan_processes() >= 2, "{}", three.scan_processes());
    // (The first snapshot's own report lives on the heap the second sees,
    // so whole-heap figures differ; the mesh's must not.)
    let mesh_holder = |snap: &leakscope::Snapshot| {
        snap.report()
            .holders
            .iter()
            .find(|h| h.node.name.ends_with("MESH"))
            .expect("the static holds the mesh")
            .clone()
    };
    let held = mesh_holder(&one);
    assert_eq!(held, mesh_holder(&three));
    // (A stale word elsewhere may also point at a few of its blocks.)
    assert!(held.retained.bytes >= 3072 * 16384 * 9 / 10, "{held:#?}");
    let mesh = MESH.lock().unwrap();
    for block in mesh.iter().step_by(97) {
        let at = block.as_ptr().cast();
        assert_eq!(one.block_at(at), three.block_at(at));
    }
    drop(mesh);
    MESH.lock().unwrap().clear();
}

const CASES: &[(&str, fn())] = &[
    (
        "a_static_map_of_one_byte_slices_pins_whole_buffers",
        a_static_map_of_one_byte_slices_pins_whole_buffers,
    ),
    (
        "stale_copies_of_slices_do_not_hide_the_pinning",
        stale_copies_of_slices_do_not_hide_the_pinning,
    ),
    (
        "a_vec_on_a_thread_stack_is_held_by_that_frame",
        a_vec_on_a_thread_stack_is_held_by_that_frame,
    ),
    (
        "a_buffer_owned_by_a_tokio_task_is_held_by_the_task",
        a_buffer_owned_by_a_tokio_task_is_held_by_the_task,
    ),
    (
        "cycles_and_forgotten_blocks_are_unreachable",
        cycles_and_forgotten_blocks_are_unreachable,
    ),
    (
        "vectors_of_words_own_their_buffers",
        vectors_of_words_own_their_buffers,
    ),
    (
        "consumed_read_buffers_are_owners_not_slices",
        consumed_read_buffers_are_owners_not_slices,
    ),
    (
        "analysis_work_grows_linearly_with_lists_and_task_lists",
        analysis_work_grows_linearly_with_lists_and_task_lists,
    ),
    (
        "go_tool_pprof_shows_the_chain_of_the_refs_profile",
        go_tool_pprof_shows_the_chain_of_the_refs_profile,
    ),
    (
        "several_cores_give_the_analysis_of_one",
        several_cores_give_the_analysis_of_one,
    ),
];

fn main() {
    // Watch the whole run from a thread started first, on a fresh stack.
    watchdog(600);
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = Vec::new();
    for (i, (name, case)) in CASES.iter().enumerate() {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        // Each case on a thread whose stack is new (larger than any stack
        // glibc keeps for reuse), so its frames hold no stale words that
        // happen to equal the address of a block allocated later.
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
