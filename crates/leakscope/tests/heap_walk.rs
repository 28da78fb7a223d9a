//! The glibc heap walker against exact oracles, on the same frozen heap:
//! leakscope's live table in full mode (every block the program allocated,
//! with its size) and glibc's own totals (`mallinfo2()`, taken in the
//! snapshot child after the walk).
//!
//! Heaps shaped to exercise every free list: tcache bins (filled), fast bins
//! (what overflows the tcache), the unsorted, small and large bins, the top
//! chunk, mmapped chunks (64 MiB), several arenas (8 threads), and
//! `malloc_trim`.

use std::alloc::{alloc, dealloc, Layout};
use std::sync::{Arc, Barrier};

use leakscope::{snapshot_with, BlockSource, Mode, Profiler, Snapshot, SnapshotOptions};

mod common;
use common::{watchdog, Rng};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

/// Blocks of one program: `(address, size)`.
struct Planted(Vec<(usize, usize)>);

impl Planted {
    fn allocate(sizes: impl IntoIterator<Item = usize>) -> Planted {
        Planted(
            sizes
                .into_iter()
                .map(|size| {
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: non-zero size; freed by `free_where`.
                    let p = unsafe { alloc(layout) };
                    assert!(!p.is_null());
                    // Touch it, as a program would.
                    // SAFETY: `p` has `size` writable bytes.
                    unsafe { p.write_bytes(0x5a, size.min(64)) };
                    (p as usize, size)
                })
                .collect(),
        )
    }

    /// Frees the blocks whose index `keep` rejects.
    fn free_where(&mut self, keep: impl Fn(usize) -> bool) {
        let mut i = 0;
        self.0.retain(|&(p, size)| {
            let kept = keep(i);
            i += 1;
            if !kept {
                // SAFETY: allocated by `allocate` with this layout.
                unsafe { dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) };
            }
            kept
        });
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        self.free_where(|_| false);
    }
}

fn cross_check() -> Snapshot {
    snapshot_with(SnapshotOptions {
        blocks: BlockSource::CrossCheck,
        ..SnapshotOptions::default()
    })
    .expect("cross-check snapshot")
}

/// The walk found exactly the blocks the live table has (no block missed,
/// none too small), and its free-memory counts are glibc's own. Returns the
/// blocks in use that the table does not have (glibc's and the snapshot's
/// own).
fn assert_exact(snap: &Snapshot, what: &str) -> u64 {
    let c = snap.cross_check().expect("a cross-check");
    if c.only_in_table > 0 {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for l in maps.lines() {
            let r: Vec<u64> = l
                .split(' ')
                .next()
                .unwrap()
                .split('-')
                .map(|x| u64::from_str_radix(x, 16).unwrap())
                .collect();
            if c.only_in_table_examples
                .iter()
                .any(|&a| (a as u64) >= r[0] - 0x100000 && (a as u64) < r[1] + 0x100000)
            {
                eprintln!("MAP {l}");
            }
        }
    }
    if std::env::var_os("HEAP_WALK_VERBOSE").is_some() {
        eprintln!("{what}: {c:?}\n{:#?}", snap.report().glibc_heap);
    }
    assert_eq!(
        (c.only_in_table, c.too_small),
        (0, 0),
        "{what}: tracked blocks not found in use by the walk: {c:#x?}"
    );
    let heap = snap
        .report()
        .glibc_heap
        .as_ref()
        .expect("the walk's counts");
    let t = heap.total();
    let m = c.mallinfo2.expect("mallinfo2 of the frozen heap");
    let arenas = heap.arenas.len() as u64;
    assert_eq!(m.arena, t.system_bytes, "{what}: system bytes");
    assert_eq!(
        (m.smblks, m.fsmblks),
        (t.fast_bins.blocks, t.fast_bins.bytes),
        "{what}: fast bins"
    );
    assert_eq!(
        m.ordblks,
        t.free_in_bins.blocks + arenas,
        "{what}: free chunks"
    );
    assert_eq!(
        m.fordblks,
        t.free_in_bins.bytes + t.fast_bins.bytes + t.top_bytes,
        "{what}: free bytes"
    );
    assert_eq!(m.hblks, heap.mmapped.blocks, "{what}: mmapped chunks");
    if heap.release == "2.43" {
        // glibc 2.43 counts 16 bytes too many each time realloc grows an
        // mmapped chunk with mremap (it subtracts the new chunk size, which
        // no longer counts the header): its total drifts above the true one.
        assert!(
            m.hblkhd >= heap.mmapped.bytes && (m.hblkhd - heap.mmapped.bytes) % 16 == 0,
            "{what}: mmapped bytes {} against glibc's {}",
            heap.mmapped.bytes,
            m.hblkhd
        );
    } else {
        assert_eq!(m.hblkhd, heap.mmapped.bytes, "{what}: mmapped bytes");
    }
    // The snapshot's memory breakdown carries the walk's figures: glibc's
    // own for the same heap, and parts that sum to RSS.
    let memory = snap.report().memory.as_ref().expect("a memory breakdown");
    let a = &memory.heap.allocator;
    assert_eq!(
        (
            a.system_bytes,
            a.free_in_bins + a.fast_bins + a.top_bytes,
            a.mmapped.blocks
        ),
        (m.arena, m.fordblks, m.hblks),
        "{what}: the breakdown's heap figures against mallinfo2"
    );
    assert!(
        memory.sum_of_parts().abs_diff(memory.rss) * 50 <= memory.rss,
        "{what}: parts {} against RSS {}",
        memory.sum_of_parts(),
        memory.rss
    );
    // The main heap is walked end to end: its chunks add up to what glibc
    // got from the system for it.
    let main = &heap.arenas[0];
    assert_eq!(
        main.in_use.bytes
            + main.free_in_bins.bytes
            + main.fast_bins.bytes
            + main.tcache.bytes
            + main.top_bytes
            + main.internal_bytes,
        main.system_bytes,
        "{what}: main arena coverage"
    );
    c.only_in_walk
}

fn sizes_from_1_byte_to_64_mib() -> Vec<usize> {
    let mut sizes = vec![
        1, 7, 8, 9, 16, 24, 25, 40, 100, 1000, 1032, 1040, 4096, 100_000,
    ];
    // Above glibc's mmap threshold: mmapped chunks.
    sizes.extend([200_000, 1 << 20, 64 << 20]);
    sizes
}

fn one_thread_every_size_and_free_list() {
    // The first snapshot builds leakscope's own lasting caches (symbols,
    // frame classes; untracked blocks): let them exist before the baseline.
    let _ = cross_check();
    let mut live = Planted::allocate(sizes_from_1_byte_to_64_mib());
    let baseline = assert_exact(&cross_check(), "fresh blocks");
    // 20 blocks per small size: freeing 15 fills the tcache (7 per size)
    // and sends the rest to the fast bins; larger ones go to the unsorted
    // bin, and are sorted into small and large bins by the next malloc.
    let mut rng = Rng(7);
    let mut churn = Planted::allocate((0..2000).map(|_| 16 + (rng.next() % 3000) as usize));
    churn.free_where(|i| i % 4 == 0);
    let mut small = Planted::allocate((0..20).flat_map(|_| [16, 24, 40, 56, 72, 100, 120]));
    small.free_where(|i| i % 20 < 5);
    let sorted = Planted::allocate([5000]);
    let after_frees = assert_exact(&cross_check(), "after frees");
    // Thousands of freed chunks: none of them may count as a block.
    assert!(
        after_frees <= baseline + 64,
        "blocks in use but untracked went from {baseline} to {after_frees}"
    );
    live.free_where(|i| i % 2 == 0);
    drop(sorted);
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    assert_exact(&cross_check(), "after malloc_trim");
    drop((churn, small));
}

fn eight_threads_and_their_arenas() {
    let threads = 8;
    let ready = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (ready, done) = (ready.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(100 + t as u64);
                let _big = Planted::allocate([300_000]);
                let mut blocks =
                    Planted::allocate((0..3000).map(|_| 8 + (rng.next() % 2000) as usize));
                // Small blocks last: what overflows the tcache stays in the
                // fast bins, as no larger request follows in this arena.
                let mut small =
                    Planted::allocate((0..600).map(|_| 8 + (rng.next() % 110) as usize));
                blocks.free_where(|i| i % 3 != 0);
                small.free_where(|i| i % 3 != 0);
                ready.wait();
                done.wait();
            })
        })
        .collect();
    ready.wait();
    let snap = cross_check();
    done.wait();
    for w in workers {
        w.join().unwrap();
    }
    assert_exact(&snap, "8 threads");
    let heap = snap.report().glibc_heap.as_ref().unwrap();
    assert!(heap.arenas.len() > 1, "threads allocated in one arena only");
    assert!(
        heap.threads_with_tcache >= 8,
        "{} tcaches",
        heap.threads_with_tcache
    );
    // Every kind of free chunk was there to be told apart (fast bins until
    // glibc 2.43, which removed them).
    let t = heap.total();
    let has_fast_bins = heap.release.as_str() < "2.43";
    assert!(
        (t.fast_bins.blocks > 100 || !has_fast_bins)
            && t.tcache.blocks > 100
            && t.free_in_bins.blocks > 100,
        "{t:?}"
    );
}

fn heap_walk_snapshots_name_what_the_table_names() {
    // In full mode, a heap-walk snapshot has every tracked block with its
    // stack: the same sizes as the table's snapshot for every planted block.
    let planted = Planted::allocate([48, 4096, 70_000, 1 << 20]);
    let walk = snapshot_with(SnapshotOptions {
        blocks: BlockSource::HeapWalk,
        ..SnapshotOptions::default()
    })
    .expect("heap walk snapshot");
    let table = leakscope::snapshot().expect("live table snapshot");
    for &(p, size) in &planted.0 {
        let (a, b) = (
            walk.block_at(p as *const u8).expect("walked"),
            table.block_at(p as *const u8).expect("tracked"),
        );
        assert_eq!((a.addr, a.size), (b.addr, b.size));
        assert_eq!(a.size, size as u64);
    }
}

const CASES: &[(&str, fn())] = &[
    (
        "one_thread_every_size_and_free_list",
        one_thread_every_size_and_free_list,
    ),
    (
        "eight_threads_and_their_arenas",
        eight_threads_and_their_arenas,
    ),
    (
        "heap_walk_snapshots_name_what_the_table_names",
        heap_walk_snapshots_name_what_the_table_names,
    ),
];

/// The loaders of the other glibc releases `scripts/test.sh` unpacked.
fn other_glibcs() -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/glibc");
    let mut found = Vec::new();
    for suite in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let lib = suite
            .path()
            .join(format!("usr/lib/{}-linux-gnu", std::env::consts::ARCH));
        let loader = std::fs::read_dir(&lib)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"))
            });
        if let Some(loader) = loader {
            found.push((loader, lib));
        }
    }
    found
}

/// Runs every case again under each other glibc release: the walk must be
/// exact under the releases it knows and refuse the others.
fn under_other_glibcs() -> bool {
    let glibcs = other_glibcs();
    if glibcs.is_empty() {
        println!(
            "heap walk under other glibc releases: none unpacked (scripts/test.sh fetches them)"
        );
        return true;
    }
    let mut ok = true;
    for (loader, lib) in glibcs {
        let out = std::process::Command::new(&loader)
            .arg("--library-path")
            .arg(&lib)
            .arg(std::env::current_exe().unwrap())
            .env("HEAP_WALK_TEST_INNER", "1")
            .output()
            .expect("run under another glibc's loader");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let release = stdout
            .lines()
            .find_map(|l| l.strip_prefix("glibc "))
            .unwrap_or("?")
            .to_string();
        let known = release
            .split('.')
            .nth(1)
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|minor| (32..=43).contains(&minor));
        // A release whose layout is known: every case passes. Another: the
        // snapshot refuses it, saying so (never a wrong block set).
        let passed = if known {
            out.status.success()
        } else {
            stdout.contains("not one leakscope knows")
                || String::from_utf8_lossy(&out.stderr).contains("not one leakscope knows")
        };
        println!(
            "test every_case_under_glibc_{release} ({}) ... {}",
            lib.display(),
            if passed { "ok" } else { "FAILED" }
        );
        if !passed {
            eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            ok = false;
        }
    }
    ok
}

fn main() {
    watchdog(300);
    let inner = std::env::var_os("HEAP_WALK_TEST_INNER").is_some();
    if inner {
        // SAFETY: gnu_get_libc_version returns a static string.
        let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        println!("glibc {}", v.to_string_lossy());
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = Vec::new();
    for (name, case) in CASES {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let ok = std::panic::catch_unwind(case).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    if !inner && !under_other_glibcs() {
        failed.push("under other glibc releases");
    }
    if !failed.is_empty() {
        eprintln!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
