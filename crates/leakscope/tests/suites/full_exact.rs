// The tests of `full_exact`, included by one test binary per wrapped
// allocator (`full_exact.rs`, `full_exact_jemalloc.rs`, `full_exact_mimalloc.rs`), each of
// which defines `Inner` and `INNER`.

use std::alloc::{alloc, dealloc, Layout};
use std::hint::black_box;

use leakscope::{Mode, Profiler};

use common::{current_view, figures_for};

#[global_allocator]
static ALLOC: Profiler<Inner> = Profiler::wrap(INNER).with_mode(Mode::Full);

#[inline(never)]
fn planted_keep(n: usize, size: usize) -> Vec<Vec<u8>> {
    let mut kept = Vec::with_capacity(n);
    for _ in 0..n {
        kept.push(black_box(Vec::with_capacity(size)));
    }
    kept
}

#[inline(never)]
fn planted_churn(n: usize, size: usize) {
    for _ in 0..n {
        black_box(Vec::<u8>::with_capacity(size));
    }
}

#[inline(never)]
fn planted_growth() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..1000 {
        v.push(black_box(i as u8));
    }
    v
}

#[inline(never)]
fn planted_aligned_and_huge() -> (usize, usize) {
    let aligned = Layout::from_size_align(100, 4096).unwrap();
    let huge = Layout::from_size_align(1 << 30, 16).unwrap();
    // SAFETY: both layouts have non-zero size.
    let (a, h) = unsafe { (black_box(alloc(aligned)), black_box(alloc(huge))) };
    assert!(!a.is_null() && !h.is_null());
    assert_eq!(a as usize % 4096, 0);
    // SAFETY: freed with the layout they were allocated with; `a` is kept.
    unsafe { dealloc(h, huge) };
    (a as usize, aligned.size())
}

#[test]
fn kept_and_churned_blocks_are_exact() {
    let kept = planted_keep(500, 1000);
    planted_churn(3000, 777);
    let view = current_view();
    let vec_header = std::mem::size_of::<Vec<u8>>() as i64;
    assert_eq!(
        figures_for(&view, "::planted_keep"),
        [
            501,
            500 * 1000 + 500 * vec_header,
            501,
            500 * 1000 + 500 * vec_header
        ]
    );
    assert_eq!(
        figures_for(&view, "::planted_churn"),
        [3000, 3000 * 777, 0, 0]
    );
    drop(kept);
    let after = current_view();
    assert_eq!(
        figures_for(&after, "::planted_keep"),
        [501, 500 * 1000 + 500 * vec_header, 0, 0]
    );
}

#[test]
fn realloc_counts_as_free_plus_alloc() {
    let v = planted_growth();
    let view = current_view();
    // u8 vectors grow 8, 16, ..., 1024: eight allocations, one live.
    let total: i64 = (3..=10).map(|k| 1i64 << k).sum();
    assert_eq!(figures_for(&view, "::planted_growth"), [8, total, 1, 1024]);
    drop(v);
}

#[test]
fn any_alignment_and_huge_blocks() {
    let (addr, size) = planted_aligned_and_huge();
    let view = current_view();
    assert_eq!(
        figures_for(&view, "::planted_aligned_and_huge"),
        [2, (1 << 30) + 100, 1, 100]
    );
    let layout = Layout::from_size_align(size, 4096).unwrap();
    // SAFETY: allocated above with this layout and not freed since.
    unsafe { dealloc(addr as *mut u8, layout) };
}

#[test]
fn stacks_start_at_the_caller_not_the_allocator() {
    let kept = planted_keep(3, 64);
    let view = current_view();
    let mut planted = 0;
    for s in &view.samples {
        let leaf = view.function_names(s).next().unwrap_or("");
        assert!(
            !leaf.starts_with("leakscope::")
                && !leaf.starts_with("<leakscope::")
                && !leaf.starts_with("__rust"),
            "allocator frame at the leaf: {:?}",
            view.function_names(s).collect::<Vec<_>>()
        );
        if view
            .function_names(s)
            .any(|f| f.ends_with("::planted_keep"))
        {
            // Vec::with_capacity and RawVec are dropped from the leaf end.
            assert!(leaf.ends_with("::planted_keep"), "leaf is {leaf}");
            planted += 1;
        }
        assert!(
            !view
                .function_names(s)
                .any(|f| f.contains("leakscope::export")),
            "the profiler's own allocations leaked into the profile"
        );
    }
    assert!(planted > 0);
    drop(kept);
}
