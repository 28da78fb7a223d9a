//! Labels reach the profile as pprof sample labels (so `go tool pprof
//! -tagfocus` filters by them), and `reattribute` charges a pooled block to
//! the code that took it from the pool.

use std::ffi::OsStr;
use std::hint::black_box;
use std::sync::Mutex;

use leakscope::{Mode, Profiler};

mod common;
use common::{current_view, figures_for, go_pprof};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

/// The tests of this binary read the whole process's profile.
static SERIAL: Mutex<()> = Mutex::new(());

#[inline(never)]
fn handle_request(bytes: usize) -> Vec<u8> {
    black_box(vec![1u8; bytes])
}

/// Live bytes of samples whose stack has `function` and whose labels are
/// exactly `labels`.
fn labelled_inuse(function: &str, labels: &[(&str, &str)]) -> i64 {
    let view = current_view();
    let index = view.sample_index(Some("inuse_space")).unwrap();
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    view.samples
        .iter()
        .filter(|s| view.function_names(s).any(|f| f.contains(function)))
        .filter(|s| {
            let mut have = s.labels.clone();
            have.sort();
            have == want
        })
        .map(|s| s.values[index])
        .sum()
}

#[test]
fn labels_split_one_function_by_request_kind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut kept = Vec::new();
    {
        let _rpc = leakscope::label("rpc", "Echo");
        for _ in 0..10 {
            kept.push(handle_request(10_000));
        }
        {
            let _tenant = leakscope::label("tenant", "blue");
            for _ in 0..3 {
                kept.push(handle_request(7_000));
            }
        }
        // The inner guard is gone: back to rpc=Echo alone.
        kept.push(handle_request(10_000));
    }
    {
        let _rpc = leakscope::label("rpc", "Put");
        for _ in 0..5 {
            kept.push(handle_request(20_000));
        }
    }
    // No guard: no labels.
    kept.push(handle_request(4_000));

    let f = "::handle_request";
    assert_eq!(labelled_inuse(f, &[("rpc", "Echo")]), 110_000);
    assert_eq!(
        labelled_inuse(f, &[("rpc", "Echo"), ("tenant", "blue")]),
        21_000
    );
    assert_eq!(labelled_inuse(f, &[("rpc", "Put")]), 100_000);
    assert_eq!(labelled_inuse(f, &[]), 4_000);

    // go tool pprof filters by the labels.
    let path = std::env::temp_dir().join(format!("leakscope-labels-{}.pb.gz", std::process::id()));
    leakscope::heap_profile().write_pprof(&path).unwrap();
    let go = |tagfocus: &str| {
        let tagfocus = format!("-tagfocus={tagfocus}");
        go_pprof(&[
            OsStr::new("-top"),
            OsStr::new("-unit=B"),
            OsStr::new("-symbolize=none"),
            OsStr::new("-sample_index=inuse_space"),
            OsStr::new(&tagfocus),
            path.as_os_str(),
        ])
    };
    let flat_of_handler = |top: &str| -> String {
        top.lines()
            .find(|l| l.ends_with("labels_and_pools::handle_request"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("handle_request missing:\n{top}"))
            .to_string()
    };
    assert_eq!(flat_of_handler(&go("rpc=Put")), "100000B");
    assert_eq!(flat_of_handler(&go("rpc=Echo")), "131000B");
    assert_eq!(flat_of_handler(&go("tenant=blue")), "21000B");
    std::fs::remove_file(&path).ok();
    drop(kept);
}

/// A pool that allocates its buffers ahead of time.
struct Pool(Vec<Vec<u8>>);

#[inline(never)]
fn pool_refill(pool: &mut Pool, n: usize) {
    for _ in 0..n {
        pool.0.push(vec![0u8; 65_536]);
    }
}

#[inline(never)]
fn pool_taker_keeps(pool: &mut Pool) -> Vec<u8> {
    let buffer = pool.0.pop().unwrap();
    leakscope::reattribute(buffer.as_ptr());
    black_box(buffer)
}

#[test]
fn reattribute_charges_a_pooled_buffer_to_its_taker() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut pool = Pool(Vec::with_capacity(8));
    pool_refill(&mut pool, 8);
    let before = figures_for(&current_view(), "::pool_refill");
    assert_eq!(before, [8, 8 * 65_536, 8, 8 * 65_536]);

    let taken: Vec<Vec<u8>> = (0..3).map(|_| pool_taker_keeps(&mut pool)).collect();
    let view = current_view();
    // Live bytes moved to the taker...
    let taker = figures_for(&view, "::pool_taker_keeps");
    assert_eq!(taker[2..], [3, 3 * 65_536]);
    // ...and left the pool's refill site, whose allocation counts stay.
    let refill = figures_for(&view, "::pool_refill");
    assert_eq!(refill, [8, 8 * 65_536, 5, 5 * 65_536]);

    // Freed by the taker: gone from both.
    drop(taken);
    let view = current_view();
    assert_eq!(figures_for(&view, "::pool_taker_keeps")[2..], [0, 0]);
    assert_eq!(figures_for(&view, "::pool_refill")[2..], [5, 5 * 65_536]);
    drop(pool);
}
