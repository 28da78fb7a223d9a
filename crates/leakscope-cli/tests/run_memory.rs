//! `leakscope run --memory`: where an unmodified program's RSS went at
//! exit. A C program of known shape (blocks kept, holes freed, an anonymous
//! mapping) and a Python interpreter (whose small objects live in its own
//! arenas, outside malloc): the parts sum to RSS within 2%, any remainder
//! named, and each planted kind of memory is in its part.

use std::path::{Path, PathBuf};
use std::process::Command;

use leakscope_profile::memory::{Breakdown, PartKind};

const MIB: u64 = 1 << 20;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("run-memory")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `leakscope run --memory` and returns the breakdown the snapshot at
/// exit carries, after checking that it was printed.
fn run_with_memory(name: &str, command: &[&str]) -> Breakdown {
    let out_dir = scratch(name);
    let out = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["run", "--memory", "-q", "--out"])
        .arg(&out_dir)
        .arg("--")
        .args(command)
        .output()
        .expect("run leakscope");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {stderr}");
    assert!(
        stderr.contains("leakscope: Memory of pid")
            && stderr.contains("heap: freed, kept by the allocator"),
        "{name}: no breakdown printed: {stderr}"
    );
    let snapshot = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("snapshot-"))
        })
        .expect("a snapshot at exit");
    let report = leakscope_profile::snapshot::SnapshotReport::from_json(
        &std::fs::read_to_string(snapshot).unwrap(),
    )
    .unwrap();
    let memory = report.memory.expect("the snapshot's breakdown");
    println!("{name}:\n{}", memory.render());
    let sum = memory.sum_of_parts();
    assert!(
        sum.abs_diff(memory.rss) * 50 <= memory.rss
            && memory.part(PartKind::Unexplained) * 50 <= memory.rss,
        "{name}: parts {sum} against RSS {}",
        memory.rss
    );
    memory
}

#[test]
fn a_c_program_with_holes_and_a_mapping() {
    let program = scratch("c-build").join("memory");
    let built = Command::new("gcc")
        .args(["-O0", "-g", "-pthread", "-o"])
        .arg(&program)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/memory.c"))
        .output()
        .expect("gcc (the README's test command installs it)");
    assert!(built.status.success());
    let m = run_with_memory("c", &[program.to_str().unwrap()]);
    // 4 threads × 1024 kept blocks of 4 KiB, as many freed between them.
    let planted = 4 * 1024 * 4096;
    assert!(m.part(PartKind::HeapInUse) >= planted);
    assert!(m.part(PartKind::HeapFree) * 10 >= planted * 9);
    assert!(m.part(PartKind::OtherAnonymous) >= 8 * MIB);
    let live = m.heap.live.expect("full mode's live figures");
    assert!(live.amount.bytes >= planted && live.amount.blocks >= 4 * 1024);
}

#[test]
fn a_python_interpreter_and_its_own_arenas() {
    let real = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 (the README's test command installs it)");
    let python = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let m = run_with_memory(
        "python",
        &[
            &python,
            "-c",
            // 100 buffers of 100 kB from malloc; 300,000 small strings from
            // Python's own arenas (anonymous mappings, not malloc's). An
            // extra reference keeps both past the interpreter's finalisation,
            // which runs before the breakdown at exit.
            "import ctypes\n\
             buffers = [bytearray(100000) for _ in range(100)]\n\
             strings = [str(i) * 3 for i in range(300000)]\n\
             for kept in (buffers, strings):\n    ctypes.pythonapi.Py_IncRef(ctypes.py_object(kept))",
        ],
    );
    assert!(m.part(PartKind::HeapInUse) >= 10_000_000);
    assert!(m.part(PartKind::OtherAnonymous) >= 8 * MIB);
    assert!(m.part(PartKind::Code) >= MIB);
}
