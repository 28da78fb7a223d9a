//! What a crash, a crowded directory or a hostile file does to the readers:
//! each reproduces a fault found by trying (issue 15) and checks it is gone.

mod support;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{leakscope, stderr};

use leakscope_profile::{encode_gzip, ProfileBuilder, HEAP_SAMPLE_TYPES};

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leakscope-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A profile where `app::leak` holds `leak` bytes, at time `t` seconds.
fn profile(leak: i64, t: i64) -> Vec<u8> {
    let mut b = ProfileBuilder::new(&HEAP_SAMPLE_TYPES, ("space", "bytes"), 1);
    b.set_default_sample_type("inuse_space");
    b.set_time_nanos(t * 1_000_000_000);
    let main = b.function("app::main", "app::main", "src/main.rs", 1);
    let main_loc = b.location(0, 0x100, &[(main, 10)]);
    let f = b.function("app::leak", "app::leak", "src/lib.rs", 1);
    let loc = b.location(0, 0x200, &[(f, 20)]);
    b.add_sample(&[loc, main_loc], &[1, leak, 1, leak], &[]);
    encode_gzip(&b.build())
}

/// Runs the binary and returns its output with its peak resident memory.
// Reaped by wait4, which also reports the peak; std's wait cannot.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str]) -> (Output, u64) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out_pipe.read_to_end(&mut v).unwrap();
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        err_pipe.read_to_end(&mut v).unwrap();
        v
    });
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; both pointers are live.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    let peak = usage.ru_maxrss as u64 * 1024;
    let output = Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    (output, peak)
}

fn assert_one_line_failure(o: &Output, mentions: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains(mentions), "{err} should mention {mentions}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unreadable_and_foreign_entries_are_skipped_with_one_warning_each() {
    let dir = fresh_dir("crowded");
    for i in 0..8 {
        std::fs::write(
            dir.join(format!("heap-100-{i:04}.pb.gz")),
            profile(1_000_000 * (i + 1), i),
        )
        .unwrap();
    }
    // What a directory of a crashed or busy system may also hold.
    std::fs::write(dir.join("package.json"), b"{\"name\": \"not ours\"}").unwrap();
    std::fs::write(dir.join("heap-100-0008.pb.gz"), &profile(1, 8)[..30]).unwrap();
    std::fs::create_dir(dir.join("heap-100-0009.pb.gz")).unwrap();
    std::os::unix::fs::symlink("loop-b.json", dir.join("loop-a.json")).unwrap();
    std::os::unix::fs::symlink("loop-a.json", dir.join("loop-b.json")).unwrap();
    let fifo = dir.join("heap-100-0010.pb.gz");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::fs::write(dir.join(".snapshot-100-0011.json.Ab12Cd.tmp"), b"{\"form").unwrap();

    let d = dir.to_str().unwrap();
    for command in ["report", "trend"] {
        let o = leakscope(&[command, d]);
        let err = stderr(&o);
        assert!(o.status.success(), "{command}: {err}");
        let warnings: Vec<&str> = err.lines().collect();
        assert_eq!(warnings.len(), 7, "{command}: {err}");
        for (name, why) in [
            ("package.json", "not a leakscope snapshot"),
            ("heap-100-0008.pb.gz", "truncated"),
            ("heap-100-0009.pb.gz", "not a regular file (a directory)"),
            ("loop-a.json", "symbolic links"),
            ("loop-b.json", "symbolic links"),
            ("heap-100-0010.pb.gz", "not a regular file (a FIFO)"),
            (".snapshot-100-0011.json.Ab12Cd.tmp", "unfinished write"),
        ] {
            let line = warnings
                .iter()
                .find(|l| l.contains(name))
                .unwrap_or_else(|| panic!("{command}: no warning names {name}: {err}"));
            assert!(line.starts_with("leakscope: skipping "), "{line}");
            assert!(line.contains(why), "{line} should say {why}");
        }
    }
    let o = leakscope(&["report", d, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["verdict"], "leak", "{json:#}");
}

#[test]
fn several_processes_need_a_choice_and_pid_makes_it() {
    let dir = fresh_dir("processes");
    // A short helper with more files than the leaking service.
    for i in 0..12 {
        std::fs::write(dir.join(format!("heap-7-{i:04}.pb.gz")), profile(5_000, i)).unwrap();
    }
    for i in 0..8 {
        std::fs::write(
            dir.join(format!("heap-4242-{i:04}.pb.gz")),
            profile(2_000_000 * (i + 1), i),
        )
        .unwrap();
    }
    let d = dir.to_str().unwrap();
    for command in ["report", "trend"] {
        let o = leakscope(&[command, d]);
        assert_one_line_failure(&o, "choose one with --pid");
        let err = stderr(&o);
        assert!(err.contains("2 processes"), "{err}");
        assert!(err.contains("7 (12 profiles)"), "{err}");
        assert!(err.contains("4242 (8 profiles)"), "{err}");
    }
    let o = leakscope(&["report", d, "--pid", "4242", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["verdict"], "leak", "{json:#}");
    let o = leakscope(&["trend", d, "--pid", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no stack or holder grew"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_one_line_failure(
        &leakscope(&["trend", d, "--pid", "99"]),
        "no files of pid 99",
    );
}

/// The temporaries of a process's periodic snapshot writes, if any.
fn snapshot_temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".snapshot-") && n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of a process's children (every thread's).
fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `/proc/PID/stat` shows a process that is neither gone nor a
/// zombie.
fn is_running(stat: &str) -> bool {
    std::fs::read_to_string(stat).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

#[test]
fn a_process_killed_while_writing_a_snapshot_leaves_a_readable_directory() {
    let dir = fresh_dir("killed");
    let scratch = fresh_dir("killed-scratch");
    // The demo's workload in full mode, a profile and a snapshot every 20 ms.
    let mut child = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["demo-workload", "--requests", "1000000000", "--out"])
        .arg(&scratch)
        .env("LEAKSCOPE_MODE", "full")
        .env("LEAKSCOPE_INTERVAL", "0.02")
        .env("LEAKSCOPE_DIR", &dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Stop the process, and the writer child it forks for each set, whenever
    // a snapshot is being written; if the write is still unfinished while
    // they are stopped, kill the process there (its writer dies with it).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (caught, writers) = loop {
        assert!(Instant::now() < deadline, "never caught a snapshot write");
        if snapshot_temporaries(&dir).is_empty() {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // SAFETY: signals to our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let writers = children_of(pid);
        for &w in &writers {
            // SAFETY: the writer is stopped, not reaped: its pid is its own.
            unsafe { libc::kill(w, libc::SIGSTOP) };
        }
        std::thread::sleep(Duration::from_millis(5));
        let temporaries = snapshot_temporaries(&dir);
        if let Some(t) = temporaries.first() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break (t.clone(), writers);
        }
        for &w in &writers {
            // SAFETY: as above.
            unsafe { libc::kill(w, libc::SIGCONT) };
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    };
    child.wait().unwrap();
    // The writer child dies with the process (it is not ours to reap: once
    // the process is gone, init reaps it).
    let gone_by = Instant::now() + Duration::from_secs(10);
    while writers
        .iter()
        .any(|w| is_running(&format!("/proc/{w}/stat")))
    {
        assert!(
            Instant::now() < gone_by,
            "a writer child outlived the process"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        dir.join(&caught).exists(),
        "the unfinished write is left behind"
    );
    // Every file under a final name is complete.
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        if name.starts_with("memory-") {
            let text = std::str::from_utf8(&bytes).unwrap();
            leakscope_profile::memory::Breakdown::from_json(text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else if name.ends_with(".json") {
            let text = std::str::from_utf8(&bytes).unwrap();
            leakscope_profile::snapshot::SnapshotReport::from_json(text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        } else {
            leakscope_profile::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let d = dir.to_str().unwrap();
    for args in [
        vec!["report", d],
        vec!["report", d, "--json"],
        vec!["trend", d],
    ] {
        let o = leakscope(&args);
        let err = stderr(&o);
        assert!(o.status.success(), "{args:?}: {err}");
        let skipped: Vec<&str> = err.lines().filter(|l| l.contains("skipping")).collect();
        assert!(
            skipped
                .iter()
                .any(|l| l.contains(&caught) && l.contains("unfinished write")),
            "{args:?}: {err}"
        );
        // Perhaps the profile's temporary too, nothing else.
        assert!(skipped.len() <= 2, "{args:?}: {err}");
    }
}

/// Peak memory allowed to a reader rejecting a hostile file.
const READER_BUDGET: u64 = 256 << 20;

#[test]
fn a_gzip_bomb_is_rejected_within_256_mb() {
    let dir = fresh_dir("bomb");
    let path = dir.join("bomb.pb.gz");
    // 1 GiB of zeros in about a megabyte.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        gz.write_all(&zeros).unwrap();
    }
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 2 << 20);
    for command in ["top", "flame"] {
        let mut args = vec![command, path.to_str().unwrap()];
        let svg = dir.join("bomb.svg");
        if command == "flame" {
            args.extend(["-o", svg.to_str().unwrap()]);
        }
        let (o, peak) = run_measured(&args);
        assert_one_line_failure(&o, "inflates to more than 64 MiB");
        assert!(peak < READER_BUDGET, "{command}: peak {peak} bytes");
        assert!(!svg.exists());
    }
}

/// A profile of `functions` frames, each named by one long string, in
/// `samples` samples sharing the whole stack.
fn long_names_profile(name_len: usize, functions: usize, samples: usize) -> Vec<u8> {
    let mut b = ProfileBuilder::new(&HEAP_SAMPLE_TYPES, ("space", "bytes"), 1);
    let mut locations = Vec::new();
    for i in 0..functions {
        let name = format!("{i:06}{}", "x".repeat(name_len));
        let f = b.function(&name, &name, "", 0);
        locations.push(b.location(0, 0x1000 + i as u64, &[(f, 1)]));
    }
    for s in 0..samples {
        // Each sample a distinct stack (another leaf), sharing the rest.
        let leaf = b.function(&format!("leaf{s}"), "", "", 0);
        let leaf_loc = b.location(0, 0x100_0000 + s as u64, &[(leaf, 1)]);
        let mut stack = vec![leaf_loc];
        stack.extend(&locations);
        b.add_sample(&stack, &[1, 1000, 1, 1000], &[]);
    }
    encode_gzip(&b.build())
}

#[test]
fn long_names_cannot_blow_up_memory_or_the_flame_graph() {
    let dir = fresh_dir("names");
    // Names one byte over the limit of one name.
    let path = dir.join("long-name.pb.gz");
    std::fs::write(&path, long_names_profile(256 << 10, 1, 1)).unwrap();
    assert_one_line_failure(
        &leakscope(&["top", path.to_str().unwrap()]),
        "a name of 262150 bytes, more than the 262144 accepted",
    );
    // A small file whose stacks would spell out gigabytes of names (in
    // folded stacks, a flame graph, per-stack series).
    let path = dir.join("deep.pb.gz");
    std::fs::write(&path, long_names_profile(100 << 10, 200, 64)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let svg = dir.join("deep.svg");
    for args in [
        vec!["flame", path.to_str().unwrap(), "-o", svg.to_str().unwrap()],
        vec!["top", path.to_str().unwrap()],
    ] {
        let (o, peak) = run_measured(&args);
        assert_one_line_failure(&o, "bytes of function names over all stacks");
        assert!(peak < READER_BUDGET, "{args:?}: peak {peak} bytes");
    }
    assert!(!svg.exists());
    // In a directory it is skipped, and the rest is analysed.
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::rename(&path, run.join("heap-9-0002.pb.gz")).unwrap();
    for i in 0..2 {
        std::fs::write(run.join(format!("heap-9-{i:04}.pb.gz")), profile(1000, i)).unwrap();
    }
    let html = dir.join("check.html");
    let (o, peak) = run_measured(&[
        "report",
        run.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("heap-9-0002.pb.gz"), "{}", stderr(&o));
    assert!(peak < READER_BUDGET, "report: peak {peak} bytes");
    // Just within the reader's limits (48 MB of names), the flame graph is
    // drawn within its own bound.
    let path = dir.join("wide.pb.gz");
    std::fs::write(&path, long_names_profile(30 << 10, 100, 16)).unwrap();
    let (o, peak) = run_measured(&["flame", path.to_str().unwrap(), "-o", svg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(peak < READER_BUDGET, "flame: peak {peak} bytes");
    assert!(std::fs::metadata(&svg).unwrap().len() <= 64 << 20);
}

#[test]
fn values_near_the_limits_saturate_instead_of_wrapping() {
    let dir = fresh_dir("huge-values");
    let mut b = ProfileBuilder::new(&HEAP_SAMPLE_TYPES, ("space", "bytes"), 1);
    for i in 0..3 {
        let f = b.function(&format!("f{i}"), "", "", 0);
        let l = b.location(0, 0x10 + i, &[(f, 1)]);
        b.add_sample(&[l], &[1, i64::MAX - 5, 1, i64::MAX - 5], &[]);
    }
    let path = dir.join("huge.pb.gz");
    std::fs::write(&path, encode_gzip(&b.build())).unwrap();
    let o = leakscope(&["top", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains('-'), "a negative figure: {out}");
    assert!(out.contains("8589934592.00GB total"), "{out}");
}
