//! `leakscope run --mode full` against Valgrind's memcheck on the kind of
//! programs leak checkers are tested with (`tests/programs/valgrind/`):
//! lost cycles and trees, interior pointers, realloc, pages made
//! unreadable, threads, dlopen/dlclose, C++ classes, stdio, a program that
//! never allocates, the shapes of Valgrind's leak-check heuristics, memory
//! the program mapped itself. Each
//! program prints the same and exits with the same code with and without
//! leakscope, and the four categories of the final summary (bytes and
//! blocks) equal Valgrind's, run with the same suppressions (leakscope's
//! built-in list, turned into Valgrind's format) and without its call of
//! glibc's `__libc_freeres` at exit (`--run-libc-freeres=no`), which frees
//! the very blocks the suppressions name (leakscope does not call it: the
//! program may still run code after leakscope's exit handler). Then the
//! suppressed blocks are the same too.
//!
//! Needs gcc, g++ and valgrind (the README's test command installs them).

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use support::must;

use serde_json::Value;

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-valgrind");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs/valgrind")
        .join(name)
}

/// Compiles one test program (`-O0`: every planted allocation stays),
/// once: tests sharing a program run in parallel.
fn build(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let out = scratch().join(name);
    if built.iter().any(|b| b == name) {
        return out;
    }
    built.push(name.to_string());
    let (compiler, file) = if Path::new(&source(&format!("{name}.cpp"))).exists() {
        ("g++", format!("{name}.cpp"))
    } else {
        ("gcc", format!("{name}.c"))
    };
    must(
        Command::new(compiler)
            .args(["-O0", "-g", "-fno-builtin", "-pthread", "-o"])
            .arg(&out)
            .arg(source(&file))
            .arg("-ldl"),
    );
    out
}

/// A library the programs load (`plugin_leak`, `plugin_other`), built
/// once each.
fn plugin(name: &str) -> String {
    static BUILT: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _one = BUILT.get_or_init(Default::default).lock().unwrap();
    let out = scratch().join(format!("{name}.so"));
    if !out.is_file() {
        must(
            Command::new("gcc")
                .args(["-O0", "-g", "-shared", "-fPIC", "-o"])
                .arg(&out)
                .arg(source(&format!("{name}.c"))),
        );
    }
    out.to_str().unwrap().to_string()
}

/// leakscope's built-in suppressions as a Valgrind suppression file: each
/// rule `NAME: FRAME` becomes a leak suppression for any stack through
/// FRAME.
fn valgrind_suppressions() -> &'static PathBuf {
    static WRITTEN: OnceLock<PathBuf> = OnceLock::new();
    WRITTEN.get_or_init(|| {
        let mut text = String::new();
        for rule in leakscope_profile::suppressions::built_in() {
            text.push_str(&format!(
                "{{\n   leakscope-{}\n   Memcheck:Leak\n   match-leak-kinds: all\n   ...\n   fun:{}\n}}\n",
                rule.name, rule.frame
            ));
        }
        let path = scratch().join("leakscope.supp");
        std::fs::write(&path, text).unwrap();
        path
    })
}

type Totals = [(u64, u64); 5];
const KINDS: [&str; 5] = [
    "definitely lost",
    "indirectly lost",
    "possibly lost",
    "still reachable",
    "suppressed",
];

/// Of what is still reachable, (bytes, blocks) per heuristic that reached
/// it, by Valgrind's name, in its order.
type ViaHeuristic = Vec<(String, (u64, u64))>;

/// Valgrind's LEAK SUMMARY: (bytes, blocks) per category, then suppressed;
/// and what it reached via heuristics.
fn valgrind_summary(program: &Path, args: &[&str], extra: &[&str]) -> (Totals, ViaHeuristic) {
    let out = Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--run-libc-freeres=no",
        ])
        .arg(format!(
            "--suppressions={}",
            valgrind_suppressions().display()
        ))
        .args(extra)
        .arg(program)
        .args(args)
        .output()
        .expect("valgrind must be installed (the README's test command installs it)");
    let text = String::from_utf8_lossy(&out.stderr);
    if text.contains("All heap blocks were freed -- no leaks are possible") {
        return ([(0, 0); 5], Vec::new());
    }
    let numbers = |after: &str| -> (u64, u64) {
        let n: Vec<u64> = after
            .replace(',', "")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (n[0], n[1])
    };
    let via: ViaHeuristic = text
        .lines()
        .skip_while(|l| !l.contains("of which reachable via heuristic:"))
        .skip(1)
        .map_while(|l| {
            let (_, rest) = l.split_once("==")?.1.split_once("==")?;
            let (name, after) = rest.split_once(':')?;
            let name = name.trim();
            KINDS
                .iter()
                .all(|k| !name.starts_with(k))
                .then(|| (name.to_string(), numbers(after)))
        })
        .collect();
    let totals = KINDS.map(|label| {
        let label = format!("{label}:");
        let line = text
            .lines()
            .find(|l| l.contains(&label))
            .unwrap_or_else(|| panic!("no '{label}' in valgrind's output:\n{text}"));
        numbers(line.split_once(&label).unwrap().1)
    });
    (totals, via)
}

/// leakscope's counterpart of Valgrind's "of which reachable via heuristic".
fn leakscope_via_heuristic(report: &Value) -> ViaHeuristic {
    report["via_heuristic"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|h| {
                    (
                        h["heuristic"].as_str().unwrap().to_string(),
                        (
                            h["amount"]["bytes"].as_u64().unwrap(),
                            h["amount"]["blocks"].as_u64().unwrap(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn leakscope_totals(report: &Value) -> Totals {
    let t = &report["totals"];
    [
        "definitely_lost",
        "indirectly_lost",
        "possibly_lost",
        "still_reachable",
        "suppressed",
    ]
    .map(|k| {
        (
            t[k]["bytes"].as_u64().unwrap(),
            t[k]["blocks"].as_u64().unwrap(),
        )
    })
}

/// Runs `program` plainly and under `leakscope run --mode full`: the same
/// stdout, stderr and exit code. Returns the leak report and leakscope's
/// own stderr (the summary) from a second, non-quiet run.
fn checked_run(name: &str, program: &Path, options: &[&str], args: &[&str]) -> (Value, String) {
    let plain = Command::new(program).args(args).output().unwrap();
    // One directory per program and options: tests run in parallel.
    let dir = scratch().join(format!("out-{name}{}", options.concat()));
    let _ = std::fs::remove_dir_all(&dir);
    let report_path = dir.join("report.json");
    let run = |quiet: bool| {
        Command::new(env!("CARGO_BIN_EXE_leakscope"))
            .arg("run")
            .args(if quiet { &["-q"][..] } else { &[][..] })
            .arg("--report")
            .arg(&report_path)
            .arg("--out")
            .arg(&dir)
            .args(options)
            .arg("--")
            .arg(program)
            .args(args)
            .output()
            .expect("run leakscope")
    };
    let under = run(true);
    assert_eq!(under.stdout, plain.stdout, "{name}: stdout differs");
    assert_eq!(
        String::from_utf8_lossy(&under.stderr),
        String::from_utf8_lossy(&plain.stderr),
        "{name}: stderr differs"
    );
    assert_eq!(
        under.status.code(),
        plain.status.code(),
        "{name}: exit code"
    );
    let report = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let loud = run(false);
    (report, String::from_utf8_lossy(&loud.stderr).into_owned())
}

/// The whole comparison for one program; returns leakscope's report and
/// summary text.
fn same_as_valgrind(name: &str, args: &[&str], valgrind_flags: &[&str]) -> (Value, String) {
    let program = build(name);
    // Options both tools have, under the same name, go to both.
    let shared: Vec<&str> = valgrind_flags
        .iter()
        .copied()
        .filter(|f| f.starts_with("--leak-check-heuristics="))
        .collect();
    let (report, summary) = checked_run(name, &program, &shared, args);
    let ours = leakscope_totals(&report);
    let (valgrind, valgrind_via) = valgrind_summary(&program, args, valgrind_flags);
    assert_eq!(
        leakscope_via_heuristic(&report),
        valgrind_via,
        "{name}: reachable via heuristic\n{summary}"
    );
    for (k, kind) in KINDS.iter().enumerate().take(4) {
        assert_eq!(
            ours[k], valgrind[k],
            "{name}: {kind} (bytes, blocks): leakscope {ours:?}, Valgrind {valgrind:?}\n{summary}"
        );
    }
    // Suppressed: the same blocks. (A thread's DTV is 16 bytes larger
    // under leakscope, whose library adds a module with thread-locals.)
    if !name.starts_with("dlopen_twice") {
        assert_eq!(
            ours[4].1, valgrind[4].1,
            "{name}: suppressed blocks: leakscope {ours:?}, Valgrind {valgrind:?}\n{summary}"
        );
    }
    (report, summary)
}

#[test]
fn lost_cycles_get_valgrinds_leaders() {
    // Two linked lost cycles count one definitely lost block, a cycle with
    // a tail allocated before it one; 8 leaders in all.
    let (report, _) = same_as_valgrind("cycles", &[], &[]);
    assert_eq!(leakscope_totals(&report)[0], (8 * 32, 8), "{report:#}");
}

#[test]
fn possibly_lost_propagates_along_chains() {
    let (report, _) = same_as_valgrind("possibly", &[], &[]);
    // outer, child, grandchild, child's data (reached only through outer)
    // and the buffer held by an interior pointer: possibly lost.
    assert_eq!(
        leakscope_totals(&report)[2],
        (32 * 3 + 100 + 64, 5),
        "{report:#}"
    );
}

#[test]
fn blocks_with_unreadable_pages_are_counted() {
    let (report, summary) = same_as_valgrind("unreadable", &[], &[]);
    // Both unreadable blocks are there (a pointer into an unreadable page
    // is no reference, as in Valgrind), and the block only the unreadable
    // one held is lost.
    assert_eq!(
        leakscope_totals(&report)[0],
        (8192 + 4096 + 48, 3),
        "{report:#}"
    );
    assert_eq!(report["totals"]["unscanned"]["blocks"], 2, "{report:#}");
    assert!(
        summary.contains("not scanned: 12288 bytes in 2 blocks"),
        "{summary}"
    );
}

#[test]
fn words_left_in_the_exit_handlers_frames_hold_nothing() {
    // main's callee left 16 pointers where the exit handlers now run.
    let (report, _) = same_as_valgrind("stale_exit", &[], &[]);
    assert_eq!(leakscope_totals(&report)[0].1, 16, "{report:#}");
}

#[test]
fn threads_running_exited_and_their_dtvs() {
    let (report, summary) = same_as_valgrind("threads", &[], &[]);
    // The running thread's DTV (possibly lost to Valgrind without
    // suppressions) is suppressed, by name.
    assert_eq!(leakscope_totals(&report)[4].1, 1, "{report:#}");
    assert!(summary.contains("glibc-thread-dtv: "), "{summary}");
}

#[test]
fn blocks_moved_by_realloc() {
    let (report, _) = same_as_valgrind("realloc", &[], &[]);
    // realloc(NULL, 50) and the list's third node lost; the two nodes after
    // it and the three nodes' texts (grown to 64-66 bytes) indirectly;
    // held: 4860 bytes grown, 100 shrunk, two nodes and their texts.
    assert_eq!(
        leakscope_totals(&report)[..4],
        [(16 + 50, 2), (2 * 16 + 64 + 65 + 66, 5), (0, 0), (5127, 6)],
        "{report:#}"
    );
}

#[test]
fn blocks_of_an_unloaded_library() {
    let plugin = plugin("plugin_leak");
    let (report, _) = same_as_valgrind("dlopen_leak", &[&plugin], &[]);
    // The library's frame is unknown (its code is gone), and costs the
    // rest of the stack nothing: main is named.
    for leak in report["leaks"].as_array().unwrap() {
        let stack: Vec<&str> = leak["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        if leak["suppressed_by"].is_null() {
            assert!(stack[0].starts_with("0x"), "{stack:?}");
            assert_eq!(stack[1], "main", "{stack:?}");
        } else {
            assert_eq!(stack[0], "_dlfo_mappings_segment_allocate", "{stack:?}");
        }
    }
}

#[test]
fn an_unloaded_librarys_frames_never_take_a_later_ones_names() {
    let (first, second) = (plugin("plugin_leak"), plugin("plugin_other"));
    // (The loader's `_dl_find_object` table, suppressed, grows in
    // segments sized by the number of objects loaded, and leakscope's
    // library is one more: how many segments it takes differs.)
    let (report, _) = same_as_valgrind("dlopen_twice", &[&first, &second], &[]);
    let leaf = |bytes: u64| -> String {
        let leak = report["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["bytes"] == bytes)
            .unwrap_or_else(|| panic!("no group of {bytes} bytes: {report:#}"));
        leak["stack"][0].as_str().unwrap().to_string()
    };
    // The second library is loaded where the first was: its frame is
    // named, the first's is unknown, and each block is its own group.
    assert_eq!(leaf(88), "other_make", "{report:#}");
    assert!(leaf(222).ends_with(" (unloaded)"), "{report:#}");
}

#[test]
fn users_add_suppressions_and_bad_rules_are_named() {
    let program = build("realloc");
    let dir = scratch().join("user-suppressions");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("mine.supp");
    std::fs::write(
        &rules,
        "# everything the program allocates
mine: move_things
",
    )
    .unwrap();
    let report_path = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["run", "--suppressions"])
        .arg(&rules)
        .arg("--report")
        .arg(&report_path)
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--")
        .arg(&program)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let summary = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    // Every block of the program (13), lost or held, is suppressed, and
    // the summary says by which rule.
    assert_eq!(
        leakscope_totals(&report),
        [(0, 0), (0, 0), (0, 0), (0, 0), (66 + 227 + 5127, 13)],
        "{report:#}"
    );
    assert!(
        summary.contains("mine: 5420 bytes in 13 blocks"),
        "{summary}"
    );

    std::fs::write(
        &rules,
        "mine: move_things
not a rule
",
    )
    .unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["run", "--suppressions"])
        .arg(&rules)
        .arg("--")
        .arg(&program)
        .output()
        .unwrap();
    assert_ne!(bad.status.code(), Some(0));
    let error = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.contains("mine.supp:2: expected `NAME: FRAME`"),
        "{error}"
    );
    assert!(bad.stdout.is_empty(), "the program must not run");
}

#[test]
fn stdio_buffers_are_suppressed_not_hidden() {
    let (report, summary) = same_as_valgrind("stdio", &[], &[]);
    assert!(
        report["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["suppressed_by"] == "glibc-stdio-buffer"),
        "{report:#}"
    );
    assert!(summary.contains("glibc-stdio-buffer: "), "{summary}");
}

#[test]
fn cpp_classes_without_valgrinds_heuristics() {
    // With the heuristics off (both tools), the C object (held by a pointer
    // to its second base), its string's buffer and the new[] array (held
    // past its count) are possibly lost.
    let (report, _) = same_as_valgrind("classes", &[], &["--leak-check-heuristics=none"]);
    assert_eq!(
        leakscope_totals(&report)[2],
        (64 + 101 + 88, 3),
        "{report:#}"
    );
}

#[test]
fn cpp_classes_with_valgrinds_heuristics() {
    // By default both take the pointer to the second base and the one past
    // new[]'s count as references: nothing is possibly lost, and the object
    // and the array are reachable via their heuristics (the string's buffer,
    // held by the object at its start, plainly).
    let (report, summary) = same_as_valgrind("classes", &[], &[]);
    assert_eq!(leakscope_totals(&report)[2], (0, 0), "{report:#}");
    assert_eq!(
        leakscope_via_heuristic(&report),
        [
            ("newarray".to_string(), (88, 1)),
            ("multipleinheritance".to_string(), (64, 1)),
        ],
        "{report:#}"
    );
    assert!(
        summary.contains("of which reachable via heuristic:"),
        "{summary}"
    );
}

#[test]
fn memory_the_program_mapped_itself_is_a_root() {
    // Blocks held from its own arena and from the one touched page of a
    // large reservation are still reachable; the block held only from a
    // page made unreadable, and the plainly lost one, are definitely lost.
    let (report, _) = same_as_valgrind("mmap_roots", &[], &[]);
    assert_eq!(leakscope_totals(&report)[3], (600, 3), "{report:#}");
    assert_eq!(leakscope_totals(&report)[0], (450, 2), "{report:#}");
    // And the chain (to the group's largest block) says where: the
    // reservation, by its address and size.
    let held = report["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "still_reachable")
        .expect("the reachable group");
    assert_eq!(
        held["holder_chain"][0], "anonymous memory at 0x310000200000 (256.00MB)",
        "{held:#}"
    );
}

#[test]
fn every_heuristic_and_a_choice_of_them() {
    // Each shape reached by its heuristic alone; the plain interior
    // pointer stays possibly lost; the string's child is reachable plainly.
    let (report, _) = same_as_valgrind("heuristics", &[], &[]);
    assert_eq!(
        leakscope_via_heuristic(&report),
        [
            ("stdstring".to_string(), (55, 1)),
            ("length64".to_string(), (48, 1)),
            ("newarray".to_string(), (88, 1)),
            ("multipleinheritance".to_string(), (32, 1)),
        ],
        "{report:#}"
    );
    assert_eq!(leakscope_totals(&report)[2], (64, 1), "{report:#}");
    assert_eq!(leakscope_totals(&report)[3], (247, 5), "{report:#}");
    // None: all six possibly lost. A choice: newarray then also accepts
    // the length-prefixed block (as in Valgrind).
    let (report, _) = same_as_valgrind("heuristics", &[], &["--leak-check-heuristics=none"]);
    assert_eq!(leakscope_totals(&report)[2], (311, 6), "{report:#}");
    let (report, _) = same_as_valgrind(
        "heuristics",
        &[],
        &["--leak-check-heuristics=stdstring,newarray"],
    );
    assert_eq!(
        leakscope_via_heuristic(&report),
        [
            ("stdstring".to_string(), (55, 1)),
            ("newarray".to_string(), (48 + 88, 2)),
        ],
        "{report:#}"
    );
}

#[test]
fn c_functions_named_like_cpp_types() {
    let (report, _) = same_as_valgrind("names", &[], &[]);
    let mut leaves: Vec<String> = report["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["stack"][0].as_str().unwrap().to_string())
        .collect();
    leaves.sort();
    assert_eq!(leaves, ["d", "f", "i", "x"], "{report:#}");
}

#[test]
fn a_program_that_never_allocates_gets_an_empty_summary() {
    let (report, summary) = same_as_valgrind("nomalloc", &[], &[]);
    assert_eq!(leakscope_totals(&report), [(0, 0); 5], "{report:#}");
    assert!(
        summary.contains("definitely lost: 0 bytes in 0 blocks"),
        "{summary}"
    );
}

/// The memalign family answers as the C library does: glibc 2.36 (this
/// system's) rounds an alignment that is not a power of two up, 2.38 and
/// later refuse it. With the releases `scripts/test.sh` fetches into
/// target/glibc, the same program runs under 2.41 too.
#[test]
fn the_memalign_family_answers_as_glibc_does() {
    let program = build("aligned");
    let preload = {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_leakscope"));
        let dir = exe.parent().unwrap().to_path_buf();
        [
            dir.join("libleakscope_preload.so"),
            dir.join("deps/libleakscope_preload.so"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .expect("the preload library next to the binary")
    };
    let glibc = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/glibc/trixie/usr/lib/x86_64-linux-gnu");
    let mut runs: Vec<(String, Option<PathBuf>)> = vec![("system".into(), None)];
    if glibc.join("ld-linux-x86-64.so.2").is_file() {
        runs.push(("2.41".into(), Some(glibc)));
    }
    let mut outputs = Vec::new();
    for (what, libdir) in runs {
        let command = |preloaded: bool| {
            let mut c = match &libdir {
                Some(dir) => {
                    let mut c = Command::new(dir.join("ld-linux-x86-64.so.2"));
                    c.arg("--library-path").arg(dir).arg(&program);
                    c
                }
                None => Command::new(&program),
            };
            if preloaded {
                c.env("LD_PRELOAD", &preload).env("LEAKSCOPE_MODE", "full");
            }
            c.output().unwrap()
        };
        let (plain, under) = (command(false), command(true));
        assert_eq!(
            String::from_utf8_lossy(&under.stdout),
            String::from_utf8_lossy(&plain.stdout),
            "glibc {what}"
        );
        assert_eq!(under.status.code(), Some(0), "glibc {what}");
        outputs.push(String::from_utf8_lossy(&plain.stdout).into_owned());
    }
    // The case that differs between releases is there.
    let system = must(Command::new("getconf").arg("GNU_LIBC_VERSION")).stdout;
    let system = String::from_utf8_lossy(&system);
    let minor: u32 = system
        .trim()
        .rsplit('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("glibc version {system:?}"));
    let expected = if minor >= 38 {
        "aligned_alloc(3): null errno=22"
    } else {
        "aligned_alloc(3): ok"
    };
    assert!(outputs[0].contains(expected), "{system}: {}", outputs[0]);
    if let Some(newer) = outputs.get(1) {
        assert!(newer.contains("aligned_alloc(3): null errno=22"), "{newer}");
    }
}
