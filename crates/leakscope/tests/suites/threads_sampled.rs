// The tests of `threads_sampled`, included by one test binary per wrapped
// allocator (`threads_sampled.rs`, `threads_sampled_jemalloc.rs`, `threads_sampled_mimalloc.rs`), each of
// which defines `Inner` and `INNER`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};

use leakscope::{Mode, Profiler};

use common::{current_view, figures_for, watchdog, Rng};

#[global_allocator]
static ALLOC: Profiler<Inner> = Profiler::wrap(INNER).with_mode(Mode::Sampled).with_rate(4096);

#[inline(never)]
fn switched_alloc(size: usize) -> Vec<u8> {
    black_box(Vec::with_capacity(size))
}

fn worker(seed: u64) {
    let mut rng = Rng(seed);
    let mut live: Vec<Vec<u8>> = Vec::with_capacity(1024);
    for _ in 0..300_000 {
        if live.len() < 1000 && rng.below(2) == 0 {
            live.push(switched_alloc(1 + rng.below(8192) as usize));
        } else if !live.is_empty() {
            let i = rng.below(live.len() as u64) as usize;
            let mut v = live.swap_remove(i);
            if rng.below(4) == 0 {
                v.reserve_exact(v.capacity() + 100);
                live.push(v);
            }
        }
    }
}

#[test]
fn mode_switches_under_load_leave_nothing_behind() {
    watchdog(300);
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let switcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let modes = [
                Mode::Full,
                Mode::Off,
                Mode::Sampled,
                Mode::Full,
                Mode::Sampled,
                Mode::Off,
            ];
            let mut switches = 0;
            while !done.load(Ordering::Relaxed) {
                leakscope::set_mode(modes[switches % modes.len()]);
                switches += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            switches
        })
    };
    let workers: Vec<_> = (0..8u64)
        .map(|i| std::thread::spawn(move || worker(77 + i)))
        .collect();
    for w in workers {
        w.join().expect("worker panicked");
    }
    done.store(true, Ordering::Relaxed);
    let switches = switcher.join().unwrap();
    assert!(switches > 10, "only {switches} mode switches happened");
    leakscope::set_mode(Mode::Sampled);
    let view = current_view();
    let [alloc_objects, _, inuse_objects, inuse_space] = figures_for(&view, "::switched_alloc");
    assert!(alloc_objects > 0, "nothing was sampled");
    assert_eq!(
        (inuse_objects, inuse_space),
        (0, 0),
        "stale entries survived the frees"
    );
}
