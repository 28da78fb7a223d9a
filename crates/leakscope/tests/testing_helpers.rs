//! `leakscope::testing` catches a planted leak and passes clean code, under
//! the test harness's parallel threads (and with threads of our own).

use std::hint::black_box;
use std::panic::catch_unwind;
use std::sync::Mutex;

use leakscope::testing::{assert_max_inuse, assert_no_leak, measure};
use leakscope::{Mode, Profiler};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

static SESSION_CACHE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Gives the cache room up front, so that a push inside a measured scope
/// allocates only the session itself.
fn reserve_cache() {
    let mut cache = SESSION_CACHE.lock().unwrap();
    if cache.capacity() - cache.len() < 32 {
        cache.reserve(64);
    }
}

#[inline(never)]
fn remember_session(bytes: usize) {
    SESSION_CACHE
        .lock()
        .unwrap()
        .push(black_box(vec![1u8; bytes]));
}

#[inline(never)]
fn clean_request(n: usize) -> usize {
    let mut total = 0;
    for i in 0..n {
        let body = black_box(vec![i as u8; 100 + i % 900]);
        let words: Vec<String> = (0..5).map(|w| format!("{w}-{i}")).collect();
        total += body.len() + words.len();
    }
    total
}

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn clean_code_passes_and_returns_its_value() {
    assert_eq!(
        assert_no_leak(|| clean_request(2_000)),
        clean_request(2_000)
    );
}

#[test]
fn a_planted_leak_is_caught_with_its_stack_and_holder() {
    reserve_cache();
    let err = catch_unwind(|| assert_no_leak(|| remember_session(12_345))).unwrap_err();
    let message = panic_message(err);
    assert!(
        message.contains("kept 12345 bytes in 1 blocks"),
        "{message}"
    );
    assert!(message.contains("remember_session"), "{message}");
    assert!(
        message.contains("SESSION_CACHE"),
        "the holder is named: {message}"
    );
}

#[test]
fn parallel_threads_see_only_their_own_memory() {
    reserve_cache();
    // Eight threads at once: the clean ones allocate and free a lot while
    // the leaky ones keep exact amounts; each scope sees only its thread.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let (_, report) = measure(|| {
                    if i % 2 == 0 {
                        clean_request(20_000);
                    } else {
                        remember_session(1_000 * i);
                        clean_request(20_000);
                    }
                });
                (i, report)
            })
        })
        .collect();
    for t in threads {
        let (i, report) = t.join().unwrap();
        if i % 2 == 0 {
            assert_eq!(report.kept_bytes, 0, "thread {i}: {report:?}");
        } else {
            assert_eq!(
                report.kept_bytes,
                1_000 * i as u64,
                "thread {i}: {report:?}"
            );
            assert_eq!(report.kept_blocks, 1, "thread {i}: {report:?}");
        }
    }
}

#[test]
fn peak_in_use_is_bounded() {
    let burst = || {
        let big = black_box(vec![0u8; 300_000]);
        drop(big);
        clean_request(100)
    };
    let (_, report) = measure(burst);
    assert!(
        (300_000..320_000).contains(&report.peak_bytes),
        "{report:?}"
    );
    assert_eq!(report.kept_bytes, 0);
    assert_max_inuse(400_000, burst);
    let err = catch_unwind(|| assert_max_inuse(200_000, burst)).unwrap_err();
    let message = panic_message(err);
    assert!(message.contains("over the limit of 200000"), "{message}");
}

#[test]
fn panics_inside_the_closure_pass_through() {
    let err = catch_unwind(|| assert_no_leak(|| panic!("the test's own failure"))).unwrap_err();
    assert_eq!(panic_message(err), "the test's own failure");
}
