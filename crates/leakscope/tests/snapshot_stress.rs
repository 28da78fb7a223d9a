//! Snapshots while eight threads allocate, reallocate, free, and come and go:
//! no crash, no deadlock, consistent results, and the pause is measured.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leakscope::snapshot::LeakKind;
use leakscope::{Mode, Profiler};

mod common;
use common::{watchdog, Rng};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

#[inline(never)]
fn churn(seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed);
    let mut live: Vec<Vec<u8>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match rng.below(8) {
            0..=3 if live.len() < 500 => {
                live.push(black_box(vec![1u8; 1 + rng.below(4000) as usize]))
            }
            4 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                live[i].reserve(rng.below(10_000) as usize);
            }
            5 => {
                // Threads that start, allocate and exit during snapshots.
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

#[inline(never)]
fn steady_block() -> Box<[u8; 50_000]> {
    black_box(Box::new([5u8; 50_000]))
}

#[test]
fn repeated_snapshots_under_churn() {
    watchdog(600);
    let steady = steady_block();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || churn(0xC0FFEE + i, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let mut pauses = Vec::new();
    for round in 0..20 {
        let snap = leakscope::snapshot().unwrap_or_else(|e| panic!("snapshot {round} failed: {e}"));
        pauses.push(snap.pause());
        let not_stopped: Vec<_> = snap
            .report()
            .threads
            .iter()
            .filter(|t| !t.stopped)
            .collect();
        assert!(
            not_stopped.len() <= 1,
            "round {round}: threads did not stop: {not_stopped:?}"
        );
        let t = &snap.report().totals;
        let parts = t.still_reachable.blocks
            + t.possibly_lost.blocks
            + t.definitely_lost.blocks
            + t.indirectly_lost.blocks;
        assert_eq!(
            parts, t.live.blocks,
            "round {round}: categories do not add up"
        );
        assert!(t.live.blocks > 100, "round {round}: {t:?}");
        let block = snap
            .block_at(steady.as_ptr())
            .expect("the steady block is tracked");
        assert_eq!(block.size, 50_000);
        assert_eq!(block.kind, LeakKind::StillReachable, "round {round}");
        assert!(
            snap.report().threads.len() >= 9,
            "round {round}: {:?}",
            snap.report().threads.len()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    pauses.sort();
    let median = pauses[pauses.len() / 2];
    println!(
        "snapshot pause under churn: median {median:?}, max {:?}",
        pauses.last().unwrap()
    );
    assert!(median < Duration::from_secs(1), "median pause {median:?}");
    drop(steady);
}
