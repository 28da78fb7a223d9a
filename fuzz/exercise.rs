//! What each fuzz target does with its input, shared by the fuzz targets
//! (`fuzz_targets/`) and the tests that replay the saved corpus
//! (`crates/*/tests/fuzz_corpus.rs`, `http::query`'s unit tests), which
//! include this file by path. Every function must return (an error is
//! fine) without panicking, and within the readers' limits.

#![allow(dead_code)]

use leakscope_profile::codec::{decode_with, Limits};
use leakscope_profile::snapshot::SnapshotReport;
use leakscope_profile::StackView;

/// The pprof reader and everything a command computes from its result.
pub fn pprof(data: &[u8]) {
    // Smaller limits than the CLI's: the same checks, at fuzzing speed.
    let limits = Limits {
        max_message_bytes: 4 << 20,
        ..Limits::default()
    };
    let Ok(profile) = decode_with(data, &limits) else {
        return;
    };
    let view = StackView::new(&profile);
    for index in 0..view.sample_types.len() {
        let _ = leakscope_profile::top(&view, index, 10).render();
        let _ = leakscope_profile::folded::folded_within(&view, index, 1 << 20);
        let _ = view.total(index);
    }
    let _ = view.progress();
    let _ = leakscope_profile::diff(&view, view.default_index, &view, view.default_index);
}

/// The snapshot reader and what `refs` and `run` compute from it.
pub fn snapshot(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(report) = SnapshotReport::from_json(text) else {
        return;
    };
    let _ = report.render(5);
    let _ = report.refs_profile();
    let rules = leakscope_profile::suppressions::built_in();
    let _ = leakscope_profile::leaks::LeakSummary::from_snapshot(&report, &rules).render("", 3);
}

/// Names a fuzzed directory's files can have: periodic outputs of two
/// processes, exit outputs, saved profiles, foreign files, temporaries.
pub const DIR_NAMES: [&str; 8] = [
    "heap-1-0000.pb.gz",
    "snapshot-1-0000.json",
    "heap-1-0001.pb.gz",
    "heap-2-0000.pb.gz",
    "snapshot-2.json",
    "heap.3.pb.gz",
    "package.json",
    ".heap-1-0002.pb.gz.AbCdEf.tmp",
];

/// Splits fuzz input into files: each part starts with a byte choosing its
/// name; parts are separated by `0xff 0x00 0xff`.
pub fn dir_files(data: &[u8]) -> Vec<(&'static str, &[u8])> {
    let mut files = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && files.len() < DIR_NAMES.len() {
        let end = rest
            .windows(3)
            .position(|w| w == [0xff, 0x00, 0xff])
            .unwrap_or(rest.len());
        let (part, tail) = rest.split_at(end);
        rest = tail.get(3..).unwrap_or(&[]);
        if let Some((&which, content)) = part.split_first() {
            files.push((DIR_NAMES[which as usize % DIR_NAMES.len()], content));
        }
    }
    files
}

/// The endpoint's query parsers.
pub fn query<F, G, A, B>(data: &[u8], heap: F, format: G)
where
    F: Fn(&str, u64) -> A,
    G: Fn(&str, &[&str]) -> B,
{
    let text = String::from_utf8_lossy(data);
    let _ = heap(&text, 300);
    let _ = format(&text, &["json", "html", "pprof"]);
}
