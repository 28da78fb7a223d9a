// The tests of `threads_full`, included by one test binary per wrapped
// allocator (`threads_full.rs`, `threads_full_jemalloc.rs`, `threads_full_mimalloc.rs`), each of
// which defines `Inner` and `INNER`.

use std::cell::RefCell;
use std::hint::black_box;

use leakscope::{Mode, Profiler};

use common::{current_view, figures_for, watchdog, Rng};

#[global_allocator]
static ALLOC: Profiler<Inner> = Profiler::wrap(INNER).with_mode(Mode::Full);

const THREADS: usize = 8;
const OPS_PER_THREAD: usize = 400_000;

thread_local! {
    // Lazily initialised, with a destructor that frees at thread exit.
    static SCRATCH: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

#[inline(never)]
fn stress_alloc(size: usize) -> Vec<u8> {
    black_box(Vec::with_capacity(size))
}

#[inline(never)]
fn stress_grow(v: &mut Vec<u8>, extra: usize) {
    v.reserve_exact(v.capacity() + extra);
}

/// Which planted function last (re)allocated a block.
#[derive(Clone, Copy, PartialEq)]
enum Origin {
    Alloc,
    Grow,
}

struct Outcome {
    kept: Vec<(Vec<u8>, Origin)>,
    alloc_calls: i64,
    alloc_bytes: i64,
}

fn worker(seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let mut live: Vec<(Vec<u8>, Origin)> = Vec::with_capacity(2048);
    let (mut alloc_calls, mut alloc_bytes) = (0, 0);
    for _ in 0..OPS_PER_THREAD {
        match rng.below(10) {
            0..=4 if live.len() < 2000 => {
                let size = if rng.below(100) == 0 {
                    65_536
                } else {
                    1 + rng.below(2048) as usize
                };
                live.push((stress_alloc(size), Origin::Alloc));
                alloc_calls += 1;
                alloc_bytes += size as i64;
            }
            5 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                stress_grow(&mut live[i].0, 1 + rng.below(512) as usize);
                live[i].1 = Origin::Grow;
            }
            6 => SCRATCH.with(|s| s.borrow_mut().push(stress_alloc(100))),
            _ if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                live.swap_remove(i);
            }
            _ => {}
        }
    }
    // The stress_alloc(100) calls into SCRATCH are counted by the profile too.
    let scratch = SCRATCH.with(|s| s.borrow().len()) as i64;
    Outcome {
        kept: live,
        alloc_calls: alloc_calls + scratch,
        alloc_bytes: alloc_bytes + 100 * scratch,
    }
}

#[test]
fn concurrent_churn_ends_with_exact_inuse() {
    watchdog(300);
    let outcomes: Vec<Outcome> = (0..THREADS as u64)
        .map(|i| std::thread::spawn(move || worker(0x9E37_79B9 + i)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .collect();
    let view = current_view();
    let sum = |origin: Origin| {
        let blocks = outcomes
            .iter()
            .flat_map(|o| &o.kept)
            .filter(|(_, o)| *o == origin);
        let (n, bytes) = blocks.fold((0i64, 0i64), |(n, b), (v, _)| {
            (n + 1, b + v.capacity() as i64)
        });
        (n, bytes)
    };
    let (alloc_live, alloc_live_bytes) = sum(Origin::Alloc);
    let (grow_live, grow_live_bytes) = sum(Origin::Grow);
    let calls: i64 = outcomes.iter().map(|o| o.alloc_calls).sum();
    let bytes: i64 = outcomes.iter().map(|o| o.alloc_bytes).sum();

    let stress_alloc = figures_for(&view, "::stress_alloc");
    let stress_grow = figures_for(&view, "::stress_grow");
    // Every call allocated once; the SCRATCH blocks were freed at thread exit.
    assert_eq!(stress_alloc, [calls, bytes, alloc_live, alloc_live_bytes]);
    assert_eq!(
        [stress_grow[2], stress_grow[3]],
        [grow_live, grow_live_bytes]
    );

    drop(outcomes);
    let after = current_view();
    assert_eq!(figures_for(&after, "::stress_alloc")[2..], [0, 0]);
    assert_eq!(figures_for(&after, "::stress_grow")[2..], [0, 0]);
}

#[inline(never)]
fn short_lived_alloc() -> Vec<u8> {
    black_box(Vec::with_capacity(333))
}

/// Threads that come and go hand their counter blocks on: every allocation
/// is still counted, and the profiler's memory does not grow per thread.
#[test]
fn thread_churn_keeps_counts_and_bounded_memory() {
    watchdog(300);
    let spawn_round = |n: usize| {
        for _ in 0..n {
            std::thread::spawn(|| {
                for _ in 0..10 {
                    drop(short_lived_alloc());
                }
            })
            .join()
            .unwrap();
        }
    };
    spawn_round(50);
    let before = leakscope::stats().counter_blocks;
    spawn_round(500);
    let after = leakscope::stats().counter_blocks;
    let counted = figures_for(&current_view(), "::short_lived_alloc");
    assert_eq!(counted, [5500, 5500 * 333, 0, 0]);
    // 500 more threads reuse blocks; the other test's 8 workers may add some.
    assert!(
        after <= before + 9,
        "counter blocks grew from {before} to {after}"
    );
}
