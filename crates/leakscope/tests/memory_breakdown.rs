//! The memory breakdown against ground truth: 8 threads fragment their
//! arenas (interleaved short- and long-lived blocks, the short ones freed),
//! beside a touched anonymous mapping and a mapped file of known sizes. The
//! parts must sum to RSS within 2% (any remainder named), the heap's parts
//! must hold what was planted, and the walk must find the fragmentation.

use std::alloc::{alloc, dealloc, Layout};
use std::sync::{Arc, Barrier};

use leakscope::memory::{Breakdown, HeapSource, LiveSource, PartKind};
use leakscope::{snapshot_with, BlockSource, Mode, Profiler, SnapshotOptions};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

const THREADS: usize = 8;
const PAIRS: usize = 3000;
/// Sizes of the blocks: 1-4 KiB, below the mmap threshold and the tcache's
/// largest, so every block is an arena chunk.
fn size_of(i: usize) -> usize {
    1024 + (i * 997) % 3072
}

const MIB: u64 = 1 << 20;

/// One test at a time: another test's threads allocating between the reads
/// of smaps and RSS would blur the sums.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `len` bytes of anonymous memory, every page touched.
fn touched_anonymous(len: usize) -> *mut libc::c_void {
    // SAFETY: a fresh private anonymous mapping; callers unmap it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: the mapping is ours and `len` long.
    unsafe { p.cast::<u8>().write_bytes(1, len) };
    p
}

/// Every byte of RSS is in one part, and what no part explains is at most
/// 2% of RSS (and named "unexplained").
fn assert_sums_to_rss(b: &Breakdown, what: &str) {
    let sum = b.sum_of_parts();
    let unexplained = b.part(PartKind::Unexplained);
    println!(
        "{what}: RSS {} MiB, parts {} MiB, unexplained {} KiB\n{}",
        b.rss / MIB,
        sum / MIB,
        unexplained / 1024,
        b.render()
    );
    assert!(
        sum.abs_diff(b.rss) * 50 <= b.rss,
        "{what}: parts sum to {sum}, RSS is {}",
        b.rss
    );
    assert!(
        unexplained * 50 <= b.rss,
        "{what}: {unexplained} bytes unexplained of {}",
        b.rss
    );
}

#[test]
fn eight_threads_with_fragmented_arenas() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ready = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let (mut live_bytes, mut freed_bytes) = (0u64, 0u64);
    for i in 0..PAIRS {
        live_bytes += size_of(2 * i) as u64;
        freed_bytes += size_of(2 * i + 1) as u64;
    }
    let (live_bytes, freed_bytes) = (live_bytes * THREADS as u64, freed_bytes * THREADS as u64);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (ready, done) = (ready.clone(), done.clone());
            std::thread::spawn(move || {
                let blocks: Vec<(usize, Layout)> = (0..2 * PAIRS)
                    .map(|i| {
                        let layout = Layout::from_size_align(size_of(i), 8).unwrap();
                        // SAFETY: non-zero size; freed below.
                        let p = unsafe { alloc(layout) };
                        assert!(!p.is_null());
                        // Every page touched: all of it is resident.
                        // SAFETY: `p` has `layout.size()` writable bytes.
                        unsafe { p.write_bytes(0x5a, layout.size()) };
                        (p as usize, layout)
                    })
                    .collect();
                // The short-lived ones (odd) go: holes between the others.
                let (kept, freed): (Vec<_>, Vec<_>) = blocks
                    .into_iter()
                    .enumerate()
                    .partition(|(i, _)| i % 2 == 0);
                for (_, (p, layout)) in freed {
                    // SAFETY: allocated above with this layout.
                    unsafe { dealloc(p as *mut u8, layout) };
                }
                ready.wait();
                done.wait();
                for (_, (p, layout)) in kept {
                    // SAFETY: as above.
                    unsafe { dealloc(p as *mut u8, layout) };
                }
            })
        })
        .collect();
    ready.wait();

    // Memory outside the heap, of known size: 16 MiB of anonymous memory
    // touched, 4 MiB of a file read through a mapping.
    let anon_len = 16 * MIB as usize;
    let anon = touched_anonymous(anon_len);
    let file_len = 4 * MIB as usize;
    let path = std::env::temp_dir().join(format!("leakscope-memory-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; file_len]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a private read-only mapping of a file we just wrote.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            file_len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(mapped, libc::MAP_FAILED);
    // Read every page (the sum keeps the reads).
    let touched: u64 = (0..file_len)
        .step_by(4096)
        // SAFETY: inside the mapping.
        .map(|o| u64::from(unsafe { *mapped.cast::<u8>().add(o) }))
        .sum();
    assert_eq!(touched, 7 * (file_len as u64 / 4096));

    let walked = snapshot_with(SnapshotOptions {
        blocks: BlockSource::HeapWalk,
        ..SnapshotOptions::default()
    })
    .expect("heap walk snapshot");
    let cheap = leakscope::memory::breakdown().expect("breakdown without a walk");
    done.wait();
    for w in workers {
        w.join().unwrap();
    }
    // SAFETY: both mappings are ours and no longer read.
    unsafe {
        libc::munmap(anon, anon_len);
        libc::munmap(mapped, file_len);
    }
    let _ = std::fs::remove_file(&path);

    let walk = walked
        .report()
        .memory
        .as_ref()
        .expect("the snapshot's breakdown");
    assert_sums_to_rss(walk, "with the walk");
    assert_sums_to_rss(&cheap, "without a walk");
    for b in [walk, &cheap] {
        // The planted blocks are in use, and the holes between them are
        // resident memory the allocator keeps.
        assert!(
            b.part(PartKind::HeapInUse) >= live_bytes,
            "in use {} < planted {live_bytes}",
            b.part(PartKind::HeapInUse)
        );
        assert!(
            b.part(PartKind::HeapFree) * 10 >= freed_bytes * 9,
            "kept free {} < 90% of freed {freed_bytes}",
            b.part(PartKind::HeapFree)
        );
        assert!(b.part(PartKind::OtherAnonymous) >= 16 * MIB);
        assert!(b.part(PartKind::FileBacked) >= 4 * MIB);
        assert!(b.part(PartKind::Code) > 0 && b.part(PartKind::Data) > 0);
        assert!(b.part(PartKind::Leakscope) > 0, "full mode's live table");
        let stacks = b.parts.iter().find(|p| p.kind == PartKind::ThreadStacks);
        assert!(
            stacks.is_some_and(|p| p.mappings as usize > THREADS),
            "{stacks:?}: the main thread's and the 8 workers' stacks"
        );
        let live = b.heap.live.expect("live figures");
        assert!(live.amount.bytes >= live_bytes);
        assert!(live.amount.blocks >= (THREADS * PAIRS) as u64);
    }
    assert_eq!(walk.heap.live.unwrap().from, LiveSource::Walk);
    assert_eq!(cheap.heap.live.unwrap().from, LiveSource::LiveTable);
    assert_eq!(cheap.heap.allocator.from, HeapSource::Mallinfo2);

    // Per arena, from the walk: the threads' arenas are half holes.
    let a = &walk.heap.allocator;
    assert_eq!(a.from, HeapSource::Walk);
    assert!(a.arenas.len() > 1, "one arena for 8 threads");
    let fragmented = a
        .arenas
        .iter()
        .filter(|ar| leakscope_profile::memory::fragmentation(ar) > 0.3)
        .count();
    assert!(
        fragmented >= 1,
        "no arena over 30% fragmented: {:?}",
        a.arenas
    );
    assert!(a.free_bytes() >= freed_bytes * 9 / 10);
}

#[test]
fn the_endpoint_serves_the_breakdown_and_refs_carry_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = leakscope::http::router_with(
        leakscope::http::Options::default().with_history_interval(None),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await });
    let get = |path: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent.get(format!("{base}{path}")).call().expect("request");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap())
    };
    let len = 32 * MIB as usize;
    let anon = touched_anonymous(len);

    let (status, json) = get("/debug/leakscope/memory?format=json");
    assert_eq!(status, 200, "{json}");
    let b = Breakdown::from_json(&json).expect("a breakdown");
    assert_eq!(b.pid, std::process::id());
    assert_sums_to_rss(&b, "endpoint");
    // glibc's mmapped chunks are moved out of "other anonymous" at their
    // mapped size (resident or not), so up to that much of ours may move.
    let at_least = 32 * MIB - b.heap.allocator.mmapped.bytes;
    assert!(b.part(PartKind::OtherAnonymous) >= at_least);
    let (status, text) = get("/debug/leakscope/memory");
    assert_eq!(status, 200);
    assert!(
        text.starts_with("Memory of pid") && text.contains("other anonymous mappings"),
        "{text}"
    );
    assert_eq!(get("/debug/leakscope/memory?format=xml").0, 400);

    let (status, refs) = get("/debug/leakscope/refs?format=json");
    assert_eq!(status, 200);
    let report = leakscope_profile::snapshot::SnapshotReport::from_json(&refs).unwrap();
    let memory = report.memory.expect("the snapshot's breakdown");
    assert!(
        memory.part(PartKind::OtherAnonymous) >= 32 * MIB - memory.heap.allocator.mmapped.bytes
    );
    // SAFETY: ours, no longer used.
    unsafe { libc::munmap(anon, len) };
}
