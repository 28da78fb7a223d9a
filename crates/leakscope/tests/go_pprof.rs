//! Interoperability: `go tool pprof` reads the profiles we write and shows the
//! planted functions by name under each of the four sample indexes. The test
//! command installs Go (see README); this test fails if `go` is missing.

use std::hint::black_box;

use leakscope::{Mode, Profiler};

mod common;
use common::go_pprof;

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

#[inline(never)]
fn go_planted_kept() -> Vec<Vec<u8>> {
    black_box((0..64).map(|_| black_box(vec![7u8; 50_000])).collect())
}

#[inline(never)]
fn go_planted_freed() {
    for _ in 0..200 {
        black_box(vec![1u8; 30_000]);
    }
}

#[test]
fn go_tool_pprof_reads_all_four_views() {
    let kept = go_planted_kept();
    go_planted_freed();
    let path = std::env::temp_dir().join(format!("leakscope-go-{}.pb.gz", std::process::id()));
    leakscope::heap_profile().write_pprof(&path).unwrap();
    let file = path.to_str().unwrap();

    for (index, expect_freed) in [
        ("inuse_space", false),
        ("inuse_objects", false),
        ("alloc_space", true),
        ("alloc_objects", true),
    ] {
        let top = go_pprof(&[
            "-top",
            "-symbolize=none",
            &format!("-sample_index={index}"),
            file,
        ]);
        assert!(top.contains(&format!("Type: {index}")), "{index}:\n{top}");
        let kept_line = top
            .lines()
            .find(|l| l.ends_with("go_pprof::go_planted_kept"))
            .unwrap_or_else(|| panic!("{index}: kept function missing:\n{top}"));
        assert_eq!(
            top.lines()
                .any(|l| l.ends_with("go_pprof::go_planted_freed")),
            expect_freed,
            "{index}:\n{top}"
        );
        // The planted function is the leaf (flat) of its allocations.
        let flat = kept_line.split_whitespace().next().unwrap();
        assert_ne!(flat, "0", "{index}: {kept_line}");
    }
    // Exact bytes survive the trip: 64 blocks of 50 000 bytes.
    let raw = go_pprof(&["-raw", "-symbolize=none", "-sample_index=inuse_space", file]);
    assert!(raw.contains("3200000"), "{raw}");
    // Stacks as traces, with file:line information.
    let traces = go_pprof(&["-traces", "-symbolize=none", file]);
    assert!(traces.contains("go_pprof::go_planted_kept"), "{traces}");
    let lines = go_pprof(&["-top", "-lines", "-symbolize=none", file]);
    assert!(lines.contains("go_pprof.rs:"), "{lines}");
    std::fs::remove_file(&path).ok();
    drop(kept);
}

#[test]
fn profiles_named_later_are_the_profiles_named_when_written() {
    let kept = go_planted_kept();
    go_planted_freed();
    let profile = leakscope::heap_profile();
    let named_now = profile.to_pprof();
    let unnamed = profile.to_pprof_unsymbolized();
    // Written unnamed: code addresses in mappings, no function at all.
    assert!(unnamed.function.is_empty());
    assert!(unnamed.location.iter().all(|l| l.line.is_empty()));
    assert!(unnamed.mapping.iter().all(|m| !m.has_functions));
    assert!(unnamed.mapping[0].build_id != 0, "the binary's build ID");
    let later = leakscope::symbolize_profile(&unnamed).expect("frames to name");
    assert!(
        later.unnamed_binaries.is_empty(),
        "{:?}",
        later.unnamed_binaries
    );
    assert_eq!(later.profile, named_now);
    // A named profile has nothing left to name.
    assert!(leakscope::symbolize_profile(&named_now).is_none());

    // go tool pprof reads both: the unnamed one's bytes and addresses, the
    // named one's functions.
    let dir = std::env::temp_dir();
    let unnamed_path = dir.join(format!("leakscope-go-later-{}.pb.gz", std::process::id()));
    let named_path = dir.join(format!("leakscope-go-named-{}.pb.gz", std::process::id()));
    std::fs::write(&unnamed_path, leakscope_profile::encode_gzip(&unnamed)).unwrap();
    std::fs::write(&named_path, leakscope_profile::encode_gzip(&later.profile)).unwrap();
    let raw = go_pprof(&[
        "-raw",
        "-symbolize=none",
        "-sample_index=inuse_space",
        unnamed_path.to_str().unwrap(),
    ]);
    assert!(raw.contains("3200000"), "{raw}");
    let top = go_pprof(&["-top", "-symbolize=none", named_path.to_str().unwrap()]);
    assert!(
        top.lines()
            .any(|l| l.ends_with("go_pprof::go_planted_kept")),
        "{top}"
    );
    std::fs::remove_file(&unnamed_path).ok();
    std::fs::remove_file(&named_path).ok();
    drop(kept);
}
