//! Snapshots and profiles while threads allocate, reallocate and free,
//! start and exit, and one thread forks children that allocate: run under
//! AddressSanitizer by `scripts/test.sh`, so that a use after free, a double
//! free, an overflow or a free handed the wrong pointer anywhere in the
//! profiler's paths fails the test command. Bounded: a fixed number of
//! rounds, and a watchdog that aborts after two minutes.
//!
//! Built with `-asan-globals=0 -asan-stack=0`: a snapshot scans globals and
//! thread stacks conservatively, word by word, and would trip their red
//! zones; heap checking, the point here, stays on.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leakscope::snapshot::LeakKind;
use leakscope::{Mode, Profiler};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[inline(never)]
fn churn(seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed);
    let mut live: Vec<Vec<u8>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match rng.below(10) {
            0..=3 if live.len() < 400 => {
                live.push(black_box(vec![1u8; 1 + rng.below(4000) as usize]))
            }
            4 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                live[i].reserve(rng.below(20_000) as usize);
            }
            5 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                live[i].shrink_to_fit();
                live[i].truncate(1);
                live[i].shrink_to_fit();
            }
            6 => {
                // Threads that start, allocate and exit meanwhile.
                let n = rng.below(100) as usize;
                std::thread::spawn(move || black_box(vec![0u8; n * 10]))
                    .join()
                    .unwrap();
            }
            _ if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                live.swap_remove(i);
            }
            _ => {}
        }
    }
}

static CHILDREN: AtomicU64 = AtomicU64::new(0);

/// Forks children that allocate, profile and exit, while the others churn.
#[inline(never)]
fn forker(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: fork; the child only allocates (made safe by the
        // profiler's fork handlers, which is what is tested), builds a
        // profile and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let kept: Vec<Vec<u8>> = (0..50).map(|i| vec![3u8; 100 + i]).collect();
            let profile = leakscope::heap_profile();
            let code = if profile.sites().is_empty() { 3 } else { 0 };
            drop(black_box(kept));
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
        CHILDREN.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[inline(never)]
fn steady_block() -> Box<[u8; 50_000]> {
    black_box(Box::new([5u8; 50_000]))
}

fn main() {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        eprintln!("stress: still running after 120 s, assuming a deadlock");
        std::process::abort();
    });
    let steady = steady_block();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers: Vec<_> = (0..6)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || churn(0xC0FFEE + i, stop))
        })
        .collect();
    let forking = stop.clone();
    workers.push(std::thread::spawn(move || forker(forking)));
    std::thread::sleep(Duration::from_millis(50));
    let rounds = 12;
    for round in 0..rounds {
        let snap = leakscope::snapshot().unwrap_or_else(|e| panic!("snapshot {round}: {e}"));
        let t = &snap.report().totals;
        let parts = t.still_reachable.blocks
            + t.possibly_lost.blocks
            + t.definitely_lost.blocks
            + t.indirectly_lost.blocks;
        assert_eq!(
            parts, t.live.blocks,
            "round {round}: categories do not add up"
        );
        let block = snap
            .block_at(steady.as_ptr())
            .expect("the steady block is tracked");
        assert_eq!(block.size, 50_000);
        assert_eq!(block.kind, LeakKind::StillReachable, "round {round}");
        if round % 4 == 0 {
            let profile = leakscope::heap_profile().to_pprof();
            assert!(!profile.sample.is_empty(), "round {round}: empty profile");
        }
        // Leave the sampled path some work too.
        if round == rounds / 2 {
            leakscope::set_mode(Mode::Sampled);
            std::thread::sleep(Duration::from_millis(20));
            leakscope::set_mode(Mode::Full);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let children = CHILDREN.load(Ordering::Relaxed);
    assert!(children > 0, "no child was forked");
    println!("stress: {rounds} snapshots, {children} forked children, no fault");
    drop(steady);
}
