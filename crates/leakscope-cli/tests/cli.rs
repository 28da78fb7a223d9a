//! The `leakscope` binary end to end: real files in, text and exit codes out.

mod support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{leakscope, stderr, stdout};

use leakscope_profile::{encode_gzip, ProfileBuilder, HEAP_SAMPLE_TYPES};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leakscope-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A heap profile with `(function, inuse bytes)` samples under `main`.
fn write_profile(name: &str, samples: &[(&str, i64)]) -> PathBuf {
    let mut b = ProfileBuilder::new(&HEAP_SAMPLE_TYPES, ("space", "bytes"), 1);
    b.set_default_sample_type("inuse_space");
    let main = b.function("app::main", "app::main", "src/main.rs", 1);
    let main_loc = b.location(0, 0x100, &[(main, 10)]);
    for (i, &(f, bytes)) in samples.iter().enumerate() {
        let func = b.function(f, f, "src/lib.rs", 1);
        let loc = b.location(0, 0x200 + i as u64, &[(func, 20)]);
        b.add_sample(&[loc, main_loc], &[1, bytes, 1, bytes], &[]);
    }
    let path = scratch(name);
    std::fs::write(&path, encode_gzip(&b.build())).unwrap();
    path
}

/// Bad input ends with one line on stderr and a non-zero code, no panic.
fn assert_clean_failure(o: &Output, code: i32, mentions: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("leakscope: "), "{err}");
    assert!(err.contains(mentions), "{err} should mention {mentions}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn top_ranks_functions_of_our_profiles() {
    let p = write_profile("top.pb.gz", &[("app::small", 100), ("app::big", 5000)]);
    let o = leakscope(&["top", p.to_str().unwrap(), "-n", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let big = out.find("app::big").unwrap();
    let small = out.find("app::small").unwrap();
    assert!(big < small, "{out}");
    assert!(out.contains("Type: inuse_space"), "{out}");
    assert!(out.contains("4.88kB"), "{out}");
}

#[test]
fn top_reads_go_heap_profiles() {
    let go = fixture("go-heap.pb.gz");
    let o = leakscope(&["top", go.to_str().unwrap(), "--sample-index", "inuse_space"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let first = out.lines().nth(3).unwrap_or("");
    // 100 buffers of 64 KiB, kept by main.goKeepBuffers.
    assert!(
        first.contains("6.25MB") && first.ends_with("main.goKeepBuffers"),
        "{out}"
    );
    let o = leakscope(&[
        "top",
        go.to_str().unwrap(),
        "--sample-index",
        "alloc_objects",
    ]);
    assert!(stdout(&o).contains("Type: alloc_objects"), "{}", stdout(&o));
}

#[test]
fn diff_shows_growth_first() {
    let base = write_profile("base.pb.gz", &[("app::cache", 1000), ("app::steady", 500)]);
    let new = write_profile(
        "new.pb.gz",
        &[
            ("app::steady", 500),
            ("app::cache", 9000),
            ("app::fresh", 10),
        ],
    );
    let o = leakscope(&["diff", base.to_str().unwrap(), new.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let rows: Vec<&str> = out.lines().skip(3).collect();
    assert!(
        rows[0].starts_with("    +7.81kB") && rows[0].contains("app::cache < app::main"),
        "{out}"
    );
    assert!(rows[1].contains("app::fresh"), "{out}");
    assert!(
        !out.contains("app::steady"),
        "unchanged stacks are not listed: {out}"
    );
}

#[test]
fn flame_writes_an_svg_with_the_functions() {
    let p = write_profile("flame.pb.gz", &[("app::leaky_cache", 4096)]);
    let svg = scratch("flame.svg");
    let o = leakscope(&["flame", p.to_str().unwrap(), "-o", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<?xml") && text.contains("<svg"),
        "not an SVG"
    );
    assert!(text.contains("app::leaky_cache"));
}

#[test]
fn corrupt_truncated_and_foreign_files_fail_cleanly() {
    let good = std::fs::read(write_profile("good.pb.gz", &[("app::x", 1)])).unwrap();
    let truncated = scratch("truncated.pb.gz");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    assert_clean_failure(
        &leakscope(&["top", truncated.to_str().unwrap()]),
        1,
        "truncated",
    );

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let corrupt = scratch("corrupt.pb.gz");
    std::fs::write(&corrupt, &flipped).unwrap();
    assert_clean_failure(
        &leakscope(&["top", corrupt.to_str().unwrap()]),
        1,
        "corrupt.pb.gz",
    );

    let text = scratch("notes.txt");
    std::fs::write(&text, "these are not the bytes you are looking for\n").unwrap();
    assert_clean_failure(
        &leakscope(&["diff", text.to_str().unwrap(), text.to_str().unwrap()]),
        1,
        "not a",
    );

    let empty = scratch("empty.pb.gz");
    std::fs::write(&empty, b"").unwrap();
    assert_clean_failure(
        &leakscope(&["flame", empty.to_str().unwrap(), "-o", "/dev/null"]),
        1,
        "empty",
    );

    assert_clean_failure(
        &leakscope(&["top", "/no/such/profile.pb.gz"]),
        1,
        "cannot read /no/such/profile.pb.gz",
    );
}

#[test]
fn wrong_flags_fail_with_one_line() {
    assert_clean_failure(
        &leakscope(&["top", "--no-such-flag", "x"]),
        2,
        "--no-such-flag",
    );
    assert_clean_failure(&leakscope(&["top", "x", "--sample-index", "cpu"]), 2, "cpu");
    assert_clean_failure(&leakscope(&["frobnicate"]), 2, "frobnicate");
    let p = write_profile("idx.pb.gz", &[("app::x", 1)]);
    let o = leakscope(&["top", p.to_str().unwrap(), "-n", "many"]);
    assert_clean_failure(&o, 2, "many");
}

#[test]
fn demo_finds_the_planted_leak() {
    let dir = scratch("demo");
    let o = leakscope(&["demo", "--out", dir.to_str().unwrap(), "--requests", "4000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("Verdict: live memory grows under leakscope::commands::demo::decode_body"),
        "{out}"
    );
    assert!(dir.join("inuse_space.svg").exists());
    // 1000 kept bodies of 2048 + (id*37 % 2048) bytes for ids 0, 4, 8, ...
    let kept: i64 = (0..4000u64)
        .filter(|id| id % 4 == 0)
        .map(|id| 2048 + (id as i64 * 37) % 2048)
        .sum();
    let top = leakscope(&[
        "top",
        dir.join("heap-late.pb.gz").to_str().unwrap(),
        "-n",
        "3",
    ]);
    let line = stdout(&top).lines().nth(3).unwrap_or("").to_string();
    assert!(line.ends_with("decode_body"), "{line}");
    let bytes = std::fs::read(dir.join("heap-late.pb.gz")).unwrap();
    let view = leakscope_profile::StackView::new(&leakscope_profile::decode(&bytes).unwrap());
    let inuse = view.sample_index(Some("inuse_space")).unwrap();
    let measured: i64 = view
        .samples
        .iter()
        .filter(|s| {
            view.function_names(s)
                .next()
                .is_some_and(|f| f.ends_with("::decode_body"))
        })
        .map(|s| s.values[inuse])
        .sum();
    assert_eq!(
        measured, kept,
        "full mode must count the kept bodies exactly"
    );
}

#[test]
fn leakscope_out_writes_a_profile_at_exit() {
    // The CLI itself runs on leakscope's allocator (off unless told): profile
    // a `top` run through the environment and read the result back.
    let dir = scratch("at-exit");
    std::fs::create_dir_all(&dir).unwrap();
    let template = dir.join("cli-%p.pb.gz");
    let go = fixture("go-heap.pb.gz");
    let child = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["top", go.to_str().unwrap()])
        .env("LEAKSCOPE_MODE", "full")
        .env("LEAKSCOPE_OUT", &template)
        .output()
        .unwrap();
    assert!(child.status.success(), "{}", stderr(&child));
    let written: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let name = written[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        name.starts_with("cli-") && name.ends_with(".pb.gz") && !name.contains("%p"),
        "{name}"
    );
    let bytes = std::fs::read(&written[0]).unwrap();
    let view = leakscope_profile::StackView::new(&leakscope_profile::decode(&bytes).unwrap());
    // Decoding the Go profile allocated memory under the `top` command.
    assert!(
        view.samples.iter().any(|s| view
            .function_names(s)
            .any(|f| f.contains("commands::top::run"))),
        "no sample under the top command"
    );
    assert!(
        view.comments.iter().any(|c| c.contains("full")),
        "{:?}",
        view.comments
    );
}

#[test]
fn profiles_written_unnamed_are_named_when_read() {
    // LEAKSCOPE_SYMBOLIZE=later: the profile keeps code addresses in its
    // mappings; `leakscope top` names them from the binary on disk.
    let dir = scratch("later");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cli.pb.gz");
    let go = fixture("go-heap.pb.gz");
    let child = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["top", go.to_str().unwrap()])
        .env("LEAKSCOPE_MODE", "full")
        .env("LEAKSCOPE_SYMBOLIZE", "later")
        .env("LEAKSCOPE_OUT", &path)
        .output()
        .unwrap();
    assert!(child.status.success(), "{}", stderr(&child));
    let raw = leakscope_profile::decode(&std::fs::read(&path).unwrap()).unwrap();
    assert!(raw.function.is_empty(), "{} functions", raw.function.len());
    assert!(!raw.location.is_empty());
    let o = leakscope(&["top", path.to_str().unwrap(), "-n", "40"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("leakscope::main"),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("frames stay code addresses"),
        "{}",
        stderr(&o)
    );
    // `leakscope symbolize` names it in place, for any reader.
    let o = leakscope(&["symbolize", path.to_str().unwrap()]);
    assert!(stdout(&o).ends_with(": named\n"), "{}", stdout(&o));
    let named = leakscope_profile::decode(&std::fs::read(&path).unwrap()).unwrap();
    assert!(!named.function.is_empty());
    let o = leakscope(&["symbolize", path.to_str().unwrap()]);
    assert!(stdout(&o).ends_with(": already named\n"), "{}", stdout(&o));
}

#[test]
fn a_bad_environment_setting_warns_and_carries_on() {
    let go = fixture("go-heap.pb.gz");
    let o = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["top", go.to_str().unwrap()])
        .env("LEAKSCOPE_MODE", "turbo")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("ignoring LEAKSCOPE_MODE=turbo"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn refs_names_the_static_that_holds_the_demo_leak() {
    let dir = scratch("refs");
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("snapshot.json");
    let o = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args([
            "demo-workload",
            "--out",
            dir.to_str().unwrap(),
            "--requests",
            "2000",
        ])
        .env("LEAKSCOPE_MODE", "full")
        .env("LEAKSCOPE_REFS_OUT", &snap)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let refs_pprof = dir.join("refs.pb.gz");
    let o = leakscope(&[
        "refs",
        snap.to_str().unwrap(),
        "-n",
        "3",
        "--pprof",
        refs_pprof.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let first = out
        .lines()
        .find(|l| l.trim_start().starts_with("1."))
        .unwrap_or("");
    assert!(
        first.contains("static leakscope::commands::demo::REQUEST_CACHE"),
        "{out}"
    );
    // 500 kept bodies of 2048 + (id*37 % 2048) bytes, plus the map's table.
    let kept: u64 = (0..2000u64)
        .filter(|id| id % 4 == 0)
        .map(|id| 2048 + (id * 37) % 2048)
        .sum();
    let report = leakscope_profile::snapshot::SnapshotReport::from_json(
        &std::fs::read_to_string(&snap).unwrap(),
    )
    .unwrap();
    let holder = &report.holders[0];
    // The bodies and the map's table, less the few bodies a stale word on
    // the exiting main thread's stack also points to (conservative
    // scanning cannot tell those apart from live references).
    assert!(
        holder.retained.bytes <= kept + 64 * 1024,
        "{:?} vs {kept}",
        holder.retained
    );
    assert!(
        holder.retained.bytes >= kept * 95 / 100,
        "{:?} vs {kept}",
        holder.retained
    );
    assert!(
        (475..=501).contains(&holder.retained.blocks),
        "{:?}",
        holder.retained
    );
    // The hash table holds pointers: it is a container, not a pinned buffer.
    assert!(report.pinned.is_empty(), "{:#?}", report.pinned);
    // The refs profile names the chain for pprof tools.
    let view = leakscope_profile::StackView::new(
        &leakscope_profile::decode(&std::fs::read(&refs_pprof).unwrap()).unwrap(),
    );
    assert!(view.samples.iter().any(|s| view.function_names(s).last()
        == Some("static leakscope::commands::demo::REQUEST_CACHE")));
    let json = leakscope(&["refs", snap.to_str().unwrap(), "--json"]);
    assert!(stdout(&json).contains("\"format\": \"leakscope-snapshot\""));
}

#[test]
fn refs_rejects_files_that_are_not_snapshots() {
    let p = write_profile("not-a-snapshot.pb.gz", &[("app::x", 1)]);
    assert_clean_failure(
        &leakscope(&["refs", p.to_str().unwrap()]),
        1,
        "not a leakscope snapshot",
    );
    let text = scratch("other.json");
    std::fs::write(&text, "{\"hello\": 1}").unwrap();
    assert_clean_failure(
        &leakscope(&["refs", text.to_str().unwrap()]),
        1,
        "not a leakscope snapshot",
    );
}

#[test]
fn trend_and_report_read_a_directory_of_saved_profiles() {
    // Twelve profiles saved without timestamps (as from curl on an endpoint):
    // one function grows by 300 kB a profile, one stays level.
    let dir = scratch("saved-profiles");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 1..=12i64 {
        let p = write_profile(
            &format!("saved-{i}.pb.gz"),
            &[
                ("app::leaky_cache", 300_000 * i),
                ("app::steady", 2_000_000),
            ],
        );
        std::fs::rename(&p, dir.join(format!("heap.{i}.pb.gz"))).unwrap();
    }
    let d = dir.to_str().unwrap();
    let o = leakscope(&["trend", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let first_row = text
        .lines()
        .find(|l| l.starts_with("growing"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        first_row.ends_with("app::leaky_cache < app::main"),
        "{text}"
    );
    assert!(text.contains("all live memory: growing"), "{text}");
    assert!(!text.contains("app::steady"), "{text}");

    let o = leakscope(&["report", d, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json["verdict"], "leak", "{json:#}");
    let top = &json["findings"][0];
    assert_eq!(top["scenario"], "cache-without-bound", "{json:#}");
    assert!(
        top["evidence"].to_string().contains("app::leaky_cache"),
        "{json:#}"
    );

    // A broken file among them: skipped with one line naming it.
    std::fs::write(dir.join("heap.13.pb.gz"), b"not a profile").unwrap();
    let o = leakscope(&["trend", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("skipping"), "{}", stderr(&o));
    assert!(stderr(&o).contains("heap.13.pb.gz"), "{}", stderr(&o));
    let empty = scratch("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    assert_clean_failure(
        &leakscope(&["trend", empty.to_str().unwrap()]),
        1,
        "no heap profiles",
    );
    assert_clean_failure(&leakscope(&["trend", "/nonexistent/dir"]), 1, "cannot read");
}
