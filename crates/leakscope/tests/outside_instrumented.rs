//! A process that runs leakscope (full mode), attached from outside: the
//! snapshot reads the target's own live table and stack table from its
//! memory, so it names the same holders, the same exact byte counts and
//! the same allocation stacks as the target's own in-process snapshot.
//!
//! The target is this test binary again, run with `OUTSIDE_TARGET=1`: it
//! plants blocks under a static, takes its own snapshot, prints what it
//! found, and waits for its input to close.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use leakscope::outside::{self, AttachOptions};
use leakscope::{Mode, Profiler};

#[global_allocator]
static ALLOC: Profiler = Profiler::new().with_mode(Mode::Full);

static PLANTED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

const BLOCKS: usize = 300;
const BLOCK: usize = 3000;

#[inline(never)]
fn plant_blocks_for_the_outside_check() {
    let mut planted = PLANTED.lock().unwrap();
    for i in 0..BLOCKS {
        planted.push(vec![i as u8; BLOCK]);
    }
}

/// The group of planted blocks: (blocks, bytes, its first frames).
fn planted_group(report: &leakscope::snapshot::SnapshotReport) -> (u64, u64, Vec<String>) {
    let g = report
        .groups
        .iter()
        .find(|g| {
            g.site
                .iter()
                .any(|f| f.contains("plant_blocks_for_the_outside_check"))
        })
        .unwrap_or_else(|| panic!("no group of the planted blocks:\n{}", report.render(8)));
    let root = &g
        .chain
        .first()
        .expect("a reachable group has a chain")
        .node
        .name;
    assert!(root.contains("PLANTED"), "held from {root}");
    let frames = g.site.iter().take(3).cloned().collect();
    (g.amount.blocks, g.amount.bytes, frames)
}

#[test]
fn target_process() {
    if std::env::var_os("OUTSIDE_TARGET").is_none() {
        return;
    }
    plant_blocks_for_the_outside_check();
    let own = leakscope::snapshot().expect("the target's own snapshot");
    let (blocks, bytes, frames) = planted_group(own.report());
    // Straight to stdout: the harness captures `println!`.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "own {blocks} {bytes} {}", frames.join("|")).unwrap();
    stdout.flush().unwrap();
    drop(stdout);
    // Wait for the test to be done with us.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn attached_from_outside_it_names_what_its_own_snapshot_names() {
    let mut target = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "target_process", "--test-threads=1"])
        .env("OUTSIDE_TARGET", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the target starts");
    let mut out = BufReader::new(target.stdout.take().unwrap());
    let own = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the target ended");
        // After the harness's "test target_process ... ".
        if let Some((_, rest)) = line.trim_end().split_once("own ") {
            break rest.to_string();
        }
    };
    let mut own = own.splitn(3, ' ');
    let own_blocks: u64 = own.next().unwrap().parse().unwrap();
    let own_bytes: u64 = own.next().unwrap().parse().unwrap();
    let own_frames = own.next().unwrap_or_default().to_string();
    // The blocks and the vector holding them.
    assert_eq!(own_blocks, BLOCKS as u64 + 1);
    assert!(own_bytes > (BLOCKS * BLOCK) as u64);

    let attached = outside::attach(target.id() as i32, &AttachOptions::default())
        .expect("attach to the target");
    let snapshot = outside::snapshot_of_attached(&attached).expect("a snapshot from outside");
    drop(target.stdin.take());
    let _ = target.wait();

    let report = snapshot.report();
    let (blocks, bytes, frames) = planted_group(report);
    assert_eq!(
        (blocks, bytes),
        (own_blocks, own_bytes),
        "{}",
        report.render(8)
    );
    assert_eq!(frames.join("|"), own_frames);
    // Stacks for the blocks the table tracks, not only the walk's sizes.
    assert!(
        report.with_stacks.blocks >= BLOCKS as u64,
        "{:?}",
        report.with_stacks
    );
}
