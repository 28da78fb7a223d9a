//! The endpoint cannot hurt the service it diagnoses: a burst of requests
//! keeps the host's memory bounded (one shared symbolizer, a small number of
//! builds at once, 429 beyond), slow or idle connections are closed, and it
//! refuses to serve beyond loopback without a token. A test binary of its
//! own, so that the memory measured is the endpoint's alone.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use leakscope::http::{self, Options};
use leakscope::Profiler;

#[global_allocator]
static ALLOC: Profiler = Profiler::new();

/// What the service holds: 12 MiB, as the program the fault was found with.
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn status_field(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field}"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// One request on a fresh connection; the status code, headers and body.
fn request(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let code = head[9..12].parse().unwrap();
    (code, head, response[split + 4..].to_vec())
}

const MB: u64 = 1 << 20;

#[test]
fn fifty_concurrent_heap_requests_keep_the_host_within_150_mb() {
    {
        let mut held = HELD.lock().unwrap();
        for _ in 0..12 {
            held.push(vec![1u8; 1 << 20]);
        }
    }
    let handle = http::serve_with(
        "127.0.0.1:0",
        Options::default().with_history_interval(None),
    )
    .unwrap();
    let addr = handle.local_addr();
    let clients = 50;
    let barrier = Barrier::new(clients + 1);
    let baseline = status_field("VmRSS:");
    // Peak resident memory from here on (writing 5 resets VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let results: Vec<(u16, String, Vec<u8>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    request(addr, "/debug/pprof/heap")
                })
            })
            .collect();
        barrier.wait();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let peak = status_field("VmHWM:");
    let served = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    eprintln!(
        "baseline {} MB, peak {} MB, {served} served, {} refused",
        baseline / MB,
        peak / MB,
        refused.len()
    );
    assert_eq!(served + refused.len(), clients, "other statuses");
    assert!(served >= 1);
    assert!(!refused.is_empty(), "50 at once and none refused");
    for (_, head, _) in &refused {
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 1"),
            "{head}"
        );
    }
    for (_, _, body) in results.iter().filter(|r| r.0 == 200) {
        leakscope_profile::decode(body).expect("a heap profile");
    }
    assert!(
        peak < baseline + 150 * MB,
        "peak {} MB over a baseline of {} MB",
        peak / MB,
        baseline / MB
    );
    // Once the burst is over, requests are served again.
    assert_eq!(request(addr, "/debug/pprof/heap").0, 200);
    handle.shutdown();
}

#[test]
fn slow_and_idle_connections_are_closed() {
    let handle = http::serve_with(
        "127.0.0.1:0",
        Options::default()
            .with_history_interval(None)
            .with_header_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let addr = handle.local_addr();
    let closed_by_server = |mut s: TcpStream| {
        // Far longer than the timeout: the server must hang up first.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => rest,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => rest,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    };
    // Half-sent headers.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /debug/pprof/ HTTP/1.1\r\nHost: loc")
        .unwrap();
    let rest = closed_by_server(s);
    assert!(
        rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // Nothing sent at all.
    let s = TcpStream::connect(addr).unwrap();
    closed_by_server(s);
    // Idle after a kept-alive request.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /debug/pprof/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let first = closed_by_server(s);
    assert!(
        String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    handle.shutdown();
}

#[test]
fn beyond_loopback_needs_a_token_and_a_token_cannot_be_empty() {
    let err = http::serve_with("0.0.0.0:0", Options::default().with_history_interval(None))
        .err()
        .expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("without a token"), "{err}");
    assert!(
        err.to_string()
            .contains("LEAKSCOPE_HTTP_ALLOW_REMOTE_WITHOUT_TOKEN=1"),
        "{err}"
    );
    let err = http::serve_with(
        "127.0.0.1:0",
        Options::default()
            .with_history_interval(None)
            .with_token(""),
    )
    .err()
    .expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("token is empty"), "{err}");
    // A token, or saying so explicitly, is enough (the listener is closed at
    // once; nothing is sent to it).
    for options in [
        Options::default().with_token("t0ken"),
        Options::default().allow_remote_without_token(),
    ] {
        let handle = http::serve_with("0.0.0.0:0", options.with_history_interval(None)).unwrap();
        assert!(handle.local_addr().ip().is_unspecified());
        handle.shutdown();
    }
}
