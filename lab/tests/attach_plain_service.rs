//! `leakscope::outside` against a Rust service nobody instrumented
//! (`plain-service`: axum on the system allocator, keeping a 4-byte slice
//! of every request body in a static). Attached while a client keeps
//! calling it, and from its `gcore` core, the snapshot must name the static
//! and the whole buffers the slices pin; the service answers every request
//! correctly before, during and after. Needs gdb's `gcore`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use leakscope::outside::{self, AttachOptions, CoreImage, CoreOptions, Made};

const BODY: usize = 64 << 10;
const KEPT: u64 = 120;

struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Service {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plain-service"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("plain-service starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .unwrap()
        .parse()
        .unwrap();
    Service { child, port }
}

/// One request over its own connection; the body's bytes follow `seed`.
/// Checks the answer (the sum of the body's bytes).
fn call(port: u16, seed: u64) {
    let body: Vec<u8> = (0..BODY as u64).map(|i| ((i + seed) % 251) as u8).collect();
    let expected: u64 = body.iter().map(|&b| u64::from(b)).sum();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let answer = response.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(answer, expected.to_string(), "request {seed}");
}

/// The snapshot names the static and the buffers its slices pin.
fn check(snapshot: &leakscope::Snapshot, pid: u32) {
    let report = snapshot.report();
    print!("{}", report.render(5));
    assert_eq!(report.pid, pid);
    let pinned = report
        .pinned
        .iter()
        .find(|p| p.chain.iter().any(|l| l.node.name.contains("KEPT_SLICES")))
        .unwrap_or_else(|| panic!("no pinning held by KEPT_SLICES: {:#?}", report.pinned));
    // Every buffer the static pins, but for a few a stale word elsewhere
    // (a worker's registers or stack, a read buffer) also points to: the
    // static no longer dominates those.
    let at_least = KEPT * 9 / 10;
    assert!(pinned.buffers.blocks >= at_least, "{pinned:?}");
    assert!(pinned.buffers.bytes >= at_least * BODY as u64, "{pinned:?}");
    // 4-byte slices (a pointer word and a length each, at most).
    assert!(
        pinned.slice_bytes <= pinned.buffers.blocks * 8,
        "{pinned:?}"
    );
}

#[test]
fn attach_and_core_find_the_static_pinning_request_buffers() {
    let service = start();
    let pid = service.child.id();
    for seed in 0..KEPT {
        call(service.port, seed);
    }
    // A client keeps calling while leakscope attaches.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, served, port) = (stop.clone(), served.clone(), service.port);
        std::thread::spawn(move || {
            let mut seed = 1000;
            while !stop.load(Ordering::Relaxed) {
                call(port, seed);
                served.fetch_add(1, Ordering::Relaxed);
                seed += 1;
            }
        })
    };
    // The client's thread ends only by panicking before it is stopped:
    // waiting for it then fails the test instead of hanging it.
    let wait_for = |n: u64, client: &std::thread::JoinHandle<()>| {
        while served.load(Ordering::Relaxed) < n {
            assert!(
                !client.is_finished(),
                "the client failed (see its panic above)"
            );
            std::thread::yield_now();
        }
    };
    wait_for(3, &client);
    let attached = outside::attach(pid as i32, &AttachOptions::default()).unwrap();
    assert!(
        matches!(attached.made, Made::Forked { .. }),
        "{:?}",
        attached.made
    );
    println!(
        "attach: paused {:?}, copied {} MiB in {:?}",
        attached.pause,
        attached.image.copied_bytes() >> 20,
        attached.copy_time
    );
    let during = served.load(Ordering::Relaxed);
    let live = outside::snapshot_of_attached(&attached).unwrap();
    drop(attached);
    wait_for(during + 3, &client);
    stop.store(true, Ordering::Relaxed);
    client
        .join()
        .expect("every answer correct during the attach");
    check(&live, pid);

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("gcore")
        .arg("-o")
        .arg(dir.path().join("core"))
        .arg(pid.to_string())
        .output()
        .expect("gcore (gdb) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    call(service.port, 7);
    let core = CoreImage::open(
        &dir.path().join(format!("core.{pid}")),
        &CoreOptions {
            fill_from_files: true,
            ..CoreOptions::default()
        },
    )
    .unwrap();
    check(&outside::snapshot_of_core(&core, 0).unwrap(), pid);
}
