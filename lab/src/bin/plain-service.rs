//! A small axum service built without leakscope (the system allocator, no
//! profiler): `POST /ingest` answers the sum of the body's bytes and keeps a
//! 4-byte slice of every body in a static, pinning each whole received
//! buffer. For `leakscope attach` and `leakscope core`, which must find the
//! static and the pinned buffers in a process nobody instrumented. It
//! prints `listening PORT`, then serves until its stdin closes.

use std::io::Read;
use std::sync::Mutex;

use axum::routing::post;
use axum::Router;
use bytes::Bytes;

/// What the handler keeps of each body.
static KEPT_SLICES: Mutex<Vec<Bytes>> = Mutex::new(Vec::new());

async fn ingest(body: Bytes) -> String {
    let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    if body.len() >= 4 {
        KEPT_SLICES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(body.slice(0..4));
    }
    sum.to_string()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    println!(
        "listening {}",
        listener.local_addr().expect("its address").port()
    );
    let app = Router::new().route("/ingest", post(ingest));
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // Serve until whoever started us closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
