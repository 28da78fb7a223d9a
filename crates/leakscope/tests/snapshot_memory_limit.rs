//! A snapshot never takes its host down: under a memory cgroup limit, a
//! process whose threads keep writing its heap while the snapshot's child
//! analyses (each written page is copied) must see the snapshot abandoned
//! with an error that says why, and live on.
//!
//! The test runs itself again inside a new cgroup (v1 memory controller,
//! which the test machines mount writable for root) with a 520 MiB limit;
//! the inner process holds 256 MiB that it rewrites continuously, and a
//! million small blocks that keep the analysis busy meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use leakscope::{Mode, Profiler, SnapshotError};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

const LIMIT: u64 = 520 << 20;
const HELD: usize = 256 << 20;
const BLOCK: usize = 64 << 10;
/// Small blocks that give the analysis work (about a second), while the
/// writer copies pages.
const SMALL: usize = 1 << 20;

fn memory_cgroup() -> std::path::PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = text
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .expect("a cgroup v1 memory controller (the test machines mount one)");
    std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'))
}

fn inside(cgroup: &str) {
    std::fs::write(
        format!("{cgroup}/cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("join the test cgroup");
    let mut blocks: Vec<Vec<u8>> = (0..HELD / BLOCK)
        .map(|i| vec![i as u8 | 1; BLOCK])
        .collect();
    let small: Vec<Box<[u64; 6]>> = (0..SMALL).map(|i| Box::new([i as u64; 6])).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        // Rewrites every page of the heap, again and again: each write after
        // the fork copies a page.
        let ptrs: Vec<usize> = blocks.iter_mut().map(|b| b.as_mut_ptr() as usize).collect();
        std::thread::spawn(move || {
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1);
                for &p in &ptrs {
                    for page in (0..BLOCK).step_by(4096) {
                        // SAFETY: each pointer is a live BLOCK-byte vector
                        // kept by the main thread until the writer stops.
                        unsafe { std::ptr::write_volatile((p + page) as *mut u8, round) };
                    }
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let outcome = leakscope::snapshot();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    match outcome {
        Err(SnapshotError::MemoryPressure(why)) => println!("abandoned: {why}"),
        Err(e) => println!("failed otherwise: {e}"),
        Ok(s) => println!(
            "completed: {} blocks in {:?}",
            s.report().totals.live.blocks,
            s.analysis_time()
        ),
    }
    std::hint::black_box((&blocks, &small));
}

fn main() {
    if let Some(cgroup) = std::env::var_os("LEAKSCOPE_TEST_CGROUP") {
        inside(&cgroup.to_string_lossy());
        return;
    }
    let cgroup = memory_cgroup().join(format!("leakscope-test-{}", std::process::id()));
    std::fs::create_dir(&cgroup).expect("create a memory cgroup (the test runs as root)");
    std::fs::write(cgroup.join("memory.limit_in_bytes"), LIMIT.to_string()).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("LEAKSCOPE_TEST_CGROUP", &cgroup)
        .output()
        .unwrap();
    let failcnt = std::fs::read_to_string(cgroup.join("memory.failcnt")).unwrap_or_default();
    let _ = std::fs::remove_dir(&cgroup);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    // The process lived (no OOM kill) and the snapshot was abandoned with
    // the reason.
    assert!(
        out.status.success(),
        "the process did not survive: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("abandoned: the memory cgroup is at"),
        "{stdout} (cgroup failcnt {failcnt})"
    );
    println!("test snapshot_abandoned_under_a_memory_limit ... ok");
}
