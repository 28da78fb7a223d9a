//! `leakscope run`: unmodified programs under the `LD_PRELOAD` library.
//! Planted leaks in C, C++ and Rust programs are counted exactly as
//! Valgrind's memcheck counts them (both run here); real programs nobody
//! here wrote (python3, git, ripgrep) print exactly what they print without
//! leakscope, and their allocation counts match heaptrack's.
//!
//! Needs gcc, g++, rustc, valgrind, heaptrack, python3, git and ripgrep;
//! the README's test command installs what is missing.

mod support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use support::must;

use serde_json::Value;

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-preload");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// The test programs, compiled once per test binary: `-O0` so that the
/// compiler keeps every planted allocation.
struct Programs {
    c: PathBuf,
    cpp: PathBuf,
    rust: PathBuf,
    stress: PathBuf,
    plugin: PathBuf,
    large_blocks: PathBuf,
    edge_cases: PathBuf,
    signal_alloc: PathBuf,
}

fn programs() -> &'static Programs {
    static BUILT: OnceLock<Programs> = OnceLock::new();
    BUILT.get_or_init(|| {
        let src = programs_dir();
        let out = scratch();
        let p = Programs {
            c: out.join("leaky-c"),
            cpp: out.join("leaky-cpp"),
            rust: out.join("leaky-rs"),
            stress: out.join("stress"),
            plugin: out.join("plugin.so"),
            large_blocks: out.join("large-blocks"),
            edge_cases: out.join("edge-cases"),
            signal_alloc: out.join("signal-alloc"),
        };
        let build = |compiler: &str, flags: &[&str], out: &Path, source: &str| {
            must(
                Command::new(compiler)
                    .args(flags)
                    .arg("-o")
                    .arg(out)
                    .arg(src.join(source)),
            );
        };
        build("gcc", &["-O0", "-g", "-fno-builtin"], &p.c, "leaky.c");
        build("g++", &["-O0", "-g"], &p.cpp, "leaky.cpp");
        build(
            "rustc",
            &["-O", "-g", "-C", "force-frame-pointers=yes"],
            &p.rust,
            "leaky.rs",
        );
        build(
            "gcc",
            &["-O0", "-g", "-fno-builtin", "-pthread"],
            &p.stress,
            "stress.c",
        );
        build(
            "gcc",
            &["-O0", "-g", "-shared", "-fPIC"],
            &p.plugin,
            "plugin.c",
        );
        build(
            "gcc",
            &["-O0", "-g", "-fno-builtin"],
            &p.large_blocks,
            "large_blocks.c",
        );
        build(
            "gcc",
            &["-O1", "-g", "-Wno-alloc-size-larger-than"],
            &p.edge_cases,
            "edge_cases.c",
        );
        build(
            "gcc",
            &["-O1", "-g", "-pthread"],
            &p.signal_alloc,
            "signal_alloc.c",
        );
        p
    })
}

/// `leakscope run [flags] -- program args`, with its output.
fn leakscope_run(flags: &[&str], out_dir: &Path, program: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .arg("run")
        .args(flags)
        .arg("--out")
        .arg(out_dir)
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .expect("run leakscope")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = scratch().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Valgrind's LEAK SUMMARY: (bytes, blocks) per category.
fn valgrind_totals(program: &Path) -> [(u64, u64); 4] {
    let out = Command::new("valgrind")
        .args(["--leak-check=full", "--show-leak-kinds=all"])
        .arg(program)
        .output()
        .expect("valgrind must be installed (the README's test command installs it)");
    let text = String::from_utf8_lossy(&out.stderr);
    let figure = |label: &str| -> (u64, u64) {
        let line = text
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no '{label}' in valgrind's output:\n{text}"));
        let numbers: Vec<u64> = line
            .split_once(label)
            .unwrap()
            .1
            .replace(',', "")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    };
    [
        figure("definitely lost:"),
        figure("indirectly lost:"),
        figure("possibly lost:"),
        figure("still reachable:"),
    ]
}

fn leakscope_totals(report: &Value) -> [(u64, u64); 4] {
    let t = &report["totals"];
    let get = |k: &str| {
        (
            t[k]["bytes"].as_u64().unwrap(),
            t[k]["blocks"].as_u64().unwrap(),
        )
    };
    [
        get("definitely_lost"),
        get("indirectly_lost"),
        get("possibly_lost"),
        get("still_reachable"),
    ]
}

/// Runs `program` plainly and under `leakscope run --mode full`: the same
/// stdout, stderr and exit code; returns the leak report.
fn checked_run(name: &str, program: &Path) -> Value {
    let plain = Command::new(program).output().unwrap();
    let dir = fresh_dir(name);
    let report_path = dir.join("report.json");
    let under = leakscope_run(
        &["-q", "--report", report_path.to_str().unwrap()],
        &dir.join("out"),
        program,
        &[],
    );
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
    serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap()
}

fn reachable_holders(report: &Value) -> Vec<String> {
    report["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "still_reachable")
        .map(|l| l["holder_chain"][0].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn planted_leaks_in_c_cpp_and_rust_match_valgrind() {
    let p = programs();
    for (name, program, global) in [
        ("c", &p.c, "static g_config_cache"),
        ("cpp", &p.cpp, "static g_current_session"),
        ("rust", &p.rust, "static leaky::SETTINGS_CACHE"),
    ] {
        let report = checked_run(name, program);
        let ours = leakscope_totals(&report);
        let valgrind = valgrind_totals(program);
        assert_eq!(
            ours, valgrind,
            "{name}: (bytes, blocks) per kind vs valgrind: {report:#}"
        );
        // Every planted kind is there.
        assert!(
            ours[0].1 > 0 && ours[1].1 > 0 && ours[3].1 > 0,
            "{name}: {ours:?}"
        );
        let holders = reachable_holders(&report);
        assert!(
            holders.iter().any(|h| h == global),
            "{name}: still reachable blocks are held by {global}: {holders:?}"
        );
    }
}

#[test]
fn the_c_leaks_name_their_allocating_functions() {
    let report = checked_run("c-stacks", &programs().c);
    let leaks = report["leaks"].as_array().unwrap();
    let leaf_of = |kind: &str| -> Vec<String> {
        leaks
            .iter()
            .filter(|l| l["kind"] == kind)
            .map(|l| l["stack"][0].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        leaf_of("definitely_lost").contains(&"lose_plain".to_string()),
        "{report:#}"
    );
    assert!(
        leaf_of("indirectly_lost").contains(&"lose_a_tree".to_string()),
        "{report:#}"
    );
    let mut reachable = leaf_of("still_reachable");
    reachable.sort();
    assert_eq!(reachable, ["keep_config", "keep_list"], "{report:#}");
    assert!(reachable_holders(&report).contains(&"static g_list".to_string()));
}

#[test]
fn survives_threads_cross_thread_frees_dlopen_fork_and_exec() {
    let p = programs();
    let plugin = p.plugin.to_str().unwrap();
    let plain = Command::new(&p.stress).arg(plugin).output().unwrap();
    assert_eq!(plain.status.code(), Some(7));
    for mode in ["full", "sampled"] {
        let dir = fresh_dir(&format!("stress-{mode}"));
        let under = leakscope_run(&["-q", "--mode", mode], &dir, &p.stress, &[plugin]);
        assert_eq!(under.stdout, plain.stdout, "{mode}");
        assert_eq!(
            under.status.code(),
            Some(7),
            "{mode}: {}",
            String::from_utf8_lossy(&under.stderr)
        );
        assert!(
            under.stderr.is_empty(),
            "{mode}: {}",
            String::from_utf8_lossy(&under.stderr)
        );
        // One profile per process: the program, its forked child and the
        // program it exec'd.
        let mut profiles: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".pb.gz"))
            .collect();
        profiles.sort();
        assert_eq!(profiles.len(), 3, "{mode}: {profiles:?}");
        for profile in &profiles {
            top_by_function(profile, "alloc_objects");
        }
    }
}

/// (function, value) rows of `leakscope top` on a profile; the command must
/// succeed.
fn top_by_function(profile: &Path, index: &str) -> Vec<(String, String)> {
    let top = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["top", "--sample-index", index, "-n", "20"])
        .arg(profile)
        .output()
        .unwrap();
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    String::from_utf8_lossy(&top.stdout)
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 6).then(|| (cols[5].to_string(), cols[0].to_string()))
        })
        .collect()
}

#[test]
fn sampled_large_blocks_are_counted_found_again_and_zeroed() {
    let p = programs();
    // At a 1 KiB rate every block of 64 KiB or more is sampled (its weight
    // rounds to exactly 1), so what is kept is known exactly.
    for mode in ["sampled", "full"] {
        let dir = fresh_dir(&format!("large-{mode}"));
        let out = leakscope_run(
            &["-q", "--mode", mode, "--rate", "1024"],
            &dir,
            &p.large_blocks,
            &[],
        );
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
            (Some(0), "ok"),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let profile = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".pb.gz"))
            .expect("a profile");
        let space = top_by_function(&profile, "inuse_space");
        let objects = top_by_function(&profile, "inuse_objects");
        let of = |table: &[(String, String)], f: &str| {
            table
                .iter()
                .find(|(name, _)| name == f)
                .map(|(_, v)| v.clone())
        };
        // 20 blocks of 200 KiB: 4 096 000 bytes.
        assert_eq!(
            of(&objects, "keep_large").as_deref(),
            Some("20"),
            "{mode}: {objects:?}"
        );
        assert_eq!(
            of(&space, "keep_large").as_deref(),
            Some("3.91MB"),
            "{mode}: {space:?}"
        );
        for churn in ["churn_large", "churn_small"] {
            assert_eq!(
                of(&space, churn),
                None,
                "{mode}: freed blocks still counted: {space:?}"
            );
        }
    }
}

/// Runs `command`, killing it after `limit`: a deadlock fails the test
/// instead of hanging the suite. `None` when it had to be killed.
fn output_within(command: &mut Command, limit: std::time::Duration) -> Option<Output> {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait for the command").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Some(child.wait_with_output().expect("collect the output"))
}

/// Signal handlers that allocate (issue: 3 runs in 5 hung or crashed in
/// sampled mode): a handler's allocation that interrupted the preload's
/// slow path took glibc's arena lock that the interrupted code held. The
/// program survives glibc alone by construction; under the preload, at a
/// rate that samples often, it must run clean 20 times in a row and print
/// what it prints without it.
#[test]
fn allocating_signal_handlers_run_clean_in_sampled_mode() {
    let p = programs();
    let rounds = "30000";
    let plain = output_within(
        Command::new(&p.signal_alloc).arg(rounds),
        std::time::Duration::from_secs(60),
    )
    .expect("the program finishes without the preload");
    assert_eq!(plain.status.code(), Some(0));
    let expected = String::from_utf8_lossy(&plain.stdout).into_owned();
    let dir = fresh_dir("signal-handlers");
    let mut handlers = 0u64;
    for run in 0..20 {
        let out = output_within(
            Command::new(env!("CARGO_BIN_EXE_leakscope"))
                .args(["run", "-q", "--mode", "sampled", "--rate", "4096", "--out"])
                .arg(&dir)
                .arg("--")
                .arg(&p.signal_alloc)
                .arg(rounds),
            std::time::Duration::from_secs(60),
        )
        .unwrap_or_else(|| panic!("run {run} hung (killed after 60 s)"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {run}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "run {run}");
        handlers += stderr
            .lines()
            .find_map(|l| l.strip_prefix("handlers "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("run {run}: no handler count in {stderr}"));
    }
    // The handlers really ran, many times, while the main thread allocated.
    assert!(
        handlers >= 20 * 50,
        "only {handlers} handlers ran in 20 runs"
    );
}

#[test]
fn the_corners_of_the_c_api_behave_as_without_the_preload() {
    let p = programs();
    let plain = Command::new(&p.edge_cases).output().unwrap();
    assert_eq!(plain.status.code(), Some(0));
    let expected = String::from_utf8_lossy(&plain.stdout);
    assert!(!expected.contains("WRONG"), "{expected}");
    // At a 1-byte rate nearly every block is sampled: the sampled paths
    // (small blocks from the sample heap, moved reallocs) are the ones
    // exercised.
    for mode in ["sampled", "full"] {
        let dir = fresh_dir(&format!("edge-{mode}"));
        let report = dir.join("report.json");
        let out = leakscope_run(
            &[
                "-q",
                "--mode",
                mode,
                "--rate",
                "1",
                "--report",
                report.to_str().unwrap(),
            ],
            &dir,
            &p.edge_cases,
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{mode}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{mode}");
        assert!(
            out.stderr.is_empty(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if mode == "full" {
            // Everything was freed; only stdio's buffer stays reachable.
            let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
            for kind in ["definitely_lost", "indirectly_lost", "possibly_lost"] {
                assert_eq!(report["totals"][kind]["blocks"], 0, "{kind}: {report:#}");
            }
        }
    }
}

/// heaptrack's count of calls to allocation functions.
fn heaptrack_allocations(name: &str, command: &[&str], cwd: &Path) -> u64 {
    let dir = fresh_dir(&format!("heaptrack-{name}"));
    let data = dir.join("ht");
    must(
        Command::new("heaptrack")
            .arg("-o")
            .arg(&data)
            .args(command)
            .current_dir(cwd),
    );
    let printed = must(
        Command::new("heaptrack_print")
            .arg("-f")
            .arg(dir.join("ht.zst")),
    );
    let text = String::from_utf8_lossy(&printed.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("calls to allocation functions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no allocation count from heaptrack_print:\n{text}"))
}

/// Our count of allocations in the top process, from its profile at exit.
fn leakscope_allocations(out_dir: &Path, report: &Value) -> u64 {
    let pid = report["pid"].as_u64().unwrap();
    let profile = out_dir.join(format!("heap-{pid}.pb.gz"));
    let bytes = std::fs::read(&profile).unwrap();
    let view = leakscope_profile::StackView::new(&leakscope_profile::decode(&bytes).unwrap());
    let index = view.sample_index(Some("alloc_objects")).unwrap();
    view.total(index) as u64
}

fn which(program: &str) -> PathBuf {
    let out = must(Command::new("sh").args(["-c", &format!("command -v {program}")]));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A real program: the same output under `leakscope run --mode full`, and
/// an allocation count within 1% of heaptrack's.
fn check_real_program(name: &str, command: &[&str], cwd: &Path) {
    let program = which(command[0]);
    let plain = Command::new(&program)
        .args(&command[1..])
        .current_dir(cwd)
        .output()
        .unwrap();
    let dir = fresh_dir(&format!("real-{name}"));
    let report_path = dir.join("report.json");
    let under = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["run", "-q", "--mode", "full", "--report"])
        .arg(&report_path)
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--")
        .arg(&program)
        .args(&command[1..])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert_eq!(under.status.code(), plain.status.code(), "{name}");
    assert_eq!(
        String::from_utf8_lossy(&under.stdout),
        String::from_utf8_lossy(&plain.stdout),
        "{name}: stdout"
    );
    assert_eq!(
        String::from_utf8_lossy(&under.stderr),
        String::from_utf8_lossy(&plain.stderr),
        "{name}: stderr"
    );
    assert!(!plain.stdout.is_empty(), "{name} printed nothing");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let ours = leakscope_allocations(&dir.join("out"), &report);
    let mut heaptrack_command = vec![program.to_str().unwrap()];
    heaptrack_command.extend(&command[1..]);
    let theirs = heaptrack_allocations(name, &heaptrack_command, cwd);
    let diff = (ours as f64 - theirs as f64).abs() / theirs as f64;
    assert!(
        diff <= 0.01,
        "{name}: {ours} allocations counted, heaptrack counts {theirs} ({:.2}% apart)",
        diff * 100.0
    );
}

#[test]
fn python_runs_unchanged_and_counts_like_heaptrack() {
    // The interpreter itself, not a wrapper script (pyenv shims are shell
    // scripts that start dozens of processes).
    let real = must(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
    let python = String::from_utf8_lossy(&real.stdout).trim().to_string();
    check_real_program(
        "python",
        &[
            &python,
            "-c",
            "import json, collections\n\
             d = collections.Counter(str(i % 97) for i in range(20000))\n\
             print(len(json.dumps(d)), sorted(d.items())[:3])",
        ],
        &scratch(),
    );
}

#[test]
fn git_runs_unchanged_and_counts_like_heaptrack() {
    let repo = fresh_dir("git-repo");
    let git = |args: &[&str]| {
        must(
            Command::new("git")
                .args([
                    "-c",
                    "user.name=leakscope",
                    "-c",
                    "user.email=test@leakscope.invalid",
                ])
                .args(args)
                .current_dir(&repo)
                .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
                .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
        )
    };
    git(&["init", "-q"]);
    for i in 0..5 {
        std::fs::write(
            repo.join(format!("file{i}.txt")),
            format!("line {i}\n").repeat(i + 1),
        )
        .unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", &format!("commit {i}")]);
    }
    check_real_program("git", &["git", "--no-pager", "log", "--stat"], &repo);
}

#[test]
fn ripgrep_runs_unchanged_and_counts_like_heaptrack() {
    // Installed with `cargo install ripgrep` by the README's test command.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    check_real_program("ripgrep", &["rg", "--sort", "path", "-n", "fn ", "."], &src);
}

#[test]
fn a_missing_program_or_command_fails_cleanly() {
    let dir = fresh_dir("missing");
    let out = leakscope_run(&[], &dir, Path::new("/nonexistent/program"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("leakscope: cannot run /nonexistent/program"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn a_statically_linked_program_runs_and_is_explained() {
    let dir = fresh_dir("static");
    let program = scratch().join("static-c");
    must(
        Command::new("gcc")
            .args(["-static", "-O0", "-o"])
            .arg(&program)
            .arg(programs_dir().join("exit7.c")),
    );
    let out = leakscope_run(&[], &dir, &program, &[]);
    assert_eq!(out.status.code(), Some(7), "the exit code passes through");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "static\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is statically linked"), "{err}");
}

/// A plain HTTP/1.1 GET: (status, body). The endpoint answers with a
/// Content-Length, so reading to the end after `Connection: close` is enough.
fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response[split + 4..].to_vec()))
}

#[test]
fn a_running_program_serves_its_heap_profile() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = fresh_dir("http");
    let real = must(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
    let python = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args([
            "run",
            "-q",
            "--mode",
            "full",
            "--http",
            &port.to_string(),
            "--out",
        ])
        .arg(&dir)
        .args([
            "--",
            &python,
            "-c",
            "import time\nkept = [bytearray(100000) for _ in range(30)]\ntime.sleep(4)",
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let heap = loop {
        if let Some((200, body)) = http_get(port, "/debug/pprof/heap") {
            let view =
                leakscope_profile::StackView::new(&leakscope_profile::decode(&body).unwrap());
            let index = view.sample_index(Some("inuse_space")).unwrap();
            // The 30 buffers of 100 kB are live once the program sleeps.
            if view.total(index) >= 3_000_000 {
                break view;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the endpoint never served the live heap"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(heap.sample_types[heap.default_index].0, "inuse_space");
    let (status, refs) = http_get(port, "/debug/leakscope/refs").unwrap();
    assert_eq!(status, 200);
    assert!(leakscope_profile::decode(&refs).is_ok());
    let status = child.wait().unwrap();
    assert!(status.success());
}
