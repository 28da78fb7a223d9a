//! Snapshot pause and analysis time for a heap of a given size and shape:
//! `snapshot-bench MIB BLOCK_BYTES [SHAPE]`. Builds MIB MiB of live blocks
//! of BLOCK_BYTES each, takes three snapshots and prints one JSON line with
//! the best pause and analysis time. Shapes (the graph real heaps have):
//! - `random` (default): every block points to a random earlier one;
//! - `list`: one singly linked list from a static;
//! - `dlist`: one doubly linked list whose head keeps both ends;
//! - `tree`: a binary tree with parent pointers (deep and wide);
//! - `tasks`: tokio tasks that never complete, each owning a block (the
//!   runtime's intrusive task list; MIB counts the tasks' own blocks).
//!
//! `SNAPSHOT_CORES` limits the cores the analysis scans on (default: all).
//! `SNAPSHOT_MUTATORS=N` (random shape only) runs N threads that keep
//! changing the heap while the snapshots are taken and analysed, as a
//! service's workers do (see [`mutate`]). The line also gives the
//! snapshot's peak extra memory (the median of the three snapshots'): how
//! far the machine's free memory fell below what it was just before the
//! snapshot (the analysis child's own arrays, naming the results, and the
//! pages copied because the running process wrote to them while the child
//! kept the old ones).
//! Full mode unless `LEAKSCOPE_MODE` says otherwise: in `sampled` mode the
//! snapshot's blocks come from a walk of glibc's heap (the `blocks` phase).

use std::alloc::{alloc_zeroed, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The first block: the static root of lists and trees.
static HEAD: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static ALLOC: leakscope::Profiler =
    leakscope::Profiler::new().with_default_mode(leakscope::Mode::Full);

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let block: usize = std::env::args()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let shape = std::env::args().nth(3).unwrap_or_else(|| "random".into());
    let n = (mib << 20) / block;
    let _runtime;
    let mut blocks = match shape.as_str() {
        "tasks" => {
            _runtime = spawn_pending_tasks(n, block);
            Vec::new()
        }
        _ => build(&shape, n, block),
    };
    HEAD.store(blocks.first().copied().unwrap_or(0), Ordering::SeqCst);
    if shape != "random" {
        // Only the static holds a list or tree: a vector of every block
        // would make each one directly reachable.
        blocks = Vec::new();
    }
    let stats = leakscope::stats();
    let cores = std::env::var("SNAPSHOT_CORES")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut scan_processes = 0;
    let mut best_pause = f64::MAX;
    let mut best_analysis = f64::MAX;
    let mut live_bytes = 0;
    let mut phases = String::new();
    let mut steps = 0;
    let mut best_total = f64::MAX;
    let mutators: usize = std::env::var("SNAPSHOT_MUTATORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        mutators == 0 || shape == "random",
        "SNAPSHOT_MUTATORS needs the random shape (the others are reachable from one static only)"
    );
    // The mutators' own list of the blocks (only when there are mutators:
    // it is one more reference to every block).
    let long_lived: &'static [usize] = if mutators == 0 {
        &[]
    } else {
        Box::leak(blocks.clone().into_boxed_slice())
    };
    let mutation = Mutation::start(mutators, long_lived, block);
    // Each snapshot's peak, of which the median is reported: the machine's
    // free memory also moves with everything else running on it.
    let mut peaks_extra = Vec::new();
    for _ in 0..3 {
        let free_before = free_memory();
        let sampler = FreeMemorySampler::start();
        let started = Instant::now();
        let snap = leakscope::snapshot_with(leakscope::SnapshotOptions {
            cores,
            ..leakscope::SnapshotOptions::default()
        })
        .expect("snapshot");
        peaks_extra.push(free_before.saturating_sub(sampler.lowest()));
        // Pause, analysis and naming the results (chains, groups, paths).
        best_total = best_total.min(started.elapsed().as_secs_f64() * 1e3);
        steps = snap.analysis_steps();
        scan_processes = snap.scan_processes();
        let analysis = snap.analysis_time().as_secs_f64() * 1e3;
        if analysis < best_analysis {
            // The phases of the best analysis, as a JSON object.
            phases = leakscope_bench::phases_json(&snap);
        }
        best_pause = best_pause.min(snap.pause().as_secs_f64() * 1e3);
        best_analysis = best_analysis.min(analysis);
        live_bytes = snap.report().totals.live.bytes;
    }
    let (requests, rewrites) = mutation.stop();
    peaks_extra.sort_unstable();
    let peak_extra = peaks_extra[peaks_extra.len() / 2];
    let rss = leakscope_bench::rss_bytes();
    let mode = format!("{:?}", leakscope::mode()).to_lowercase();
    let mut mutated = format!(
        ",\"peak_extra_bytes\":{peak_extra},\"peak_extra_share_of_rss\":{:.4}",
        peak_extra as f64 / rss as f64
    );
    if mutators > 0 {
        mutated += &format!(
            ",\"mutators\":{mutators},\"mutator_requests\":{requests},\"mutator_rewrites\":{rewrites}"
        );
    }
    println!(
        "{{\"mode\":\"{mode}\",\"heap_mib\":{mib},\"block_bytes\":{block},\"shape\":\"{shape}\",\"scan_processes\":{scan_processes},\"analysis_steps\":{steps},\"blocks\":{n},\"live_bytes\":{live_bytes},\"rss_bytes\":{rss},\"pause_ms\":{best_pause:.3},\"analysis_ms\":{best_analysis:.1},\"total_ms\":{best_total:.1},\"pause_ms_per_gib_rss\":{:.3},\"analysis_gib_per_s\":{:.3},\"profiler_bytes_per_block\":{:.1},\"phases_ms\":{phases}{mutated}}}",
        best_pause / (rss as f64 / (1u64 << 30) as f64),
        (live_bytes as f64 / (1u64 << 30) as f64) / (best_analysis / 1e3),
        stats.profiler_bytes as f64 / stats.tracked_blocks.max(1) as f64
    );
    std::hint::black_box((&blocks, HEAD.load(Ordering::SeqCst)));
}

/// Allocates `n` zeroed blocks of `block` bytes and links them into `shape`
/// (word 0: next or a random earlier block or the left child; word 1: prev
/// or the right child; word 2: a tree node's parent). Returns the blocks,
/// the first being the head.
fn build(shape: &str, n: usize, block: usize) -> Vec<usize> {
    let words_needed = match shape {
        "random" | "list" => 1,
        "dlist" => 2,
        "tree" => 3,
        other => panic!("unknown shape {other}: random, list, dlist, tree or tasks"),
    };
    assert!(
        block >= words_needed * 8,
        "{shape} needs blocks of {} bytes",
        words_needed * 8
    );
    let layout = Layout::from_size_align(block, 8).unwrap();
    let mut blocks: Vec<usize> = Vec::with_capacity(n);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let word = |b: usize, i: usize| (b + i * 8) as *mut usize;
    for i in 0..n {
        // SAFETY: non-zero layout; the blocks live until the process exits.
        let b = unsafe { alloc_zeroed(layout) } as usize;
        assert!(b != 0);
        // Which word of which block to set to what.
        let link: &[(usize, usize, usize)] = match shape {
            "random" if i > 0 => {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                &[(b, 0, blocks[(seed % i as u64) as usize])]
            }
            "list" if i > 0 => &[(blocks[i - 1], 0, b)],
            "dlist" if i > 0 => &[(blocks[i - 1], 0, b), (b, 1, blocks[i - 1])],
            "tree" if i > 0 => {
                let parent = blocks[(i - 1) / 2];
                &[(parent, (i - 1) % 2, b), (b, 2, parent)]
            }
            _ => &[],
        };
        for &(block, index, value) in link {
            // SAFETY: `block` is a live, zeroed block of this function with
            // room for `words_needed` words, and `index < words_needed`.
            unsafe { *word(block, index) = value };
        }
        blocks.push(b);
    }
    if shape == "dlist" && n > 1 {
        // The head keeps the tail, as an intrusive list's owner does.
        // SAFETY: the head is live and has a spare word 1.
        unsafe { *word(blocks[0], 1) = blocks[n - 1] };
    }
    blocks
}

/// Spawns `n` tasks that never complete, each owning a `block`-byte vector,
/// on a runtime that is kept (and returned) so that the tasks stay alive.
fn spawn_pending_tasks(n: usize, block: usize) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for i in 0..n {
            let state = vec![i as u8; block];
            tokio::spawn(async move {
                std::future::pending::<()>().await;
                std::hint::black_box(state);
            });
        }
        tokio::task::yield_now().await;
    });
    runtime
}

/// Rewrites of long-lived blocks per second and mutator, from
/// `SNAPSHOT_REWRITES` (default 10,000: a service updating its sessions,
/// caches and connection state).
fn rewrites_per_second() -> f64 {
    std::env::var("SNAPSHOT_REWRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000.0)
}

/// The threads that change the heap during the snapshots.
struct Mutation {
    stop: &'static AtomicBool,
    requests: &'static AtomicU64,
    rewrites: &'static AtomicU64,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Mutation {
    fn start(n: usize, long_lived: &'static [usize], block: usize) -> Mutation {
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let requests: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let rewrites: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let threads = (0..n)
            .map(|i| {
                std::thread::spawn(move || {
                    mutate(i, long_lived, block, stop, requests, rewrites);
                })
            })
            .collect();
        Mutation {
            stop,
            requests,
            rewrites,
            threads,
        }
    }

    /// Stops the threads; the requests handled and the rewrites made.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("mutator");
        }
        (
            self.requests.load(Ordering::Relaxed),
            self.rewrites.load(Ordering::Relaxed),
        )
    }
}

/// One mutator: handles requests back to back (each allocates a body and a
/// batch of small objects, writes them and frees them: the churn that
/// reuses the same free chunks), and points word 0 of random long-lived
/// blocks at other random earlier blocks at a steady rate (writes spread
/// over the whole heap: each first write to a page after the fork copies
/// it).
fn mutate(
    index: usize,
    long_lived: &'static [usize],
    block: usize,
    stop: &AtomicBool,
    requests: &AtomicU64,
    rewrites: &AtomicU64,
) {
    let rate = rewrites_per_second();
    let started = Instant::now();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (index as u64 + 1);
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut handled, mut made) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let body = vec![handled as u8; block.max(64)];
        let items: Vec<Box<[u64; 4]>> = (0..16).map(|k| Box::new([k; 4])).collect();
        std::hint::black_box((&body, &items));
        handled += 1;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while made < due && long_lived.len() > 1 {
            let i = 1 + (next() % (long_lived.len() as u64 - 1)) as usize;
            let target = long_lived[(next() % i as u64) as usize];
            // SAFETY: `long_lived[i]` is a live block of the heap that
            // `build` made (never freed) with room for word 0, which only
            // this benchmark writes; a racing write of another mutator
            // leaves one of the two values, both earlier blocks.
            unsafe { std::ptr::write_volatile(long_lived[i] as *mut usize, target) };
            made += 1;
        }
    }
    requests.fetch_add(handled, Ordering::Relaxed);
    rewrites.fetch_add(made, Ordering::Relaxed);
}

/// The machine's free memory (`MemFree`), in bytes.
fn free_memory() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemFree:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Polls the machine's free memory every 5 ms until dropped; the lowest
/// reading. (Not the processes' own figures: reading another process's
/// page counts takes its memory-map lock, which would stretch the fork.)
struct FreeMemorySampler {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl FreeMemorySampler {
    fn start() -> FreeMemorySampler {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut lowest = u64::MAX;
            loop {
                lowest = lowest.min(free_memory());
                if flag.load(Ordering::Relaxed) {
                    return lowest;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        FreeMemorySampler {
            stop,
            thread: Some(thread),
        }
    }

    fn lowest(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(u64::MAX)
    }
}
