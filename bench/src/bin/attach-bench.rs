//! Snapshots from outside against the in-process one, on the same process:
//! `attach-bench MIB [BLOCK_BYTES]`. Starts itself as a target (the system
//! allocator with leakscope off: a service nobody instrumented) holding MIB
//! MiB of BLOCK_BYTES blocks (default 512) that point to random earlier
//! ones, then measures, best of three each:
//! - the target's own in-process snapshot (a walk of its heap): pause;
//! - `attach` with fork injection: the target's pause, the copy, and the
//!   analysis with naming the results (throughput: resident bytes analysed
//!   per second), and the analysis engine alone with its phases;
//! - `gcore` + `core`: writing the core, then reading and analysing it.
//!
//! Prints one JSON line.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use leakscope::outside::{self, AttachOptions, CoreImage, CoreOptions, Made};

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new().with_mode(leakscope::Mode::Off);

/// The target: builds the heap, says `ready RSS`, then answers `snap`
/// with its best in-process pause in ms, until stdin closes.
fn target(mib: usize, block: usize) {
    let n = (mib << 20) / block;
    let layout = std::alloc::Layout::from_size_align(block, 8).expect("a layout");
    let mut blocks: Vec<usize> = Vec::with_capacity(n);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..n {
        // SAFETY: a non-zero size; the block is kept for the process's life.
        let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut usize;
        assert!(!p.is_null());
        if i > 0 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // SAFETY: `p` is a fresh block of at least 8 bytes.
            unsafe { *p = blocks[(seed % i as u64) as usize] };
        }
        blocks.push(p as usize);
    }
    println!("ready {}", leakscope_bench::rss_bytes());
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == "snap" {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let snap = leakscope::snapshot_with(leakscope::SnapshotOptions {
                    blocks: leakscope::BlockSource::HeapWalk,
                    ..leakscope::SnapshotOptions::default()
                })
                .expect("an in-process snapshot");
                best = best.min(snap.pause().as_secs_f64() * 1e3);
            }
            println!("{best:.2}");
        }
    }
    std::hint::black_box(&blocks);
}

fn best<T>(runs: usize, mut f: impl FnMut() -> (f64, T)) -> (f64, T) {
    let mut out = f();
    for _ in 1..runs {
        let next = f();
        if next.0 < out.0 {
            out = next;
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--target") {
        target(
            args[2].parse().expect("MIB"),
            args[3].parse().expect("BLOCK"),
        );
        return;
    }
    let mib: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(256);
    let block: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(512);
    let mut child = Command::new(std::env::current_exe().expect("this program"))
        .args(["--target", &mib.to_string(), &block.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the target starts");
    let pid = child.id() as i32;
    let mut input = child.stdin.take().expect("its stdin");
    let mut output = BufReader::new(child.stdout.take().expect("its stdout"));
    let mut line = String::new();
    output.read_line(&mut line).expect("ready");
    let rss: u64 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|v| v.parse().ok())
        .expect("ready RSS");
    let gib = rss as f64 / (1u64 << 30) as f64;

    writeln!(input, "snap").expect("ask");
    line.clear();
    output.read_line(&mut line).expect("its pause");
    let in_process_pause: f64 = line.trim().parse().expect("a pause");

    let mut best_engine = f64::MAX;
    let mut phases = String::new();
    let (attach_pause, (copy_ms, total_ms, blocks)) = best(3, || {
        let attached = outside::attach(pid, &AttachOptions::default()).expect("attach");
        assert!(matches!(attached.made, Made::Forked { .. }));
        let started = Instant::now();
        let snap = outside::snapshot_of_attached(&attached).expect("its snapshot");
        let total = started.elapsed().as_secs_f64() * 1e3;
        // The analysis engine alone (walk, index, scan, graph...), without
        // naming the results from the files' debug information.
        let engine = snap.analysis_time().as_secs_f64() * 1e3;
        if engine < best_engine {
            best_engine = engine;
            phases = leakscope_bench::phases_json(&snap);
        }
        (
            attached.pause.as_secs_f64() * 1e3,
            (
                attached.copy_time.as_secs_f64() * 1e3,
                total,
                snap.report().totals.live.blocks,
            ),
        )
    });

    let dir = std::env::temp_dir().join(format!("attach-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let started = Instant::now();
    let gcore = Command::new("gcore")
        .arg("-o")
        .arg(dir.join("core"))
        .arg(pid.to_string())
        .output();
    let gcore_ms = started.elapsed().as_secs_f64() * 1e3;
    let core_ms = match gcore {
        Ok(o) if o.status.success() => {
            let started = Instant::now();
            let core = CoreImage::open(
                &dir.join(format!("core.{pid}")),
                &CoreOptions {
                    fill_from_files: true,
                    ..CoreOptions::default()
                },
            )
            .expect("the core");
            outside::snapshot_of_core(&core, 0).expect("its snapshot");
            started.elapsed().as_secs_f64() * 1e3
        }
        _ => f64::NAN,
    };
    let _ = std::fs::remove_dir_all(&dir);
    drop(input);
    let _ = child.wait();
    println!(
        "{{\"mib\":{mib},\"block\":{block},\"rss_mib\":{:.0},\"blocks\":{blocks},\
         \"in_process_pause_ms\":{in_process_pause:.2},\"attach_pause_ms\":{attach_pause:.2},\
         \"in_process_pause_ms_per_gib\":{:.2},\"attach_pause_ms_per_gib\":{:.2},\
         \"attach_copy_ms\":{copy_ms:.1},\"attach_analysis_ms\":{total_ms:.1},\
         \"analysis_gib_per_s\":{:.2},\"attach_engine_ms\":{best_engine:.1},\
         \"engine_gib_per_s\":{:.2},\"engine_phases_ms\":{phases},\
         \"gcore_ms\":{gcore_ms:.0},\"core_analysis_ms\":{core_ms:.0}}}",
        rss as f64 / (1u64 << 20) as f64,
        in_process_pause / gib,
        attach_pause / gib,
        gib / (total_ms / 1e3),
        gib / (best_engine / 1e3),
    );
}
