//! Tracing spans become allocation labels that `go tool pprof -tagfocus`
//! filters on.

use std::hint::black_box;

use leakscope::span_labels::SpanLabels;
use leakscope::{Mode, Profiler};
use tracing_subscriber::prelude::*;

mod common;
use common::go_pprof;

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

#[inline(never)]
fn answer_rpc(bytes: usize) -> Vec<u8> {
    black_box(vec![2u8; bytes])
}

fn go_top(file: &std::path::Path, tagfocus: &str) -> String {
    use std::ffi::OsStr;
    let tagfocus = format!("-tagfocus={tagfocus}");
    go_pprof(&[
        OsStr::new("-top"),
        OsStr::new("-unit=B"),
        OsStr::new("-symbolize=none"),
        OsStr::new(&tagfocus),
        file.as_os_str(),
    ])
}

fn flat_of(top: &str, function: &str) -> String {
    top.lines()
        .find(|l| l.ends_with(function))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{function} missing:\n{top}"))
        .to_string()
}

#[test]
fn spans_split_a_profile_by_method() {
    let subscriber = tracing_subscriber::registry().with(SpanLabels::new().with_fields(["method"]));
    let mut kept = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..10 {
            let span = tracing::info_span!("rpc", method = "Echo", request_id = 7);
            let _entered = span.enter();
            kept.push(answer_rpc(10_000));
        }
        for _ in 0..5 {
            let span = tracing::info_span!("rpc", method = "Put");
            let _entered = span.enter();
            kept.push(answer_rpc(20_000));
            // A nested span adds its name; the outer method stays.
            let inner = tracing::info_span!("encode");
            let _inner = inner.enter();
            kept.push(answer_rpc(3_000));
        }
        // Outside any span: no labels.
        kept.push(answer_rpc(1_000));
    });

    let path = std::env::temp_dir().join(format!("leakscope-spans-{}.pb.gz", std::process::id()));
    leakscope::heap_profile().write_pprof(&path).unwrap();
    let f = "span_labels::answer_rpc";
    assert_eq!(flat_of(&go_top(&path, "method=Echo"), f), "100000B");
    assert_eq!(flat_of(&go_top(&path, "method=Put"), f), "115000B");
    assert_eq!(flat_of(&go_top(&path, "span=encode"), f), "15000B");
    assert_eq!(flat_of(&go_top(&path, "span=rpc"), f), "200000B");
    // Fields not asked for are not labels.
    let all = go_top(&path, "request_id=7");
    assert!(!all.contains(f), "{all}");
    std::fs::remove_file(&path).ok();
    drop(kept);
}
