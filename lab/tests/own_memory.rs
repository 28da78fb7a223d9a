//! leakscope's own memory in a small service writing periodic outputs in
//! sampled mode (the hyper service with no leak, about 5 MB on its own).
//! Each set symbolises its stacks, parsing the binary's debug information
//! (tens of MB of heap and a mapping of the file): by default in a forked
//! writer child, with `LEAKSCOPE_WRITER=process` in the service. Either way
//! that memory must never be the service's between sets: not mapped, not
//! kept by glibc, and never read into a breakdown, the one written at exit
//! included (it used to be read while the writer thread's symbolizer was
//! still loaded: +46 MB of "file-backed" and +28 MB of "heap in use" in a
//! service that grew by nothing). How much the service holds is measured
//! in the benchmark (`bench/own_memory.py`).

use std::process::{Command, Stdio};

use leakscope::memory::{Breakdown, PartKind};

const MIB: u64 = 1 << 20;

#[test]
fn periodic_outputs_leave_no_symbolizer_memory_behind() {
    for writer in ["child", "process"] {
        println!("LEAKSCOPE_WRITER={writer}");
        check_periodic_outputs(writer);
    }
}

fn check_periodic_outputs(writer: &str) {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_hyper-service"))
        .args(["--leak", "none", "--duration", "3"])
        .env("LEAKSCOPE_MODE", "sampled")
        .env("LEAKSCOPE_INTERVAL", "0.3")
        .env("LEAKSCOPE_DIR", dir.path())
        .env("LEAKSCOPE_WRITER", writer)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("memory-")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{} breakdowns", files.len());
    let memory: Vec<Breakdown> = files
        .iter()
        .map(|f| Breakdown::from_json(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect();
    for (f, b) in files.iter().zip(&memory) {
        let name = f.file_name().unwrap().to_string_lossy();
        println!(
            "{name}: RSS {} KiB, heap in use {} KiB, freed {} KiB, files {} KiB",
            b.rss / 1024,
            b.part(PartKind::HeapInUse) / 1024,
            b.part(PartKind::HeapFree) / 1024,
            b.part(PartKind::FileBacked) / 1024
        );
        // The binary's debug information mapped by a symbolizer.
        assert!(
            b.part(PartKind::FileBacked) < 8 * MIB,
            "{name}\n{}",
            b.render()
        );
        // Its parsed form, freed but kept by glibc.
        assert!(
            b.part(PartKind::HeapFree) < 16 * MIB,
            "{name}\n{}",
            b.render()
        );
    }
    // The service holds a flat few MB: so does the process, exit included.
    let first = memory[0].rss;
    let last = memory.last().unwrap();
    assert!(
        last.rss < first + 24 * MIB,
        "RSS {} KiB -> {} KiB\n{}",
        first / 1024,
        last.rss / 1024,
        last.render()
    );
}
