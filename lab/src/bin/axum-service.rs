//! A small axum service, not the lab: `POST /ingest` takes a body. With
//! `--leak body-slice` the handler keeps a 4-byte slice of every body in a
//! static (request-field-held); with `--leak channel` it queues an event per
//! request on an unbounded channel whose writer is slower
//! (unbounded-channel); with `--leak oversized` one request in 50 carries a
//! 4 MiB body and the handler's scratch-buffer pool keeps every buffer it
//! ever made, however large (oversized-request); with `--leak none` it keeps
//! nothing. It drives its own load (keep-alive HTTP/1 clients) for
//! `--duration` seconds. Run it under
//! leakscope's periodic output and diagnose the directory:
//!
//! ```sh
//! LEAKSCOPE_MODE=full LEAKSCOPE_INTERVAL=0.5 LEAKSCOPE_DIR=out \
//!     target/release/axum-service --leak body-slice --duration 4
//! leakscope report out
//! ```

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use tokio::sync::mpsc;

#[global_allocator]
static ALLOC: leakscope::Profiler = leakscope::Profiler::new();

const LEAKS: [&str; 4] = ["none", "body-slice", "channel", "oversized"];

/// What the handler keeps of each body.
static KEPT: Mutex<Vec<Bytes>> = Mutex::new(Vec::new());

/// An event for the (slow) audit writer.
struct Event {
    head: [u8; 1024],
    len: usize,
}

static EVENTS: OnceLock<mpsc::UnboundedSender<Event>> = OnceLock::new();

fn events() -> &'static mpsc::UnboundedSender<Event> {
    EVENTS.get_or_init(|| {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                std::hint::black_box((&e.head, e.len));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tx
    })
}

async fn ingest_keeping_a_slice(body: Bytes) -> &'static str {
    if body.len() >= 4 {
        KEPT.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(body.slice(0..4));
    }
    "ok"
}

async fn ingest_with_audit(body: Bytes) -> &'static str {
    let mut head = [0u8; 1024];
    let n = body.len().min(head.len());
    head[..n].copy_from_slice(&body[..n]);
    let _ = events().send(Event {
        head,
        len: body.len(),
    });
    "ok"
}

/// Scratch buffers reused across requests, kept whatever their size.
static SCRATCH_POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn take_scratch(len: usize) -> Vec<u8> {
    let mut pool = SCRATCH_POOL.lock().unwrap_or_else(|e| e.into_inner());
    match pool.iter().position(|b| b.capacity() >= len) {
        Some(i) => {
            let mut buf = pool.swap_remove(i);
            buf.clear();
            buf
        }
        None => Vec::with_capacity(len),
    }
}

async fn ingest_with_scratch(body: Bytes) -> String {
    let mut scratch = take_scratch(body.len());
    scratch.extend_from_slice(&body);
    scratch.make_ascii_uppercase();
    let sum: u64 = scratch.iter().map(|&b| u64::from(b)).sum();
    SCRATCH_POOL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(scratch);
    sum.to_string()
}

async fn ingest(body: Bytes) -> String {
    body.iter().map(|&b| u64::from(b)).sum::<u64>().to_string()
}

fn main() {
    let (leak, duration) = match leakscope_lab::http_load::args(&LEAKS) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("axum-service: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let done = runtime.block_on(async move {
        let route = match leak.as_str() {
            "body-slice" => post(ingest_keeping_a_slice),
            "channel" => post(ingest_with_audit),
            "oversized" => post(ingest_with_scratch),
            _ => post(ingest),
        };
        // Above axum's 2 MB default, so the rare 4 MiB body is served.
        let app = Router::new()
            .route("/ingest", route)
            .layer(DefaultBodyLimit::max(16 << 20));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let large_every = (leak == "oversized").then_some(50);
        leakscope_lab::http_load::drive_with_outliers(addr, "/ingest", duration, 4, large_every)
            .await
    });
    println!("{done} requests");
    // What the service keeps stays alive for the last profile, written at
    // exit.
    std::mem::forget(runtime);
}
